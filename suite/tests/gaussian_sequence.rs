//! The Gaussian metric on sequence models (SPEC §3, §7) against oracles
//! that share no code with the library:
//!
//! * **exact**, one attention block with linear maps around it: the
//!   lattice oracle of `tests/gaussian_oracle` (the models' polynomials
//!   read off the oracle's own forward pass by Newton differences, against
//!   the moments of `N(0, 1)`), to `1e-9` relative;
//! * **Monte Carlo** with the library's forward pass, `10⁶` samples,
//!   within 4 standard errors from the sample variance;
//! * **closure**, two attention layers or a transformer: the oracle's own
//!   closure (joint mean and covariance of both models' activations, one
//!   exact Gaussian step per block), to `1e-9`;
//! * linear sequence models: Gaussian equals the tensor metric.
//!
//! Tolerances. The library and the lattice oracle are exact up to rounding:
//! the oracle evaluates integer lattice points up to 5 and takes
//! alternating sums of them, losing about `5⁵ ≈ 3·10³` in relative
//! precision, so `1e-9` of `√(⟨A,A⟩⟨B,B⟩)` leaves a margin of `10³` over
//! that. Monte Carlo is asserted at 4 standard errors of its own sample.

mod common;
mod gaussian_oracle;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, gaussian_vector, rng};
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use seq_oracle::{AttnOptions, AttnParams, Block, LinearParams, MaskKind, SeqNet};
use tensor_similarity::{Error, GaussianSimilarity, Model, RecursiveSimilarity, TensorSimilarity};

const TOL: f64 = 1e-9;

fn metric(n: usize, law: &Law) -> GaussianSimilarity {
    let m = GaussianSimilarity::new().with_context(n).unwrap();
    match law {
        Law::Standard => m,
        Law::Shifted(mu, sigma) => m.with_input(mu.clone(), sigma.clone()).unwrap(),
    }
}

/// The rows' law.
#[derive(Clone, Debug)]
enum Law {
    Standard,
    Shifted(DVector<f64>, DMatrix<f64>),
}

impl Law {
    fn moments(&self, d: usize) -> (DVector<f64>, DMatrix<f64>) {
        match self {
            Law::Standard => (DVector::zeros(d), DMatrix::identity(d, d)),
            Law::Shifted(mu, sigma) => (mu.clone(), sigma.clone()),
        }
    }

    fn random(r: &mut StdRng, d: usize) -> Self {
        let f = gaussian_matrix(r, d, d, 0.7);
        Law::Shifted(
            gaussian_vector(r, d, 0.5),
            &f * f.transpose() + DMatrix::identity(d, d) * 0.2,
        )
    }
}

/// The library's `⟨A,B⟩`, `⟨A,A⟩`, `⟨B,B⟩` and the similarity.
fn library(a: &SeqNet, b: &SeqNet, n: usize, law: &Law) -> ([f64; 3], f64, bool) {
    let (ma, mb) = (seq_library::model(a), seq_library::model(b));
    let m = metric(n, law);
    let ab = m.inner_product(&ma, &mb).unwrap().to_f64();
    let aa = m.squared_norm(&ma).unwrap().to_f64();
    let bb = m.squared_norm(&mb).unwrap().to_f64();
    let report = m.report(&ma, &mb).unwrap();
    ([ab, aa, bb], report.similarity, report.exact)
}

/// One case of the exact and Monte Carlo tables.
struct Case {
    what: &'static str,
    a: SeqNet,
    b: SeqNet,
    n: usize,
    law: Law,
}

/// Attention with optional linear maps around it: `embed` (`d_in → d`)
/// before and `head` (`d → d_out`) after.
fn attention_net(
    r: &mut StdRng,
    d: usize,
    o: &AttnOptions,
    around: Option<(usize, usize)>,
) -> SeqNet {
    let mut blocks = Vec::new();
    if let Some((d_in, _)) = around {
        blocks.push(Block::Linear(LinearParams::random(r, d, d_in, true, 1.0)));
    }
    blocks.push(Block::Attention(AttnParams::random(r, d, o)));
    if let Some((_, d_out)) = around {
        blocks.push(Block::Linear(LinearParams::random(r, d_out, d, true, 1.0)));
    }
    SeqNet { blocks }
}

fn options(
    heads: usize,
    qk_bias: bool,
    others: bool,
    rotary: Option<f64>,
    mask: Option<MaskKind>,
    (alpha, skip): (Option<f64>, Option<f64>),
) -> AttnOptions {
    AttnOptions {
        heads,
        e: 2,
        ev: 2,
        qk_bias,
        v_bias: others,
        o_bias: others,
        rotary,
        mask,
        alpha,
        skip,
        ..AttnOptions::default()
    }
}

/// No residual (`α = 1`, `r = 0`), lerp (`r = 1 − α`), additive (`r = 1`).
const NO_SKIP: (Option<f64>, Option<f64>) = (None, None);
const LERP: (Option<f64>, Option<f64>) = (Some(0.6), None);
const ADDITIVE: (Option<f64>, Option<f64>) = (Some(0.35), Some(1.0));

/// One attention block (with linear maps around it in some cases): every
/// mask, rotary on and off, biases off, on q/k only, and everywhere, each
/// skip, `n = 1, 2, 3`, standard and shifted rows.
fn cases() -> Vec<Case> {
    let mut r = rng(2026);
    let mut out = Vec::new();
    let mut push = |what,
                    n: usize,
                    d: usize,
                    oa: AttnOptions,
                    ob: AttnOptions,
                    around,
                    law: Law,
                    r: &mut StdRng| {
        let a = attention_net(r, d, &oa, around);
        let b = attention_net(r, d, &ob, around);
        out.push(Case { what, a, b, n, law });
    };
    let matrix = MaskKind::Matrix(DMatrix::from_row_slice(2, 2, &[0.7, -0.4, 1.3, 0.2]));
    push(
        "no biases, one position, no residual",
        1,
        2,
        options(1, false, false, None, None, NO_SKIP),
        options(1, false, false, None, None, NO_SKIP),
        None,
        Law::Standard,
        &mut r,
    );
    push(
        "q/k biases, three positions, causal, rotary, no residual",
        3,
        2,
        options(
            1,
            true,
            false,
            Some(10_000.0),
            Some(MaskKind::Causal),
            NO_SKIP,
        ),
        options(
            2,
            true,
            false,
            Some(10_000.0),
            Some(MaskKind::Causal),
            NO_SKIP,
        ),
        None,
        Law::Standard,
        &mut r,
    );
    push(
        "all biases, two positions, no mask, lerp",
        2,
        2,
        options(2, true, true, None, Some(MaskKind::Full), LERP),
        options(1, true, true, Some(100.0), Some(MaskKind::Full), LERP),
        None,
        Law::Standard,
        &mut r,
    );
    push(
        "no biases, three positions, diagonal mask, rotary, additive",
        3,
        2,
        options(
            2,
            false,
            false,
            Some(10.0),
            Some(MaskKind::Diagonal),
            ADDITIVE,
        ),
        options(
            1,
            false,
            false,
            Some(10.0),
            Some(MaskKind::Diagonal),
            ADDITIVE,
        ),
        None,
        Law::Standard,
        &mut r,
    );
    push(
        "q/k biases, two positions, given mask, embed and head, shifted rows",
        2,
        2,
        options(1, true, false, None, Some(matrix), ADDITIVE),
        options(2, true, true, Some(10_000.0), Some(MaskKind::Causal), LERP),
        Some((2, 2)),
        Law::random(&mut rng(5), 2),
        &mut r,
    );
    push(
        "all biases, one position, embed and head, lerp",
        1,
        2,
        options(2, true, true, Some(10_000.0), None, LERP),
        options(2, true, true, None, None, ADDITIVE),
        Some((3, 2)),
        Law::random(&mut rng(6), 3),
        &mut r,
    );
    // Quadratic attention (q1 = q2, k1 = k2) against bilinear attention on
    // another hidden width, with other heads and widths.
    let quadratic = AttnOptions {
        quadratic: true,
        ..options(
            2,
            true,
            false,
            Some(10_000.0),
            Some(MaskKind::Causal),
            ADDITIVE,
        )
    };
    let wide = AttnOptions {
        heads: 3,
        e: 4,
        ev: 1,
        ..options(3, true, true, None, Some(MaskKind::Causal), LERP)
    };
    let a = attention_net(&mut r, 2, &quadratic, Some((2, 2)));
    let b = attention_net(&mut r, 3, &wide, Some((2, 2)));
    out.push(Case {
        what: "quadratic against bilinear on a wider stream, embed and head",
        a,
        b,
        n: 2,
        law: Law::Standard,
    });
    out
}

fn relative(found: f64, expected: f64, scale: f64) -> f64 {
    (found - expected).abs() / scale
}

/// The library's `⟨A,B⟩`, `⟨A,A⟩`, `⟨B,B⟩` against an oracle's, each to
/// [`TOL`] of its scale (`√(⟨A,A⟩⟨B,B⟩)` for the cross product, which may
/// cancel); the largest of the three relative differences.
fn assert_products(
    what: &str,
    found: [f64; 3],
    (ab, aa, bb): (f64, f64, f64),
    oracle: &str,
) -> f64 {
    let scale = (aa * bb).sqrt();
    let mut worst: f64 = 0.0;
    for (which, f, e, s) in [
        ("⟨A,B⟩", found[0], ab, scale),
        ("⟨A,A⟩", found[1], aa, aa),
        ("⟨B,B⟩", found[2], bb, bb),
    ] {
        let err = relative(f, e, s);
        assert!(
            err < TOL,
            "{what}: {which} library {f}, {oracle} {e}, relative {err:e}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn one_attention_block_is_exact() {
    for case in cases() {
        let d = case.a.input_width();
        let (mu, sigma) = case.law.moments(d);
        let (ab, aa, bb) = gaussian_oracle::exact(&case.a, &case.b, case.n, &mu, &sigma);
        let ([lab, laa, lbb], sim, exact) = library(&case.a, &case.b, case.n, &case.law);
        let scale = (aa * bb).sqrt();
        let worst = assert_products(case.what, [lab, laa, lbb], (ab, aa, bb), "oracle");
        let expected = ab / scale;
        assert!(
            (sim - expected).abs() < TOL,
            "{}: similarity {sim} vs {expected}",
            case.what
        );
        assert!(exact, "{}: one attention block is exact", case.what);
        eprintln!(
            "{}: similarity {sim:.6} (oracle {expected:.6}), largest relative difference {worst:.1e}",
            case.what
        );
    }
}

/// A sample mean and its standard error.
struct Estimate {
    mean: f64,
    se: f64,
}

/// `⟨A,B⟩`, `⟨A,A⟩`, `⟨B,B⟩` by Monte Carlo with the library's forward
/// pass: `samples` draws of `X` with i.i.d. rows `μ + F z`.
fn monte_carlo(case: &Case, samples: usize, seed: u64) -> [Estimate; 3] {
    let (ma, mb) = (seq_library::model(&case.a), seq_library::model(&case.b));
    let d = case.a.input_width();
    let (mu, sigma) = case.law.moments(d);
    let f = sigma.cholesky().unwrap().l();
    let chunks = 64;
    let sums: Vec<[[f64; 2]; 3]> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut r = common::rng(seed * 1000 + c as u64);
            let mut s = [[0.0; 2]; 3];
            for _ in 0..samples / chunks {
                let mut x = DMatrix::zeros(case.n, d);
                for p in 0..case.n {
                    let z = DVector::from_fn(d, |_, _| StandardNormal.sample(&mut r));
                    x.row_mut(p).copy_from(&(&mu + &f * z).transpose());
                }
                let (ya, yb) = (
                    ma.forward_sequence(&x).unwrap(),
                    mb.forward_sequence(&x).unwrap(),
                );
                for (acc, v) in s.iter_mut().zip([ya.dot(&yb), ya.dot(&ya), yb.dot(&yb)]) {
                    acc[0] += v;
                    acc[1] += v * v;
                }
            }
            s
        })
        .collect();
    let total = (samples / chunks * chunks) as f64;
    [0, 1, 2].map(|i| {
        let s: f64 = sums.iter().map(|c| c[i][0]).sum();
        let ss: f64 = sums.iter().map(|c| c[i][1]).sum();
        let mean = s / total;
        let var = (ss / total - mean * mean) * total / (total - 1.0);
        Estimate {
            mean,
            se: (var / total).sqrt(),
        }
    })
}

#[test]
fn one_attention_block_agrees_with_monte_carlo() {
    for (i, case) in cases().iter().enumerate() {
        let (got, sim, _) = library(&case.a, &case.b, case.n, &case.law);
        let mc = monte_carlo(case, 1_000_000, i as u64 + 1);
        for (what, g, e) in [
            ("⟨A,B⟩", got[0], &mc[0]),
            ("⟨A,A⟩", got[1], &mc[1]),
            ("⟨B,B⟩", got[2], &mc[2]),
        ] {
            let z = (g - e.mean) / e.se;
            assert!(
                z.abs() < 4.0,
                "{}: {what} library {g}, Monte Carlo {} ± {} (z = {z:.2})",
                case.what,
                e.mean,
                e.se
            );
        }
        let mc_sim = mc[0].mean / (mc[1].mean * mc[2].mean).sqrt();
        eprintln!(
            "{}: similarity {sim:.5}, Monte Carlo {mc_sim:.5}",
            case.what
        );
    }
}

/// Two attention layers, and a transformer (embed, attention, bilinear MLP,
/// head): the library's closure against the oracle's.
#[test]
fn deeper_stacks_are_the_gaussian_closure() {
    let mut r = rng(77);
    let two_layers = |r: &mut StdRng, o: &AttnOptions| SeqNet {
        blocks: (0..2)
            .map(|_| Block::Attention(AttnParams::random(r, 2, o)))
            .collect(),
    };
    let o1 = options(
        1,
        true,
        true,
        Some(10_000.0),
        Some(MaskKind::Causal),
        ADDITIVE,
    );
    let o2 = options(2, false, true, None, Some(MaskKind::Full), LERP);
    let small = AttnOptions {
        heads: 1,
        ev: 1,
        ..options(1, true, false, Some(10.0), None, LERP)
    };
    let pairs = [
        (
            "two attention layers",
            two_layers(&mut r, &o1),
            two_layers(&mut r, &o2),
            Law::Standard,
        ),
        (
            "two attention layers, shifted rows",
            two_layers(&mut r, &o2),
            two_layers(&mut r, &o1),
            Law::random(&mut rng(8), 2),
        ),
        (
            "transformer",
            SeqNet::transformer(&mut r, 2, 2, 2, 1, 2, 0.35, &small),
            SeqNet::transformer(&mut r, 2, 2, 2, 1, 3, 0.35, &small),
            Law::Standard,
        ),
    ];
    let n = 2;
    for (what, a, b, law) in pairs {
        let (mu, sigma) = law.moments(a.input_width());
        let (ab, aa, bb) = gaussian_oracle::closure(&a, &b, n, &mu, &sigma);
        let ([lab, laa, lbb], sim, exact) = library(&a, &b, n, &law);
        assert_products(what, [lab, laa, lbb], (ab, aa, bb), "oracle closure");
        assert!(!exact, "{what}: a closure says so");
        eprintln!("{what}: closure similarity {sim:.6}");
    }
}

/// Linear sequence models: `E[f_A·f_B] = ⟨W̃_A, W̃_B⟩` under `N(0, I)` rows,
/// the tensor metric.
#[test]
fn linear_sequence_models_agree_with_the_tensor_metric() {
    let mut r = rng(9);
    for n in 1..=3 {
        let net = |r: &mut StdRng| SeqNet {
            blocks: vec![
                Block::Linear(LinearParams::random(r, 3, 4, true, 1.0)),
                Block::Linear(LinearParams::random(r, 2, 3, true, 1.0)),
            ],
        };
        let (a, b) = (
            seq_library::model(&net(&mut r)),
            seq_library::model(&net(&mut r)),
        );
        let g = GaussianSimilarity::new().with_context(n).unwrap();
        let t = TensorSimilarity::new().with_context(n).unwrap();
        for (x, y) in [(&a, &b), (&a, &a), (&b, &b)] {
            let (gi, ti) = (
                g.inner_product(x, y).unwrap().to_f64(),
                t.inner_product(x, y).unwrap().to_f64(),
            );
            assert!(
                (gi - ti).abs() < 1e-12 * ti.abs().max(1.0),
                "n {n}: Gaussian {gi}, tensor {ti}"
            );
        }
        assert!(g.report(&a, &b).unwrap().exact);
    }
}

/// Position-wise models on `n` i.i.d. positions: `n` times one position,
/// and the same similarity as the vector model.
#[test]
fn position_wise_models_repeat_one_position() {
    let mut r = rng(10);
    let net = |r: &mut StdRng| SeqNet {
        blocks: vec![
            Block::Linear(LinearParams::random(r, 3, 2, true, 1.0)),
            Block::Bilinear(seq_oracle::BilinearParams::random(r, 3, 4, true, 0.5, 1.0)),
            Block::Linear(LinearParams::random(r, 2, 3, true, 1.0)),
        ],
    };
    let (na, nb) = (net(&mut r), net(&mut r));
    let (va, vb) = (
        seq_library::vector_model(&na),
        seq_library::vector_model(&nb),
    );
    let (sa, sb) = (seq_library::model(&na), seq_library::model(&nb));
    let law = Law::random(&mut rng(11), 2);
    let one = metric(1, &law);
    let vector = match &law {
        Law::Shifted(mu, sigma) => GaussianSimilarity::new()
            .with_input(mu.clone(), sigma.clone())
            .unwrap(),
        Law::Standard => unreachable!(),
    };
    let single = vector.inner_product(&va, &vb).unwrap().to_f64();
    let sim = vector.similarity(&va, &vb).unwrap();
    assert!((one.inner_product(&sa, &sb).unwrap().to_f64() - single).abs() < 1e-12 * single.abs());
    for n in 2..=3 {
        let m = metric(n, &law);
        let ip = m.inner_product(&sa, &sb).unwrap().to_f64();
        assert!(
            (ip - n as f64 * single).abs() < 1e-10 * single.abs(),
            "n {n}: {ip} vs {n} × {single}"
        );
        assert!((m.similarity(&sa, &sb).unwrap() - sim).abs() < 1e-12);
    }
}

#[test]
fn sequence_errors_are_typed() {
    let mut r = rng(12);
    let att = seq_library::model(&attention_net(&mut r, 2, &AttnOptions::default(), None));
    // A sequence model needs a context length.
    assert!(matches!(
        GaussianSimilarity::new().similarity(&att, &att),
        Err(Error::MissingContext(_))
    ));
    assert!(matches!(
        GaussianSimilarity::new().with_context(0),
        Err(Error::ZeroContext)
    ));
    // Attention against a position-wise block at the same position.
    let bil = Model::builder()
        .sequence()
        .block(
            tensor_similarity::Bilinear::new(DMatrix::identity(2, 2), DMatrix::identity(2, 2))
                .unwrap(),
        )
        .build()
        .unwrap();
    let m = GaussianSimilarity::new().with_context(2).unwrap();
    let err = m.similarity(&att, &bil).unwrap_err();
    assert!(err.to_string().contains("attention"), "{err}");
    // A given mask of another size than the context.
    let o = AttnOptions {
        mask: Some(MaskKind::Matrix(DMatrix::identity(3, 3))),
        ..AttnOptions::default()
    };
    let masked = seq_library::model(&attention_net(&mut r, 2, &o, None));
    assert!(m.similarity(&masked, &masked).is_err());
}

/// Two attention layers: the closure's error against Monte Carlo is
/// measured and printed (`cargo test --test gaussian_sequence closure_error
/// -- --nocapture`), not asserted; docs/metrics.md quotes it.
#[test]
fn closure_error_of_two_attention_layers_is_measured() {
    let mut r = rng(31);
    let d = 4;
    let lm = |r: &mut StdRng, o: &AttnOptions, embed: bool| {
        let mut blocks = Vec::new();
        if embed {
            blocks.push(Block::Linear(LinearParams::random(r, d, 6, false, 1.0)));
        }
        for _ in 0..2 {
            blocks.push(Block::Attention(AttnParams::random(r, d, o)));
        }
        if embed {
            blocks.push(Block::Linear(LinearParams::random(r, 6, d, false, 1.0)));
        }
        SeqNet { blocks }
    };
    // The weight scale sets how far the attention term is from a small
    // correction to the skip: at 0.5 it is one, at 0.8 the degree-25
    // outputs are so heavy-tailed that Monte Carlo itself does not settle.
    let at = |scale: f64, o: AttnOptions| AttnOptions { scale, ..o };
    let additive = options(
        2,
        true,
        false,
        Some(10_000.0),
        Some(MaskKind::Causal),
        ADDITIVE,
    );
    let lerp = options(2, true, true, None, Some(MaskKind::Causal), LERP);
    let plain = options(2, false, false, None, Some(MaskKind::Causal), NO_SKIP);
    let mut case = |what: &'static str, n: usize, o: AttnOptions, embed: bool| {
        (what, n, lm(&mut r, &o, embed), lm(&mut r, &o, embed))
    };
    let cases = [
        case(
            "additive (α 0.35, r 1), q/k biases, rotary, n 2, scale 0.5",
            2,
            at(0.5, additive.clone()),
            false,
        ),
        case("the same, scale 0.65", 2, at(0.65, additive.clone()), false),
        case("the same, scale 0.8", 2, at(0.8, additive.clone()), false),
        case(
            "embed, additive, unembed, n 4, scale 0.5",
            4,
            at(0.5, additive.clone()),
            true,
        ),
        case(
            "lerp (α 0.6), all biases, n 3, scale 0.5",
            3,
            at(0.5, lerp.clone()),
            false,
        ),
        case("lerp, scale 0.65", 3, at(0.65, lerp), false),
        case(
            "no skip, no biases, n 2, scale 0.5",
            2,
            at(0.5, plain),
            false,
        ),
    ];
    for (i, (what, n, a, b)) in cases.into_iter().enumerate() {
        let case = Case {
            what,
            a,
            b,
            n,
            law: Law::Standard,
        };
        let (got, sim, exact) = library(&case.a, &case.b, n, &case.law);
        assert!(!exact);
        let mc = monte_carlo(&case, 400_000, 100 + i as u64);
        let mc_sim = mc[0].mean / (mc[1].mean * mc[2].mean).sqrt();
        let rel = |g: f64, e: &Estimate| {
            format!(
                "{g:.4e} vs {:.4e} ± {:.1e} ({:+.1} %)",
                e.mean,
                e.se,
                100.0 * (g / e.mean - 1.0)
            )
        };
        println!(
            "| {what} | {} | {} | {} | {sim:.3} vs {mc_sim:.3} |",
            rel(got[0], &mc[0]),
            rel(got[1], &mc[1]),
            rel(got[2], &mc[2]),
        );
        assert!(got.iter().all(|g| g.is_finite()) && sim.abs() <= 1.0);
    }
}

/// Deep stacks with large weights stay finite: the moments are normalised
/// after every block and the scale kept as a logarithm.
#[test]
fn deep_attention_stacks_stay_finite() {
    let mut r = rng(41);
    let o = AttnOptions {
        scale: 6.0,
        ..options(
            2,
            true,
            true,
            Some(10_000.0),
            Some(MaskKind::Causal),
            ADDITIVE,
        )
    };
    let deep = |r: &mut StdRng| SeqNet {
        blocks: (0..6)
            .map(|_| Block::Attention(AttnParams::random(r, 2, &o)))
            .collect(),
    };
    let (a, b) = (
        seq_library::model(&deep(&mut r)),
        seq_library::model(&deep(&mut r)),
    );
    let m = GaussianSimilarity::new().with_context(2).unwrap();
    let ln = m.squared_norm(&a).unwrap().ln_abs();
    assert!(
        ln.is_finite() && ln > 700.0,
        "ln ⟨A,A⟩ = {ln}: beyond f64 unless kept as a logarithm"
    );
    assert!((m.similarity(&a, &a).unwrap() - 1.0).abs() < 1e-9);
    let s = m.similarity(&a, &b).unwrap();
    assert!(s.is_finite() && s.abs() <= 1.0, "{s}");
}

/// `f32` computes the same as `f64` up to its precision.
#[test]
fn f32_agrees_with_f64() {
    use tensor_similarity::io::{self, Layout, LoadOptions};
    let dir = tempfile::tempdir().unwrap();
    let case = &cases()[2];
    let paths = [
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    ];
    for (net, path) in [&case.a, &case.b].into_iter().zip(&paths) {
        io::save(&seq_library::model(net), path, Layout::Described).unwrap();
    }
    let load = |p| {
        io::open_as::<f32>(p, &LoadOptions::default())
            .unwrap()
            .model
    };
    let (a, b) = (load(&paths[0]), load(&paths[1]));
    let single = GaussianSimilarity::new()
        .with_context(case.n)
        .unwrap()
        .similarity(&a, &b)
        .unwrap();
    let double = GaussianSimilarity::new()
        .with_context(case.n)
        .unwrap()
        .similarity(&seq_library::model(&case.a), &seq_library::model(&case.b))
        .unwrap();
    assert!((single - double).abs() < 1e-4, "f32 {single}, f64 {double}");
}
