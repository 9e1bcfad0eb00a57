//! The classifier `f(x) = W((Lx) ∘ (Rx))`: one bilinear layer without bias
//! and a linear head, its softmax cross-entropy with hand-derived
//! gradients, and Adam.

use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::{Bilinear, Linear, Model};

/// The weights, in the shapes PyTorch's `bi_linear` (fused `[L; R]`) and
/// `projection` layers store.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// `L`, `h × d`.
    pub left: DMatrix<f64>,
    /// `R`, `h × d`.
    pub right: DMatrix<f64>,
    /// `W`, `classes × h`.
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
    /// Gaussian weights with standard deviation `gain / √fan_in`: `fan_in`
    /// is `d` for `L` and `R`, `h` for `W`.
    pub fn init(d: usize, hidden: usize, classes: usize, gain: f64, seed: u64) -> Self {
        // A stream of its own, apart from the batches' (the same seed).
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut gaussian = |rows: usize, cols: usize, std: f64| {
            DMatrix::from_fn(rows, cols, |_, _| {
                std * rng.sample::<f64, _>(StandardNormal)
            })
        };
        let s_in = gain / (d as f64).sqrt();
        let s_out = gain / (hidden as f64).sqrt();
        let left = gaussian(hidden, d, s_in);
        let right = gaussian(hidden, d, s_in);
        let proj = gaussian(classes, hidden, s_out);
        Self { left, right, proj }
    }

    /// The zero weights of the same shapes.
    pub fn zeros_like(&self) -> Self {
        let z = |m: &DMatrix<f64>| DMatrix::zeros(m.nrows(), m.ncols());
        Self {
            left: z(&self.left),
            right: z(&self.right),
            proj: z(&self.proj),
        }
    }

    /// All weights, in a fixed order.
    pub fn tensors(&self) -> [&DMatrix<f64>; 3] {
        [&self.left, &self.right, &self.proj]
    }

    /// All weights, mutably, in the order of [`tensors`](Self::tensors).
    pub fn tensors_mut(&mut self) -> [&mut DMatrix<f64>; 3] {
        [&mut self.left, &mut self.right, &mut self.proj]
    }

    /// The logits of every image (columns of `x`), `classes × N`.
    pub fn logits(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let u = (&self.left * x).component_mul(&(&self.right * x));
        &self.proj * u
    }

    /// The argmax class of each column of `x`.
    pub fn predict(&self, x: &DMatrix<f64>) -> Vec<usize> {
        self.logits(x).column_iter().map(|c| c.argmax().0).collect()
    }

    /// The accuracy on the images of each class (`NaN` for a class
    /// without images).
    pub fn class_accuracy(&self, x: &DMatrix<f64>, y: &[usize]) -> Vec<f64> {
        let classes = self.proj.nrows();
        let (mut right, mut total) = (vec![0usize; classes], vec![0usize; classes]);
        for (p, &label) in self.predict(x).into_iter().zip(y) {
            total[label] += 1;
            right[label] += usize::from(p == label);
        }
        right
            .iter()
            .zip(&total)
            .map(|(&r, &t)| {
                if t == 0 {
                    f64::NAN
                } else {
                    r as f64 / t as f64
                }
            })
            .collect()
    }

    /// Mean cross-entropy and accuracy of the images `x` with labels `y`.
    pub fn evaluate(&self, x: &DMatrix<f64>, y: &[usize]) -> Metrics {
        let mut z = self.logits(x);
        let mut m = Metrics::default();
        for (i, &label) in y.iter().enumerate() {
            let (loss, right) = cross_entropy(z.column_mut(i).as_mut_slice(), label, None);
            m.loss += loss;
            m.accuracy += f64::from(u8::from(right));
        }
        let n = y.len().max(1) as f64;
        m.loss /= n;
        m.accuracy /= n;
        m
    }

    /// Metrics of the batch and the gradient of its mean cross-entropy.
    ///
    /// With `l = Lx`, `r = Rx`, `u = l ∘ r`, `z = W u` and
    /// `g = (softmax(z) − e_y)/N` (the gradient of the mean loss in `z`),
    /// summed over the batch: `∂/∂W = g uᵀ`, `∂/∂u = Wᵀ g`,
    /// `∂/∂L = ((Wᵀ g) ∘ r) xᵀ` and `∂/∂R = ((Wᵀ g) ∘ l) xᵀ`.
    pub fn loss_and_gradient(&self, x: &DMatrix<f64>, y: &[usize]) -> (Metrics, Params) {
        let l = &self.left * x;
        let r = &self.right * x;
        let u = l.component_mul(&r);
        let mut g = &self.proj * &u;
        let mut m = Metrics::default();
        let inv_n = 1.0 / y.len() as f64;
        for (i, &label) in y.iter().enumerate() {
            let (loss, right) = cross_entropy(g.column_mut(i).as_mut_slice(), label, Some(inv_n));
            m.loss += loss;
            m.accuracy += f64::from(u8::from(right));
        }
        m.loss *= inv_n;
        m.accuracy *= inv_n;
        // Explicit transposes keep every product on nalgebra's GEMM path.
        let xt = x.transpose();
        let du = self.proj.transpose() * &g;
        let grad = Params {
            left: du.component_mul(&r) * &xt,
            right: du.component_mul(&l) * &xt,
            proj: &g * u.transpose(),
        };
        (m, grad)
    }

    /// The model in the crate's terms: a bilinear block without down
    /// projection, then a linear block.
    pub fn to_model(&self) -> tensor_similarity::Result<Model<f64>> {
        Model::builder()
            .block(Bilinear::new(self.left.clone(), self.right.clone())?)
            .block(Linear::new(self.proj.clone(), None)?)
            .build()
    }
}

/// The cross-entropy of `logits` against class `y` and whether the argmax
/// is `y` (the first maximum on ties); with `grad_scale = Some(c)`,
/// overwrites `logits` with `c · (softmax − e_y)`.
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

/// Adam's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Step size.
    pub learning_rate: f64,
    /// First-moment decay `β₁`.
    pub beta1: f64,
    /// Second-moment decay `β₂`.
    pub beta2: f64,
    /// `ε`.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Adam (Kingma & Ba) with bias correction, no weight decay.
#[derive(Clone, Debug)]
pub struct Adam {
    m: Params,
    v: Params,
    t: i32,
}

impl Adam {
    /// Zero moments for weights shaped like `params`.
    pub fn new(params: &Params) -> Self {
        Self {
            m: params.zeros_like(),
            v: params.zeros_like(),
            t: 0,
        }
    }

    /// One update of `params` with `grad`.
    pub fn step(&mut self, cfg: &AdamConfig, params: &mut Params, grad: &Params) {
        self.t += 1;
        let c1 = 1.0 - cfg.beta1.powi(self.t);
        let c2 = 1.0 - cfg.beta2.powi(self.t);
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
                *theta -= cfg.learning_rate * (*m / c1) / ((*v / c2).sqrt() + cfg.eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;

    /// The mean cross-entropy by the definition, image by image: explicit
    /// `Lx`, `Rx`, explicit log-softmax.
    fn naive_loss(p: &Params, x: &DMatrix<f64>, y: &[usize]) -> f64 {
        let mut total = 0.0;
        for (i, &label) in y.iter().enumerate() {
            let xi: DVector<f64> = x.column(i).into_owned();
            let z = &p.proj * (&p.left * &xi).component_mul(&(&p.right * &xi));
            let lse = z.iter().map(|v| v.exp()).sum::<f64>().ln();
            total += lse - z[label];
        }
        total / y.len() as f64
    }

    fn batch() -> (DMatrix<f64>, Vec<usize>) {
        let x = DMatrix::from_fn(6, 9, |i, j| ((i * 7 + j * 3) % 11) as f64 / 10.0);
        let y = (0..9).map(|j| j % 4).collect();
        (x, y)
    }

    #[test]
    fn gradient_matches_central_differences() {
        let (x, y) = batch();
        let params = Params::init(6, 5, 4, 1.5, 11);
        let (m, grad) = params.loss_and_gradient(&x, &y);
        assert!((m.loss - naive_loss(&params, &x, &y)).abs() < 1e-12);
        let h = 1e-5;
        for t in 0..3 {
            let (rows, cols) = params.tensors()[t].shape();
            for j in 0..cols {
                for i in 0..rows {
                    let mut plus = params.clone();
                    plus.tensors_mut()[t][(i, j)] += h;
                    let mut minus = params.clone();
                    minus.tensors_mut()[t][(i, j)] -= h;
                    let fd = (naive_loss(&plus, &x, &y) - naive_loss(&minus, &x, &y)) / (2.0 * h);
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
    fn the_library_model_computes_the_same_logits() {
        let (x, _) = batch();
        let params = Params::init(6, 5, 4, 1.0, 3);
        let model = params.to_model().unwrap();
        let ours = params.logits(&x);
        let theirs = model.forward_rows(&x.transpose()).unwrap();
        assert!((ours.transpose() - theirs).amax() < 1e-12);
    }

    #[test]
    fn adam_reduces_the_loss() {
        let (x, y) = batch();
        let mut params = Params::init(6, 5, 4, 1.0, 5);
        let start = params.evaluate(&x, &y).loss;
        let mut adam = Adam::new(&params);
        let cfg = AdamConfig {
            learning_rate: 1e-2,
            ..AdamConfig::default()
        };
        for _ in 0..200 {
            let (_, g) = params.loss_and_gradient(&x, &y);
            adam.step(&cfg, &mut params, &g);
        }
        let end = params.evaluate(&x, &y);
        assert!(end.loss < 0.2 * start, "{start} -> {end:?}");
    }
}
