//! The baselines of SPEC §4 against naive formulas, the sampler against the
//! moments it must have, and the global output cosine against the Gaussian
//! similarity it estimates.

mod common;

use common::{gaussian_matrix, gaussian_vector, rng};

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use tensor_similarity::baseline::{
    linear_cka, linear_cka_of, mean_sample_cosine, output_cosine, sample_gaussian,
};
use tensor_similarity::{
    Bilinear, Error, GaussianSimilarity, Incomparable, Linear, Model, RecursiveSimilarity, Side,
};

/// `Linear → Bilinear → Linear`, `d → 2` outputs.
fn model(rng: &mut StdRng, d: usize, outputs: usize) -> Model {
    Model::builder()
        .block(
            Linear::new(
                gaussian_matrix(rng, 4, d, 1.0),
                Some(gaussian_vector(rng, 4, 1.0)),
            )
            .unwrap(),
        )
        .block(
            Bilinear::builder(
                gaussian_matrix(rng, 5, 4, 1.0),
                gaussian_matrix(rng, 5, 4, 1.0),
            )
            .down(gaussian_matrix(rng, 3, 5, 1.0))
            .left_bias(gaussian_vector(rng, 5, 1.0))
            .build()
            .unwrap(),
        )
        .block(Linear::new(gaussian_matrix(rng, outputs, 3, 1.0), None).unwrap())
        .build()
        .unwrap()
}

/// Per-sample outputs from `Model::forward`, one `Vec` per row of `x`.
fn naive_outputs(m: &Model, x: &DMatrix<f64>) -> Vec<Vec<f64>> {
    x.row_iter()
        .map(|row| {
            m.forward(&row.transpose())
                .unwrap()
                .iter()
                .copied()
                .collect()
        })
        .collect()
}

fn dot(u: &[f64], v: &[f64]) -> f64 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

#[test]
fn output_cosines_match_naive_sums() {
    let mut rng = rng(1);
    let (a, b) = (model(&mut rng, 3, 2), model(&mut rng, 3, 2));
    let x = gaussian_matrix(&mut rng, 50, 3, 1.0);
    let (ya, yb) = (naive_outputs(&a, &x), naive_outputs(&b, &x));
    let (mut ab, mut aa, mut bb, mut per_sample) = (0.0, 0.0, 0.0, 0.0);
    for (u, v) in ya.iter().zip(&yb) {
        ab += dot(u, v);
        aa += dot(u, u);
        bb += dot(v, v);
        per_sample += dot(u, v) / (dot(u, u).sqrt() * dot(v, v).sqrt());
    }
    let global = ab / (aa * bb).sqrt();
    let mean = per_sample / ya.len() as f64;
    assert!((output_cosine(&a, &b, &x).unwrap() - global).abs() < 1e-13);
    assert!((mean_sample_cosine(&a, &b, &x).unwrap() - mean).abs() < 1e-13);
    // The two differ in general: they weigh samples differently.
    assert!((global - mean).abs() > 1e-3);
}

/// `HSIC(K, L) = tr(K H L H)` with `n × n` Gram and centring matrices.
fn naive_cka(ya: &DMatrix<f64>, yb: &DMatrix<f64>) -> f64 {
    let n = ya.nrows();
    let h = DMatrix::identity(n, n) - DMatrix::from_element(n, n, 1.0 / n as f64);
    let (k, l) = (ya * ya.transpose(), yb * yb.transpose());
    let hsic = |p: &DMatrix<f64>, q: &DMatrix<f64>| (p * &h * q * &h).trace();
    hsic(&k, &l) / (hsic(&k, &k) * hsic(&l, &l)).sqrt()
}

#[test]
fn linear_cka_matches_the_hsic_formula() {
    let mut rng = rng(2);
    // Different output widths are allowed.
    let (a, b) = (model(&mut rng, 3, 2), model(&mut rng, 3, 4));
    let x = gaussian_matrix(&mut rng, 40, 3, 1.0);
    let (ya, yb) = (a.forward_rows(&x).unwrap(), b.forward_rows(&x).unwrap());
    let expected = naive_cka(&ya, &yb);
    assert!((linear_cka(&a, &b, &x).unwrap() - expected).abs() < 1e-12);
    assert!((linear_cka_of(&ya, &yb).unwrap() - expected).abs() < 1e-12);
    assert!((linear_cka(&a, &a, &x).unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn linear_cka_is_blind_to_rotations_and_offsets_but_not_to_general_maps() {
    let mut rng = rng(3);
    let ya = gaussian_matrix(&mut rng, 30, 3, 1.0);
    let q = gaussian_matrix(&mut rng, 3, 3, 1.0).qr().q();
    let offset = DMatrix::from_fn(30, 3, |_, j| j as f64 * 10.0 + 1.0);
    let rotated = &ya * q.transpose() * 2.5 + &offset;
    assert!((linear_cka_of(&ya, &rotated).unwrap() - 1.0).abs() < 1e-12);
    // The output cosine sees the same change.
    let pooled = ya.dot(&rotated) / (ya.norm() * rotated.norm());
    assert!(pooled < 0.99);
    let skew = DMatrix::from_row_slice(3, 3, &[1.0, 5.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.1]);
    let mapped = &ya * skew.transpose();
    assert!(linear_cka_of(&ya, &mapped).unwrap() < 0.99);
}

#[test]
fn sampler_has_the_requested_mean_and_covariance() {
    let mut rng = rng(4);
    let d = 3;
    let f = gaussian_matrix(&mut rng, d, d, 1.0);
    let sigma = &f * f.transpose() + DMatrix::identity(d, d) * 0.1;
    let mu = gaussian_vector(&mut rng, d, 1.0);
    let n = 20_000;
    let x = sample_gaussian(&mut rng, &mu, &sigma, n).unwrap();
    assert_eq!(x.shape(), (n, d));
    let nf = n as f64;
    for i in 0..d {
        // Mean: standard error √(Σ_ii / n).
        let mean = x.column(i).sum() / nf;
        let se = (sigma[(i, i)] / nf).sqrt();
        assert!(
            (mean - mu[i]).abs() < 5.0 * se,
            "mean {i}: {mean} vs {}",
            mu[i]
        );
        for j in 0..=i {
            // E[(x_i − μ_i)(x_j − μ_j)]: the products have variance Σ_ii Σ_jj + Σ_ij².
            let cov = x
                .row_iter()
                .map(|r| (r[i] - mu[i]) * (r[j] - mu[j]))
                .sum::<f64>()
                / nf;
            let se = ((sigma[(i, i)] * sigma[(j, j)] + sigma[(i, j)].powi(2)) / nf).sqrt();
            assert!(
                (cov - sigma[(i, j)]).abs() < 5.0 * se,
                "cov ({i},{j}): {cov} vs {}",
                sigma[(i, j)]
            );
        }
    }
    // Seeded: the same seed gives the same samples.
    let again = |seed| sample_gaussian(&mut common::rng(seed), &mu, &sigma, 5).unwrap();
    assert_eq!(again(9), again(9));
}

#[test]
fn sampler_rejects_bad_distributions() {
    let mut rng = rng(5);
    let indefinite = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
    assert!(matches!(
        sample_gaussian(&mut rng, &DVector::zeros(2), &indefinite, 3),
        Err(Error::InvalidOption { .. })
    ));
    assert!(matches!(
        sample_gaussian(
            &mut rng,
            &DVector::<f64>::zeros(3),
            &DMatrix::identity(2, 2),
            3
        ),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        sample_gaussian(
            &mut rng,
            &DVector::from_element(2, f64::INFINITY),
            &DMatrix::identity(2, 2),
            3
        ),
        Err(Error::NonFinite { .. })
    ));
}

/// On `N(μ, Σ)` samples the global output cosine estimates the Gaussian
/// similarity (exact here: one bilinear block). Its standard error comes
/// from the delta method on the three per-sample products.
#[test]
fn output_cosine_estimates_the_gaussian_similarity() {
    let mut rng = rng(6);
    let d = 3;
    let (a, b) = (model(&mut rng, d, 2), model(&mut rng, d, 2));
    let f = gaussian_matrix(&mut rng, d, d, 1.0);
    let sigma = &f * f.transpose() / d as f64 + DMatrix::identity(d, d) * 0.2;
    let mu = gaussian_vector(&mut rng, d, 1.0) * 0.3;
    let n = 40_000;
    let x = sample_gaussian(&mut rng, &mu, &sigma, n).unwrap();
    let estimate = output_cosine(&a, &b, &x).unwrap();

    let (ya, yb) = (a.forward_rows(&x).unwrap(), b.forward_rows(&x).unwrap());
    let p: Vec<[f64; 3]> = (0..n)
        .map(|i| {
            let (u, v) = (ya.row(i), yb.row(i));
            [u.dot(&v), u.dot(&u), v.dot(&v)]
        })
        .collect();
    let nf = n as f64;
    let mean: [f64; 3] = [0, 1, 2].map(|k| p.iter().map(|q| q[k]).sum::<f64>() / nf);
    let [ab, aa, bb] = mean;
    // ∇ (ab / √(aa bb)).
    let grad = [
        1.0 / (aa * bb).sqrt(),
        -0.5 * ab / (aa.powf(1.5) * bb.sqrt()),
        -0.5 * ab / (aa.sqrt() * bb.powf(1.5)),
    ];
    let var: f64 = p
        .iter()
        .map(|q| {
            let l: f64 = (0..3).map(|k| grad[k] * (q[k] - mean[k])).sum();
            l * l
        })
        .sum::<f64>()
        / (nf - 1.0);
    let se = (var / nf).sqrt();
    let exact = GaussianSimilarity::new()
        .with_input(mu, sigma)
        .unwrap()
        .similarity(&a, &b)
        .unwrap();
    assert!(
        se < 0.02,
        "standard error {se} too large for the test to mean much"
    );
    assert!(
        (estimate - exact).abs() < 5.0 * se,
        "{estimate} vs {exact} (se {se})"
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut rng = rng(7);
    let (a, b) = (model(&mut rng, 3, 2), model(&mut rng, 3, 2));
    let wider = model(&mut rng, 3, 3);
    let x = gaussian_matrix(&mut rng, 5, 3, 1.0);
    assert!(matches!(
        output_cosine(&a, &wider, &x),
        Err(Error::Incomparable(Incomparable::OutputWidth {
            a: 2,
            b: 3
        }))
    ));
    assert!(matches!(
        output_cosine(&a, &b, &DMatrix::zeros(0, 3)),
        Err(Error::TooFewSamples { found: 0, .. })
    ));
    assert!(matches!(
        mean_sample_cosine(&a, &b, &DMatrix::zeros(4, 2)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        linear_cka(&a, &b, &x.rows(0, 1).into_owned()),
        Err(Error::TooFewSamples { needed: 2, .. })
    ));
    let mut bad = x.clone();
    bad[(2, 1)] = f64::NAN;
    assert!(matches!(
        output_cosine(&a, &b, &bad),
        Err(Error::NonFinite { row: 2, col: 1, .. })
    ));
    // f_A(x) = x_1 x_2 is zero on the sample x = (0, 1, 0).
    let product = Model::builder()
        .block(
            Bilinear::new(
                DMatrix::from_row_slice(1, 3, &[1.0, 0.0, 0.0]),
                DMatrix::from_row_slice(1, 3, &[0.0, 1.0, 0.0]),
            )
            .unwrap(),
        )
        .block(Linear::new(DMatrix::from_element(2, 1, 1.0), None).unwrap())
        .build()
        .unwrap();
    let samples = DMatrix::from_row_slice(2, 3, &[1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    assert!(matches!(
        mean_sample_cosine(&product, &product, &samples),
        Err(Error::ZeroOutput {
            side: Side::A,
            sample: 1
        })
    ));
    assert!(output_cosine(&product, &product, &samples).is_ok());
    let constant = DMatrix::from_element(4, 2, 3.0);
    assert!(matches!(
        linear_cka_of(&constant, &gaussian_matrix(&mut rng, 4, 2, 1.0)),
        Err(Error::ZeroNorm(Side::A))
    ));
}
