//! Where two models differ, path family by path family ([SPEC §9](crate::spec#9-where-two-models-differ-heads-and-paths)).
//!
//! A block with a skip term (attention; a bilinear block with `r ≠ 0`)
//! **splits** into its skip part ([`TensorBlock::skip_part`]) and its active
//! part. With `T(U)` the model in which every splitting block outside `U`
//! keeps only its skip part, `T(U) = Σ_{S⊆U} T^S`, and by Möbius inversion
//!
//! ```text
//! T^S = Σ_{U⊆S} (−1)^{|S|−|U|} T(U),
//! ⟨T_A^S, T_B^S'⟩ = Σ_{U⊆S} Σ_{U'⊆S'} (−1)^{|S|−|U|+|S'|−|U'|} ⟨T_A(U), T_B(U')⟩.
//! ```
//!
//! The family `S` is the set of splitting blocks whose active part lies on
//! the path; the `2^m × 2^m` family inner products sum to `⟨A, B⟩`.
//!
//! **Cost.** The `4^m` products `⟨T_A(U), T_B(U')⟩` share their prefixes:
//! the recursion walks the tree of choices depth first, so a state after
//! the `j`-th splitting block is made once for its `4^j` choices and at
//! most `m + 1` states are held. A step with a skip part on either side
//! has no attention term on that side (cheaper than the full step); the
//! full steps at the `j`-th splitting block number `4^(j−1)`, about `4^m/3`
//! in all, for each of the three products (the self products do half). Two
//! attention layers (`m = 2`): 5 full attention steps per product against
//! `compare`'s 2. The work is estimated and checked against the metric's
//! work limit before any starts, and beyond [`MAX_SPLITTING_BLOCKS`]
//! splitting blocks (a million family pairs) the families are refused.

use std::sync::Arc;

use nalgebra::DMatrix;

use crate::block::{TensorBlock, is_attention};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::recursion::{Readout, RecursiveSimilarity, Stream, TensorSimilarity, cosine};
use crate::resources::check_work;
use crate::scalar::{LogScaled, Real};

/// The most splitting blocks [`TensorSimilarity::paths`] takes: `4^10`
/// (about a million) products `⟨T_A(U), T_B(U')⟩`.
pub const MAX_SPLITTING_BLOCKS: usize = 10;

/// The path families of two models: what [`TensorSimilarity::paths`]
/// returns.
#[derive(Clone, Debug, PartialEq)]
pub struct PathFamilies {
    /// The splitting blocks' chain indices (0-based), in chain order.
    pub blocks: Vec<usize>,
    /// The families, each the chain indices of the splitting blocks whose
    /// active part is on the path; in order of size, then lexicographic.
    pub families: Vec<Vec<usize>>,
    /// `⟨T_A^S, T_B^S'⟩`, families of A (rows) by families of B (columns),
    /// in the order of [`families`](Self::families).
    pub inner: DMatrix<LogScaled>,
    /// `⟨T_A^S, T_A^S⟩` per family.
    pub norms_a: Vec<LogScaled>,
    /// `⟨T_B^S, T_B^S⟩` per family.
    pub norms_b: Vec<LogScaled>,
    /// The cosines; NaN where a family is zero (its squared norm within
    /// rounding of zero), where the cosine is undefined.
    pub cosine: DMatrix<f64>,
    /// `⟨A, B⟩`, the sum of [`inner`](Self::inner).
    pub total: LogScaled,
    /// The tensor similarity of `A` and `B`.
    pub similarity: f64,
}

/// One model's blocks as the families read them: at each splitting block,
/// the full block or its skip part (`None`: no skip term).
struct Splits<'a, T: Real> {
    model: &'a Model<T>,
    skips: Vec<Option<Arc<dyn TensorBlock<T>>>>,
}

impl<T: Real> Splits<'_, T> {
    /// The block at chain index `position`, the `j`-th splitting one,
    /// chosen full (`active`) or as its skip part.
    fn block(&self, position: usize, j: usize, active: bool) -> Option<&dyn TensorBlock<T>> {
        if active {
            Some(&*self.model.blocks()[position])
        } else {
            self.skips[j].as_deref()
        }
    }
}

/// The walk over the tree of choices for one product.
struct Walk<'a, T: Real> {
    metric: &'a TensorSimilarity,
    a: Splits<'a, T>,
    /// `None`: the self product of `a` (symmetric: one of each mirrored
    /// pair of choices is walked).
    b: Option<Splits<'a, T>>,
    split: &'a [usize],
    n: usize,
    /// `⟨T_A(U), T_B(U')⟩` at `U·2^m + U'` (`U` a bit set over `split`).
    out: Vec<Option<LogScaled>>,
    /// The last blocks' readout, made once when the last block does not
    /// split.
    readout: Option<Readout<T>>,
    /// The splitting blocks (bits over `split`) that may be chosen full;
    /// the others keep their skip parts (a family's own subsets).
    allowed: usize,
}

impl<T: Real> Walk<'_, T> {
    fn descend(
        &mut self,
        mut position: usize,
        (u, v): (usize, usize),
        mut state: (Stream<T>, f64),
    ) -> Result<()> {
        let last = self.a.model.depth() - 1;
        let m = self.split.len();
        loop {
            let Some(j) = self.split.iter().position(|&k| k == position) else {
                let block_a = &*self.a.model.blocks()[position];
                // Identical prefixes of one model: the symmetric step.
                let block_b = match &self.b {
                    Some(b) => Some(&*b.model.blocks()[position]),
                    None if u == v => None,
                    None => Some(block_a),
                };
                if position == last {
                    let value = self.metric.finish_with(
                        self.readout.as_ref(),
                        block_a,
                        block_b,
                        last,
                        state,
                        self.n,
                    )?;
                    self.out[u << m | v] = Some(value);
                    return Ok(());
                }
                state = self
                    .metric
                    .step_blocks(block_a, block_b, position, state, self.n)?;
                position += 1;
                continue;
            };
            for (on_a, on_b) in [(true, true), (true, false), (false, true), (false, false)] {
                // The mirror of (true, false) in a self product.
                if self.b.is_none() && u == v && !on_a && on_b {
                    continue;
                }
                if (on_a || on_b) && self.allowed & 1 << j == 0 {
                    continue;
                }
                let (u2, v2) = (u | usize::from(on_a) << j, v | usize::from(on_b) << j);
                let Some(block_a) = self.a.block(position, j, on_a) else {
                    continue;
                };
                let block_b = match &self.b {
                    Some(b) => match b.block(position, j, on_b) {
                        Some(block) => Some(block),
                        None => continue,
                    },
                    None if u2 == v2 => None,
                    None => match self.a.block(position, j, on_b) {
                        Some(block) => Some(block),
                        None => continue,
                    },
                };
                let branch = (clone_stream(&state.0), state.1);
                if position == last {
                    self.out[u2 << m | v2] =
                        Some(self.metric.finish(block_a, block_b, last, branch, self.n)?);
                } else {
                    let next = self
                        .metric
                        .step_blocks(block_a, block_b, position, branch, self.n)?;
                    self.descend(position + 1, (u2, v2), next)?;
                }
            }
            return Ok(());
        }
    }
}

fn clone_stream<T: Real>(s: &Stream<T>) -> Stream<T> {
    match s {
        Stream::Dense(g) => Stream::Dense(g.clone()),
        Stream::Lifted(m, w) => Stream::Lifted(m.clone(), *w),
    }
}

/// Möbius inversion over subsets along both indices of a `2^m × 2^m`
/// matrix at `U·2^m + U'`: `f(S) = Σ_{U⊆S} (−1)^{|S|−|U|} g(U)`.
fn mobius(values: &mut [LogScaled], m: usize) {
    let size = 1usize << m;
    let at = |u: usize, v: usize, transposed: bool| {
        if transposed {
            v * size + u
        } else {
            u * size + v
        }
    };
    for transposed in [false, true] {
        for bit in 0..m {
            for s in (0..size).filter(|s| s & 1 << bit != 0) {
                for v in 0..size {
                    let lower = values[at(s & !(1 << bit), v, transposed)];
                    let x = &mut values[at(s, v, transposed)];
                    *x = *x - lower;
                }
            }
        }
    }
}

impl TensorSimilarity {
    /// The path families of `a` and `b` (SPEC §9): the inner products and
    /// cosines of every pair of families, which sum to `⟨A, B⟩`.
    ///
    /// A block with a skip term splits into its skip part
    /// ([`TensorBlock::skip_part`]) and its active part; the family `S` is
    /// the set of splitting blocks whose active part is on the path. With
    /// `T(U)` the model whose splitting blocks outside `U` keep only their
    /// skip parts,
    ///
    /// ```text
    /// ⟨T_A^S, T_B^S'⟩ = Σ_{U⊆S} Σ_{U'⊆S'} (−1)^{|S|−|U|+|S'|−|U'|} ⟨T_A(U), T_B(U')⟩.
    /// ```
    ///
    /// The `4^m` products on the right share their prefixes: the recursion
    /// walks the choices (full or skip part, per splitting block and model)
    /// depth first, so the `j`-th splitting block takes `4^(j−1)` full
    /// steps and at most `m + 1` states are held.
    ///
    /// The splitting blocks (attention blocks, and blocks with a skip term)
    /// must sit at the same chain indices in both models. An error if there
    /// are none, if there are more than [`MAX_SPLITTING_BLOCKS`], if a block
    /// does not say what its skip term is, or if the estimated work exceeds
    /// the metric's work limit; the memory limit is that of one
    /// [`similarity`](crate::RecursiveSimilarity::similarity) (one state
    /// per splitting block more is held).
    ///
    /// # Example
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Bilinear, Linear, Model, TensorSimilarity};
    ///
    /// // Two residual bilinear blocks: four families, ∅, {1}, {2}, {1, 2}.
    /// let w = |rows: usize, cols: usize, seed: f64| {
    ///     DMatrix::from_fn(rows, cols, |i, j| ((seed + (3 * i + 5 * j) as f64) * 0.7).sin())
    /// };
    /// let mlp = |seed: f64| Bilinear::builder(w(4, 3, seed), w(4, 3, seed + 1.0))
    ///     .down(w(3, 4, seed + 2.0))
    ///     .residual(0.5)
    ///     .build();
    /// let model = |seed: f64| -> Result<Model, tensor_similarity::Error> {
    ///     Model::builder()
    ///         .block(Linear::new(w(3, 2, 0.0), None)?)
    ///         .block(mlp(seed)?)
    ///         .block(mlp(seed + 3.0)?)
    ///         .block(Linear::new(w(2, 3, 9.0), None)?)
    ///         .build()
    /// };
    /// let (a, b) = (model(1.0)?, model(2.0)?);
    /// let paths = TensorSimilarity::new().paths(&a, &b)?;
    /// assert_eq!(paths.families, vec![vec![], vec![1], vec![2], vec![1, 2]]);
    /// let sum: f64 = paths.inner.iter().map(|x| x.to_f64()).sum();
    /// assert!((sum - paths.total.to_f64()).abs() < 1e-10 * paths.total.to_f64().abs());
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn paths<T: Real>(&self, a: &Model<T>, b: &Model<T>) -> Result<PathFamilies> {
        let n = self.context_for(a, b)?;
        let split = splitting_blocks(a, b)?;
        let m = split.len();
        if m == 0 {
            return Err(Error::InvalidOption {
                what: "path families",
                reason: "no block splits (attention, or a block with a skip term)".into(),
            });
        }
        if m > MAX_SPLITTING_BLOCKS {
            return Err(Error::InvalidOption {
                what: "path families",
                reason: format!(
                    "{m} splitting blocks make 4^{m} products of path models; at most \
                     {MAX_SPLITTING_BLOCKS} are taken"
                ),
            });
        }
        self.check_estimate(|n| self.similarity_bytes(a, b, n), n)?;
        check_work(|n| family_work(a, b, &split, n), n, self.max_work())?;
        let products =
            |x: &Model<T>, y: Option<&Model<T>>| self.split_products(x, y, n, &split, (1 << m) - 1);
        let size = 1usize << m;
        let all = size - 1;
        // The three products at once when each is small, as `similarity`
        // runs them.
        let (ab, (aa, bb)) = if self.products_at_once(a, b, n) {
            rayon::join(
                || products(a, Some(b)),
                || rayon::join(|| products(a, None), || products(b, None)),
            )
        } else {
            (products(a, Some(b)), (products(a, None), products(b, None)))
        };
        let (mut ab, mut aa, mut bb) = (ab?, aa?, bb?);
        let total = ab[all * size + all];
        let similarity = cosine(total, aa[all * size + all], bb[all * size + all])?;
        // Rounding of the inversion, per family: ε Σ_{U,U'⊆S} |P(U,U')|.
        let rounding = |p: &[LogScaled], s: usize| {
            let mut sum = LogScaled::ZERO;
            for u in (0..size).filter(|u| u & !s == 0) {
                for v in (0..size).filter(|v| v & !s == 0) {
                    sum = sum + p[u * size + v].abs();
                }
            }
            sum * LogScaled::from(64.0 * f64::EPSILON)
        };
        let floor_a: Vec<LogScaled> = (0..size).map(|s| rounding(&aa, s)).collect();
        let floor_b: Vec<LogScaled> = (0..size).map(|s| rounding(&bb, s)).collect();
        for p in [&mut ab, &mut aa, &mut bb] {
            mobius(p, m);
        }
        let mut order: Vec<usize> = (0..size).collect();
        let members = |s: usize| -> Vec<usize> {
            (0..m)
                .filter(|j| s & 1 << j != 0)
                .map(|j| split[j])
                .collect()
        };
        order.sort_by_key(|&s| (s.count_ones(), members(s)));
        let norms_a: Vec<LogScaled> = order.iter().map(|&s| aa[s * size + s]).collect();
        let norms_b: Vec<LogScaled> = order.iter().map(|&s| bb[s * size + s]).collect();
        let zero_a: Vec<bool> = order
            .iter()
            .map(|&s| is_zero(aa[s * size + s], floor_a[s]))
            .collect();
        let zero_b: Vec<bool> = order
            .iter()
            .map(|&s| is_zero(bb[s * size + s], floor_b[s]))
            .collect();
        let inner = DMatrix::from_fn(size, size, |i, j| ab[order[i] * size + order[j]]);
        let cosines = DMatrix::from_fn(size, size, |i, j| {
            if zero_a[i] || zero_b[j] {
                f64::NAN
            } else {
                cosine(inner[(i, j)], norms_a[i], norms_b[j]).unwrap_or(f64::NAN)
            }
        });
        Ok(PathFamilies {
            blocks: split.clone(),
            families: order.iter().map(|&s| members(s)).collect(),
            inner,
            norms_a,
            norms_b,
            cosine: cosines,
            total,
            similarity,
        })
    }
}

/// Whether a squared norm is zero within its rounding `floor`.
fn is_zero(norm: LogScaled, floor: LogScaled) -> bool {
    norm.signum() <= 0.0 || norm.ln_abs() <= floor.ln_abs()
}

impl TensorSimilarity {
    /// `⟨T_A(U), T_B(U')⟩` for `U, U'` ⊆ `allowed` (bits over `split`), at
    /// `U·2^m + U'`, zero elsewhere (`y = None`: the self product of `x`).
    fn split_products<T: Real>(
        &self,
        x: &Model<T>,
        y: Option<&Model<T>>,
        n: usize,
        split: &[usize],
        allowed: usize,
    ) -> Result<Vec<LogScaled>> {
        let m = split.len();
        let last = x.depth() - 1;
        let readout = match split.contains(&last) {
            true => None,
            false => {
                let last_x = &*x.blocks()[last];
                self.readout(last_x, y.map_or(last_x, |y| &*y.blocks()[last]))?
            }
        };
        let mut walk = Walk {
            metric: self,
            a: splits(x, split)?,
            b: y.map(|y| splits(y, split)).transpose()?,
            split,
            n,
            out: vec![None; 1 << (2 * m)],
            readout,
            allowed,
        };
        walk.descend(0, (0, 0), (self.input_stream(x, n)?, 0.0))?;
        let size = 1 << m;
        let mut values = vec![LogScaled::ZERO; size * size];
        for u in 0..size {
            for v in 0..size {
                values[u * size + v] = walk.out[u * size + v]
                    .or(if y.is_none() {
                        walk.out[v * size + u]
                    } else {
                        None
                    })
                    .unwrap_or(LogScaled::ZERO);
            }
        }
        Ok(values)
    }

    /// `⟨T_A^S, T_B^S⟩` for the family `S` (chain indices; `b = None`: the
    /// self product), by Möbius inversion over the subsets of `S` alone.
    fn family_product<T: Real>(
        &self,
        a: &Model<T>,
        b: Option<&Model<T>>,
        family: &[usize],
    ) -> Result<LogScaled> {
        let n = self.context_for(a, b.unwrap_or(a))?;
        let split = splitting_blocks(a, b.unwrap_or(a))?;
        let mut bits = 0usize;
        for k in family {
            let Some(j) = split.iter().position(|s| s == k) else {
                return Err(Error::InvalidOption {
                    what: "path family",
                    reason: format!(
                        "block {k} does not split (the splitting blocks are {split:?}: attention, \
                         and blocks with a skip term)"
                    ),
                });
            };
            bits |= 1 << j;
        }
        let family_blocks: Vec<usize> = family.to_vec();
        check_work(
            |n| family_work(a, b.unwrap_or(a), &family_blocks, n),
            n,
            self.max_work(),
        )?;
        let p = self.split_products(a, b, n, &split, bits)?;
        let size = 1usize << split.len();
        let mut sum = LogScaled::ZERO;
        for u in (0..size).filter(|u| u & !bits == 0) {
            for v in (0..size).filter(|v| v & !bits == 0) {
                let flips = (bits & !u).count_ones() + (bits & !v).count_ones();
                let x = p[u * size + v];
                sum = if flips.is_multiple_of(2) {
                    sum + x
                } else {
                    sum - x
                };
            }
        }
        Ok(sum)
    }
}

/// The tensor similarity of one path family (SPEC §9) as a metric:
/// `⟨A^S, B^S⟩ / √(⟨A^S, A^S⟩⟨B^S, B^S⟩)` for the family `S` (the chain
/// indices of the splitting blocks whose active part is on the path), so
/// that [`matrix`](crate::matrix) makes the checkpoint matrix of one family
/// across a run. Each inner product takes the `4^|S|` products of the
/// models with the blocks of `S` full or skipped (every other splitting
/// block skipped).
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{Bilinear, FamilySimilarity, Linear, Model, RecursiveSimilarity, TensorSimilarity};
///
/// let w = |rows: usize, cols: usize, seed: f64| {
///     DMatrix::from_fn(rows, cols, |i, j| ((seed + (3 * i + 5 * j) as f64) * 0.7).sin())
/// };
/// let model = |seed: f64| -> Result<Model, tensor_similarity::Error> {
///     Model::builder()
///         .block(Linear::new(w(3, 2, 0.0), None)?)
///         .block(Bilinear::builder(w(4, 3, seed), w(4, 3, seed + 1.0)).down(w(3, 4, 2.0)).residual(0.5).build()?)
///         .block(Linear::new(w(2, 3, 9.0), None)?)
///         .build()
/// };
/// let (a, b) = (model(1.0)?, model(2.0)?);
/// let paths = TensorSimilarity::new().paths(&a, &b)?;
/// let active = FamilySimilarity::new(TensorSimilarity::new(), vec![1]);
/// assert!((active.similarity(&a, &b)? - paths.cosine[(1, 1)]).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct FamilySimilarity {
    metric: TensorSimilarity,
    family: Vec<usize>,
}

impl FamilySimilarity {
    /// The family `family` (chain indices, any order) under `metric`.
    pub fn new(metric: TensorSimilarity, mut family: Vec<usize>) -> Self {
        family.sort_unstable();
        family.dedup();
        Self { metric, family }
    }

    /// The family's chain indices, in order.
    pub fn family(&self) -> &[usize] {
        &self.family
    }
}

impl<T: Real> RecursiveSimilarity<T> for FamilySimilarity {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        self.metric.family_product(a, Some(b), &self.family)
    }

    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        self.metric.family_product(a, None, &self.family)
    }

    fn check_memory(&self, a: &Model<T>, b: &Model<T>, at_once: usize) -> Result<()> {
        RecursiveSimilarity::<T>::check_memory(&self.metric, a, b, at_once)
    }
}

/// `model`'s blocks with the skip parts of those at `split`.
fn splits<'a, T: Real>(model: &'a Model<T>, split: &[usize]) -> Result<Splits<'a, T>> {
    Ok(Splits {
        model,
        skips: split
            .iter()
            .map(|&k| model.blocks()[k].skip_part())
            .collect::<Result<_>>()?,
    })
}

/// The chain indices where either model's block splits; an error where one
/// model's block there says nothing of its skip term.
fn splitting_blocks<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<Vec<usize>> {
    let mut split = Vec::new();
    for (k, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
        let splits = |block: &Arc<dyn TensorBlock<T>>| -> Result<bool> {
            Ok(is_attention(&**block) || block.skip_part()?.is_some())
        };
        if splits(x)? || splits(y)? {
            split.push(k);
        }
    }
    Ok(split)
}

/// An estimate of the multiply–adds of the three products' walks: at chain
/// index `p`, `4^j` states (`j` splitting blocks before it) each take one
/// step (counted as the full step), for `⟨A,B⟩` and, halved, each self
/// product.
fn family_work<T: Real>(a: &Model<T>, b: &Model<T>, split: &[usize], n: usize) -> f64 {
    // `split`: the blocks chosen full or skipped; every other block is
    // taken once per state.
    let mut states = 1.0;
    let mut work = 0.0;
    for (k, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
        let step = x.gram_step_work(&**y, n)
            + 0.5 * (x.gram_step_work(&**x, n) + y.gram_step_work(&**y, n));
        if split.contains(&k) {
            states *= 4.0;
        }
        work += states * step;
    }
    work
}
