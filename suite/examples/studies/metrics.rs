//! The similarity matrices over checkpoints and the statistics read off
//! them, all by the library: the tensor similarity and its class slices
//! (SPEC §2, output selection `Q`), weight cosine, output cosine and linear
//! CKA (SPEC §4), and difference similarity.

use nalgebra::DMatrix;
use tensor_similarity::matrix::{pairwise_matrix, similarity_matrix};
use tensor_similarity::{
    Model, RecursiveSimilarity, Result, TensorSimilarity, linear_cka_of, output_cosine,
    weight_cosine,
};

use super::data::{CLASSES, Images, PIXELS};
use super::progress;

/// A matrix with its key (the CSV's file stem and the summary's key).
pub type Named = (String, DMatrix<f64>);

/// The tensor similarity on the identity input metric, all outputs.
pub fn tensor() -> TensorSimilarity {
    TensorSimilarity::new()
}

/// The class-`c` slice: the tensor similarity of logit `c` alone
/// (`Q = e_c e_cᵀ`).
pub fn class_slice(c: usize) -> TensorSimilarity {
    TensorSimilarity::new().with_output_selection(vec![c])
}

/// The input metric `M = E[x̃ x̃ᵀ]` of `images` (with `x̃ = (1, x)`): the
/// data-aware tensor similarity, which weighs each input direction by how
/// much the images use it.
pub fn data_metric(images: &Images) -> DMatrix<f64> {
    let n = images.len();
    let mut padded = DMatrix::from_element(PIXELS + 1, n, 1.0);
    padded.rows_mut(1, PIXELS).copy_from(&images.x);
    &padded * padded.transpose() / n as f64
}

/// The tensor similarity matrices of `models` under each of `metrics`
/// (`(key, metric)`), with one progress bar over all of them.
pub fn tensor_matrices(
    models: &[Model<f64>],
    metrics: &[(String, TensorSimilarity)],
    show: bool,
) -> Result<Vec<Named>> {
    let n = models.len();
    let bar = progress::bar(metrics.len() * n * n.saturating_sub(1) / 2, "tensor", show);
    let out = metrics
        .iter()
        .map(|(key, metric)| {
            bar.set_message(key.clone());
            Ok((
                key.clone(),
                similarity_matrix(metric, models, || bar.inc(1))?,
            ))
        })
        .collect();
    bar.finish();
    out
}

/// `("tensor", …)` and the ten class slices `("tensor_class_c", …)`.
pub fn tensor_and_class_metrics() -> Vec<(String, TensorSimilarity)> {
    std::iter::once(("tensor".to_owned(), tensor()))
        .chain((0..CLASSES).map(|c| (format!("tensor_class_{c}"), class_slice(c))))
        .collect()
}

/// The weight cosine matrix.
pub fn weight_matrix(models: &[Model<f64>]) -> Result<DMatrix<f64>> {
    pairwise_matrix(models, || {}, |i, j| weight_cosine(&models[i], &models[j]))
}

/// The global output cosine matrix on the images `x` (one a row).
pub fn output_matrix(models: &[Model<f64>], x: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    pairwise_matrix(
        models,
        || {},
        |i, j| output_cosine(&models[i], &models[j], x),
    )
}

/// The linear CKA matrix of the models' logits on the images `x` (one a
/// row); each model's logits are computed once.
pub fn cka_matrix(models: &[Model<f64>], x: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    let outputs = models
        .iter()
        .map(|m| m.forward_rows(x))
        .collect::<Result<Vec<_>>>()?;
    pairwise_matrix(
        models,
        || {},
        |i, j| linear_cka_of(&outputs[i], &outputs[j]),
    )
}

/// Difference similarity `⟨A_t − A_0, B_1 − B_0⟩ / (‖A_t − A_0‖ ‖B_1 − B_0‖)`
/// under `metric` (the library's
/// [`difference_similarity(a0, a1, b0, b1)`](RecursiveSimilarity::difference_similarity),
/// whose first pair is the start and end of the first direction).
pub fn difference(
    metric: &TensorSimilarity,
    a0: &Model<f64>,
    a_t: &Model<f64>,
    b0: &Model<f64>,
    b1: &Model<f64>,
) -> Result<f64> {
    metric.difference_similarity(a0, a_t, b0, b1)
}

/// The phase-gap statistic of a similarity matrix between two phases of
/// checkpoints:
/// `Δ = mean_{i ≠ j ∈ later} m[i,j] − mean_{i ∈ earlier, j ∈ later} m[i,j]`,
/// how much more alike the later phase's checkpoints are to one another than
/// to the earlier phase's. `NaN` when a mean has no entries.
pub fn phase_gap(m: &DMatrix<f64>, earlier: &[usize], later: &[usize]) -> f64 {
    let mean = |pairs: Vec<(usize, usize)>| {
        let n = pairs.len() as f64;
        pairs.into_iter().map(|(i, j)| m[(i, j)]).sum::<f64>() / n
    };
    let within = later
        .iter()
        .flat_map(|&i| later.iter().filter(move |&&j| j != i).map(move |&j| (i, j)))
        .collect();
    let across = earlier
        .iter()
        .flat_map(|&i| later.iter().map(move |&j| (i, j)))
        .collect();
    mean(within) - mean(across)
}

/// Row `reference` of `m`: every checkpoint's similarity to one of them.
pub fn to_reference(m: &DMatrix<f64>, reference: usize) -> Vec<f64> {
    m.row(reference).iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_gap_by_hand() {
        // Phase {0, 1} then {2, 3}.
        let m = DMatrix::from_row_slice(
            4,
            4,
            &[
                1.0, 0.9, 0.2, 0.4, //
                0.9, 1.0, 0.3, 0.5, //
                0.2, 0.3, 1.0, 0.8, //
                0.4, 0.5, 0.8, 1.0,
            ],
        );
        let gap = phase_gap(&m, &[0, 1], &[2, 3]);
        assert!((gap - (0.8 - (0.2 + 0.4 + 0.3 + 0.5) / 4.0)).abs() < 1e-15);
        assert!(
            phase_gap(&m, &[0], &[1]).is_nan(),
            "no pair within one checkpoint"
        );
    }

    #[test]
    fn data_metric_is_the_second_moment_of_the_padded_images() {
        let images = Images {
            x: DMatrix::from_fn(PIXELS, 3, |i, j| ((i + j) % 5) as f64 / 4.0),
            y: vec![0, 1, 2],
        };
        let m = data_metric(&images);
        assert_eq!(m[(0, 0)], 1.0);
        let mean = images.x.column_mean();
        for i in 0..PIXELS {
            assert!((m[(0, i + 1)] - mean[i]).abs() < 1e-15);
            let second = images.x.row(i).iter().map(|v| v * v).sum::<f64>() / 3.0;
            assert!((m[(i + 1, i + 1)] - second).abs() < 1e-15);
        }
    }
}
