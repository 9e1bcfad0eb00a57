//! Reading model files and filling similarity matrices.
//!
//! `load/*`: a 784 → 128 → bilinear (h = 512) → 10 model (MNIST-sized,
//! ~0.2 M parameters) read from a safetensors file in each dtype.
//! `matrix/*`: the N×N tensor similarity matrix of N such models (N
//! recursions for the norms, N(N−1)/2 for the pairs, in parallel).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::io::{self, Dtype, Layout};
use tensor_similarity::matrix::similarity_matrix;
use tensor_similarity::{Bilinear, Linear, Model, TensorSimilarity};

fn model(seed: u64) -> Model {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = |r: usize, c: usize| {
        DMatrix::from_fn(r, c, |_, _| {
            rng.sample::<f64, _>(StandardNormal) / (c as f64).sqrt()
        })
    };
    let (d, w, h, c) = (784, 128, 512, 10);
    Model::builder()
        .block(Linear::new(m(w, d), None).unwrap())
        .block(
            Bilinear::builder(m(h, w), m(h, w))
                .down(m(w, h))
                .build()
                .unwrap(),
        )
        .block(Linear::new(m(c, w), None).unwrap())
        .build()
        .unwrap()
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let m = model(1);
    let mut group = c.benchmark_group("load");
    for dtype in [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16] {
        let path = dir.path().join(format!("{dtype}.safetensors"));
        io::save_with_dtype(&m, &path, Layout::EmbedBodyHead, dtype).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(dtype), &path, |b, p| {
            b.iter(|| io::load(p).unwrap())
        });
    }
    group.finish();
}

fn matrix(c: &mut Criterion) {
    let mut group = c.benchmark_group("matrix");
    group.sample_size(10);
    for n in [4, 8] {
        let models: Vec<Model> = (0..n as u64).map(model).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &models, |b, ms| {
            b.iter(|| similarity_matrix(&TensorSimilarity::new(), ms, || {}).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, load, matrix);
criterion_main!(benches);
