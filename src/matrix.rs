//! Pairwise similarity matrices of many models, in parallel.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::error::Result;
use crate::model::Model;
use crate::recursion::{RecursiveSimilarity, cosine};
use crate::scalar::Real;

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
/// every `i ≠ j`. An error, the first by pair order, if any pair cannot be
/// compared or a model has zero norm.
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
    let norms = models
        .par_iter()
        .map(|m| metric.squared_norm(m))
        .collect::<Result<Vec<_>>>()?;
    pairwise_matrix(models, progress, |i, j| {
        cosine(
            metric.inner_product(&models[i], &models[j])?,
            norms[i],
            norms[j],
        )
    })
}

/// The symmetric `N × N` matrix with unit diagonal whose entry `(i, j)`,
/// `i < j`, is `similarity(i, j)`, computed in parallel; for metrics that
/// are not inner-product cosines (such as
/// [`weight_cosine`](crate::weight_cosine)). `progress` is called once per
/// finished pair. The error is the first by pair order.
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
    let n = models.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let values = pairs
        .par_iter()
        .map(|&(i, j)| {
            let s = similarity(i, j);
            progress();
            s
        })
        .collect::<Vec<_>>();
    let mut out = DMatrix::identity(n, n);
    for (&(i, j), s) in pairs.iter().zip(values) {
        let s = s?;
        out[(i, j)] = s;
        out[(j, i)] = s;
    }
    Ok(out)
}
