//! Blocks: the multilinear layers a model is a chain of.
//!
//! A block of order `k` maps a padded input `x̃ = (1, x)` of width `m+1` to a
//! padded output `ỹ` of width `n+1` through `k` copies of its input,
//! `ỹ = B(x̃, …, x̃)`. Every block is given in **padded CP form** ([SPEC §1](crate::spec#1-blocks-and-models)):
//!
//! ```text
//! ỹ = D̃ ((U_1 x̃) ∘ … ∘ (U_k x̃)),      B[o, i_1…i_k] = Σ_ρ D̃[o,ρ] Π_j U_j[ρ, i_j]
//! ```
//!
//! with input factors `U_j ∈ R^{r×(m+1)}` and output factor `D̃ ∈ R^{(n+1)×r}`,
//! held by [`CpFactors`]. A new block kind implements [`TensorBlock`] by
//! handing out its factors; the recursion needs nothing else. The factors
//! must keep the constant (row 0 of every `U_j` is `e_0ᵀ` for the constant
//! unit, and row 0 of `D̃` reads only it, so `ỹ_0 = 1`), and `forward` must
//! compute what they compute: [`check_block`] checks both, and
//! [`Model::new`](crate::Model::new) refuses a block that drops the constant.
//!
//! | kind | order | padded form |
//! |---|---|---|
//! | [`Linear`] | 1 | `U_1 = [[1, 0ᵀ], [b, W]]`, `D̃ = I` |
//! | [`Bilinear`] | 2 | `U_1 = [e_0ᵀ; (b_L│L); (0│I)]`, `U_2 = [e_0ᵀ; (b_R│R); (1│0)…]`, `D̃ = [(1; s b_D)│(0; s D)│(0; (1−s) I)]` |
//! | [`CpBlock`] | any | given |
//! | [`Attention`] | 5 | none useful: its own Gram step ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)) |

mod attention;
mod bilinear;
mod check;
mod cp;
pub(crate) mod kernel;
mod linear;
pub(crate) mod positionwise;

pub use attention::{Attention, AttentionBuilder, DEFAULT_ROTARY_BASE, Mask};
pub use bilinear::{Bilinear, BilinearBuilder};
pub use check::check_block;
pub(crate) use check::check_constant_at;
pub use cp::CpBlock;
pub use kernel::GramWorkspace;
pub use linear::Linear;

use std::borrow::Cow;

use nalgebra::{DMatrix, DMatrixView, DVector};

use crate::error::{Error, Result};
use crate::scalar::{Real, to_f64};
use crate::symmetry::{Full, SymmetryGroup};

/// The padded CP factors of a block of order `k` and rank `r`:
/// input factors `U_1 … U_k ∈ R^{r×(m+1)}` (stored stacked, `[U_1; …; U_k]`,
/// so that one GEMM applies all of them) and an output factor
/// `D̃ ∈ R^{(n+1)×r}`, or the identity (`r = n+1`) for blocks whose input
/// factor already is the whole map, such as [`Linear`].
#[derive(Clone, Debug, PartialEq)]
pub struct CpFactors<T: Real> {
    order: usize,
    stacked_inputs: DMatrix<T>,
    output: Option<DMatrix<T>>,
}

impl<T: Real> CpFactors<T> {
    /// Factors from `U_1 … U_k` and `D̃` (`None`: identity), checked for
    /// matching shapes and finite values.
    ///
    /// This does not check that the block keeps the constant (`ỹ_0 = 1`);
    /// [`CpBlock::new`] does.
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

/// One named parameter tensor of a block, for weight-space baselines and
/// file output. Values are column-major; a missing bias is given as zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter<'a, T: Clone> {
    /// What the tensor is (`"weight"`, `"left_bias"`, …).
    pub role: &'static str,
    /// `(rows, columns)`; vectors are `(len, 1)`.
    pub shape: (usize, usize),
    /// The entries, column-major.
    pub values: Cow<'a, [T]>,
}

impl<'a, T: Real> Parameter<'a, T> {
    /// A borrowed matrix parameter.
    pub fn matrix(role: &'static str, m: &'a DMatrix<T>) -> Self {
        Self {
            role,
            shape: m.shape(),
            values: Cow::Borrowed(m.as_slice()),
        }
    }

    /// A borrowed vector parameter, or zeros of length `len` when absent.
    pub fn vector_or_zeros(role: &'static str, v: Option<&'a DVector<T>>, len: usize) -> Self {
        match v {
            Some(v) => Self {
                role,
                shape: (v.len(), 1),
                values: Cow::Borrowed(v.as_slice()),
            },
            None => Self {
                role,
                shape: (len, 1),
                values: Cow::Owned(vec![T::zero(); len]),
            },
        }
    }
}

/// A multilinear block: what a model is a chain of.
///
/// A block kind supplies **either** its padded CP factors
/// ([`cp_factors`](Self::cp_factors)), from which every other method has a
/// default, **or** (for a kind without a useful CP form, such as
/// [`Attention`], whose CP rank grows as `n²e³` per head) `None` there and
/// its own [`gram_step`](Self::gram_step), [`self_gram_step`](Self::self_gram_step),
/// shape ([`order`](Self::order), [`input_width`](Self::input_width),
/// [`output_width`](Self::output_width)), [`forward_sequence`](Self::forward_sequence)
/// and [`parameters`](Self::parameters). The recursion calls one method per
/// block, [`gram_step`](Self::gram_step), and never learns which kind it holds.
///
/// **Sequences** ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)). A model may read `n` positions `X ∈ R^{n×d}`,
/// flattened with one shared constant, `x̃ = (1, X[0], …, X[n−1])`. Widths
/// are per position. A CP block acts on every position with shared weights
/// (its default Gram step lifts the per-position step to the flattened
/// stream); a kind that mixes positions says so in
/// [`mixes_positions`](Self::mixes_positions).
///
/// The trait is dyn-safe: a [`Model`](crate::Model) holds
/// `Arc<dyn TensorBlock<T>>`. Implementations must be immutable.
///
/// # Example: a new block kind
///
/// ```
/// use nalgebra::{dmatrix, DMatrix};
/// use tensor_similarity::{CpFactors, TensorBlock};
///
/// /// Elementwise square `y_i = x_i²` on 2 inputs.
/// #[derive(Debug)]
/// struct Square(CpFactors<f64>);
///
/// impl TensorBlock<f64> for Square {
///     fn cp_factors(&self) -> Option<&CpFactors<f64>> { Some(&self.0) }
/// }
///
/// // U_1 = U_2 = I_3 (the padded identity): (x̃ ∘ x̃) = (1, x_1², x_2²).
/// let u: DMatrix<f64> = DMatrix::identity(3, 3);
/// let square = Square(CpFactors::new(&[u.clone(), u], None)?);
/// assert_eq!(square.order(), 2);
/// let y = square.forward(&nalgebra::dvector![3.0, -2.0])?;
/// assert_eq!(y, nalgebra::dvector![9.0, 4.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub trait TensorBlock<T: Real>: core::fmt::Debug + Send + Sync {
    /// The padded CP factors `U_1 … U_k`, `D̃` of the block at one position;
    /// `None` for a kind that supplies its own Gram step.
    fn cp_factors(&self) -> Option<&CpFactors<T>>;

    /// The permutations of the input legs under which the block's function
    /// is invariant; the default, `S_k`, is right when every leg reads the
    /// same `x̃`.
    fn symmetry(&self) -> &dyn SymmetryGroup {
        &Full
    }

    /// A short name of the block kind (`"linear"`, `"bilinear"`, …).
    fn kind(&self) -> &'static str {
        "cp"
    }

    /// The block as [`Any`](core::any::Any), so that code which knows concrete
    /// kinds (such as [`io::save`](crate::io::save), which writes a
    /// [`Bilinear`]'s residual scale, not available from its factors) can
    /// recover them. The default, `None`, suits kinds nothing downcasts to.
    fn as_any(&self) -> Option<&dyn core::any::Any> {
        None
    }

    /// The block's parameters in a fixed order, for weight-space baselines.
    /// The default lists the CP factors.
    fn parameters(&self) -> Vec<Parameter<'_, T>> {
        let Some(cp) = self.cp_factors() else {
            return Vec::new();
        };
        let mut p = vec![Parameter::matrix("inputs", cp.stacked_inputs())];
        if let Some(d) = cp.output() {
            p.push(Parameter::matrix("output", d));
        }
        p
    }

    /// Order `k` (0 for a kind without CP factors that does not say).
    fn order(&self) -> usize {
        self.cp_factors().map_or(0, CpFactors::order)
    }

    /// Unpadded input width `m` (per position).
    fn input_width(&self) -> usize {
        self.cp_factors().map_or(0, CpFactors::input_width)
    }

    /// Unpadded output width `n` (per position).
    fn output_width(&self) -> usize {
        self.cp_factors().map_or(0, CpFactors::output_width)
    }

    /// Whether the block mixes positions of a sequence (then a model that
    /// holds it is a sequence model, compared at a given context length).
    /// The default, `false`, is right for CP blocks: they act on each
    /// position with shared weights.
    fn mixes_positions(&self) -> bool {
        false
    }

    /// The block's function on an unpadded input: `y = ỹ[1:]`; for a kind
    /// that mixes positions, on a sequence of one position.
    fn forward(&self, x: &DVector<T>) -> Result<DVector<T>> {
        check_len("block input", x, self.input_width())?;
        match self.cp_factors() {
            Some(cp) => {
                let y = cp.apply_padded(&pad(x))?;
                Ok(y.rows(1, y.len() - 1).into_owned())
            }
            None => {
                let y =
                    self.forward_sequence(&DMatrix::from_row_slice(1, x.len(), x.as_slice()))?;
                Ok(y.row(0).transpose())
            }
        }
    }

    /// The block on a sequence, one position per row: `X ∈ R^{n×m}` to
    /// `Y ∈ R^{n×n_out}`. The default applies [`forward`](Self::forward)
    /// to every row (a position-wise block).
    fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        if self.cp_factors().is_none() {
            return Err(Error::InvalidBlock(format!(
                "a {} block without CP factors must supply forward_sequence",
                self.kind()
            )));
        }
        if x.ncols() != self.input_width() {
            return Err(Error::Shape {
                what: format!("{} block input (one position per row)", self.kind()),
                expected: (x.nrows(), self.input_width()),
                found: x.shape(),
            });
        }
        let mut y = DMatrix::zeros(x.nrows(), self.output_width());
        for (p, row) in x.row_iter().enumerate() {
            y.row_mut(p)
                .copy_from(&self.forward(&row.transpose())?.transpose());
        }
        Ok(y)
    }

    /// One step of the Gram recursion on the flattened stream of `context`
    /// positions: `g` is the cross Gram matrix of the two models' padded
    /// inputs, `(n m_A + 1) × (n m_B + 1)`, and the result that of their
    /// outputs, `(n n_A + 1) × (n n_B + 1)` ([SPEC §2](crate::spec#2-tensor-similarity-the-default-metric), [§7](crate::spec#7-sequences-and-bilinear-attention)).
    ///
    /// The default lifts the CP step ([`gram_step`](crate::gram_step)) to
    /// every pair of positions; it needs CP factors on both blocks. A kind
    /// without them overrides this.
    fn gram_step(
        &self,
        other: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        context: usize,
    ) -> Result<DMatrix<T>> {
        let a = (
            kernel::cp_of_kind(self.cp_factors(), self.kind())?,
            self.symmetry(),
        );
        let b = (kernel::cp_of(other)?, other.symmetry());
        positionwise::step(a, Some(b), g, context)
    }

    /// An estimate of the scalars one [`gram_step`](Self::gram_step) with
    /// `other` holds at its peak on `context` positions, besides its input
    /// Gram matrix: its output and its scratch. In `f64`, so that it never
    /// overflows; a comparison checks the sum against its
    /// [`MemoryLimit`](crate::MemoryLimit) before it starts, so an estimate
    /// should err on the high side.
    ///
    /// The default suits CP blocks: the flattened output, and the CP
    /// kernel's factor-sized products (per pair of positions, reused).
    fn gram_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
        let output =
            crate::resources::flat_entries(context, self.output_width(), other.output_width());
        // Stacked input rank k·r and output rows of each side (a kind
        // without factors that keeps this default is counted by width).
        let shape = |cp: Option<&CpFactors<T>>, input: usize, output: usize| {
            let (m, out) = (input as f64 + 1.0, output as f64 + 1.0);
            match cp {
                Some(f) => ((f.order() * f.rank()) as f64, m, out),
                None => (out, m, out),
            }
        };
        let (ka, ma, na) = shape(self.cp_factors(), self.input_width(), self.output_width());
        let (kb, mb, nb) = shape(
            other.cp_factors(),
            other.input_width(),
            other.output_width(),
        );
        // Y = U_A G and its mirror, Z = D̃_A H and its mirror, copies of
        // U_Bᵀ and D̃_Bᵀ, and the kernel's panels (2 MiB of f64 per thread).
        let kernel = 2.0 * (ka * mb + kb * ma + na * kb + nb * ka + kb * mb + nb * kb)
            + (rayon::current_num_threads() as f64) * (1 << 18) as f64;
        output + kernel
    }

    /// [`gram_step`](Self::gram_step) of the block with itself, for `⟨A, A⟩`:
    /// `g` is symmetric, and so is the result. The default takes the
    /// symmetric CP kernel ([`GramWorkspace::self_step`]), about half the work.
    fn self_gram_step(&self, g: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
        let a = (
            kernel::cp_of_kind(self.cp_factors(), self.kind())?,
            self.symmetry(),
        );
        positionwise::step(a, None, g, context)
    }
}

impl<T: Real, B: TensorBlock<T> + ?Sized> TensorBlock<T> for std::sync::Arc<B> {
    fn cp_factors(&self) -> Option<&CpFactors<T>> {
        (**self).cp_factors()
    }
    fn symmetry(&self) -> &dyn SymmetryGroup {
        (**self).symmetry()
    }
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn as_any(&self) -> Option<&dyn core::any::Any> {
        (**self).as_any()
    }
    fn parameters(&self) -> Vec<Parameter<'_, T>> {
        (**self).parameters()
    }
    fn order(&self) -> usize {
        (**self).order()
    }
    fn input_width(&self) -> usize {
        (**self).input_width()
    }
    fn output_width(&self) -> usize {
        (**self).output_width()
    }
    fn mixes_positions(&self) -> bool {
        (**self).mixes_positions()
    }
    fn forward(&self, x: &DVector<T>) -> Result<DVector<T>> {
        (**self).forward(x)
    }
    fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        (**self).forward_sequence(x)
    }
    fn gram_step(
        &self,
        other: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        context: usize,
    ) -> Result<DMatrix<T>> {
        (**self).gram_step(other, g, context)
    }
    fn self_gram_step(&self, g: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
        (**self).self_gram_step(g, context)
    }
    fn gram_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
        (**self).gram_step_scalars(other, context)
    }
}

/// `x̃ = (1, x)`.
pub fn pad<T: Real>(x: &DVector<T>) -> DVector<T> {
    DVector::from_iterator(
        x.len() + 1,
        core::iter::once(T::one()).chain(x.iter().copied()),
    )
}

pub(crate) fn check_shape<T: Real>(
    what: &str,
    m: &DMatrix<T>,
    expected: (usize, usize),
) -> Result<()> {
    if m.shape() != expected {
        return Err(Error::Shape {
            what: what.to_owned(),
            expected,
            found: m.shape(),
        });
    }
    Ok(())
}

/// An error unless `m` is square and non-empty.
pub(crate) fn check_square<T: Real>(what: &'static str, m: &DMatrix<T>) -> Result<()> {
    let (r, c) = m.shape();
    if r != c || r == 0 {
        return Err(Error::InvalidOption {
            what,
            reason: format!("must be square and non-empty, found {r}×{c}"),
        });
    }
    Ok(())
}

/// An error naming the first pair `(i, j)` with `|m_ij − m_ji| > tolerance`.
pub(crate) fn check_symmetric<T: Real>(
    what: &'static str,
    m: &DMatrix<T>,
    tolerance: T,
) -> Result<()> {
    for j in 0..m.ncols() {
        for i in j + 1..m.nrows() {
            if (m[(i, j)] - m[(j, i)]).abs() > tolerance {
                return Err(Error::InvalidOption {
                    what,
                    reason: format!(
                        "not symmetric at ({i}, {j}): {} vs {}",
                        to_f64(m[(i, j)]),
                        to_f64(m[(j, i)])
                    ),
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn check_len<T: Real>(what: &str, v: &DVector<T>, expected: usize) -> Result<()> {
    if v.len() != expected {
        return Err(Error::Shape {
            what: what.to_owned(),
            expected: (expected, 1),
            found: (v.len(), 1),
        });
    }
    Ok(())
}

/// An error naming the first NaN or infinity in `m`.
pub(crate) fn check_finite<
    T: Real,
    R: nalgebra::Dim,
    C: nalgebra::Dim,
    S: nalgebra::RawStorage<T, R, C>,
>(
    what: &str,
    m: &nalgebra::Matrix<T, R, C, S>,
) -> Result<()> {
    for c in 0..m.ncols() {
        for r in 0..m.nrows() {
            let v = m[(r, c)];
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    what: what.to_owned(),
                    row: r,
                    col: c,
                    value: to_f64(v),
                });
            }
        }
    }
    Ok(())
}
