//! The Gram recursion: the exact inner product of two models' end-to-end
//! tensors in polynomial time.
//!
//! With `G_0 = M` (the input metric, default `I_{d+1}`), each pair of blocks
//! at position `ℓ` maps the cross Gram matrix `G_{ℓ−1}` of the two models'
//! padded activations to
//!
//! ```text
//! G_ℓ = D̃_A H D̃_Bᵀ,   H = Σ_π w_π  X_{1,π(1)} ∘ … ∘ X_{k,π(k)},   X_{i,j} = U^A_i G_{ℓ−1} (U^B_j)ᵀ
//! ```
//!
//! where the pairings `π` average over the blocks' symmetry groups
//! (`w_π = 1/|S|` for a common group `S`; for a bilinear block
//! `H = ½ (X_11 ∘ X_22 + X_12 ∘ X_21)`). Then
//! `⟨A,B⟩ = Σ_{o≥1} G_L[o,o]` (or `tr(Q G_L[1:,1:])`).
//!
//! **Sequences** ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): on `n` positions the stream is flattened with
//! one shared constant, `x̃ = (1, X[0], …, X[n−1])`, `G` is
//! `(n d_A + 1) × (n d_B + 1)`, and each block supplies its step on that
//! stream ([`TensorBlock::gram_step`]): position-wise blocks act on every
//! pair of positions, attention mixes them. The loop below does not know
//! which. It never forms `G_0` or `G_L` when they would be large: a
//! position-wise first block reads the per-position metric directly, and a
//! position-wise order-1 last block is read out through its weights.
//!
//! All `k²` products `X_{i,j}` come from one stacked product
//! `[U^A_1; …; U^A_k] · G · [U^B_1; …; U^B_k]ᵀ`. Each step is homogeneous of
//! degree `k` in `G`, so the recursion divides `G` by its largest entry
//! after every block and carries the scale as a logarithm: nothing
//! overflows at any depth, and inner products come back as [`LogScaled`].

pub use crate::block::GramWorkspace;

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::block::TensorBlock;
use crate::error::{Error, Result, Side};
use crate::linalg::{mul, mul_nt, mul_tn};
use crate::model::Model;
use crate::padded::padded_block;
use crate::resources::{
    MemoryEstimate, MemoryLimit, check_work, flat_entries, flat_width, scalars, zeros,
};
use crate::scalar::{LogScaled, Real, from_f64, smallest_resolved, to_f64};

/// The estimated bytes of one product below which
/// [`similarity`](RecursiveSimilarity::similarity) runs its three products
/// at once (see `TensorSimilarity::products_at_once`).
const CONCURRENT_PRODUCTS_BELOW: f64 = 256.0 * 1024.0 * 1024.0;

/// A similarity that is the cosine of an inner product between models,
/// computed layer by layer.
///
/// Implementors supply [`inner_product`](Self::inner_product); the cosine and
/// the rest are provided. Implementations must be immutable.
pub trait RecursiveSimilarity<T: Real> {
    /// The raw inner product `⟨A, B⟩`, kept in log scale so it never overflows.
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled>;

    /// `⟨A, A⟩`. Override where the symmetry of the self product saves work.
    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        self.inner_product(a, a)
    }

    /// `⟨A,B⟩ / √(⟨A,A⟩⟨B,B⟩) ∈ [−1, 1]`; an error if either norm is zero.
    fn similarity(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        cosine(
            self.inner_product(a, b)?,
            self.squared_norm(a)?,
            self.squared_norm(b)?,
        )
    }

    /// Refuses, before any work, `at_once` products of `a` and `b` (or of
    /// either with itself) running together when their estimated peak
    /// memory exceeds the metric's limit, with [`Error::MemoryLimit`];
    /// [`matrix`](crate::matrix) asks this for every pair before it starts,
    /// with one product per thread. The default accepts everything (a
    /// metric without a memory model); [`TensorSimilarity`] and
    /// [`GaussianSimilarity`](crate::GaussianSimilarity) estimate.
    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        let _ = (a, b, at_once);
        Ok(())
    }

    /// The cosine between the directions `A1 − A0` and `B1 − B0` (e.g. two
    /// fine-tunes of the same base), from bilinearity:
    /// `⟨A1−A0, B1−B0⟩ = ⟨A1,B1⟩ − ⟨A1,B0⟩ − ⟨A0,B1⟩ + ⟨A0,B0⟩`.
    ///
    /// The differences are taken in log-scaled arithmetic, so deep models do
    /// not overflow; a direction much smaller than its endpoints loses
    /// relative precision like any difference of nearly equal numbers
    /// (about `ε‖A‖²/‖A1−A0‖²`).
    fn difference_similarity(
        &self,
        a0: &Model<T>,
        a1: &Model<T>,
        b0: &Model<T>,
        b1: &Model<T>,
    ) -> Result<f64> {
        let ip = |x: &Model<T>, y: &Model<T>| self.inner_product(x, y);
        let ab = ip(a1, b1)? - ip(a1, b0)? - ip(a0, b1)? + ip(a0, b0)?;
        let aa = self.squared_norm(a1)? - ip(a1, a0)? - ip(a1, a0)? + self.squared_norm(a0)?;
        let bb = self.squared_norm(b1)? - ip(b1, b0)? - ip(b1, b0)? + self.squared_norm(b0)?;
        cosine(ab, aa, bb)
    }
}

impl<T: Real, S: RecursiveSimilarity<T> + ?Sized> RecursiveSimilarity<T> for &S {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        (**self).inner_product(a, b)
    }
    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        (**self).squared_norm(a)
    }
    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        (**self).check_memory(a, b, at_once)
    }
}

/// `ab / √(aa · bb)`, clamped to `[−1, 1]` (rounding can overshoot by a few
/// ulps); an error naming the model whose squared norm is zero (or negative,
/// which only an indefinite input metric can produce).
pub fn cosine(ab: LogScaled, aa: LogScaled, bb: LogScaled) -> Result<f64> {
    for (norm, side) in [(aa, Side::A), (bb, Side::B)] {
        if norm.signum().is_nan() || norm.signum() <= 0.0 {
            return Err(Error::ZeroNorm(side));
        }
    }
    let c = (ab / (aa * bb).sqrt()).to_f64();
    if c.is_nan() {
        return Err(Error::NumericalBreakdown {
            block: 0,
            reason: "the cosine is NaN".into(),
        });
    }
    Ok(c.clamp(-1.0, 1.0))
}

/// `G_ℓ = e^ln_scale · gram`: a Gram matrix with its scale kept apart.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledGram<T: Real> {
    /// The Gram matrix divided by its largest absolute entry.
    pub gram: DMatrix<T>,
    /// Natural logarithm of the scale.
    pub ln_scale: f64,
}

/// What the final Gram matrix is read out with, per position.
#[derive(Clone, Debug, PartialEq)]
enum Outputs {
    /// `Σ_{o≥1} G[o,o]`: all outputs.
    Trace,
    /// `Σ_{o∈S} G[o+1,o+1]`: some outputs.
    Select(Vec<usize>),
    /// `tr(Q G[1:,1:])`, `Q` per position (`n_L × n_L`) or over the whole
    /// flattened output (`n n_L × n n_L`).
    Weights(DMatrix<f64>),
}

/// The tensor similarity of [SPEC §2](crate::spec#2-tensor-similarity-the-default-metric) and [§7](crate::spec#7-sequences-and-bilinear-attention): the cosine of two models'
/// symmetrised end-to-end tensors under an input metric `M` on every leg
/// and an output weighting `Q`, computed by the Gram recursion; for
/// sequence models, on the flattened stream of a given context length.
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{Bilinear, Model, RecursiveSimilarity, TensorSimilarity};
///
/// let l = DMatrix::from_fn(3, 2, |i, j| (i + 2 * j) as f64 - 1.5);
/// let r = DMatrix::from_fn(3, 2, |i, j| (2 * i + j) as f64 * 0.5);
/// let a = Model::builder().block(Bilinear::new(l.clone(), r.clone())?).build()?;
/// // Swapping the two factors changes the weights but not the function.
/// let b = Model::builder().block(Bilinear::new(r, l)?).build()?;
/// let sim = TensorSimilarity::new().similarity(&a, &b)?;
/// assert!((sim - 1.0).abs() < 1e-12);
/// // Slice similarity: only output 0.
/// let first = TensorSimilarity::new().with_output_selection(vec![0]);
/// assert!((first.similarity(&a, &b)? - 1.0).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
///
/// The options are kept in `f64` and rounded to the models' scalar type where
/// they are used, so one `TensorSimilarity` serves `f32` and `f64` models.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSimilarity {
    input_metric: Option<DMatrix<f64>>,
    outputs: Outputs,
    positions: Option<Vec<usize>>,
    context: Option<usize>,
    max_memory: MemoryLimit,
    max_work: Option<f64>,
}

impl Default for TensorSimilarity {
    fn default() -> Self {
        Self::new()
    }
}

/// The last step read out without forming `G_L`: the kernel
/// `B_Aᵀ Q̃ B_B` of two affine last blocks, on inputs of widths `(m_A, m_B)`.
pub(crate) struct Readout<T: Real> {
    kernel: DMatrix<T>,
    widths: (usize, usize),
}

/// The Gram matrix between two blocks: either the lift of a per-position
/// metric to `n` positions (never formed; `None`: the identity of this
/// width) or a flattened matrix.
pub(crate) enum Stream<T: Real> {
    Lifted(Option<DMatrix<T>>, usize),
    Dense(DMatrix<T>),
}

impl<T: Real> Stream<T> {
    /// The per-position metric of a lifted stream, formed.
    fn metric(m: &Option<DMatrix<T>>, width: usize) -> DMatrix<T> {
        m.clone().unwrap_or_else(|| DMatrix::identity(width, width))
    }

    /// The flattened Gram matrix on `n` positions, formed.
    pub(crate) fn into_dense(self, n: usize) -> Result<DMatrix<T>> {
        match self {
            Stream::Dense(g) => Ok(g),
            Stream::Lifted(m, width) => {
                let m = Stream::metric(&m, width);
                lift(&m, &independent_rows(&m), n)
            }
        }
    }
}

impl TensorSimilarity {
    /// `M = I_{d+1}` (inputs `x ∼ N(0, I)`), all outputs, no context length
    /// (vector models; a sequence model then asks for one).
    pub fn new() -> Self {
        Self {
            input_metric: None,
            outputs: Outputs::Trace,
            positions: None,
            context: None,
            max_memory: MemoryLimit::Machine,
            max_work: None,
        }
    }

    /// Compares sequence models on `n` positions ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention); weights do not
    /// depend on `n`). Position-wise models give the same similarity at
    /// every `n`. An error if `n = 0`.
    ///
    /// ```
    /// use tensor_similarity::{Error, TensorSimilarity};
    /// assert!(matches!(TensorSimilarity::new().with_context(0), Err(Error::ZeroContext)));
    /// ```
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

    /// The memory a comparison may use (default: what the machine has).
    /// Before it starts, a comparison estimates its peak memory from the
    /// models' shapes and the context length; one whose estimate exceeds
    /// the limit is refused with [`Error::MemoryLimit`], which names the
    /// estimate and the largest context that fits.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, Error, MemoryLimit, Model, RecursiveSimilarity, TensorSimilarity};
    ///
    /// let w = |k: usize| DMatrix::from_fn(4, 4, |i, j| 0.1 * ((i + 2 * j + k) % 5) as f64);
    /// let attention = Attention::builder(2, w(0), w(1), w(2), w(3), w(4), w(5)).build()?;
    /// let model = Model::builder().block(attention).build()?;
    /// let metric = TensorSimilarity::new()
    ///     .with_context(1000)?
    ///     .with_max_memory(MemoryLimit::Bytes(1 << 30));
    /// match metric.similarity(&model, &model) {
    ///     Err(Error::MemoryLimit { largest_context, .. }) => assert!(largest_context.unwrap() < 1000),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn with_max_memory(mut self, limit: MemoryLimit) -> Self {
        self.max_memory = limit;
        self
    }

    /// The memory limit comparisons are checked against.
    pub fn max_memory(&self) -> MemoryLimit {
        self.max_memory
    }

    /// The most multiply–adds a comparison may take (default: no limit).
    /// Before it starts, a comparison estimates its work from the models'
    /// shapes and the context length
    /// ([`work_estimate`](Self::work_estimate)); one whose estimate exceeds
    /// the limit is refused with [`Error::WorkLimit`], which names the
    /// estimate and the largest context within the limit. Attention's work
    /// grows as `n⁴` with the context (the [attention
    /// guide](crate::guide::attention#cost-model)): a context that would
    /// take hours is refused instead of started. A NaN or negative limit
    /// refuses everything.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, Error, Model, RecursiveSimilarity, TensorSimilarity};
    ///
    /// let w = |k: usize| DMatrix::from_fn(4, 4, |i, j| 0.1 * ((i + 2 * j + k) % 5) as f64);
    /// let attention = Attention::builder(2, w(0), w(1), w(2), w(3), w(4), w(5)).build()?;
    /// let model = Model::builder().block(attention).build()?;
    /// let metric = TensorSimilarity::new().with_context(64)?.with_max_work(1e9);
    /// assert!(metric.work_estimate(&model, &model)? > 1e9);
    /// match metric.similarity(&model, &model) {
    ///     Err(Error::WorkLimit { largest_context: Some(n), .. }) => assert!(n < 64),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn with_max_work(mut self, multiply_adds: f64) -> Self {
        self.max_work = Some(if multiply_adds.is_nan() {
            f64::NEG_INFINITY
        } else {
            multiply_adds
        });
        self
    }

    /// The work limit comparisons are checked against, in multiply–adds
    /// (`None`: no limit).
    pub fn max_work(&self) -> Option<f64> {
        self.max_work
    }

    /// The estimated multiply–adds of comparing `a` and `b`
    /// ([`similarity`](RecursiveSimilarity::similarity): `⟨A,B⟩`, `⟨A,A⟩`
    /// and `⟨B,B⟩`) at the context length set (1 for vector models): the
    /// sum of the blocks' [`gram_step_work`](TensorBlock::gram_step_work).
    /// An estimate, on the high side; the check of
    /// [`with_max_work`](Self::with_max_work) uses it.
    pub fn work_estimate<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        let n = self.context_for(a, b)?;
        Ok(self.similarity_work(a, b, n))
    }

    pub(crate) fn similarity_work<T: Real>(&self, a: &Model<T>, b: &Model<T>, n: usize) -> f64 {
        self.product_work(a, Some(b), n)
            + self.product_work(a, None, n)
            + self.product_work(b, None, n)
    }

    /// The estimated multiply–adds of `⟨A,B⟩` (`b = None`: `⟨A,A⟩`) at `n`
    /// positions: each block's step, at one position while the input
    /// stream is still per position and both blocks act per position (the
    /// recursion then computes two position blocks and lifts them).
    fn product_work<T: Real>(&self, a: &Model<T>, b: Option<&Model<T>>, n: usize) -> f64 {
        let b = b.unwrap_or(a);
        let mut lifted = self
            .input_metric
            .as_ref()
            .is_none_or(|m| m.nrows().checked_sub(1) == Some(a.input_width()));
        let last = a.depth() - 1;
        let mut work = 0.0;
        for (position, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
            let positionwise = !x.mixes_positions() && !y.mixes_positions();
            work += if lifted && positionwise {
                2.0 * x.gram_step_work(&**y, 1)
            } else if position == last && is_affine(&**x) && is_affine(&**y) {
                // The fused readout: the kernel B_Aᵀ Q̃ B_B once, then one
                // dot product with Ĝ[p,p] per position read out.
                let (out, da, db) = (x.output_width(), x.input_width(), y.input_width());
                let (da, db) = (da as f64 + 1.0, db as f64 + 1.0);
                (out as f64 + n as f64) * da * db
            } else {
                x.gram_step_work(&**y, n)
            };
            lifted = false;
        }
        work
    }

    /// The estimated peak memory in bytes of comparing `a` and `b`
    /// ([`similarity`](RecursiveSimilarity::similarity): `⟨A,B⟩`, `⟨A,A⟩`
    /// and `⟨B,B⟩`, as many at once as there are threads), at the context
    /// length set (1 for vector models). An estimate, on the high side; the
    /// check of [`with_max_memory`](Self::with_max_memory) uses it.
    pub fn memory_estimate<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        let n = self.context_for(a, b)?;
        Ok(self.similarity_bytes(a, b, n))
    }

    pub(crate) fn similarity_bytes<T: Real>(&self, a: &Model<T>, b: &Model<T>, n: usize) -> f64 {
        let each = self.product_estimates(a, b, n);
        let at_once = if each[0] < CONCURRENT_PRODUCTS_BELOW {
            rayon::current_num_threads().clamp(1, 3)
        } else {
            1
        };
        each[..at_once].iter().sum()
    }

    /// The estimated bytes of `⟨A,B⟩`, `⟨A,A⟩` and `⟨B,B⟩`, largest first.
    fn product_estimates<T: Real>(&self, a: &Model<T>, b: &Model<T>, n: usize) -> [f64; 3] {
        let mut each = [
            self.product_bytes(a, Some(b), n),
            self.product_bytes(a, None, n),
            self.product_bytes(b, None, n),
        ];
        each.sort_by(|x, y| y.total_cmp(x));
        each
    }

    /// Whether [`similarity`](RecursiveSimilarity::similarity) runs its three
    /// products at once: only when each is small, where a step alone would
    /// leave threads idle. A large step keeps every thread busy by itself,
    /// and running three at once would triple the peak memory.
    pub(crate) fn products_at_once<T: Real>(&self, a: &Model<T>, b: &Model<T>, n: usize) -> bool {
        self.product_estimates(a, b, n)[0] < CONCURRENT_PRODUCTS_BELOW
    }

    /// The estimated peak bytes of `⟨A,B⟩` (`b = None`: `⟨A,A⟩`) at `n`
    /// positions: the largest step's input Gram matrix with what the step
    /// holds, mirroring [`product`](Self::product): the input stream stays
    /// per position until a block mixes positions, and the last step of
    /// affine blocks is read out without forming `G_L`.
    fn product_bytes<T: Real>(&self, a: &Model<T>, b: Option<&Model<T>>, n: usize) -> f64 {
        let b = b.unwrap_or(a);
        let last = a.depth() - 1;
        let flat_input = self
            .input_metric
            .as_ref()
            .is_some_and(|m| m.nrows().checked_sub(1) != Some(a.input_width()));
        let mut peak: f64 = 0.0;
        for (position, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
            let (dx, dy) = (x.input_width(), y.input_width());
            let input = if position > 0
                || flat_input
                || (n > 1 && (x.mixes_positions() || y.mixes_positions()))
            {
                flat_entries(n, dx, dy)
            } else {
                (dx as f64 + 1.0) * (dy as f64 + 1.0)
            };
            let fused = position == last
                && is_affine(&**x)
                && is_affine(&**y)
                && !matches!(&self.outputs, Outputs::Weights(q) if q.nrows() != x.output_width());
            let step = if fused {
                0.0
            } else {
                x.gram_step_scalars(&**y, n)
            };
            peak = peak.max(input + step);
        }
        scalars::<T>(peak)
    }

    /// Refuses a comparison whose estimated peak memory exceeds the limit,
    /// before it allocates anything.
    pub(crate) fn check_estimate(&self, bytes: impl Fn(usize) -> f64, n: usize) -> Result<()> {
        MemoryEstimate { at: bytes }.check(n, self.max_memory)
    }

    /// The input metric `M` on every input leg: `(d+1) × (d+1)` over one
    /// padded position (for sequences, lifted to the flattened stream with
    /// the shared constant as for i.i.d. rows: off-diagonal position blocks
    /// `M[1:,0] M[0,1:] / M[0,0]`), or `(n d + 1) × (n d + 1)` over the
    /// whole flattened stream at the context length `n`. `M = E[x̃ x̃ᵀ]`
    /// gives the data-aware similarity. An error unless it is square,
    /// symmetric, finite and has a non-negative diagonal.
    pub fn with_input_metric(mut self, metric: DMatrix<f64>) -> Result<Self> {
        check_metric("input metric", &metric)?;
        self.input_metric = Some(metric);
        Ok(self)
    }

    /// The input metric of `x ∼ N(μ, Σ)` (for sequences: i.i.d. rows):
    /// `M = E[x̃ x̃ᵀ] = [[1, μᵀ], [μ, Σ + μμᵀ]]`.
    pub fn with_input_gaussian(
        self,
        mean: &nalgebra::DVector<f64>,
        covariance: &DMatrix<f64>,
    ) -> Result<Self> {
        let d = mean.len();
        crate::validate::check_shape("input covariance", covariance, (d, d))?;
        let mut m = DMatrix::zeros(d + 1, d + 1);
        m[(0, 0)] = 1.0;
        m.view_mut((1, 0), (d, 1)).copy_from(mean);
        m.view_mut((0, 1), (1, d)).copy_from(&mean.transpose());
        m.view_mut((1, 1), (d, d))
            .copy_from(&(covariance + mean * mean.transpose()));
        self.with_input_metric(m)
    }

    /// Weights the outputs: `⟨A,B⟩ = tr(Q G_L[1:,1:])`, `Q` symmetric
    /// `n_L × n_L` (at every position of a sequence) or `n n_L × n n_L` over
    /// (position, output), position-major.
    pub fn with_output_weights(mut self, weights: DMatrix<f64>) -> Result<Self> {
        check_metric("output weights", &weights)?;
        self.outputs = Outputs::Weights(weights);
        Ok(self)
    }

    /// Compares only the listed outputs (0-based; "slice" similarity, e.g.
    /// one class's logit): `Q` is the 0/1 diagonal selecting them (at every
    /// position of a sequence).
    pub fn with_output_selection(mut self, outputs: Vec<usize>) -> Self {
        self.outputs = Outputs::Select(outputs);
        self
    }

    /// For sequence models: compares only the outputs at these positions
    /// (0-based; e.g. the last position of a language model). Combines with
    /// an output selection or per-position weights.
    pub fn with_position_selection(mut self, positions: Vec<usize>) -> Self {
        self.positions = Some(positions);
        self
    }

    /// The normalised cross Gram matrices `G_1 … G_L` of `a` and `b` (for
    /// sequences, flattened), each with its log scale: the state of the
    /// recursion after every block, for per-layer analyses.
    pub fn cross_grams<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<Vec<ScaledGram<T>>> {
        let n = self.context_for(a, b)?;
        // Every G_ℓ is kept, besides the peak of one product.
        self.check_estimate(
            |n| {
                let kept: f64 = a
                    .blocks()
                    .iter()
                    .zip(b.blocks())
                    .map(|(x, y)| flat_entries(n, x.output_width(), y.output_width()))
                    .sum();
                self.product_bytes(a, Some(b), n) + scalars::<T>(kept)
            },
            n,
        )?;
        let mut grams = Vec::with_capacity(a.depth());
        let mut state = (self.input_stream(a, n)?, 0.0);
        for position in 0..a.depth() {
            state = self.step(a, Some(b), position, state, n)?;
            if let Stream::Dense(g) = &state.0 {
                grams.push(ScaledGram {
                    gram: g.clone(),
                    ln_scale: state.1,
                });
            }
        }
        Ok(grams)
    }

    /// `⟨A,B⟩` (`b = None`: `⟨A,A⟩` by the symmetric steps): the recursion
    /// over every block but the last, then the last block's step read out.
    fn product<T: Real>(&self, a: &Model<T>, b: Option<&Model<T>>) -> Result<LogScaled> {
        let n = self.context_for(a, b.unwrap_or(a))?;
        self.check_estimate(|n| self.product_bytes(a, b, n), n)?;
        check_work(|n| self.product_work(a, b, n), n, self.max_work)?;
        let last = a.depth() - 1;
        let mut state = (self.input_stream(a, n)?, 0.0);
        for position in 0..last {
            state = self.step(a, b, position, state, n)?;
        }
        let block_b = b.map(|b| &*b.blocks()[last]);
        self.finish(&*a.blocks()[last], block_b, last, state, n)
    }

    /// The last step, at chain index `last`, read out: `⟨A,B⟩` from the
    /// state before it (`block_b = None`: a self product).
    pub(crate) fn finish<T: Real>(
        &self,
        block_a: &dyn TensorBlock<T>,
        block_b: Option<&dyn TensorBlock<T>>,
        last: usize,
        state: (Stream<T>, f64),
        n: usize,
    ) -> Result<LogScaled> {
        let readout = self.readout(block_a, block_b.unwrap_or(block_a))?;
        self.finish_with(readout.as_ref(), block_a, block_b, last, state, n)
    }

    /// [`finish`](Self::finish) with the last blocks' [`readout`](Self::readout),
    /// made once for many states.
    pub(crate) fn finish_with<T: Real>(
        &self,
        readout: Option<&Readout<T>>,
        block_a: &dyn TensorBlock<T>,
        block_b: Option<&dyn TensorBlock<T>>,
        last: usize,
        state: (Stream<T>, f64),
        n: usize,
    ) -> Result<LogScaled> {
        let ln_scale = state.1 * block_a.order() as f64;
        let value = match readout {
            Some(r) => self.fused_value(r, &state.0, n)?,
            None => {
                let (g, ln) = self.step_blocks(block_a, block_b, last, state, n)?;
                let Stream::Dense(g) = g else {
                    unreachable!("a step returns a dense Gram matrix")
                };
                return self.read_out_scaled(&g, ln, block_a.output_width(), n);
            }
        };
        if !value.is_finite() {
            return Err(Error::NumericalBreakdown {
                block: last,
                reason: "the inner product overflowed in the last step".into(),
            });
        }
        Ok(LogScaled::from_scaled(to_f64(value), ln_scale))
    }

    /// `⟨A,B⟩` read out from the last block's output `e^ln_scale · g`.
    pub(crate) fn read_out_scaled<T: Real>(
        &self,
        g: &DMatrix<T>,
        ln_scale: f64,
        out_width: usize,
        n: usize,
    ) -> Result<LogScaled> {
        Ok(LogScaled::from_scaled(
            to_f64(self.read_out(g, out_width, n)?),
            ln_scale,
        ))
    }

    /// The context length a comparison runs at: the one set, else 1 for
    /// vector models; an error for a sequence model without one.
    pub(crate) fn context_for<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<usize> {
        a.check_comparable(b)?;
        match self.context {
            Some(n) => Ok(n),
            None if a.is_sequence() => Err(Error::MissingContext(Side::A)),
            None if b.is_sequence() => Err(Error::MissingContext(Side::B)),
            None => Ok(1),
        }
    }

    /// `G_0`: the input metric, per position (lifted) or flattened.
    pub(crate) fn input_stream<T: Real>(&self, a: &Model<T>, n: usize) -> Result<Stream<T>> {
        let d = a.input_width();
        let per_position = d + 1;
        let flat = flat_width(n, d)?;
        Ok(match &self.input_metric {
            None => Stream::Lifted(None, per_position),
            Some(m) if m.nrows() == per_position => {
                if n > 1 && m[(0, 0)] <= 0.0 {
                    return Err(Error::InvalidOption {
                        what: "input metric",
                        reason: "entry (0, 0) must be positive to lift it to a sequence".into(),
                    });
                }
                Stream::Lifted(Some(symmetrised(m)), per_position)
            }
            Some(m) if m.nrows() == flat => Stream::Dense(symmetrised(m)),
            Some(m) => {
                return Err(Error::Shape {
                    what: format!(
                        "input metric (per position, or flattened over {n} positions: {flat} × {flat})"
                    ),
                    expected: (per_position, per_position),
                    found: m.shape(),
                });
            }
        })
    }

    /// One block of the recursion, normalised: `(G_{ℓ−1}, ln s) ↦ (G_ℓ, ln s')`.
    fn step<T: Real>(
        &self,
        a: &Model<T>,
        b: Option<&Model<T>>,
        position: usize,
        state: (Stream<T>, f64),
        n: usize,
    ) -> Result<(Stream<T>, f64)> {
        let block_b = b.map(|b| &*b.blocks()[position]);
        self.step_blocks(&*a.blocks()[position], block_b, position, state, n)
    }

    /// [`step`](Self::step) of two blocks (`block_b = None`: the self step)
    /// at chain index `position`.
    pub(crate) fn step_blocks<T: Real>(
        &self,
        block_a: &dyn TensorBlock<T>,
        block_b: Option<&dyn TensorBlock<T>>,
        position: usize,
        (g, ln_scale): (Stream<T>, f64),
        n: usize,
    ) -> Result<(Stream<T>, f64)> {
        let step = |g: &DMatrix<T>, context: usize| match block_b {
            Some(block_b) => block_a.gram_step(block_b, g, context),
            None => block_a.self_gram_step(g, context),
        };
        let positionwise =
            !block_a.mixes_positions() && !block_b.is_some_and(|x| x.mixes_positions());
        let next = match g {
            Stream::Dense(g) => step(&g, n)?,
            Stream::Lifted(m, width) => match (
                affine_map(block_a),
                block_b.map_or(Some(None), |x| affine_map(x).map(Some)),
            ) {
                // Affine blocks on the lifted metric: B_A M B_Bᵀ on the
                // diagonal position blocks, (B_A m)(B_B m)ᵀ / M_00 off it,
                // without forming M when it is the identity.
                (Some(ba), Some(bb)) => {
                    let bb = bb.as_ref().unwrap_or(&ba);
                    // B (m mᵀ / M_00) Bᵀ = (B m)(B m)ᵀ / M_00, m = M e_0.
                    let (diag, ba_m, bb_m, m00) = match &m {
                        Some(m) => {
                            let (m0, m00) = (m.column(0), m[(0, 0)]);
                            (mul_nt(&mul(&ba, m), bb), &ba * m0, bb * m0, m00)
                        }
                        None => (
                            mul_nt(&ba, bb),
                            ba.column(0).into_owned(),
                            bb.column(0).into_owned(),
                            T::one(),
                        ),
                    };
                    let diag = if block_b.is_none() {
                        (&diag + diag.transpose()) * from_f64::<T>(0.5)
                    } else {
                        diag
                    };
                    lift(&diag, &((ba_m * bb_m.transpose()) / m00), n)?
                }
                _ => {
                    let m = Stream::metric(&m, width);
                    if n == 1 {
                        step(&m, 1)?
                    } else if positionwise {
                        // Every diagonal position block of G_0 is M, every
                        // other one the independent-rows block.
                        lift(&step(&m, 1)?, &step(&independent_rows(&m), 1)?, n)?
                    } else {
                        step(&lift(&m, &independent_rows(&m), n)?, n)?
                    }
                }
            },
        };
        normalise(next, ln_scale * block_a.order() as f64, position)
    }
}

/// A step's output `e^ln_scale · next` divided by its largest entry, the
/// logarithm of which moves to the scale (homogeneity: `step(e^s Ĝ) =
/// e^{k s} step(Ĝ)`, so the caller passes `k s`); an error if it overflowed
/// or lost its resolution.
pub(crate) fn normalise<T: Real>(
    mut next: DMatrix<T>,
    mut ln_scale: f64,
    position: usize,
) -> Result<(Stream<T>, f64)> {
    let (largest, output) = largest_entries(&next);
    if !largest.is_finite() || !ln_scale.is_finite() {
        return Err(Error::NumericalBreakdown {
            block: position,
            reason: format!("the Gram matrix overflowed (log scale {ln_scale:.3e})"),
        });
    }
    if largest > T::zero() {
        // Exact division, element by element: the same bits in parallel.
        next.as_mut_slice()
            .par_chunks_mut(1 << 14)
            .for_each(|chunk| chunk.iter_mut().for_each(|x| *x /= largest));
        ln_scale += to_f64(largest).ln();
    }
    if largest > T::zero() {
        // Division by a positive number is monotone, rounding included: the
        // largest quotient is the quotient of the largest.
        check_resolved::<T>(to_f64(output / largest), position)?;
    }
    Ok((Stream::Dense(next), ln_scale))
}

impl TensorSimilarity {
    /// The readout of the last step without forming `G_L`, where the last
    /// blocks are position-wise of order 1 and the readout is per position:
    /// `Σ_p tr(Q̃ B_A Ĝ[p,p] B_Bᵀ) = Σ_p ⟨Ĝ[p,p], B_Aᵀ Q̃ B_B⟩` with `B` the
    /// padded affine map. `None` where that does not apply.
    pub(crate) fn readout<T: Real>(
        &self,
        a: &dyn TensorBlock<T>,
        b: &dyn TensorBlock<T>,
    ) -> Result<Option<Readout<T>>> {
        let (Some(ba), Some(bb)) = (affine_map(a), affine_map(b)) else {
            return Ok(None);
        };
        let nl = a.output_width();
        if let Outputs::Weights(q) = &self.outputs
            && q.nrows() != nl
        {
            return Ok(None);
        }
        let (ma, mb) = (ba.ncols() - 1, bb.ncols() - 1);
        let (ba, bb) = (ba.rows(1, nl), bb.rows(1, nl));
        let kernel = match &self.outputs {
            Outputs::Trace => mul_tn(&ba, &bb),
            Outputs::Select(outputs) => {
                check_outputs(outputs, nl)?;
                let mut k = DMatrix::zeros(ba.ncols(), bb.ncols());
                for &o in outputs {
                    k += ba.row(o).transpose() * bb.row(o);
                }
                k
            }
            Outputs::Weights(q) => {
                crate::validate::check_shape("output weights", q, (nl, nl))?;
                mul_tn(&ba, &mul(&q.map(from_f64::<T>), &bb))
            }
        };
        Ok(Some(Readout {
            kernel,
            widths: (ma, mb),
        }))
    }

    /// [`readout`](Self::readout)'s value on the last block's input `g`.
    fn fused_value<T: Real>(&self, readout: &Readout<T>, g: &Stream<T>, n: usize) -> Result<T> {
        let Readout {
            kernel,
            widths: (ma, mb),
        } = readout;
        let (ma, mb) = (*ma, *mb);
        let positions = self.positions_at(n)?;
        Ok(match g {
            Stream::Lifted(m, _) => {
                let value = match m {
                    Some(m) => m.dot(kernel),
                    None => kernel.trace(),
                };
                value * from_f64::<T>(positions.len() as f64)
            }
            Stream::Dense(g) => {
                let mut block = DMatrix::zeros(ma + 1, mb + 1);
                let mut value = T::zero();
                for p in positions {
                    padded_block(g, p, p, ma, mb, &mut block);
                    value += block.dot(kernel);
                }
                value
            }
        })
    }

    /// The positions read out: the selection, checked, or all `n`.
    fn positions_at(&self, n: usize) -> Result<Vec<usize>> {
        match &self.positions {
            None => Ok((0..n).collect()),
            Some(ps) => match ps.iter().find(|&&p| p >= n) {
                Some(p) => Err(Error::InvalidOption {
                    what: "position selection",
                    reason: format!("position {p} does not exist at context length {n}"),
                }),
                None => Ok(ps.clone()),
            },
        }
    }

    /// `⟨A,B⟩` from the flattened `G_L` (`n n_L + 1` square).
    fn read_out<T: Real>(&self, g: &DMatrix<T>, nl: usize, n: usize) -> Result<T> {
        let positions = self.positions_at(n)?;
        let mut value = T::zero();
        match &self.outputs {
            Outputs::Trace => {
                for p in positions {
                    (0..nl).for_each(|o| value += g[(1 + p * nl + o, 1 + p * nl + o)]);
                }
            }
            Outputs::Select(outputs) => {
                check_outputs(outputs, nl)?;
                for p in positions {
                    for &o in outputs {
                        value += g[(1 + p * nl + o, 1 + p * nl + o)];
                    }
                }
            }
            Outputs::Weights(q) if q.nrows() == nl => {
                let q = q.map(from_f64::<T>);
                for p in positions {
                    value += q.dot(&g.view((1 + p * nl, 1 + p * nl), (nl, nl)).transpose());
                }
            }
            Outputs::Weights(q) => {
                crate::validate::check_shape("output weights", q, (n * nl, n * nl))?;
                if self.positions.is_some() {
                    return Err(Error::InvalidOption {
                        what: "position selection",
                        reason: "weights over the flattened output already choose positions".into(),
                    });
                }
                value = q
                    .map(from_f64::<T>)
                    .dot(&g.view((1, 1), (n * nl, n * nl)).transpose());
            }
        }
        Ok(value)
    }
}

/// The largest magnitude of `g`'s entries and of its output part
/// `g[1:,1:]` (zero if empty), in one pass over its columns in parallel (a
/// maximum is exact: the same bits in any order); NaN if an entry is NaN.
fn largest_entries<T: Real>(g: &DMatrix<T>) -> (T, T) {
    let height = g.nrows();
    if height == 0 {
        return (T::zero(), T::zero());
    }
    let nan = |x: T| x.partial_cmp(&x).is_none();
    // NaN, once met, stays.
    let larger = |a: T, b: T| if !nan(a) && (nan(b) || b > a) { b } else { a };
    g.as_slice()
        .par_chunks(height)
        .enumerate()
        .map(|(j, column)| {
            let mut output = T::zero();
            let mut all = column[0].abs();
            for x in &column[1..] {
                let x = x.abs();
                all = larger(all, x);
                output = larger(output, x);
            }
            if j == 0 {
                output = T::zero();
            }
            if nan(all) {
                output = all;
            }
            (all, output)
        })
        .reduce(
            || (T::zero(), T::zero()),
            |(a, b), (c, d)| (larger(a, c), larger(b, d)),
        )
}

/// An error if the output part `G[1:,1:]` of a normalised Gram matrix has
/// fallen so far below its constant part `G[0,0]` that it is about to
/// leave `T`'s normal range (deep stacks of contractive blocks without
/// biases: the constant keeps weight 1 while the map shrinks). One scale
/// cannot hold both; going on would lose its digits to subnormals and then
/// read a norm of exactly zero, which would be false. `output` is the
/// largest magnitude in `G[1:,1:]`.
fn check_resolved<T: Real>(output: f64, position: usize) -> Result<()> {
    if output > 0.0 && output < smallest_resolved::<T>() {
        return Err(Error::NumericalBreakdown {
            block: position,
            reason: format!(
                "the model's map has shrunk to {output:.1e} of its constant part, below what one \
                 scale resolves beside it: its norm is not zero, but too small to compare in this \
                 precision (a deep stack of contractive blocks without biases)"
            ),
        });
    }
    Ok(())
}

/// `(M + Mᵀ) / 2` in `T`: a metric is symmetric up to rounding, and the self
/// kernels need it exactly.
fn symmetrised<T: Real>(m: &DMatrix<f64>) -> DMatrix<T> {
    DMatrix::from_fn(m.nrows(), m.ncols(), |i, j| {
        from_f64(0.5 * (m[(i, j)] + m[(j, i)]))
    })
}

/// Whether [`affine_map`] applies to `block`, without forming it.
fn is_affine<T: Real>(block: &dyn TensorBlock<T>) -> bool {
    block
        .as_cp()
        .is_some_and(|f| f.order() == 1 && !block.mixes_positions())
}

/// The padded affine map `B = D̃ U` of a position-wise order-1 CP block
/// (`(n+1) × (m+1)`); `None` for any other block.
fn affine_map<T: Real>(block: &dyn TensorBlock<T>) -> Option<DMatrix<T>> {
    if !is_affine(block) {
        return None;
    }
    let f = block.as_cp()?;
    Some(match f.output() {
        Some(d) => mul(d, f.stacked_inputs()),
        None => f.stacked_inputs().clone(),
    })
}

/// `m mᵀ / M_00` with `m = M e_0`: the position block of `E[x̃ x̃ᵀ]` between
/// two independent rows whose own block is `M` (symmetric).
fn independent_rows<T: Real>(m: &DMatrix<T>) -> DMatrix<T> {
    let column = m.column(0);
    (column * column.transpose()) / m[(0, 0)]
}

/// The flattened Gram matrix whose diagonal position blocks are `diag` and
/// other position blocks `off` (both padded, sharing their constant row and
/// column).
fn lift<T: Real>(diag: &DMatrix<T>, off: &DMatrix<T>, n: usize) -> Result<DMatrix<T>> {
    let (ra, rb) = (diag.nrows() - 1, diag.ncols() - 1);
    let mut g = zeros(flat_width(n, ra)?, flat_width(n, rb)?)?;
    g[(0, 0)] = diag[(0, 0)];
    for p in 0..n {
        g.view_mut((0, 1 + p * rb), (1, rb))
            .copy_from(&diag.view((0, 1), (1, rb)));
        g.view_mut((1 + p * ra, 0), (ra, 1))
            .copy_from(&diag.view((1, 0), (ra, 1)));
        for q in 0..n {
            let src = if p == q { diag } else { off };
            g.view_mut((1 + p * ra, 1 + q * rb), (ra, rb))
                .copy_from(&src.view((1, 1), (ra, rb)));
        }
    }
    Ok(g)
}

fn check_outputs(outputs: &[usize], n: usize) -> Result<()> {
    match outputs.iter().find(|&&o| o >= n) {
        Some(o) => Err(Error::InvalidOption {
            what: "output selection",
            reason: format!("output {o} does not exist; the models have {n} outputs"),
        }),
        None => Ok(()),
    }
}

impl<T: Real> RecursiveSimilarity<T> for TensorSimilarity {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        self.product(a, Some(b))
    }

    /// `⟨A, A⟩` with the symmetric steps: every `G_AA` is symmetric, so
    /// the kernels compute only half of it (about half the work of
    /// [`inner_product`](Self::inner_product)`(a, a)`, same value up to
    /// rounding).
    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        self.product(a, None)
    }

    /// Then checks the work of `⟨A,B⟩` against
    /// [`with_max_work`](TensorSimilarity::with_max_work), so that a matrix
    /// refuses a pair (or a model's norm, `a = b`) before any pair runs.
    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        let n = self.context_for(a, b)?;
        self.check_estimate(
            |n| at_once.max(1) as f64 * self.product_estimates(a, b, n)[0],
            n,
        )?;
        check_work(|n| self.product_work(a, Some(b), n), n, self.max_work)
    }

    /// The cosine, with `⟨A,B⟩`, `⟨A,A⟩` and `⟨B,B⟩` computed in parallel when
    /// each is small, one after the other when each is large.
    fn similarity(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        let n = self.context_for(a, b)?;
        self.check_estimate(|n| self.similarity_bytes(a, b, n), n)?;
        check_work(|n| self.similarity_work(a, b, n), n, self.max_work)?;
        if !self.products_at_once(a, b, n) {
            let ab = self.inner_product(a, b)?;
            return cosine(ab, self.squared_norm(a)?, self.squared_norm(b)?);
        }
        let (ab, (aa, bb)) = rayon::join(
            || self.inner_product(a, b),
            || rayon::join(|| self.squared_norm(a), || self.squared_norm(b)),
        );
        cosine(ab?, aa?, bb?)
    }
}

/// One step of the Gram recursion: `G' = D̃_A H D̃_Bᵀ` for CP blocks `a`, `b`
/// of the same order and the cross Gram matrix `g` of their inputs
/// (`(m_A+1) × (m_B+1)`); `G'` is `(n_A+1) × (n_B+1)`. (Any block kind, on
/// sequences too: [`TensorBlock::gram_step`].)
/// An error for a block without CP factors.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, DMatrix};
/// use tensor_similarity::{cp_gram_step, Linear};
///
/// // For linear blocks, G' = B_A G B_Bᵀ with the padded matrices.
/// let w = Linear::new(dmatrix![2.0, 0.0; 0.0, 3.0], None)?;
/// let g = cp_gram_step(&w, &w, &DMatrix::identity(3, 3))?;
/// assert_eq!(g, DMatrix::from_diagonal(&nalgebra::dvector![1.0, 4.0, 9.0]));
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn cp_gram_step<T: Real>(
    a: &dyn TensorBlock<T>,
    b: &dyn TensorBlock<T>,
    g: &DMatrix<T>,
) -> Result<DMatrix<T>> {
    let mut out = DMatrix::zeros(0, 0);
    GramWorkspace::new().step(a, b, g, &mut out)?;
    Ok(out)
}

/// The former name of [`cp_gram_step`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `cp_gram_step` (it takes CP blocks only; any kind steps through `TensorBlock::gram_step`)"
)]
pub fn gram_step<T: Real>(
    a: &dyn TensorBlock<T>,
    b: &dyn TensorBlock<T>,
    g: &DMatrix<T>,
) -> Result<DMatrix<T>> {
    cp_gram_step(a, b, g)
}

/// A square, finite, symmetric matrix with a non-negative diagonal: what an
/// input metric or output weighting must be.
fn check_metric(what: &'static str, m: &DMatrix<f64>) -> Result<()> {
    crate::validate::check_square(what, m)?;
    crate::validate::check_finite(what, m)?;
    crate::validate::check_symmetric(what, m, m.amax() * f64::EPSILON * 64.0)?;
    match (0..m.nrows()).find(|&i| m[(i, i)] < 0.0) {
        Some(i) => Err(Error::InvalidOption {
            what,
            reason: format!("diagonal entry {i} is negative"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass maxima against nalgebra's `amax` of the whole matrix and
    /// of `G[1:,1:]`, on shapes with one row, one column, and many columns
    /// (several parallel chunks).
    #[test]
    fn largest_entries_are_the_whole_and_output_maxima() {
        for (r, c) in [(1, 1), (1, 5), (5, 1), (3, 4), (70, 300)] {
            let g = DMatrix::from_fn(r, c, |i, j| ((i * 31 + j * 17) % 23) as f64 - 11.5);
            let (all, output) = largest_entries(&g);
            assert_eq!(all, g.amax());
            let expected = if r > 1 && c > 1 {
                g.view((1, 1), (r - 1, c - 1)).amax()
            } else {
                0.0
            };
            assert_eq!(output, expected, "{r} × {c}");
        }
    }

    /// A NaN anywhere, the first entry included, is a breakdown, not a
    /// matrix normalised around it.
    #[test]
    fn a_nan_entry_is_a_breakdown() {
        for at in [(0, 0), (0, 3), (4, 0), (2, 2), (69, 299)] {
            let mut g = DMatrix::from_element(70, 300, 1.0);
            g[at] = f64::NAN;
            let err = normalise(g, 0.0, 3).map(|_| ()).unwrap_err();
            assert!(
                matches!(err, Error::NumericalBreakdown { block: 3, .. }),
                "{at:?}: {err}"
            );
        }
    }

    /// Normalised: the largest entry is 1 and its log moved to the scale.
    #[test]
    fn normalise_moves_the_largest_entry_to_the_scale() {
        let g = DMatrix::from_fn(9, 9, |i, j| (i + 2 * j) as f64 - 7.0);
        let (Stream::Dense(n), s) = normalise(g.clone(), 1.5, 0).unwrap() else {
            panic!("a dense state");
        };
        assert_eq!(n.amax(), 1.0);
        assert_eq!(s, 1.5 + 17f64.ln());
        assert_eq!(n, g / 17.0);
    }
}
