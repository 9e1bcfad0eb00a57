//! The metrics the command line offers, dispatched in one place.

use nalgebra::DMatrix;
use tensor_similarity::matrix::{pairwise_matrix, similarity_matrix};
use tensor_similarity::{Model, RecursiveSimilarity, Result, TensorSimilarity, weight_cosine};

/// Which similarity to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// Tensor similarity (SPEC §2): cosine of the symmetrised end-to-end tensors.
    Tensor,
    /// Gaussian functional similarity (SPEC §3): E[f_A·f_B] over x ~ N(0, I).
    Gaussian,
    /// Cosine of all parameters concatenated (SPEC §4 baseline).
    Weight,
}

impl Metric {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Tensor => "tensor",
            Metric::Gaussian => "gaussian",
            Metric::Weight => "weight",
        }
    }

    /// The similarity of `a` and `b`.
    pub fn compare(self, a: &Model, b: &Model) -> Result<f64> {
        match self {
            Metric::Tensor => TensorSimilarity::new().similarity(a, b),
            Metric::Gaussian => Err(gaussian_unavailable()),
            Metric::Weight => weight_cosine(a, b),
        }
    }

    /// The matrix of all pairwise similarities, calling `progress` per pair.
    pub fn matrix(self, models: &[Model], progress: impl Fn() + Sync) -> Result<DMatrix<f64>> {
        match self {
            Metric::Tensor => similarity_matrix(&TensorSimilarity::new(), models, progress),
            Metric::Gaussian => Err(gaussian_unavailable()),
            Metric::Weight => pairwise_matrix(models, progress, |i, j| {
                weight_cosine(&models[i], &models[j])
            }),
        }
    }
}

fn gaussian_unavailable() -> tensor_similarity::Error {
    tensor_similarity::Error::InvalidOption {
        what: "--metric",
        reason: "the gaussian metric is not available in this build yet; use tensor or weight"
            .into(),
    }
}
