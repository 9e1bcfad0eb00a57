//! `E[f_A · f_B]` by brute force: each model's end-to-end polynomial in the
//! standard normal `ξ` (`x = μ + L ξ`), its coefficients expanded block by
//! block through the plain network's definition, and the Gaussian moments
//! `E[ξ^γ] = Π_i (γ_i − 1)!!` (even `γ_i`; 0 for an odd one).
//!
//! No finite differences and no Isserlis sum: exact up to the rounding of
//! the coefficient arithmetic, for any degree, on tiny widths (the number of
//! monomials is `C(v + deg, deg)` in `v` variables).

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};

use crate::seq_oracle::{Block, SeqNet};

/// A polynomial in `ξ`: exponents to coefficient.
#[derive(Clone, Debug, Default)]
pub struct Poly(BTreeMap<Vec<u8>, f64>);

impl Poly {
    fn constant(v: usize, c: f64) -> Self {
        let mut p = Self::default();
        if c != 0.0 {
            p.0.insert(vec![0; v], c);
        }
        p
    }

    fn add_scaled(&mut self, other: &Poly, c: f64) {
        if c == 0.0 {
            return;
        }
        for (e, x) in &other.0 {
            *self.0.entry(e.clone()).or_insert(0.0) += c * x;
        }
    }

    fn mul(&self, other: &Poly) -> Poly {
        let mut out = Poly::default();
        for (e, x) in &self.0 {
            for (f, y) in &other.0 {
                let g: Vec<u8> = e.iter().zip(f).map(|(a, b)| a + b).collect();
                *out.0.entry(g).or_insert(0.0) += x * y;
            }
        }
        out
    }

    /// The number of monomials.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// `Σ_j w_ij p_j + b_i` for every row `i`.
fn affine(w: &DMatrix<f64>, p: &[Poly], b: Option<&DVector<f64>>, v: usize) -> Vec<Poly> {
    (0..w.nrows())
        .map(|i| {
            let mut out = Poly::constant(v, b.map_or(0.0, |b| b[i]));
            for (j, pj) in p.iter().enumerate() {
                out.add_scaled(pj, w[(i, j)]);
            }
            out
        })
        .collect()
}

/// The network's outputs as polynomials in `ξ ∈ R^v`, `x = μ + L ξ`: linear
/// `W x + b`; bilinear `s·(D((L x + b_L) ∘ (R x + b_R)) + b_D) + (1−s)·x`.
pub fn expand(net: &SeqNet, mu: &DVector<f64>, l: &DMatrix<f64>) -> Vec<Poly> {
    let v = l.ncols();
    let mut h: Vec<Poly> = (0..mu.len())
        .map(|i| {
            let mut p = Poly::constant(v, mu[i]);
            for j in 0..v {
                let mut e = vec![0u8; v];
                e[j] = 1;
                if l[(i, j)] != 0.0 {
                    p.0.insert(e, l[(i, j)]);
                }
            }
            p
        })
        .collect();
    for block in &net.blocks {
        h = match block {
            Block::Linear(p) => affine(&p.w, &h, p.b.as_ref(), v),
            Block::Bilinear(p) => {
                let left = affine(&p.l, &h, p.bl.as_ref(), v);
                let right = affine(&p.r, &h, p.br.as_ref(), v);
                let hidden: Vec<Poly> = left.iter().zip(&right).map(|(a, b)| a.mul(b)).collect();
                let down = match &p.d {
                    Some(d) => affine(d, &hidden, p.bd.as_ref(), v),
                    None => {
                        let id = DMatrix::identity(hidden.len(), hidden.len());
                        affine(&id, &hidden, p.bd.as_ref(), v)
                    }
                };
                down.iter()
                    .enumerate()
                    .map(|(i, y)| {
                        let mut out = Poly::default();
                        out.add_scaled(y, p.s);
                        if p.s != 1.0 {
                            out.add_scaled(&h[i], 1.0 - p.s);
                        }
                        out
                    })
                    .collect()
            }
            Block::Attention(_) => panic!("the polynomial oracle takes vector chains only"),
        };
    }
    h
}

/// `E[ξ^k]` for `ξ ∼ N(0, 1)`.
fn moment(k: usize) -> f64 {
    if k % 2 == 1 {
        0.0
    } else {
        (1..k).step_by(2).map(|i| i as f64).product()
    }
}

/// `E[Σ_o p_o(ξ) q_o(ξ)]`.
pub fn expectation(p: &[Poly], q: &[Poly]) -> f64 {
    let mut total = 0.0;
    for (a, b) in p.iter().zip(q) {
        for (e, x) in &a.0 {
            for (f, y) in &b.0 {
                total += x
                    * y
                    * e.iter()
                        .zip(f)
                        .map(|(&i, &j)| moment((i + j) as usize))
                        .product::<f64>();
            }
        }
    }
    total
}

/// `E[f_A·f_B]`, `E[|f_A|²]`, `E[|f_B|²]` for `x ∼ N(μ, L Lᵀ)`.
pub fn exact(a: &SeqNet, b: &SeqNet, mu: &DVector<f64>, l: &DMatrix<f64>) -> [f64; 3] {
    let (pa, pb) = (expand(a, mu, l), expand(b, mu, l));
    [
        expectation(&pa, &pb),
        expectation(&pa, &pa),
        expectation(&pb, &pb),
    ]
}

/// A padded CP block of any order on polynomial inputs:
/// `y_o = Σ_ρ D[o+1, ρ] Π_j (U_j[ρ, 0] + Σ_i U_j[ρ, i+1] h_i)` (the constant
/// output row 0 left out).
pub fn cp_step(h: &[Poly], u: &[DMatrix<f64>], d: &DMatrix<f64>, v: usize) -> Vec<Poly> {
    let r = d.ncols();
    let units: Vec<Poly> = (0..r)
        .map(|rho| {
            u.iter().fold(Poly::constant(v, 1.0), |acc, uj| {
                let mut leg = Poly::constant(v, uj[(rho, 0)]);
                for (i, hi) in h.iter().enumerate() {
                    leg.add_scaled(hi, uj[(rho, i + 1)]);
                }
                acc.mul(&leg)
            })
        })
        .collect();
    (1..d.nrows())
        .map(|o| {
            let mut y = Poly::default();
            for (rho, unit) in units.iter().enumerate() {
                y.add_scaled(unit, d[(o, rho)]);
            }
            y
        })
        .collect()
}
