//! Criterion benches of bilinear attention (SPEC §7; docs/performance.md,
//! "Attention and sequence models").
//!
//! The target shape: stream `d = 128`, 4 heads, `e = e_v = 32`, q/k biases,
//! rotary (base 10 000), causal mask, additive skip (`r = 1`), `α = 0.2`,
//! context `n = 4`.
//!
//! * `attention_step`: one attention Gram step, cross (`gram_step`) and self
//!   (`self_gram_step`), on a symmetric positive `G` (`(n d + 1)²`, the Gram
//!   matrix after a 4096-token embedding), and the per-leg GEMMs the step
//!   cannot avoid, on the same shapes with nalgebra, over the `n²` position
//!   pairs on the same 2 rayon threads: `Y = F_A(p) Ĝ[p,q]`
//!   (`L × (d+1) × (d+1)`, `L = 4He + He_v = 640`) and `X = Y F_B(q)ᵀ`
//!   (`L × L × (d+1)`); `gemms_yt` adds `Ỹ = Ĝ[p,q] F_B(q)ᵀ`, which the step
//!   also forms (B's mean legs and the directions of A's skip).
//! * `attention_model`: two attention-only language models (embedding
//!   4096 → 128 without bias, two attention layers as above, unembedding
//!   128 → 4096 without bias) at context 4: `similarity` (one inner product,
//!   two squared norms), and each product alone.
//! * `attention_growth`: `similarity` of such models (vocabulary 512, to
//!   keep the embedding small) against `n`, `d` (4 heads, `e = d/4`), heads
//!   (`d = 128`, `e = 128/H`), each with one attention layer, and depth (1–4
//!   layers at the target shape). The point every series shares (`n = 4`,
//!   `d = 128`, `H = 4`, one layer) runs once, as `n/4`.
//!
//! **Wall time**: the step runs in parallel with rayon, and every bench runs
//! on one global pool of 2 threads (the machine's 2 cores), so the CPU time
//! of the bench thread would miss the other worker's share.
//!
//! After the run, `main` reads criterion's medians back and prints the
//! tables of `docs/performance.md`.
//!
//! `cargo bench --bench attention -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

#[path = "lm.rs"]
mod lm;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group};
use lm::{attention, gaussian, language_model};
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use tensor_similarity::{Linear, Model, RecursiveSimilarity, TensorBlock, TensorSimilarity};

/// The target shape: `(d, heads, e)`, context, vocabulary.
const D: usize = 128;
const HEADS: usize = 4;
const E: usize = 32;
const N: usize = 4;
const VOCAB: usize = 4096;
/// The growth series' vocabulary, and the depth of the series in `n`, `d`
/// and heads (one layer keeps the slowest point near 3 s).
const GROWTH_VOCAB: usize = 512;
const DEPTH: usize = 1;
const GROWTH_N: [usize; 5] = [1, 2, 3, 4, 6];
const GROWTH_D: [usize; 4] = [32, 64, 128, 256];
const GROWTH_HEADS: [usize; 4] = [1, 2, 4, 8];
const GROWTH_DEPTH: [usize; 4] = [1, 2, 3, 4];

/// The per-leg GEMMs of a step over the `n²` position pairs, operands and
/// outputs preallocated (`F_B(q)ᵀ` stored transposed, as the step reads it).
struct LegGemms {
    n: usize,
    fa: Vec<DMatrix<f64>>,
    fbt: Vec<DMatrix<f64>>,
    blocks: Vec<DMatrix<f64>>,
    out: Vec<[DMatrix<f64>; 3]>,
}

impl LegGemms {
    fn new(rng: &mut StdRng, g: &DMatrix<f64>, n: usize, d: usize, legs: usize) -> Self {
        let block = |p: usize, q: usize| {
            let idx = |i: usize, p: usize| if i == 0 { 0 } else { 1 + p * d + (i - 1) };
            DMatrix::from_fn(d + 1, d + 1, |i, j| g[(idx(i, p), idx(j, q))])
        };
        Self {
            n,
            fa: (0..n).map(|_| gaussian(rng, legs, d + 1, 0.1)).collect(),
            fbt: (0..n).map(|_| gaussian(rng, d + 1, legs, 0.1)).collect(),
            blocks: (0..n * n).map(|pq| block(pq / n, pq % n)).collect(),
            out: (0..n * n)
                .map(|_| {
                    [
                        DMatrix::zeros(legs, d + 1),
                        DMatrix::zeros(legs, legs),
                        DMatrix::zeros(d + 1, legs),
                    ]
                })
                .collect(),
        }
    }

    /// `Y` and `X` for every pair (and `Ỹ` with `yt`), in parallel over pairs.
    fn run(&mut self, yt: bool) {
        let Self {
            n,
            fa,
            fbt,
            blocks,
            out,
        } = self;
        out.par_iter_mut()
            .enumerate()
            .for_each(|(pq, [y, x, ytilde])| {
                let (p, q) = (pq / *n, pq % *n);
                y.gemm(1.0, &fa[p], &blocks[pq], 0.0);
                x.gemm(1.0, y, &fbt[q], 0.0);
                if yt {
                    ytilde.gemm(1.0, &blocks[pq], &fbt[q], 0.0);
                }
            });
    }
}

/// `G_1` after the embedding of a 4096-token language model at context
/// `n`: symmetric positive, `(n d + 1)²`.
fn embedding_gram(rng: &mut StdRng, n: usize) -> DMatrix<f64> {
    let embed = Linear::new(gaussian(rng, D, VOCAB, 1.0), None).expect("valid shapes");
    let model = Model::builder().block(embed).build().expect("one block");
    let metric = TensorSimilarity::new().with_context(n).expect("n > 0");
    let grams = metric.cross_grams(&model, &model).expect("comparable");
    grams.into_iter().next().expect("one block").gram
}

fn attention_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_step");
    group.sample_size(10);
    let mut rng = StdRng::seed_from_u64(11);
    let (a, b) = (
        attention(&mut rng, D, HEADS, E),
        attention(&mut rng, D, HEADS, E),
    );
    let g = embedding_gram(&mut rng, N);
    group.bench_function("cross", |bench| {
        bench.iter(|| a.gram_step(&b, black_box(&g), N).expect("valid"))
    });
    group.bench_function("self", |bench| {
        bench.iter(|| a.self_gram_step(black_box(&g), N).expect("valid"))
    });
    let mut gemms = LegGemms::new(&mut rng, &g, N, D, 5 * HEADS * E);
    group.bench_function("gemms", |bench| bench.iter(|| gemms.run(false)));
    group.bench_function("gemms_yt", |bench| bench.iter(|| gemms.run(true)));
    group.finish();
}

fn attention_model(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_model");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut rng = StdRng::seed_from_u64(12);
    let (a, b) = (
        language_model(&mut rng, VOCAB, D, HEADS, 2),
        language_model(&mut rng, VOCAB, D, HEADS, 2),
    );
    let metric = TensorSimilarity::new().with_context(N).expect("n > 0");
    group.bench_function("similarity", |bench| {
        bench.iter(|| metric.similarity(black_box(&a), &b).expect("comparable"))
    });
    group.bench_function("inner_product", |bench| {
        bench.iter(|| metric.inner_product(black_box(&a), &b).expect("comparable"))
    });
    group.bench_function("squared_norm", |bench| {
        bench.iter(|| metric.squared_norm(black_box(&a)).expect("valid"))
    });
    group.finish();
}

/// `(series, x, n, d, heads, depth)` of every growth point; the shared
/// point runs once, as `n/4`.
fn growth_points() -> Vec<(&'static str, usize, [usize; 4])> {
    let mut points = Vec::new();
    points.extend(GROWTH_N.map(|n| ("n", n, [n, D, HEADS, DEPTH])));
    points.extend(GROWTH_D.map(|d| ("d", d, [N, d, HEADS, DEPTH])));
    points.extend(GROWTH_HEADS.map(|h| ("heads", h, [N, D, h, DEPTH])));
    points.extend(GROWTH_DEPTH.map(|l| ("depth", l, [N, D, HEADS, l])));
    points.retain(|&(series, _, p)| series == "n" || p != [N, D, HEADS, DEPTH]);
    points
}

fn attention_growth(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention_growth");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (series, x, [n, d, heads, depth]) in growth_points() {
        let mut rng = StdRng::seed_from_u64(13);
        let (a, b) = (
            language_model(&mut rng, GROWTH_VOCAB, d, heads, depth),
            language_model(&mut rng, GROWTH_VOCAB, d, heads, depth),
        );
        let metric = TensorSimilarity::new().with_context(n).expect("n > 0");
        group.bench_function(BenchmarkId::new(series, x), |bench| {
            bench.iter(|| metric.similarity(black_box(&a), &b).expect("comparable"))
        });
    }
    group.finish();
}

criterion_group!(benches, attention_step, attention_model, attention_growth);

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("the global rayon pool is built once, first");
    benches();
    Criterion::default().configure_from_args().final_summary();
    report::print();
}

/// Reads criterion's medians back (as `benches/recursion.rs` does) and
/// prints the tables of `docs/performance.md`, with flop counts from the
/// cost model.
mod report {
    use std::path::PathBuf;

    use super::{D, DEPTH, E, HEADS, N};

    /// The median of a benchmark in milliseconds, if it ran.
    fn median_ms(path: &str) -> Option<f64> {
        let root = std::env::var_os("CRITERION_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
                    .join("criterion")
            });
        let text = std::fs::read_to_string(root.join(path).join("new/estimates.json")).ok()?;
        let rest = &text[text.find("\"median\"")?..];
        let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse::<f64>().ok().map(|ns| ns * 1e-6)
    }

    fn cell(x: Option<f64>) -> String {
        x.map_or("—".into(), |v| format!("{v:.1}"))
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> String {
        a.zip(b)
            .map_or("—".into(), |(a, b)| format!("{:.2}", a / b))
    }

    /// GFLOP/s of `gflop` done in `ms`.
    fn rate(gflop: f64, ms: Option<f64>) -> String {
        ms.map_or("—".into(), |t| format!("{:.1}", gflop / (t * 1e-3)))
    }

    /// Valid `(s, t)` of the causal mask on `n` positions.
    fn causal_pairs(n: usize) -> f64 {
        (n * (n + 1) / 2) as f64
    }

    /// GFLOP of the per-leg GEMMs `Y`, `X` (and `Ỹ`) of one step.
    fn gemm_gflop(n: usize, d: usize, legs: usize, yt: bool) -> f64 {
        let (n, m, l) = (n as f64, (d + 1) as f64, legs as f64);
        let per_pair = l * m * m + l * l * m + if yt { m * m * l } else { 0.0 };
        2.0 * n * n * per_pair * 1e-9
    }

    /// GFLOP of the pair contraction of a cross step: 52 products
    /// `e × e × e` per head pair and valid `(s, t, s', t')`.
    fn contraction_gflop(n: usize, heads: usize, e: usize) -> f64 {
        let configs = heads as f64 * causal_pairs(n);
        configs * configs * 52.0 * 2.0 * (e as f64).powi(3) * 1e-9
    }

    pub fn print() {
        let at = |f: &str| median_ms(&format!("attention_step/{f}"));
        let (cross, own, gemms, gemms_yt) = (at("cross"), at("self"), at("gemms"), at("gemms_yt"));
        let legs = 5 * HEADS * E;
        let (gy, gyt) = (gemm_gflop(N, D, legs, false), gemm_gflop(N, D, legs, true));
        let pairs = contraction_gflop(N, HEADS, E);
        println!(
            "\n## Attention step, d = {D}, {HEADS} heads, e = e_v = {E}, n = {N} \
             (medians, wall time, 2 threads)\n"
        );
        println!("| | ms | GFLOP (cost model) | GFLOP/s |");
        println!("|---|---|---|---|");
        println!(
            "| cross step | {} | {:.2} | {} |",
            cell(cross),
            gyt + pairs,
            rate(gyt + pairs, cross)
        );
        println!(
            "| self step | {} | {:.2} | {} |",
            cell(own),
            gyt + pairs / 2.0,
            rate(gyt + pairs / 2.0, own)
        );
        println!(
            "| GEMMs Y, X | {} | {gy:.3} | {} |",
            cell(gemms),
            rate(gy, gemms)
        );
        println!(
            "| GEMMs Y, X, Ỹ | {} | {gyt:.3} | {} |",
            cell(gemms_yt),
            rate(gyt, gemms_yt)
        );
        println!(
            "\ncross/GEMMs {}, cross/(GEMMs with Ỹ) {}, self/GEMMs {}, self/cross {}; \
             pair contraction {pairs:.2} GFLOP (cross), {:.2} (self)",
            ratio(cross, gemms),
            ratio(cross, gemms_yt),
            ratio(own, gemms),
            ratio(own, cross),
            pairs / 2.0
        );

        println!("\n## Two-layer attention language models, vocabulary 4096, n = {N} (ms)\n");
        for f in ["similarity", "inner_product", "squared_norm"] {
            println!(
                "- {f}: {}",
                cell(median_ms(&format!("attention_model/{f}")))
            );
        }

        println!(
            "\n## Growth of similarity (vocabulary 512; one attention layer but in the \
             depth series; ms)\n"
        );
        let shared = median_ms(&format!("attention_growth/n/{N}"));
        // The cost model scaled from the shared point: the step bench splits
        // a step into its GEMMs (`gemms_yt`) and the pair contraction (the
        // rest); a similarity is one cross and two self steps per layer, and
        // what is left at the shared point (embedding, readout,
        // linearisations) is taken to scale with the GEMMs.
        let model = |[n, d, heads, depth]: [usize; 4]| -> Option<f64> {
            let (t0, g) = (shared?, gemms_yt?);
            let (layer_g, layer_c) = (3.0 * g, cross? + 2.0 * own? - 3.0 * g);
            let rest = t0 - (layer_g + layer_c);
            let rg = gemm_gflop(n, d, 5 * d, true) / gemm_gflop(N, D, 5 * D, true);
            let rc = contraction_gflop(n, heads, d / heads) / contraction_gflop(N, HEADS, E);
            Some(rest * rg + depth as f64 * (layer_g * rg + layer_c * rc))
        };
        for (series, xs, base) in [
            ("n", &super::GROWTH_N[..], N),
            ("d", &super::GROWTH_D[..], D),
            ("heads", &super::GROWTH_HEADS[..], HEADS),
            ("depth", &super::GROWTH_DEPTH[..], DEPTH),
        ] {
            let shape = |x: usize| match series {
                "n" => [x, D, HEADS, DEPTH],
                "d" => [N, x, HEADS, DEPTH],
                "heads" => [N, D, x, DEPTH],
                _ => [N, D, HEADS, x],
            };
            let times: Vec<Option<f64>> = xs
                .iter()
                .map(|&x| {
                    if x == base {
                        shared
                    } else {
                        median_ms(&format!("attention_growth/{series}/{x}"))
                    }
                })
                .collect();
            let predicted: Vec<Option<f64>> = xs.iter().map(|&x| model(shape(x))).collect();
            // Local exponent: log(t₂/t₁) / log(x₂/x₁) between neighbours.
            let slopes = |t: &[Option<f64>]| -> String {
                let mut row = vec![String::new()];
                for i in 1..xs.len() {
                    row.push(t[i].zip(t[i - 1]).map_or("—".into(), |(t, s)| {
                        let x = xs[i] as f64 / xs[i - 1] as f64;
                        format!("{:.2}", (t / s).ln() / x.ln())
                    }));
                }
                row.join(" | ")
            };
            let cells = |t: &[Option<f64>]| -> String {
                t.iter().map(|&t| cell(t)).collect::<Vec<_>>().join(" | ")
            };
            let header: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
            println!("| {series} | {} |", header.join(" | "));
            println!("|---|{}", "---|".repeat(xs.len()));
            println!("| similarity | {} |", cells(&times));
            println!("| exponent | {} |", slopes(&times));
            println!("| cost model | {} |", cells(&predicted));
            println!("| model exponent | {} |\n", slopes(&predicted));
        }
    }
}
