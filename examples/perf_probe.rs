use nalgebra::{DMatrix, DVector};
use std::time::Instant;
use tensor_similarity::*;

fn m(seed: u64, r: usize, c: usize, scale: f64) -> DMatrix<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    DMatrix::from_fn(r, c, |_, _| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale
    })
}

fn model(seed: u64, vocab: usize, d: usize, heads: usize, layers: usize) -> Model {
    let mut b = Model::builder().block(Linear::new(m(seed, d, vocab, 1.0), None).unwrap());
    let e = d / heads;
    for l in 0..layers {
        let s = seed * 100 + l as u64 * 10;
        let w = |k: u64, r: usize, c: usize| m(s + k, r, c, 1.0 / (c as f64).sqrt());
        let bias = |k: u64| DVector::from_column_slice(m(s + k, d, 1, 0.1).as_slice());
        let attn = Attention::builder(
            heads,
            w(1, d, d),
            w(2, d, d),
            w(3, d, d),
            w(4, d, d),
            w(5, d, d),
            w(6, d, d),
        )
        .q1_bias(bias(7))
        .k1_bias(bias(8))
        .q2_bias(bias(9))
        .k2_bias(bias(10))
        .rotary(10_000.0)
        .skip(1.0)
        .scale(0.2)
        .build()
        .unwrap();
        let _ = e;
        b = b.block(attn);
    }
    b.block(Linear::new(m(seed + 7, vocab, d, 1.0 / (d as f64).sqrt()), None).unwrap())
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (vocab, d, heads, layers, n) = (args[0], args[1], args[2], args[3], args[4]);
    let a = model(1, vocab, d, heads, layers);
    let b = model(2, vocab, d, heads, layers);
    let sim = TensorSimilarity::new().with_context(n).unwrap();
    let t = Instant::now();
    let s = sim.similarity(&a, &b).unwrap();
    println!("sim {s} in {:.3} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let s = sim.inner_product(&a, &b).unwrap();
    println!("cross {s} in {:.3} s", t.elapsed().as_secs_f64());
}
