//! The general order-k block, given its padded CP factors.

use std::sync::Arc;

use nalgebra::DMatrix;

use super::{CpFactors, CpKind};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::symmetry::{Full, SymmetryGroup};

/// A block of any order `k ≥ 1` given by its padded CP factors
/// `U_1 … U_k ∈ R^{r×(m+1)}` and `D̃ ∈ R^{(n+1)×r}`, with a symmetry group
/// (default: the full `S_k`).
///
/// # Example: a cubic unit `y = (a·x)³`
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{CpBlock, TensorBlock};
///
/// // Term 0 carries the constant, term 1 computes (a·x)³ with a = (1, 2).
/// let u = dmatrix![1.0, 0.0, 0.0; 0.0, 1.0, 2.0];
/// let d = dmatrix![1.0, 0.0; 0.0, 1.0];
/// let cube = CpBlock::new(vec![u.clone(), u.clone(), u], d)?;
/// assert_eq!(cube.forward(&dvector![1.0, 1.0])?, dvector![27.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CpBlock<T: Real = f64> {
    cp: CpFactors<T>,
    symmetry: Arc<dyn SymmetryGroup>,
}

impl<T: Real> CpBlock<T> {
    /// The block `ỹ = D̃ ((U_1 x̃) ∘ … ∘ (U_k x̃))`, symmetric under `S_k`.
    ///
    /// An error unless the factors have matching shapes, finite values, and
    /// keep the constant: the output row 0 of the symmetrised tensor must be
    /// `e_0 ⊗ … ⊗ e_0`, so that `ỹ_0 = 1`.
    pub fn new(inputs: Vec<DMatrix<T>>, output: DMatrix<T>) -> Result<Self> {
        Self::with_symmetry(inputs, output, Arc::new(Full))
    }

    /// As [`new`](Self::new), with the given symmetry group.
    pub fn with_symmetry(
        inputs: Vec<DMatrix<T>>,
        output: DMatrix<T>,
        symmetry: Arc<dyn SymmetryGroup>,
    ) -> Result<Self> {
        let cp = CpFactors::new(&inputs, Some(output))?;
        check_keeps_constant(&cp, &*symmetry)?;
        Ok(Self { cp, symmetry })
    }

    /// A block from already built factors (an identity output factor allowed).
    pub fn from_factors(cp: CpFactors<T>, symmetry: Arc<dyn SymmetryGroup>) -> Result<Self> {
        check_keeps_constant(&cp, &*symmetry)?;
        Ok(Self { cp, symmetry })
    }
}

impl<T: Real> CpKind<T> for CpBlock<T> {
    fn cp_factors(&self) -> &CpFactors<T> {
        &self.cp
    }

    /// None: a block given by its factors has no designated skip term.
    fn skip_block(&self) -> Result<Option<std::sync::Arc<dyn crate::TensorBlock<T>>>> {
        Ok(None)
    }

    /// The factors' GEMMs over all rows at once.
    fn apply_rows(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        if x.ncols() != self.cp.input_width() {
            return Err(Error::Shape {
                what: "cp block input (one position per row)".into(),
                expected: (x.nrows(), self.cp.input_width()),
                found: x.shape(),
            });
        }
        Ok(self.cp.apply_rows(x))
    }

    /// Its constructors check the constant rule.
    fn checks_constant_when_built(&self) -> bool {
        true
    }

    fn leg_symmetry(&self) -> &dyn SymmetryGroup {
        &*self.symmetry
    }
}

/// An [`InvalidBlock`](Error::InvalidBlock) error unless the factors keep
/// the constant under `symmetry` ([`check`](super::check)).
fn check_keeps_constant<T: Real>(cp: &CpFactors<T>, symmetry: &dyn SymmetryGroup) -> Result<()> {
    // A group that does not act on k legs is a symmetry error, not a broken constant.
    symmetry.elements(cp.order())?;
    super::check::exact_constant(cp, symmetry).map_err(Error::InvalidBlock)
}
