//! Gaussian functional similarity ([SPEC §3](crate::spec#3-gaussian-functional-similarity)): the cosine of two models'
//! functions in `L²(N(μ, Σ))`,
//!
//! ```text
//! ⟨f_A, f_B⟩ = E_{x∼N(μ,Σ)}[f_A(x) · f_B(x)],     sim = ⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩)
//! ```
//!
//! over the non-constant outputs, uncentred (default `μ = 0, Σ = I`).
//!
//! # Moment propagation
//!
//! The state after block `ℓ` is the joint first and second moments of the two
//! models' padded activations `ã`, `b̃`: the means `m_A, m_B` and the
//! covariance blocks `C_AA, C_AB, C_BB`. At the input `ã = b̃ = x̃ = (1, x)`,
//! so `m = (1, μ)` and `C = [[0, 0], [0, Σ]]` for all three blocks. A block
//! in padded CP form `ỹ = D̃ z`, `z = (U_1 ã) ∘ … ∘ (U_k ã)`, needs `E[z_A]`
//! and `Cov(z_A, z_B)` (and the same for `A, A` and `B, B`); then
//! `m' = D̃ E[z]` and `C'_AB = D̃_A Cov(z_A, z_B) D̃_Bᵀ`.
//!
//! Write `u_j = U_j ã` (`j = 1…k_A`) and `v_j = U_j b̃` (`j = 1…k_B`) for the
//! legs. If `(ã, b̃)` is jointly Gaussian, Isserlis' (Wick's) theorem for a
//! non-centred Gaussian gives `E[Π_j u_j[ρ] Π_j v_j[ρ']]` as the sum over all
//! partitions of the `k_A + k_B` legs into singletons (a mean, `U_j m`) and
//! pairs (a covariance, `U_i C U_jᵀ`): a pair of an A-leg and a B-leg is a
//! matrix over `(ρ, ρ')`, a pair within one side is that side's diagonal.
//! The sum is evaluated grouped by its set `M` of cross pairs (A-leg, B-leg):
//!
//! ```text
//! E[z_A z_Bᵀ] = Σ_M (∘_{(i,j)∈M} X_ij) ∘ (α_A(A∖M) ⊗ α_B(B∖M)),   X_ij = U^A_i C_AB (U^B_j)ᵀ
//! ```
//!
//! where `α_A(S)[ρ] = E[Π_{j∈S} u_j[ρ]]` sums the partitions of the A-legs in
//! `S` into singletons and A–A pairs (computed once per subset, by the
//! recursion `α(S) = μ_i ∘ α(S∖i) + Σ_{j∈S∖i} diag(U_i C U_jᵀ) ∘ α(S∖{i,j})`).
//! The empty `M` is `E[z_A] E[z_B]ᵀ`, so `Cov(z_A, z_B)` is the sum over the
//! non-empty `M` and needs no subtraction. The two blocks at one position may
//! have different orders and kinds. For `k_A = k_B = 2` the second-moment
//! form of [SPEC §3](crate::spec#3-gaussian-functional-similarity) is used instead:
//! `Cov(z_A, z_B) = X̂_11∘X̂_22 + X̂_12∘X̂_21 − 2 (μ_a1∘μ_a2)(μ_b1∘μ_b2)ᵀ` with
//! `X̂_ij` built from the second moment `S_AB = C_AB + m_A m_Bᵀ` (the
//! `E[a_1a_2] ⊗ E[b_1b_2]` term of [SPEC §3](crate::spec#3-gaussian-functional-similarity) cancels against `E[z_A]E[z_B]ᵀ`).
//!
//! A block's symmetry group plays no part: the metric compares functions,
//! and the function does not depend on the order of legs that read the same
//! input.
//!
//! # Exact or Gaussian closure
//!
//! A block of order `k ≥ 2` needs moments of its input up to order `2k`,
//! which Isserlis gives only for a Gaussian input: moment propagation is
//! exact when all such blocks of both models sit at one position. Two
//! chains of position-wise CP blocks of degree at most [`MAX_EXACT_DEGREE`]
//! (three bilinear blocks) are computed exactly another way, by the Wick sum
//! over the legs of both models' trees, grouped into orbits (see
//! [the metrics guide](crate::guide::metrics#exact-at-depth)). Everything
//! else is a **Gaussian closure** (later blocks read the Gaussian with the
//! tracked mean and covariance, dropping every joint cumulant of order
//! `≥ 3`), with no error bound: see
//! [the metrics guide](crate::guide::metrics#exact-or-gaussian-closure).
//! [`GaussianSimilarity::is_exact`] says which holds, and
//! [`GaussianSimilarity::closure`] computes the closure for any pair.
//!
//! # Sequences
//!
//! With [`GaussianSimilarity::with_context`] the input is a sequence with
//! i.i.d. rows `N(μ, Σ)`, flattened with one shared constant ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)).
//! Position-wise blocks take the step above per pair of positions; bilinear
//! attention has its own exact step, Isserlis' sum over the legs of two
//! attention configurations written as paths and cycles through their score
//! nodes (the [metrics guide](crate::guide::metrics#the-gaussian-metric-on-sequences)
//! derives it and gives its cost). One attention block with linear maps
//! around it is exact; deeper stacks are the closure.
//!
//! # Normalisation
//!
//! A block's output moments are homogeneous in its input state when the
//! means count with degree 1 and the covariances with degree 2 (the constant
//! channel `ã_0` included), so each model's state is kept as
//! `ã = λ_A â` with `(m̂_A, Ĉ_AA)` divided by their largest entry (of `|m̂|`
//! and `√diag Ĉ`) after every block and `ln λ_A ← k_A ln λ_A + ln c_A`
//! carried apart, and `Ĉ_AB = C_AB / (λ_A λ_B)`. Inner products come back as
//! [`LogScaled`], and nothing overflows at any depth.

pub(crate) mod cp;
mod exact;
mod input;
pub(crate) mod moments;
pub mod monte_carlo;
mod wick;

pub use exact::MAX_EXACT_DEGREE;

pub use moments::{JointMoments, Moments};
pub use monte_carlo::{GaussianMonteCarlo, MonteCarloEstimate, MonteCarloMatrix};

use nalgebra::{DMatrix, DVector};

use crate::error::{Error, Result, Side};
use crate::model::Model;
use crate::recursion::{RecursiveSimilarity, cosine};
use crate::resources::{MemoryEstimate, MemoryLimit, flat_entries, scalars};
use crate::scalar::{LogScaled, Real};
use input::GaussianInput;

/// The highest block order the Wick expansion accepts: its cost grows like
/// `Σ_p C(k,p)² p!` (the partial matchings between the legs of the two blocks), about
/// 1.4 million Hadamard products of `r_A × r_B` matrices at `k = 8`.
pub const MAX_GAUSSIAN_ORDER: usize = 8;

/// The Gaussian functional similarity of [SPEC §3](crate::spec#3-gaussian-functional-similarity):
/// `⟨f_A, f_B⟩ = E_{x∼N(μ,Σ)}[f_A(x)·f_B(x)]`, exactly where it can be
/// computed (chains up to degree [`MAX_EXACT_DEGREE`], one attention
/// block) and by the Gaussian closure elsewhere (see the
/// [module documentation](self) for the Isserlis/Wick expansion, what
/// "exact" and "closure" mean, and the normalisation).
///
/// The models need the same input and output widths; their hidden widths
/// and block orders may differ position by position. The closure (and
/// with it every model with attention) also needs the same depth.
///
/// `E[f_A·f_B]` is bilinear in the functions, so the provided
/// [`difference_similarity`](RecursiveSimilarity::difference_similarity)
/// is exact when every pair it combines is exact. Closure values are not
/// bilinear in the models, so their combination is an approximation too. It
/// can fail with [`Error::ZeroNorm`] when a combined squared norm comes out
/// non-positive.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{Bilinear, GaussianSimilarity, Model, RecursiveSimilarity};
///
/// // f(x) = x_1 · x_2 and g(x) = x_1²: uncorrelated under N(0, I).
/// let f = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![0.0, 1.0])?).build()?;
/// let g = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![1.0, 0.0])?).build()?;
/// let metric = GaussianSimilarity::new();
/// assert!(metric.similarity(&f, &g)?.abs() < 1e-12);
/// // E[x_1⁴] = 3.
/// assert!((metric.squared_norm(&g)?.to_f64() - 3.0).abs() < 1e-12);
/// // With mean μ = (1, 1): E[x_1 x_2 · x_1²] = μ_2 E[x_1³] = 4, E[(x_1x_2)²] = 4, E[x_1⁴] = 10.
/// let shifted = GaussianSimilarity::new().with_mean(dvector![1.0, 1.0])?;
/// let report = shifted.report(&f, &g)?;
/// assert!(report.exact);
/// assert!((report.similarity - 4.0 / (4.0f64 * 10.0).sqrt()).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaussianSimilarity {
    input: GaussianInput,
    context: Option<usize>,
    max_memory: MemoryLimit,
    /// Always the moment closure, even where the exact value is computable.
    closure: bool,
    /// The most multiply-adds the exact sum at depth may take.
    exact_work: f64,
}

/// The default of [`GaussianSimilarity::with_exact_work`]: `3·10¹¹`
/// multiply-adds, about a minute on two cores (the
/// [metrics guide](crate::guide::metrics#exact-at-depth) has the measured
/// rate).
pub const DEFAULT_EXACT_WORK: f64 = 3e11;

/// A Gaussian similarity together with whether it is exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianReport {
    /// `⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩) ∈ [−1, 1]`.
    pub similarity: f64,
    /// `true` when every block of order `≥ 2` of either model sits at one
    /// position, so that Isserlis applies to a truly Gaussian input and the
    /// result is exact up to rounding; `false` when later blocks used the
    /// Gaussian closure (see the [module documentation](self)).
    pub exact: bool,
}

impl GaussianSimilarity {
    /// The standard normal input `N(0, I)`.
    pub fn new() -> Self {
        Self {
            input: GaussianInput::default(),
            context: None,
            max_memory: MemoryLimit::Machine,
            closure: false,
            exact_work: DEFAULT_EXACT_WORK,
        }
    }

    /// The most work, in multiply-adds, that the exact Wick sum over two
    /// chains' trees may take (default [`DEFAULT_EXACT_WORK`]; its steps
    /// that are not one matrix product count 20 multiply-adds an entry).
    /// It grows like the fourth power of the hidden widths (see
    /// [the metrics guide](crate::guide::metrics#exact-at-depth)); a pair
    /// whose estimate exceeds it gets the Gaussian closure, and
    /// [`is_exact`](Self::is_exact) and [`GaussianReport::exact`] say so.
    /// `f64::INFINITY`: always exact where the degree allows; `0.0`: the
    /// exact sum only where moment propagation is exact anyway.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Bilinear, GaussianSimilarity, Model};
    ///
    /// let bil = || Bilinear::new(DMatrix::<f64>::identity(2, 2), DMatrix::identity(2, 2)).unwrap();
    /// let deep = Model::builder().block(bil()).block(bil()).build()?;
    /// assert!(GaussianSimilarity::new().is_exact(&deep, &deep));
    /// assert!(!GaussianSimilarity::new().with_exact_work(0.0).is_exact(&deep, &deep));
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn with_exact_work(mut self, multiply_adds: f64) -> Self {
        self.exact_work = if multiply_adds.is_nan() {
            0.0
        } else {
            multiply_adds
        };
        self
    }

    /// The work limit of the exact sum at depth, in multiply-adds.
    pub fn exact_work(&self) -> f64 {
        self.exact_work
    }

    /// The Gaussian closure by name: moment propagation for every model
    /// pair, also where [`new`](Self::new) computes the exact value, so that
    /// the two can be compared. Exact only where Isserlis applies to a truly
    /// Gaussian input (see [`is_exact`](Self::is_exact)).
    ///
    /// ```
    /// use tensor_similarity::GaussianSimilarity;
    ///
    /// assert!(GaussianSimilarity::closure().is_closure());
    /// assert!(!GaussianSimilarity::new().is_closure());
    /// ```
    pub fn closure() -> Self {
        Self {
            closure: true,
            ..Self::new()
        }
    }

    /// Whether this is [`closure`](Self::closure).
    pub fn is_closure(&self) -> bool {
        self.closure
    }

    /// Compares models on `n` positions ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): the input is a sequence
    /// `X ∈ R^{n×d}` with i.i.d. rows `N(μ, Σ)`, flattened with one shared
    /// constant. Needed for sequence models; vector models are then
    /// compared position-wise on `n` positions. An error for `n = 0`.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, GaussianSimilarity, Model, RecursiveSimilarity};
    ///
    /// let w = |seed: usize, rows: usize| {
    ///     DMatrix::from_fn(rows, 2, |i, j| (((i * 5 + j * 3 + seed) % 7) as f64 - 3.0) * 0.3)
    /// };
    /// let attention = |seed| {
    ///     Attention::builder(1, w(seed, 2), w(seed + 1, 2), w(seed + 2, 2), w(seed + 3, 2),
    ///                        w(seed + 4, 2), w(seed + 5, 2).transpose())
    ///         .rotary(10_000.0)
    ///         .build()
    /// };
    /// let a = Model::builder().block(attention(1)?).build()?;
    /// let b = Model::builder().block(attention(2)?).build()?;
    /// let metric = GaussianSimilarity::new().with_context(3)?;
    /// let report = metric.report(&a, &b)?;
    /// assert!(report.exact && report.similarity.abs() <= 1.0);
    /// assert!((metric.similarity(&a, &a)? - 1.0).abs() < 1e-12);
    /// # Ok::<(), tensor_similarity::Error>(())
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

    /// The memory a comparison may use (default: what the machine has), as
    /// for [`TensorSimilarity::with_max_memory`](crate::TensorSimilarity::with_max_memory):
    /// a sequence comparison whose estimated peak memory exceeds it is
    /// refused before it starts with [`Error::MemoryLimit`].
    pub fn with_max_memory(mut self, limit: MemoryLimit) -> Self {
        self.max_memory = limit;
        self
    }

    /// The memory limit comparisons are checked against.
    pub fn max_memory(&self) -> MemoryLimit {
        self.max_memory
    }

    /// The input mean `μ` (length `d`, checked against the models when they
    /// are compared); an error if it holds a NaN or infinity.
    pub fn with_mean(mut self, mean: DVector<f64>) -> Result<Self> {
        self.input.set_mean(mean)?;
        Ok(self)
    }

    /// The input covariance `Σ` (`d × d`); an error unless it is square,
    /// finite, symmetric and positive semidefinite (a singular `Σ`, a
    /// Gaussian on a subspace, is allowed).
    pub fn with_covariance(mut self, covariance: DMatrix<f64>) -> Result<Self> {
        self.input.set_covariance(covariance)?;
        Ok(self)
    }

    /// `N(μ, Σ)` at once: [`with_mean`](Self::with_mean) then
    /// [`with_covariance`](Self::with_covariance), and an error if their
    /// sizes differ.
    pub fn with_input(mut self, mean: DVector<f64>, covariance: DMatrix<f64>) -> Result<Self> {
        self.input.set_input(mean, covariance)?;
        Ok(self)
    }

    /// Whether [`similarity`](RecursiveSimilarity::similarity) and
    /// [`inner_product`](RecursiveSimilarity::inner_product) of `a` and `b`
    /// are exact (up to rounding). They are when
    ///
    /// * at most one position holds a block of order `≥ 2` in either model
    ///   (moment propagation is then exact), or
    /// * both models are chains of position-wise CP blocks (linear,
    ///   bilinear, any [`CpBlock`](crate::CpBlock)) of degree at most
    ///   [`MAX_EXACT_DEGREE`], the product of their block orders: the full
    ///   Wick sum over the legs of both models' trees is then computed (see
    ///   [the metrics guide](crate::guide::metrics#exact-at-depth)), unless
    ///   this is [`closure`](Self::closure) or the sum would take more than
    ///   [`exact_work`](Self::exact_work).
    ///
    /// Otherwise (attention beyond one block, deeper chains) they use the
    /// Gaussian closure.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Bilinear, GaussianSimilarity, Linear, Model};
    ///
    /// let lin = || Linear::new(DMatrix::<f64>::identity(2, 2), None).unwrap();
    /// let bil = || Bilinear::new(DMatrix::<f64>::identity(2, 2), DMatrix::identity(2, 2)).unwrap();
    /// let first = Model::builder().block(bil()).block(lin()).build()?;
    /// let second = Model::builder().block(lin()).block(bil()).build()?;
    /// let deep = Model::builder().block(bil()).block(bil()).block(bil()).block(bil()).build()?;
    /// assert!(GaussianSimilarity::new().is_exact(&first, &second));
    /// assert!(!GaussianSimilarity::closure().is_exact(&first, &second));
    /// // Degree 16: beyond the exact sum.
    /// assert!(!GaussianSimilarity::new().is_exact(&deep, &deep));
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn is_exact<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> bool {
        moments_exact(a, b) || self.tree_shapes(a, b).is_some()
    }

    /// The two models' tree shapes when the exact Wick sum over their legs
    /// is the way to compute them: not the closure, not already exact by
    /// moment propagation, and both chains of degree at most
    /// [`MAX_EXACT_DEGREE`].
    fn tree_shapes<T: Real>(
        &self,
        a: &Model<T>,
        b: &Model<T>,
    ) -> Option<(exact::orbits::Shape, exact::orbits::Shape)> {
        if self.closure || moments_exact(a, b) {
            return None;
        }
        let (sa, sb) = (exact::shape(a)?, exact::shape(b)?);
        let noise = self.input.noise_width(a.input_width());
        let (oa, ob) = (
            exact::Outline::of(a, sa.clone(), noise),
            exact::Outline::of(b, sb.clone(), noise),
        );
        (exact::cost(&oa, &ob).0 <= self.exact_work).then_some((sa, sb))
    }

    /// `μ` and a factor of `Σ` (`None`: `I`) in `f64`, checked against `d`.
    fn input_law(&self, d: usize) -> Result<(DVector<f64>, Option<DMatrix<f64>>)> {
        let (padded_mean, factor) = self.input::<f64>(d)?;
        Ok((padded_mean.rows(1, d).into_owned(), factor))
    }

    /// The three inner products by the exact Wick sum (on every position).
    fn tree_products<T: Real>(
        &self,
        a: &Model<T>,
        b: &Model<T>,
        shapes: (exact::orbits::Shape, exact::orbits::Shape),
    ) -> Result<Readout> {
        a.check_same_io(b)?;
        let n = self.positions(a, b)?;
        let (mean, factor) = self.input_law(a.input_width())?;
        let law = exact::InputLaw {
            mean: &mean,
            factor: factor.as_ref(),
        };
        let per_position = LogScaled::from(n as f64);
        let [cross, ra, rb] = exact::inner_products(a, b, shapes, &law, self.max_memory)?;
        Ok(Readout {
            cross: cross * per_position,
            a: ra * per_position,
            b: rb * per_position,
        })
    }

    /// The similarity and whether it is exact.
    pub fn report<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<GaussianReport> {
        Ok(GaussianReport {
            similarity: self.similarity(a, b)?,
            exact: self.is_exact(a, b),
        })
    }

    /// The input `x̃ = (1, x)`, `x ∼ N(μ, Σ)` on `n` i.i.d. positions:
    /// `μ` and, for the first-linear fast path, a factor of `Σ` (`None`: `I`).
    fn input<T: Real>(&self, d: usize) -> Result<(DVector<T>, Option<DMatrix<T>>)> {
        let mut mean = DVector::zeros(d + 1);
        mean[0] = T::one();
        mean.rows_mut(1, d)
            .copy_from(&self.input.mean(d)?.map(T::from_f64_lossy));
        let factor = self.input.factor(d)?.map(|f| f.map(T::from_f64_lossy));
        Ok((mean, factor))
    }

    /// The input's moments, normalised.
    fn input_state<T: Real>(&self, d: usize, n: usize, same: bool) -> Result<JointMoments<T>> {
        let mean = self.input.mean(d)?.map(T::from_f64_lossy);
        let cov = self
            .input
            .covariance(d)?
            .map_or_else(|| DMatrix::identity(d, d), |s| s.map(T::from_f64_lossy));
        let side = Moments::input(&mean, &cov, n);
        let mut state = if same {
            JointMoments::same(side)
        } else {
            let cross = side.cov.clone();
            JointMoments {
                a: side.clone(),
                other: Some((side, cross)),
            }
        };
        state.rescale((0.0, 1), (0.0, 1), 0)?;
        Ok(state)
    }

    /// The context the models are compared at: 1 for vector models without one.
    fn positions<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<usize> {
        match self.context {
            Some(n) => Ok(n),
            None if a.is_sequence() => Err(Error::MissingContext(Side::A)),
            None if b.is_sequence() => Err(Error::MissingContext(Side::B)),
            None => Ok(1),
        }
    }

    /// The three inner products of one pass through both models; with
    /// `same`, `b` is `a` and only its side is computed.
    ///
    /// One loop over the pairs of blocks: each steps the joint moments
    /// ([`TensorBlock::moment_step`]), which stay one position's while the
    /// positions are independent; a first pair of linear blocks starts from
    /// `Σ` directly, and a last pair is read out from the second moments.
    fn propagate<T: Real>(&self, a: &Model<T>, b: &Model<T>, same: bool) -> Result<Readout> {
        // Block orders and hidden widths may differ.
        a.check_same_depth_and_io(b)?;
        let n = self.positions(a, b)?;
        for (position, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
            check_order(x.order(), Side::A, position)?;
            check_order(y.order(), Side::B, position)?;
        }
        if n > 1 || a.mixes_positions() || b.mixes_positions() {
            MemoryEstimate {
                at: |n| bytes(a, b, same, n),
            }
            .check(n, self.max_memory)?;
        }
        let depth = a.depth();
        let linear = |p: usize| {
            let (x, y) = (&a.blocks()[p], &b.blocks()[p]);
            match (x.as_cp(), y.as_cp()) {
                (Some(fa), Some(fb)) if cp::is_linear(fa) && cp::is_linear(fb) => Some((fa, fb)),
                _ => None,
            }
        };
        let d = a.input_width();
        let first_linear = |p: usize| {
            let (x, y) = (&a.blocks()[p], &b.blocks()[p]);
            match (x.as_cp(), y.as_cp()) {
                (Some(fa), Some(fb)) if fa.order() == 1 && fb.order() == 1 => Some((fa, fb)),
                _ => None,
            }
        };
        let (mut state, start) = match first_linear(0) {
            Some((fa, fb)) if depth > 1 || linear(0).is_none() => {
                let (mean, factor) = self.input(d)?;
                let mut state =
                    cp::first_linear(fa, (!same).then_some(fb), &mean, factor.as_ref(), n);
                state.rescale((0.0, 1), (0.0, 1), 0)?;
                (state, 1)
            }
            _ => (self.input_state(d, n, same)?, 0),
        };
        for position in start..depth {
            if position + 1 == depth
                && let Some((fa, fb)) = linear(position)
            {
                let [cross, ra, rb] = cp::read_out_linear(&state, fa, fb);
                return Ok(Readout {
                    cross,
                    a: ra,
                    b: rb,
                });
            }
            let (x, y) = (&*a.blocks()[position], &*b.blocks()[position]);
            let scales = (state.a().ln_scale, state.b().ln_scale);
            let mut next = if same {
                JointMoments::same(x.self_moment_step(state.a())?)
            } else {
                x.moment_step(y, &state)
                    .map_err(|e| at_block(e, position))?
            };
            next.rescale((scales.0, x.order()), (scales.1, y.order()), position)?;
            state = next;
        }
        Ok(Readout {
            cross: state.read_out(),
            a: state.a().read_out_self(),
            b: state.b().read_out_self(),
        })
    }
}

/// Whether moment propagation is exact for `a` and `b`: at most one
/// position holds a block of order `≥ 2` in either model.
fn moments_exact<T: Real>(a: &Model<T>, b: &Model<T>) -> bool {
    let nonlinear =
        |m: &Model<T>, position: usize| m.blocks().get(position).is_some_and(|x| x.order() >= 2);
    (0..a.depth().max(b.depth()))
        .filter(|&p| nonlinear(a, p) || nonlinear(b, p))
        .count()
        <= 1
}

/// The three inner products of one pass: `⟨f_A,f_B⟩`, `⟨f_A,f_A⟩`, `⟨f_B,f_B⟩`.
struct Readout {
    cross: LogScaled,
    a: LogScaled,
    b: LogScaled,
}

/// A step's error for a pair it cannot take, with the block's position.
fn at_block(e: Error, position: usize) -> Error {
    match e {
        Error::InvalidBlock(reason) => Error::InvalidBlock(format!("block {position}: {reason}")),
        e => e,
    }
}

/// An estimate of the peak bytes of one pass on `n` positions: the moments
/// (`A`, `B` and their cross moments; one position's until a block mixes
/// positions) in and out of the largest step, with the step's own tables,
/// and the models' parameters. In
/// `f64`, on the high side (see [`crate::resources`]).
fn bytes<T: Real>(a: &Model<T>, b: &Model<T>, same: bool, n: usize) -> f64 {
    let sides = if same { 1.0 } else { 3.0 };
    let last = a.depth() - 1;
    let mut mixed = false;
    let mut peak: f64 = 0.0;
    for (position, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
        let positions = if mixed { n } else { 1 };
        let linear = x.as_cp().is_some_and(cp::is_linear) && y.as_cp().is_some_and(cp::is_linear);
        if position == last && linear {
            // Read out from its input moments (`propagate`): the weights'
            // Gram `U_Aᵀ U_B` and one padded position block, never the
            // output moments (an unembedding's are `(n V)²`).
            let (dx, dy) = (x.input_width() as f64 + 1.0, y.input_width() as f64 + 1.0);
            let states = sides * flat_entries(positions, x.input_width(), y.input_width());
            peak = peak.max(states + 2.0 * dx * dy);
            continue;
        }
        mixed |= x.mixes_positions() || y.mixes_positions();
        let after = if mixed { n } else { 1 };
        let states = sides
            * (flat_entries(positions, x.input_width(), y.input_width())
                + flat_entries(after, x.output_width(), y.output_width()));
        let step = if same {
            x.moment_step_scalars(&**x, n)
        } else {
            x.moment_step_scalars(&**y, n)
        };
        peak = peak.max(states + step);
    }
    // The models themselves, held throughout.
    let parameters = a.parameter_count() + if same { 0 } else { b.parameter_count() };
    scalars::<T>(peak + parameters as f64)
}

/// An error for a block whose order the Wick expansion does not take.
fn check_order(order: usize, side: Side, position: usize) -> Result<()> {
    if order > MAX_GAUSSIAN_ORDER {
        return Err(Error::OrderTooHigh {
            block: position,
            side,
            order,
            max: MAX_GAUSSIAN_ORDER,
        });
    }
    Ok(())
}

impl<T: Real> RecursiveSimilarity<T> for GaussianSimilarity {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        if let Some(shapes) = self.tree_shapes(a, b) {
            return Ok(self.tree_products(a, b, shapes)?.cross);
        }
        Ok(self.propagate(a, b, false)?.cross)
    }

    /// One pass: the joint state already holds both sides' moments, so
    /// `⟨f_A,f_A⟩` and `⟨f_B,f_B⟩` come with `⟨f_A,f_B⟩`.
    fn similarity(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        let r = match self.tree_shapes(a, b) {
            Some(shapes) => self.tree_products(a, b, shapes)?,
            None => self.propagate(a, b, false)?,
        };
        cosine(r.cross, r.a, r.b)
    }

    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        if let Some((shape, _)) = self.tree_shapes(a, a) {
            let n = self.positions(a, a)?;
            let (mean, factor) = self.input_law(a.input_width())?;
            let law = exact::InputLaw {
                mean: &mean,
                factor: factor.as_ref(),
            };
            return Ok(
                exact::squared_norm(a, shape, &law, self.max_memory)? * LogScaled::from(n as f64)
            );
        }
        Ok(self.propagate(a, a, true)?.cross)
    }

    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        let n = match self.context {
            Some(n) if n > 1 || a.mixes_positions() || b.mixes_positions() => n,
            _ => return Ok(()),
        };
        a.check_same_depth_and_io(b)?;
        MemoryEstimate {
            at: |n| at_once.max(1) as f64 * bytes(a, b, false, n),
        }
        .check(n, self.max_memory)
    }
}
