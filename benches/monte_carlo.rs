//! `cargo bench --bench monte_carlo`: Monte Carlo estimates of the Gaussian
//! similarity (`GaussianMonteCarlo`, SPEC §3) of two attention-only
//! language models at the performance target's shape (vocabulary 4096,
//! `d = 128`, 4 heads of `e = 32`, two layers; `lm.rs`, the models of
//! `benches/attention.rs`) at context 4, where the Gaussian metric is a
//! closure and Monte Carlo its unbiased reference.
//!
//! * `estimate/100000`: `10⁵` samples (sequences of 4 positions), the
//!   issue's target (under 20 s on the 2-core build machine);
//! * `estimate/10000`: the command line's default `--samples`.
//!
//! Wall time on one global rayon pool of 2 threads (the batches run in
//! parallel). The first linear blocks' joint output (2 × 128 wide) is drawn
//! instead of the 4096-wide input, and the unembeddings are read out
//! through their Gram matrices (see `tensor_similarity::gaussian::monte_carlo`).

#[path = "lm.rs"]
mod lm;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tensor_similarity::GaussianMonteCarlo;

const VOCAB: usize = 4096;
const D: usize = 128;
const HEADS: usize = 4;
const N: usize = 4;

fn estimate(c: &mut Criterion) {
    let mut group = c.benchmark_group("estimate");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    // The seed of benches/attention.rs's `attention_model`: the same models.
    let mut rng = StdRng::seed_from_u64(12);
    let (a, b) = (
        lm::language_model(&mut rng, VOCAB, D, HEADS, 2),
        lm::language_model(&mut rng, VOCAB, D, HEADS, 2),
    );
    for samples in [10_000, 100_000] {
        let mc = GaussianMonteCarlo::new(samples, 0)
            .and_then(|m| m.with_context(N))
            .expect("valid settings");
        let e = mc.estimate(&a, &b).expect("comparable");
        eprintln!(
            "{samples} samples: similarity {:.5} ± {:.5}",
            e.similarity, e.standard_error
        );
        group.bench_function(BenchmarkId::from_parameter(samples), |bench| {
            bench.iter(|| mc.estimate(black_box(&a), &b).expect("comparable"))
        });
    }
    group.finish();
}

criterion_group!(benches, estimate);

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("the global rayon pool is built once, first");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
