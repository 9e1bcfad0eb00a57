//! Errors as Python sees them: one exception class per family of
//! [`tensor_similarity::Error`] variants, all under `TensorSimilarityError`
//! (a `ValueError`, as every error of the core has always been raised).
//! The classes are defined in Python (`tensor_similarity/_errors.py`, so
//! that a class can have two bases, `MemoryLimitError` being a
//! `MemoryError` too, and so that they pickle by name); here each variant
//! picks its class.

use pyo3::PyErr;
use pyo3::import_exception;
use tensor_similarity::{Error, ErrorFamily, Spelling};

import_exception!(tensor_similarity._errors, TensorSimilarityError);
import_exception!(tensor_similarity._errors, OptionError);
import_exception!(tensor_similarity._errors, ShapeError);
import_exception!(tensor_similarity._errors, NonFiniteError);
import_exception!(tensor_similarity._errors, IncomparableError);
import_exception!(tensor_similarity._errors, ZeroNormError);
import_exception!(tensor_similarity._errors, NumericalError);
import_exception!(tensor_similarity._errors, MemoryLimitError);
import_exception!(tensor_similarity._errors, FileError);

/// A family of errors: what a caller may want to catch apart from the
/// rest. Each is one Python class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// An option that is invalid, missing or not taken by the metric.
    Option,
    /// An array of the wrong shape.
    Shape,
    /// An array that holds NaN or an infinity.
    NonFinite,
    /// Models that cannot be compared (by this metric).
    Incomparable,
    /// A model with zero norm (or zero output), whose cosine is undefined.
    ZeroNorm,
    /// A computation that became non-finite from finite inputs.
    Numerical,
    /// A comparison that would need more memory than the limit, or than
    /// can exist.
    MemoryLimit,
    /// A model file, or a `state_dict`'s tensors, that cannot be read or
    /// written.
    File,
}

impl Family {
    /// The family of a core error.
    ///
    /// `None` is the base class, `TensorSimilarityError`. The core gives
    /// every variant its family by an exhaustive match
    /// (`Error::family`), and this match over the families is exhaustive
    /// too, so a new variant or family cannot fall through unnoticed.
    pub fn of(e: &Error) -> Option<Self> {
        Some(match e.family() {
            ErrorFamily::Option => Self::Option,
            ErrorFamily::Shape => Self::Shape,
            ErrorFamily::NonFinite => Self::NonFinite,
            // Blocks that do not make a model: Python builds models only
            // from files and state_dicts, where these come wrapped in a
            // `File` or `StateDict` error. Built otherwise, the base class.
            ErrorFamily::Model => return None,
            ErrorFamily::Incomparable => Self::Incomparable,
            ErrorFamily::ZeroNorm => Self::ZeroNorm,
            ErrorFamily::Numerical => Self::Numerical,
            ErrorFamily::MemoryLimit => Self::MemoryLimit,
            ErrorFamily::File => Self::File,
        })
    }

    /// The exception of this family with `message`.
    pub fn err(self, message: impl Into<String>) -> PyErr {
        let message = message.into();
        match self {
            Self::Option => PyErr::new::<OptionError, _>(message),
            Self::Shape => PyErr::new::<ShapeError, _>(message),
            Self::NonFinite => PyErr::new::<NonFiniteError, _>(message),
            Self::Incomparable => PyErr::new::<IncomparableError, _>(message),
            Self::ZeroNorm => PyErr::new::<ZeroNormError, _>(message),
            Self::Numerical => PyErr::new::<NumericalError, _>(message),
            Self::MemoryLimit => PyErr::new::<MemoryLimitError, _>(message),
            Self::File => PyErr::new::<FileError, _>(message),
        }
    }
}

/// The Python exception for a crate error: its family's class, with its
/// message naming options as Python keywords (`heads=`, `config=`,
/// `context=N`; [`Spelling::Python`]).
pub fn to_py(e: Error) -> PyErr {
    let message = e.spelled(Spelling::Python).to_string();
    match Family::of(&e) {
        Some(family) => family.err(message),
        None => PyErr::new::<TensorSimilarityError, _>(message),
    }
}

/// An `OptionError` with `message`, for the options the bindings check.
pub fn invalid(message: impl Into<String>) -> PyErr {
    Family::Option.err(message)
}
