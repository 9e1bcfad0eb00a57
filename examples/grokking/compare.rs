//! The three similarity matrices over the checkpoints.
//!
//! * **tensor**: the tensor similarity (SPEC §2) of the models loaded back
//!   from the checkpoint files: computed from the weights alone;
//! * **weight**: the cosine of the concatenated weights (SPEC §4);
//! * **output**: the global cosine of the logits over all `P²` inputs,
//!   `Σ_x f_A(x)·f_B(x) / √(Σ_x |f_A(x)|² Σ_x |f_B(x)|²)` (SPEC §4), the
//!   empirical baseline that sees exactly the inputs the task has.

use nalgebra::DMatrix;
use tensor_similarity::{
    Model, RecursiveSimilarity, Result, TensorSimilarity, cosine, weight_cosine,
};

use crate::train::{Batch, Params};

/// The tensor similarity matrix: each self inner product once, then every
/// pair `i < j`; `tick()` after each entry computed.
pub fn tensor_matrix(models: &[Model<f64>], mut tick: impl FnMut()) -> Result<DMatrix<f64>> {
    let metric = TensorSimilarity::new();
    let norms = models
        .iter()
        .map(|m| {
            let n = metric.squared_norm(m);
            tick();
            n
        })
        .collect::<Result<Vec<_>>>()?;
    symmetric(models.len(), |i, j| {
        let c = cosine(
            metric.inner_product(&models[i], &models[j])?,
            norms[i],
            norms[j],
        );
        tick();
        c
    })
}

/// The weight cosine matrix.
pub fn weight_matrix(models: &[Model<f64>]) -> Result<DMatrix<f64>> {
    symmetric(models.len(), |i, j| weight_cosine(&models[i], &models[j]))
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

/// How the squared norm of the symmetrised end-to-end tensor
/// `T[o, i, j] = ½ Σ_r W[o,r] (L[r,i] R[r,j] + L[r,j] R[r,i])` splits by the
/// inputs that read each entry. A valid input `e_a ⊕ e_b` reads
/// `f_o = T[o,a,a] + 2 T[o,a,P+b] + T[o,P+b,P+b]`: cross entries (one index
/// per token slot), and diagonal entries (one token alone). Entries with two
/// different indices in the same slot are read by no valid input, yet count
/// in the tensor similarity like any other.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorShares {
    /// `‖T‖²` (all outputs).
    pub norm_squared: f64,
    /// Share on cross entries `(a, P+b)` and `(P+b, a)`.
    pub cross: f64,
    /// Share on diagonal entries `(i, i)`.
    pub diagonal: f64,
    /// Share on same-slot entries `(i, j)`, `i ≠ j`, that no valid input reads.
    pub unread: f64,
}

/// [`TensorShares`] of `params`, from the dense tensor, one output at a time.
pub fn tensor_shares(params: &Params) -> TensorShares {
    let p = params.p();
    let (mut cross, mut diagonal, mut unread) = (0.0, 0.0, 0.0);
    let lt = params.left.transpose();
    for o in 0..p {
        let mut scaled = lt.clone();
        for (r, mut col) in scaled.column_iter_mut().enumerate() {
            col *= params.proj[(o, r)];
        }
        let m = scaled * &params.right;
        for j in 0..2 * p {
            for i in 0..2 * p {
                let t = 0.5 * (m[(i, j)] + m[(j, i)]);
                let t2 = t * t;
                if i == j {
                    diagonal += t2;
                } else if (i < p) == (j < p) {
                    unread += t2;
                } else {
                    cross += t2;
                }
            }
        }
    }
    let norm_squared = cross + diagonal + unread;
    TensorShares {
        norm_squared,
        cross: cross / norm_squared,
        diagonal: diagonal / norm_squared,
        unread: unread / norm_squared,
    }
}

/// The symmetric matrix with unit diagonal whose entries `i < j` are `f(i, j)`.
fn symmetric(n: usize, mut f: impl FnMut(usize, usize) -> Result<f64>) -> Result<DMatrix<f64>> {
    let mut m = DMatrix::identity(n, n);
    for i in 0..n {
        for j in i + 1..n {
            let v = f(i, j)?;
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
    Ok(m)
}
