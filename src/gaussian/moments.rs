//! The state of the Gaussian metric: the means and covariances of the two
//! models' padded activations ([SPEC §3](crate::spec#3-gaussian-functional-similarity)),
//! normalised, with their log scales kept apart.
//!
//! On a sequence of `n` positions the activations are the flattened stream
//! `ã = (1, a[0], …, a[n−1])` ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)).
//! Until a block mixes positions, the positions of the i.i.d. input stay
//! independent and identically distributed: the state then holds **one
//! position's** padded moments (`independent`), which stand for the
//! block-diagonal moments of the whole stream. [`Moments::joint`] writes
//! them out when a step needs the whole stream.

use std::borrow::Cow;

use nalgebra::{DMatrix, DVector};

use crate::error::{Error, Result};
use crate::padded::padded_block;
use crate::scalar::{LogScaled, Real, smallest_resolved, to_f64};

/// One model's activation moments: the padded activation is
/// `e^{ln_scale} · â` with `E[â] = mean`, `Cov(â) = covariance`, on the
/// flattened stream of [`context`](Self::context) positions, or at one of
/// them when the positions are [independent](Self::is_independent).
///
/// A block kind with its own Gaussian step reads these (through
/// [`joint`](Self::joint)) and builds its output with [`Moments::new`]; the
/// metric keeps the scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments<T: Real> {
    pub(crate) mean: DVector<T>,
    pub(crate) cov: DMatrix<T>,
    pub(crate) ln_scale: f64,
    pub(crate) context: usize,
    pub(crate) independent: bool,
}

impl<T: Real> Moments<T> {
    /// The moments `E[ã] = mean` and `Cov(ã) = covariance` of the whole
    /// flattened stream on `context` positions: `mean` has length
    /// `context·w + 1` for a per-position width `w`, entry 0 the constant's,
    /// and `covariance` is square of that size. An error if the sizes
    /// disagree or `context` is 0.
    pub fn new(mean: DVector<T>, covariance: DMatrix<T>, context: usize) -> Result<Self> {
        if context == 0 {
            return Err(Error::ZeroContext);
        }
        let len = mean.len();
        if len == 0 || !(len - 1).is_multiple_of(context) {
            return Err(Error::InvalidBlock(format!(
                "a mean of length {len} is not 1 + {context}·(width per position)"
            )));
        }
        crate::validate::check_shape("activation covariance", &covariance, (len, len))?;
        Ok(Self {
            mean,
            cov: covariance,
            ln_scale: 0.0,
            context,
            independent: false,
        })
    }

    /// The input `x̃ = (1, x)` with `x ∼ N(mean, covariance)` i.i.d. on
    /// `context` positions (kept as one position).
    pub(crate) fn input(mean: &DVector<T>, covariance: &DMatrix<T>, context: usize) -> Self {
        let d = mean.len();
        let mut m = DVector::zeros(d + 1);
        m[0] = T::one();
        m.rows_mut(1, d).copy_from(mean);
        let mut c = DMatrix::zeros(d + 1, d + 1);
        c.view_mut((1, 1), (d, d)).copy_from(covariance);
        Self {
            mean: m,
            cov: c,
            ln_scale: 0.0,
            context,
            independent: true,
        }
    }

    /// One position's moments standing for `context` i.i.d. positions.
    pub(crate) fn independent(mean: DVector<T>, cov: DMatrix<T>, context: usize) -> Self {
        Self {
            mean,
            cov,
            ln_scale: 0.0,
            context,
            independent: true,
        }
    }

    /// The number of positions `n`.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Whether the positions are i.i.d. and the state holds one of them
    /// (`mean` of length `w + 1`); see [`joint`](Self::joint).
    pub fn is_independent(&self) -> bool {
        self.independent
    }

    /// The unpadded width per position.
    pub fn width(&self) -> usize {
        if self.independent {
            self.mean.len() - 1
        } else {
            (self.mean.len() - 1) / self.context
        }
    }

    /// `E[â]`, padded (entry 0 is the constant's).
    pub fn mean(&self) -> &DVector<T> {
        &self.mean
    }

    /// `Cov(â)`, padded (row and column 0 are the constant's, zero at the input).
    pub fn covariance(&self) -> &DMatrix<T> {
        &self.cov
    }

    /// The moments of the whole flattened stream: borrowed when they are
    /// already, written out (block-diagonal, the constant shared) when the
    /// positions are independent.
    pub fn joint(&self) -> Cow<'_, Self> {
        if !self.independent {
            return Cow::Borrowed(self);
        }
        let n = self.context;
        Cow::Owned(Self {
            mean: tile_mean(&self.mean, n),
            cov: tile_cov(&self.cov, n),
            ln_scale: self.ln_scale,
            context: n,
            independent: false,
        })
    }

    /// The padded moments of position `p`: `(m̂_0, m̂[p])` and `Ĉ[p̂, p̂]`.
    pub(crate) fn at_position(&self, p: usize) -> Self {
        if self.independent {
            return Self {
                context: 1,
                ..self.clone()
            };
        }
        let m = self.width();
        let mut cov = DMatrix::zeros(m + 1, m + 1);
        padded_block(&self.cov, p, p, m, m, &mut cov);
        Self {
            mean: self.padded_mean(p),
            cov,
            ln_scale: self.ln_scale,
            context: 1,
            independent: true,
        }
    }

    /// `(m̂_0, m̂[p])`.
    pub(crate) fn padded_mean(&self, p: usize) -> DVector<T> {
        if self.independent {
            return self.mean.clone();
        }
        let m = self.width();
        let mut mean = DVector::zeros(m + 1);
        mean[0] = self.mean[0];
        mean.rows_mut(1, m).copy_from(&self.mean.rows(1 + p * m, m));
        mean
    }

    /// How many positions one stored position stands for.
    pub(crate) fn multiplicity(&self) -> f64 {
        if self.independent {
            self.context as f64
        } else {
            1.0
        }
    }

    /// `E[|f|²] = Σ_{o≥1} (Ĉ[o,o] + m̂[o]²)` over every position, scaled back.
    pub(crate) fn read_out_self(&self) -> LogScaled {
        let n = self.mean.len() - 1;
        let mut value = T::zero();
        for o in 1..=n {
            value += self.cov[(o, o)] + self.mean[o] * self.mean[o];
        }
        LogScaled::from_scaled(to_f64(value) * self.multiplicity(), 2.0 * self.ln_scale)
    }

    /// The largest standard deviation, `√max_i Σ_ii`.
    fn largest_sd(&self) -> T {
        self.cov
            .diagonal()
            .iter()
            .fold(T::zero(), |acc, &v| acc.max(v))
            .sqrt()
    }

    /// Divides by `c = max(max |m̂|, √max diag Ĉ)`, adds `ln c` to the scale
    /// and returns `c` (1 for an all-zero state, which stays as it is).
    pub(crate) fn normalise(&mut self, block: usize) -> Result<T> {
        let largest_sd = self.largest_sd();
        let c = self.mean.amax().max(largest_sd);
        if !c.is_finite() || !self.ln_scale.is_finite() {
            return Err(Error::NumericalBreakdown {
                block,
                reason: format!(
                    "the activation moments overflowed (log scale {:.3e})",
                    self.ln_scale
                ),
            });
        }
        let c = if c > T::zero() {
            self.mean /= c;
            self.cov /= c * c;
            self.ln_scale += to_f64(c).ln();
            c
        } else {
            T::one()
        };
        self.check_resolved(block)?;
        Ok(c)
    }

    /// An error if the activation's variable part (its mean past the
    /// constant, and its standard deviations) has fallen so far below the
    /// constant `1` that it is about to leave `T`'s normal range: one scale
    /// cannot hold both, and going on would read a false zero norm (as
    /// [the tensor recursion](crate::TensorSimilarity) checks too).
    fn check_resolved(&self, block: usize) -> Result<()> {
        let m = self.mean.len();
        if m < 2 {
            return Ok(());
        }
        let sd = self.largest_sd();
        let part =
            to_f64(self.mean.rows(1, m - 1).amax().max(sd)) / to_f64(self.mean.amax().max(sd));
        // The covariance holds squares: its entries leave the normal range first.
        if part > 0.0 && part < smallest_resolved::<T>().sqrt() {
            return Err(Error::NumericalBreakdown {
                block,
                reason: format!(
                    "the activations have shrunk to {part:.1e} of the constant input, below what \
                     one scale resolves beside it: the norm is not zero, but too small to compare \
                     in this precision (a deep stack of contractive blocks without biases)"
                ),
            });
        }
        Ok(())
    }

    fn is_finite(&self) -> bool {
        self.mean.iter().all(|v| v.is_finite()) && self.cov.iter().all(|v| v.is_finite())
    }
}

/// The joint moments of two models' activations: each side's
/// [`Moments`] and the cross covariance `Ĉ_AB = Cov(â, b̂)`. In a self
/// product (`⟨f, f⟩`) only one side is held, and `b` and the cross
/// covariance read it.
#[derive(Clone, Debug, PartialEq)]
pub struct JointMoments<T: Real> {
    pub(crate) a: Moments<T>,
    pub(crate) other: Option<(Moments<T>, DMatrix<T>)>,
}

impl<T: Real> JointMoments<T> {
    /// Both sides and `Cov(â, b̂)`; an error unless the two sides have the
    /// same context and layout and the cross covariance their sizes.
    pub fn new(a: Moments<T>, b: Moments<T>, cross: DMatrix<T>) -> Result<Self> {
        if a.context != b.context || a.independent != b.independent {
            return Err(Error::InvalidBlock(format!(
                "joint moments of {} and {} positions (independent: {} and {})",
                a.context, b.context, a.independent, b.independent
            )));
        }
        crate::validate::check_shape("cross covariance", &cross, (a.mean.len(), b.mean.len()))?;
        Ok(Self {
            a,
            other: Some((b, cross)),
        })
    }

    /// The state of a self product, one side standing for both.
    pub(crate) fn same(a: Moments<T>) -> Self {
        Self { a, other: None }
    }

    /// Whether this is a self product (`b` is `a`).
    pub fn is_self_product(&self) -> bool {
        self.other.is_none()
    }

    /// Model A's moments.
    pub fn a(&self) -> &Moments<T> {
        &self.a
    }

    /// Model B's moments.
    pub fn b(&self) -> &Moments<T> {
        self.other.as_ref().map_or(&self.a, |(b, _)| b)
    }

    /// `Cov(â, b̂)`.
    pub fn cross(&self) -> &DMatrix<T> {
        self.other.as_ref().map_or(&self.a.cov, |(_, c)| c)
    }

    /// The number of positions.
    pub fn context(&self) -> usize {
        self.a.context
    }

    /// Whether the positions are independent (see [`Moments::is_independent`]).
    pub fn is_independent(&self) -> bool {
        self.a.independent
    }

    /// Both sides and the cross covariance over the whole flattened stream
    /// (see [`Moments::joint`]).
    pub fn joint(&self) -> Cow<'_, Self> {
        if !self.a.independent {
            return Cow::Borrowed(self);
        }
        let n = self.context();
        Cow::Owned(Self {
            a: self.a.joint().into_owned(),
            other: self
                .other
                .as_ref()
                .map(|(b, c)| (b.joint().into_owned(), tile_cov(c, n))),
        })
    }

    /// Sets both log scales from the input's: a block of order `k` maps a
    /// state scaled by `λ` to one scaled by `λ^k`. Then normalises each side,
    /// and checks that everything is finite.
    pub(crate) fn rescale(
        &mut self,
        (ln_a, order_a): (f64, usize),
        (ln_b, order_b): (f64, usize),
        block: usize,
    ) -> Result<()> {
        self.a.ln_scale = ln_a * order_a as f64;
        if let Some((b, _)) = &mut self.other {
            b.ln_scale = ln_b * order_b as f64;
        }
        if !(self.a.ln_scale.is_finite() && self.b().ln_scale.is_finite()) {
            return Err(Error::NumericalBreakdown {
                block,
                reason: "the log scale overflowed".into(),
            });
        }
        let ca = self.a.normalise(block)?;
        if let Some((b, cross)) = &mut self.other {
            let cb = b.normalise(block)?;
            *cross /= ca * cb;
        }
        let finite = self.a.is_finite()
            && self
                .other
                .as_ref()
                .is_none_or(|(b, c)| b.is_finite() && c.iter().all(|v| v.is_finite()));
        if !finite {
            return Err(Error::NumericalBreakdown {
                block,
                reason: "the activation moments became non-finite".into(),
            });
        }
        Ok(())
    }

    /// `Σ_{o≥1} (Ĉ_AB[o,o] + m̂_A[o] m̂_B[o])` over every position, scaled back.
    pub(crate) fn read_out(&self) -> LogScaled {
        let (a, b) = (&self.a, self.b());
        let n = a.mean.len() - 1;
        let cross = self.cross();
        let mut value = T::zero();
        for o in 1..=n {
            value += cross[(o, o)] + a.mean[o] * b.mean[o];
        }
        LogScaled::from_scaled(to_f64(value) * a.multiplicity(), a.ln_scale + b.ln_scale)
    }
}

/// `(m_0, m[1:], …, m[1:])`: one position's padded mean on `n` positions.
fn tile_mean<T: Real>(m: &DVector<T>, n: usize) -> DVector<T> {
    let w = m.len() - 1;
    let mut out = DVector::zeros(n * w + 1);
    out[0] = m[0];
    for p in 0..n {
        out.rows_mut(1 + p * w, w).copy_from(&m.rows(1, w));
    }
    out
}

/// One position's padded covariance, block-diagonal on `n` positions (the
/// constant's row and column are zero in a covariance).
pub(crate) fn tile_cov<T: Real>(c: &DMatrix<T>, n: usize) -> DMatrix<T> {
    let (r, k) = (c.nrows() - 1, c.ncols() - 1);
    let mut out = DMatrix::zeros(n * r + 1, n * k + 1);
    for p in 0..n {
        out.view_mut((1 + p * r, 1 + p * k), (r, k))
            .copy_from(&c.view((1, 1), (r, k)));
    }
    out
}
