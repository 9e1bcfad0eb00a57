//! Arrays from Python, read in place: a C-contiguous `float64` or
//! `float32` array (a NumPy array, or anything that exports NumPy's array
//! interface, `__array_interface__`) is read where it lies and copied once,
//! into the `Vec` or the column-major matrix the core takes, widening
//! `float32` on the way.
//!
//! Why the array interface and not the buffer protocol: the wheel is built
//! for the stable ABI from Python 3.9 (`abi3-py39`), which has no buffer
//! API before 3.11 (pyo3's `PyBuffer` needs 3.11 there), and the `numpy`
//! crate would add `ndarray` and its dependencies to read two dtypes.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{Borrowed, intern};
use tensor_similarity::nalgebra::{DMatrix, DVector};

use crate::errors::Family;

/// The element types read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Float {
    F32,
    F64,
}

/// The array interface's name of a native-endian `float32` or `float64`.
const F32: &str = if cfg!(target_endian = "little") {
    "<f4"
} else {
    ">f4"
};
const F64: &str = if cfg!(target_endian = "little") {
    "<f8"
} else {
    ">f8"
};

/// A C-contiguous, aligned, native-endian `float32` or `float64` array,
/// held (so that its memory stays where it is) while it is read.
pub struct Array<'py> {
    /// The object that owns the memory; kept alive by this reference.
    _owner: Bound<'py, PyAny>,
    /// The address of the first element.
    address: usize,
    dtype: Float,
    shape: Vec<usize>,
    len: usize,
}

/// An array's elements, borrowed from the array.
enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Values<'_> {
    fn get(&self, i: usize) -> f64 {
        match self {
            Values::F32(v) => f64::from(v[i]),
            Values::F64(v) => v[i],
        }
    }
}

fn refuse(message: String) -> PyErr {
    PyTypeError::new_err(message)
}

impl<'a, 'py> FromPyObject<'a, 'py> for Array<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let interface = obj
            .getattr(intern!(py, "__array_interface__"))
            .map_err(|_| {
                refuse(format!(
                    "expected a NumPy array, found {}",
                    obj.get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |n| n.to_string())
                ))
            })?;
        let interface = interface.cast::<PyDict>()?;
        let item = |key: &str| -> PyResult<Bound<'py, PyAny>> {
            interface
                .get_item(key)?
                .ok_or_else(|| refuse(format!("__array_interface__ has no {key:?}")))
        };
        let typestr: String = item("typestr")?.extract()?;
        let dtype = match typestr.as_str() {
            F64 => Float::F64,
            F32 => Float::F32,
            _ => {
                return Err(refuse(format!(
                    "expected a native-endian float64 or float32 array, found typestr {typestr:?}"
                )));
            }
        };
        if !item("strides")?.is_none() {
            return Err(refuse("expected a C-contiguous array".into()));
        }
        let shape: Vec<usize> = item("shape")?.extract()?;
        let (address, _read_only): (usize, bool) = item("data")?.extract()?;
        let len = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| refuse(format!("an array of shape {shape:?} cannot exist")))?;
        let align = match dtype {
            Float::F32 => align_of::<f32>(),
            Float::F64 => align_of::<f64>(),
        };
        if len > 0 && (address == 0 || address % align != 0) {
            return Err(refuse(format!(
                "expected an aligned array, found its data at {address:#x}"
            )));
        }
        Ok(Self {
            _owner: obj.to_owned(),
            address,
            dtype,
            shape,
            len,
        })
    }
}

impl Array<'_> {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, in row-major order, where they lie.
    fn values(&self) -> Values<'_> {
        if self.len == 0 {
            return match self.dtype {
                Float::F32 => Values::F32(&[]),
                Float::F64 => Values::F64(&[]),
            };
        }
        // SAFETY: the array interface promises `len` elements of `dtype`
        // at `address` (checked non-null, aligned and C-contiguous when
        // extracted) for as long as the exporting object lives and is not
        // resized; `_owner` keeps it alive for the borrow of `self`, and
        // the GIL, held for the lifetime `'py`, keeps Python code from
        // resizing it meanwhile.
        unsafe {
            match self.dtype {
                Float::F32 => Values::F32(std::slice::from_raw_parts(
                    self.address as *const f32,
                    self.len,
                )),
                Float::F64 => Values::F64(std::slice::from_raw_parts(
                    self.address as *const f64,
                    self.len,
                )),
            }
        }
    }

    /// The elements as `f64`, row-major: the one copy.
    pub fn to_vec(&self) -> Vec<f64> {
        match self.values() {
            Values::F64(v) => v.to_vec(),
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// A 2-D array as a (column-major) matrix: the one copy.
    pub fn to_matrix(&self, what: &str) -> PyResult<DMatrix<f64>> {
        let [rows, cols] = self.shape[..] else {
            return Err(Family::Shape.err(format!(
                "{what}: expected a 2-D array, found shape {:?}",
                self.shape
            )));
        };
        let v = self.values();
        Ok(DMatrix::from_fn(rows, cols, |i, j| v.get(i * cols + j)))
    }

    /// A 1-D array as a vector: the one copy.
    pub fn to_vector(&self, what: &str) -> PyResult<DVector<f64>> {
        if self.shape.len() != 1 {
            return Err(Family::Shape.err(format!(
                "{what}: expected a 1-D array, found shape {:?}",
                self.shape
            )));
        }
        Ok(DVector::from_vec(self.to_vec()))
    }
}
