//! The three similarity matrices over the checkpoints.
//!
//! * **tensor**: the tensor similarity (SPEC §2) of the models loaded back
//!   from the checkpoint files: computed from the weights alone;
//! * **weight**: the cosine of the concatenated weights (SPEC §4);
//! * **output**: the global cosine of the logits over all `P²` inputs,
//!   `Σ_x f_A(x)·f_B(x) / √(Σ_x |f_A(x)|² Σ_x |f_B(x)|²)` (SPEC §4), the
//!   empirical baseline that sees exactly the inputs the task has.

use nalgebra::DMatrix;
use tensor_similarity::matrix::{pairwise_matrix, similarity_matrix};
use tensor_similarity::{Model, Result, TensorSimilarity, weight_cosine};

use crate::train::{Batch, Params};

/// The tensor similarity matrix, by the library's parallel
/// [`similarity_matrix`]; `tick()` after each pair.
pub fn tensor_matrix(models: &[Model<f64>], tick: impl Fn() + Sync) -> Result<DMatrix<f64>> {
    similarity_matrix(&TensorSimilarity::new(), models, tick)
}

/// The weight cosine matrix.
pub fn weight_matrix(models: &[Model<f64>]) -> Result<DMatrix<f64>> {
    pairwise_matrix(models, || {}, |i, j| weight_cosine(&models[i], &models[j]))
}

/// The global output cosine matrix over every pair in `inputs`.
///
/// The `N × N` Gram matrix `Σ_x f_i(x)·f_j(x)` is accumulated over chunks
/// of inputs (one GEMM per chunk) so that the checkpoints' logits never
/// have to be held for all inputs at once. `tick()` after each chunk.
pub fn output_matrix(
    checkpoints: &[&Params],
    inputs: &Batch,
    chunk: usize,
    mut tick: impl FnMut(),
) -> DMatrix<f64> {
    let n = checkpoints.len();
    let mut gram = DMatrix::<f64>::zeros(n, n);
    for start in (0..inputs.len()).step_by(chunk.max(1)) {
        let end = (start + chunk.max(1)).min(inputs.len());
        let part = Batch {
            a: inputs.a[start..end].to_vec(),
            b: inputs.b[start..end].to_vec(),
            y: inputs.y[start..end].to_vec(),
        };
        let rows = checkpoints[0].p() * part.len();
        // One column of flattened logits per checkpoint.
        let mut flat = DMatrix::<f64>::zeros(rows, n);
        for (k, params) in checkpoints.iter().enumerate() {
            flat.column_mut(k)
                .copy_from_slice(params.logits(&part).as_slice());
        }
        gram += flat.transpose() * &flat;
        tick();
    }
    DMatrix::from_fn(n, n, |i, j| {
        let denom = (gram[(i, i)] * gram[(j, j)]).sqrt();
        if denom > 0.0 {
            (gram[(i, j)] / denom).clamp(-1.0, 1.0)
        } else {
            f64::NAN
        }
    })
}

/// The symmetrised end-to-end tensor, one `2P × 2P` matrix per output:
/// `T[o][i, j] = ½ Σ_r W[o,r] (L[r,i] R[r,j] + L[r,j] R[r,i])`, built
/// densely from the weights (independently of the Gram recursion).
pub fn dense_tensor(params: &Params) -> Vec<DMatrix<f64>> {
    let lt = params.left.transpose();
    (0..params.p())
        .map(|o| {
            let mut scaled = lt.clone();
            for (r, mut col) in scaled.column_iter_mut().enumerate() {
                col *= params.proj[(o, r)];
            }
            let m = scaled * &params.right;
            (&m + m.transpose()) * 0.5
        })
        .collect()
}

/// The entries of the tensor grouped by the inputs that read them. A valid
/// input `e_a ⊕ e_b` reads `f_o = T[o,a,a] + 2 T[o,a,P+b] + T[o,P+b,P+b]`:
/// **cross** entries (one index in each token slot) and **diagonal**
/// entries (one token alone). **Unread** entries, two different indices in
/// the same slot, are read by no valid input (they say what the network
/// would do with two first tokens), yet count in the tensor similarity like
/// any other entry.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Groups {
    /// Entries `(a, P+b)` and `(P+b, a)`.
    pub cross: f64,
    /// Entries `(i, i)`.
    pub diagonal: f64,
    /// Entries `(i, j)`, `i ≠ j`, in the same slot.
    pub unread: f64,
}

impl Groups {
    /// The sum over all groups.
    pub fn total(&self) -> f64 {
        self.cross + self.diagonal + self.unread
    }

    fn map(self, other: Self, f: impl Fn(f64, f64) -> f64) -> Self {
        Self {
            cross: f(self.cross, other.cross),
            diagonal: f(self.diagonal, other.diagonal),
            unread: f(self.unread, other.unread),
        }
    }
}

/// `⟨T_A, T_B⟩` restricted to each group of entries; the groups sum to the
/// full tensor inner product.
pub fn grouped_inner_product(a: &[DMatrix<f64>], b: &[DMatrix<f64>]) -> Groups {
    let mut g = Groups::default();
    for (ta, tb) in a.iter().zip(b) {
        let p = ta.nrows() / 2;
        for j in 0..ta.ncols() {
            for i in 0..ta.nrows() {
                let v = ta[(i, j)] * tb[(i, j)];
                if i == j {
                    g.diagonal += v;
                } else if (i < p) == (j < p) {
                    g.unread += v;
                } else {
                    g.cross += v;
                }
            }
        }
    }
    g
}

/// A checkpoint's tensor seen group by group against a reference (the final
/// checkpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorParts {
    /// The checkpoint's step.
    pub step: usize,
    /// Share of the checkpoint's `‖T‖²` in each group.
    pub share: Groups,
    /// Cosine to the reference within each group.
    pub cosine: Groups,
    /// Cosine to the reference over all entries (the tensor similarity).
    pub total_cosine: f64,
}

/// [`TensorParts`] of `params` against the dense tensor `reference` and its
/// grouped squared norms `reference_norms`.
pub fn tensor_parts(
    step: usize,
    params: &Params,
    reference: &[DMatrix<f64>],
    reference_norms: Groups,
) -> TensorParts {
    let t = dense_tensor(params);
    let own = grouped_inner_product(&t, &t);
    let cross = grouped_inner_product(&t, reference);
    let norms = own.map(reference_norms, |x, y| (x * y).sqrt());
    TensorParts {
        step,
        share: own.map(own, |x, _| x / own.total()),
        cosine: cross.map(norms, |x, n| x / n),
        total_cosine: cross.total() / (own.total() * reference_norms.total()).sqrt(),
    }
}
