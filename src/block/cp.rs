//! The general order-k block, given its padded CP factors.

use std::sync::Arc;

use nalgebra::DMatrix;

use super::{CpFactors, TensorBlock};
use crate::error::{Error, Result};
use crate::scalar::{Real, to_f64};
use crate::symmetry::{Full, SymmetryGroup, leg_pairings};

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

impl<T: Real> TensorBlock<T> for CpBlock<T> {
    fn cp_factors(&self) -> Option<&CpFactors<T>> {
        Some(&self.cp)
    }

    fn symmetry(&self) -> &dyn SymmetryGroup {
        &*self.symmetry
    }
}

/// Checks `‖P p_0 − e_0^{⊗k}‖² ≈ 0` for the output row `p_0` of the block
/// symmetrised by `P`, in `O(k r² m)` without forming the tensor:
/// `‖P p_0‖² = Σ_π w_π Σ_{ρρ'} d_ρ d_ρ' Π_j (U_j U_{π(j)}ᵀ)[ρ,ρ']` and
/// `⟨p_0, e_0^{⊗k}⟩ = Σ_ρ d_ρ Π_j U_j[ρ,0]`.
fn check_keeps_constant<T: Real>(cp: &CpFactors<T>, symmetry: &dyn SymmetryGroup) -> Result<()> {
    let k = cp.order();
    let r = cp.rank();
    let d: Vec<f64> = match cp.output() {
        Some(out) => out.row(0).iter().map(|&x| to_f64(x)).collect(),
        None => (0..r).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect(),
    };
    let gram = cp.stacked_inputs() * cp.stacked_inputs().transpose();
    let mut norm2 = 0.0;
    for (pi, w) in leg_pairings(symmetry, symmetry, k)? {
        for a in 0..r {
            for b in 0..r {
                let prod: f64 = (0..k)
                    .map(|j| to_f64(gram[(j * r + a, pi.apply(j) * r + b)]))
                    .product();
                norm2 += w * d[a] * d[b] * prod;
            }
        }
    }
    let at_origin: f64 = (0..r)
        .map(|a| d[a] * (0..k).map(|j| to_f64(cp.input(j)[(a, 0)])).product::<f64>())
        .sum();
    let residual = norm2 - 2.0 * at_origin + 1.0;
    let tolerance = to_f64(T::default_epsilon()).sqrt() * (norm2.abs() + 1.0);
    if residual.abs() > tolerance || !residual.is_finite() {
        return Err(Error::InvalidBlock(format!(
            "the factors do not keep the constant: output 0 of the symmetrised tensor differs from e_0⊗…⊗e_0 \
             (squared distance {residual:.3e}, ⟨p_0, e_0⊗…⊗e_0⟩ = {at_origin:.6})"
        )));
    }
    Ok(())
}
