//! The attention-only language models the benches share
//! (`#[path = "lm.rs"] mod lm;`): an embedding `vocab → d` without bias,
//! attention layers of the target shape (`heads` heads of `e = e_v = d /
//! heads`, q/k biases, rotary base 10 000, causal mask, additive skip
//! `r = 1`, `α = 0.2`), an unembedding `d → vocab` without bias; weights
//! `N(0, 1/fan-in)`, biases `0.3·N(0, 1)`, drawn from a seeded `StdRng`.
#![allow(dead_code)]

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::StandardNormal;
use tensor_similarity::block::DEFAULT_ROTARY_BASE;
use tensor_similarity::{Attention, Linear, Mask, Model};

/// A `rows × cols` matrix of `scale·N(0, 1)` entries.
pub fn gaussian(rng: &mut StdRng, rows: usize, cols: usize, scale: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        scale * rng.sample::<f64, _>(StandardNormal)
    })
}

/// A bias of `0.3·N(0, 1)` entries.
pub fn vector(rng: &mut StdRng, len: usize) -> DVector<f64> {
    DVector::from_fn(len, |_, _| 0.3 * rng.sample::<f64, _>(StandardNormal))
}

/// Attention `d → d` as in the target: `heads` heads of `e = e_v`, q/k
/// biases, rotary, causal, `r = 1`, `α = 0.2`.
pub fn attention(rng: &mut StdRng, d: usize, heads: usize, e: usize) -> Attention {
    let (he, sc) = (heads * e, 1.0 / (d as f64).sqrt());
    let mut w = |rows, cols, scale| gaussian(rng, rows, cols, scale);
    let (q1, k1, q2, k2) = (w(he, d, sc), w(he, d, sc), w(he, d, sc), w(he, d, sc));
    let (v, o) = (w(he, d, sc), w(d, he, 1.0 / (he as f64).sqrt()));
    Attention::builder(heads, q1, k1, q2, k2, v, o)
        .q1_bias(vector(rng, he))
        .k1_bias(vector(rng, he))
        .q2_bias(vector(rng, he))
        .k2_bias(vector(rng, he))
        .rotary(DEFAULT_ROTARY_BASE)
        .mask(Mask::Causal)
        .skip(1.0)
        .scale(0.2)
        .build()
        .expect("valid shapes")
}

/// Embedding `vocab → d` (no bias), `depth` attention layers, unembedding
/// `d → vocab` (no bias).
pub fn language_model(
    rng: &mut StdRng,
    vocab: usize,
    d: usize,
    heads: usize,
    depth: usize,
) -> Model {
    let embed = Linear::new(gaussian(rng, d, vocab, 1.0), None).expect("valid shapes");
    let mut builder = Model::builder().block(embed);
    for _ in 0..depth {
        builder = builder.block(attention(rng, d, heads, d / heads));
    }
    let unembed = Linear::new(gaussian(rng, vocab, d, 1.0 / (d as f64).sqrt()), None);
    builder
        .block(unembed.expect("valid shapes"))
        .build()
        .expect("widths chain")
}
