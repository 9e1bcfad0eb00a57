//! Sequence models and bilinear attention (SPEC §7) against the dense
//! oracle of `tests/seq_oracle`, which shares no code with the library:
//! every block's symmetrised padded tensor on the flattened stream is
//! polarised from the oracle's own forward pass and the Gram recursion is
//! done densely.
//!
//! Tolerance: both sides compute in f64 on tiny, unit-scale models; the
//! oracle's tensors are exact up to rounding (integer evaluation points,
//! one division by `2^k k!`) and the library's step is exact by
//! construction, so they agree to a few hundred ulps. Similarities are
//! compared to `1e-10` absolutely (they lie in `[−1, 1]`: that is relative
//! to the product of norms); raw inner products to `1e-10 · √(⟨A,A⟩⟨B,B⟩)`,
//! the same relative scale (a cross product can cancel to near zero, so a
//! plain relative test on it would measure the cancellation, not the
//! error); forward passes to `1e-12` relative to the output's size.

mod common;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, rng};
use nalgebra::DMatrix;
use seq_oracle::{
    AttnOptions, AttnParams, BilinearParams, Block, LinearParams, MaskKind, SeqNet, inner_products,
};
use std::sync::Mutex;
use tensor_similarity::{Model, RecursiveSimilarity, TensorSimilarity};

const SIM_TOL: f64 = 1e-10;

/// The largest differences seen, for the record (`--nocapture`).
static WORST: Mutex<(f64, f64, f64)> = Mutex::new((0.0, 0.0, 0.0));

fn metric(n: usize) -> TensorSimilarity {
    TensorSimilarity::new().with_context(n).unwrap()
}

/// The library against the oracle on one pair at context `n`: the
/// similarity, the three raw inner products and both forward passes.
fn check(a: &SeqNet, b: &SeqNet, n: usize, what: &str) {
    let (ma, mb) = (seq_library::model(a), seq_library::model(b));
    let (ab, aa, bb) = inner_products(a, b, n);
    let expected = ab / (aa * bb).sqrt();
    let m = metric(n);
    let found = m.similarity(&ma, &mb).unwrap();
    let sim_err = (found - expected).abs();
    assert!(
        sim_err <= SIM_TOL,
        "{what}, n {n}: library {found}, oracle {expected}, difference {sim_err:e}"
    );
    let scale = (aa * bb).sqrt();
    let mut ip_err: f64 = 0.0;
    for (x, y, oracle, norm) in [
        (&ma, &mb, ab, scale),
        (&ma, &ma, aa, aa),
        (&mb, &mb, bb, bb),
    ] {
        let ip = m.inner_product(x, y).unwrap().to_f64();
        let err = (ip - oracle).abs() / norm;
        ip_err = ip_err.max(err);
        assert!(
            err <= SIM_TOL,
            "{what}, n {n}: raw inner product: library {ip}, oracle {oracle}, relative {err:e}"
        );
    }
    let fw_err = check_forward(a, &ma, n, what).max(check_forward(b, &mb, n, what));
    let mut w = WORST.lock().unwrap();
    w.0 = w.0.max(sim_err);
    w.1 = w.1.max(ip_err);
    w.2 = w.2.max(fw_err);
    eprintln!(
        "{what}, n {n}: sim {found:.6} (|Δ| {sim_err:.1e}); worst so far: sim {:.1e}, raw {:.1e}, forward {:.1e}",
        w.0, w.1, w.2
    );
}

fn check_forward(net: &SeqNet, model: &Model<f64>, n: usize, what: &str) -> f64 {
    let x = gaussian_matrix(&mut rng(n as u64 + 77), n, net.input_width(), 1.0);
    let expected = net.forward(&x);
    let found = seq_library::forward(model, &x);
    assert_eq!(found.shape(), expected.shape(), "{what}: forward shape");
    let err = (&found - &expected).amax() / (1.0 + expected.amax());
    assert!(
        err < 1e-12,
        "{what}, n {n}: forward_sequence differs by {err:e}\nlibrary {found}\noracle {expected}"
    );
    err
}

/// `embed (d_in → d)`, attention blocks, `head (d → d_out)`.
fn wrapped(
    r: &mut rand::rngs::StdRng,
    d_in: usize,
    d: usize,
    d_out: usize,
    attn: &[AttnOptions],
) -> SeqNet {
    let mut blocks = vec![Block::Linear(LinearParams::random(r, d, d_in, true, 1.0))];
    for o in attn {
        blocks.push(Block::Attention(AttnParams::random(r, d, o)));
    }
    blocks.push(Block::Linear(LinearParams::random(r, d_out, d, true, 1.0)));
    SeqNet { blocks }
}

fn masks(r: &mut rand::rngs::StdRng, n: usize) -> Vec<Option<MaskKind>> {
    vec![
        None,
        Some(MaskKind::Causal),
        Some(MaskKind::Full),
        Some(MaskKind::Diagonal),
        Some(MaskKind::Matrix(gaussian_matrix(r, n, n, 1.0))),
    ]
}

#[test]
fn one_layer_every_mask_and_rotary_setting() {
    for n in 1..=3 {
        let mut r = rng(100 + n as u64);
        let ms = masks(&mut r, n);
        for (i, mask) in ms.iter().enumerate() {
            for (j, rotary) in [None, Some(10_000.0), Some(37.0)].into_iter().enumerate() {
                let base = AttnOptions {
                    mask: mask.clone(),
                    rotary,
                    alpha: Some(0.6),
                    ..AttnOptions::default()
                };
                let oa = AttnOptions {
                    heads: 1 + (i + j) % 3,
                    e: if j == 2 { 4 } else { 2 },
                    ..base.clone()
                };
                let ob = AttnOptions {
                    heads: 1 + (i + 2 * j + 1) % 3,
                    ev: 1,
                    ..base
                };
                let a = wrapped(&mut r, 2, 3, 2, &[oa]);
                let b = wrapped(&mut r, 2, 2, 2, &[ob]);
                check(&a, &b, n, &format!("mask {mask:?}, rotary {rotary:?}"));
            }
        }
        // Different masks and rotary settings on the two sides.
        for (i, (ma, mb)) in [(1, 2), (3, 4), (0, 3), (2, 4)].into_iter().enumerate() {
            let oa = AttnOptions {
                mask: ms[ma].clone(),
                rotary: [None, Some(100.0)][i % 2],
                ..AttnOptions::default()
            };
            let ob = AttnOptions {
                mask: ms[mb].clone(),
                rotary: [Some(10_000.0), None][i % 2],
                heads: 3,
                ..AttnOptions::default()
            };
            let a = wrapped(&mut r, 2, 2, 2, &[oa]);
            let b = wrapped(&mut r, 2, 3, 2, &[ob]);
            check(&a, &b, n, &format!("masks {ma} vs {mb}"));
        }
    }
}

#[test]
fn every_subset_of_biases_with_lerp_and_additive_skip() {
    for subset in 0..8u32 {
        for (alpha, skip) in [(Some(0.6), None), (Some(0.4), Some(1.0))] {
            let n = 2 + (subset as usize % 2);
            let mut r = rng(200 + subset as u64);
            let o = AttnOptions {
                qk_bias: subset & 1 != 0,
                v_bias: subset & 2 != 0,
                o_bias: subset & 4 != 0,
                alpha,
                skip,
                mask: Some(MaskKind::Full),
                ..AttnOptions::default()
            };
            let a = wrapped(&mut r, 2, 3, 2, std::slice::from_ref(&o));
            let b = wrapped(&mut r, 2, 3, 2, &[AttnOptions { heads: 1, ..o }]);
            check(
                &a,
                &b,
                n,
                &format!("biases {subset:03b}, α {alpha:?}, r {skip:?}"),
            );
        }
    }
}

#[test]
fn scale_skip_and_score_scale_settings() {
    // (α, r, c): the defaults (α = 1, r = 0, c = e²), lerp, additive, a
    // skip of neither kind, a given score scale.
    let settings: [(Option<f64>, Option<f64>, Option<f64>); 7] = [
        (None, None, None),
        (Some(0.35), None, None),
        (Some(0.2), Some(1.0), None),
        (Some(1.5), Some(-0.5), None),
        (None, Some(1.0), Some(0.3)),
        (Some(0.5), None, Some(7.0)),
        (Some(0.7), Some(0.1), Some(1.0)),
    ];
    for (i, (alpha, skip, c)) in settings.into_iter().enumerate() {
        let n = 1 + i % 3;
        let mut r = rng(300 + i as u64);
        let o = AttnOptions {
            alpha,
            skip,
            score_scale: c,
            e: if i % 2 == 0 { 2 } else { 4 },
            ..AttnOptions::default()
        };
        let a = wrapped(&mut r, 2, 3, 2, std::slice::from_ref(&o));
        let b = wrapped(&mut r, 2, 2, 2, &[AttnOptions { heads: 3, ..o }]);
        check(&a, &b, n, &format!("α {alpha:?}, r {skip:?}, c {c:?}"));
    }
}

#[test]
fn quadratic_attention_against_bilinear_attention() {
    for n in 1..=3 {
        let mut r = rng(400 + n as u64);
        let q = AttnOptions {
            quadratic: true,
            alpha: Some(0.5),
            skip: Some(1.0),
            ..AttnOptions::default()
        };
        let a = wrapped(&mut r, 2, 3, 2, std::slice::from_ref(&q));
        let b = wrapped(
            &mut r,
            2,
            3,
            2,
            &[AttnOptions {
                quadratic: false,
                heads: 1,
                ..q.clone()
            }],
        );
        check(&a, &b, n, "quadratic vs bilinear");
        let c = wrapped(
            &mut r,
            2,
            2,
            2,
            &[AttnOptions {
                qk_bias: false,
                ..q
            }],
        );
        check(&a, &c, n, "quadratic vs quadratic");
    }
}

#[test]
fn heads_head_widths_and_stream_widths_differ_between_the_models() {
    let mut case = 0;
    for ha in 1..=3 {
        for hb in 1..=3 {
            let n = 1 + case % 3;
            let mut r = rng(500 + case as u64);
            let oa = AttnOptions {
                heads: ha,
                e: 2 * (1 + case % 2),
                ev: 1 + case % 3,
                alpha: Some(0.5),
                ..AttnOptions::default()
            };
            let ob = AttnOptions {
                heads: hb,
                e: 2 * (1 + (case + 1) % 2),
                ev: 1 + (case + 1) % 3,
                ..oa.clone()
            };
            let (da, db) = ([2, 3, 3][case % 3], [3, 2, 1][case % 3]);
            let a = wrapped(&mut r, 2, da, 2, &[oa]);
            let b = wrapped(&mut r, 2, db, 2, &[ob]);
            check(
                &a,
                &b,
                n,
                &format!("heads {ha} vs {hb}, widths {da} vs {db}"),
            );
            case += 1;
        }
    }
}

#[test]
fn attention_alone_one_and_two_layers() {
    for n in 1..=3 {
        let mut r = rng(600 + n as u64);
        let d = 2;
        let o = AttnOptions {
            alpha: Some(0.6),
            ..AttnOptions::default()
        };
        let one = |r: &mut _, o: &AttnOptions| Block::Attention(AttnParams::random(r, d, o));
        let a = SeqNet {
            blocks: vec![one(&mut r, &o)],
        };
        let b = SeqNet {
            blocks: vec![one(
                &mut r,
                &AttnOptions {
                    heads: 1,
                    e: 4,
                    ..o.clone()
                },
            )],
        };
        check(&a, &b, n, "one attention block");
        let o2 = AttnOptions {
            skip: Some(1.0),
            mask: Some(MaskKind::Full),
            ..o.clone()
        };
        let a = SeqNet {
            blocks: vec![one(&mut r, &o), one(&mut r, &o2)],
        };
        let b = SeqNet {
            blocks: vec![
                one(&mut r, &o2),
                one(&mut r, &AttnOptions { heads: 3, ..o }),
            ],
        };
        check(&a, &b, n, "two attention blocks");
    }
}

#[test]
fn two_attention_layers_with_embed_and_head() {
    for n in 1..=3 {
        let mut r = rng(700 + n as u64);
        let ms = masks(&mut r, n);
        let o1 = AttnOptions {
            alpha: Some(0.5),
            mask: ms[n].clone(),
            ..AttnOptions::default()
        };
        let o2 = AttnOptions {
            alpha: Some(0.3),
            skip: Some(1.0),
            rotary: Some(500.0),
            qk_bias: false,
            heads: 1,
            mask: ms[4].clone(),
            ..AttnOptions::default()
        };
        let a = wrapped(&mut r, 2, 3, 2, &[o1.clone(), o2.clone()]);
        let b = wrapped(
            &mut r,
            2,
            2,
            2,
            &[
                AttnOptions { heads: 3, ..o2 },
                AttnOptions { rotary: None, ..o1 },
            ],
        );
        check(&a, &b, n, "two layers");
    }
}

#[test]
fn research_transformer_one_and_two_layers() {
    for layers in 1..=2 {
        for n in 1..=3 {
            let mut r = rng(800 + 10 * layers as u64 + n as u64);
            // As the reference `Transformer` has it: biases on q/k only,
            // causal mask, rotary; the MLP's down bias comes with
            // `SeqNet::transformer`.
            let o = AttnOptions {
                v_bias: false,
                o_bias: false,
                ..AttnOptions::default()
            };
            let (da, db) = if layers == 2 && n == 3 {
                (3, 2)
            } else {
                (3, 4)
            };
            let a = SeqNet::transformer(&mut r, 2, da, 2, layers, 3, 0.35, &o);
            let b = SeqNet::transformer(
                &mut r,
                2,
                db,
                2,
                layers,
                2,
                0.2,
                &AttnOptions { heads: 1, ..o },
            );
            check(&a, &b, n, &format!("transformer, {layers} layers"));
        }
    }
}

fn position_wise(r: &mut rand::rngs::StdRng, d: usize, hidden: &[usize], s: f64) -> SeqNet {
    let mut blocks = vec![Block::Linear(LinearParams::random(r, d, 2, true, 1.0))];
    for &h in hidden {
        blocks.push(Block::Bilinear(BilinearParams::random(
            r, d, h, true, s, 1.0,
        )));
    }
    blocks.push(Block::Linear(LinearParams::random(r, 2, d, true, 1.0)));
    SeqNet { blocks }
}

#[test]
fn position_wise_models_have_the_same_similarity_at_every_context() {
    for seed in 0..4u64 {
        let mut r = rng(900 + seed);
        let depth = 1 + seed as usize % 2;
        let a = position_wise(&mut r, 3, &vec![4; depth], [1.0, 0.5][seed as usize % 2]);
        let b = position_wise(&mut r, 2, &vec![3; depth], 0.7);
        let vector = tensor_similarity::similarity(
            &seq_library::vector_model(&a),
            &seq_library::vector_model(&b),
        )
        .unwrap();
        let (ma, mb) = (seq_library::model(&a), seq_library::model(&b));
        for n in 1..=4 {
            let s = metric(n).similarity(&ma, &mb).unwrap();
            assert!(
                (s - vector).abs() < 1e-12,
                "seed {seed}, n {n}: sequence {s}, vector {vector}"
            );
            if n <= 3 {
                check(&a, &b, n, &format!("position-wise, seed {seed}"));
            }
        }
    }
}

#[test]
fn forward_sequence_matches_on_deeper_models_and_longer_contexts() {
    // Forward passes are cheap: longer contexts and wider streams than the
    // tensor comparisons can afford.
    for seed in 0..6u64 {
        let mut r = rng(1000 + seed);
        let n = 4 + seed as usize;
        let ms = masks(&mut r, n);
        let o = AttnOptions {
            heads: 1 + seed as usize % 3,
            e: 4,
            ev: 3,
            mask: ms[seed as usize % 5].clone(),
            rotary: [None, Some(10_000.0), Some(2.0)][seed as usize % 3],
            alpha: Some(0.35),
            skip: [None, Some(1.0)][seed as usize % 2],
            ..AttnOptions::default()
        };
        let net = SeqNet::transformer(&mut r, 3, 5, 2, 3, 4, 0.35, &o);
        check_forward(
            &net,
            &seq_library::model(&net),
            n,
            &format!("deep forward, seed {seed}"),
        );
    }
}

#[test]
fn dimensions_and_counts() {
    // Guards against a loop silently doing nothing: the cases above are the
    // sizes they claim.
    let mut r = rng(1);
    let a = wrapped(&mut r, 2, 3, 2, &[AttnOptions::default()]);
    let m: Model<f64> = seq_library::model(&a);
    assert_eq!((m.input_width(), m.output_width()), (2, 2));
    assert_eq!(m.orders(), vec![1, 5, 1]);
    let x: DMatrix<f64> = gaussian_matrix(&mut r, 3, 2, 1.0);
    assert_eq!(seq_library::forward(&m, &x).shape(), (3, 2));
}

#[test]
fn each_score_bias_alone_and_all_but_one() {
    // The q1, k1, q2, k2, v, o biases one at a time, and every one but one.
    let mut r = rng(1100);
    let full = AttnOptions {
        alpha: Some(0.5),
        mask: Some(MaskKind::Full),
        ..AttnOptions::default()
    };
    let reference = wrapped(
        &mut r,
        2,
        2,
        2,
        &[AttnOptions {
            heads: 1,
            ..full.clone()
        }],
    );
    let a = wrapped(&mut r, 2, 3, 2, std::slice::from_ref(&full));
    let Block::Attention(p) = &a.blocks[1] else {
        unreachable!()
    };
    for which in 0..6 {
        for alone in [true, false] {
            let mut q = p.clone();
            let slots = [
                &mut q.bq1, &mut q.bk1, &mut q.bq2, &mut q.bk2, &mut q.bv, &mut q.bo,
            ];
            for (i, slot) in slots.into_iter().enumerate() {
                if (i == which) != alone {
                    *slot = None;
                }
            }
            let mut net = a.clone();
            net.blocks[1] = Block::Attention(q);
            check(&net, &reference, 2, &format!("bias {which}, alone {alone}"));
        }
    }
}

#[test]
fn context_four_and_three_rotary_planes() {
    // n = 4 on a stream of width 2 (9 padded coordinates), every mask, and
    // heads of width 6: three rotary planes with distinct frequencies.
    let n = 4;
    let mut r = rng(1200);
    let ms = masks(&mut r, n);
    for (i, mask) in ms.into_iter().enumerate() {
        let o = AttnOptions {
            heads: 1 + i % 2,
            e: 6,
            ev: 1 + i % 3,
            mask,
            rotary: [Some(10_000.0), Some(5.0)][i % 2],
            alpha: Some(0.35),
            skip: [None, Some(1.0)][i % 2],
            ..AttnOptions::default()
        };
        let a = wrapped(&mut r, 2, 2, 2, std::slice::from_ref(&o));
        let b = wrapped(
            &mut r,
            2,
            2,
            2,
            &[AttnOptions {
                e: 2,
                heads: 3,
                ..o
            }],
        );
        check(&a, &b, n, &format!("n 4, mask {i}"));
    }
}
