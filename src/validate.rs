//! Checks of user data shared by the blocks, the metrics and the baselines:
//! shapes, squareness, symmetry and finiteness, each an [`Error`] naming
//! what is wrong.

use nalgebra::{DMatrix, DVector};

use crate::error::{Error, Result};
use crate::scalar::{Real, to_f64};

/// An error unless `m` has the `expected` shape.
pub fn check_shape<T: Real>(what: &str, m: &DMatrix<T>, expected: (usize, usize)) -> Result<()> {
    if m.shape() != expected {
        return Err(Error::Shape {
            what: what.to_owned(),
            expected,
            found: m.shape(),
        });
    }
    Ok(())
}

/// An error unless `m` is square and non-empty.
pub fn check_square<T: Real>(what: &'static str, m: &DMatrix<T>) -> Result<()> {
    let (r, c) = m.shape();
    if r != c || r == 0 {
        return Err(Error::InvalidOption {
            what,
            reason: format!("must be square and non-empty, found {r}×{c}"),
        });
    }
    Ok(())
}

/// An error naming the first pair `(i, j)` with `|m_ij − m_ji| > tolerance`.
pub fn check_symmetric<T: Real>(what: &'static str, m: &DMatrix<T>, tolerance: T) -> Result<()> {
    for j in 0..m.ncols() {
        for i in j + 1..m.nrows() {
            if (m[(i, j)] - m[(j, i)]).abs() > tolerance {
                return Err(Error::InvalidOption {
                    what,
                    reason: format!(
                        "not symmetric at ({i}, {j}): {} vs {}",
                        to_f64(m[(i, j)]),
                        to_f64(m[(j, i)])
                    ),
                });
            }
        }
    }
    Ok(())
}

pub fn check_len<T: Real>(what: &str, v: &DVector<T>, expected: usize) -> Result<()> {
    if v.len() != expected {
        return Err(Error::Shape {
            what: what.to_owned(),
            expected: (expected, 1),
            found: (v.len(), 1),
        });
    }
    Ok(())
}

/// An error unless `m` has `width` columns: a batch of inputs, one per row.
pub fn check_rows<T: Real>(what: &str, m: &DMatrix<T>, width: usize) -> Result<()> {
    if m.ncols() != width {
        return Err(Error::Shape {
            what: format!("{what} (one position per row)"),
            expected: (m.nrows(), width),
            found: m.shape(),
        });
    }
    Ok(())
}

/// An error naming the first NaN or infinity in `m`.
pub fn check_finite<
    T: Real,
    R: nalgebra::Dim,
    C: nalgebra::Dim,
    S: nalgebra::RawStorage<T, R, C>,
>(
    what: &str,
    m: &nalgebra::Matrix<T, R, C, S>,
) -> Result<()> {
    for c in 0..m.ncols() {
        for r in 0..m.nrows() {
            let v = m[(r, c)];
            if !v.is_finite() {
                return Err(Error::NonFinite {
                    what: what.to_owned(),
                    row: r,
                    col: c,
                    value: to_f64(v),
                });
            }
        }
    }
    Ok(())
}
