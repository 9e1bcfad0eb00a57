//! The Gram recursion against the materialised end-to-end tensor.
//!
//! The oracle shares no code with the library: each block's symmetrised
//! dense tensor is recovered from a plain forward pass by polarisation
//! (a quadratic form is determined by its values), blocks are composed by
//! explicit contraction, and the inner product is the Frobenius one.

mod common;

use common::{Layer, Net, Options, rng};
use nalgebra::{DMatrix, DVector};
use tensor_similarity::{
    Bilinear, CpBlock, Linear, Model, Permutation, PermutationGroup, RecursiveSimilarity,
    TensorBlock, TensorSimilarity, Trivial, pad, similarity,
};

/// Output `o` of a layer on the padded input `x̃` with `x̃_0 = 1`, padded.
fn padded_forward(layer: &Layer, x: &DVector<f64>) -> DVector<f64> {
    let y = layer.forward(x);
    DVector::from_iterator(y.len() + 1, std::iter::once(1.0).chain(y.iter().copied()))
}

/// The dense padded tensor of a layer, symmetrised over its legs, as one
/// `(m+1) × (m+1)` matrix per output (order 2) or the padded matrix (order 1).
enum DenseBlock {
    Linear(DMatrix<f64>),
    Bilinear(Vec<DMatrix<f64>>),
}

fn dense_block(layer: &Layer) -> DenseBlock {
    let m = layer.input_width();
    let f = |x: DVector<f64>| padded_forward(layer, &x);
    let e = |i: usize| {
        let mut v = DVector::zeros(m);
        v[i] = 1.0;
        v
    };
    match layer {
        Layer::Linear(_) => {
            // Affine: column 0 is f(0), column 1+j is f(e_j) − f(0).
            let f0 = f(DVector::zeros(m));
            let mut b = DMatrix::zeros(f0.len(), m + 1);
            b.set_column(0, &f0);
            for j in 0..m {
                b.set_column(j + 1, &(f(e(j)) - &f0));
            }
            DenseBlock::Linear(b)
        }
        Layer::Bilinear(_) => {
            // q(x̃) = x̃ᵀ B x̃ with x̃ = (1, x): f(0) = B00, f(±e_j) = B00 ± 2B0j + Bjj,
            // f(e_i + e_j) = B00 + 2B0i + 2B0j + Bii + Bjj + 2Bij.
            let f0 = f(DVector::zeros(m));
            let n1 = f0.len();
            let mut b = vec![DMatrix::zeros(m + 1, m + 1); n1];
            let fp: Vec<_> = (0..m).map(|j| f(e(j))).collect();
            let fm: Vec<_> = (0..m).map(|j| f(-e(j))).collect();
            for o in 0..n1 {
                b[o][(0, 0)] = f0[o];
                for j in 0..m {
                    let b0j = (fp[j][o] - fm[j][o]) / 4.0;
                    b[o][(0, j + 1)] = b0j;
                    b[o][(j + 1, 0)] = b0j;
                    b[o][(j + 1, j + 1)] = (fp[j][o] + fm[j][o]) / 2.0 - f0[o];
                }
            }
            for i in 0..m {
                for j in 0..i {
                    let fij = f(e(i) + e(j));
                    for o in 0..n1 {
                        let bb = &b[o];
                        let v = (fij[o]
                            - bb[(0, 0)]
                            - 2.0 * bb[(0, i + 1)]
                            - 2.0 * bb[(0, j + 1)]
                            - bb[(i + 1, i + 1)]
                            - bb[(j + 1, j + 1)])
                            / 2.0;
                        b[o][(i + 1, j + 1)] = v;
                        b[o][(j + 1, i + 1)] = v;
                    }
                }
            }
            DenseBlock::Bilinear(b)
        }
    }
}

/// The end-to-end tensor as `(n+1) × (#columns)`, each leg carrying `c`
/// (`c cᵀ = M`): composing `T ↦ B T` (linear) or
/// `T[o, (α, β)] = (Tᵀ B_o T)[α, β]` (bilinear).
fn end_to_end(net: &Net, c: &DMatrix<f64>) -> DMatrix<f64> {
    let mut t = c.clone();
    for layer in &net.layers {
        t = match dense_block(layer) {
            DenseBlock::Linear(b) => b * t,
            DenseBlock::Bilinear(b) => {
                let cols = t.ncols();
                let mut next = DMatrix::zeros(b.len(), cols * cols);
                for (o, bo) in b.iter().enumerate() {
                    let q = t.transpose() * bo * &t;
                    for alpha in 0..cols {
                        for beta in 0..cols {
                            next[(o, alpha * cols + beta)] = q[(alpha, beta)];
                        }
                    }
                }
                next
            }
        };
    }
    t
}

/// `Σ_{o,o' ≥ 1} Q[o,o'] ⟨T_A[o], T_B[o']⟩` (`Q = I` by default).
fn frobenius(ta: &DMatrix<f64>, tb: &DMatrix<f64>, q: Option<&DMatrix<f64>>) -> f64 {
    let n = ta.nrows() - 1;
    let g = ta.rows(1, n) * tb.rows(1, n).transpose();
    match q {
        Some(q) => (q * g.transpose()).trace(),
        None => g.trace(),
    }
}

fn oracle_cosine(a: &Net, b: &Net) -> f64 {
    let c = DMatrix::identity(a.layers[0].input_width() + 1, a.layers[0].input_width() + 1);
    let (ta, tb) = (end_to_end(a, &c), end_to_end(b, &c));
    frobenius(&ta, &tb, None) / (frobenius(&ta, &ta, None) * frobenius(&tb, &tb, None)).sqrt()
}

fn assert_close(found: f64, expected: f64, tol: f64, what: &str) {
    assert!(
        approx::abs_diff_eq!(found, expected, epsilon = tol),
        "{what}: recursion {found}, oracle {expected}, difference {:e}",
        (found - expected).abs()
    );
}

#[test]
fn recursion_matches_dense_tensor_over_depths_biases_residuals_and_layouts() {
    let mut cases = 0;
    for depth in 1..=3 {
        for biases in [false, true] {
            for residual in [1.0, 0.7, 0.5] {
                for fused in [false, true] {
                    let seed = (depth * 100 + biases as usize * 10) as u64
                        + (residual * 10.0) as u64
                        + fused as u64 * 1000;
                    let mut r = rng(seed);
                    let o = Options {
                        biases,
                        down: true,
                        residual,
                        fused,
                        scale: 1.0,
                    };
                    // A and B differ in stream width and in every hidden width.
                    let ha: Vec<usize> = (0..depth).map(|i| 2 + i).collect();
                    let hb: Vec<usize> = (0..depth).map(|i| 4 - i % 2).collect();
                    let a = Net::random(&mut r, 2, 3, &ha, 2, o);
                    let b = Net::random(&mut r, 2, 2, &hb, 2, o);
                    let expected = oracle_cosine(&a, &b);
                    let found = similarity(&a.model::<f64>(), &b.model::<f64>()).unwrap();
                    assert_close(
                        found,
                        expected,
                        1e-10,
                        &format!(
                            "depth {depth}, biases {biases}, residual {residual}, fused {fused}"
                        ),
                    );
                    // Raw inner products too, not just their ratio.
                    let c = DMatrix::identity(3, 3);
                    let raw = frobenius(&end_to_end(&a, &c), &end_to_end(&b, &c), None);
                    let ip = tensor_similarity::inner_product(&a.model::<f64>(), &b.model::<f64>())
                        .unwrap()
                        .to_f64();
                    assert_close(ip / raw, 1.0, 1e-10, "raw inner product ratio");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 36);
}

#[test]
fn recursion_matches_dense_tensor_without_down_projection() {
    // Bilinear layers whose hidden units are the next stream (n = h).
    for depth in 1..=3 {
        let mut r = rng(7 + depth as u64);
        let o = Options {
            biases: true,
            down: false,
            residual: 1.0,
            fused: false,
            scale: 1.0,
        };
        let a = Net::random(&mut r, 2, 3, &vec![3; depth], 2, o);
        let b = Net::random(&mut r, 2, 2, &vec![2; depth], 2, o);
        let found = similarity(&a.model::<f64>(), &b.model::<f64>()).unwrap();
        assert_close(
            found,
            oracle_cosine(&a, &b),
            1e-10,
            &format!("depth {depth}"),
        );
    }
}

#[test]
fn input_metric_and_output_weights_match_dense_tensor() {
    let mut r = rng(42);
    let o = Options::default();
    let a = Net::random(&mut r, 2, 3, &[3, 2], 3, o);
    let b = Net::random(&mut r, 2, 3, &[2, 4], 3, o);
    // M = E[x̃x̃ᵀ] of N(μ, Σ).
    let mu = DVector::from_vec(vec![0.3, -0.8]);
    let s = DMatrix::from_row_slice(2, 2, &[1.5, 0.4, 0.4, 0.7]);
    let mut m = DMatrix::zeros(3, 3);
    m[(0, 0)] = 1.0;
    for i in 0..2 {
        m[(0, i + 1)] = mu[i];
        m[(i + 1, 0)] = mu[i];
        for j in 0..2 {
            m[(i + 1, j + 1)] = s[(i, j)] + mu[i] * mu[j];
        }
    }
    let c = m.clone().cholesky().unwrap().l();
    let q = DMatrix::from_row_slice(3, 3, &[2.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0]);
    let (ta, tb) = (end_to_end(&a, &c), end_to_end(&b, &c));
    let expected = frobenius(&ta, &tb, Some(&q))
        / (frobenius(&ta, &ta, Some(&q)) * frobenius(&tb, &tb, Some(&q))).sqrt();
    let metric = TensorSimilarity::new()
        .with_input_gaussian(&mu, &s)
        .unwrap()
        .with_output_weights(q)
        .unwrap();
    assert_close(
        metric
            .similarity(&a.model::<f64>(), &b.model::<f64>())
            .unwrap(),
        expected,
        1e-10,
        "M and Q",
    );

    // Slice similarity: output 1 alone is Q = e_1 e_1ᵀ.
    let e1 = DMatrix::from_fn(3, 3, |i, j| if i == 1 && j == 1 { 1.0 } else { 0.0 });
    let c = DMatrix::identity(3, 3);
    let (ta, tb) = (end_to_end(&a, &c), end_to_end(&b, &c));
    let expected = frobenius(&ta, &tb, Some(&e1))
        / (frobenius(&ta, &ta, Some(&e1)) * frobenius(&tb, &tb, Some(&e1))).sqrt();
    let slice = TensorSimilarity::new().with_output_selection(vec![1]);
    assert_close(
        slice
            .similarity(&a.model::<f64>(), &b.model::<f64>())
            .unwrap(),
        expected,
        1e-10,
        "slice",
    );
}

#[test]
fn padded_form_of_every_block_matches_plain_forward_pass() {
    let mut r = rng(3);
    for (down, biases, residual, fused) in [
        (true, true, 1.0, false),
        (true, false, 0.7, true),
        (false, true, 1.0, true),
        (true, true, 0.5, false),
    ] {
        let o = Options {
            biases,
            down,
            residual,
            fused,
            scale: 1.0,
        };
        let net = Net::random(&mut r, 3, 4, &[5, 3], 2, o);
        let model: Model<f64> = net.model::<f64>();
        for _ in 0..5 {
            let mut x = common::gaussian_vector(&mut r, 3, 1.0);
            for (layer, block) in net.layers.iter().zip(model.blocks()) {
                let plain = layer.forward(&x);
                let library = block.forward(&x).unwrap();
                let padded = block.as_cp().unwrap().apply_padded(&pad(&x)).unwrap();
                assert!(
                    (padded[0] - 1.0).abs() < 1e-14,
                    "{} block lost the constant",
                    block.kind()
                );
                assert!(
                    (padded.rows(1, plain.len()) - &plain).amax() < 1e-12 * (1.0 + plain.amax())
                );
                assert!((library - &plain).amax() < 1e-12 * (1.0 + plain.amax()));
                x = plain;
            }
        }
        let x = common::gaussian_vector(&mut r, 3, 1.0);
        assert!((model.forward(&x).unwrap() - net.forward(&x)).amax() < 1e-10);
    }
}

/// Dense tensor of a CP block straight from the definition
/// `B[o, i_1…i_k] = Σ_ρ D̃[o,ρ] Π_j U_j[ρ, i_j]`, averaged over `group`.
fn dense_cp(us: &[DMatrix<f64>], d: &DMatrix<f64>, group: &[Vec<usize>]) -> Vec<f64> {
    let k = us.len();
    let w = us[0].ncols();
    let n1 = d.nrows();
    let cols = w.pow(k as u32);
    let mut out = vec![0.0; n1 * cols];
    let mut idx = vec![0; k];
    for col in 0..cols {
        let mut c = col;
        for j in (0..k).rev() {
            idx[j] = c % w;
            c /= w;
        }
        for sigma in group {
            for o in 0..n1 {
                let mut v = 0.0;
                for rho in 0..us[0].nrows() {
                    // Leg j of the permuted tensor reads index idx[σ(j)].
                    v += d[(o, rho)] * (0..k).map(|j| us[j][(rho, idx[sigma[j]])]).product::<f64>();
                }
                out[o * cols + col] += v / group.len() as f64;
            }
        }
    }
    out
}

#[test]
fn order_three_blocks_and_explicit_groups_match_dense_tensor() {
    let mut r = rng(11);
    let m = 2;
    let rank = 4;
    let make = |r: &mut rand::rngs::StdRng| {
        // Term 0 carries the constant: U_j[0] = e_0, D̃[:,0] = (1, b), D̃[0, 1:] = 0.
        let mut us = Vec::new();
        for _ in 0..3 {
            let mut u = common::gaussian_matrix(r, rank, m + 1, 1.0);
            u.row_mut(0).fill(0.0);
            u[(0, 0)] = 1.0;
            us.push(u);
        }
        let mut d = common::gaussian_matrix(r, 3, rank, 1.0);
        d.row_mut(0).fill(0.0);
        d[(0, 0)] = 1.0;
        (us, d)
    };
    let (ua, da) = make(&mut r);
    let (ub, db) = make(&mut r);
    let swap01 = Permutation::new(vec![1, 0, 2]).unwrap();
    // The oracle's group elements, written out.
    let all: Vec<Vec<usize>> = vec![
        vec![0, 1, 2],
        vec![0, 2, 1],
        vec![1, 0, 2],
        vec![1, 2, 0],
        vec![2, 0, 1],
        vec![2, 1, 0],
    ];
    let pair: Vec<Vec<usize>> = vec![vec![0, 1, 2], vec![1, 0, 2]];
    let id: Vec<Vec<usize>> = vec![vec![0, 1, 2]];
    type Group = std::sync::Arc<dyn tensor_similarity::SymmetryGroup>;
    let groups: Vec<(Group, &Vec<Vec<usize>>)> = vec![
        (std::sync::Arc::new(tensor_similarity::Full), &all),
        (
            std::sync::Arc::new(PermutationGroup::generated_by(&[swap01]).unwrap()),
            &pair,
        ),
        (std::sync::Arc::new(Trivial), &id),
    ];
    for (ga, ea) in &groups {
        for (gb, eb) in &groups {
            let a = Model::builder()
                .block(CpBlock::with_symmetry(ua.clone(), da.clone(), ga.clone()).unwrap())
                .build()
                .unwrap();
            let b = Model::builder()
                .block(CpBlock::with_symmetry(ub.clone(), db.clone(), gb.clone()).unwrap())
                .build()
                .unwrap();
            let (ta, tb) = (dense_cp(&ua, &da, ea), dense_cp(&ub, &db, eb));
            let cols = ta.len() / 3;
            let dot = |x: &[f64], y: &[f64]| {
                x[cols..]
                    .iter()
                    .zip(&y[cols..])
                    .map(|(p, q)| p * q)
                    .sum::<f64>()
            };
            let expected = dot(&ta, &tb) / (dot(&ta, &ta) * dot(&tb, &tb)).sqrt();
            assert_close(
                similarity(&a, &b).unwrap(),
                expected,
                1e-10,
                &format!("groups {ea:?} vs {eb:?}"),
            );
        }
    }
}

#[test]
fn linear_models_reduce_to_the_frobenius_product_of_padded_matrices() {
    // A closed form: for a single affine layer ⟨A,B⟩ = tr(W_A W_Bᵀ) + b_A·b_B.
    let mut r = rng(5);
    let (wa, wb) = (
        common::gaussian_matrix(&mut r, 3, 4, 1.0),
        common::gaussian_matrix(&mut r, 3, 4, 1.0),
    );
    let (ba, bb) = (
        common::gaussian_vector(&mut r, 3, 1.0),
        common::gaussian_vector(&mut r, 3, 1.0),
    );
    let a = Model::builder()
        .block(Linear::new(wa.clone(), Some(ba.clone())).unwrap())
        .build()
        .unwrap();
    let b = Model::builder()
        .block(Linear::new(wb.clone(), Some(bb.clone())).unwrap())
        .build()
        .unwrap();
    let expected = (wa.dot(&wb) + ba.dot(&bb))
        / ((wa.norm_squared() + ba.norm_squared()) * (wb.norm_squared() + bb.norm_squared()))
            .sqrt();
    assert_close(similarity(&a, &b).unwrap(), expected, 1e-14, "linear");
    // And one bilinear layer without biases: ⟨A,B⟩ = Σ_o ‖sym(B_o)‖-products, here checked
    // against the CP definition through the unsymmetrised Khatri–Rao form.
    let (l, rr) = (
        common::gaussian_matrix(&mut r, 3, 2, 1.0),
        common::gaussian_matrix(&mut r, 3, 2, 1.0),
    );
    let block = Bilinear::new(l.clone(), rr.clone()).unwrap();
    let dense = block.as_cp().unwrap().dense();
    assert_eq!(dense.shape(), (4, 9));
    for u in 0..3 {
        for i in 0..2 {
            for j in 0..2 {
                assert!(
                    (dense[(u + 1, (i + 1) * 3 + j + 1)] - l[(u, i)] * rr[(u, j)]).abs() < 1e-15
                );
            }
        }
    }
}

#[test]
fn recursion_matches_dense_tensor_with_each_bias_alone() {
    // Every subset of {b_L, b_R, b_D} on every bilinear block.
    for mask in 0..8u32 {
        let mut r = rng(500 + mask as u64);
        let o = Options {
            biases: true,
            residual: 0.7,
            ..Options::default()
        };
        let mut a = Net::random(&mut r, 2, 3, &[3, 2], 2, o);
        let b = Net::random(&mut r, 2, 3, &[2, 3], 2, o);
        for layer in &mut a.layers {
            if let Layer::Bilinear(p) = layer {
                if mask & 1 == 0 {
                    p.bl = None;
                }
                if mask & 2 == 0 {
                    p.br = None;
                }
                if mask & 4 == 0 {
                    p.bd = None;
                }
            }
        }
        let found = similarity(&a.model::<f64>(), &b.model::<f64>()).unwrap();
        assert_close(
            found,
            oracle_cosine(&a, &b),
            1e-10,
            &format!("bias mask {mask:03b}"),
        );
    }
}
