//! What a block is, for the code that is not the block's own: its
//! parameters by role and its settings, so that files, `inspect`, the
//! baselines and checks ask the block instead of knowing its type.

use std::borrow::Cow;

use nalgebra::{DMatrix, DVector};

use crate::scalar::Real;

/// One named parameter tensor of a block, for weight-space baselines and
/// file output. Values are column-major; a missing bias is given as zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter<'a, T: Clone> {
    /// What the tensor is (`"weight"`, `"left_bias"`, …).
    pub role: &'static str,
    /// `(rows, columns)`; vectors are `(len, 1)`.
    pub shape: (usize, usize),
    /// The entries, column-major.
    pub values: Cow<'a, [T]>,
}

impl<'a, T: Real> Parameter<'a, T> {
    /// A borrowed matrix parameter.
    pub fn matrix(role: &'static str, m: &'a DMatrix<T>) -> Self {
        Self {
            role,
            shape: m.shape(),
            values: Cow::Borrowed(m.as_slice()),
        }
    }

    /// A borrowed vector parameter, or zeros of length `len` when absent.
    pub fn vector_or_zeros(role: &'static str, v: Option<&'a DVector<T>>, len: usize) -> Self {
        match v {
            Some(v) => Self {
                role,
                shape: (v.len(), 1),
                values: Cow::Borrowed(v.as_slice()),
            },
            None => Self {
                role,
                shape: (len, 1),
                values: Cow::Owned(vec![T::zero(); len]),
            },
        }
    }
}

impl<'a, T: Real> Parameter<'a, T> {
    /// A borrowed vector parameter.
    pub fn vector(role: &'static str, v: &'a DVector<T>) -> Self {
        Self {
            role,
            shape: (v.len(), 1),
            values: Cow::Borrowed(v.as_slice()),
        }
    }

    /// The parameter as a matrix of its shape (a vector as one column).
    pub fn to_matrix(&self) -> DMatrix<T> {
        DMatrix::from_column_slice(self.shape.0, self.shape.1, &self.values)
    }
}

/// One setting of a block: a number that is not a tensor, by name.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    /// A count, such as the number of heads.
    Count(usize),
    /// A real number, such as a residual scale.
    Real(f64),
    /// A real number that may be absent, such as a rotary base.
    Optional(Option<f64>),
    /// A named choice, such as the attention mask (`causal`, …).
    Name(&'static str),
}

/// A block's self-description ([`TensorBlock::describe`](crate::TensorBlock::describe)):
/// its kind, its settings and the parameters it holds by role. Absent
/// optional parameters (a bias a block does not have) are left out, unlike
/// [`TensorBlock::parameters`](crate::TensorBlock::parameters), which lists
/// them as zeros for weight-space baselines.
#[derive(Clone, Debug, PartialEq)]
pub struct Description<'a, T: Clone> {
    /// The block kind, as [`TensorBlock::kind`](crate::TensorBlock::kind).
    pub kind: &'static str,
    /// The settings, in a fixed order.
    pub settings: Vec<(&'static str, Setting)>,
    /// The parameters present, in a fixed order.
    pub parameters: Vec<Parameter<'a, T>>,
}

impl<'a, T: Real> Description<'a, T> {
    /// The parameter of `role`, if present.
    pub fn parameter(&self, role: &str) -> Option<&Parameter<'a, T>> {
        self.parameters.iter().find(|p| p.role == role)
    }

    /// The setting `name`, if the block has it.
    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .find_map(|(n, s)| (*n == name).then_some(s))
    }

    /// The real setting `name` ([`Setting::Real`]), if the block has it.
    pub fn real(&self, name: &str) -> Option<f64> {
        match self.setting(name)? {
            Setting::Real(v) => Some(*v),
            _ => None,
        }
    }
}
