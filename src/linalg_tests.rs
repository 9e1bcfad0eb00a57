use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};

use super::*;

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
    for (rows, cols) in [(0, 3), (1, 1), (5, 70), (33, 31), (100, 65)] {
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
