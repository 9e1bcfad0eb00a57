//! Tensor similarity sees through symmetries that fool weight comparisons.
//!
//! Builds a small residual bilinear network `A` (embed → two bilinear blocks
//! with residual → head, fixed seeds) and three others:
//!
//! * a **twin**: `A` with its hidden units permuted, rescaled
//!   (`L_r → αL_r`, `R_r → βR_r`, `D_{:,r} → D_{:,r}/(αβ)`), half of its
//!   units' factors swapped (`L_r ↔ R_r`) and an affine change of basis
//!   `x ↦ Px + t` of the residual stream: the same function, different weights;
//! * a **perturbed** copy: every weight of `A` plus 10 % noise;
//! * an **unrelated** model of the same shapes.
//!
//! and prints, for each pair, the tensor similarity and the weight cosine,
//! then every other metric of the crate: the Gaussian functional similarity
//! (exact: the Wick sum over the legs of the two bilinear blocks), and on
//! 4096 standard normal inputs the empirical output cosine, the mean
//! per-sample cosine and linear CKA. The twin is identical in function
//! (tensor similarity 1 to rounding) while its weights look unrelated.
//!
//! Run with `cargo run --release --example quickstart`.

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::baseline::{linear_cka, mean_sample_cosine, output_cosine, sample_gaussian};
use tensor_similarity::{Bilinear, GaussianSimilarity, Linear, Model, similarity, weight_cosine};

const INPUT: usize = 8;
const STREAM: usize = 12;
const HIDDEN: usize = 24;
const OUTPUT: usize = 4;
const DEPTH: usize = 2;
const RESIDUAL: f64 = 0.5;

fn normal(rng: &mut StdRng, rows: usize, cols: usize, std: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        std * rng.sample::<f64, _>(StandardNormal)
    })
}

fn normal_vector(rng: &mut StdRng, len: usize, std: f64) -> DVector<f64> {
    DVector::from_fn(len, |_, _| std * rng.sample::<f64, _>(StandardNormal))
}

/// The parameters of the network, kept as plain parts so they can be transformed.
#[derive(Clone)]
struct Parts {
    embed: (DMatrix<f64>, DVector<f64>),
    blocks: Vec<Bilinear>,
    head: (DMatrix<f64>, DVector<f64>),
}

impl Parts {
    fn random(seed: u64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let embed = (
            normal(&mut rng, STREAM, INPUT, 1.0 / (INPUT as f64).sqrt()),
            normal_vector(&mut rng, STREAM, 0.1),
        );
        let blocks = (0..DEPTH)
            .map(|_| {
                let std = 1.0 / (STREAM as f64).sqrt();
                Bilinear::builder(
                    normal(&mut rng, HIDDEN, STREAM, std),
                    normal(&mut rng, HIDDEN, STREAM, std),
                )
                .left_bias(normal_vector(&mut rng, HIDDEN, 0.1))
                .right_bias(normal_vector(&mut rng, HIDDEN, 0.1))
                .down(normal(
                    &mut rng,
                    STREAM,
                    HIDDEN,
                    1.0 / (HIDDEN as f64).sqrt(),
                ))
                .down_bias(normal_vector(&mut rng, STREAM, 0.1))
                .residual(RESIDUAL)
                .build()
                .expect("shapes are consistent by construction")
            })
            .collect();
        let head = (
            normal(&mut rng, OUTPUT, STREAM, 1.0 / (STREAM as f64).sqrt()),
            normal_vector(&mut rng, OUTPUT, 0.1),
        );
        Parts {
            embed,
            blocks,
            head,
        }
    }

    fn model(&self) -> Model {
        let mut builder = Model::builder()
            .block(Linear::new(self.embed.0.clone(), Some(self.embed.1.clone())).unwrap());
        for block in &self.blocks {
            builder = builder.block(block.clone());
        }
        builder
            .block(Linear::new(self.head.0.clone(), Some(self.head.1.clone())).unwrap())
            .build()
            .unwrap()
    }

    /// The same function through every symmetry of SPEC §2.
    fn twin(&self, seed: u64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut twin = self.clone();
        // Hidden units: permute, rescale, swap the factors of every other unit.
        for block in &mut twin.blocks {
            let mut order: Vec<usize> = (0..HIDDEN).collect();
            for i in (1..HIDDEN).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            let (l, r, d) = (block.left(), block.right(), block.down().unwrap());
            let (bl, br) = (block.left_bias().unwrap(), block.right_bias().unwrap());
            let (mut l2, mut r2, mut d2) = (l.clone(), r.clone(), d.clone());
            let (mut bl2, mut br2) = (bl.clone(), br.clone());
            for (new, &old) in order.iter().enumerate() {
                let (alpha, beta) = (rng.random_range(0.3..3.0), rng.random_range(0.3..3.0));
                let swap = new % 2 == 0;
                let (lo, ro, blo, bro) = if swap { (r, l, br, bl) } else { (l, r, bl, br) };
                l2.set_row(new, &(lo.row(old) * alpha));
                r2.set_row(new, &(ro.row(old) * beta));
                bl2[new] = blo[old] * alpha;
                br2[new] = bro[old] * beta;
                d2.set_column(new, &(d.column(old) / (alpha * beta)));
            }
            *block = Bilinear::builder(l2, r2)
                .left_bias(bl2)
                .right_bias(br2)
                .down(d2)
                .down_bias(block.down_bias().cloned())
                .residual(RESIDUAL)
                .build()
                .unwrap();
        }
        // Residual stream: x ↦ P x + t, written by embed and every block,
        // read by every block and the head.
        let p = DMatrix::from_fn(STREAM, STREAM, |i, j| if i == j { 1.0 } else { 0.0 })
            + normal(&mut rng, STREAM, STREAM, 0.3);
        let p_inv = p
            .clone()
            .try_inverse()
            .expect("I + small noise is invertible");
        let t = normal_vector(&mut rng, STREAM, 0.1);
        twin.embed = (&p * &twin.embed.0, &p * &twin.embed.1 + &t);
        for block in &mut twin.blocks {
            let read = |w: &DMatrix<f64>, b: &DVector<f64>| (w * &p_inv, b - w * &p_inv * &t);
            let (l, bl) = read(block.left(), block.left_bias().unwrap());
            let (r, br) = read(block.right(), block.right_bias().unwrap());
            let d = &p * block.down().unwrap();
            let bd = &p * block.down_bias().unwrap() + &t;
            *block = Bilinear::builder(l, r)
                .left_bias(bl)
                .right_bias(br)
                .down(d)
                .down_bias(bd)
                .residual(RESIDUAL)
                .build()
                .unwrap();
        }
        twin.head = (
            &twin.head.0 * &p_inv,
            &twin.head.1 - &twin.head.0 * &p_inv * &t,
        );
        twin
    }

    /// Every parameter plus Gaussian noise of `relative` times its block's RMS.
    fn perturbed(&self, seed: u64, relative: f64) -> Parts {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut noisy = |m: &DMatrix<f64>| {
            let rms = m.norm() / (m.len() as f64).sqrt();
            m + normal(&mut rng, m.nrows(), m.ncols(), relative * rms)
        };
        let mut out = self.clone();
        out.embed.0 = noisy(&out.embed.0);
        out.head.0 = noisy(&out.head.0);
        for block in &mut out.blocks {
            let (l, r, d) = (
                noisy(block.left()),
                noisy(block.right()),
                noisy(block.down().unwrap()),
            );
            *block = block.to_builder_with_factors(l, r).down(d).build().unwrap();
        }
        out
    }
}

fn main() -> Result<(), tensor_similarity::Error> {
    let a = Parts::random(1);
    let models = [
        ("A", a.model()),
        ("twin", a.twin(2).model()),
        ("perturbed", a.perturbed(3, 0.1).model()),
        ("unrelated", Parts::random(4).model()),
    ];
    let (_, model_a) = &models[0];
    println!(
        "A: {} → {} → {}, {} bilinear blocks of hidden width {} (residual {}), {} parameters, {} input legs\n",
        INPUT,
        STREAM,
        OUTPUT,
        DEPTH,
        HIDDEN,
        RESIDUAL,
        model_a.parameter_count(),
        model_a.degree()
    );
    println!(
        "{:<18} {:>18} {:>14}",
        "pair", "tensor similarity", "weight cosine"
    );
    let mut results = Vec::new();
    for (name, other) in &models[1..] {
        let tensor = similarity(model_a, other)?;
        let weight = weight_cosine(model_a, other)?;
        println!(
            "{:<18} {:>18.12} {:>14.6}",
            format!("A vs {name}"),
            tensor,
            weight
        );
        results.push((tensor, weight));
    }
    let (twin, perturbed, unrelated) = (results[0], results[1], results[2]);
    // What the table shows, asserted: the twin is the same function with
    // unrelated-looking weights; perturbation and unrelatedness rank as expected.
    assert!(
        (twin.0 - 1.0).abs() < 1e-9,
        "the twin computes the same function"
    );
    assert!(twin.1 < 0.5, "yet its weights look unrelated");
    assert!(unrelated.0 < perturbed.0 && perturbed.0 < twin.0);

    // Every other metric, on the same pairs.
    let gaussian = GaussianSimilarity::new();
    let mut rng = StdRng::seed_from_u64(5);
    let inputs = sample_gaussian(
        &mut rng,
        &DVector::zeros(INPUT),
        &DMatrix::identity(INPUT, INPUT),
        4096,
    )?;
    println!(
        "\n{:<18} {:>10} {:>8} {:>14} {:>12} {:>8}",
        "pair", "gaussian", "exact", "output cosine", "per-sample", "CKA"
    );
    for (name, other) in &models[1..] {
        let report = gaussian.report(model_a, other)?;
        println!(
            "{:<18} {:>10.6} {:>8} {:>14.6} {:>12.6} {:>8.4}",
            format!("A vs {name}"),
            report.similarity,
            report.exact,
            output_cosine(model_a, other, &inputs)?,
            mean_sample_cosine(model_a, other, &inputs)?,
            linear_cka(model_a, other, &inputs)?
        );
    }
    // The forward pass agrees too, on a point.
    let x = DVector::from_fn(INPUT, |i, _| (i as f64 * 0.7).sin());
    let (ya, yt) = (model_a.forward(&x)?, models[1].1.forward(&x)?);
    println!(
        "\nf_A(x) − f_twin(x) at a test point: max |Δ| = {:.1e}",
        (ya - yt).amax()
    );
    Ok(())
}
