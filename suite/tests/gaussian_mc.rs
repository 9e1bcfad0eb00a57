//! Monte Carlo estimates of the Gaussian similarity (SPEC §3,
//! `GaussianMonteCarlo`) against oracles that share no code with them:
//!
//! * **the exact value**, where the Gaussian metric is exact (one bilinear
//!   MLP block with biases and residual under a shifted, correlated input;
//!   one attention layer with rotary at context 3; vector models compared
//!   position-wise): each of the three inner products and the similarity
//!   within 4 of their own standard errors;
//! * **a plain loop** of per-sample `Model::forward` on the same draws,
//!   redrawn here from the documented ChaCha8 streams with `rand_chacha`
//!   and `rand_distr` themselves: the three sums agree to rounding;
//! * **the standard error's own behaviour** over replicate seeds: it
//!   shrinks as `1/√N` (the ratio of the mean standard errors at `N` and
//!   `16N` is 4 within 4 of its own standard deviations across replicates)
//!   and it is the spread of the estimates (their standard deviation across
//!   replicates over the mean standard error is 1, within 4 standard
//!   deviations of a sample standard deviation);
//! * **reproducibility**: the same bits on 1 and 2 threads at one seed,
//!   other values at another seed; typed errors for bad inputs.
//!
//! Tolerances: Monte Carlo assertions are at 4 standard errors of the
//! estimate's own sample (a two-sided normal probability of 6·10⁻⁵ per
//! assertion, at fixed seeds); rounding assertions at `1e-12` of the scale
//! `√(⟨A,A⟩⟨B,B⟩)`, for sums of a few thousand products of `O(1)` values in
//! `f64` accumulated in different orders (about `10³ ε ≈ 2·10⁻¹³`).

mod common;

use common::{
    bilinear_projection, embed_attention_head, gaussian_matrix, gaussian_vector, mlp, rng,
};
use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tensor_similarity::matrix::similarity_matrix;
use tensor_similarity::{
    Bilinear, Error, GaussianMonteCarlo, GaussianSimilarity, Incomparable, Linear, Model,
    MonteCarloEstimate, RecursiveSimilarity, Side,
};

/// Monte Carlo assertions hold to this many standard errors.
const Z: f64 = 4.0;

/// Rounding assertions hold to this fraction of their scale.
const ROUNDING: f64 = 1e-12;

/// A shifted, correlated input law `N(μ, Σ)` on `d` coordinates.
fn law(seed: u64, d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let mut r = rng(seed);
    let f = gaussian_matrix(&mut r, d, d, 0.5);
    (
        gaussian_vector(&mut r, d, 0.5),
        &f * f.transpose() + DMatrix::identity(d, d) * 0.3,
    )
}

/// Each of the three inner products and the similarity within [`Z`]
/// standard errors of the exact metric's.
fn assert_agrees(
    what: &str,
    e: &MonteCarloEstimate,
    exact: &GaussianSimilarity,
    a: &Model,
    b: &Model,
) {
    assert!(exact.is_exact(a, b), "{what}: the reference must be exact");
    let products = [
        exact.inner_product(a, b).unwrap().to_f64(),
        exact.squared_norm(a).unwrap().to_f64(),
        exact.squared_norm(b).unwrap().to_f64(),
    ];
    let found = [e.inner_product, e.squared_norm_a, e.squared_norm_b];
    for (k, name) in ["⟨A,B⟩", "⟨A,A⟩", "⟨B,B⟩"].iter().enumerate() {
        let z = (found[k] - products[k]) / e.product_standard_errors[k];
        assert!(
            z.abs() < Z,
            "{what}: {name} Monte Carlo {} ± {}, exact {} (z = {z:.2})",
            found[k],
            e.product_standard_errors[k],
            products[k]
        );
    }
    let sim = exact.similarity(a, b).unwrap();
    let z = (e.similarity - sim) / e.standard_error;
    assert!(
        z.abs() < Z,
        "{what}: similarity Monte Carlo {} ± {}, exact {sim} (z = {z:.2})",
        e.similarity,
        e.standard_error
    );
    // A standard error that is not vanishingly small, or the test says nothing.
    assert!(
        e.standard_error > 1e-6 && e.standard_error < 0.05,
        "{what}: {e:?}"
    );
    eprintln!(
        "{what}: exact {sim:.6}, Monte Carlo {:.6} ± {:.6} (z = {z:.2})",
        e.similarity, e.standard_error
    );
}

#[test]
fn a_bilinear_mlp_agrees_with_the_exact_value() {
    // A wide input: the first linear blocks' joint output (2 × 3 wide) is
    // drawn instead of x (12 wide), and the head (10 outputs) is read out
    // through its Gram matrices.
    // The same weights with another residual: related functions, so that
    // the similarity is far from 0 and every term of the delta method counts.
    let (a, b) = (
        mlp(1, Some(12), (3, 5, 10), 0.7),
        mlp(1, Some(12), (3, 5, 10), 0.4),
    );
    let (mu, sigma) = law(3, 12);
    let exact = GaussianSimilarity::new()
        .with_input(mu.clone(), sigma.clone())
        .unwrap();
    let mc = GaussianMonteCarlo::new(200_000, 11)
        .unwrap()
        .with_input(mu, sigma)
        .unwrap();
    let e = mc.estimate(&a, &b).unwrap();
    assert_eq!((e.samples, e.batches), (200_000, 100));
    assert_agrees("embedded MLP, N(μ, Σ)", &e, &exact, &a, &b);

    // A narrow input, a bilinear block first: x itself is drawn, the
    // outputs are summed directly.
    let (a, b) = (mlp(4, None, (4, 6, 3), 0.5), mlp(5, None, (4, 3, 3), 1.0));
    let (mu, sigma) = law(6, 4);
    let exact = GaussianSimilarity::new()
        .with_input(mu.clone(), sigma.clone())
        .unwrap();
    let mc = GaussianMonteCarlo::new(200_000, 12)
        .unwrap()
        .with_input(mu, sigma)
        .unwrap();
    assert_agrees(
        "bilinear-first MLP, N(μ, Σ)",
        &mc.estimate(&a, &b).unwrap(),
        &exact,
        &a,
        &b,
    );
}

#[test]
fn vector_models_at_a_context_are_compared_position_wise() {
    let (a, b) = (
        mlp(7, Some(5), (4, 6, 3), 0.7),
        mlp(8, Some(5), (4, 6, 3), 1.0),
    );
    let exact = GaussianSimilarity::new().with_context(3).unwrap();
    let mc = GaussianMonteCarlo::new(100_000, 13)
        .unwrap()
        .with_context(3)
        .unwrap();
    let e = mc.estimate(&a, &b).unwrap();
    assert_agrees("vector models at context 3", &e, &exact, &a, &b);
    // Three i.i.d. positions: three times the one-position inner product.
    let one = GaussianSimilarity::new();
    let z = (e.inner_product - 3.0 * one.inner_product(&a, &b).unwrap().to_f64())
        / e.product_standard_errors[0];
    assert!(z.abs() < Z, "z = {z}");
}

#[test]
fn one_attention_layer_with_rotary_agrees_with_the_exact_value() {
    // Narrow: x is drawn and the outputs summed.
    let (a, b) = (
        embed_attention_head(21, (3, 4, 3), 2),
        embed_attention_head(22, (3, 4, 3), 1),
    );
    let exact = GaussianSimilarity::new().with_context(3).unwrap();
    let mc = GaussianMonteCarlo::new(100_000, 14)
        .unwrap()
        .with_context(3)
        .unwrap();
    assert_agrees(
        "attention at context 3",
        &mc.estimate(&a, &b).unwrap(),
        &exact,
        &a,
        &b,
    );
    // Wide, under N(μ, Σ): the embeddings' output is drawn and the heads
    // read out through their Gram matrices.
    let (a, b) = (
        embed_attention_head(23, (16, 4, 12), 2),
        embed_attention_head(24, (16, 4, 12), 2),
    );
    let (mu, sigma) = law(25, 16);
    let exact = GaussianSimilarity::new()
        .with_context(3)
        .unwrap()
        .with_input(mu.clone(), sigma.clone())
        .unwrap();
    let mc = GaussianMonteCarlo::new(100_000, 15)
        .unwrap()
        .with_context(3)
        .unwrap()
        .with_input(mu, sigma)
        .unwrap();
    assert_agrees(
        "wide attention at context 3, N(μ, Σ)",
        &mc.estimate(&a, &b).unwrap(),
        &exact,
        &a,
        &b,
    );
}

#[test]
fn the_difference_of_directions_agrees_with_the_exact_value() {
    let m = |seed| mlp(seed, Some(12), (3, 4, 10), 0.6);
    let (a0, a1, b0, b1) = (m(31), m(32), m(33), m(34));
    let exact = GaussianSimilarity::new();
    let want = exact.difference_similarity(&a0, &a1, &b0, &b1).unwrap();
    let e = GaussianMonteCarlo::new(200_000, 16)
        .unwrap()
        .difference(&a0, &a1, &b0, &b1)
        .unwrap();
    let z = (e.similarity - want) / e.standard_error;
    assert!(z.abs() < Z, "{e:?} against {want} (z = {z:.2})");
    // The trait's difference is the same estimate.
    let mc = GaussianMonteCarlo::new(200_000, 16).unwrap();
    assert_eq!(
        mc.difference_similarity(&a0, &a1, &b0, &b1).unwrap(),
        e.similarity
    );
    // A zero direction is a zero norm of its side.
    assert!(matches!(
        mc.difference(&a0, &a0, &b0, &b1),
        Err(Error::ZeroNorm(Side::A))
    ));
}

/// The three sums of a plain loop: per sample, per position, `d` standard
/// normals from batch `b`'s stream (`ChaCha8Rng::seed_from_u64(seed)`,
/// `set_stream(b)`), `x = μ + ξ`, and `Model::forward` of each position.
fn plain_loop(
    a: &Model,
    b: &Model,
    mu: &DVector<f64>,
    n: usize,
    (samples, batches, seed): (usize, usize, u64),
) -> [f64; 3] {
    let d = a.input_width();
    let mut sums = [0.0; 3];
    for batch in 0..batches {
        let count = samples / batches + usize::from(batch < samples % batches);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(batch as u64);
        for _ in 0..count * n {
            let x = DVector::from_fn(d, |j, _| mu[j] + rng.sample::<f64, _>(StandardNormal));
            let (ya, yb) = (a.forward(&x).unwrap(), b.forward(&x).unwrap());
            for (s, v) in sums.iter_mut().zip([ya.dot(&yb), ya.dot(&ya), yb.dot(&yb)]) {
                *s += v;
            }
        }
    }
    sums.map(|s| s / samples as f64)
}

#[test]
fn the_estimates_are_the_means_of_a_plain_forward_loop_on_the_same_draws() {
    // 1003 samples in 100 batches: three of 11, the others of 10.
    let (samples, seed) = (1003, 5);
    let cases = [
        // A head wider than the two hidden streams: read out through the
        // Gram matrices of the heads.
        (
            "readout through the heads",
            mlp(41, None, (3, 4, 9), 0.8),
            mlp(42, None, (3, 5, 9), 1.0),
            1,
        ),
        // Outputs summed directly, two i.i.d. positions per sample.
        (
            "direct, context 2",
            bilinear_projection(43, 0.5),
            bilinear_projection(44, 1.0),
            2,
        ),
    ];
    for (what, a, b, n) in cases {
        let d = a.input_width();
        let mu = gaussian_vector(&mut rng(45), d, 0.7);
        let mut mc = GaussianMonteCarlo::new(samples, seed)
            .unwrap()
            .with_mean(mu.clone())
            .unwrap();
        if n > 1 {
            mc = mc.with_context(n).unwrap();
        }
        let e = mc.estimate(&a, &b).unwrap();
        let [ab, aa, bb] = plain_loop(&a, &b, &mu, n, (samples, e.batches, seed));
        let scale = (aa * bb).sqrt();
        for (name, found, want) in [
            ("⟨A,B⟩", e.inner_product, ab),
            ("⟨A,A⟩", e.squared_norm_a, aa),
            ("⟨B,B⟩", e.squared_norm_b, bb),
        ] {
            assert!(
                (found - want).abs() <= ROUNDING * scale,
                "{what}: {name} {found} against the plain loop's {want}"
            );
        }
        let cosine = ab / scale;
        assert!(
            (e.similarity - cosine).abs() <= 4.0 * ROUNDING,
            "{what}: {} against {cosine}",
            e.similarity
        );
    }
}

/// Mean and sample standard deviation.
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn the_standard_error_shrinks_as_one_over_root_n_and_is_the_spread() {
    // Related functions (the same weights, another residual): a similarity
    // far from 0, where the delta method's every term counts.
    let (a, b) = (
        mlp(51, Some(12), (3, 5, 10), 0.7),
        mlp(51, Some(12), (3, 5, 10), 0.4),
    );
    let replicates = 64;
    let run = |samples: usize| -> (Vec<f64>, Vec<f64>) {
        (0..replicates)
            .map(|seed| {
                let e = GaussianMonteCarlo::new(samples, 1000 + seed)
                    .unwrap()
                    .estimate(&a, &b)
                    .unwrap();
                (e.similarity, e.standard_error)
            })
            .unzip()
    };
    let (sims, small) = run(1_000);
    let (_, large) = run(16_000);
    let r = replicates as f64;
    let ((m1, s1), (m2, s2)) = (mean_sd(&small), mean_sd(&large));
    // The ratio of the mean standard errors, and its standard deviation by
    // the delta method from the replicates' own spread.
    let ratio = m1 / m2;
    let sd = ratio * ((s1 * s1) / (r * m1 * m1) + (s2 * s2) / (r * m2 * m2)).sqrt();
    eprintln!(
        "SE at N: {m1:.3e} ± {s1:.1e}; at 16N: {m2:.3e} ± {s2:.1e}; ratio {ratio:.3} ± {sd:.3}"
    );
    assert!((ratio - 4.0).abs() < Z * sd, "ratio {ratio} ± {sd}, not 4");
    // The band must tell 1/√N from 1/N^(1/4) (ratio 2) and 1/N (ratio 16).
    assert!(Z * sd < 1.5, "band ±{} too wide to say anything", Z * sd);
    // The standard error is the estimates' spread: a sample standard
    // deviation of R values has relative standard deviation 1/√(2(R−1)),
    // the mean standard error s1/(m1 √R).
    let (_, spread) = mean_sd(&sims);
    let calibration = spread / m1;
    let sd = (1.0 / (2.0 * (r - 1.0)) + (s1 * s1) / (r * m1 * m1)).sqrt();
    eprintln!("spread of the estimates over the mean SE: {calibration:.3} ± {sd:.3}");
    assert!(
        (calibration - 1.0).abs() < Z * sd,
        "estimates spread {spread}, mean standard error {m1}"
    );
}

/// Every field's bits.
fn bits(e: &MonteCarloEstimate) -> Vec<u64> {
    [
        e.similarity,
        e.standard_error,
        e.inner_product,
        e.squared_norm_a,
        e.squared_norm_b,
    ]
    .iter()
    .chain(&e.product_standard_errors)
    .map(|v| v.to_bits())
    .collect()
}

#[test]
fn one_and_two_threads_give_the_same_bits_and_seeds_differ() {
    let (a, b) = (
        embed_attention_head(61, (3, 4, 3), 2),
        embed_attention_head(62, (3, 4, 3), 1),
    );
    let mc = |seed| {
        GaussianMonteCarlo::new(3_000, seed)
            .unwrap()
            .with_context(3)
            .unwrap()
    };
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let one = pool(1).install(|| mc(7).estimate(&a, &b).unwrap());
    let two = pool(2).install(|| mc(7).estimate(&a, &b).unwrap());
    assert_eq!(bits(&one), bits(&two));
    let c = embed_attention_head(63, (3, 4, 3), 2);
    let models = [a.clone(), b.clone(), c];
    let m1 = pool(1).install(|| mc(7).matrix(&models).unwrap());
    let m2 = pool(2).install(|| mc(7).matrix(&models).unwrap());
    assert_eq!(m1, m2);
    // Another seed, other draws: another value, of the same quantity.
    let other = mc(8).estimate(&a, &b).unwrap();
    assert_ne!(other.similarity.to_bits(), one.similarity.to_bits());
    let z = (other.similarity - one.similarity)
        / (other.standard_error.powi(2) + one.standard_error.powi(2)).sqrt();
    assert!(z.abs() < Z, "seeds 7 and 8: {one:?} and {other:?}");
}

#[test]
fn a_matrix_shares_its_draws_and_plugs_into_generic_matrix_code() {
    // Bilinear first blocks: x is drawn for every model, so the matrix's
    // pairs see the draws of each pair's own estimate.
    let models: Vec<Model> = (0..3)
        .map(|i| mlp(71 + i, None, (3, 4, 3), 0.5 + 0.2 * i as f64))
        .collect();
    let mc = GaussianMonteCarlo::new(4_000, 9).unwrap();
    let m = mc.matrix(&models).unwrap();
    for i in 0..3 {
        assert_eq!((m.similarity[(i, i)], m.standard_error[(i, i)]), (1.0, 0.0));
        for j in 0..3 {
            if i == j {
                continue;
            }
            let e = mc.estimate(&models[i], &models[j]).unwrap();
            assert!((m.similarity[(i, j)] - e.similarity).abs() < 4.0 * ROUNDING);
            assert!(
                (m.standard_error[(i, j)] - e.standard_error).abs() < 1e-9 * e.standard_error,
                "{} against {}",
                m.standard_error[(i, j)],
                e.standard_error
            );
            assert!(
                (m.inner_products[(i, j)] - e.inner_product).abs()
                    <= ROUNDING * (e.squared_norm_a * e.squared_norm_b).sqrt()
            );
        }
    }
    // As a RecursiveSimilarity: cosines of the estimated inner products and
    // norms, each estimated on its own draws.
    let generic = similarity_matrix(&mc, &models, || {}).unwrap();
    for i in 0..3 {
        assert_eq!(generic[(i, i)], 1.0);
        for j in i + 1..3 {
            let ab = mc.inner_product(&models[i], &models[j]).unwrap();
            let (aa, bb) = (
                mc.squared_norm(&models[i]).unwrap(),
                mc.squared_norm(&models[j]).unwrap(),
            );
            let want = tensor_similarity::cosine(ab, aa, bb).unwrap();
            assert_eq!(generic[(i, j)], want);
            assert_eq!(generic[(j, i)], want);
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let option = |r: Result<GaussianMonteCarlo, Error>, what: &str| match r {
        Err(Error::InvalidOption { what: w, .. }) => assert_eq!(w, what),
        other => panic!("{what}: {other:?}"),
    };
    option(GaussianMonteCarlo::new(0, 0), "samples");
    option(GaussianMonteCarlo::new(3, 0), "samples");
    option(
        GaussianMonteCarlo::new(100, 0).unwrap().with_batches(51),
        "batches",
    );
    option(
        GaussianMonteCarlo::new(100, 0).unwrap().with_batches(1),
        "batches",
    );
    assert_eq!(
        GaussianMonteCarlo::new(100, 0)
            .unwrap()
            .with_batches(50)
            .unwrap()
            .batches(),
        50
    );
    assert!(matches!(
        GaussianMonteCarlo::new(100, 0).unwrap().with_context(0),
        Err(Error::ZeroContext)
    ));
    assert!(matches!(
        GaussianMonteCarlo::new(100, 0)
            .unwrap()
            .with_mean(DVector::from_element(2, f64::NAN)),
        Err(Error::NonFinite { .. })
    ));
    option(
        GaussianMonteCarlo::new(100, 0)
            .unwrap()
            .with_covariance(nalgebra::dmatrix![1.0, 0.0; 0.0, -1.0]),
        "input covariance",
    );
    let mc = GaussianMonteCarlo::new(100, 0).unwrap();
    let (a, b) = (mlp(81, None, (4, 3, 3), 1.0), mlp(82, None, (4, 3, 2), 1.0));
    assert!(matches!(
        mc.estimate(&a, &b),
        Err(Error::Incomparable(Incomparable::OutputWidth {
            a: 3,
            b: 2
        }))
    ));
    let wide = mlp(83, Some(5), (4, 3, 3), 1.0);
    assert!(matches!(
        mc.estimate(&a, &wide),
        Err(Error::Incomparable(Incomparable::InputWidth { a: 4, b: 5 }))
    ));
    // μ of another width than the models' input.
    let shifted = mc.clone().with_mean(DVector::zeros(3)).unwrap();
    assert!(matches!(shifted.estimate(&a, &a), Err(Error::Shape { .. })));
    // Sequence models need a context, named by side.
    let seq = embed_attention_head(84, (4, 4, 3), 1);
    assert!(matches!(
        mc.estimate(&seq, &a),
        Err(Error::MissingContext(Side::A))
    ));
    assert!(matches!(
        mc.estimate(&a, &seq),
        Err(Error::MissingContext(Side::B))
    ));
    // A model that outputs zero everywhere has zero norm.
    let zero = Model::builder()
        .block(Linear::new(DMatrix::zeros(3, 4), None).unwrap())
        .build()
        .unwrap();
    assert!(matches!(
        mc.estimate(&a, &zero),
        Err(Error::ZeroNorm(Side::B))
    ));
    assert!(matches!(
        mc.estimate(&zero, &a),
        Err(Error::ZeroNorm(Side::A))
    ));
    // Outputs that overflow their scalar type: an error, never a NaN.
    let huge = |t: f64| {
        Model::builder()
            .block(
                Bilinear::new(
                    DMatrix::from_element(2, 4, t),
                    DMatrix::from_element(2, 4, t),
                )
                .unwrap(),
            )
            .build()
            .unwrap()
    };
    let b2 = mlp(85, None, (4, 3, 2), 1.0);
    assert!(matches!(
        mc.estimate(&huge(1e160), &b2),
        Err(Error::NumericalBreakdown { .. })
    ));
    let huge32: Model<f32> = Model::builder()
        .block(
            Bilinear::new(
                DMatrix::<f32>::from_element(2, 4, 1e20),
                DMatrix::<f32>::from_element(2, 4, 1e20),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    assert!(matches!(
        mc.estimate(&huge32, &huge32),
        Err(Error::NumericalBreakdown { .. })
    ));
}

#[test]
fn f32_models_agree_with_f64_within_the_standard_error() {
    let (a, b) = (
        embed_attention_head(91, (3, 4, 3), 2),
        embed_attention_head(92, (3, 4, 3), 1),
    );
    let to32 = |m: &Model| -> Model<f32> {
        let path = tempfile::NamedTempFile::with_suffix(".safetensors").unwrap();
        tensor_similarity::io::save(m, path.path(), tensor_similarity::io::Layout::Described)
            .unwrap();
        tensor_similarity::io::load_as::<f32>(path.path(), &Default::default()).unwrap()
    };
    let mc = GaussianMonteCarlo::new(20_000, 3)
        .unwrap()
        .with_context(3)
        .unwrap();
    let e64 = mc.estimate(&a, &b).unwrap();
    let e32 = mc.estimate(&to32(&a), &to32(&b)).unwrap();
    // The same draws (rounded to f32) through the same models (rounded to
    // f32): the same estimate up to f32 rounding, far below its standard
    // error.
    assert!(
        (e64.similarity - e32.similarity).abs() < 0.01 * e64.standard_error,
        "{e64:?} against {e32:?}"
    );
}

/// Three residual bilinear blocks with biases (degree 8): the exact sum at
/// depth (SPEC §3) against Monte Carlo, under a shifted, correlated input.
#[test]
fn chains_of_three_bilinear_blocks_agree_with_the_exact_value() {
    let chain = |seed: u64, h: usize| {
        let mut r = rng(seed);
        let d = 3;
        let mut b = Model::builder();
        for _ in 0..3 {
            b = b.block(
                Bilinear::builder(
                    gaussian_matrix(&mut r, h, d, 0.4),
                    gaussian_matrix(&mut r, h, d, 0.4),
                )
                .down(gaussian_matrix(&mut r, d, h, 0.4))
                .left_bias(gaussian_vector(&mut r, h, 0.3))
                .right_bias(gaussian_vector(&mut r, h, 0.3))
                .down_bias(gaussian_vector(&mut r, d, 0.3))
                .skip(1.0)
                .build()
                .unwrap(),
            );
        }
        b.build().unwrap()
    };
    let (a, b) = (chain(31, 3), chain(32, 2));
    let (mu, sigma) = law(33, 3);
    let exact = GaussianSimilarity::new()
        .with_input(mu.clone(), sigma.clone())
        .unwrap();
    let mc = GaussianMonteCarlo::new(200_000, 34)
        .unwrap()
        .with_input(mu, sigma)
        .unwrap();
    let e = mc.estimate(&a, &b).unwrap();
    assert_agrees("three residual bilinear blocks", &e, &exact, &a, &b);
    // The estimate resolves what the exact sum changes: the closure is
    // more than 4 standard errors from the exact value.
    let (mu, sigma) = law(33, 3);
    let closure = GaussianSimilarity::closure()
        .with_input(mu, sigma)
        .unwrap()
        .similarity(&a, &b)
        .unwrap();
    let gap = closure - exact.similarity(&a, &b).unwrap();
    assert!(gap.abs() > Z * e.standard_error, "closure {closure}, {e:?}");
}
