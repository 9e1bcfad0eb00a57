//! The Gaussian metric's moment propagation against the tensor metric's Gram
//! recursion on the same models, `embed → bilinear → head`, over a sweep of
//! widths, for one inner product and for a full similarity; and the general
//! Wick sum (order 3) at one width.
//!
//! `gaussian_sequence`: the Gaussian metric on two attention-only language
//! models (embedding, attention layers with q/k biases, rotary, causal mask,
//! additive skip, `α = 0.35`, unembedding) at context 4: the research
//! code's headline shape (vocabulary 256, `d = 32`, 4 heads, two layers) and
//! the performance target (vocabulary 4096, `d = 128`, 4 heads, one and two
//! layers). Wall time: the step runs on rayon's pool.
//!
//! `gaussian_depth`: the exact Wick sum over two chains' trees (SPEC §3) on
//! residual bilinear chains of depth 2 and 3, beside the closure on the
//! same models.
//!
//! Run with `cargo bench --bench gaussian`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use nalgebra::{DMatrix, DVector};
use tensor_similarity::{
    Attention, Bilinear, CpBlock, Full, GaussianSimilarity, Linear, Model, RecursiveSimilarity,
    TensorBlock, TensorSimilarity,
};

/// Deterministic pseudo-random entries in `[−scale, scale]`.
fn matrix(rows: usize, cols: usize, seed: u64, scale: f64) -> DMatrix<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    DMatrix::from_fn(rows, cols, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        scale * ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
    })
}

fn bilinear_model(d: usize, h: usize, seed: u64) -> Model {
    Model::builder()
        .block(Linear::new(matrix(d, d, seed, 1.0), None).unwrap())
        .block(
            Bilinear::builder(matrix(h, d, seed + 1, 1.0), matrix(h, d, seed + 2, 1.0))
                .down(matrix(d, h, seed + 3, 1.0))
                .build()
                .unwrap(),
        )
        .block(Linear::new(matrix(10, d, seed + 4, 1.0), None).unwrap())
        .build()
        .unwrap()
}

/// A cubic CP block of rank `r` on `d` inputs, then a head.
fn cubic_model(d: usize, r: usize, seed: u64) -> Model {
    let factor = |s| {
        let mut u = matrix(r + 1, d + 1, s, 1.0);
        u.row_mut(0).fill(0.0);
        u[(0, 0)] = 1.0;
        u
    };
    let mut out = matrix(d + 1, r + 1, seed + 9, 1.0);
    out.row_mut(0).fill(0.0);
    out[(0, 0)] = 1.0;
    let cube: Arc<dyn TensorBlock<f64>> = Arc::new(
        CpBlock::with_symmetry(
            vec![factor(seed), factor(seed + 1), factor(seed + 2)],
            out,
            Arc::new(Full),
        )
        .unwrap(),
    );
    Model::builder()
        .shared_block(cube)
        .block(Linear::new(matrix(10, d, seed + 4, 1.0), None).unwrap())
        .build()
        .unwrap()
}

fn metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("inner_product");
    for d in [32, 64, 128] {
        let (a, b) = (bilinear_model(d, 2 * d, 1), bilinear_model(d, 2 * d, 10));
        group.bench_with_input(BenchmarkId::new("gaussian", d), &d, |bench, _| {
            let metric = GaussianSimilarity::new();
            bench.iter(|| metric.inner_product(black_box(&a), black_box(&b)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("tensor", d), &d, |bench, _| {
            let metric = TensorSimilarity::new();
            bench.iter(|| metric.inner_product(black_box(&a), black_box(&b)).unwrap())
        });
    }
    let (a, b) = (cubic_model(32, 64, 1), cubic_model(32, 64, 10));
    group.bench_function(BenchmarkId::new("gaussian_order3", 32), |bench| {
        let metric = GaussianSimilarity::new();
        bench.iter(|| metric.inner_product(black_box(&a), black_box(&b)).unwrap())
    });
    group.finish();

    // A full cosine: the tensor metric runs three recursions, the Gaussian
    // metric one pass (the joint state holds both self moments).
    let mut group = c.benchmark_group("similarity");
    for d in [32, 64, 128] {
        let (a, b) = (bilinear_model(d, 2 * d, 1), bilinear_model(d, 2 * d, 10));
        group.bench_with_input(BenchmarkId::new("gaussian", d), &d, |bench, _| {
            let metric = GaussianSimilarity::new();
            bench.iter(|| metric.similarity(black_box(&a), black_box(&b)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("tensor", d), &d, |bench, _| {
            let metric = TensorSimilarity::new();
            bench.iter(|| metric.similarity(black_box(&a), black_box(&b)).unwrap())
        });
    }
    group.finish();
}

/// An attention-only language model: embedding `vocab → d` (a table read
/// transposed), `layers` attention blocks, unembedding `d → vocab`.
fn language_model(vocab: usize, d: usize, heads: usize, layers: usize, seed: u64) -> Model {
    let w =
        |rows: usize, cols: usize, s: u64, scale: f64| matrix(rows, cols, seed * 100 + s, scale);
    let mut b = Model::builder().block(Linear::new(w(d, vocab, 0, 0.05), None).unwrap());
    for l in 0..layers as u64 {
        let qk = |s| w(d, d, 10 * l + s, 1.5 / (d as f64).sqrt());
        let bias = |s| DVector::from_column_slice(w(d, 1, 10 * l + s, 0.1).as_slice());
        b = b.block(
            Attention::builder(heads, qk(1), qk(2), qk(3), qk(4), qk(5), qk(6))
                .q1_bias(bias(7))
                .k1_bias(bias(8))
                .rotary(10_000.0)
                .skip(1.0)
                .scale(0.35)
                .build()
                .unwrap(),
        );
    }
    b.block(Linear::new(w(vocab, d, 9, 0.05), None).unwrap())
        .build()
        .unwrap()
}

fn sequences(c: &mut Criterion) {
    let mut group = c.benchmark_group("gaussian_sequence");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let metric = GaussianSimilarity::new().with_context(4).unwrap();
    for (name, vocab, d, layers) in [
        ("v256_d32_2layers", 256, 32, 2),
        ("v4096_d128_1layer", 4096, 128, 1),
        ("v4096_d128_2layers", 4096, 128, 2),
    ] {
        let (a, b) = (
            language_model(vocab, d, 4, layers, 1),
            language_model(vocab, d, 4, layers, 2),
        );
        group.bench_function(BenchmarkId::new("similarity", name), |bench| {
            bench.iter(|| metric.similarity(black_box(&a), black_box(&b)).unwrap())
        });
    }
    group.finish();
}

/// A chain of `depth` residual bilinear blocks `d → d` (hidden width `h`,
/// all biases), then a head to 10 outputs.
fn residual_chain(d: usize, h: usize, depth: usize, seed: u64) -> Model {
    let mut b = Model::builder();
    for l in 0..depth as u64 {
        let s = seed * 100 + 10 * l;
        let v =
            |len: usize, k: u64| DVector::from_column_slice(matrix(len, 1, s + k, 0.3).as_slice());
        b = b.block(
            Bilinear::builder(matrix(h, d, s + 1, 0.5), matrix(h, d, s + 2, 0.5))
                .down(matrix(d, h, s + 3, 0.5))
                .left_bias(v(h, 4))
                .right_bias(v(h, 5))
                .down_bias(v(d, 6))
                .skip(1.0)
                .build()
                .unwrap(),
        );
    }
    b.block(Linear::new(matrix(10, d, seed + 7, 1.0), None).unwrap())
        .build()
        .unwrap()
}

/// The exact Wick sum over two chains' trees (degree 4 and 8) against the
/// closure on the same models: one similarity (three inner products).
fn depth(c: &mut Criterion) {
    let mut group = c.benchmark_group("gaussian_depth");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (depth, d, h) in [(2, 16, 32), (2, 32, 64), (3, 4, 4), (3, 6, 6)] {
        let (a, b) = (
            residual_chain(d, h, depth, 1),
            residual_chain(d, h, depth, 2),
        );
        let name = format!("depth{depth}_d{d}_h{h}");
        for (kind, metric) in [
            ("exact", GaussianSimilarity::new()),
            ("closure", GaussianSimilarity::closure()),
        ] {
            group.bench_function(BenchmarkId::new(kind, &name), |bench| {
                bench.iter(|| metric.similarity(black_box(&a), black_box(&b)).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, metrics, sequences, depth);
criterion_main!(benches);
