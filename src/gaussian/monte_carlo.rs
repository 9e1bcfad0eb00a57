//! Monte Carlo estimates of the Gaussian functional inner products
//! ([SPEC §3](crate::spec#3-gaussian-functional-similarity)): an unbiased
//! estimate of `⟨f_A,f_B⟩ = E[f_A(x)·f_B(x)]`, `⟨f_A,f_A⟩` and `⟨f_B,f_B⟩`
//! from `N` seeded draws of `x ∼ N(μ, Σ)` (rows of `X` i.i.d. for
//! sequences), for any pair of models with the same input and output
//! widths, and the standard error of their cosine.
//!
//! # Estimate and standard error
//!
//! The `N` samples are split into `B` batches of `⌊N/B⌋` or `⌈N/B⌉`
//! consecutive samples (the first `N mod B` batches one more). Batch `b`
//! sums, over its samples `x` and over every position and non-constant
//! output, the three products `f_A(x)·f_B(x)`, `|f_A(x)|²`, `|f_B(x)|²`: a
//! vector `s_b ∈ R³` over `n_b` samples. The estimates are the sample means
//! `m = Σ_b s_b / N`, unbiased for `(c, a, b) = (⟨f_A,f_B⟩, ⟨f_A,f_A⟩,
//! ⟨f_B,f_B⟩)`; the similarity is `r = c/√(ab)`. The batch sums are
//! independent, so the covariance of `m` is estimated by batch means,
//!
//! ```text
//! Ĉ = 1/(N (B−1)) · Σ_b (s_b − n_b m)(s_b − n_b m)ᵀ / n_b
//! ```
//!
//! (unbiased for unequal `n_b` too; with equal batches it is the usual
//! `Σ_b (m_b − m)(m_b − m)ᵀ / (B(B−1))` of the batch means `m_b`), and the
//! standard error of `r` by the delta method, `SE² = ∇rᵀ Ĉ ∇r` with
//! `∇r = (1/√(ab), −r/(2a), −r/(2b))`. It is first-order: it holds when the
//! relative standard errors of `a` and `b` are small, which the estimate
//! shows itself.
//!
//! # Draws
//!
//! Reproducible for a seed whatever the thread count: batch `b` draws from
//! its own stream, ChaCha8 (`rand_chacha::ChaCha8Rng::seed_from_u64(seed)`
//! then `set_stream(b)`), the batches run in parallel and are combined in
//! batch order, and the work within a batch is sequential. A batch's
//! samples are drawn in order, each as `n` rows (positions), each row as
//! `q` standard normals `ξ` (`rand_distr::StandardNormal`, `f64`, then
//! rounded to the models' scalar type):
//!
//! * in general the row is `x = μ + F ξ`, `F` the factor of `Σ` that
//!   [`with_covariance`](GaussianMonteCarlo::with_covariance) computes
//!   (`F Fᵀ = Σ` from its eigendecomposition, all-zero columns dropped, so
//!   `q` is at most `d`); without `Σ`, `x = μ + ξ` and `q = d`;
//! * when every model starts with a linear block `W_i x + c_i` and their
//!   stacked output width `w = Σ w_i` is at most half of that `q` (and at
//!   most 512), the draws are of that joint output instead: the row is
//!   `z = m + G ξ` with `m = (W_i μ + c_i)_i` and `G Gᵀ = S Σ Sᵀ`,
//!   `S = [W_1; W_2; …]`, which is the law of `(W_i x + c_i)_i`. The
//!   estimate is the same estimator; the draws (and so the value at a seed)
//!   depend on the models compared together. A language model's embedding
//!   reads a vocabulary-wide `x`: this draws `w ≪ d` normals a row instead.
//!
//! When every model ends with a linear block `U_i h + c_i` and the padded
//! widths `Σ (w_i + 1)` of what they read do not exceed the output width,
//! `f_i·f_j = h̃_iᵀ (Ũ_iᵀ Ũ_j) h̃_j` is summed through the Gram matrices of
//! those blocks (exactly, up to rounding), not through the outputs.
//!
//! # Cost
//!
//! The forward passes are batched ([`Model::forward_sequences`]): every
//! position-wise block runs as a few GEMMs over all rows of a chunk of
//! samples, attention as one GEMM per position. They compute in the
//! models' scalar type `T`; the sums of products are accumulated in `f64`.
//! Memory is bounded by the chunk (about 16 MB of activations per thread).

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::input::GaussianInput;
use crate::block::TensorBlock;
use crate::error::{Error, Result, Side};
use crate::linalg::{add_to_rows, covariance_factor, mul, mul_tn};
use crate::model::Model;
use crate::recursion::RecursiveSimilarity;
use crate::scalar::{LogScaled, Real, from_f64, to_f64};

/// The number of samples the command line draws by default (`--samples`).
pub const DEFAULT_SAMPLES: usize = 10_000;

/// The number of batches the samples are split into by default, fewer when
/// there are fewer than `2 × 100` samples (every batch holds at least two).
pub const DEFAULT_BATCHES: usize = 100;

/// The most stacked first-block width drawn directly (see the
/// [module documentation](self)): its factor costs an eigendecomposition of
/// that size.
const MAX_DRAWN_WIDTH: usize = 512;

/// The activations a chunk holds at once, per thread, in entries.
const CHUNK_ENTRIES: usize = 1 << 19;

/// Monte Carlo estimates of the Gaussian functional similarity
/// ([SPEC §3](crate::spec#3-gaussian-functional-similarity)): the sample
/// means of `f_A(x)·f_B(x)`, `|f_A(x)|²` and `|f_B(x)|²` over `N` seeded
/// draws of `x ∼ N(μ, Σ)`, and the standard error of their cosine by the
/// delta method over batch means (see the [module documentation](self)).
///
/// Any two models with the same input and output widths compare, whatever
/// their depths and block kinds; on sequences (with
/// [`with_context`](Self::with_context)) the rows of `X` are i.i.d. Where
/// [`GaussianSimilarity`](crate::GaussianSimilarity) is a Gaussian closure
/// (more than one block of order `≥ 2`), this is the unbiased reference to
/// measure it against.
///
/// As a [`RecursiveSimilarity`] (so that it plugs into
/// [`matrix`](crate::matrix) and the other code generic over metrics) the
/// inner products, norms and similarities are **estimates**: each call
/// draws its own samples from the seed, so
/// [`inner_product`](RecursiveSimilarity::inner_product) and
/// [`squared_norm`](RecursiveSimilarity::squared_norm) called apart may use
/// different draws (see the module's "Draws"), and a similarity assembled
/// from them differs from [`estimate`](Self::estimate)'s within its
/// standard error. [`matrix`](Self::matrix) compares many models on one set
/// of draws instead (each model's forward pass once per sample), and
/// [`difference`](Self::difference) four.
///
/// # Example
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{Bilinear, GaussianMonteCarlo, GaussianSimilarity, Model,
///                         RecursiveSimilarity};
///
/// // f(x) = x_1 · x_2 and g(x) = x_1 (x_1 + x_2): ⟨f,g⟩ = 1, ⟨f,f⟩ = 1, ⟨g,g⟩ = 4.
/// let f = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![0.0, 1.0])?).build()?;
/// let g = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![1.0, 1.0])?).build()?;
/// let estimate = GaussianMonteCarlo::new(20_000, 7)?.estimate(&f, &g)?;
/// let exact = GaussianSimilarity::new().similarity(&f, &g)?;
/// assert!((exact - 0.5).abs() < 1e-12);
/// assert!((estimate.similarity - exact).abs() < 4.0 * estimate.standard_error);
/// assert_eq!(estimate.samples, 20_000);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMonteCarlo {
    samples: usize,
    seed: u64,
    batches: usize,
    input: GaussianInput,
    /// `F` with `F Fᵀ = Σ`, its all-zero columns dropped: what is drawn.
    factor: Option<DMatrix<f64>>,
    context: Option<usize>,
    /// Draw a first linear block's joint output where it is cheaper.
    pub(crate) draw_first_linear: bool,
    /// Sum a last linear block's products through its Gram matrices where
    /// that is cheaper.
    pub(crate) read_out_linear: bool,
}

/// A Monte Carlo estimate of the Gaussian similarity of two models (or of
/// two directions, [`GaussianMonteCarlo::difference`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MonteCarloEstimate {
    /// The estimate of the cosine, `⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩)`
    /// from the three sample means, in `[−1, 1]` (consistent, biased at
    /// order `1/N` as any ratio of means).
    pub similarity: f64,
    /// Its standard error by the delta method over batch means.
    pub standard_error: f64,
    /// The sample mean of `f_A(x)·f_B(x)`: unbiased for `⟨f_A,f_B⟩`.
    pub inner_product: f64,
    /// The sample mean of `|f_A(x)|²`: unbiased for `⟨f_A,f_A⟩`.
    pub squared_norm_a: f64,
    /// The sample mean of `|f_B(x)|²`: unbiased for `⟨f_B,f_B⟩`.
    pub squared_norm_b: f64,
    /// The standard errors of [`inner_product`](Self::inner_product),
    /// [`squared_norm_a`](Self::squared_norm_a) and
    /// [`squared_norm_b`](Self::squared_norm_b), in that order (the square
    /// roots of the diagonal of the batch-means covariance `Ĉ`).
    pub product_standard_errors: [f64; 3],
    /// The number of samples `N` (each a sequence of `n` positions on
    /// sequences).
    pub samples: usize,
    /// The number of batches `B` the standard error is estimated from.
    pub batches: usize,
}

/// Monte Carlo estimates for every pair of many models, from one set of
/// draws ([`GaussianMonteCarlo::matrix`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MonteCarloMatrix {
    /// The estimated similarities, symmetric with a unit diagonal.
    pub similarity: DMatrix<f64>,
    /// Their standard errors (0 on the diagonal).
    pub standard_error: DMatrix<f64>,
    /// The sample means of `f_i(x)·f_j(x)`: the inner products, with the
    /// squared norms on the diagonal.
    pub inner_products: DMatrix<f64>,
    /// The number of samples `N`.
    pub samples: usize,
    /// The number of batches `B`.
    pub batches: usize,
}

impl Default for GaussianMonteCarlo {
    /// [`DEFAULT_SAMPLES`] samples at seed 0, `N(0, I)`.
    fn default() -> Self {
        Self::unchecked(DEFAULT_SAMPLES, 0, DEFAULT_BATCHES)
    }
}

impl GaussianMonteCarlo {
    fn unchecked(samples: usize, seed: u64, batches: usize) -> Self {
        Self {
            samples,
            seed,
            batches,
            input: GaussianInput::default(),
            factor: None,
            context: None,
            draw_first_linear: true,
            read_out_linear: true,
        }
    }

    /// `samples` draws of `x ∼ N(0, I)` from `seed`, in
    /// [`DEFAULT_BATCHES`] batches (`samples / 2` when that is fewer). An
    /// error ([`Error::InvalidOption`]) for fewer than 4 samples: a
    /// standard error needs two batches of two.
    ///
    /// ```
    /// use tensor_similarity::GaussianMonteCarlo;
    ///
    /// let mc = GaussianMonteCarlo::new(10_000, 0)?;
    /// assert_eq!((mc.samples(), mc.seed(), mc.batches()), (10_000, 0, 100));
    /// assert_eq!(GaussianMonteCarlo::new(50, 0)?.batches(), 25);
    /// assert!(GaussianMonteCarlo::new(3, 0).is_err());
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn new(samples: usize, seed: u64) -> Result<Self> {
        if samples < 4 {
            return Err(Error::InvalidOption {
                what: "samples",
                reason: format!(
                    "{samples} samples: a Monte Carlo standard error needs at least 4 (two \
                     batches of two)"
                ),
            });
        }
        Ok(Self::unchecked(
            samples,
            seed,
            DEFAULT_BATCHES.min(samples / 2),
        ))
    }

    /// Splits the samples into `batches` batches instead; an error unless
    /// `2 ≤ batches` and every batch holds at least two samples
    /// (`samples ≥ 2 × batches`). More batches estimate the standard error
    /// with more degrees of freedom (`B − 1`); the estimates do not depend
    /// on them, but the draws do (each batch has its own stream).
    pub fn with_batches(mut self, batches: usize) -> Result<Self> {
        if batches < 2 || self.samples < 2 * batches {
            return Err(Error::InvalidOption {
                what: "batches",
                reason: format!(
                    "{batches} batches of {} samples: a standard error needs at least 2 \
                     batches of at least 2 samples",
                    self.samples
                ),
            });
        }
        self.batches = batches;
        Ok(self)
    }

    /// The number of samples `N`.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The number of batches `B`.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Compares models on `n` positions ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)):
    /// each sample is a sequence `X ∈ R^{n×d}` with i.i.d. rows `N(μ, Σ)`,
    /// and the products sum over every position and output. Needed for
    /// sequence models; vector models are then compared position-wise, so
    /// their inner products are `n` times the one-position ones, as
    /// [`GaussianSimilarity::with_context`](crate::GaussianSimilarity::with_context)
    /// has them. An error for `n = 0`.
    pub fn with_context(mut self, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(Error::ZeroContext);
        }
        self.context = Some(n);
        Ok(self)
    }

    /// The context length, if set.
    pub fn context(&self) -> Option<usize> {
        self.context
    }

    /// The input mean `μ` (length `d`, checked against the models when they
    /// are compared); an error if it holds a NaN or infinity.
    pub fn with_mean(mut self, mean: DVector<f64>) -> Result<Self> {
        self.input.set_mean(mean)?;
        Ok(self)
    }

    /// The input covariance `Σ` (`d × d`); an error unless it is square,
    /// finite, symmetric and positive semidefinite (a singular `Σ`, a
    /// Gaussian on a subspace, is allowed: the draws are `μ + F ξ` with one
    /// normal per non-zero column of its factor).
    pub fn with_covariance(mut self, covariance: DMatrix<f64>) -> Result<Self> {
        self.input.set_covariance(covariance)?;
        self.factor = self.input.factor_as_given().map(nonzero_columns);
        Ok(self)
    }

    /// `N(μ, Σ)` at once: [`with_mean`](Self::with_mean) then
    /// [`with_covariance`](Self::with_covariance), and an error if their
    /// sizes differ.
    ///
    /// ```
    /// use nalgebra::{dmatrix, dvector};
    /// use tensor_similarity::{GaussianMonteCarlo, Linear, Model};
    ///
    /// // f(x) = x_1 under N((2, 0), diag(1, 4)): E[f²] = 1 + 2² = 5.
    /// let f = Model::builder().block(Linear::new(dmatrix![1.0, 0.0], None)?).build()?;
    /// let mc = GaussianMonteCarlo::new(40_000, 1)?
    ///     .with_input(dvector![2.0, 0.0], dmatrix![1.0, 0.0; 0.0, 4.0])?;
    /// let e = mc.estimate(&f, &f)?;
    /// assert!((e.squared_norm_a - 5.0).abs() < 0.2);
    /// assert_eq!((e.similarity, e.standard_error), (1.0, 0.0));
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn with_input(mut self, mean: DVector<f64>, covariance: DMatrix<f64>) -> Result<Self> {
        self.input.set_input(mean, covariance)?;
        self.factor = self.input.factor_as_given().map(nonzero_columns);
        Ok(self)
    }

    /// The estimate of the similarity of `a` and `b`, with its standard
    /// error and the three inner products. An error if the models' input
    /// or output widths differ, a sequence model has no context, `μ` or
    /// `Σ` do not fit the input width, an output is not finite in the
    /// models' scalar type ([`Error::NumericalBreakdown`]), or an estimated
    /// squared norm is zero ([`Error::ZeroNorm`]: the model outputs zero on
    /// every draw).
    pub fn estimate<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<MonteCarloEstimate> {
        let sums = self.run(&[a, b])?;
        self.ratio(&sums, |s| [s[(0, 1)], s[(0, 0)], s[(1, 1)]])
    }

    /// The estimate of the similarity of the directions `A1 − A0` and
    /// `B1 − B0` (two fine-tunes of one base, two stretches of training),
    /// `⟨f_A1−f_A0, f_B1−f_B0⟩` and the two squared norms, from one set of
    /// draws through all four models: the Monte Carlo estimate of the
    /// differences' functions themselves, with its standard error. An error
    /// as for [`estimate`](Self::estimate); a zero direction (two models of
    /// the same function) is [`Error::ZeroNorm`] of its side.
    ///
    /// ```
    /// use nalgebra::dmatrix;
    /// use tensor_similarity::{Bilinear, GaussianMonteCarlo, Model};
    ///
    /// let m = |l, r| Model::builder().block(Bilinear::new(l, r).unwrap()).build().unwrap();
    /// let base = m(dmatrix![1.0, 0.0], dmatrix![0.0, 1.0]);
    /// // Two steps away from the base in the same direction, one twice as long.
    /// let one = m(dmatrix![1.0, 0.5], dmatrix![0.0, 1.0]);
    /// let two = m(dmatrix![1.0, 1.0], dmatrix![0.0, 1.0]);
    /// let e = GaussianMonteCarlo::new(1_000, 3)?.difference(&base, &one, &base, &two)?;
    /// assert!((e.similarity - 1.0).abs() < 1e-12);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn difference<T: Real>(
        &self,
        a0: &Model<T>,
        a1: &Model<T>,
        b0: &Model<T>,
        b1: &Model<T>,
    ) -> Result<MonteCarloEstimate> {
        let sums = self.run(&[a0, a1, b0, b1])?;
        self.ratio(&sums, |s| {
            [
                s[(1, 3)] - s[(1, 2)] - s[(0, 3)] + s[(0, 2)],
                s[(1, 1)] - 2.0 * s[(0, 1)] + s[(0, 0)],
                s[(3, 3)] - 2.0 * s[(2, 3)] + s[(2, 2)],
            ]
        })
    }

    /// The estimates for every pair of `models` from one set of draws:
    /// each model's forward pass runs once per sample (`N` forward passes
    /// per model, not per pair), and every entry is the estimate that
    /// [`estimate`](Self::estimate) would give on these draws. An error as
    /// for [`estimate`](Self::estimate), for the first pair by row-major
    /// order; none for an empty list.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Bilinear, GaussianMonteCarlo, Model};
    ///
    /// let model = |s: f64| -> Model {
    ///     let l = DMatrix::from_fn(3, 2, |i, j| (i + j) as f64 + s);
    ///     Model::builder().block(Bilinear::new(l, DMatrix::identity(3, 2)).unwrap()).build().unwrap()
    /// };
    /// let models = [model(0.0), model(0.5), model(-1.0)];
    /// let m = GaussianMonteCarlo::new(2_000, 0)?.matrix(&models)?;
    /// assert_eq!(m.similarity[(1, 1)], 1.0);
    /// assert_eq!(m.similarity[(0, 2)], m.similarity[(2, 0)]);
    /// assert!(m.standard_error[(0, 2)] > 0.0);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn matrix<T: Real>(&self, models: &[Model<T>]) -> Result<MonteCarloMatrix> {
        let k = models.len();
        let mut out = MonteCarloMatrix {
            similarity: DMatrix::identity(k, k),
            standard_error: DMatrix::zeros(k, k),
            inner_products: DMatrix::zeros(k, k),
            samples: self.samples,
            batches: self.batches,
        };
        if k == 0 {
            return Ok(out);
        }
        let refs: Vec<&Model<T>> = models.iter().collect();
        let sums = self.run(&refs)?;
        for i in 0..k {
            for j in i..k {
                let e = self.ratio(&sums, |s| [s[(i, j)], s[(i, i)], s[(j, j)]])?;
                out.inner_products[(i, j)] = e.inner_product;
                out.inner_products[(j, i)] = e.inner_product;
                if i != j {
                    out.similarity[(i, j)] = e.similarity;
                    out.similarity[(j, i)] = e.similarity;
                    out.standard_error[(i, j)] = e.standard_error;
                    out.standard_error[(j, i)] = e.standard_error;
                }
            }
        }
        Ok(out)
    }

    /// The estimate of `(c, a, b)` (picked from each batch's sums by `pick`),
    /// the cosine `c/√(ab)` and its delta-method standard error.
    fn ratio(
        &self,
        sums: &[(usize, DMatrix<f64>)],
        pick: impl Fn(&DMatrix<f64>) -> [f64; 3],
    ) -> Result<MonteCarloEstimate> {
        let picked: Vec<(f64, [f64; 3])> = sums.iter().map(|(n, s)| (*n as f64, pick(s))).collect();
        let total = self.samples as f64;
        let mut mean = [0.0; 3];
        for (_, s) in &picked {
            for (m, v) in mean.iter_mut().zip(s) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= total;
        }
        let [c, a, b] = mean;
        for (norm, side) in [(a, Side::A), (b, Side::B)] {
            if norm.is_nan() || norm <= 0.0 {
                return Err(Error::ZeroNorm(side));
            }
        }
        let root = (a * b).sqrt();
        let r = c / root;
        if !r.is_finite() {
            return Err(Error::NumericalBreakdown {
                block: 0,
                reason: format!(
                    "the Monte Carlo estimates are not finite ({c:e}, {a:e}, {b:e}): the \
                     outputs overflow their scalar type on the draws"
                ),
            });
        }
        // Batch-means covariance of the three means, weighted for unequal
        // batches (see the module documentation).
        let mut cov = [[0.0; 3]; 3];
        for (n, s) in &picked {
            let dev = [s[0] - n * c, s[1] - n * a, s[2] - n * b];
            for i in 0..3 {
                for j in 0..3 {
                    cov[i][j] += dev[i] * dev[j] / n;
                }
            }
        }
        let scale = 1.0 / (total * (picked.len() as f64 - 1.0));
        let grad = [1.0 / root, -r / (2.0 * a), -r / (2.0 * b)];
        let mut var = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                var += grad[i] * cov[i][j] * scale * grad[j];
            }
        }
        Ok(MonteCarloEstimate {
            similarity: r.clamp(-1.0, 1.0),
            standard_error: var.max(0.0).sqrt(),
            inner_product: c,
            squared_norm_a: a,
            squared_norm_b: b,
            product_standard_errors: [0, 1, 2].map(|i| (cov[i][i] * scale).max(0.0).sqrt()),
            samples: self.samples,
            batches: picked.len(),
        })
    }

    /// The batches' sums `S_b[i,j] = Σ_x f_i(x)·f_j(x)` (upper triangle and
    /// diagonal; the lower mirrored), with each batch's sample count, in
    /// batch order.
    fn run<T: Real>(&self, models: &[&Model<T>]) -> Result<Vec<(usize, DMatrix<f64>)>> {
        let plan = self.plan(models)?;
        let k = models.len();
        let (base, extra) = (self.samples / self.batches, self.samples % self.batches);
        let sums = (0..self.batches)
            .into_par_iter()
            .map(|batch| {
                let count = base + usize::from(batch < extra);
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(batch as u64);
                let mut sums = DMatrix::zeros(k, k);
                let mut left = count;
                while left > 0 {
                    let chunk = left.min(plan.chunk);
                    plan.chunk_sums(models, &mut rng, chunk, &mut sums)?;
                    left -= chunk;
                }
                for i in 0..k {
                    for j in 0..i {
                        sums[(i, j)] = sums[(j, i)];
                    }
                }
                Ok((count, sums))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, m) in models.iter().enumerate() {
            if sums.iter().any(|(_, s)| !s[(i, i)].is_finite()) {
                return Err(Error::NumericalBreakdown {
                    block: m.depth() - 1,
                    reason: format!(
                        "the outputs of model {} on the Monte Carlo draws are not finite in \
                         its scalar type (they overflow)",
                        model_name(i, models.len())
                    ),
                });
            }
        }
        Ok(sums)
    }

    /// How the draws are made and the models run, checked against them.
    fn plan<T: Real>(&self, models: &[&Model<T>]) -> Result<Plan<T>> {
        let first = models.first().ok_or_else(|| Error::InvalidOption {
            what: "models",
            reason: "no models to compare".into(),
        })?;
        for other in &models[1..] {
            first.check_same_io(other)?;
        }
        let n = match self.context {
            Some(n) => n,
            None => match models.iter().position(|m| m.is_sequence()) {
                Some(0) => return Err(Error::MissingContext(Side::A)),
                Some(_) => return Err(Error::MissingContext(Side::B)),
                None => 1,
            },
        };
        let d = first.input_width();
        let mu = self.input.mean(d)?;
        self.input.covariance(d)?;
        // The input's draws: x = μ + F ξ.
        let q = self.factor.as_ref().map_or(d, |f| f.ncols());
        let firsts: Vec<Option<DMatrix<T>>> =
            models.iter().map(|m| affine(&*m.blocks()[0])).collect();
        let width: usize = firsts.iter().flatten().map(|u| u.nrows()).sum();
        let drawn = self.draw_first_linear
            && firsts.iter().all(Option::is_some)
            && 2 * width <= q
            && width <= MAX_DRAWN_WIDTH;
        let source = if drawn {
            let maps: Vec<DMatrix<T>> = firsts.into_iter().flatten().collect();
            self.first_linear_source(&maps, &mu)?
        } else {
            Source {
                mean: mu.map(from_f64::<T>),
                factor_t: self
                    .factor
                    .as_ref()
                    .map(|f| f.transpose().map(from_f64::<T>)),
                normals: q,
                offsets: None,
            }
        };
        let start = usize::from(drawn);
        let lasts: Vec<Option<DMatrix<T>>> = models
            .iter()
            .map(|m| affine(&**m.blocks().last().expect("a model has a block")))
            .collect();
        let padded: usize = lasts.iter().flatten().map(|u| u.ncols()).sum();
        let read_out = self.read_out_linear
            && lasts.iter().all(Option::is_some)
            && models.iter().all(|m| m.depth() > start)
            && padded <= first.output_width();
        let readout = read_out.then(|| {
            let maps: Vec<DMatrix<T>> = lasts.into_iter().flatten().collect();
            (0..maps.len())
                .map(|i| {
                    (i..maps.len())
                        .map(|j| mul_tn(&maps[i], &maps[j]))
                        .collect()
                })
                .collect()
        });
        let end = |m: &Model<T>| m.depth() - usize::from(read_out);
        // The widest activations of each model, for the chunk size.
        let widest: usize = source.normals
            + source.mean.len()
            + models
                .iter()
                .map(|m| {
                    m.blocks()[start..end(m)]
                        .iter()
                        .map(|b| b.output_width())
                        .chain([m.blocks()[start.min(m.depth() - 1)].input_width() + 1])
                        .max()
                        .unwrap_or(1)
                })
                .sum::<usize>();
        let chunk = (CHUNK_ENTRIES / (widest.max(1) * n)).max(1);
        Ok(Plan {
            n,
            source,
            start,
            ends: models.iter().map(|m| end(m)).collect(),
            readout,
            chunk,
        })
    }

    /// The draws of the models' first linear blocks' joint output
    /// `z = m + G ξ`, `G Gᵀ = S Σ Sᵀ` (maps `Ũ_i = [c_i | W_i]`).
    fn first_linear_source<T: Real>(
        &self,
        maps: &[DMatrix<T>],
        mu: &DVector<f64>,
    ) -> Result<Source<T>> {
        let width: usize = maps.iter().map(|u| u.nrows()).sum();
        let d = mu.len();
        let mut stacked = DMatrix::<f64>::zeros(width, d);
        let mut mean = DVector::<f64>::zeros(width);
        let mut offsets = Vec::with_capacity(maps.len());
        let mut row = 0;
        for u in maps {
            let u = u.map(to_f64);
            let w = u.nrows();
            stacked.rows_mut(row, w).copy_from(&u.columns(1, d));
            mean.rows_mut(row, w)
                .copy_from(&(u.column(0) + u.columns(1, d) * mu));
            offsets.push((row, w));
            row += w;
        }
        let a = match &self.factor {
            Some(f) => mul(&stacked, f),
            None => stacked,
        };
        let c = crate::linalg::mul_nt(&a, &a);
        let symmetric = (&c + c.transpose()) * 0.5;
        let g = nonzero_columns(&covariance_factor(&symmetric)?);
        Ok(Source {
            mean: mean.map(from_f64::<T>),
            normals: g.ncols(),
            factor_t: Some(g.transpose().map(from_f64::<T>)),
            offsets: Some(offsets),
        })
    }
}

/// How errors name model `i` of `k` compared together: `A`, `B` for a
/// pair, `A0` … `B1` for a difference, the index for a matrix.
fn model_name(i: usize, k: usize) -> String {
    match (k, i) {
        (1 | 2, 0) => "A".into(),
        (2, 1) => "B".into(),
        (4, _) => ["A0", "A1", "B0", "B1"][i].into(),
        _ => format!("{i} (0-based)"),
    }
}

/// `F` without its all-zero columns (the null directions of a singular
/// covariance draw nothing).
fn nonzero_columns(f: &DMatrix<f64>) -> DMatrix<f64> {
    let keep: Vec<usize> = (0..f.ncols())
        .filter(|&j| f.column(j).iter().any(|&v| v != 0.0))
        .collect();
    if keep.is_empty() {
        // A zero covariance: one column of zeros keeps the shapes valid.
        return DMatrix::zeros(f.nrows(), 1);
    }
    f.select_columns(&keep)
}

/// A position-wise linear block's map on the padded input without its
/// constant row, `[c | W]` (`n × (m+1)`); `None` for any other block.
fn affine<T: Real>(block: &dyn TensorBlock<T>) -> Option<DMatrix<T>> {
    let f = block.as_cp()?;
    if f.order() != 1 || block.mixes_positions() {
        return None;
    }
    let u = f.input(0);
    let full = match f.output() {
        Some(d) => d * u,
        None => u.into_owned(),
    };
    Some(full.rows(1, full.nrows() - 1).into_owned())
}

/// Where a row's activations come from: `μ + F ξ` (the input, or the first
/// linear blocks' joint output when `offsets` says where each model's is).
struct Source<T: Real> {
    mean: DVector<T>,
    /// `Fᵀ` (`q × width`); `None`: the identity.
    factor_t: Option<DMatrix<T>>,
    /// `q`, the standard normals a row draws.
    normals: usize,
    /// Each model's columns of a drawn joint output.
    offsets: Option<Vec<(usize, usize)>>,
}

/// A run's plan: the draws, the blocks each model runs, the readout.
struct Plan<T: Real> {
    n: usize,
    source: Source<T>,
    /// The first block run (1 when the first blocks' output is drawn).
    start: usize,
    /// One past the last block run, per model.
    ends: Vec<usize>,
    /// `M_ij = Ũ_iᵀ Ũ_j` of the last linear blocks, `j ≥ i` (`M[i][j − i]`).
    readout: Option<Vec<Vec<DMatrix<T>>>>,
    /// Samples per chunk.
    chunk: usize,
}

impl<T: Real> Plan<T> {
    /// Draws `samples` samples from `rng`, runs every model on them and adds
    /// their products to `sums` (upper triangle).
    fn chunk_sums(
        &self,
        models: &[&Model<T>],
        rng: &mut ChaCha8Rng,
        samples: usize,
        sums: &mut DMatrix<f64>,
    ) -> Result<()> {
        let rows = samples * self.n;
        let q = self.source.normals;
        // Row r's normals are column r of ξᵀ: drawn in row order.
        let normals: Vec<T> = (0..rows * q)
            .map(|_| from_f64::<T>(rng.sample::<f64, _>(StandardNormal)))
            .collect();
        let xi_t = DMatrix::from_vec(q, rows, normals);
        let mut base = match &self.source.factor_t {
            Some(ft) => mul_tn(&xi_t, ft),
            None => xi_t.transpose(),
        };
        add_to_rows(&mut base, &self.source.mean);
        let outputs: Vec<DMatrix<T>> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let blocks = &m.blocks()[self.start..self.ends[i]];
                let own;
                let input = match &self.source.offsets {
                    Some(offsets) => {
                        let (at, w) = offsets[i];
                        own = base.columns(at, w).into_owned();
                        &own
                    }
                    None => &base,
                };
                let mut h: Option<DMatrix<T>> = None;
                for b in blocks {
                    h = Some(b.forward_sequences(h.as_ref().unwrap_or(input), self.n)?);
                }
                let h = h.unwrap_or_else(|| input.clone());
                Ok(match self.readout {
                    Some(_) => h.insert_column(0, T::one()),
                    None => h,
                })
            })
            .collect::<Result<_>>()?;
        let k = models.len();
        for i in 0..k {
            for j in i..k {
                sums[(i, j)] += match &self.readout {
                    Some(grams) => {
                        let r = mul(&outputs[i], &grams[i][j - i]);
                        dot(r.as_slice(), outputs[j].as_slice())
                    }
                    None => dot(outputs[i].as_slice(), outputs[j].as_slice()),
                };
            }
        }
        Ok(())
    }
}

/// `Σ a_i b_i`, each product and the sum in `f64`.
fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += to_f64(x[l]) * to_f64(y[l]);
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(x, y)| to_f64(*x) * to_f64(*y))
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

impl<T: Real> RecursiveSimilarity<T> for GaussianMonteCarlo {
    /// The estimate of `⟨f_A,f_B⟩` ([`MonteCarloEstimate::inner_product`]).
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        Ok(self.estimate(a, b)?.inner_product.into())
    }

    /// The estimate of `⟨f_A,f_A⟩`, from draws through `a` alone.
    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        let sums = self.run(&[a])?;
        let total: f64 = sums.iter().map(|(_, s)| s[(0, 0)]).sum();
        Ok((total / self.samples as f64).into())
    }

    /// [`estimate`](GaussianMonteCarlo::estimate)'s similarity: the three
    /// estimates from one set of draws.
    fn similarity(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        Ok(self.estimate(a, b)?.similarity)
    }

    /// [`difference`](GaussianMonteCarlo::difference)'s similarity: one set
    /// of draws through the four models.
    fn difference_similarity(
        &self,
        a0: &Model<T>,
        a1: &Model<T>,
        b0: &Model<T>,
        b1: &Model<T>,
    ) -> Result<f64> {
        Ok(self.difference(a0, a1, b0, b1)?.similarity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bilinear, Linear};

    /// A deterministic matrix with entries in `[−1, 1]`.
    fn w(seed: usize, rows: usize, cols: usize) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            (((i * 31 + j * 17 + seed * 13) % 23) as f64 - 11.0) / 11.0
        })
    }

    /// embed (`d → h`) · bilinear (`h → h`) · head (`h → out`).
    fn model(seed: usize, d: usize, h: usize, out: usize) -> Model {
        Model::builder()
            .block(Linear::new(w(seed, h, d), Some(DVector::from_element(h, 0.1))).unwrap())
            .block(
                Bilinear::builder(w(seed + 1, h, h), w(seed + 2, h, h))
                    .residual(0.6)
                    .build()
                    .unwrap(),
            )
            .block(Linear::new(w(seed + 3, out, h), None).unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn the_shortcuts_apply_where_they_save_work() {
        let mc = GaussianMonteCarlo::new(100, 0).unwrap();
        // Wide input and output: both.
        let (a, b) = (model(1, 12, 3, 10), model(2, 12, 3, 10));
        let plan = mc.plan(&[&a, &b]).unwrap();
        assert_eq!(plan.source.offsets, Some(vec![(0, 3), (3, 3)]));
        assert_eq!(plan.source.normals, 6);
        assert!(plan.readout.is_some());
        assert_eq!((plan.start, plan.ends.clone()), (1, vec![2, 2]));
        // Narrow: neither.
        let (a, b) = (model(1, 4, 3, 3), model(2, 4, 3, 3));
        let plan = mc.plan(&[&a, &b]).unwrap();
        assert!(plan.source.offsets.is_none() && plan.readout.is_none());
        assert_eq!((plan.start, plan.ends), (0, vec![3, 3]));
    }

    #[test]
    fn reading_out_through_the_heads_changes_only_rounding() {
        let (a, b) = (model(1, 12, 3, 10), model(2, 12, 3, 10));
        let on = GaussianMonteCarlo::new(1_000, 4).unwrap();
        let off = GaussianMonteCarlo {
            read_out_linear: false,
            ..on.clone()
        };
        let (x, y) = (on.estimate(&a, &b).unwrap(), off.estimate(&a, &b).unwrap());
        let scale = (x.squared_norm_a * x.squared_norm_b).sqrt();
        for (p, q) in [
            (x.inner_product, y.inner_product),
            (x.squared_norm_a, y.squared_norm_a),
            (x.squared_norm_b, y.squared_norm_b),
        ] {
            assert!((p - q).abs() < 1e-12 * scale, "{p} against {q}");
        }
        assert!((x.standard_error - y.standard_error).abs() < 1e-9 * x.standard_error);
    }

    #[test]
    fn drawing_the_first_blocks_output_draws_the_same_law() {
        let (a, b) = (model(1, 12, 3, 10), model(5, 12, 3, 10));
        let mean = DVector::from_fn(12, |i, _| 0.1 * i as f64 - 0.5);
        let drawn = GaussianMonteCarlo::new(40_000, 4)
            .unwrap()
            .with_mean(mean)
            .unwrap();
        let direct = GaussianMonteCarlo {
            draw_first_linear: false,
            ..drawn.clone()
        };
        let (x, y) = (
            drawn.estimate(&a, &b).unwrap(),
            direct.estimate(&a, &b).unwrap(),
        );
        // Independent estimates of the same quantities.
        let z = |p: f64, q: f64, sp: f64, sq: f64| (p - q) / (sp * sp + sq * sq).sqrt();
        assert!(
            z(
                x.similarity,
                y.similarity,
                x.standard_error,
                y.standard_error
            )
            .abs()
                < 4.0
        );
        for k in 0..3 {
            let (p, q) = (
                [x.inner_product, x.squared_norm_a, x.squared_norm_b][k],
                [y.inner_product, y.squared_norm_a, y.squared_norm_b][k],
            );
            let zk = z(
                p,
                q,
                x.product_standard_errors[k],
                y.product_standard_errors[k],
            );
            assert!(zk.abs() < 4.0, "product {k}: {p} against {q}");
        }
    }

    #[test]
    fn equal_batches_give_the_batch_means_variance() {
        // Batch sums of (c, a, b) over 4 batches of 5 samples.
        let mc = GaussianMonteCarlo::new(20, 0)
            .unwrap()
            .with_batches(4)
            .unwrap();
        let sums: Vec<(usize, DMatrix<f64>)> = [
            [1.0, 5.0, 6.0],
            [2.0, 4.0, 7.0],
            [0.5, 6.0, 5.0],
            [1.5, 5.5, 6.5],
        ]
        .iter()
        .map(|[c, a, b]| (5, DMatrix::from_row_slice(2, 2, &[*a, *c, *c, *b])))
        .collect();
        let e = mc
            .ratio(&sums, |s| [s[(0, 1)], s[(0, 0)], s[(1, 1)]])
            .unwrap();
        // Batch means m_b = s_b / 5; the variance of the mean of c is
        // Σ (m_b − m)² / (B (B − 1)).
        let means: Vec<f64> = [1.0, 2.0, 0.5, 1.5].iter().map(|c| c / 5.0).collect();
        let m = means.iter().sum::<f64>() / 4.0;
        let var = means.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 12.0;
        assert!((e.product_standard_errors[0] - var.sqrt()).abs() < 1e-15);
        assert!((e.inner_product - m).abs() < 1e-15);
    }
}
