//! The GEMM engine: `C ← α A B + β C` on nalgebra matrices and views, by
//! faer for `f32` and `f64` (any other [`Real`]: nalgebra's `gemm`).
//!
//! A view's pointer, shape and strides become a `faer::MatRef`/`MatMut` of
//! the same memory, so nothing is copied; a transposed operand swaps its
//! strides. Every product is sequential ([`Par::Seq`]): the crate runs
//! products and pairs in parallel one level up. Shapes are the callers'
//! to get right: a mismatch is a bug in the crate and panics.

use core::any::TypeId;

use faer::{Accum, MatMut, MatRef, Par};
use nalgebra::{Dyn, Matrix, Storage, StorageMut};

use nalgebra::DMatrix;

use crate::error::{Error, Result};
use crate::scalar::{Real, from_f64, to_f64};
use crate::validate::{check_finite, check_square, check_symmetric};

/// The parallelism of every product (see the module's docs).
const PAR: Par = Par::Seq;

/// `c ← α a b + β c`. With `β = 0`, `c` is overwritten (its old entries,
/// NaN included, are never read).
///
/// Semantically the same as nalgebra's `c.gemm(alpha, a, b, beta)`.
#[track_caller]
pub(crate) fn gemm<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
    SC: StorageMut<T, Dyn, Dyn>,
{
    gemm_op(alpha, a, false, b, false, beta, c);
}

/// `c ← α a bᵀ + β c`, reading `b` in place through swapped strides.
#[track_caller]
pub(crate) fn gemm_nt<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
    SC: StorageMut<T, Dyn, Dyn>,
{
    gemm_op(alpha, a, false, b, true, beta, c);
}

/// `c ← α aᵀ b + β c`, reading `a` in place through swapped strides.
#[track_caller]
pub(crate) fn gemm_tn<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
    SC: StorageMut<T, Dyn, Dyn>,
{
    gemm_op(alpha, a, true, b, false, beta, c);
}

/// `a b` (or with `bᵀ`) as a new matrix: the allocating form.
#[track_caller]
pub(crate) fn mul<T, SA, SB>(
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
) -> nalgebra::DMatrix<T>
where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
{
    let mut c = nalgebra::DMatrix::zeros(a.nrows(), b.ncols());
    gemm(T::one(), a, b, T::zero(), &mut c);
    c
}

/// `a bᵀ` as a new matrix (through a copy of `bᵀ`).
#[track_caller]
pub(crate) fn mul_nt<T, SA, SB>(
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
) -> nalgebra::DMatrix<T>
where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
{
    // faer reads a unit-row-stride right operand up to 2× faster.
    mul(a, &b.transpose())
}

/// `aᵀ b` as a new matrix.
#[track_caller]
pub(crate) fn mul_tn<T, SA, SB>(
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
) -> nalgebra::DMatrix<T>
where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
{
    let mut c = nalgebra::DMatrix::zeros(a.ncols(), b.ncols());
    gemm_tn(T::one(), a, b, T::zero(), &mut c);
    c
}

/// `y[i, :] += bᵀ` for every row `i`: a bias added at every position (or
/// sample) of a batched forward pass.
pub(crate) fn add_to_rows<T, S>(y: &mut nalgebra::DMatrix<T>, b: &Matrix<T, Dyn, nalgebra::U1, S>)
where
    T: Real,
    S: Storage<T, Dyn, nalgebra::U1>,
{
    assert_eq!(y.ncols(), b.nrows(), "a bias of the row width");
    for (mut column, &v) in y.column_iter_mut().zip(b.iter()) {
        column.add_scalar_mut(v);
    }
}

/// `dst ← srcᵀ` for a column-major `rows × cols` matrix `src` (so `dst` is
/// column-major `cols × rows`). Semantically `dst[j + i·cols] = src[i + j·rows]`.
///
/// Why this shape: a naive transpose of a matrix of megabytes misses the
/// cache on every write, and a blocked one whose writes stride by a power
/// of two (`cols = 2048`) maps a block's writes onto a few cache sets
/// (0.13·10⁹ elements/s measured). So blocks of 128 × 128 are walked as
/// 8 × 8 tiles held in registers: eight contiguous reads of `src`, eight
/// contiguous writes of `dst` (1.1–1.7·10⁹ `f32`/s at the kernel's shapes).
pub(crate) fn transpose_to<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const BLOCK: usize = 128;
    assert!(
        src.len() == rows * cols && dst.len() == rows * cols,
        "transpose_to: {} and {} values for {rows} × {cols}",
        src.len(),
        dst.len()
    );
    for i0 in (0..rows).step_by(BLOCK) {
        let i1 = (i0 + BLOCK).min(rows);
        for j0 in (0..cols).step_by(BLOCK) {
            let j1 = (j0 + BLOCK).min(cols);
            transpose_block(src, rows, (i0, j0), (i1 - i0, j1 - j0), dst, cols, (j0, i0));
        }
    }
}

/// `dst[r0 + c, c0 + i] = src[row + i, col + c]` for `i < rows`, `c < cols`:
/// the transpose of a `rows × cols` block of a column-major matrix with
/// leading dimension `ls` into a block of another with leading dimension
/// `ld`. By 8 × 8 tiles held in registers, so that reads and writes are
/// eight contiguous values each ([`transpose_to`] walks its blocks so).
#[inline(always)]
pub(crate) fn transpose_block<T: Copy>(
    src: &[T],
    ls: usize,
    (row, col): (usize, usize),
    (rows, cols): (usize, usize),
    dst: &mut [T],
    ld: usize,
    (r0, c0): (usize, usize),
) {
    const K: usize = 8;
    let (whole_rows, whole_cols) = (rows - rows % K, cols - cols % K);
    for i in (0..whole_rows).step_by(K) {
        for c in (0..whole_cols).step_by(K) {
            let mut tile = [[src[0]; K]; K];
            for (k, column) in tile.iter_mut().enumerate() {
                let at = (col + c + k) * ls + row + i;
                column.copy_from_slice(&src[at..at + K]);
            }
            for r in 0..K {
                let at = (c0 + i + r) * ld + r0 + c;
                for (out, column) in dst[at..at + K].iter_mut().zip(&tile) {
                    *out = column[r];
                }
            }
        }
    }
    // The edges: the columns past the last whole tile, then the rows.
    for i in 0..whole_rows {
        for c in whole_cols..cols {
            dst[(c0 + i) * ld + r0 + c] = src[(col + c) * ls + row + i];
        }
    }
    for i in whole_rows..rows {
        for c in 0..cols {
            dst[(c0 + i) * ld + r0 + c] = src[(col + c) * ls + row + i];
        }
    }
}

/// A matrix operand as faer sees it: pointer, shape, strides (in elements),
/// transposed on request by swapping them.
#[derive(Clone, Copy)]
struct Operand<T> {
    ptr: *const T,
    shape: (usize, usize),
    strides: (isize, isize),
}

impl<T: Real> Operand<T> {
    fn of<S: Storage<T, Dyn, Dyn>>(m: &Matrix<T, Dyn, Dyn, S>, transpose: bool) -> Self {
        let (rs, cs) = m.strides();
        // A nalgebra allocation never exceeds isize::MAX bytes, so neither
        // does a stride in elements.
        let strides = (rs as isize, cs as isize);
        let (shape, strides) = if transpose {
            ((m.ncols(), m.nrows()), (strides.1, strides.0))
        } else {
            (m.shape(), strides)
        };
        Self {
            ptr: m.data.ptr(),
            shape,
            strides,
        }
    }

    /// # Safety
    ///
    /// `self` describes live memory of `U`s (`U` is `T`, by `TypeId`) that
    /// nothing writes for `'a`.
    unsafe fn faer<'a, U>(self) -> MatRef<'a, U> {
        unsafe {
            MatRef::from_raw_parts(
                self.ptr.cast::<U>(),
                self.shape.0,
                self.shape.1,
                self.strides.0,
                self.strides.1,
            )
        }
    }
}

/// `c ← α op(a) op(b) + β c`, `op(x)` being `xᵀ` where its flag is set
/// (read in place through swapped strides): the one product the others
/// name.
#[track_caller]
pub(crate) fn gemm_op<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    ta: bool,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: bool,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
    SC: StorageMut<T, Dyn, Dyn>,
{
    let (oa, ob) = (Operand::of(a, ta), Operand::of(b, tb));
    assert!(
        oa.shape.0 == c.nrows() && oa.shape.1 == ob.shape.0 && ob.shape.1 == c.ncols(),
        "gemm: {:?} × {:?} into {:?}",
        oa.shape,
        ob.shape,
        c.shape()
    );
    if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: T is f64; a and b are borrowed shared and c exclusively
        // for the whole call, so the operands are live and c aliases
        // neither.
        unsafe { faer_product::<T, f64, _>(alpha, oa, ob, beta, c) }
    } else if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: as above, with T = f32.
        unsafe { faer_product::<T, f32, _>(alpha, oa, ob, beta, c) }
    } else {
        fallback(alpha, a, ta, b, tb, beta, c);
    }
}

/// The product by faer, for `U = T` (`f32` or `f64`).
///
/// # Safety
///
/// `T` and `U` are the same type; `a`, `b` describe live memory that `c`
/// does not overlap.
unsafe fn faer_product<T, U, SC>(
    alpha: T,
    a: Operand<T>,
    b: Operand<T>,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    U: faer::traits::ComplexField + Copy + 'static,
    SC: StorageMut<T, Dyn, Dyn>,
{
    let (m, n) = c.shape();
    if m == 0 || n == 0 {
        return;
    }
    let accum = if beta == T::zero() {
        Accum::Replace
    } else {
        if beta != T::one() {
            c.scale_mut(beta);
        }
        Accum::Add
    };
    let (rs, cs) = c.strides();
    let ptr = c.data.ptr_mut().cast::<U>();
    // SAFETY: the caller's guarantees, and c's pointer, shape and strides
    // describe its own memory, borrowed exclusively.
    unsafe {
        let dst = MatMut::<U>::from_raw_parts_mut(ptr, m, n, rs as isize, cs as isize);
        let alpha = *(&alpha as *const T).cast::<U>();
        faer::linalg::matmul::matmul(dst, accum, a.faer::<U>(), b.faer::<U>(), alpha, PAR);
    }
}

/// nalgebra's `gemm` for a [`Real`] other than `f32` and `f64`.
fn fallback<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    ta: bool,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: bool,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Real,
    SA: Storage<T, Dyn, Dyn>,
    SB: Storage<T, Dyn, Dyn>,
    SC: StorageMut<T, Dyn, Dyn>,
{
    let copy = |m: &Matrix<T, Dyn, Dyn, SA>| m.map(|v| v);
    let a = if ta { copy(a).transpose() } else { copy(a) };
    let b = b.map(|v| v);
    let b = if tb { b.transpose() } else { b };
    if beta == T::zero() {
        c.fill(T::zero());
    }
    c.gemm(alpha, &a, &b, beta);
}

/// A factor `F` with `F Fᵀ = Σ` (`F = V Λ^{1/2}` from the eigendecomposition,
/// so that a singular `Σ` works); an error unless `Σ` is square, finite,
/// symmetric and positive semidefinite up to rounding.
pub(crate) fn covariance_factor<T: Real>(covariance: &DMatrix<T>) -> Result<DMatrix<T>> {
    let what = "input covariance";
    check_square(what, covariance)?;
    check_finite(what, covariance)?;
    let r = covariance.nrows();
    let scale = covariance.amax();
    let tolerance = scale * T::default_epsilon() * from_f64(64.0 * r as f64);
    check_symmetric(what, covariance, tolerance)?;
    let symmetric = (covariance + covariance.transpose()) * from_f64::<T>(0.5);
    let eigen = symmetric.symmetric_eigen();
    let mut factor = eigen.eigenvectors;
    for (i, &lambda) in eigen.eigenvalues.iter().enumerate() {
        if lambda < -tolerance {
            return Err(Error::InvalidOption {
                what,
                reason: format!(
                    "not positive semidefinite: eigenvalue {:.6e}",
                    to_f64(lambda)
                ),
            });
        }
        let root = lambda.max(T::zero()).sqrt();
        factor.column_mut(i).scale_mut(root);
    }
    Ok(factor)
}

#[cfg(test)]
mod tests {
    use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};

    use super::*;

    #[test]
    fn transpose_block_matches_the_definition() {
        let (ls, ld) = (23, 19);
        let src: Vec<f64> = (0..ls * 21).map(|v| v as f64).collect();
        for (rows, cols) in [(16, 8), (9, 17), (3, 2), (8, 8), (0, 5)] {
            let (row, col, r0, c0) = (4, 2, 1, 1);
            let mut dst = vec![-1.0; ld * 20];
            transpose_block(&src, ls, (row, col), (rows, cols), &mut dst, ld, (r0, c0));
            let mut want = vec![-1.0; ld * 20];
            for i in 0..rows {
                for c in 0..cols {
                    want[(c0 + i) * ld + r0 + c] = src[(col + c) * ls + row + i];
                }
            }
            assert_eq!(dst, want, "{rows} × {cols}");
        }
    }

    /// `α A B + β C` by the triple loop, in f64.
    fn naive(
        alpha: f64,
        a: &DMatrix<f64>,
        b: &DMatrix<f64>,
        beta: f64,
        c: &DMatrix<f64>,
    ) -> DMatrix<f64> {
        DMatrix::from_fn(a.nrows(), b.ncols(), |i, j| {
            let mut s = 0.0;
            for k in 0..a.ncols() {
                s += a[(i, k)] * b[(k, j)];
            }
            alpha * s + beta * c[(i, j)]
        })
    }

    fn filled(rows: usize, cols: usize, seed: usize) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            let x = (seed * 7919 + i * 104_729 + j * 1_299_709) % 10_007;
            x as f64 / 10_007.0 - 0.5
        })
    }

    fn close<T: Real>(got: &DMatrix<T>, want: &DMatrix<f64>, k: usize, eps: f64) {
        let got = got.map(|v| v.to_f64());
        let err = (&got - want).amax();
        assert!(
            err <= eps * (k as f64 + 1.0) * (1.0 + want.amax()),
            "error {err:e} for {}×{} (k = {k})",
            want.nrows(),
            want.ncols()
        );
    }

    /// Every variant on odd shapes, every β kind, both engine types and the
    /// fallback's, against the triple loop.
    fn check<T: Real>(eps: f64) {
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (17, 1, 9),
            (33, 65, 31),
            (130, 7, 66),
            (0, 4, 3),
            (4, 0, 3),
        ];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            let (a, b, c0) = (filled(m, k, s), filled(k, n, s + 10), filled(m, n, s + 20));
            let cast = |x: &DMatrix<f64>| x.map(T::from_f64_lossy);
            for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (-0.75, 0.5), (2.0, 1.0)] {
                let want = naive(alpha, &a, &b, beta, &c0);
                let (al, be) = (T::from_f64_lossy(alpha), T::from_f64_lossy(beta));
                let mut c = cast(&c0);
                gemm(al, &cast(&a), &cast(&b), be, &mut c);
                close(&c, &want, k, eps);
                let mut c = cast(&c0);
                gemm_nt(al, &cast(&a), &cast(&b.transpose()), be, &mut c);
                close(&c, &want, k, eps);
                let mut c = cast(&c0);
                gemm_tn(al, &cast(&a.transpose()), &cast(&b), be, &mut c);
                close(&c, &want, k, eps);
            }
            // β = 0 never reads C: NaN there does not leak.
            let mut c = DMatrix::from_element(m, n, T::from_f64_lossy(f64::NAN));
            gemm(T::one(), &cast(&a), &cast(&b), T::zero(), &mut c);
            close(&c, &naive(1.0, &a, &b, 0.0, &c0), k, eps);
            assert_eq!(mul(&cast(&a), &cast(&b)).shape(), (m, n));
            close(
                &mul_nt(&cast(&a), &cast(&b.transpose())),
                &want_ab(&a, &b),
                k,
                eps,
            );
        }
    }

    fn want_ab(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
        naive(1.0, a, b, 0.0, &DMatrix::zeros(a.nrows(), b.ncols()))
    }

    #[test]
    fn f64_matches_naive() {
        check::<f64>(1e-15);
    }

    #[test]
    fn f32_matches_naive() {
        check::<f32>(1e-7);
    }

    /// Strided views in and out: sub-blocks of larger matrices, a
    /// transposed view built from strides, a strided destination that must
    /// leave its neighbours alone.
    #[test]
    fn strided_views() {
        let big_a = filled(40, 50, 1);
        let big_b = filled(60, 30, 2);
        let a = big_a.view((3, 5), (21, 17));
        let b = big_b.view((7, 2), (17, 13));
        let want = a.clone_owned() * b.clone_owned();
        // A transposed view of b's transpose, by strides: (bᵀ)ᵀ.
        let bt = b.transpose();
        let b_by_strides = DMatrixView::from_slice_with_strides_generic(
            bt.as_slice(),
            Dyn(17),
            Dyn(13),
            Dyn(bt.nrows()),
            Dyn(1),
        );
        let mut big_c = filled(30, 40, 3);
        let before = big_c.clone();
        {
            let mut c = big_c.view_mut((4, 6), (21, 13));
            gemm(1.0, &a, &b_by_strides, 0.0, &mut c);
        }
        close(
            &big_c.view((4, 6), (21, 13)).clone_owned(),
            &want,
            17,
            1e-15,
        );
        for j in 0..40 {
            for i in 0..30 {
                if !(4..25).contains(&i) || !(6..19).contains(&j) {
                    assert_eq!(big_c[(i, j)], before[(i, j)], "({i}, {j}) was written");
                }
            }
        }
        // A destination with a row stride (a transposed view of a buffer).
        let mut buf = vec![0.0; 13 * 21];
        let mut ct = DMatrixViewMut::from_slice_with_strides_generic(
            &mut buf,
            Dyn(21),
            Dyn(13),
            Dyn(13),
            Dyn(1),
        );
        gemm_nt(1.0, &a, &bt, 0.0, &mut ct);
        close(&ct.clone_owned(), &want, 17, 1e-15);
    }

    #[test]
    fn blocked_transpose() {
        for (rows, cols) in [
            (0, 3),
            (1, 1),
            (5, 70),
            (33, 31),
            (100, 65),
            (8, 16),
            (130, 257),
            (264, 9),
        ] {
            let m = filled(rows, cols, rows + cols);
            let mut t = vec![0.0; rows * cols];
            transpose_to(m.as_slice(), rows, cols, &mut t);
            assert_eq!(DMatrix::from_vec(cols, rows, t), m.transpose());
        }
    }

    /// nalgebra's product, for a `Real` that is neither f32 nor f64.
    #[test]
    fn fallback_matches_naive() {
        let (a, b, c0) = (filled(5, 4, 1), filled(4, 3, 2), filled(5, 3, 3));
        let mut c = c0.clone();
        fallback(0.5, &a, false, &b.transpose(), true, 2.0, &mut c);
        close(&c, &naive(0.5, &a, &b, 2.0, &c0), 4, 1e-15);
        let mut c = DMatrix::from_element(5, 3, f64::NAN);
        fallback(1.0, &a.transpose(), true, &b, false, 0.0, &mut c);
        close(&c, &want_ab(&a, &b), 4, 1e-15);
    }

    #[test]
    fn covariance_factor_accepts_singular_and_rejects_indefinite() {
        let singular = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0]);
        let f = covariance_factor(&singular).unwrap();
        assert!((&f * f.transpose() - &singular).amax() < 1e-12);
        let indefinite = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(matches!(
            covariance_factor(&indefinite),
            Err(Error::InvalidOption { .. })
        ));
        let asymmetric = DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.0, 1.0]);
        assert!(covariance_factor(&asymmetric).is_err());
    }
}
