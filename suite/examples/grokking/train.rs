//! The training engine: modular addition `(a + b) mod P` learned by one
//! bilinear layer and a linear projection, trained with full-batch AdamW on
//! a fixed fraction of all `P²` pairs.
//!
//! The input is the two one-hot tokens concatenated, `x = e_a ⊕ e_b ∈ R^{2P}`,
//! so `Lx = L[:, a] + L[:, P + b]`: the forward pass gathers two columns
//! instead of multiplying by `x`, and the backward pass scatters the
//! gradient back into the same two columns. Every gradient is derived by
//! hand (see [`Params::loss_and_gradient`]) and checked against central
//! finite differences in the tests.

use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The modulus `P` (the vocabulary and the number of classes).
    pub p: usize,
    /// Width `h` of the bilinear layer.
    pub hidden: usize,
    /// Fraction of the `P²` pairs used for training; the rest is held out.
    pub train_fraction: f64,
    /// AdamW step size.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f64,
    /// Adam's first-moment decay `β₁`.
    pub beta1: f64,
    /// Adam's second-moment decay `β₂`.
    pub beta2: f64,
    /// Adam's `ε`.
    pub eps: f64,
    /// Number of full-batch steps.
    pub steps: usize,
    /// Standard deviation of the initial weights times `√fan_in`.
    pub init_gain: f64,
    /// Seed of the split and of the initial weights.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            p: 113,
            hidden: 64,
            train_fraction: 0.3,
            learning_rate: 1e-3,
            weight_decay: 1.0,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            steps: 10_000,
            init_gain: 1.0,
            seed: 0,
        }
    }
}

/// A set of pairs `(a, b)` with their labels `(a + b) mod P`.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// First tokens.
    pub a: Vec<usize>,
    /// Second tokens.
    pub b: Vec<usize>,
    /// Labels.
    pub y: Vec<usize>,
}

impl Batch {
    fn from_pairs(p: usize, pairs: &[(usize, usize)]) -> Self {
        let (a, b): (Vec<_>, Vec<_>) = pairs.iter().copied().unzip();
        let y = pairs.iter().map(|&(a, b)| (a + b) % p).collect();
        Self { a, b, y }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }
}

/// The seeded train / held-out split of all `P²` pairs, and all pairs in
/// row-major order `(a, b) ↦ a·P + b` for the output metrics.
#[derive(Clone, Debug)]
pub struct Split {
    /// The training pairs.
    pub train: Batch,
    /// The held-out pairs.
    pub test: Batch,
    /// Every pair.
    pub all: Batch,
}

impl Split {
    /// Shuffles the pairs with `seed` and keeps `round(fraction · P²)` of
    /// them (at least one, at most all but one) for training.
    pub fn new(p: usize, fraction: f64, seed: u64) -> Self {
        let all: Vec<(usize, usize)> = (0..p).flat_map(|a| (0..p).map(move |b| (a, b))).collect();
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut StdRng::seed_from_u64(seed));
        let n = ((fraction * all.len() as f64).round() as usize).clamp(1, all.len() - 1);
        Self {
            train: Batch::from_pairs(p, &shuffled[..n]),
            test: Batch::from_pairs(p, &shuffled[n..]),
            all: Batch::from_pairs(p, &all),
        }
    }
}

/// The weights, in the shapes PyTorch's `bi_linear` (fused `[L; R]`) and
/// `projection` layers store, without biases: with one-hot inputs a bias on
/// `Lx` is the same function as adding it to every column of one token's
/// half of `L`, so biases add parameters but no expressivity.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// `L`, `h × 2P`.
    pub left: DMatrix<f64>,
    /// `R`, `h × 2P`.
    pub right: DMatrix<f64>,
    /// `W`, `P × h`.
    pub proj: DMatrix<f64>,
}

/// Loss and accuracy of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy in nats.
    pub loss: f64,
    /// Fraction of argmax predictions that are right.
    pub accuracy: f64,
}

impl Params {
    /// Gaussian weights with standard deviation `gain / √fan_in`, where
    /// `fan_in` is `2P` for `L` and `R` (as PyTorch would count it; a one-hot
    /// pair actually reads two columns) and `h` for `W`.
    pub fn init(p: usize, hidden: usize, gain: f64, seed: u64) -> Self {
        // A different stream from the split's so that changing one does not
        // move the other.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut gaussian = |rows: usize, cols: usize, std: f64| {
            DMatrix::from_fn(rows, cols, |_, _| {
                std * rng.sample::<f64, _>(StandardNormal)
            })
        };
        let s_in = gain / ((2 * p) as f64).sqrt();
        let s_out = gain / (hidden as f64).sqrt();
        let left = gaussian(hidden, 2 * p, s_in);
        let right = gaussian(hidden, 2 * p, s_in);
        let proj = gaussian(p, hidden, s_out);
        Self { left, right, proj }
    }

    /// The zero tensor of the same shapes.
    pub fn zeros_like(&self) -> Self {
        let z = |m: &DMatrix<f64>| DMatrix::zeros(m.nrows(), m.ncols());
        Self {
            left: z(&self.left),
            right: z(&self.right),
            proj: z(&self.proj),
        }
    }

    /// The modulus `P`.
    pub fn p(&self) -> usize {
        self.proj.nrows()
    }

    /// Width `h` of the bilinear layer.
    pub fn hidden(&self) -> usize {
        self.proj.ncols()
    }

    /// All weights, in a fixed order.
    pub fn tensors(&self) -> [&DMatrix<f64>; 3] {
        [&self.left, &self.right, &self.proj]
    }

    /// All weights, mutably, in the order of [`tensors`](Self::tensors).
    pub fn tensors_mut(&mut self) -> [&mut DMatrix<f64>; 3] {
        [&mut self.left, &mut self.right, &mut self.proj]
    }

    /// `Lx` and `Rx` for every example, as columns (`h × N` each).
    fn streams(&self, batch: &Batch) -> (DMatrix<f64>, DMatrix<f64>) {
        let (p, h, n) = (self.p(), self.hidden(), batch.len());
        let mut l = DMatrix::zeros(h, n);
        let mut r = DMatrix::zeros(h, n);
        for (i, (&a, &b)) in batch.a.iter().zip(&batch.b).enumerate() {
            l.column_mut(i)
                .copy_from(&(self.left.column(a) + self.left.column(p + b)));
            r.column_mut(i)
                .copy_from(&(self.right.column(a) + self.right.column(p + b)));
        }
        (l, r)
    }

    /// The logits `W((Lx) ∘ (Rx))` for every example, as columns (`P × N`).
    pub fn logits(&self, batch: &Batch) -> DMatrix<f64> {
        let (l, r) = self.streams(batch);
        &self.proj * l.component_mul(&r)
    }

    /// Mean cross-entropy and accuracy on `batch`.
    pub fn evaluate(&self, batch: &Batch) -> Metrics {
        let mut z = self.logits(batch);
        let mut m = Metrics::default();
        for (i, &y) in batch.y.iter().enumerate() {
            let (loss, right) = cross_entropy(z.column_mut(i).as_mut_slice(), y, None);
            m.loss += loss;
            m.accuracy += f64::from(u8::from(right));
        }
        let n = batch.len() as f64;
        m.loss /= n;
        m.accuracy /= n;
        m
    }

    /// Metrics of `batch` and the gradient of its mean cross-entropy.
    ///
    /// With `l = Lx`, `r = Rx`, `u = l ∘ r`, `z = W u` and
    /// `g = (softmax(z) − e_y)/N` (the gradient of the mean loss in `z`):
    /// `∂/∂W = Σ g uᵀ`, `∂/∂u = Wᵀ g`, `∂/∂l = (Wᵀ g) ∘ r`,
    /// `∂/∂r = (Wᵀ g) ∘ l`, and since `l = L[:, a] + L[:, P+b]` each example
    /// adds `∂/∂l` to both of its columns of `L` (the same for `R`).
    pub fn loss_and_gradient(&self, batch: &Batch) -> (Metrics, Params) {
        let (p, n) = (self.p(), batch.len());
        let (l, r) = self.streams(batch);
        let u = l.component_mul(&r);
        let mut g = &self.proj * &u;
        let mut m = Metrics::default();
        let inv_n = 1.0 / n as f64;
        for (i, &y) in batch.y.iter().enumerate() {
            let mut col = g.column_mut(i);
            let (loss, right) = cross_entropy(col.as_mut_slice(), y, Some(inv_n));
            m.loss += loss;
            m.accuracy += f64::from(u8::from(right));
        }
        m.loss *= inv_n;
        m.accuracy *= inv_n;

        // Explicit transposes keep every product on nalgebra's GEMM path.
        let proj = &g * u.transpose();
        let du = self.proj.transpose() * &g;
        let dl = du.component_mul(&r);
        let dr = du.component_mul(&l);
        let mut grad = Params {
            left: DMatrix::zeros(self.left.nrows(), self.left.ncols()),
            right: DMatrix::zeros(self.right.nrows(), self.right.ncols()),
            proj,
        };
        for (i, (&a, &b)) in batch.a.iter().zip(&batch.b).enumerate() {
            for (dst, src) in [(&mut grad.left, &dl), (&mut grad.right, &dr)] {
                for k in 0..src.nrows() {
                    dst[(k, a)] += src[(k, i)];
                    dst[(k, p + b)] += src[(k, i)];
                }
            }
        }
        (m, grad)
    }
}

/// The cross-entropy of `logits` against class `y` and whether the argmax
/// is `y`; with `grad_scale = Some(c)`, overwrites `logits` with
/// `c · (softmax − e_y)`.
fn cross_entropy(logits: &mut [f64], y: usize, grad_scale: Option<f64>) -> (f64, bool) {
    let (mut max, mut arg) = (f64::NEG_INFINITY, 0);
    for (k, &z) in logits.iter().enumerate() {
        if z > max {
            (max, arg) = (z, k);
        }
    }
    let sum: f64 = logits.iter().map(|&z| (z - max).exp()).sum();
    let lse = max + sum.ln();
    let loss = lse - logits[y];
    if let Some(c) = grad_scale {
        for z in logits.iter_mut() {
            *z = c * (*z - lse).exp();
        }
        logits[y] -= c;
    }
    (loss, arg == y)
}

/// AdamW (Loshchilov & Hutter): Adam on the loss gradient, plus a decoupled
/// decay `θ ← θ − lr·λ·θ`.
#[derive(Clone, Debug)]
pub struct AdamW {
    m: Params,
    v: Params,
    t: i32,
}

impl AdamW {
    /// Zero moments for weights shaped like `params`.
    pub fn new(params: &Params) -> Self {
        Self {
            m: params.zeros_like(),
            v: params.zeros_like(),
            t: 0,
        }
    }

    /// One update of `params` with `grad`.
    pub fn step(&mut self, cfg: &Config, params: &mut Params, grad: &Params) {
        self.t += 1;
        let c1 = 1.0 - cfg.beta1.powi(self.t);
        let c2 = 1.0 - cfg.beta2.powi(self.t);
        let decay = 1.0 - cfg.learning_rate * cfg.weight_decay;
        let (ms, vs) = (self.m.tensors_mut(), self.v.tensors_mut());
        for (((theta, g), m), v) in params
            .tensors_mut()
            .into_iter()
            .zip(grad.tensors())
            .zip(ms)
            .zip(vs)
        {
            for (((theta, &g), m), v) in theta
                .iter_mut()
                .zip(g.iter())
                .zip(m.iter_mut())
                .zip(v.iter_mut())
            {
                *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * g;
                *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * g * g;
                let step = (*m / c1) / ((*v / c2).sqrt() + cfg.eps);
                *theta = decay * *theta - cfg.learning_rate * step;
            }
        }
    }
}

/// One row of the training curves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Optimiser steps taken.
    pub step: usize,
    /// Metrics on the training pairs.
    pub train: Metrics,
    /// Metrics on the held-out pairs.
    pub test: Metrics,
    /// `‖θ‖₂` of all weights.
    pub weight_norm: f64,
}

/// Runs `cfg.steps` full-batch AdamW steps from the seeded initialisation.
///
/// `on_step(step, params)` is called before the first step (`step = 0`) and
/// after every step; the caller decides what to record, and an error from
/// it stops the run.
pub fn train<E>(
    cfg: &Config,
    split: &Split,
    mut on_step: impl FnMut(usize, &Params) -> Result<(), E>,
) -> Result<Params, E> {
    let mut params = Params::init(cfg.p, cfg.hidden, cfg.init_gain, cfg.seed);
    let mut opt = AdamW::new(&params);
    on_step(0, &params)?;
    for step in 1..=cfg.steps {
        let (_, grad) = params.loss_and_gradient(&split.train);
        opt.step(cfg, &mut params, &grad);
        on_step(step, &params)?;
    }
    Ok(params)
}

/// A curve point for `params` after `step` steps.
pub fn measure(step: usize, params: &Params, split: &Split) -> CurvePoint {
    let weight_norm = params
        .tensors()
        .iter()
        .map(|t| t.norm_squared())
        .sum::<f64>()
        .sqrt();
    CurvePoint {
        step,
        train: params.evaluate(&split.train),
        test: params.evaluate(&split.test),
        weight_norm,
    }
}

/// `count` distinct steps in `0..=total`, log-spaced in `step + offset`:
/// dense early, sparse late. The offset keeps the first few dozen
/// checkpoints from all landing on the first few steps, where nothing has
/// happened yet. Always contains `0` and `total`.
pub fn log_schedule(total: usize, count: usize, offset: usize) -> Vec<usize> {
    // At most every step; at least the two ends (one when `total = 0`).
    let count = count.max(2).min(total + 1);
    let c = offset.max(1) as f64;
    let ratio = (total as f64 + c) / c;
    let mut steps = vec![0];
    for i in 1..count {
        let ideal = c * ratio.powf(i as f64 / (count - 1) as f64) - c;
        let prev = steps[steps.len() - 1];
        // Leave room for the steps still to come.
        let room = total - (count - 1 - i);
        steps.push((ideal.round() as usize).max(prev + 1).min(room));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> (Config, Split) {
        let cfg = Config {
            p: 7,
            hidden: 5,
            steps: 60,
            learning_rate: 1e-2,
            ..Config::default()
        };
        let split = Split::new(cfg.p, 0.5, 3);
        (cfg, split)
    }

    /// The mean cross-entropy recomputed from scratch by the definition:
    /// explicit one-hot input, explicit `Lx`, `Rx`, explicit log-softmax.
    fn naive_loss(params: &Params, batch: &Batch) -> f64 {
        let p = params.p();
        let mut total = 0.0;
        for i in 0..batch.len() {
            let mut x = nalgebra::DVector::zeros(2 * p);
            x[batch.a[i]] = 1.0;
            x[p + batch.b[i]] = 1.0;
            let z = &params.proj * (&params.left * &x).component_mul(&(&params.right * &x));
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            total += lse - z[batch.y[i]];
        }
        total / batch.len() as f64
    }

    #[test]
    fn gradient_matches_central_differences() {
        let (cfg, split) = small();
        let params = Params::init(cfg.p, cfg.hidden, 2.0, 11);
        let (m, grad) = params.loss_and_gradient(&split.train);
        assert!((m.loss - naive_loss(&params, &split.train)).abs() < 1e-12);
        let h = 1e-5;
        for t in 0..3 {
            let (rows, cols) = params.tensors()[t].shape();
            for j in 0..cols {
                for i in 0..rows {
                    let mut plus = params.clone();
                    plus.tensors_mut()[t][(i, j)] += h;
                    let mut minus = params.clone();
                    minus.tensors_mut()[t][(i, j)] -= h;
                    let fd = (naive_loss(&plus, &split.train) - naive_loss(&minus, &split.train))
                        / (2.0 * h);
                    let an = grad.tensors()[t][(i, j)];
                    // Central differences err by O(h²·f''') ≈ 1e-10 plus
                    // rounding ε·f/h ≈ 1e-11 at these magnitudes.
                    assert!(
                        (fd - an).abs() < 1e-7 * (1.0 + an.abs()),
                        "tensor {t} ({i}, {j}): analytic {an}, numeric {fd}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_is_a_partition() {
        let split = Split::new(11, 0.3, 5);
        assert_eq!(split.train.len(), 36);
        let mut seen: Vec<_> = split
            .train
            .a
            .iter()
            .chain(&split.test.a)
            .zip(split.train.b.iter().chain(&split.test.b))
            .map(|(&a, &b)| a * 11 + b)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..121).collect::<Vec<_>>());
    }

    #[test]
    fn schedule_is_increasing_and_spans_the_run() {
        for (total, count, offset) in [
            (10_000, 100, 200),
            (10_000, 100, 0),
            (50, 100, 5),
            (7, 3, 1),
            (1, 5, 0),
            (0, 5, 3),
        ] {
            let s = log_schedule(total, count, offset);
            assert_eq!(s.len(), count.min(total + 1));
            assert_eq!((s[0], s[s.len() - 1]), (0, total));
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        }
    }

    #[test]
    fn training_reduces_the_loss() {
        let (cfg, split) = small();
        let cfg = Config {
            hidden: 8,
            steps: 150,
            ..cfg
        };
        let start = Params::init(cfg.p, cfg.hidden, cfg.init_gain, cfg.seed).evaluate(&split.train);
        let end = train(&cfg, &split, |_, _| Ok::<_, ()>(()))
            .unwrap()
            .evaluate(&split.train);
        assert!(end.loss < 0.5 * start.loss, "{start:?} -> {end:?}");
    }
}
