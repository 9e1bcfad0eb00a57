//! Where two models differ, head by head ([SPEC §9](crate::spec#9-where-two-models-differ-heads-and-paths)).
//!
//! The **path of head `h`** of the attention block at chain index `i` is
//! the model with every block before `i` unchanged; block `i` keeping only
//! head `h`'s attention term (no skip, `r = 0`; no `o` bias, which belongs
//! to no head; `O`'s other heads' columns zero); every later block but the
//! last reduced to its skip term ([`TensorBlock::skip_part`]: attention and
//! bilinear blocks with `α = 0`; a block without a skip term makes the path
//! zero); and the last block unchanged. [`TensorSimilarity::heads`] gives,
//! for each attention block, the `H_A × H_B` matrix of the tensor
//! similarities of A's head paths with B's, and their inner products.
//!
//! Cost: the three products' recursions run once. At each attention block
//! the step keeps its pair sums `Z_{hh'}(p, q)` by head pair (`n² H_A e_v^A
//! H_B e_v^B` scalars), which it makes anyway; each head pair's step output
//! is then `O_A,h Z_{hh'} O_B,h'ᵀ` per pair of positions, carried through
//! the later blocks' skip parts (no attention term: `O(n² d²)` each) and
//! read out. One head pair's Gram matrix is held at a time.

use nalgebra::DMatrix;

use crate::block::{TensorBlock, gram_step_with_heads, is_attention};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::recursion::{Stream, TensorSimilarity, cosine, normalise};
use crate::resources::check_work;
use crate::scalar::{LogScaled, Real};

/// The head paths of one attention block: what
/// [`TensorSimilarity::heads`] returns for each.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadPaths {
    /// The block's index in the chain (0-based).
    pub block: usize,
    /// `⟨A_h, B_h'⟩` for head `h` of A (row) and `h'` of B (column), in log
    /// scale.
    pub inner: DMatrix<LogScaled>,
    /// `⟨A_h, A_h⟩` for each head of A.
    pub norms_a: Vec<LogScaled>,
    /// `⟨B_h', B_h'⟩` for each head of B.
    pub norms_b: Vec<LogScaled>,
    /// `⟨A_h, B_h'⟩ / √(⟨A_h, A_h⟩⟨B_h', B_h'⟩)`; NaN where a head path is
    /// zero (a head whose `O` columns are zero, or a later block without
    /// a skip term), where the cosine is undefined.
    pub cosine: DMatrix<f64>,
}

impl TensorSimilarity {
    /// The head paths of `a` and `b` at every attention block (SPEC §9):
    /// one [`HeadPaths`] per attention block of `a`, in chain order. The
    /// models may differ in heads and widths; at each such position both
    /// must be attention.
    ///
    /// Exact, and invariant under the symmetries of the metric: a
    /// permutation of one model's heads permutes the rows (or columns).
    /// The same memory and work limits as
    /// [`similarity`](crate::RecursiveSimilarity::similarity) apply; an
    /// error if `a` has no attention block, or if a block after an
    /// attention block does not say what its skip term is.
    ///
    /// # Example
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, Linear, Model, TensorSimilarity};
    ///
    /// // A two-head attention layer between an embedding and a readout.
    /// let w = |rows: usize, cols: usize, seed: f64| {
    ///     DMatrix::from_fn(rows, cols, |i, j| ((seed + (3 * i + 5 * j) as f64) * 0.7).sin())
    /// };
    /// let attention = |seed: f64| {
    ///     Attention::builder(2, w(4, 3, seed), w(4, 3, seed + 1.0), w(4, 3, seed + 2.0),
    ///                        w(4, 3, seed + 3.0), w(4, 3, seed + 4.0), w(3, 4, seed + 5.0))
    ///         .skip(1.0)
    ///         .build()
    /// };
    /// let model = |seed: f64| -> Result<Model, tensor_similarity::Error> {
    ///     Model::builder()
    ///         .block(Linear::new(w(3, 2, 0.0), None)?)
    ///         .block(attention(seed)?)
    ///         .block(Linear::new(w(2, 3, 9.0), None)?)
    ///         .build()
    /// };
    /// let metric = TensorSimilarity::new().with_context(3)?;
    /// let heads = metric.heads(&model(1.0)?, &model(1.0)?)?;
    /// assert_eq!(heads.len(), 1);
    /// assert_eq!(heads[0].block, 1);
    /// // A model against itself: each head path matches itself.
    /// for h in 0..2 {
    ///     assert!((heads[0].cosine[(h, h)] - 1.0).abs() < 1e-12);
    /// }
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn heads<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<Vec<HeadPaths>> {
        let n = self.context_for(a, b)?;
        self.check_estimate(|n| self.similarity_bytes(a, b, n), n)?;
        check_work(|n| self.similarity_work(a, b, n), n, self.max_work())?;
        let blocks: Vec<usize> = (0..a.depth())
            .filter(|&i| is_attention(&*a.blocks()[i]))
            .collect();
        if blocks.is_empty() {
            return Err(Error::InvalidOption {
                what: "head paths",
                reason: "model A has no attention block".into(),
            });
        }
        // The three products at once when each is small, as `similarity`
        // runs them.
        let (ab, (aa, bb)) = if self.products_at_once(a, b, n) {
            rayon::join(
                || self.head_products(a, Some(b), n, &blocks),
                || {
                    rayon::join(
                        || self.head_products(a, None, n, &blocks),
                        || self.head_products(b, None, n, &blocks),
                    )
                },
            )
        } else {
            (
                self.head_products(a, Some(b), n, &blocks),
                (
                    self.head_products(a, None, n, &blocks),
                    self.head_products(b, None, n, &blocks),
                ),
            )
        };
        let (ab, aa, bb) = (ab?, aa?, bb?);
        blocks
            .iter()
            .zip(ab)
            .zip(aa.iter().zip(&bb))
            .map(|((&block, inner), (aa, bb))| {
                let norms_a: Vec<LogScaled> = (0..aa.nrows()).map(|h| aa[(h, h)]).collect();
                let norms_b: Vec<LogScaled> = (0..bb.nrows()).map(|h| bb[(h, h)]).collect();
                let mut cos = DMatrix::from_element(inner.nrows(), inner.ncols(), f64::NAN);
                for h in 0..inner.nrows() {
                    for h2 in 0..inner.ncols() {
                        match cosine(inner[(h, h2)], norms_a[h], norms_b[h2]) {
                            Ok(c) => cos[(h, h2)] = c,
                            Err(Error::ZeroNorm(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(HeadPaths {
                    block,
                    inner,
                    norms_a,
                    norms_b,
                    cosine: cos,
                })
            })
            .collect()
    }

    /// `⟨A_h, B_h'⟩` at each attention block in `blocks` (`b = None`: the
    /// self product, its diagonal only; the rest is zero).
    fn head_products<T: Real>(
        &self,
        a: &Model<T>,
        b: Option<&Model<T>>,
        n: usize,
        blocks: &[usize],
    ) -> Result<Vec<DMatrix<LogScaled>>> {
        let last = a.depth() - 1;
        let block_b = |i: usize| b.map(|b| &*b.blocks()[i]);
        let last_a = &*a.blocks()[last];
        let readout = self.readout(last_a, block_b(last).unwrap_or(last_a))?;
        let mut state = (self.input_stream(a, n)?, 0.0);
        let mut out = Vec::with_capacity(blocks.len());
        for position in 0..=last {
            let block_a = &*a.blocks()[position];
            if !blocks.contains(&position) {
                if position == last {
                    break;
                }
                state = self.step_blocks(block_a, block_b(position), position, state, n)?;
                continue;
            }
            let g = state.0.into_dense(n)?;
            let Some((next, terms)) = gram_step_with_heads(block_a, block_b(position), &g, n)?
            else {
                unreachable!("the positions are A's attention blocks")
            };
            drop(g);
            let ln_scale = state.1 * block_a.order() as f64;
            // The skip parts of the blocks between this one and the last.
            let skips = |m: &Model<T>| -> Result<Option<Vec<std::sync::Arc<dyn TensorBlock<T>>>>> {
                (position + 1..last.max(position + 1))
                    .map(|j| m.blocks()[j].skip_part())
                    .collect::<Result<Option<Vec<_>>>>()
            };
            let (skips_a, skips_b) = (skips(a)?, b.map(skips).transpose()?);
            let path_is_zero = skips_a.is_none() || skips_b.as_ref().is_some_and(Option::is_none);
            let (ha, hb) = terms.heads();
            let mut inner = DMatrix::from_element(ha, hb, LogScaled::ZERO);
            let pairs: Vec<(usize, usize)> = match b {
                Some(_) => (0..ha)
                    .flat_map(|h| (0..hb).map(move |h2| (h, h2)))
                    .collect(),
                None => (0..ha).map(|h| (h, h)).collect(),
            };
            if !path_is_zero {
                let skips_a = skips_a.unwrap_or_default();
                let skips_b = skips_b.flatten();
                for (h, h2) in pairs {
                    let mut path = normalise(terms.gram(h, h2)?, ln_scale, position)?;
                    if position == last {
                        let Stream::Dense(g) = &path.0 else {
                            unreachable!("normalise returns a dense Gram matrix")
                        };
                        inner[(h, h2)] =
                            self.read_out_scaled(g, path.1, block_a.output_width(), n)?;
                        continue;
                    }
                    for (k, part_a) in skips_a.iter().enumerate() {
                        let part_b = skips_b.as_ref().map(|s| &*s[k]);
                        path = self.step_blocks(&**part_a, part_b, position + 1 + k, path, n)?;
                    }
                    inner[(h, h2)] =
                        self.finish_with(readout.as_ref(), last_a, block_b(last), last, path, n)?;
                }
            }
            out.push(inner);
            if position == last {
                break;
            }
            state = normalise(next, ln_scale, position)?;
        }
        Ok(out)
    }
}
