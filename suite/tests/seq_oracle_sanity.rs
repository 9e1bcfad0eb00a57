//! Checks of the sequence oracle itself (`tests/seq_oracle`), against
//! nothing from the library: its two forward passes agree, its homogeneous
//! form has the right degree, its polarised tensors reproduce the forward
//! pass and the closed forms of SPEC §1, its Gram recursion is the
//! Frobenius product of end-to-end tensors, and its symmetry
//! transformations preserve the function.

mod common;
mod seq_oracle;

use common::{
    gaussian_matrix, gaussian_vector, random_cycle_from_shuffle, random_invertible_signed, rng,
};
use nalgebra::DMatrix;
use rand::Rng;
use seq_oracle::{
    AttnOptions, AttnParams, BilinearParams, Block, LinearParams, MaskKind, SeqNet, dense_tensor,
    dense_tensor_of_net, inner_product, rope, similarity,
};

fn flat(x: &DMatrix<f64>, c: f64) -> Vec<f64> {
    let mut v = vec![c];
    for s in 0..x.nrows() {
        v.extend(x.row(s).iter());
    }
    v
}

fn unflat(y: &[f64], n: usize) -> DMatrix<f64> {
    let w = (y.len() - 1) / n;
    DMatrix::from_fn(n, w, |s, i| y[1 + s * w + i])
}

fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// A spread of attention blocks on a stream of width `d`: every mask,
/// rotary off/on/other base, every bias, every skip setting, 1–3 heads.
fn attention_zoo(d: usize, n: usize, seed: u64) -> Vec<AttnParams> {
    let mut r = rng(seed);
    let masks = [
        None,
        Some(MaskKind::Causal),
        Some(MaskKind::Full),
        Some(MaskKind::Diagonal),
        Some(MaskKind::Matrix(gaussian_matrix(&mut r, n, n, 1.0))),
    ];
    let mut out = Vec::new();
    for (i, mask) in masks.iter().enumerate() {
        for rotary in [None, Some(10_000.0), Some(3.5)] {
            let o = AttnOptions {
                heads: 1 + i % 3,
                e: if i % 2 == 0 { 2 } else { 4 },
                ev: 1 + i % 2,
                qk_bias: i % 2 == 0,
                v_bias: i != 1,
                o_bias: i != 2,
                rotary,
                mask: mask.clone(),
                score_scale: (i == 3).then_some(0.7),
                alpha: [None, Some(0.35), Some(0.5), Some(2.0), None][i],
                skip: [None, None, Some(1.0), Some(-0.3), Some(0.25)][i],
                quadratic: i == 4,
                scale: 1.0,
            };
            out.push(AttnParams::random(&mut r, d, &o));
        }
    }
    out
}

#[test]
fn rope_is_the_half_layout_rotation() {
    // e = 2: one plane, θ_0 = 1, so the angle is s.
    let y = rope(&[1.0, 0.0], 2, 10_000.0);
    assert!((y[0] - 2f64.cos()).abs() < 1e-15 && (y[1] - 2f64.sin()).abs() < 1e-15);
    // e = 4, base 9: θ_0 = 1, θ_1 = 9^{-1/2} = 1/3; planes (0,2) and (1,3).
    let x = [1.0, 2.0, 3.0, 4.0];
    let s = 3.0f64;
    let y = rope(&x, 3, 9.0);
    let (a0, a1) = (s, s / 3.0);
    let expected = [
        1.0 * a0.cos() - 3.0 * a0.sin(),
        2.0 * a1.cos() - 4.0 * a1.sin(),
        3.0 * a0.cos() + 1.0 * a0.sin(),
        4.0 * a1.cos() + 2.0 * a1.sin(),
    ];
    for (u, v) in y.iter().zip(expected) {
        assert!((u - v).abs() < 1e-14, "{y:?} vs {expected:?}");
    }
    // Position 0 is the identity.
    assert_eq!(rope(&x, 0, 9.0), x.to_vec());
}

#[test]
fn homogeneous_forward_is_the_plain_forward_at_c_1_and_has_degree_k() {
    let mut r = rng(1);
    for n in 1..=3 {
        let d = 3;
        let mut blocks: Vec<Block> = attention_zoo(d, n, 10 + n as u64)
            .into_iter()
            .map(Block::Attention)
            .collect();
        blocks.push(Block::Linear(LinearParams::random(&mut r, 2, d, true, 1.0)));
        blocks.push(Block::Linear(LinearParams::random(
            &mut r, 4, d, false, 1.0,
        )));
        for s in [1.0, 0.35] {
            let mut b = BilinearParams::random(&mut r, d, 4, true, s, 1.0);
            blocks.push(Block::Bilinear(b.clone()));
            b.d = None;
            b.bd = None;
            b.s = 1.0;
            blocks.push(Block::Bilinear(b));
        }
        for block in &blocks {
            for _ in 0..3 {
                let x = gaussian_matrix(&mut r, n, d, 1.0);
                let plain = block.forward(&x);
                let hom = block.forward_homogeneous(&flat(&x, 1.0), n);
                assert_eq!(hom[0], 1.0);
                let scale = 1.0 + max_abs(plain.iter().copied());
                assert!(
                    (unflat(&hom, n) - &plain).amax() < 1e-13 * scale,
                    "{block:?}"
                );
                // F(λ x̃) = λ^k F(x̃), with a constant that is not 1.
                let xt = flat(&x, r.random_range(-2.0..2.0));
                let f = block.forward_homogeneous(&xt, n);
                for lambda in [-1.7, 0.6] {
                    let scaled: Vec<f64> = xt.iter().map(|v| v * lambda).collect();
                    let g = block.forward_homogeneous(&scaled, n);
                    let lk = f64::powi(lambda, block.order() as i32);
                    let err = max_abs(g.iter().zip(&f).map(|(a, b)| a - lk * b));
                    assert!(
                        err < 1e-12 * (1.0 + max_abs(g.iter().copied())),
                        "{block:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn masks_limit_what_each_position_reads() {
    let mut r = rng(2);
    let (n, d) = (3, 2);
    let base = AttnOptions::default();
    let given = DMatrix::from_row_slice(3, 3, &[0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
    for (mask, reads) in [
        (
            MaskKind::Causal,
            [
                [true, false, false],
                [true, true, false],
                [true, true, true],
            ],
        ),
        (MaskKind::Full, [[true; 3]; 3]),
        (
            MaskKind::Diagonal,
            [
                [true, false, false],
                [false, true, false],
                [false, false, true],
            ],
        ),
        // Position s reads X[s] (its query side) and X[t] where W[s,t] ≠ 0.
        (
            MaskKind::Matrix(given),
            [
                [true, true, false],
                [false, true, false],
                [true, false, true],
            ],
        ),
    ] {
        let p = AttnParams::random(
            &mut r,
            d,
            &AttnOptions {
                mask: Some(mask.clone()),
                alpha: Some(0.5),
                ..base.clone()
            },
        );
        let x = gaussian_matrix(&mut r, n, d, 1.0);
        let y = p.forward(&x);
        let mut found = [[false; 3]; 3];
        for t in 0..n {
            let mut x2 = x.clone();
            x2.row_mut(t).add_scalar_mut(0.7);
            let y2 = p.forward(&x2);
            for (s, row) in found.iter_mut().enumerate() {
                row[t] = (y2.row(s) - y.row(s)).amax() > 1e-12;
            }
        }
        // found[s][t]: Y[s] changed when X[t] did.
        assert_eq!(found, reads, "{mask:?}");
    }
}

#[test]
fn polarised_tensor_reproduces_the_forward_pass() {
    let mut r = rng(3);
    for n in 1..=3 {
        let d = 3;
        let mut blocks: Vec<Block> = attention_zoo(d, n, 20 + n as u64)
            .into_iter()
            .step_by(2)
            .map(Block::Attention)
            .collect();
        blocks.push(Block::Linear(LinearParams::random(&mut r, 2, d, true, 1.0)));
        blocks.push(Block::Bilinear(BilinearParams::random(
            &mut r, d, 3, true, 0.4, 1.0,
        )));
        for block in &blocks {
            let t = dense_tensor(block, n);
            for _ in 0..3 {
                let xt: Vec<f64> = (0..n * d + 1).map(|_| r.random_range(-1.5..1.5)).collect();
                let f = block.forward_homogeneous(&xt, n);
                let tx = t.apply(&xt);
                let err = max_abs(tx.iter().zip(&f).map(|(a, b)| a - b));
                assert!(
                    err < 1e-12 * (1.0 + max_abs(f.iter().copied())),
                    "n {n}: error {err:e} on {block:?}"
                );
            }
        }
    }
}

#[test]
fn bilinear_tensor_is_the_symmetrised_padded_cp_form_of_spec_1() {
    let mut r = rng(4);
    let (m, h) = (3, 4);
    for s in [1.0, 0.3] {
        let p = BilinearParams::random(&mut r, m, h, true, s, 1.0);
        let t = dense_tensor(&Block::Bilinear(p.clone()), 1);
        // U_1 = [e_0; (b_L | L); (0 | I)], U_2 = [e_0; (b_R | R); (1 | 0)…],
        // D̃ = [(1; s b_D) | (0; s D) | (0; (1−s) I)].
        let rank = 1 + h + m;
        let mut u1 = DMatrix::zeros(rank, m + 1);
        let mut u2 = DMatrix::zeros(rank, m + 1);
        let mut dt = DMatrix::zeros(m + 1, rank);
        u1[(0, 0)] = 1.0;
        u2[(0, 0)] = 1.0;
        dt[(0, 0)] = 1.0;
        for o in 0..m {
            dt[(o + 1, 0)] = s * p.bd.as_ref().unwrap()[o];
        }
        for u in 0..h {
            u1[(1 + u, 0)] = p.bl.as_ref().unwrap()[u];
            u2[(1 + u, 0)] = p.br.as_ref().unwrap()[u];
            for i in 0..m {
                u1[(1 + u, 1 + i)] = p.l[(u, i)];
                u2[(1 + u, 1 + i)] = p.r[(u, i)];
            }
            for o in 0..m {
                dt[(o + 1, 1 + u)] = s * p.d.as_ref().unwrap()[(o, u)];
            }
        }
        for i in 0..m {
            u1[(1 + h + i, 1 + i)] = 1.0;
            u2[(1 + h + i, 0)] = 1.0;
            dt[(1 + i, 1 + h + i)] = 1.0 - s;
        }
        let w = m + 1;
        for o in 0..w {
            for i in 0..w {
                for j in 0..w {
                    let cp: f64 = (0..rank)
                        .map(|rho| {
                            dt[(o, rho)]
                                * (u1[(rho, i)] * u2[(rho, j)] + u1[(rho, j)] * u2[(rho, i)])
                                / 2.0
                        })
                        .sum();
                    let found = t.t[(o, i + w * j)];
                    assert!(
                        (found - cp).abs() < 1e-13,
                        "s {s}, B[{o},{i},{j}]: {found} vs {cp}"
                    );
                }
            }
        }
    }
}

#[test]
fn linear_models_give_the_closed_form() {
    // One affine layer at every position, shared constant:
    // ⟨A,B⟩ = n (tr(W_A W_Bᵀ) + b_A·b_B).
    let mut r = rng(5);
    let lin = |r: &mut _, o, i| LinearParams::random(r, o, i, true, 1.0);
    let (a, b) = (lin(&mut r, 2, 3), lin(&mut r, 2, 3));
    let closed = a.w.dot(&b.w) + a.b.as_ref().unwrap().dot(b.b.as_ref().unwrap());
    for n in 1..=3 {
        let na = SeqNet {
            blocks: vec![Block::Linear(a.clone())],
        };
        let nb = SeqNet {
            blocks: vec![Block::Linear(b.clone())],
        };
        let ip = inner_product(&na, &nb, n);
        assert!(
            (ip - n as f64 * closed).abs() < 1e-12 * closed.abs().max(1.0),
            "n {n}"
        );
    }
    // Two layers compose: W = W2 W1, b = W2 b1 + b2.
    let (a1, a2, b1, b2) = (
        lin(&mut r, 3, 2),
        lin(&mut r, 2, 3),
        lin(&mut r, 4, 2),
        lin(&mut r, 2, 4),
    );
    let compose = |p: &LinearParams, q: &LinearParams| {
        (
            &q.w * &p.w,
            &q.w * p.b.as_ref().unwrap() + q.b.as_ref().unwrap(),
        )
    };
    let ((wa, ba), (wb, bb)) = (compose(&a1, &a2), compose(&b1, &b2));
    let closed = wa.dot(&wb) + ba.dot(&bb);
    let na = SeqNet {
        blocks: vec![Block::Linear(a1), Block::Linear(a2)],
    };
    let nb = SeqNet {
        blocks: vec![Block::Linear(b1), Block::Linear(b2)],
    };
    for n in 1..=3 {
        let ip = inner_product(&na, &nb, n);
        assert!(
            (ip - n as f64 * closed).abs() < 1e-12 * closed.abs().max(1.0),
            "n {n}"
        );
    }
}

#[test]
fn gram_recursion_is_the_frobenius_product_of_end_to_end_tensors() {
    // With one block of order above 1 the end-to-end tensor is symmetric,
    // so it is what polarising the whole network's homogeneous forward
    // gives: the recursion must reproduce its Frobenius product.
    let mut r = rng(6);
    let n = 2;
    let d_in = 2;
    let make = |r: &mut _, d: usize, heads: usize, mask: MaskKind| {
        let o = AttnOptions {
            heads,
            mask: Some(mask),
            alpha: Some(0.6),
            ..AttnOptions::default()
        };
        SeqNet {
            blocks: vec![
                Block::Linear(LinearParams::random(r, d, d_in, true, 1.0)),
                Block::Attention(AttnParams::random(r, d, &o)),
                Block::Linear(LinearParams::random(r, 2, d, true, 1.0)),
            ],
        }
    };
    let given = gaussian_matrix(&mut r, n, n, 1.0);
    let pairs = [
        (
            make(&mut r, 3, 2, MaskKind::Causal),
            make(&mut r, 2, 1, MaskKind::Full),
        ),
        (
            make(&mut r, 2, 1, MaskKind::Matrix(given.clone())),
            make(&mut r, 3, 3, MaskKind::Diagonal),
        ),
        (
            SeqNet {
                blocks: vec![
                    Block::Linear(LinearParams::random(&mut r, 3, d_in, true, 1.0)),
                    Block::Bilinear(BilinearParams::random(&mut r, 3, 4, true, 0.5, 1.0)),
                    Block::Linear(LinearParams::random(&mut r, 2, 3, true, 1.0)),
                ],
            },
            SeqNet {
                blocks: vec![
                    Block::Linear(LinearParams::random(&mut r, 2, d_in, true, 1.0)),
                    Block::Bilinear(BilinearParams::random(&mut r, 2, 3, true, 1.0, 1.0)),
                    Block::Linear(LinearParams::random(&mut r, 2, 2, false, 1.0)),
                ],
            },
        ),
    ];
    for (a, b) in &pairs {
        let (ta, tb) = (dense_tensor_of_net(a, n), dense_tensor_of_net(b, n));
        let frob = |x: &DMatrix<f64>, y: &DMatrix<f64>| {
            let rows = x.nrows() - 1;
            x.rows(1, rows).dot(&y.rows(1, rows))
        };
        for (x, y, ip) in [
            (&ta, &tb, inner_product(a, b, n)),
            (&ta, &ta, inner_product(a, a, n)),
            (&tb, &tb, inner_product(b, b, n)),
        ] {
            let expected = frob(&x.t, &y.t);
            let scale = (frob(&x.t, &x.t) * frob(&y.t, &y.t)).sqrt();
            assert!((ip - expected).abs() < 1e-12 * scale, "{ip} vs {expected}");
        }
    }
}

/// A position-wise network (embed, bilinear MLP, head).
fn position_wise(r: &mut rand::rngs::StdRng, d: usize, h: usize, s: f64) -> SeqNet {
    SeqNet {
        blocks: vec![
            Block::Linear(LinearParams::random(r, d, 2, true, 1.0)),
            Block::Bilinear(BilinearParams::random(r, d, h, true, s, 1.0)),
            Block::Linear(LinearParams::random(r, 2, d, true, 1.0)),
        ],
    }
}

#[test]
fn position_wise_models_have_n_times_the_vector_inner_product() {
    let mut r = rng(7);
    let a = position_wise(&mut r, 3, 4, 0.5);
    let b = position_wise(&mut r, 2, 3, 1.0);
    let one = inner_product(&a, &b, 1);
    let sim1 = similarity(&a, &b, 1);
    for n in 2..=3 {
        let ip = inner_product(&a, &b, n);
        assert!(
            (ip - n as f64 * one).abs() < 1e-12 * one.abs().max(1.0),
            "n {n}"
        );
        assert!((similarity(&a, &b, n) - sim1).abs() < 1e-13, "n {n}");
    }
}

#[test]
fn symmetry_transformations_preserve_the_function() {
    let mut r = rng(8);
    let (n, d) = (3, 3);
    for (i, mut attn) in attention_zoo(d, n, 30).into_iter().enumerate() {
        if attn.rotary.is_none() {
            attn.rotary = Some(50.0);
        }
        attn.quadratic = false;
        let (hh, e, ev) = (attn.heads, attn.e(), attn.ev());
        let x = gaussian_matrix(&mut r, n, d, 1.0);
        let y = attn.forward(&x);
        let check = |t: &AttnParams, what: &str| {
            let err = (t.forward(&x) - &y).amax();
            assert!(err < 1e-12 * (1.0 + y.amax()), "zoo {i}, {what}: {err:e}");
        };
        if hh > 1 {
            let mut t = attn.clone();
            t.permute_heads(&random_cycle_from_shuffle(&mut r, hh));
            check(&t, "head permutation");
        }
        let mut t = attn.clone();
        t.swap_score_factors(r.random_range(0..hh));
        check(&t, "score factor swap");
        let mut t = attn.clone();
        t.change_value_basis(r.random_range(0..hh), &random_invertible_signed(&mut r, ev));
        check(&t, "value basis");
        let mut t = attn.clone();
        t.rescale_first_factor(r.random_range(0..hh), -3.5);
        check(&t, "Q1/K1 rescaling");
        let mut t = attn.clone();
        t.rotate_first_plane(r.random_range(0..hh), r.random_range(0..e / 2), 2.1);
        check(&t, "rotary plane rotation");
    }
    // The residual-stream change of basis across a whole transformer, for
    // the lerp skip, the additive skip and a skip of neither kind.
    for (k, skip) in [None, Some(1.0), Some(0.2)].into_iter().enumerate() {
        let o = AttnOptions {
            skip,
            ..AttnOptions::default()
        };
        let mut net = SeqNet::transformer(&mut r, 2, 3, 2, 2, 3, 0.35, &o);
        if let Block::Attention(p) = &mut net.blocks[3] {
            p.skip = skip;
        }
        for b in &mut net.blocks {
            if let Block::Attention(p) = b {
                p.skip = skip;
            }
        }
        let mut twin = net.clone();
        twin.change_stream_basis(
            &random_invertible_signed(&mut r, 3),
            &gaussian_vector(&mut r, 3, 1.0),
        );
        let x = gaussian_matrix(&mut r, n, 2, 1.0);
        let (y, y2) = (net.forward(&x), twin.forward(&x));
        assert!(
            (y2 - &y).amax() < 1e-11 * (1.0 + y.amax()),
            "stream basis, case {k}"
        );
    }
}

#[test]
fn oracle_similarity_is_one_on_a_twin_and_not_on_another_model() {
    let mut r = rng(9);
    let n = 2;
    let o = AttnOptions::default();
    let a = SeqNet::transformer(&mut r, 2, 2, 2, 1, 2, 0.5, &o);
    let mut twin = a.clone();
    twin.change_stream_basis(
        &random_invertible_signed(&mut r, 2),
        &gaussian_vector(&mut r, 2, 1.0),
    );
    twin.attention_mut(1).swap_score_factors(1);
    twin.attention_mut(1).permute_heads(&[1, 0]);
    let sim = similarity(&a, &twin, n);
    assert!((sim - 1.0).abs() < 1e-12, "{sim}");
    let b = SeqNet::transformer(&mut r, 2, 2, 2, 1, 2, 0.5, &o);
    let other = similarity(&a, &b, n);
    assert!(other.abs() < 0.99, "{other}");
}
