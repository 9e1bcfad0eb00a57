//! Tensor similarity of transformers: a bilinear-attention language model
//! and the models it is compared with, at context length 4 (SPEC §7).
//!
//! `A` is a two-layer attention-only language model (fixed seed): a token
//! embedding (vocabulary 16 → stream 8), two bilinear attention layers (2
//! heads, q/k width 4, value width 4, q/k and output biases, rotary with
//! base 10 000, causal mask, additive residual `r = 1`, scale `α = 0.5`),
//! and an unembedding. It is compared with
//!
//! * a **twin**: `A` through every symmetry of §7: heads permuted, the two
//!   score factors of every other head swapped, each head's values changed
//!   by `V_h → P_h V_h, O_h → O_h P_h⁻¹`, `Q1_h → c Q1_h, K1_h → K1_h / c`, a
//!   rotation in one rotary plane of `Q1_h` and `K1_h`, and an affine change
//!   of basis `x ↦ Px + t` of the residual stream: the same function,
//!   different weights;
//! * a **perturbed** copy: every weight of `A` plus 10 % noise;
//! * an **unrelated** model of the same shapes.
//!
//! For each pair it prints the tensor similarity at context 4 and the
//! weight cosine, and checks that the twin computes the same function on a
//! random sequence. Run with `cargo run --release --example transformer`.

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::{
    Attention, Linear, Model, RecursiveSimilarity, TensorSimilarity, weight_cosine,
};

const VOCAB: usize = 16;
const STREAM: usize = 8;
const HEADS: usize = 2;
const QK: usize = 4;
const VALUE: usize = 4;
const LAYERS: usize = 2;
const CONTEXT: usize = 4;
const ALPHA: f64 = 0.5;

fn normal(rng: &mut StdRng, rows: usize, cols: usize, std: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        std * rng.sample::<f64, _>(StandardNormal)
    })
}

fn normal_vector(rng: &mut StdRng, len: usize, std: f64) -> DVector<f64> {
    DVector::from_fn(len, |_, _| std * rng.sample::<f64, _>(StandardNormal))
}

/// One attention layer's weights: `q1 k1 q2 k2 v` (`H·e × d`), `o` (`d × H·e_v`),
/// biases of `q1 k1 q2 k2` and `o`.
#[derive(Clone)]
struct Layer {
    w: [DMatrix<f64>; 6],
    b: [DVector<f64>; 4],
    b_v: DVector<f64>,
    b_o: DVector<f64>,
}

#[derive(Clone)]
struct Parts {
    embed: (DMatrix<f64>, DVector<f64>),
    layers: Vec<Layer>,
    unembed: (DMatrix<f64>, DVector<f64>),
}

impl Parts {
    fn random(seed: u64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let std = 1.0 / (STREAM as f64).sqrt();
        let layers = (0..LAYERS)
            .map(|_| Layer {
                w: [
                    normal(&mut rng, HEADS * QK, STREAM, std),
                    normal(&mut rng, HEADS * QK, STREAM, std),
                    normal(&mut rng, HEADS * QK, STREAM, std),
                    normal(&mut rng, HEADS * QK, STREAM, std),
                    normal(&mut rng, HEADS * VALUE, STREAM, std),
                    normal(&mut rng, STREAM, HEADS * VALUE, std),
                ],
                b: std::array::from_fn(|_| normal_vector(&mut rng, HEADS * QK, 0.3)),
                b_v: DVector::zeros(HEADS * VALUE),
                b_o: normal_vector(&mut rng, STREAM, 0.1),
            })
            .collect();
        Parts {
            embed: (normal(&mut rng, STREAM, VOCAB, 1.0), DVector::zeros(STREAM)),
            layers,
            unembed: (
                normal(&mut rng, VOCAB, STREAM, std),
                normal_vector(&mut rng, VOCAB, 0.1),
            ),
        }
    }

    fn model(&self) -> Model {
        let (e, b) = self.embed.clone();
        let mut builder = Model::builder().block(Linear::new(e, Some(b)).unwrap());
        for l in &self.layers {
            let [q1, k1, q2, k2, v, o] = l.w.clone();
            let attention = Attention::builder(HEADS, q1, k1, q2, k2, v, o)
                .q1_bias(l.b[0].clone())
                .k1_bias(l.b[1].clone())
                .q2_bias(l.b[2].clone())
                .k2_bias(l.b[3].clone())
                .v_bias(l.b_v.clone())
                .o_bias(l.b_o.clone())
                .rotary(10_000.0)
                .scale(ALPHA)
                .skip(1.0)
                .build()
                .expect("shapes are consistent by construction");
            builder = builder.block(attention);
        }
        let (u, b) = self.unembed.clone();
        builder
            .block(Linear::new(u, Some(b)).unwrap())
            .build()
            .unwrap()
    }

    /// The same function through every symmetry of SPEC §7.
    fn twin(&self, seed: u64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut twin = self.clone();
        for layer in &mut twin.layers {
            let old = layer.clone();
            let order: Vec<usize> = (0..HEADS).rev().collect();
            for (new, &h) in order.iter().enumerate() {
                let (qk, vv) = (|x: usize| x * QK, |x: usize| x * VALUE);
                // Swap the two score factors of every other head.
                let legs = if new % 2 == 0 {
                    [2, 3, 0, 1]
                } else {
                    [0, 1, 2, 3]
                };
                for (to, &from) in legs.iter().enumerate() {
                    let rows = old.w[from].rows(qk(h), QK).into_owned();
                    layer.w[to].rows_mut(qk(new), QK).copy_from(&rows);
                    let bias = old.b[from].rows(qk(h), QK).into_owned();
                    layer.b[to].rows_mut(qk(new), QK).copy_from(&bias);
                }
                // Values: V_h → P_h V_h, O_h → O_h P_h⁻¹.
                let p = DMatrix::identity(VALUE, VALUE) + normal(&mut rng, VALUE, VALUE, 0.3);
                let p_inv = p
                    .clone()
                    .try_inverse()
                    .expect("I + small noise is invertible");
                let v = &p * old.w[4].rows(vv(h), VALUE);
                layer.w[4].rows_mut(vv(new), VALUE).copy_from(&v);
                let b_v = &p * old.b_v.rows(vv(h), VALUE);
                layer.b_v.rows_mut(vv(new), VALUE).copy_from(&b_v);
                let o = old.w[5].columns(vv(h), VALUE) * &p_inv;
                layer.w[5].columns_mut(vv(new), VALUE).copy_from(&o);
                // Q1 → c Q1, K1 → K1 / c, then a rotation in rotary plane 0 of both.
                let c = rng.random_range(0.5..2.0);
                let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                for (leg, scale) in [(0, c), (1, 1.0 / c)] {
                    let mut rows = layer.w[leg].rows(qk(new), QK).into_owned();
                    let mut bias = layer.b[leg].rows(qk(new), QK).into_owned();
                    rows *= scale;
                    bias *= scale;
                    let (sin, cos) = angle.sin_cos();
                    let (j, k) = (0, QK / 2);
                    let (rj, rk) = (rows.row(j).into_owned(), rows.row(k).into_owned());
                    rows.set_row(j, &(&rj * cos - &rk * sin));
                    rows.set_row(k, &(&rk * cos + &rj * sin));
                    let (bj, bk) = (bias[j], bias[k]);
                    bias[j] = bj * cos - bk * sin;
                    bias[k] = bk * cos + bj * sin;
                    layer.w[leg].rows_mut(qk(new), QK).copy_from(&rows);
                    layer.b[leg].rows_mut(qk(new), QK).copy_from(&bias);
                }
            }
        }
        // Residual stream: x ↦ P x + t. The embedding writes it (P E, P b + t);
        // attention reads it through W P⁻¹ with bias b − W P⁻¹ t (q, k and v
        // alike) and writes P O, P b_o (the additive skip carries t along);
        // the unembedding reads it.
        let p = DMatrix::identity(STREAM, STREAM) + normal(&mut rng, STREAM, STREAM, 0.3);
        let p_inv = p
            .clone()
            .try_inverse()
            .expect("I + small noise is invertible");
        let t = normal_vector(&mut rng, STREAM, 0.1);
        twin.embed = (&p * &twin.embed.0, &p * &twin.embed.1 + &t);
        for layer in &mut twin.layers {
            for leg in 0..4 {
                let read = &layer.w[leg] * &p_inv;
                layer.b[leg] -= &read * &t;
                layer.w[leg] = read;
            }
            layer.w[4] = &layer.w[4] * &p_inv;
            layer.b_v -= &layer.w[4] * &t;
            layer.w[5] = &p * &layer.w[5];
            layer.b_o = &p * &layer.b_o;
        }
        let (u, b) = twin.unembed.clone();
        twin.unembed = (&u * &p_inv, b - &u * &p_inv * &t);
        twin
    }

    /// Every weight plus Gaussian noise of `relative` times its matrix's RMS.
    fn perturbed(&self, seed: u64, relative: f64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut noisy = |m: &mut DMatrix<f64>| {
            let rms = m.norm() / (m.len() as f64).sqrt();
            *m += normal(&mut rng, m.nrows(), m.ncols(), relative * rms);
        };
        let mut out = self.clone();
        noisy(&mut out.embed.0);
        noisy(&mut out.unembed.0);
        for layer in &mut out.layers {
            layer.w.iter_mut().for_each(&mut noisy);
        }
        out
    }
}

fn main() -> Result<(), tensor_similarity::Error> {
    let a = Parts::random(1);
    let model_a = a.model();
    let others = [
        ("twin (every symmetry)", a.twin(2).model()),
        ("perturbed (10 % noise)", a.perturbed(3, 0.1).model()),
        ("unrelated", Parts::random(4).model()),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    let tokens: Vec<usize> = (0..CONTEXT).map(|_| rng.random_range(0..VOCAB)).collect();
    let one_hot = DMatrix::from_fn(CONTEXT, VOCAB, |s, v| f64::from(u8::from(tokens[s] == v)));
    let logits = model_a.forward_sequence(&one_hot)?;
    let twin_logits = others[0].1.forward_sequence(&one_hot)?;
    let gap = (&logits - &twin_logits).amax() / logits.amax();
    assert!(gap < 1e-12, "the twin computes another function: {gap:e}");

    let metric = TensorSimilarity::new().with_context(CONTEXT)?;
    println!(
        "A: {LAYERS}-layer bilinear-attention LM, vocabulary {VOCAB}, stream {STREAM}, \
         {HEADS} heads (e = {QK}, e_v = {VALUE}), rotary, causal, context {CONTEXT}"
    );
    println!("twin's logits on tokens {tokens:?} differ by {gap:.1e} (relative)\n");
    println!(
        "{:<24} {:>18} {:>14}",
        "B", "tensor similarity", "weight cosine"
    );
    for (name, b) in &others {
        let tensor = metric.similarity(&model_a, b)?;
        let weights = weight_cosine(&model_a, b)?;
        println!("{name:<24} {tensor:>18.9} {weights:>14.6}");
    }
    let twin = metric.similarity(&model_a, &others[0].1)?;
    assert!((twin - 1.0).abs() < 1e-9, "the twin's similarity is {twin}");
    Ok(())
}
