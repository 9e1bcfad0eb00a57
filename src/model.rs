//! Models: checked chains of blocks.

use std::sync::Arc;

use nalgebra::{DMatrix, DVector};

use crate::block::TensorBlock;
use crate::error::{Error, Incomparable, Result};
use crate::scalar::Real;
use crate::validate::check_len;

/// A chain of blocks `f = B_L ∘ … ∘ B_1` with matching widths.
///
/// Its end-to-end tensor has `K = Π k_ℓ` input legs
/// ([`degree`](Self::degree)); the metrics never form it. Cloning is cheap:
/// blocks are shared.
///
/// # Example
///
/// ```
/// use nalgebra::{DMatrix, dvector};
/// use tensor_similarity::{Bilinear, Linear, Model};
///
/// let model = Model::builder()
///     .block(Linear::new(DMatrix::from_element(3, 2, 0.5), None)?)
///     .block(Bilinear::new(DMatrix::identity(4, 3), DMatrix::identity(4, 3))?)
///     .block(Linear::new(DMatrix::from_element(2, 4, 1.0), None)?)
///     .build()?;
/// assert_eq!((model.input_width(), model.output_width()), (2, 2));
/// assert_eq!(model.degree(), 2);
/// assert_eq!(model.forward(&dvector![1.0, 1.0])?, dvector![3.0, 3.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Model<T: Real = f64> {
    blocks: Vec<Arc<dyn TensorBlock<T>>>,
    sequence: bool,
}

/// Collects blocks for [`Model::new`].
#[derive(Debug)]
#[must_use = "call .build() to get the model"]
pub struct ModelBuilder<T: Real = f64> {
    blocks: Vec<Arc<dyn TensorBlock<T>>>,
    sequence: bool,
}

impl<T: Real> Default for ModelBuilder<T> {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            sequence: false,
        }
    }
}

impl<T: Real> ModelBuilder<T> {
    /// Appends a block.
    pub fn block(mut self, block: impl TensorBlock<T> + 'static) -> Self {
        self.blocks.push(Arc::new(block));
        self
    }

    /// Appends a shared block.
    pub fn shared_block(mut self, block: Arc<dyn TensorBlock<T>>) -> Self {
        self.blocks.push(block);
        self
    }

    /// Marks the model as a sequence model ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)) even if no block mixes
    /// positions: it reads `n` positions, and comparisons need a context
    /// length. A model with an [`Attention`](crate::Attention) block is one
    /// anyway.
    pub fn sequence(mut self) -> Self {
        self.sequence = true;
        self
    }

    /// The model; an error if it is empty or widths do not chain.
    pub fn build(self) -> Result<Model<T>> {
        let mut model = Model::new(self.blocks)?;
        model.sequence |= self.sequence;
        Ok(model)
    }
}

impl<T: Real> Model<T> {
    /// The chain of `blocks`; an error if it is empty, block `ℓ` does not
    /// read the width block `ℓ−1` writes, or a block of a kind outside this
    /// crate does not keep the constant ([`Error::ConstantNotKept`], checked
    /// on random inputs as [`check_block`](crate::check_block) does).
    pub fn new(blocks: Vec<Arc<dyn TensorBlock<T>>>) -> Result<Self> {
        if blocks.is_empty() {
            return Err(Error::EmptyModel);
        }
        for (i, b) in blocks.iter().enumerate() {
            if b.order() == 0 || b.input_width() == 0 || b.output_width() == 0 {
                return Err(Error::InvalidBlock(format!(
                    "block {i} ({}) has order {} and widths {} → {}: a block reads at least \
                     one copy of a non-empty input and writes a non-empty output",
                    b.kind(),
                    b.order(),
                    b.input_width(),
                    b.output_width()
                )));
            }
        }
        for (i, pair) in blocks.windows(2).enumerate() {
            let (expected, found) = (pair[0].output_width(), pair[1].input_width());
            if expected != found {
                return Err(Error::WidthMismatch {
                    block: i + 1,
                    expected,
                    found,
                });
            }
        }
        for (i, b) in blocks.iter().enumerate() {
            crate::block::check_constant_at(i, &**b)?;
        }
        let sequence = blocks.iter().any(|b| b.mixes_positions());
        Ok(Self { blocks, sequence })
    }

    /// The same model marked as a sequence model.
    pub(crate) fn into_sequence(mut self) -> Self {
        self.sequence = true;
        self
    }

    /// An empty builder.
    pub fn builder() -> ModelBuilder<T> {
        ModelBuilder::default()
    }

    /// The blocks, input first.
    pub fn blocks(&self) -> &[Arc<dyn TensorBlock<T>>] {
        &self.blocks
    }

    /// Number of blocks `L`.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Input width `d`.
    pub fn input_width(&self) -> usize {
        self.blocks[0].input_width()
    }

    /// Output width `n_L`.
    pub fn output_width(&self) -> usize {
        self.blocks[self.blocks.len() - 1].output_width()
    }

    /// The order `k_ℓ` of each block.
    pub fn orders(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.order()).collect()
    }

    /// `K = Π k_ℓ`, the number of input legs of the end-to-end tensor
    /// (saturating at `usize::MAX`).
    pub fn degree(&self) -> usize {
        self.blocks
            .iter()
            .fold(1usize, |k, b| k.saturating_mul(b.order()))
    }

    /// The number of parameters the blocks hold: their weights and the
    /// biases they have. An absent bias counts nothing (the weight
    /// baseline's [`TensorBlock::parameters`](crate::TensorBlock::parameters)
    /// lists it as zeros, to line up two blocks' shapes, but it is not a
    /// parameter). For a model read from a file this is
    /// [`ModelFile::parameter_count`](crate::io::ModelFile::parameter_count),
    /// the count `inspect` prints, less any stored value folded into a
    /// weight (a final norm's energy).
    pub fn parameter_count(&self) -> usize {
        self.blocks
            .iter()
            .flat_map(|b| b.describe().parameters)
            .fold(0usize, |n, p| n.saturating_add(p.values.len()))
    }

    /// Whether this is a sequence model: one that mixes positions, or was
    /// marked with [`ModelBuilder::sequence`]. Comparisons then need a
    /// context length ([`TensorSimilarity::with_context`](crate::TensorSimilarity::with_context)).
    pub fn is_sequence(&self) -> bool {
        self.sequence
    }

    /// Whether some block mixes positions (so the model's function on a
    /// sequence is not its function on each position).
    pub fn mixes_positions(&self) -> bool {
        self.blocks.iter().any(|b| b.mixes_positions())
    }

    /// The model on a sequence, one position per row: `X ∈ R^{n×d}` to
    /// `Y ∈ R^{n×n_L}` ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)).
    pub fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        if x.ncols() != self.input_width() || x.nrows() == 0 {
            return Err(Error::Shape {
                what: "model input sequence (one position per row)".into(),
                expected: (x.nrows().max(1), self.input_width()),
                found: x.shape(),
            });
        }
        self.blocks
            .iter()
            .try_fold(x.clone(), |h, b| b.forward_sequence(&h))
    }

    /// `f(x)`; for a sequence model, on a sequence of one position.
    pub fn forward(&self, x: &DVector<T>) -> Result<DVector<T>> {
        check_len("model input", x, self.input_width())?;
        self.blocks.iter().try_fold(x.clone(), |h, b| b.forward(&h))
    }

    /// `f` applied to each row of `inputs` (`samples × d`), giving
    /// `samples × n_L`: [`forward`](Self::forward) of every row, batched
    /// (each block runs once on all rows, as GEMMs; see
    /// [`forward_sequences`](Self::forward_sequences) at context 1).
    pub fn forward_rows(&self, inputs: &DMatrix<T>) -> Result<DMatrix<T>> {
        if inputs.ncols() != self.input_width() {
            return Err(Error::Shape {
                what: "model inputs (one sample per row)".into(),
                expected: (inputs.nrows(), self.input_width()),
                found: inputs.shape(),
            });
        }
        if inputs.nrows() == 0 {
            return Ok(DMatrix::zeros(0, self.output_width()));
        }
        self.forward_sequences(inputs, 1)
    }

    /// The model on `x.nrows() / context` sequences of `context` positions
    /// each, stacked sequence by sequence (row `s·context + p` is position
    /// `p` of sequence `s`): [`forward_sequence`](Self::forward_sequence) of
    /// each, batched. Each block runs once on all the rows
    /// ([`TensorBlock::forward_sequences`](crate::TensorBlock::forward_sequences)):
    /// a position-wise block as a few GEMMs over every position of every
    /// sequence, attention as one GEMM per position over all sequences. An
    /// error if `context` is 0, `x` has no rows or rows that are not whole
    /// sequences, or is not `d` wide.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, Model};
    ///
    /// let w = |k: usize| DMatrix::from_fn(2, 2, |i, j| ((i * 2 + j + k) % 5) as f64 - 2.0);
    /// let model = Model::builder()
    ///     .block(Attention::builder(1, w(0), w(1), w(2), w(3), w(4), w(5)).build()?)
    ///     .build()?;
    /// // Three sequences of two positions, stacked.
    /// let x = DMatrix::from_fn(6, 2, |i, j| (i as f64 - 2.5) * (j as f64 + 0.5));
    /// let y = model.forward_sequences(&x, 2)?;
    /// for s in 0..3 {
    ///     let one = model.forward_sequence(&x.rows(2 * s, 2).into_owned())?;
    ///     assert!((y.rows(2 * s, 2) - one).amax() < 1e-12);
    /// }
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn forward_sequences(&self, x: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
        if context == 0 {
            return Err(Error::ZeroContext);
        }
        let rows = x.nrows();
        if x.ncols() != self.input_width() || rows == 0 || !rows.is_multiple_of(context) {
            return Err(Error::Shape {
                what: format!(
                    "model input: sequences of {context} positions stacked, one position per row"
                ),
                expected: (context * rows.div_ceil(context).max(1), self.input_width()),
                found: x.shape(),
            });
        }
        let (first, rest) = self.blocks.split_first().ok_or(Error::EmptyModel)?;
        let mut h = first.forward_sequences(x, context)?;
        for b in rest {
            h = b.forward_sequences(&h, context)?;
        }
        Ok(h)
    }

    /// An error unless `self` (A) and `other` (B) have the same input and
    /// output widths: what any function-space comparison needs.
    pub fn check_same_io(&self, other: &Self) -> Result<()> {
        let (a, b) = (self, other);
        if a.input_width() != b.input_width() {
            return Err(Incomparable::InputWidth {
                a: a.input_width(),
                b: b.input_width(),
            }
            .into());
        }
        if a.output_width() != b.output_width() {
            return Err(Incomparable::OutputWidth {
                a: a.output_width(),
                b: b.output_width(),
            }
            .into());
        }
        Ok(())
    }

    /// As [`check_same_io`](Self::check_same_io), and the same depth: what a
    /// position-by-position recursion needs when blocks may differ in order.
    pub fn check_same_depth_and_io(&self, other: &Self) -> Result<()> {
        if self.depth() != other.depth() {
            return Err(Incomparable::Depth {
                a: self.depth(),
                b: other.depth(),
            }
            .into());
        }
        self.check_same_io(other)
    }

    /// As [`check_same_depth_and_io`](Self::check_same_depth_and_io), and the
    /// same block orders position by position: what the tensor recursion needs.
    pub fn check_comparable(&self, other: &Self) -> Result<()> {
        let (a, b) = (self, other);
        a.check_same_depth_and_io(b)?;
        for (block, (x, y)) in a.blocks.iter().zip(&b.blocks).enumerate() {
            if x.order() != y.order() {
                return Err(Incomparable::Order {
                    block,
                    a: x.order(),
                    b: y.order(),
                }
                .into());
            }
        }
        Ok(())
    }
}
