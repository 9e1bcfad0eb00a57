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
    product(alpha, a, false, b, false, beta, c);
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
    product(alpha, a, false, b, true, beta, c);
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
    product(alpha, a, true, b, false, beta, c);
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

/// `dst ← srcᵀ` for a column-major `rows × cols` matrix `src` (so `dst` is
/// column-major `cols × rows`), by 32 × 32 blocks that stay in cache; a
/// naive transpose of a matrix of megabytes misses the cache on every
/// write. Semantically `dst[j + i·cols] = src[i + j·rows]`.
pub(crate) fn transpose_to<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const B: usize = 32;
    assert!(
        src.len() == rows * cols && dst.len() == rows * cols,
        "transpose_to: {} and {} values for {rows} × {cols}",
        src.len(),
        dst.len()
    );
    for j0 in (0..cols).step_by(B) {
        let j1 = (j0 + B).min(cols);
        for i0 in (0..rows).step_by(B) {
            let i1 = (i0 + B).min(rows);
            for j in j0..j1 {
                let column = &src[j * rows..(j + 1) * rows];
                for i in i0..i1 {
                    dst[j + i * cols] = column[i];
                }
            }
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

#[track_caller]
fn product<T, SA, SB, SC>(
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
#[path = "linalg_tests.rs"]
mod tests;
