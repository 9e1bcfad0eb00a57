//! The compiled core of the `tensor_similarity` Python package
//! (`tensor_similarity._native`): a thin layer over the `tensor-similarity`
//! crate. Every computation runs in the crate with the GIL released; this
//! layer only converts values and errors. The Python package around it
//! (`python/tensor_similarity/`) turns NumPy arrays, torch tensors and
//! keyword options into what these functions take.
//!
//! Arrays come in read in place ([`array`]); errors go out as one
//! exception class per family ([`errors`]).

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tensor_similarity::nalgebra;

mod array;
mod errors;
mod metric;
mod model;

use array::Array;
use errors::{invalid, to_py};

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
    m.add_function(wrap_pyfunction!(metric::gaussian_all_exact, m)?)?;
    m.add_function(wrap_pyfunction!(metric::monte_carlo_estimate, m)?)?;
    m.add_function(wrap_pyfunction!(metric::monte_carlo_difference, m)?)?;
    m.add_function(wrap_pyfunction!(metric::monte_carlo_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(metric::squared_norms, m)?)?;
    m.add_function(wrap_pyfunction!(metric::matrix, m)?)?;
    m.add_function(wrap_pyfunction!(metric::tile, m)?)?;
    m.add_function(wrap_pyfunction!(metric::heads, m)?)?;
    m.add_function(wrap_pyfunction!(metric::paths, m)?)?;
    m.add_function(wrap_pyfunction!(metric::head_matching, m)?)?;
    Ok(())
}
