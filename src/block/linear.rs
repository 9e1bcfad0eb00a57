//! The linear (affine) block `y = W x + b`.

use nalgebra::{DMatrix, DVector};

use super::factors::CpFactors;
use super::{CpKind, Description, Parameter};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::symmetry::{SymmetryGroup, Trivial};
use crate::validate::{check_finite, check_len, check_rows};

/// An affine layer `y = W x + b`, `W ∈ R^{n×m}`: a block of order 1 whose
/// padded form is `B = [[1, 0ᵀ], [b, W]]`.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{Linear, TensorBlock};
///
/// let layer = Linear::new(dmatrix![1.0, 2.0; 0.0, 1.0], Some(dvector![0.5, -1.0]))?;
/// assert_eq!(layer.forward(&dvector![1.0, 1.0])?, dvector![3.5, 0.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Linear<T: Real = f64> {
    weight: DMatrix<T>,
    bias: Option<DVector<T>>,
    cp: CpFactors<T>,
}

impl<T: Real> Linear<T> {
    /// The layer with weight `W` (`n × m`) and optional bias `b` (length `n`);
    /// an error for empty, mismatched or non-finite input.
    pub fn new(weight: DMatrix<T>, bias: Option<DVector<T>>) -> Result<Self> {
        let (n, m) = weight.shape();
        if n == 0 || m == 0 {
            return Err(Error::InvalidBlock(format!(
                "linear weight has empty shape {:?}",
                weight.shape()
            )));
        }
        check_finite("linear weight", &weight)?;
        if let Some(b) = &bias {
            check_len("linear bias", b, n)?;
            check_finite("linear bias", b)?;
        }
        let mut padded = DMatrix::zeros(n + 1, m + 1);
        padded[(0, 0)] = T::one();
        padded.view_mut((1, 1), (n, m)).copy_from(&weight);
        if let Some(b) = &bias {
            padded.view_mut((1, 0), (n, 1)).copy_from(b);
        }
        let cp = CpFactors::new(&[padded], None)?;
        Ok(Self { weight, bias, cp })
    }

    /// `W`, `n × m`.
    pub fn weight(&self) -> &DMatrix<T> {
        &self.weight
    }

    /// `b`, if the layer has one.
    pub fn bias(&self) -> Option<&DVector<T>> {
        self.bias.as_ref()
    }
}

impl<T: Real> CpKind<T> for Linear<T> {
    fn cp_factors(&self) -> &CpFactors<T> {
        &self.cp
    }

    /// A single leg has only the identity permutation.
    fn leg_symmetry(&self) -> &dyn SymmetryGroup {
        &Trivial
    }

    fn name(&self) -> &'static str {
        "linear"
    }

    /// None: a linear block has no skip term.
    fn skip_block(&self) -> Result<Option<std::sync::Arc<dyn crate::TensorBlock<T>>>> {
        Ok(None)
    }

    fn description(&self) -> Description<'_, T> {
        let mut parameters = vec![Parameter::matrix("weight", &self.weight)];
        parameters.extend(self.bias.as_ref().map(|b| Parameter::vector("bias", b)));
        Description {
            kind: "linear",
            settings: Vec::new(),
            parameters,
        }
    }

    fn baseline_parameters(&self) -> Vec<Parameter<'_, T>> {
        vec![
            Parameter::matrix("weight", &self.weight),
            Parameter::vector_or_zeros("bias", self.bias.as_ref(), self.weight.nrows()),
        ]
    }

    /// [`Linear::new`] builds factors that keep it.
    fn checks_constant_when_built(&self) -> bool {
        true
    }

    /// `X Wᵀ + 1 bᵀ`: one GEMM.
    fn apply_rows(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        check_rows("linear input", x, self.weight.ncols())?;
        let mut y = crate::linalg::mul_nt(x, &self.weight);
        if let Some(b) = &self.bias {
            crate::linalg::add_to_rows(&mut y, b);
        }
        Ok(y)
    }

    fn apply(&self, x: &DVector<T>) -> Result<DVector<T>> {
        check_len("linear input", x, self.weight.ncols())?;
        let y = &self.weight * x;
        Ok(match &self.bias {
            Some(b) => y + b,
            None => y,
        })
    }
}
