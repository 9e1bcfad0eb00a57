use super::*;

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
