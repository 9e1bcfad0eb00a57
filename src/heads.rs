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

use crate::block::{TensorBlock, gram_step_with_heads, head_part, is_attention};
use crate::error::{Error, Result};
use crate::gaussian::GaussianSimilarity;
use crate::model::Model;
use crate::recursion::{RecursiveSimilarity, Stream, TensorSimilarity, cosine, normalise};
use crate::resources::{check_work, flat_entries, scalars};
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
    /// Whether the values are exact: always for the tensor metric; for the
    /// Gaussian metric where SPEC §3 is (the first attention block), a
    /// Gaussian closure elsewhere.
    pub exact: bool,
}

impl HeadPaths {
    /// The one-to-one matching of A's heads with B's of the largest total
    /// cosine (the Hungarian method, `O(H³)`): for each head of A, the head
    /// of B it is matched with (`None` where B has fewer heads), and the
    /// mean cosine of the matched pairs. An undefined cosine (NaN, a zero
    /// head path) counts as −1. Between two checkpoints of a run it says
    /// which head became which, found rather than assumed.
    ///
    /// ```
    /// use nalgebra::dmatrix;
    /// use tensor_similarity::{HeadPaths, LogScaled};
    ///
    /// let paths = HeadPaths {
    ///     block: 1,
    ///     inner: nalgebra::DMatrix::from_element(2, 2, LogScaled::ZERO),
    ///     norms_a: vec![LogScaled::ZERO; 2],
    ///     norms_b: vec![LogScaled::ZERO; 2],
    ///     cosine: dmatrix![0.1, 0.9; 0.8, 0.2],
    ///     exact: true,
    /// };
    /// let (matching, mean) = paths.best_matching();
    /// assert_eq!(matching, vec![Some(1), Some(0)]);
    /// assert!((mean - 0.85).abs() < 1e-12);
    /// ```
    pub fn best_matching(&self) -> (Vec<Option<usize>>, f64) {
        best_matching(&self.cosine)
    }
}

/// [`HeadPaths::best_matching`] of a cosine matrix.
fn best_matching(cosine: &DMatrix<f64>) -> (Vec<Option<usize>>, f64) {
    {
        let (ha, hb) = cosine.shape();
        let size = ha.max(hb);
        // Costs to minimise: −cosine; a padding row or column costs 0.
        let cost = |i: usize, j: usize| -> f64 {
            if i < ha && j < hb {
                let c = cosine[(i, j)];
                if c.is_nan() { 1.0 } else { -c }
            } else {
                0.0
            }
        };
        let column_of_row = hungarian(size, cost);
        let matching: Vec<Option<usize>> = (0..ha)
            .map(|i| Some(column_of_row[i]).filter(|&j| j < hb))
            .collect();
        let matched: Vec<f64> = matching
            .iter()
            .enumerate()
            .filter_map(|(i, j)| j.map(|j| -cost(i, j)))
            .collect();
        let mean = if matched.is_empty() {
            f64::NAN
        } else {
            matched.iter().sum::<f64>() / matched.len() as f64
        };
        (matching, mean)
    }
}

/// The assignment of rows to columns of a `size × size` cost matrix of the
/// least total cost (the Hungarian method with potentials, `O(size³)`):
/// the column of each row.
fn hungarian(size: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    // 1-based rows and columns; column 0 is the virtual start.
    let (mut u, mut v) = (vec![0.0; size + 1], vec![0.0; size + 1]);
    let mut row_of = vec![0usize; size + 1];
    let mut way = vec![0usize; size + 1];
    for row in 1..=size {
        row_of[0] = row;
        let mut j0 = 0;
        let mut least = vec![f64::INFINITY; size + 1];
        let mut used = vec![false; size + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=size {
                if !used[j] {
                    let reduced = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if reduced < least[j] {
                        least[j] = reduced;
                        way[j] = j0;
                    }
                    if least[j] < delta {
                        delta = least[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=size {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    least[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut column_of = vec![0; size];
    for j in 1..=size {
        if row_of[j] > 0 {
            column_of[row_of[j] - 1] = j - 1;
        }
    }
    column_of
}

/// Which head became which across a run, at one attention block: what
/// [`TensorSimilarity::head_matching`] returns for each.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadMatching {
    /// The block's index in the chain (0-based).
    pub block: usize,
    /// `N × N`: the mean cosine of the best matching of model `i`'s heads
    /// with model `j`'s ([`HeadPaths::best_matching`]); 1 on the diagonal.
    pub mean: DMatrix<f64>,
    /// `matching[i][j][h]`: the head of model `j` that head `h` of model
    /// `i` is matched with (`None` where `j` has fewer heads); the identity
    /// for `i = j`.
    pub matching: Vec<Vec<Vec<Option<usize>>>>,
}

impl TensorSimilarity {
    /// Which head became which across a run (SPEC §9): for every pair of
    /// `models` and each attention block, the [`heads`](Self::heads)
    /// matrix's best one-to-one matching and its mean cosine, so that head
    /// permutations between checkpoints are found, not assumed. The
    /// `N(N−1)/2` pairs run in parallel; `progress` is called after each.
    /// An error if the models' attention blocks are not at the same chain
    /// indices, or as [`heads`](Self::heads).
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Attention, Linear, Model, TensorSimilarity};
    ///
    /// let w = |rows: usize, cols: usize, seed: f64| {
    ///     DMatrix::from_fn(rows, cols, |i, j| ((seed + (3 * i + 5 * j) as f64) * 0.7).sin())
    /// };
    /// let model = |seed: f64| -> Result<Model, tensor_similarity::Error> {
    ///     Model::builder()
    ///         .block(Linear::new(w(3, 2, 0.0), None)?)
    ///         .block(Attention::builder(2, w(4, 3, seed), w(4, 3, seed + 1.0), w(4, 3, seed + 2.0),
    ///             w(4, 3, seed + 3.0), w(4, 3, seed + 4.0), w(3, 4, seed + 5.0)).skip(1.0).build()?)
    ///         .block(Linear::new(w(2, 3, 9.0), None)?)
    ///         .build()
    /// };
    /// let run = [model(1.0)?, model(1.1)?, model(4.0)?];
    /// let metric = TensorSimilarity::new().with_context(2)?;
    /// let found = metric.head_matching(&run, || {})?;
    /// assert_eq!(found[0].block, 1);
    /// assert_eq!(found[0].mean[(1, 1)], 1.0);
    /// assert_eq!(found[0].matching[0][0], vec![Some(0), Some(1)]);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn head_matching<T: Real>(
        &self,
        models: &[Model<T>],
        progress: impl Fn() + Sync,
    ) -> Result<Vec<HeadMatching>> {
        use rayon::prelude::*;
        let n = models.len();
        let Some(first) = models.first() else {
            return Ok(Vec::new());
        };
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .collect();
        let found: Vec<Vec<HeadPaths>> = pairs
            .par_iter()
            .map(|&(i, j)| {
                let paths = self.heads(&models[i], &models[j]);
                progress();
                paths
            })
            .collect::<Result<_>>()?;
        let blocks = attention_blocks(first)?;
        let mut out: Vec<HeadMatching> = blocks
            .iter()
            .map(|&block| HeadMatching {
                block,
                mean: DMatrix::identity(n, n),
                matching: (0..n)
                    .map(|i| {
                        (0..n)
                            .map(|j| {
                                if i == j {
                                    (0..head_count(&models[i], block)).map(Some).collect()
                                } else {
                                    Vec::new()
                                }
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        for (&(i, j), paths) in pairs.iter().zip(&found) {
            for (slot, p) in out.iter_mut().zip(paths) {
                let (forward, mean) = best_matching(&p.cosine);
                let (backward, _) = best_matching(&p.cosine.transpose());
                slot.mean[(i, j)] = mean;
                slot.mean[(j, i)] = mean;
                slot.matching[i][j] = forward;
                slot.matching[j][i] = backward;
            }
        }
        Ok(out)
    }

    /// The head paths of `a` and `b` at every attention block (SPEC §9):
    /// one [`HeadPaths`] per attention block of `a`, in chain order. The
    /// models may differ in heads and widths; at each such position both
    /// must be attention.
    ///
    /// The path of head `h` of block `i` keeps the blocks before `i`, head
    /// `h`'s attention term alone at `i` (`r = 0`, no `o` bias), the skip
    /// parts of the later blocks ([`TensorBlock::skip_part`]) and the last
    /// block. The attention step of block `i` sums its pair sums over head
    /// pairs, `Z(p, q) = Σ_{h,h'} Z_{hh'}(p, q)`; kept by head pair, the
    /// step's output for the paths of heads `h` and `h'` is
    ///
    /// ```text
    /// G'_{hh'}[(p,o), (q,o')] = α_A α_B / (120 c_A c_B) · (O_A,h Z_{hh'}(p,q) O_B,h'ᵀ)_{o o'}
    /// G'_{hh'}[(p,o), 0]      = (α_A / c_A) (O_A,h z_A,h[p])_o,   G'_{hh'}[0, 0] = Ĝ_00⁵
    /// ```
    ///
    /// (`z_h[p]` head `h`'s score-weighted values on the mean legs), which
    /// the recursion carries through the later skip parts to the readout:
    /// `⟨A_h, B_h'⟩` for every pair from the one step `similarity` runs.
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
        // Besides a similarity's products: each product's kept pair sums
        // (`n² H_A e_v H_B e_v`) and one head pair's Gram matrix at a time.
        let kept = |n: usize| -> f64 {
            let mut most: f64 = 0.0;
            for (x, y) in a.blocks().iter().zip(b.blocks()) {
                let (hx, hy) = (head_width(&**x), head_width(&**y));
                if hx > 0 && hy > 0 {
                    let z = (n * n) as f64 * hx as f64 * hy as f64;
                    most = most.max(z + flat_entries(n, x.output_width(), y.output_width()));
                }
            }
            scalars::<T>(most)
                * if self.products_at_once(a, b, n) {
                    3.0
                } else {
                    1.0
                }
        };
        self.check_estimate(|n| self.similarity_bytes(a, b, n) + kept(n), n)?;
        check_work(|n| self.similarity_work(a, b, n), n, self.max_work())?;
        let blocks = attention_blocks(a)?;
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
                Ok(HeadPaths {
                    block,
                    cosine: cosines(&inner, &norms_a, &norms_b)?,
                    inner,
                    norms_a,
                    norms_b,
                    exact: true,
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

impl<T: Real> Model<T> {
    /// The path of head `head` of the attention block at chain index
    /// `block` (SPEC §9), as a model of its own: the blocks before `block`
    /// unchanged, that block's attention term of head `head` alone, the
    /// skip parts ([`TensorBlock::skip_part`]) of the blocks after it, and
    /// the last block unchanged. An error if `block` is not attention, has
    /// no head `head`, or a later block has no skip term (the path is
    /// zero) or does not say what it is.
    ///
    /// [`TensorSimilarity::heads`] gives every head's path at once from one
    /// recursion; this model is for what works on models, such as the
    /// [`matrix`](crate::matrix) of one head across a run
    /// ([`HeadPathSimilarity`]).
    pub fn head_path(&self, block: usize, head: usize) -> Result<Model<T>> {
        self.path_of_head(block, head, |later| later.skip_part())
    }

    /// [`head_path`](Self::head_path) with `skip(later)` in place of each
    /// later block but the last.
    fn path_of_head(
        &self,
        block: usize,
        head: usize,
        skip: impl Fn(&dyn TensorBlock<T>) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>>,
    ) -> Result<Model<T>> {
        let blocks = self.blocks();
        let Some(at) = blocks.get(block) else {
            return Err(Error::InvalidOption {
                what: "head path",
                reason: format!(
                    "block {block} does not exist; the model has {}",
                    blocks.len()
                ),
            });
        };
        let last = blocks.len() - 1;
        let mut path = blocks[..block].to_vec();
        path.push(head_part(&**at, head)?);
        for (k, later) in blocks.iter().enumerate().skip(block + 1) {
            if k == last {
                path.push(later.clone());
            } else {
                path.push(skip(&**later)?.ok_or_else(|| Error::InvalidOption {
                    what: "head path",
                    reason: format!(
                        "block {k} (a {} block) has no skip term: the path of a head before it \
                         is zero",
                        later.kind()
                    ),
                })?);
            }
        }
        let model = Model::new(path)?;
        Ok(if self.is_sequence() {
            model.into_sequence()
        } else {
            model
        })
    }
}

/// The tensor similarity of one head's path (SPEC §9) as a metric: the
/// similarity of `A`'s and `B`'s [`Model::head_path`] of the same block and
/// head, so that [`matrix`](crate::matrix) makes the checkpoint matrix of
/// one head across a run.
///
/// ```
/// use tensor_similarity::{HeadPathSimilarity, RecursiveSimilarity, TensorSimilarity};
/// # use nalgebra::DMatrix;
/// # use tensor_similarity::{Attention, Linear, Model};
/// # let w = |rows: usize, cols: usize, seed: f64| {
/// #     DMatrix::from_fn(rows, cols, |i, j| ((seed + (3 * i + 5 * j) as f64) * 0.7).sin())
/// # };
/// # let model = |seed: f64| -> Result<Model, tensor_similarity::Error> {
/// #     Model::builder()
/// #         .block(Linear::new(w(3, 2, 0.0), None)?)
/// #         .block(Attention::builder(2, w(4, 3, seed), w(4, 3, seed + 1.0), w(4, 3, seed + 2.0),
/// #             w(4, 3, seed + 3.0), w(4, 3, seed + 4.0), w(3, 4, seed + 5.0)).skip(1.0).build()?)
/// #         .block(Linear::new(w(2, 3, 9.0), None)?)
/// #         .build()
/// # };
/// let (a, b) = (model(1.0)?, model(2.0)?);
/// let metric = TensorSimilarity::new().with_context(3)?;
/// let heads = metric.heads(&a, &b)?;
/// // Head 1 of block 1, across models: the heads matrix's diagonal entry.
/// let head = HeadPathSimilarity::new(metric, 1, 1);
/// assert!((head.similarity(&a, &b)? - heads[0].cosine[(1, 1)]).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct HeadPathSimilarity {
    metric: TensorSimilarity,
    block: usize,
    head: usize,
}

impl HeadPathSimilarity {
    /// Head `head` of the attention block at chain index `block`, under
    /// `metric`.
    pub fn new(metric: TensorSimilarity, block: usize, head: usize) -> Self {
        Self {
            metric,
            block,
            head,
        }
    }

    /// `(block, head)`.
    pub fn head(&self) -> (usize, usize) {
        (self.block, self.head)
    }
}

impl<T: Real> RecursiveSimilarity<T> for HeadPathSimilarity {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        let (a, b) = (
            a.head_path(self.block, self.head)?,
            b.head_path(self.block, self.head)?,
        );
        self.metric.inner_product(&a, &b)
    }

    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        self.metric
            .squared_norm(&a.head_path(self.block, self.head)?)
    }

    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        let (a, b) = (
            a.head_path(self.block, self.head)?,
            b.head_path(self.block, self.head)?,
        );
        RecursiveSimilarity::<T>::check_memory(&self.metric, &a, &b, at_once)
    }
}

/// The chain indices of `model`'s attention blocks; an error if it has
/// none.
fn attention_blocks<T: Real>(model: &Model<T>) -> Result<Vec<usize>> {
    let blocks: Vec<usize> = (0..model.depth())
        .filter(|&i| is_attention(&*model.blocks()[i]))
        .collect();
    if blocks.is_empty() {
        return Err(Error::InvalidOption {
            what: "head paths",
            reason: "model A has no attention block".into(),
        });
    }
    Ok(blocks)
}

/// `H e_v` of an attention block (0 for another kind).
fn head_width<T: Real>(block: &dyn TensorBlock<T>) -> usize {
    let any: &dyn core::any::Any = block;
    any.downcast_ref::<crate::block::Attention<T>>()
        .map_or(0, |a| a.heads() * a.value_width())
}

/// The heads of the attention block at chain index `block` (0 if there is
/// none there).
fn head_count<T: Real>(model: &Model<T>, block: usize) -> usize {
    model.blocks().get(block).map_or(0, |b| {
        let any: &dyn core::any::Any = &**b;
        any.downcast_ref::<crate::block::Attention<T>>()
            .map_or(0, |a| a.heads())
    })
}

/// The cosines of head paths from their inner products and norms: NaN where
/// a norm is zero.
fn cosines(
    inner: &DMatrix<LogScaled>,
    norms_a: &[LogScaled],
    norms_b: &[LogScaled],
) -> Result<DMatrix<f64>> {
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
    Ok(cos)
}

/// A block's skip term as the Gaussian metric reads it: a function. The
/// skip part of attention or of a bilinear block is `r·x` at every
/// position, a linear block `r·I` (so that a path through it stays exact
/// where SPEC §3 is); another kind's skip part as it says.
fn skip_function<T: Real>(
    block: &dyn TensorBlock<T>,
) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>> {
    let any: &dyn core::any::Any = block;
    let r = if let Some(att) = any.downcast_ref::<crate::block::Attention<T>>() {
        att.skip()
    } else if let Some(bilinear) = any.downcast_ref::<crate::block::Bilinear<T>>() {
        bilinear.skip()
    } else {
        return block.skip_part();
    };
    if r == 0.0 {
        return Ok(None);
    }
    let d = block.input_width();
    let identity = DMatrix::<T>::identity(d, d) * crate::scalar::from_f64::<T>(r);
    Ok(Some(std::sync::Arc::new(crate::block::Linear::new(
        identity, None,
    )?)))
}

impl GaussianSimilarity {
    /// The head paths of `a` and `b` at every attention block (SPEC §9)
    /// under the Gaussian metric: [`TensorSimilarity::heads`]' matrices
    /// with `E[f_A·f_B]` for the tensor inner product, each head path a
    /// model of its own ([`Model::head_path`], with each later block's skip
    /// term `r·x` as the linear block it is as a function). Exact where
    /// SPEC §3 is (a
    /// path with one block of order ≥ 2 besides linear ones: the first
    /// attention block of a chain of attention blocks with linear ends), a
    /// Gaussian closure elsewhere; [`HeadPaths::exact`] says which. The
    /// metric's memory limit applies to each head path's products.
    ///
    /// Each path has one head at its attention block, and a step's
    /// configurations grow as the product of the two blocks' heads, so
    /// the `H_A·H_B` products cost about one full comparison's step there.
    pub fn heads<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<Vec<HeadPaths>> {
        a.check_comparable(b)?;
        let blocks = attention_blocks(a)?;
        let heads = |m: &Model<T>, i: usize| -> Result<Vec<Model<T>>> {
            let count = head_count(m, i);
            if count == 0 {
                return Err(Error::InvalidBlock(format!(
                    "block {i} of one model is attention and of the other is not"
                )));
            }
            (0..count)
                .map(|h| m.path_of_head(i, h, skip_function))
                .collect()
        };
        blocks
            .iter()
            .map(|&i| {
                let (pa, pb) = (heads(a, i)?, heads(b, i)?);
                let norms_a = pa
                    .iter()
                    .map(|p| self.squared_norm(p))
                    .collect::<Result<Vec<_>>>()?;
                let norms_b = pb
                    .iter()
                    .map(|p| self.squared_norm(p))
                    .collect::<Result<Vec<_>>>()?;
                let mut inner = DMatrix::from_element(pa.len(), pb.len(), LogScaled::ZERO);
                for (h, x) in pa.iter().enumerate() {
                    for (h2, y) in pb.iter().enumerate() {
                        inner[(h, h2)] = self.inner_product(x, y)?;
                    }
                }
                let exact = pa.iter().all(|x| pb.iter().all(|y| self.is_exact(x, y)));
                let cosine = cosines(&inner, &norms_a, &norms_b)?;
                Ok(HeadPaths {
                    block: i,
                    inner,
                    norms_a,
                    norms_b,
                    cosine,
                    exact,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::hungarian;

    /// Every permutation of `0..n`.
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn the_assignment_is_the_best_of_every_permutation() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in 1..=6 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| next()).collect();
                let c = |i: usize, j: usize| cost[i * n + j];
                let found = hungarian(n, c);
                let total = |p: &[usize]| p.iter().enumerate().map(|(i, &j)| c(i, j)).sum::<f64>();
                let best = permutations(n)
                    .iter()
                    .map(|p| total(p))
                    .fold(f64::INFINITY, f64::min);
                let mut sorted = found.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..n).collect::<Vec<_>>());
                assert!(
                    (total(&found) - best).abs() < 1e-12,
                    "{n}: {} {best}",
                    total(&found)
                );
            }
        }
    }
}
