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
//! All `k²` products `X_{i,j}` come from one stacked product
//! `[U^A_1; …; U^A_k] · G · [U^B_1; …; U^B_k]ᵀ`. Each step is homogeneous of
//! degree `k` in `G`, so the recursion divides `G` by its largest entry
//! after every block and carries the scale as a logarithm: nothing
//! overflows at any depth, and inner products come back as [`LogScaled`].

mod kernel;

pub use kernel::GramWorkspace;

use nalgebra::DMatrix;

use crate::block::TensorBlock;
use crate::error::{Error, Result, Side};
use crate::model::Model;
use crate::scalar::{LogScaled, Real, from_f64, to_f64};

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

/// What the final Gram matrix is read out with.
#[derive(Clone, Debug, PartialEq)]
enum Readout {
    /// `Σ_{o≥1} G[o,o]`: all outputs.
    Trace,
    /// `Σ_{o∈S} G[o+1,o+1]`: some outputs.
    Select(Vec<usize>),
    /// `tr(Q G[1:,1:])`.
    Weights(DMatrix<f64>),
}

/// The tensor similarity of SPEC §2: the cosine of two models' symmetrised
/// end-to-end tensors under an input metric `M` on every leg and an output
/// weighting `Q`, computed by the Gram recursion.
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
    readout: Readout,
}

impl Default for TensorSimilarity {
    fn default() -> Self {
        Self::new()
    }
}

impl TensorSimilarity {
    /// `M = I_{d+1}` (inputs `x ∼ N(0, I)`), all outputs.
    pub fn new() -> Self {
        Self {
            input_metric: None,
            readout: Readout::Trace,
        }
    }

    /// The input metric `M` on every input leg, `(d+1) × (d+1)` over padded
    /// inputs; `M = E[x̃ x̃ᵀ]` gives the data-aware similarity. An error unless
    /// it is square, symmetric, finite and has a non-negative diagonal.
    pub fn with_input_metric(mut self, metric: DMatrix<f64>) -> Result<Self> {
        check_metric("input metric", &metric)?;
        self.input_metric = Some(metric);
        Ok(self)
    }

    /// The input metric of `x ∼ N(μ, Σ)`: `M = E[x̃ x̃ᵀ] = [[1, μᵀ], [μ, Σ + μμᵀ]]`.
    pub fn with_input_gaussian(
        self,
        mean: &nalgebra::DVector<f64>,
        covariance: &DMatrix<f64>,
    ) -> Result<Self> {
        let d = mean.len();
        crate::block::check_shape("input covariance", covariance, (d, d))?;
        let mut m = DMatrix::zeros(d + 1, d + 1);
        m[(0, 0)] = 1.0;
        m.view_mut((1, 0), (d, 1)).copy_from(mean);
        m.view_mut((0, 1), (1, d)).copy_from(&mean.transpose());
        m.view_mut((1, 1), (d, d))
            .copy_from(&(covariance + mean * mean.transpose()));
        self.with_input_metric(m)
    }

    /// Weights the outputs: `⟨A,B⟩ = tr(Q G_L[1:,1:])`, `Q` symmetric `n_L × n_L`.
    pub fn with_output_weights(mut self, weights: DMatrix<f64>) -> Result<Self> {
        check_metric("output weights", &weights)?;
        self.readout = Readout::Weights(weights);
        Ok(self)
    }

    /// Compares only the listed outputs (0-based; "slice" similarity, e.g.
    /// one class's logit): `Q` is the 0/1 diagonal selecting them.
    pub fn with_output_selection(mut self, outputs: Vec<usize>) -> Self {
        self.readout = Readout::Select(outputs);
        self
    }

    /// The normalised cross Gram matrices `G_1 … G_L` of `a` and `b`, each with
    /// its log scale: the state of the recursion after every block, for
    /// per-layer analyses.
    pub fn cross_grams<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<Vec<ScaledGram<T>>> {
        let mut grams = Vec::with_capacity(a.depth());
        self.recurse(a, Some(b), |g, ln_scale| {
            grams.push(ScaledGram {
                gram: g.clone(),
                ln_scale,
            })
        })?;
        Ok(grams)
    }

    /// Runs the recursion, handing each normalised `G_ℓ` and its log scale to
    /// `visit`, and returns the last. `b = None` is the self product of `a`,
    /// which takes the symmetric kernel ([`GramWorkspace::self_step`]).
    ///
    /// One workspace and two Gram buffers serve every layer: nothing is
    /// allocated in the loop once they have grown to the largest shapes.
    fn recurse<T: Real>(
        &self,
        a: &Model<T>,
        b: Option<&Model<T>>,
        mut visit: impl FnMut(&DMatrix<T>, f64),
    ) -> Result<(DMatrix<T>, f64)> {
        let other = b.unwrap_or(a);
        a.check_comparable(other)?;
        let width = a.input_width() + 1;
        let mut g = match &self.input_metric {
            Some(m) => {
                crate::block::check_shape("input metric", m, (width, width))?;
                match b {
                    Some(_) => m.map(from_f64),
                    // M is symmetric up to rounding; the self kernel needs it exactly.
                    None => DMatrix::from_fn(width, width, |i, j| {
                        from_f64(0.5 * (m[(i, j)] + m[(j, i)]))
                    }),
                }
            }
            None => DMatrix::identity(width, width),
        };
        let mut next = DMatrix::zeros(0, 0);
        let mut workspace = GramWorkspace::new();
        let mut ln_scale = 0.0;
        for (position, (block_a, block_b)) in a.blocks().iter().zip(other.blocks()).enumerate() {
            match b {
                Some(_) => workspace.step(&**block_a, &**block_b, &g, &mut next)?,
                None => workspace.self_step(&**block_a, &g, &mut next)?,
            }
            core::mem::swap(&mut g, &mut next);
            // Homogeneity: step(e^s Ĝ) = e^{k s} step(Ĝ).
            ln_scale *= block_a.order() as f64;
            let largest = g.amax();
            if !largest.is_finite() || !ln_scale.is_finite() {
                return Err(Error::NumericalBreakdown {
                    block: position,
                    reason: format!("the Gram matrix overflowed (log scale {ln_scale:.3e})"),
                });
            }
            if largest > T::zero() {
                g /= largest;
                ln_scale += to_f64(largest).ln();
            }
            visit(&g, ln_scale);
        }
        Ok((g, ln_scale))
    }

    fn read_out<T: Real>(&self, g: &DMatrix<T>, n: usize) -> Result<T> {
        let mut value = T::zero();
        match &self.readout {
            Readout::Trace => (1..=n).for_each(|o| value += g[(o, o)]),
            Readout::Select(outputs) => {
                for &o in outputs {
                    if o >= n {
                        return Err(Error::InvalidOption {
                            what: "output selection",
                            reason: format!(
                                "output {o} does not exist; the models have {n} outputs"
                            ),
                        });
                    }
                    value += g[(o + 1, o + 1)];
                }
            }
            Readout::Weights(q) => {
                crate::block::check_shape("output weights", q, (n, n))?;
                value = q
                    .map(from_f64::<T>)
                    .dot(&g.view((1, 1), (n, n)).transpose());
            }
        }
        Ok(value)
    }
}

impl<T: Real> RecursiveSimilarity<T> for TensorSimilarity {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        let (g, ln_scale) = self.recurse(a, Some(b), |_, _| {})?;
        let value = self.read_out(&g, a.output_width())?;
        Ok(LogScaled::from_scaled(to_f64(value), ln_scale))
    }

    /// `⟨A, A⟩` with the symmetric kernel: every `G_AA` is symmetric, so
    /// only the lower half of each `H` is computed (about half the work of
    /// [`inner_product`](Self::inner_product)`(a, a)`, same value up to
    /// rounding).
    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        let (g, ln_scale) = self.recurse(a, None, |_, _| {})?;
        let value = self.read_out(&g, a.output_width())?;
        Ok(LogScaled::from_scaled(to_f64(value), ln_scale))
    }
}

/// One step of the Gram recursion: `G' = D̃_A H D̃_Bᵀ` for blocks `a`, `b` of
/// the same order and the cross Gram matrix `g` of their inputs
/// (`(m_A+1) × (m_B+1)`); `G'` is `(n_A+1) × (n_B+1)`.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, DMatrix};
/// use tensor_similarity::{gram_step, Linear};
///
/// // For linear blocks, G' = B_A G B_Bᵀ with the padded matrices.
/// let w = Linear::new(dmatrix![2.0, 0.0; 0.0, 3.0], None)?;
/// let g = gram_step(&w, &w, &DMatrix::identity(3, 3))?;
/// assert_eq!(g, DMatrix::from_diagonal(&nalgebra::dvector![1.0, 4.0, 9.0]));
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn gram_step<T: Real>(
    a: &dyn TensorBlock<T>,
    b: &dyn TensorBlock<T>,
    g: &DMatrix<T>,
) -> Result<DMatrix<T>> {
    let mut out = DMatrix::zeros(0, 0);
    GramWorkspace::new().step(a, b, g, &mut out)?;
    Ok(out)
}

/// A square, finite, symmetric matrix with a non-negative diagonal: what an
/// input metric or output weighting must be.
fn check_metric(what: &'static str, m: &DMatrix<f64>) -> Result<()> {
    crate::block::check_square(what, m)?;
    crate::block::check_finite(what, m)?;
    crate::block::check_symmetric(what, m, m.amax() * f64::EPSILON * 64.0)?;
    match (0..m.nrows()).find(|&i| m[(i, i)] < 0.0) {
        Some(i) => Err(Error::InvalidOption {
            what,
            reason: format!("diagonal entry {i} is negative"),
        }),
        None => Ok(()),
    }
}
