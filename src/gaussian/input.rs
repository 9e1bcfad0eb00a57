//! The input law `x ∼ N(μ, Σ)` that both Gaussian metrics take
//! ([`GaussianSimilarity`](super::GaussianSimilarity) and
//! [`GaussianMonteCarlo`](super::GaussianMonteCarlo)): what their builders
//! check when it is given, and what is checked against a model's input
//! width when it is used, in one place.

use nalgebra::{DMatrix, DVector};

use crate::error::Result;
use crate::linalg::covariance_factor;
use crate::validate::{check_finite, check_len, check_shape};

/// `N(μ, Σ)` as given (`None`: `μ = 0`, `Σ = I`), with a factor of `Σ`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct GaussianInput {
    mean: Option<DVector<f64>>,
    covariance: Option<DMatrix<f64>>,
    /// A factor `F Fᵀ = Σ`, computed once when `Σ` is given.
    factor: Option<DMatrix<f64>>,
}

impl GaussianInput {
    /// `μ`; an error if it holds a NaN or infinity.
    pub(crate) fn set_mean(&mut self, mean: DVector<f64>) -> Result<()> {
        check_finite("input mean", &mean)?;
        self.mean = Some(mean);
        Ok(())
    }

    /// `Σ`; an error unless it is square, finite, symmetric and positive
    /// semidefinite.
    pub(crate) fn set_covariance(&mut self, covariance: DMatrix<f64>) -> Result<()> {
        self.factor = Some(covariance_factor(&covariance)?);
        self.covariance = Some(covariance);
        Ok(())
    }

    /// `μ` and `Σ` at once, and an error if their sizes differ.
    pub(crate) fn set_input(&mut self, mean: DVector<f64>, covariance: DMatrix<f64>) -> Result<()> {
        let d = mean.len();
        check_shape("input covariance", &covariance, (d, d))?;
        self.set_mean(mean)?;
        self.set_covariance(covariance)
    }

    /// `μ` for inputs of width `d` (zeros if none was given); an error if
    /// its length differs.
    pub(crate) fn mean(&self, d: usize) -> Result<DVector<f64>> {
        match &self.mean {
            Some(mu) => {
                check_len("input mean", mu, d)?;
                Ok(mu.clone())
            }
            None => Ok(DVector::zeros(d)),
        }
    }

    /// `Σ` for inputs of width `d` (`None`: `I`); an error if its shape
    /// differs.
    pub(crate) fn covariance(&self, d: usize) -> Result<Option<&DMatrix<f64>>> {
        if let Some(sigma) = &self.covariance {
            check_shape("input covariance", sigma, (d, d))?;
        }
        Ok(self.covariance.as_ref())
    }

    /// The factor of `Σ` for inputs of width `d` (`None`: `I`); an error if
    /// `Σ`'s shape differs.
    pub(crate) fn factor(&self, d: usize) -> Result<Option<&DMatrix<f64>>> {
        self.covariance(d)?;
        Ok(self.factor.as_ref())
    }

    /// The factor of `Σ` as computed, unchecked (`None`: no `Σ` given).
    pub(crate) fn factor_as_given(&self) -> Option<&DMatrix<f64>> {
        self.factor.as_ref()
    }

    /// The number of independent normals behind `x` of width `d`: the
    /// factor's columns, or `d`.
    pub(crate) fn noise_width(&self, d: usize) -> usize {
        self.factor.as_ref().map_or(d, |f| f.ncols())
    }
}
