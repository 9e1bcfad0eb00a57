//! An independent reference for the studies' tests: a checkpoint's weights
//! read straight from the safetensors bytes (the `safetensors` crate, not
//! the library's `io`), and the dense symmetrised end-to-end tensor built
//! from them (not the Gram recursion).

use std::path::Path;

use nalgebra::DMatrix;

/// `L`, `R` and `W` of a `bi_linear` / `projection` checkpoint.
pub fn read_weights(path: &Path) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let matrix = |name: &str| {
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F64, "{name}");
        let values: Vec<f64> = view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let shape = view.shape();
        DMatrix::from_row_slice(shape[0], shape[1], &values)
    };
    let fused = matrix("bi_linear.weight");
    let h = fused.nrows() / 2;
    (
        fused.rows(0, h).into_owned(),
        fused.rows(h, h).into_owned(),
        matrix("projection.weight"),
    )
}

/// The symmetrised end-to-end tensor, one `d × d` matrix per output:
/// `T[o][i, j] = ½ Σ_r W[o,r] (L[r,i] R[r,j] + L[r,j] R[r,i])`. Without
/// biases the entries on the padding's constant are zero, so this is the
/// whole tensor of SPEC §2.
pub fn dense_tensor(path: &Path) -> Vec<DMatrix<f64>> {
    let (l, r, w) = read_weights(path);
    (0..w.nrows())
        .map(|o| {
            let mut scaled = l.transpose();
            for (k, mut col) in scaled.column_iter_mut().enumerate() {
                col *= w[(o, k)];
            }
            let m = scaled * &r;
            (&m + m.transpose()) * 0.5
        })
        .collect()
}

/// `⟨A, B⟩` over the outputs `outputs` (the Frobenius inner product of
/// those slices).
pub fn inner(a: &[DMatrix<f64>], b: &[DMatrix<f64>], outputs: &[usize]) -> f64 {
    outputs.iter().map(|&o| a[o].dot(&b[o])).sum()
}

/// The cosine of two tensors over `outputs`.
pub fn cosine(a: &[DMatrix<f64>], b: &[DMatrix<f64>], outputs: &[usize]) -> f64 {
    inner(a, b, outputs) / (inner(a, a, outputs) * inner(b, b, outputs)).sqrt()
}

/// `a − b`, slice by slice.
pub fn minus(a: &[DMatrix<f64>], b: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}
