//! The metrics the command line offers, dispatched in one place
//! ([`Metric::kernel`]): a new metric is one match arm.

use nalgebra::DMatrix;
use tensor_similarity::matrix::{pairwise_matrix, similarity_matrix};
use tensor_similarity::{
    GaussianSimilarity, MemoryLimit, Model, Real, RecursiveSimilarity, Result, TensorSimilarity,
    weight_cosine,
};

/// Which similarity to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// Tensor similarity (SPEC §2): cosine of the symmetrised end-to-end tensors.
    Tensor,
    /// Gaussian functional similarity (SPEC §3, §7): E[f_A·f_B] over x ~ N(0, I) (rows of a sequence i.i.d.).
    Gaussian,
    /// Cosine of all parameters concatenated (SPEC §4 baseline).
    Weight,
}

/// How a metric computes: as the cosine of an inner product (so a matrix
/// computes each norm once), or pair by pair.
enum Kernel<T: Real> {
    Recursive(Box<dyn RecursiveSimilarity<T> + Sync>),
    Pairwise(fn(&Model<T>, &Model<T>) -> Result<f64>),
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

    fn kernel<T: Real>(self, context: Option<usize>, limit: MemoryLimit) -> Result<Kernel<T>> {
        Ok(match self {
            Metric::Tensor => {
                let metric = TensorSimilarity::new().with_max_memory(limit);
                Kernel::Recursive(Box::new(match context {
                    Some(n) => metric.with_context(n)?,
                    None => metric,
                }))
            }
            Metric::Gaussian => {
                let metric = GaussianSimilarity::new().with_max_memory(limit);
                Kernel::Recursive(Box::new(match context {
                    Some(n) => metric.with_context(n)?,
                    None => metric,
                }))
            }
            Metric::Weight => Kernel::Pairwise(weight_cosine::<T>),
        })
    }

    /// Whether the value for `a` and `b` is exact: `Some(false)` where the
    /// Gaussian metric falls back to a Gaussian closure, `None` for metrics
    /// that are always exact.
    pub fn exact<T: Real>(self, a: &Model<T>, b: &Model<T>) -> Option<bool> {
        match self {
            Metric::Gaussian => Some(GaussianSimilarity::new().is_exact(a, b)),
            Metric::Tensor | Metric::Weight => None,
        }
    }

    /// The similarity of `a` and `b`, over `context` positions for
    /// sequence models, within the memory `limit`.
    pub fn compare<T: Real>(
        self,
        a: &Model<T>,
        b: &Model<T>,
        context: Option<usize>,
        limit: MemoryLimit,
    ) -> Result<f64> {
        match self.kernel(context, limit)? {
            Kernel::Recursive(metric) => metric.similarity(a, b),
            Kernel::Pairwise(f) => f(a, b),
        }
    }

    /// The matrix of all pairwise similarities, calling `progress` per pair.
    pub fn matrix<T: Real>(
        self,
        models: &[Model<T>],
        context: Option<usize>,
        limit: MemoryLimit,
        progress: impl Fn() + Sync,
    ) -> Result<DMatrix<f64>> {
        match self.kernel(context, limit)? {
            Kernel::Recursive(metric) => similarity_matrix(&&*metric, models, progress),
            Kernel::Pairwise(f) => {
                pairwise_matrix(models, progress, |i, j| f(&models[i], &models[j]))
            }
        }
    }
}
