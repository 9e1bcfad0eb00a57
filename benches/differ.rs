//! Criterion bench of where two models differ (SPEC §9; docs/performance.md,
//! "Heads and paths"): `heads` and `paths` against one `similarity` (the
//! `compare` of the command line) on two attention-only language models of
//! the shape: vocabulary 4 096, `d = 128`, 4 heads of `e = e_v =
//! 32`, two attention layers (`benches/lm.rs`), context 4. Wall time on the
//! global pool of 2 rayon threads. After the run, `main` prints the ratios
//! to `similarity`.
//!
//! `cargo bench --bench differ -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

#[path = "lm.rs"]
mod lm;

use criterion::{Criterion, SamplingMode, criterion_group};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tensor_similarity::{RecursiveSimilarity, TensorSimilarity};

const VOCAB: usize = 4096;
const D: usize = 128;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const N: usize = 4;

fn differ(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(22);
    let a = lm::language_model(&mut rng, VOCAB, D, HEADS, LAYERS);
    let b = lm::language_model(&mut rng, VOCAB, D, HEADS, LAYERS);
    let metric = TensorSimilarity::new().with_context(N).expect("a context");
    let mut group = c.benchmark_group("differ");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("compare", |bench| {
        bench.iter(|| black_box(metric.similarity(&a, &b).expect("compares")))
    });
    group.bench_function("heads", |bench| {
        bench.iter(|| black_box(metric.heads(&a, &b).expect("head paths")))
    });
    group.bench_function("paths", |bench| {
        bench.iter(|| black_box(metric.paths(&a, &b).expect("families")))
    });
    group.finish();
}

criterion_group!(benches, differ);

/// Criterion's median of `differ/<name>`, in seconds, if it ran (read as
/// `benches/attention.rs` reads its own).
fn median(name: &str) -> Option<f64> {
    let root = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
                })
                .join("criterion")
        });
    let text =
        std::fs::read_to_string(root.join("differ").join(name).join("new/estimates.json")).ok()?;
    let rest = &text[text.find("\"median\"")?..];
    let rest = &rest[rest.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse::<f64>().ok().map(|ns| ns * 1e-9)
}

fn main() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build_global()
        .expect("the global rayon pool is built once, first");
    benches();
    Criterion::default().configure_from_args().final_summary();
    if let (Some(compare), Some(heads), Some(paths)) =
        (median("compare"), median("heads"), median("paths"))
    {
        println!(
            "compare {compare:.3} s; heads {heads:.3} s ({:.2}×, target 1.5×); paths {paths:.3} s ({:.2}×, target 6×)",
            heads / compare,
            paths / compare
        );
    }
}
