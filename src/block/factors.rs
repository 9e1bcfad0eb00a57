//! Padded CP factors: the form every position-wise block kind is given in.

use nalgebra::{DMatrix, DMatrixView, DVector};

use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::validate::{check_finite, check_len, check_shape};

/// The padded CP factors of a block of order `k` and rank `r`:
/// input factors `U_1 … U_k ∈ R^{r×(m+1)}` (stored stacked, `[U_1; …; U_k]`,
/// so that one GEMM applies all of them) and an output factor
/// `D̃ ∈ R^{(n+1)×r}`, or the identity (`r = n+1`) for blocks whose input
/// factor already is the whole map, such as [`Linear`](super::Linear).
#[derive(Clone, Debug, PartialEq)]
pub struct CpFactors<T: Real> {
    pub(crate) order: usize,
    pub(crate) stacked_inputs: DMatrix<T>,
    pub(crate) output: Option<DMatrix<T>>,
}

impl<T: Real> CpFactors<T> {
    /// Factors from `U_1 … U_k` and `D̃` (`None`: identity), checked for
    /// matching shapes and finite values.
    ///
    /// This does not check that the block keeps the constant (`ỹ_0 = 1`);
    /// [`CpBlock::new`](super::CpBlock::new) does.
    pub fn new(inputs: &[DMatrix<T>], output: Option<DMatrix<T>>) -> Result<Self> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::InvalidBlock("a block needs at least one input factor".into()))?;
        let (rank, padded_in) = first.shape();
        if padded_in == 0 || rank == 0 {
            return Err(Error::InvalidBlock(format!(
                "input factor 1 has empty shape {:?}",
                first.shape()
            )));
        }
        for (j, u) in inputs.iter().enumerate() {
            check_shape(&format!("input factor {}", j + 1), u, (rank, padded_in))?;
            check_finite(&format!("input factor {}", j + 1), u)?;
        }
        if let Some(d) = &output {
            if d.ncols() != rank || d.nrows() == 0 {
                return Err(Error::Shape {
                    what: "output factor".into(),
                    expected: (d.nrows().max(1), rank),
                    found: d.shape(),
                });
            }
            check_finite("output factor", d)?;
        }
        let k = inputs.len();
        let mut stacked_inputs = DMatrix::zeros(k * rank, padded_in);
        for (j, u) in inputs.iter().enumerate() {
            stacked_inputs.rows_mut(j * rank, rank).copy_from(u);
        }
        Ok(Self {
            order: k,
            stacked_inputs,
            output,
        })
    }

    /// Order `k`: the number of input legs.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Rank `r`: the number of CP terms.
    pub fn rank(&self) -> usize {
        self.stacked_inputs.nrows() / self.order
    }

    /// Unpadded input width `m`.
    pub fn input_width(&self) -> usize {
        self.stacked_inputs.ncols() - 1
    }

    /// Unpadded output width `n`.
    pub fn output_width(&self) -> usize {
        match &self.output {
            Some(d) => d.nrows() - 1,
            None => self.rank() - 1,
        }
    }

    /// `[U_1; …; U_k]`, `k·r × (m+1)`.
    pub fn stacked_inputs(&self) -> &DMatrix<T> {
        &self.stacked_inputs
    }

    /// `U_j` (0-based `j`), `r × (m+1)`.
    ///
    /// # Panics
    ///
    /// If `j ≥ k`.
    #[track_caller]
    pub fn input(&self, j: usize) -> DMatrixView<'_, T> {
        assert!(
            j < self.order,
            "input factor {j} of a block of order {}",
            self.order
        );
        let r = self.rank();
        self.stacked_inputs.rows(j * r, r)
    }

    /// `D̃`, `(n+1) × r`; `None` when it is the identity.
    pub fn output(&self) -> Option<&DMatrix<T>> {
        self.output.as_ref()
    }

    /// `ỹ = D̃ ((U_1 x̃) ∘ … ∘ (U_k x̃))` for a padded input `x̃`.
    pub fn apply_padded(&self, x_padded: &DVector<T>) -> Result<DVector<T>> {
        check_len("padded input", x_padded, self.input_width() + 1)?;
        let all = &self.stacked_inputs * x_padded;
        let r = self.rank();
        let mut z = all.rows(0, r).into_owned();
        for j in 1..self.order {
            z.component_mul_assign(&all.rows(j * r, r));
        }
        Ok(match &self.output {
            Some(d) => d * z,
            None => z,
        })
    }

    /// `y = D̃ ((U_1 x̃) ∘ … ∘ (U_k x̃))` without its constant, for every row
    /// `x` of `x` (`rows × m` to `rows × n`): one GEMM for all input factors,
    /// the Hadamard products, one GEMM for the output factor.
    pub(crate) fn apply_rows(&self, x: &DMatrix<T>) -> DMatrix<T> {
        let m = self.input_width();
        let u = &self.stacked_inputs;
        // X̃ Uᵀ = 1 U[:, 0]ᵀ + X U[:, 1..]ᵀ, all k factors at once.
        let mut all = crate::linalg::mul_nt(x, &u.columns(1, m));
        crate::linalg::add_to_rows(&mut all, &u.column(0));
        let r = self.rank();
        let mut z = all.columns(0, r).into_owned();
        for j in 1..self.order {
            z.component_mul_assign(&all.columns(j * r, r));
        }
        let y = match &self.output {
            Some(d) => crate::linalg::mul_nt(&z, d),
            None => z,
        };
        y.columns(1, y.ncols() - 1).into_owned()
    }

    /// The dense tensor `B` as an `(n+1) × (m+1)^k` matrix; column
    /// `Σ_j i_j (m+1)^{k−1−j}` holds `B[:, i_1…i_k]` (leg 1 varies slowest).
    ///
    /// Exponential in `k`: meant for tests and tiny blocks.
    pub fn dense(&self) -> DMatrix<T> {
        let r = self.rank();
        let w = self.input_width() + 1;
        // Khatri–Rao product of the input factors, one CP term per row.
        let mut kr = self.input(0).into_owned();
        for j in 1..self.order {
            let u = self.input(j);
            let mut next = DMatrix::zeros(r, kr.ncols() * w);
            for rho in 0..r {
                for a in 0..kr.ncols() {
                    for b in 0..w {
                        next[(rho, a * w + b)] = kr[(rho, a)] * u[(rho, b)];
                    }
                }
            }
            kr = next;
        }
        match &self.output {
            Some(d) => d * kr,
            None => kr,
        }
    }
}
