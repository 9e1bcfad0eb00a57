//! The tiled Gram kernel (`GramWorkspace`) against a naive oracle, and its
//! self-product path against its general path.
//!
//! The oracle forms each block's dense padded tensor `B[o, i, j]` and sums
//! `G'[o,o'] = Σ B_A[o,i,j] B_B[o',k,l] (w_id G[i,k] G[j,l] + w_sw G[i,l] G[j,k])`
//! term by term: no tiles, no selector units, no GEMMs.

mod common;

use common::{gaussian_matrix, gaussian_vector, rng};

use std::sync::Arc;

use nalgebra::DMatrix;
use rand::rngs::StdRng;
use tensor_similarity::{
    Bilinear, CpBlock, Full, GramWorkspace, Linear, Model, RecursiveSimilarity, TensorBlock,
    TensorSimilarity, Trivial, cp_gram_step,
};

/// A random bilinear block `m → n` (`n = m` when `s ≠ 1`), hidden width `h`;
/// `parts` switches on (left bias, right bias, down bias, down projection).
fn bilinear(rng: &mut StdRng, m: usize, h: usize, n: usize, s: f64, parts: u8) -> Bilinear {
    // A residual needs n = m, so a down projection unless h = m.
    let parts = if s != 1.0 && h != m { parts | 8 } else { parts };
    let sc = 1.0 / (m as f64).sqrt();
    let mut b = Bilinear::builder(
        gaussian_matrix(rng, h, m, sc),
        gaussian_matrix(rng, h, m, sc),
    );
    let n = if parts & 8 != 0 {
        b = b.down(gaussian_matrix(rng, n, h, 1.0 / (h as f64).sqrt()));
        n
    } else {
        h
    };
    if parts & 1 != 0 {
        b = b.left_bias(gaussian_vector(rng, h, 0.5));
    }
    if parts & 2 != 0 {
        b = b.right_bias(gaussian_vector(rng, h, 0.5));
    }
    if parts & 4 != 0 {
        b = b.down_bias(gaussian_vector(rng, n, 0.5));
    }
    b.residual(s).build().expect("valid random block")
}

/// A random symmetric positive definite `G`, `w × w`.
fn spd(rng: &mut StdRng, w: usize) -> DMatrix<f64> {
    let a = gaussian_matrix(rng, w, w + 2, 1.0 / (w as f64).sqrt());
    &a * a.transpose()
}

/// The naive oracle for an order-2 step with pairing weights `(w_id, w_sw)`.
fn naive_step(
    a: &dyn TensorBlock<f64>,
    b: &dyn TensorBlock<f64>,
    g: &DMatrix<f64>,
    (wid, wsw): (f64, f64),
) -> DMatrix<f64> {
    let (ta, tb) = (a.as_cp().unwrap().dense(), b.as_cp().unwrap().dense());
    let (wa, wb) = (g.nrows(), g.ncols());
    let mut out = DMatrix::zeros(ta.nrows(), tb.nrows());
    for o in 0..ta.nrows() {
        for p in 0..tb.nrows() {
            let mut sum = 0.0;
            for i in 0..wa {
                for j in 0..wa {
                    let x = ta[(o, i * wa + j)];
                    if x == 0.0 {
                        continue;
                    }
                    for k in 0..wb {
                        for l in 0..wb {
                            let pairing = wid * g[(i, k)] * g[(j, l)] + wsw * g[(i, l)] * g[(j, k)];
                            sum += x * tb[(p, k * wb + l)] * pairing;
                        }
                    }
                }
            }
            out[(o, p)] = sum;
        }
    }
    out
}

fn relative_error(x: &DMatrix<f64>, reference: &DMatrix<f64>) -> f64 {
    (x - reference).amax() / reference.amax()
}

const TILES: [usize; 4] = [1, 2, 5, 128];

#[test]
fn bilinear_step_matches_naive_oracle_for_every_part_residual_and_tile() {
    let mut rng = rng(11);
    for parts in 0..16u8 {
        for s in [1.0, 0.6, 0.0] {
            let (m, ha, hb) = (3, 4, 6);
            // With a residual the output width must equal the input width.
            let n = m;
            let a = bilinear(&mut rng, m, ha, n, s, parts);
            let b = bilinear(&mut rng, m, hb, n, s, parts ^ 5);
            // A general (non-symmetric) cross Gram matrix.
            let g = gaussian_matrix(&mut rng, m + 1, m + 1, 1.0);
            let reference = naive_step(&a, &b, &g, (0.5, 0.5));
            for tile in TILES {
                let mut out = DMatrix::zeros(0, 0);
                GramWorkspace::with_tile(tile)
                    .step(&a, &b, &g, &mut out)
                    .unwrap();
                let err = relative_error(&out, &reference);
                assert!(
                    err < 1e-12,
                    "parts {parts:04b}, s {s}, tile {tile}: {err:e}"
                );
            }
        }
    }
}

#[test]
fn symmetry_groups_weight_the_two_pairings() {
    let mut rng = rng(12);
    let (m, h) = (3, 5);
    let factors = |rng: &mut StdRng| {
        let mut u1 = gaussian_matrix(rng, h + 1, m + 1, 0.7);
        let mut u2 = gaussian_matrix(rng, h + 1, m + 1, 0.7);
        // Unit 0 carries the constant; the others read the constant too
        // (biases) so that nothing is a selector but unit 0.
        u1.row_mut(0).fill(0.0);
        u2.row_mut(0).fill(0.0);
        u1[(0, 0)] = 1.0;
        u2[(0, 0)] = 1.0;
        let mut d = gaussian_matrix(rng, m + 1, h + 1, 0.5);
        d.row_mut(0).fill(0.0);
        d[(0, 0)] = 1.0;
        (u1, u2, d)
    };
    let (a1, a2, ad) = factors(&mut rng);
    let (b1, b2, bd) = factors(&mut rng);
    let g = gaussian_matrix(&mut rng, m + 1, m + 1, 1.0);
    let block = |u1: &DMatrix<f64>, u2: &DMatrix<f64>, d: &DMatrix<f64>, full: bool| {
        let group: Arc<dyn tensor_similarity::SymmetryGroup> = if full {
            Arc::new(Full)
        } else {
            Arc::new(Trivial)
        };
        CpBlock::with_symmetry(vec![u1.clone(), u2.clone()], d.clone(), group)
    };
    // Trivial groups keep the tensors as they are; `CpBlock` checks the
    // constant on the symmetrised tensor, which these factors may fail for
    // the trivial group, so only blocks that build are compared.
    for (fa, fb, weights) in [
        (true, true, (0.5, 0.5)),
        (false, false, (1.0, 0.0)),
        (true, false, (0.5, 0.5)),
    ] {
        let (Ok(a), Ok(b)) = (block(&a1, &a2, &ad, fa), block(&b1, &b2, &bd, fb)) else {
            panic!("factors keep the constant under both groups");
        };
        let reference = naive_step(&a, &b, &g, weights);
        for tile in TILES {
            let mut out = DMatrix::zeros(0, 0);
            GramWorkspace::with_tile(tile)
                .step(&a, &b, &g, &mut out)
                .unwrap();
            let err = relative_error(&out, &reference);
            assert!(err < 1e-12, "groups {fa}/{fb}, tile {tile}: {err:e}");
        }
    }
}

#[test]
fn self_step_equals_general_step() {
    let mut rng = rng(13);
    for parts in 0..16u8 {
        for s in [1.0, 0.6, 0.0] {
            let (m, h) = (4, 9);
            let a = bilinear(&mut rng, m, h, m, s, parts);
            let g = spd(&mut rng, m + 1);
            let mut general = DMatrix::zeros(0, 0);
            GramWorkspace::new().step(&a, &a, &g, &mut general).unwrap();
            for tile in TILES {
                let mut own = DMatrix::zeros(0, 0);
                GramWorkspace::with_tile(tile)
                    .self_step(&a, &g, &mut own)
                    .unwrap();
                let err = relative_error(&own, &general);
                assert!(
                    err < 1e-12,
                    "parts {parts:04b}, s {s}, tile {tile}: {err:e}"
                );
                assert_eq!(own, own.transpose(), "exactly symmetric");
            }
        }
    }
}

#[test]
fn one_workspace_serves_blocks_of_every_shape() {
    let mut rng = rng(14);
    let mut ws = GramWorkspace::with_tile(3);
    let mut out = DMatrix::zeros(0, 0);
    // Large, small, large: stale scratch contents must never leak in.
    for (m, h, s) in [
        (6, 11, 0.5),
        (2, 3, 1.0),
        (5, 8, 0.0),
        (2, 2, 0.3),
        (6, 13, 1.0),
    ] {
        let a = bilinear(&mut rng, m, h, m, s, 15);
        let b = bilinear(&mut rng, m, h + 2, m, s, 6);
        let g = gaussian_matrix(&mut rng, m + 1, m + 1, 1.0);
        ws.step(&a, &b, &g, &mut out).unwrap();
        let fresh = cp_gram_step(&a, &b, &g).unwrap();
        assert!(relative_error(&out, &fresh) < 1e-12);
        assert!(relative_error(&out, &naive_step(&a, &b, &g, (0.5, 0.5))) < 1e-12);
        let g = spd(&mut rng, m + 1);
        ws.self_step(&a, &g, &mut out).unwrap();
        assert!(relative_error(&out, &cp_gram_step(&a, &a, &g).unwrap()) < 1e-12);
    }
}

#[test]
fn blocks_made_only_of_selector_units_and_order_one_blocks_with_output_factors() {
    let mut rng = rng(15);
    let m = 3;
    // y_i = x_i²: every unit reads single entries (U_1 = U_2 = I), so the
    // dense range is empty.
    let square = CpBlock::new(
        vec![
            DMatrix::identity(m + 1, m + 1),
            DMatrix::identity(m + 1, m + 1),
        ],
        DMatrix::identity(m + 1, m + 1),
    )
    .unwrap();
    // A dense unit between selector units: the selectors inside the dense
    // range are treated as dense.
    let mut u1 = DMatrix::identity(m + 1, m + 1);
    let mut u2 = DMatrix::identity(m + 1, m + 1);
    u1.row_mut(2)
        .copy_from(&gaussian_matrix(&mut rng, 1, m + 1, 1.0));
    u1[(2, 0)] = 0.0;
    u2.row_mut(2)
        .copy_from(&gaussian_matrix(&mut rng, 1, m + 1, 1.0));
    u2[(2, 0)] = 0.0;
    let mixed = CpBlock::new(
        vec![u1, u2],
        gaussian_matrix(&mut rng, m + 1, m + 1, 1.0).map_with_location(|i, j, v| match (i, j) {
            (0, 0) => 1.0,
            (0, _) => 0.0,
            _ => v,
        }),
    )
    .unwrap();
    let g = gaussian_matrix(&mut rng, m + 1, m + 1, 1.0);
    for (a, b) in [(&square, &mixed), (&mixed, &square), (&square, &square)] {
        let reference = naive_step(a, b, &g, (0.5, 0.5));
        for tile in TILES {
            let mut out = DMatrix::zeros(0, 0);
            GramWorkspace::with_tile(tile)
                .step(a, b, &g, &mut out)
                .unwrap();
            assert!(relative_error(&out, &reference) < 1e-12);
        }
    }
    let g = spd(&mut rng, m + 1);
    for a in [&square, &mixed] {
        let mut out = DMatrix::zeros(0, 0);
        GramWorkspace::with_tile(2)
            .self_step(a, &g, &mut out)
            .unwrap();
        assert!(relative_error(&out, &naive_step(a, a, &g, (0.5, 0.5))) < 1e-12);
    }

    // Order 1 with an output factor: G' = D̃_A U_A G U_Bᵀ D̃_Bᵀ.
    let (wa, wb) = (
        gaussian_matrix(&mut rng, 4, m, 1.0),
        gaussian_matrix(&mut rng, 5, m, 1.0),
    );
    let linear = Linear::new(wb.clone(), Some(gaussian_vector(&mut rng, 5, 0.5))).unwrap();
    let mut u = DMatrix::zeros(5, m + 1);
    u[(0, 0)] = 1.0;
    u.view_mut((1, 1), (4, m)).copy_from(&wa);
    let mut d = gaussian_matrix(&mut rng, 3, 5, 1.0);
    d.row_mut(0).fill(0.0);
    d[(0, 0)] = 1.0;
    let projected = CpBlock::new(vec![u.clone()], d.clone()).unwrap();
    let padded_b = {
        let mut p = DMatrix::zeros(6, m + 1);
        p[(0, 0)] = 1.0;
        p.view_mut((1, 0), (5, 1)).copy_from(
            &linear
                .as_cp()
                .unwrap()
                .stacked_inputs()
                .view((1, 0), (5, 1)),
        );
        p.view_mut((1, 1), (5, m)).copy_from(&wb);
        p
    };
    let reference = &d * &u * &g * padded_b.transpose();
    let out = cp_gram_step(&projected, &linear, &g).unwrap();
    assert!(relative_error(&out, &reference) < 1e-12);
}

#[test]
fn self_step_rejects_an_asymmetric_gram_matrix() {
    let mut rng = rng(16);
    let a = bilinear(&mut rng, 3, 4, 3, 1.0, 15);
    let g = gaussian_matrix(&mut rng, 4, 4, 1.0);
    let mut out = DMatrix::zeros(0, 0);
    assert!(GramWorkspace::new().self_step(&a, &g, &mut out).is_err());
    let wrong = spd(&mut rng, 5);
    assert!(
        GramWorkspace::new()
            .self_step(&a, &wrong, &mut out)
            .is_err()
    );
    assert!(GramWorkspace::new().step(&a, &a, &wrong, &mut out).is_err());
}

/// A random model: linear embedding, `depth` bilinear blocks, linear head.
fn model(rng: &mut StdRng, d: usize, width: usize, h: usize, depth: usize, s: f64) -> Model {
    let mut builder = Model::builder().block(
        Linear::new(
            gaussian_matrix(rng, width, d, 1.0 / (d as f64).sqrt()),
            Some(gaussian_vector(rng, width, 0.5)),
        )
        .unwrap(),
    );
    for layer in 0..depth {
        builder = builder.block(bilinear(rng, width, h, width, s, 15 - (layer as u8 % 4)));
    }
    builder
        .block(Linear::new(gaussian_matrix(rng, 2, width, 1.0), None).unwrap())
        .build()
        .unwrap()
}

#[test]
fn squared_norm_equals_the_self_inner_product() {
    let mut rng = rng(17);
    let d = 3;
    let mean = gaussian_vector(&mut rng, d, 0.5);
    let root = gaussian_matrix(&mut rng, d, d, 0.5);
    let covariance = &root * root.transpose() + DMatrix::identity(d, d) * 0.1;
    let metrics = [
        TensorSimilarity::new(),
        TensorSimilarity::new()
            .with_input_gaussian(&mean, &covariance)
            .unwrap(),
    ];
    for (depth, s) in [(1, 1.0), (2, 0.5), (3, 0.0)] {
        let a = model(&mut rng, d, 4, 7, depth, s);
        for metric in &metrics {
            let general = metric.inner_product(&a, &a).unwrap();
            let own = metric.squared_norm(&a).unwrap();
            let rel = ((own - general) / general).abs().to_f64();
            assert!(rel < 1e-12, "depth {depth}, s {s}: {rel:e}");
        }
    }
}

#[test]
fn f32_kernel_paths_agree_with_f64() {
    let mut rng = rng(18);
    let to32 = |m: &DMatrix<f64>| m.map(|x| x as f32);
    for s in [1.0, 0.5] {
        let (m, h) = (5, 12);
        let a = bilinear(&mut rng, m, h, m, s, 15);
        let b = bilinear(&mut rng, m, h + 3, m, s, 9);
        let rebuild = |x: &Bilinear| {
            let mut builder = Bilinear::builder(to32(x.left()), to32(x.right()))
                .scale(x.scale())
                .skip(x.skip());
            if let Some(d) = x.down() {
                builder = builder.down(to32(d));
            }
            for (bias, set) in [(x.left_bias(), 0), (x.right_bias(), 1), (x.down_bias(), 2)] {
                if let Some(v) = bias {
                    let v = v.map(|x| x as f32);
                    builder = match set {
                        0 => builder.left_bias(v),
                        1 => builder.right_bias(v),
                        _ => builder.down_bias(v),
                    };
                }
            }
            builder.build().unwrap()
        };
        let (a32, b32) = (rebuild(&a), rebuild(&b));
        let g = spd(&mut rng, m + 1);
        let g32 = to32(&g);
        let reference = cp_gram_step(&a, &b, &g).unwrap();
        let reference_self = cp_gram_step(&a, &a, &g).unwrap();
        for tile in TILES {
            let mut ws = GramWorkspace::<f32>::with_tile(tile);
            let mut out = DMatrix::zeros(0, 0);
            ws.step(&a32, &b32, &g32, &mut out).unwrap();
            let err = relative_error(&out.map(f64::from), &reference);
            assert!(err < 1e-5, "s {s}, tile {tile}: {err:e}");
            ws.self_step(&a32, &g32, &mut out).unwrap();
            let err = relative_error(&out.map(f64::from), &reference_self);
            assert!(err < 1e-5, "self, s {s}, tile {tile}: {err:e}");
        }
    }
}

#[test]
fn f32_squared_norm_equals_the_f32_self_inner_product_and_f64() {
    let mut rng = rng(19);
    let (d, width, h) = (3, 4, 9);
    let to32 = |m: &DMatrix<f64>| m.map(|x| x as f32);
    let embed = gaussian_matrix(&mut rng, width, d, 0.6);
    // (L, R, D, b_L) of each block.
    let blocks: Vec<_> = (0..3)
        .map(|_| {
            (
                gaussian_matrix(&mut rng, h, width, 0.5),
                gaussian_matrix(&mut rng, h, width, 0.5),
                gaussian_matrix(&mut rng, width, h, 0.3),
                gaussian_vector(&mut rng, h, 0.5),
            )
        })
        .collect();
    let head = gaussian_matrix(&mut rng, 2, width, 1.0);
    let m64 = {
        let mut b = Model::builder().block(Linear::new(embed.clone(), None).unwrap());
        for (l, r, dn, bias) in &blocks {
            b = b.block(
                Bilinear::builder(l.clone(), r.clone())
                    .down(dn.clone())
                    .left_bias(bias.clone())
                    .residual(0.5)
                    .build()
                    .unwrap(),
            );
        }
        b.block(Linear::new(head.clone(), None).unwrap())
            .build()
            .unwrap()
    };
    let m32: Model<f32> = {
        let mut b = Model::builder().block(Linear::new(to32(&embed), None).unwrap());
        for (l, r, dn, bias) in &blocks {
            b = b.block(
                Bilinear::builder(to32(l), to32(r))
                    .down(to32(dn))
                    .left_bias(bias.map(|x| x as f32))
                    .residual(0.5)
                    .build()
                    .unwrap(),
            );
        }
        b.block(Linear::new(to32(&head), None).unwrap())
            .build()
            .unwrap()
    };
    let metric = TensorSimilarity::new();
    let own32 = metric.squared_norm(&m32).unwrap();
    let general32 = metric.inner_product(&m32, &m32).unwrap();
    let reference = metric.squared_norm(&m64).unwrap();
    for (what, x) in [("self kernel", own32), ("general kernel", general32)] {
        let rel = ((x - reference) / reference).abs().to_f64();
        assert!(rel < 1e-5, "{what}: {rel:e}");
    }
}

/// The panels run in parallel, but each column of `Z` is summed by one task
/// in one order: steps and similarities are bit-identical on 1, 2 and 3
/// threads, residual blocks and tiles smaller than the blocks included.
#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let mut r = rng(41);
    let (a, b) = (
        bilinear(&mut r, 7, 23, 7, 0.5, 15),
        bilinear(&mut r, 7, 19, 7, 1.0, 9),
    );
    let g = spd(&mut r, 8);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        pool.install(|| {
            let mut ws = GramWorkspace::with_tile(4);
            let (mut cross, mut own) = (DMatrix::zeros(0, 0), DMatrix::zeros(0, 0));
            ws.step(&a, &b, &g, &mut cross).expect("valid");
            ws.self_step(&a, &g, &mut own).expect("valid");
            (cross, own)
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert_eq!(run(threads), one, "{threads} threads");
    }
    let cross = one.0.clone();
    assert!(relative_error(&cross, &naive_step(&a, &b, &g, (0.5, 0.5))) < 1e-12);
}
