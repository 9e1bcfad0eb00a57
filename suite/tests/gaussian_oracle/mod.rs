//! An independent oracle for the Gaussian metric on sequences (SPEC §3, §7):
//! exact Gaussian moments of low-degree polynomial maps, read off their
//! values on a lattice.
//!
//! Written from the specification alone; it shares no code with the
//! library. A map `g: R^V → R^k` of total degree `≤ D` is determined by its
//! values on the lattice `{α ∈ Z^V_{≥0} : |α| ≤ D}`, and Newton's forward
//! differences give it exactly in the basis of binomial polynomials,
//! `g(ξ) = Σ_α Δ^α g(0) Π_i C(ξ_i, α_i)` ([`Newton`]). For a standard
//! normal `ξ` the coordinates are independent, so
//!
//! ```text
//! E[g_A(ξ) g_B(ξ)ᵀ] = Σ_{α,β} Δ^α g_A(0) Δ^β g_B(0)ᵀ Π_i e(α_i, β_i),   e(a, b) = E[C(ξ,a) C(ξ,b)]
//! ```
//!
//! with `e` from the moments `E[ξ^k] = (k−1)!!` of `N(0, 1)`. A Gaussian
//! `x = μ + L ξ` (`L Lᵀ = Σ`) is a change of variables inside `g`. Every
//! evaluation goes through the oracle's own forward pass (`SeqNet`), so
//! the only shared assumption is SPEC's definition of the blocks.
//!
//! * [`exact`]: `E[f_A · f_B]` of two whole models (degree `≤ 5`: one
//!   attention block with linear maps around it) under i.i.d. rows.
//! * [`closure`]: the Gaussian closure of SPEC §3 done directly: the joint
//!   mean and covariance of both models' flattened activations, and per
//!   block one exact Gaussian step of this kind (the block read as a
//!   polynomial of the joint Gaussian `(x_A, x_B)`).
#![allow(dead_code)]

use nalgebra::{DMatrix, DVector};

use crate::seq_oracle::{Block, SeqNet};

/// `C(n, k)` as `f64`.
fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Every `α ∈ Z^v_{≥0}` with `|α| ≤ d`.
fn lattice(v: usize, d: usize) -> Vec<Vec<usize>> {
    fn rec(v: usize, left: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == v {
            out.push(cur.clone());
            return;
        }
        for a in 0..=left {
            cur.push(a);
            rec(v, left - a, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(v, d, &mut Vec::with_capacity(v), &mut out);
    out
}

/// A polynomial map in Newton form: `coeffs` column `j` is `Δ^{α_j} g(0)`.
pub struct Newton {
    pub points: Vec<Vec<usize>>,
    pub coeffs: DMatrix<f64>,
}

impl Newton {
    /// `g` of total degree `≤ d` on `R^v` from its values on the lattice.
    pub fn new(v: usize, d: usize, g: &mut impl FnMut(&DVector<f64>) -> DVector<f64>) -> Self {
        let points = lattice(v, d);
        let positions: std::collections::HashMap<&[usize], usize> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), i))
            .collect();
        let index = |a: &[usize]| positions[a];
        let values: Vec<DVector<f64>> = points
            .iter()
            .map(|p| g(&DVector::from_iterator(v, p.iter().map(|&x| x as f64))))
            .collect();
        let k = values[0].len();
        let mut coeffs = DMatrix::zeros(k, points.len());
        for (j, alpha) in points.iter().enumerate() {
            // Δ^α g(0) = Σ_{β ≤ α} (−1)^{|α−β|} Π C(α_i, β_i) g(β).
            let mut beta = vec![0usize; v];
            loop {
                let sign = if (alpha.iter().sum::<usize>() - beta.iter().sum::<usize>()) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                let w: f64 = alpha
                    .iter()
                    .zip(&beta)
                    .map(|(&a, &b)| binomial(a, b))
                    .product();
                let mut col = coeffs.column_mut(j);
                col.axpy(sign * w, &values[index(&beta)], 1.0);
                // Next β ≤ α (odometer).
                let mut i = 0;
                while i < v && beta[i] == alpha[i] {
                    beta[i] = 0;
                    i += 1;
                }
                if i == v {
                    break;
                }
                beta[i] += 1;
            }
        }
        Self { points, coeffs }
    }
}

/// `E[ξ^k]` for `ξ ∼ N(0, 1)`.
fn normal_moment(k: usize) -> f64 {
    if k % 2 == 1 {
        0.0
    } else {
        (1..k).step_by(2).map(|i| i as f64).product()
    }
}

/// The monomial coefficients of `C(x, a)`.
fn binomial_poly(a: usize) -> Vec<f64> {
    // x (x−1) … (x−a+1) / a!
    let mut p = vec![1.0];
    for i in 0..a {
        let mut next = vec![0.0; p.len() + 1];
        for (k, &c) in p.iter().enumerate() {
            next[k + 1] += c;
            next[k] -= c * i as f64;
        }
        p = next;
    }
    let fact: f64 = (1..=a).map(|i| i as f64).product();
    p.iter().map(|c| c / fact).collect()
}

/// `e(a, b) = E[C(ξ,a) C(ξ,b)]` for `a, b ≤ d`.
fn pair_table(d: usize) -> DMatrix<f64> {
    DMatrix::from_fn(d + 1, d + 1, |a, b| {
        let (pa, pb) = (binomial_poly(a), binomial_poly(b));
        let mut acc = 0.0;
        for (i, x) in pa.iter().enumerate() {
            for (j, y) in pb.iter().enumerate() {
                acc += x * y * normal_moment(i + j);
            }
        }
        acc
    })
}

/// `E[g]` and `E[g_A g_Bᵀ]` under `ξ ∼ N(0, I)`.
pub fn mean(p: &Newton) -> DVector<f64> {
    let d = p
        .points
        .iter()
        .map(|a| a.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let e = pair_table(d);
    let w = DVector::from_iterator(
        p.points.len(),
        p.points
            .iter()
            .map(|a| a.iter().map(|&x| e[(x, 0)]).product::<f64>()),
    );
    &p.coeffs * w
}

pub fn second_moment(pa: &Newton, pb: &Newton) -> DMatrix<f64> {
    let d = pa
        .points
        .iter()
        .chain(&pb.points)
        .map(|a| a.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let e = pair_table(d);
    let m = DMatrix::from_fn(pa.points.len(), pb.points.len(), |i, j| {
        pa.points[i]
            .iter()
            .zip(&pb.points[j])
            .map(|(&a, &b)| e[(a, b)])
            .product()
    });
    &pa.coeffs * m * pb.coeffs.transpose()
}

/// A factor `L` with `L Lᵀ = C` for a positive semidefinite `C`.
pub fn factor(c: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (c + c.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let mut l = eig.eigenvectors.clone();
    for (i, &lambda) in eig.eigenvalues.iter().enumerate() {
        let s = lambda.max(0.0).sqrt();
        l.column_mut(i).scale_mut(s);
    }
    l
}

fn flatten(y: &DMatrix<f64>) -> DVector<f64> {
    // Row-major: position after position.
    DVector::from_iterator(y.len(), y.transpose().iter().copied())
}

fn unflatten(x: &DVector<f64>, n: usize) -> DMatrix<f64> {
    DMatrix::from_row_slice(n, x.len() / n, x.as_slice())
}

/// The flattened input law: rows i.i.d. `N(μ, Σ)`.
pub fn input_law(
    mu: &DVector<f64>,
    sigma: &DMatrix<f64>,
    n: usize,
) -> (DVector<f64>, DMatrix<f64>) {
    let d = mu.len();
    let mut m = DVector::zeros(n * d);
    let mut c = DMatrix::zeros(n * d, n * d);
    for p in 0..n {
        m.rows_mut(p * d, d).copy_from(mu);
        c.view_mut((p * d, p * d), (d, d)).copy_from(sigma);
    }
    (m, c)
}

/// `E[f_A·f_B]`, `E[|f_A|²]`, `E[|f_B|²]` exactly, for models of degree
/// `≤ 5` on `n` positions with i.i.d. rows `N(μ, Σ)`.
pub fn exact(
    a: &SeqNet,
    b: &SeqNet,
    n: usize,
    mu: &DVector<f64>,
    sigma: &DMatrix<f64>,
) -> (f64, f64, f64) {
    let (m, c) = input_law(mu, sigma, n);
    let l = factor(&c);
    let v = m.len();
    let poly = |net: &SeqNet| {
        assert!(net.degree() <= 5, "the lattice oracle is exact to degree 5");
        Newton::new(v, net.degree(), &mut |xi| {
            flatten(&net.forward(&unflatten(&(&m + &l * xi), n)))
        })
    };
    let (pa, pb) = (poly(a), poly(b));
    (
        second_moment(&pa, &pb).trace(),
        second_moment(&pa, &pa).trace(),
        second_moment(&pb, &pb).trace(),
    )
}

/// The joint Gaussian state of the two models' flattened activations.
struct Joint {
    mean: DVector<f64>,
    cov: DMatrix<f64>,
    /// Width of the first model's part.
    split: usize,
}

/// One exact Gaussian step: blocks `ba`, `bb` read the two parts of the
/// joint Gaussian; the output's mean and covariance.
fn step(state: &Joint, ba: &Block, bb: &Block, n: usize) -> Joint {
    let l = factor(&state.cov);
    let v = state.mean.len();
    let s = state.split;
    let poly = |block: &Block, range: std::ops::Range<usize>| {
        let (m, lr) = (
            state.mean.rows(range.start, range.len()).into_owned(),
            l.rows(range.start, range.len()).into_owned(),
        );
        Newton::new(v, block.order(), &mut |xi| {
            flatten(&block.forward(&unflatten(&(&m + &lr * xi), n)))
        })
    };
    let (pa, pb) = (poly(ba, 0..s), poly(bb, s..v));
    let (ma, mb) = (mean(&pa), mean(&pb));
    let (wa, wb) = (ma.len(), mb.len());
    let mut m = DVector::zeros(wa + wb);
    m.rows_mut(0, wa).copy_from(&ma);
    m.rows_mut(wa, wb).copy_from(&mb);
    let mut c = DMatrix::zeros(wa + wb, wa + wb);
    let aa = second_moment(&pa, &pa) - &ma * ma.transpose();
    let ab = second_moment(&pa, &pb) - &ma * mb.transpose();
    let bb2 = second_moment(&pb, &pb) - &mb * mb.transpose();
    c.view_mut((0, 0), (wa, wa)).copy_from(&aa);
    c.view_mut((0, wa), (wa, wb)).copy_from(&ab);
    c.view_mut((wa, 0), (wb, wa)).copy_from(&ab.transpose());
    c.view_mut((wa, wa), (wb, wb)).copy_from(&bb2);
    Joint {
        mean: m,
        cov: c,
        split: wa,
    }
}

/// The Gaussian closure (SPEC §3) of `E[f_A·f_B]`, `E[|f_A|²]`, `E[|f_B|²]`
/// on `n` positions with i.i.d. rows `N(μ, Σ)`: every block sees the
/// Gaussian with the tracked joint mean and covariance. The models need the
/// same depth; blocks must be of degree `≤ 5` (each step is exact).
pub fn closure(
    a: &SeqNet,
    b: &SeqNet,
    n: usize,
    mu: &DVector<f64>,
    sigma: &DMatrix<f64>,
) -> (f64, f64, f64) {
    assert_eq!(a.blocks.len(), b.blocks.len());
    let (m, c) = input_law(mu, sigma, n);
    let v = m.len();
    let mut joint_mean = DVector::zeros(2 * v);
    joint_mean.rows_mut(0, v).copy_from(&m);
    joint_mean.rows_mut(v, v).copy_from(&m);
    let mut joint_cov = DMatrix::zeros(2 * v, 2 * v);
    for (i, j) in [(0, 0), (0, v), (v, 0), (v, v)] {
        joint_cov.view_mut((i, j), (v, v)).copy_from(&c);
    }
    let mut state = Joint {
        mean: joint_mean,
        cov: joint_cov,
        split: v,
    };
    for (ba, bb) in a.blocks.iter().zip(&b.blocks) {
        state = step(&state, ba, bb, n);
    }
    let s = state.split;
    let w = state.mean.len() - s;
    let second = &state.cov + &state.mean * state.mean.transpose();
    (
        second.view((0, s), (s, w)).trace(),
        second.view((0, 0), (s, s)).trace(),
        second.view((s, s), (w, w)).trace(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `E[x_1² x_2⁴] = 3` and `E[(x_1 + 1)³] = 1 + 3 = 4` by the lattice.
    #[test]
    fn moments_of_monomials() {
        let p = Newton::new(2, 6, &mut |x| {
            DVector::from_vec(vec![x[0] * x[0] * x[1].powi(4)])
        });
        assert!((mean(&p)[0] - 3.0).abs() < 1e-9);
        let q = Newton::new(1, 3, &mut |x| DVector::from_vec(vec![(x[0] + 1.0).powi(3)]));
        assert!((mean(&q)[0] - 4.0).abs() < 1e-12);
        // E[x⁴ · x²] = 15.
        let (r, s) = (
            Newton::new(1, 4, &mut |x| DVector::from_vec(vec![x[0].powi(4)])),
            Newton::new(1, 2, &mut |x| DVector::from_vec(vec![x[0] * x[0]])),
        );
        assert!((second_moment(&r, &s)[(0, 0)] - 15.0).abs() < 1e-9);
    }
}
pub mod polynomial;
