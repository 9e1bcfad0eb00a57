//! Blocks: the multilinear layers a model is a chain of.
//!
//! A block of order `k` maps a padded input `x̃ = (1, x)` of width `m+1` to a
//! padded output `ỹ` of width `n+1` through `k` copies of its input,
//! `ỹ = B(x̃, …, x̃)`. Most blocks are given in **padded CP form** ([SPEC §1](crate::spec#1-blocks-and-models)):
//!
//! ```text
//! ỹ = D̃ ((U_1 x̃) ∘ … ∘ (U_k x̃)),      B[o, i_1…i_k] = Σ_ρ D̃[o,ρ] Π_j U_j[ρ, i_j]
//! ```
//!
//! with input factors `U_j ∈ R^{r×(m+1)}` and output factor `D̃ ∈ R^{(n+1)×r}`,
//! held by [`CpFactors`].
//!
//! # Adding a block kind
//!
//! A block kind is **one trait impl**, and the compiler checks it:
//!
//! - a kind given by CP factors implements [`CpKind`] (one required method,
//!   [`cp_factors`](CpKind::cp_factors)); both metrics' steps, the shape and
//!   the description come from the factors;
//! - a kind without a useful CP form (such as [`Attention`], whose CP rank
//!   grows as `n²e³` per head) implements [`TensorBlock`] itself: its shape,
//!   its description, its forward pass, its Gram step (the tensor metric)
//!   and its moment step (the Gaussian metric).
//!
//! The factors must keep the constant (row 0 of every `U_j` is `e_0ᵀ` for the
//! constant unit, and row 0 of `D̃` reads only it, so `ỹ_0 = 1`), and
//! `forward` must compute what they compute: [`check_block`] checks both,
//! and [`Model::new`](crate::Model::new) refuses a block that drops the
//! constant.
//!
//! | kind | order | padded form |
//! |---|---|---|
//! | [`Linear`] | 1 | `U_1 = [[1, 0ᵀ], [b, W]]`, `D̃ = I` |
//! | [`Bilinear`] | 2 | `U_1 = [e_0ᵀ; (b_L│L); (0│I)]`, `U_2 = [e_0ᵀ; (b_R│R); (1│0)…]`, `D̃ = [(1; s b_D)│(0; s D)│(0; (1−s) I)]` |
//! | [`CpBlock`] | any | given |
//! | [`Attention`] | 5 | none useful: its own steps ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)) |

mod attention;
mod bilinear;
mod check;
mod cp;
mod cp_kind;
mod describe;
pub(crate) mod factors;
pub(crate) mod kernel;
mod linear;
pub(crate) mod positionwise;

pub use attention::{Attention, AttentionBuilder, DEFAULT_ROTARY_BASE, Mask, Role};
#[doc(hidden)]
pub use attention::{gram_step_in_tiles, moment_step_in_tiles};
pub(crate) use attention::{gram_step_with_heads, head_part, is_attention};
pub use bilinear::{Bilinear, BilinearBuilder};
pub use check::check_block;
pub(crate) use check::check_constant_at;
pub use cp::CpBlock;
pub use cp_kind::CpKind;
pub use describe::{Description, Parameter, Setting};
pub use factors::CpFactors;
pub use kernel::GramWorkspace;
pub use linear::Linear;

use nalgebra::{DMatrix, DVector};

use crate::error::Result;
use crate::gaussian::moments::{JointMoments, Moments};
use crate::scalar::Real;
use crate::symmetry::SymmetryGroup;
use crate::validate::check_len;

/// A multilinear block: what a model is a chain of, for both metrics.
///
/// Implement [`CpKind`] instead for a kind given by padded CP factors: it
/// implements this trait from them. A kind without CP factors implements
/// this trait itself, every method but [`forward`](Self::forward) and
/// [`as_cp`](Self::as_cp): its shape, its description, its forward pass on a
/// sequence, its Gram step with the tensor recursion's scratch estimate, and
/// its moment step for the Gaussian metric with its estimate.
/// `suite/tests/custom_block.rs` has one of each, written as a downstream
/// crate would.
///
/// The recursion calls one method per pair of blocks,
/// [`gram_step`](Self::gram_step), the Gaussian metric
/// [`moment_step`](Self::moment_step); neither learns which kind it holds.
/// Code outside a kind's own module (files, `inspect`, checks) asks
/// [`describe`](Self::describe).
///
/// **Sequences** ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)). A model may read `n` positions `X ∈ R^{n×d}`,
/// flattened with one shared constant, `x̃ = (1, X[0], …, X[n−1])`. Widths
/// are per position. A CP block acts on every position with shared weights;
/// a kind that mixes positions says so in
/// [`mixes_positions`](Self::mixes_positions).
///
/// The trait is dyn-safe: a [`Model`](crate::Model) holds
/// `Arc<dyn TensorBlock<T>>`. Implementations must be immutable.
pub trait TensorBlock<T: Real>: core::any::Any + core::fmt::Debug + Send + Sync {
    /// A short name of the block kind (`"linear"`, `"bilinear"`, …).
    fn kind(&self) -> &'static str;

    /// Order `k`: how many copies of its padded input the block reads.
    fn order(&self) -> usize;

    /// Unpadded input width `m` (per position).
    fn input_width(&self) -> usize;

    /// Unpadded output width `n` (per position).
    fn output_width(&self) -> usize;

    /// Whether the block mixes positions of a sequence (then a model that
    /// holds it is a sequence model, compared at a given context length).
    fn mixes_positions(&self) -> bool;

    /// The permutations of the input legs under which the block's function
    /// is invariant (`S_k` when every leg reads the same `x̃` through
    /// interchangeable factors).
    fn symmetry(&self) -> &dyn SymmetryGroup;

    /// The block's parameters by role and its settings, for files,
    /// `inspect` and checks.
    fn describe(&self) -> Description<'_, T>;

    /// The block's parameters in a fixed order, for weight-space baselines:
    /// an absent optional parameter is listed as zeros, so that two blocks
    /// of a kind list the same shapes. The default lists
    /// [`describe`](Self::describe)'s.
    fn parameters(&self) -> Vec<Parameter<'_, T>> {
        self.describe().parameters
    }

    /// The block on a sequence, one position per row: `X ∈ R^{n×m}` to
    /// `Y ∈ R^{n×n_out}`.
    fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>>;

    /// The block's function on an unpadded input: `y = ỹ[1:]`, on a
    /// sequence of one position.
    fn forward(&self, x: &DVector<T>) -> Result<DVector<T>> {
        check_len("block input", x, self.input_width())?;
        let y = self.forward_sequence(&DMatrix::from_row_slice(1, x.len(), x.as_slice()))?;
        Ok(y.row(0).transpose())
    }

    /// The block on `x.nrows() / context` sequences of `context` positions
    /// each, stacked sequence by sequence (row `s·context + p` is position
    /// `p` of sequence `s`): what batched forward passes (Monte Carlo)
    /// call. The default runs [`forward_sequence`](Self::forward_sequence)
    /// once on all rows for a position-wise block and once per sequence for
    /// a block that mixes positions; a kind may batch further
    /// ([`Attention`] computes its projections at one position of every
    /// sequence as one GEMM). An error if `context` is 0 or does not divide
    /// the rows, or `x` is not as wide as the block's input.
    ///
    /// ```
    /// use nalgebra::{dmatrix, DMatrix};
    /// use tensor_similarity::{Linear, TensorBlock};
    ///
    /// let layer = Linear::new(dmatrix![2.0, 0.0; 0.0, 1.0], None)?;
    /// // Two sequences of two positions.
    /// let x = dmatrix![1.0, 1.0; 2.0, 0.0; 0.0, 3.0; 1.0, 1.0];
    /// assert_eq!(layer.forward_sequences(&x, 2)?, layer.forward_sequence(&x)?);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    fn forward_sequences(&self, x: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
        check_sequences(x, context, self.input_width())?;
        if !self.mixes_positions() {
            return self.forward_sequence(x);
        }
        let mut y = DMatrix::zeros(x.nrows(), self.output_width());
        for s in 0..x.nrows() / context {
            let sequence = x.rows(s * context, context).into_owned();
            y.rows_mut(s * context, context)
                .copy_from(&self.forward_sequence(&sequence)?);
        }
        Ok(y)
    }

    /// One step of the Gram recursion on the flattened stream of `context`
    /// positions: `g` is the cross Gram matrix of the two models' padded
    /// inputs, `(n m_A + 1) × (n m_B + 1)`, and the result that of their
    /// outputs, `(n n_A + 1) × (n n_B + 1)` ([SPEC §2](crate::spec#2-tensor-similarity-the-default-metric), [§7](crate::spec#7-sequences-and-bilinear-attention)).
    /// An error ([`Error::InvalidBlock`](crate::Error::InvalidBlock)) for an
    /// `other` kind the step cannot pair with.
    fn gram_step(
        &self,
        other: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        context: usize,
    ) -> Result<DMatrix<T>>;

    /// [`gram_step`](Self::gram_step) of the block with itself, for `⟨A, A⟩`:
    /// `g` is symmetric, and so is the result.
    fn self_gram_step(&self, g: &DMatrix<T>, context: usize) -> Result<DMatrix<T>>;

    /// An estimate of the scalars one [`gram_step`](Self::gram_step) with
    /// `other` holds at its peak on `context` positions, besides its input
    /// Gram matrix: its output and its scratch. In `f64`, so that it never
    /// overflows; a comparison checks the sum against its
    /// [`MemoryLimit`](crate::MemoryLimit) before it starts, so an estimate
    /// should err on the high side.
    fn gram_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64;

    /// An estimate of the multiply–adds one [`gram_step`](Self::gram_step)
    /// with `other` performs on `context` positions, in `f64`. A comparison
    /// sums them over its blocks and three products and checks the total
    /// against its work limit
    /// ([`TensorSimilarity::with_max_work`](crate::TensorSimilarity::with_max_work))
    /// before it starts, so that a context that would take hours is refused
    /// by name instead of started silently; an estimate should err on the
    /// high side.
    fn gram_step_work(&self, other: &dyn TensorBlock<T>, context: usize) -> f64;

    /// One step of the Gaussian metric ([SPEC §3](crate::spec#3-gaussian-functional-similarity)):
    /// the joint moments of the two models' outputs from those of their
    /// inputs. The step computes in the input's scale, from the normalised
    /// moments it is given; the metric then scales by the orders and
    /// normalises. A step that needs the whole stream reads
    /// [`JointMoments::joint`]. An error for an `other` kind the step
    /// cannot pair with.
    fn moment_step(
        &self,
        other: &dyn TensorBlock<T>,
        input: &JointMoments<T>,
    ) -> Result<JointMoments<T>>;

    /// [`moment_step`](Self::moment_step) of the block with itself: one
    /// model's output moments, for `⟨f, f⟩`.
    fn self_moment_step(&self, input: &Moments<T>) -> Result<Moments<T>>;

    /// An estimate of the scalars one [`moment_step`](Self::moment_step)
    /// with `other` holds on `context` positions besides the input and
    /// output moments (which the metric counts): its tables and scratch.
    fn moment_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64;

    /// The block's padded CP factors at one position, if it is given by
    /// them ([`CpKind`]): the recursion and the Gaussian metric use them
    /// for fast paths through linear blocks. The default, `None`, is right
    /// for a kind with its own steps.
    fn as_cp(&self) -> Option<&CpFactors<T>> {
        None
    }

    /// The block reduced to its skip term `r·x` ([SPEC §9](crate::spec#9-where-two-models-differ-heads-and-paths)),
    /// which a head path keeps of every block after its head's:
    /// `Ok(Some(part))` for a block with a skip term (attention, a bilinear
    /// block with `r ≠ 0`: the same kind with `α = 0` and the same order, so
    /// that its symmetrised tensor is the original's skip term), `Ok(None)`
    /// for a block without one (a path through it is zero). The default is
    /// an error naming the kind, so that a kind is never read as having no
    /// skip term because it did not say.
    fn skip_part(&self) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>> {
        Err(no_skip_part(self.kind()))
    }

    /// Whether the block keeps the constant (`ỹ_0 = x̃_0^k`) by its
    /// construction, so that [`Model::new`](crate::Model::new) need not
    /// test it on random inputs. The default, `false`, has it tested;
    /// only a kind that checks the rule when it is built returns `true`.
    fn keeps_constant_by_construction(&self) -> bool {
        false
    }
}

/// The error of a kind that does not say what its skip term is.
pub(crate) fn no_skip_part(kind: &str) -> crate::error::Error {
    crate::error::Error::InvalidBlock(format!(
        "a {kind} block does not say what its skip term is (TensorBlock::skip_part), \
         which head paths need"
    ))
}

/// An error unless `x` holds whole sequences of `context ≥ 1` positions of
/// width `width`, one position per row.
pub(crate) fn check_sequences<T: Real>(x: &DMatrix<T>, context: usize, width: usize) -> Result<()> {
    if context == 0 {
        return Err(crate::error::Error::ZeroContext);
    }
    let rows = x.nrows();
    if x.ncols() != width || !rows.is_multiple_of(context) {
        return Err(crate::error::Error::Shape {
            what: format!(
                "block input: sequences of {context} positions stacked, one position per row"
            ),
            expected: (context * rows.div_ceil(context).max(1), width),
            found: x.shape(),
        });
    }
    Ok(())
}
