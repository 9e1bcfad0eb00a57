//! Pairwise similarity matrices of many models, in parallel, whole or by
//! tiles.
//!
//! A matrix too large for one machine is a grid of **tiles**: blocks of
//! rows × columns computed independently from the models of those rows and
//! columns and their squared norms, which [`squared_norms`] computes once per
//! model. [`similarity_tile`] computes one tile; the tiles on and above the
//! diagonal, mirrored, assemble into exactly what [`similarity_matrix`]
//! returns (it is the one tile of all rows and columns).

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::recursion::{RecursiveSimilarity, cosine};
use crate::scalar::{LogScaled, Real};

/// The symmetric `N × N` matrix of `metric`'s similarities between `models`,
/// with a unit diagonal.
///
/// Each model's squared norm `⟨A,A⟩` is computed once (`N` recursions), then
/// the `N(N−1)/2` pairs `⟨A,B⟩` run in parallel on rayon's thread pool, and
/// each cosine reuses the cached norms: `N(N+1)/2` recursions in all instead
/// of `3N(N−1)/2`. `progress` is called once per finished pair (from worker
/// threads), for a progress bar.
///
/// Semantically the same as `metric.similarity(&models[i], &models[j])` for
/// every `i ≠ j`, and exactly [`similarity_tile`] of `models` with itself
/// (`cols = None`) after [`squared_norms`]. An error, the first by pair
/// order, if any pair cannot be compared or a model has zero norm.
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{matrix::similarity_matrix, Bilinear, Model, TensorSimilarity};
///
/// let model = |s: f64| -> Model {
///     let l = DMatrix::from_fn(3, 2, |i, j| (i + j) as f64 + s);
///     Model::builder().block(Bilinear::new(l, DMatrix::identity(3, 2)).unwrap()).build().unwrap()
/// };
/// let models = [model(0.0), model(0.5), model(-1.0)];
/// let m = similarity_matrix(&TensorSimilarity::new(), &models, || {})?;
/// assert_eq!(m.shape(), (3, 3));
/// assert_eq!(m[(1, 1)], 1.0);
/// let direct = tensor_similarity::similarity(&models[0], &models[2])?;
/// assert!((m[(0, 2)] - direct).abs() < 1e-12 && m[(2, 0)] == m[(0, 2)]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn similarity_matrix<T: Real, S: RecursiveSimilarity<T> + Sync>(
    metric: &S,
    models: &[Model<T>],
    progress: impl Fn() + Sync,
) -> Result<DMatrix<f64>> {
    check_memory(metric, models, None)?;
    let norms = squared_norms(metric, models)?;
    similarity_tile(metric, models, &norms, None, progress)
}

/// Asks `metric` whether its products of every pair of a tile (rows with
/// `cols`, or with themselves), one per thread at once, fit its memory
/// limit ([`RecursiveSimilarity::check_memory`]), before any of them runs.
fn check_memory<T: Real, S: RecursiveSimilarity<T>>(
    metric: &S,
    rows: &[Model<T>],
    cols: Option<&[Model<T>]>,
) -> Result<()> {
    let pairs = match cols {
        Some(c) => rows.len() * c.len(),
        None => rows.len() * rows.len().saturating_sub(1) / 2,
    };
    let at_once = rayon::current_num_threads()
        .min(pairs.max(rows.len()))
        .max(1);
    for (i, a) in rows.iter().enumerate() {
        match cols {
            Some(cols) => cols
                .iter()
                .try_for_each(|b| metric.check_memory(a, b, at_once))?,
            // A model with itself too: a one-model matrix still computes its norm.
            None => rows[i..]
                .iter()
                .try_for_each(|b| metric.check_memory(a, b, at_once))?,
        }
    }
    Ok(())
}

/// Each model's squared norm `⟨A,A⟩` under `metric`, in parallel, in log
/// scale: what [`similarity_tile`] reuses across tiles, so that a matrix
/// computed by tiles still computes each norm once.
///
/// Semantically the same as `metric.squared_norm(m)` for each model; the
/// error is the first by model order.
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{matrix::squared_norms, Linear, Model, TensorSimilarity};
/// let model = Model::builder().block(Linear::new(dmatrix![3.0, 4.0], None)?).build()?;
/// let norms = squared_norms(&TensorSimilarity::new(), &[model])?;
/// // ⟨A,A⟩ = ‖W‖² = 25 (with the identity input metric).
/// assert!((norms[0].to_f64() - 25.0).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn squared_norms<T: Real, S: RecursiveSimilarity<T> + Sync>(
    metric: &S,
    models: &[Model<T>],
) -> Result<Vec<LogScaled>> {
    models.par_iter().map(|m| metric.squared_norm(m)).collect()
}

/// One tile of the similarity matrix: the cosines of `rows[i]` with
/// `cols[j]`, given each model's squared norm (from [`squared_norms`]).
///
/// * `cols = Some((cols, col_norms))`: an off-diagonal tile,
///   `rows.len() × cols.len()`, entry `(i, j)` the cosine of
///   `⟨rows[i], cols[j]⟩` (in that order) with the two norms.
/// * `cols = None`: a tile on the diagonal, the rows with themselves: the
///   symmetric matrix of `rows` with a unit diagonal, each pair `i < j`
///   computed once as `⟨rows[i], rows[j]⟩` and mirrored. This is exactly
///   [`similarity_matrix`] of `rows`.
///
/// So for any split of `N` models into consecutive groups, the diagonal
/// tiles and the tiles of each group's rows with a later group's columns,
/// mirrored, assemble into the bit-identical `N × N` matrix. The pairs run in
/// parallel on rayon's thread pool; `progress` is called once per finished
/// pair. An error if a norms slice's length differs from its models', and
/// otherwise the first by pair order (row-major) if a pair cannot be
/// compared or a norm is zero.
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::matrix::{similarity_matrix, similarity_tile, squared_norms};
/// use tensor_similarity::{Bilinear, Model, TensorSimilarity};
///
/// let model = |s: f64| -> Model {
///     let l = DMatrix::from_fn(3, 2, |i, j| (i * j) as f64 + s);
///     Model::builder().block(Bilinear::new(l, DMatrix::identity(3, 2)).unwrap()).build().unwrap()
/// };
/// let models: Vec<Model> = (0..5).map(|i| model(i as f64 * 0.3 - 0.5)).collect();
/// let metric = TensorSimilarity::new();
/// let norms = squared_norms(&metric, &models)?;
/// let full = similarity_matrix(&metric, &models, || {})?;
/// // Rows 0..2 with columns 2..5: the top-right block, bit for bit.
/// let tile = similarity_tile(&metric, &models[..2], &norms[..2],
///                            Some((&models[2..], &norms[2..])), || {})?;
/// assert_eq!(tile, full.view((0, 2), (2, 3)).clone_owned());
/// // Rows 2..5 with themselves: the diagonal block.
/// let diagonal = similarity_tile(&metric, &models[2..], &norms[2..], None, || {})?;
/// assert_eq!(diagonal, full.view((2, 2), (3, 3)).clone_owned());
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn similarity_tile<T: Real, S: RecursiveSimilarity<T> + Sync>(
    metric: &S,
    rows: &[Model<T>],
    row_norms: &[LogScaled],
    cols: Option<(&[Model<T>], &[LogScaled])>,
    progress: impl Fn() + Sync,
) -> Result<DMatrix<f64>> {
    check_norms("row norms", rows.len(), row_norms.len())?;
    check_memory(metric, rows, cols.map(|(models, _)| models))?;
    let (cols, col_norms, shape) = match cols {
        Some((models, norms)) => {
            check_norms("column norms", models.len(), norms.len())?;
            (models, norms, Some(models.len()))
        }
        None => (rows, row_norms, None),
    };
    pairwise_tile(rows.len(), shape, progress, |i, j| {
        cosine(
            metric.inner_product(&rows[i], &cols[j])?,
            row_norms[i],
            col_norms[j],
        )
    })
}

/// The symmetric `N × N` matrix with unit diagonal whose entry `(i, j)`,
/// `i < j`, is `similarity(i, j)`, computed in parallel; for metrics that
/// are not inner-product cosines (such as
/// [`weight_cosine`](crate::weight_cosine)). `progress` is called once per
/// finished pair. The error is the first by pair order. The same as
/// [`pairwise_tile`]`(models.len(), None, …)`.
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{matrix::pairwise_matrix, weight_cosine, Linear, Model};
/// let models: Vec<Model> = [dmatrix![1.0, 0.0], dmatrix![1.0, 1.0]]
///     .into_iter()
///     .map(|w| Model::builder().block(Linear::new(w, None).unwrap()).build().unwrap())
///     .collect();
/// let m = pairwise_matrix(&models, || {}, |i, j| weight_cosine(&models[i], &models[j]))?;
/// assert!((m[(0, 1)] - 0.5f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn pairwise_matrix<T: Real>(
    models: &[Model<T>],
    progress: impl Fn() + Sync,
    similarity: impl Fn(usize, usize) -> Result<f64> + Sync,
) -> Result<DMatrix<f64>> {
    pairwise_tile(models.len(), None, progress, similarity)
}

/// A tile of a matrix of any pairwise similarity, computed in parallel (the
/// tile form of [`pairwise_matrix`], as [`similarity_tile`] is of
/// [`similarity_matrix`]).
///
/// `cols = Some(c)`: the `rows × c` matrix of `similarity(i, j)` for every
/// `i`, `j`. `cols = None`: a diagonal tile, the symmetric `rows × rows`
/// matrix with unit diagonal whose entries `(i, j)` and `(j, i)`, `i < j`,
/// are `similarity(i, j)`. `progress` is called once per finished pair; the
/// error is the first by pair order (row-major).
///
/// ```
/// use tensor_similarity::matrix::pairwise_tile;
/// let m = pairwise_tile(2, Some(3), || {}, |i, j| Ok((10 * i + j) as f64))?;
/// assert_eq!(m[(1, 2)], 12.0);
/// let d = pairwise_tile(3, None, || {}, |i, j| Ok((10 * i + j) as f64))?;
/// assert_eq!((d[(0, 0)], d[(0, 2)], d[(2, 0)]), (1.0, 2.0, 2.0));
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn pairwise_tile(
    rows: usize,
    cols: Option<usize>,
    progress: impl Fn() + Sync,
    similarity: impl Fn(usize, usize) -> Result<f64> + Sync,
) -> Result<DMatrix<f64>> {
    let pairs: Vec<(usize, usize)> = match cols {
        Some(c) => (0..rows)
            .flat_map(|i| (0..c).map(move |j| (i, j)))
            .collect(),
        None => (0..rows)
            .flat_map(|i| (i + 1..rows).map(move |j| (i, j)))
            .collect(),
    };
    let values = pairs
        .par_iter()
        .map(|&(i, j)| {
            let s = similarity(i, j);
            progress();
            s
        })
        .collect::<Vec<_>>();
    let mut out = match cols {
        Some(c) => DMatrix::zeros(rows, c),
        None => DMatrix::identity(rows, rows),
    };
    for (&(i, j), s) in pairs.iter().zip(values) {
        let s = s?;
        out[(i, j)] = s;
        if cols.is_none() {
            out[(j, i)] = s;
        }
    }
    Ok(out)
}

/// An error unless there is one norm per model.
fn check_norms(what: &'static str, models: usize, norms: usize) -> Result<()> {
    if models == norms {
        return Ok(());
    }
    Err(Error::InvalidOption {
        what,
        reason: format!("{norms} norms given for {models} models"),
    })
}
