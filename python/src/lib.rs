//! The compiled core of the `tensor_similarity` Python package
//! (`tensor_similarity._native`): a thin layer over the `tensor-similarity`
//! crate. Every computation runs in the crate with the GIL released; this
//! layer only converts values and errors. The Python package around it
//! (`python/tensor_similarity/`) turns NumPy arrays, torch tensors and
//! keyword options into what these functions take.
//!
//! Arrays cross as `(bytes, shape)`: the bytes of a C-contiguous `float64`
//! array in native byte order, as `numpy.ndarray.tobytes()` gives them.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tensor_similarity::nalgebra;

mod metric;
mod model;

create_exception!(
    tensor_similarity,
    TensorSimilarityError,
    PyValueError,
    "An error of the tensor-similarity core (a model that cannot be built or \
     read, models that cannot be compared, an invalid option), with its message."
);

/// The Python exception for a crate error: its message, and for a sequence
/// model compared without a context length, how to give one from Python.
fn to_py(e: tensor_similarity::Error) -> PyErr {
    let message = match e {
        tensor_similarity::Error::MissingContext(_) => {
            format!("{e}; from Python: context=N")
        }
        _ => e.to_string(),
    };
    TensorSimilarityError::new_err(message)
}

/// A `TensorSimilarityError` with `message`, for what the bindings check.
fn invalid(message: impl Into<String>) -> PyErr {
    TensorSimilarityError::new_err(message.into())
}

/// A NumPy array as it crosses: C-order `float64` bytes and a shape.
type Array<'py> = (Bound<'py, PyBytes>, Vec<usize>);

/// The values of a `float64` buffer.
fn values(what: &str, bytes: &[u8], shape: &[usize]) -> PyResult<Vec<f64>> {
    let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if len.and_then(|n| n.checked_mul(8)) != Some(bytes.len()) {
        return Err(PyTypeError::new_err(format!(
            "{what}: {} bytes do not hold float64 values of shape {shape:?}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

/// A matrix from a 2-D array (row-major).
fn matrix(what: &str, (bytes, shape): &Array<'_>) -> PyResult<nalgebra::DMatrix<f64>> {
    let [rows, cols] = shape[..] else {
        return Err(invalid(format!(
            "{what}: expected a 2-D array, found shape {shape:?}"
        )));
    };
    let v = values(what, bytes.as_bytes(), shape)?;
    Ok(nalgebra::DMatrix::from_row_slice(rows, cols, &v))
}

/// A vector from a 1-D array.
fn vector(what: &str, (bytes, shape): &Array<'_>) -> PyResult<nalgebra::DVector<f64>> {
    if shape.len() != 1 {
        return Err(invalid(format!(
            "{what}: expected a 1-D array, found shape {shape:?}"
        )));
    }
    Ok(nalgebra::DVector::from_vec(values(
        what,
        bytes.as_bytes(),
        shape,
    )?))
}

/// A matrix's values, row-major, as bytes for `numpy.frombuffer`.
fn to_bytes<'py>(py: Python<'py>, m: &nalgebra::DMatrix<f64>) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(m.len() * 8);
    for row in m.row_iter() {
        for v in row.iter() {
            out.extend_from_slice(&v.to_ne_bytes());
        }
    }
    PyBytes::new(py, &out)
}

/// `tensor_similarity._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add(
        "TensorSimilarityError",
        m.py().get_type::<TensorSimilarityError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::NativeModel>()?;
    m.add_class::<metric::Metric>()?;
    m.add_function(wrap_pyfunction!(model::load, m)?)?;
    m.add_function(wrap_pyfunction!(model::load_many, m)?)?;
    m.add_function(wrap_pyfunction!(model::from_state_dict, m)?)?;
    m.add_function(wrap_pyfunction!(model::save, m)?)?;
    m.add_function(wrap_pyfunction!(metric::similarity, m)?)?;
    m.add_function(wrap_pyfunction!(metric::inner_product, m)?)?;
    m.add_function(wrap_pyfunction!(metric::difference_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(metric::gaussian_is_exact, m)?)?;
    m.add_function(wrap_pyfunction!(metric::squared_norms, m)?)?;
    m.add_function(wrap_pyfunction!(metric::matrix, m)?)?;
    m.add_function(wrap_pyfunction!(metric::tile, m)?)?;
    Ok(())
}
