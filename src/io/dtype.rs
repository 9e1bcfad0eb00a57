//! [`Dtype`]: the element types a model file stores.

/// The element type of a stored tensor: what a file holds
/// ([`TensorEntry::dtype`](crate::io::TensorEntry::dtype)) and what
/// [`save_with_dtype`](crate::io::save_with_dtype) writes. Every value is
/// computed in `f64` (or the scalar type of
/// [`load_as`](crate::io::load_as)) whatever its dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE binary64.
    F64,
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (11-bit significand, relative precision `2⁻¹¹`).
    F16,
    /// bfloat16 (8-bit significand, relative precision `2⁻⁸`).
    BF16,
    /// A 64-bit signed integer (PyTorch's `long`): read only as a norm's
    /// counter (`num_batches_tracked`), never as a weight, and never
    /// written.
    I64,
}

impl Dtype {
    /// The safetensors name (`"F64"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I64 => "I64",
        }
    }

    /// Whether the dtype is a float type (one a weight may have).
    pub fn is_float(self) -> bool {
        self != Dtype::I64
    }

    /// The unit roundoff `u`: rounding a finite, in-range `x` to this dtype
    /// changes it by at most `u·|x|` (0 for an integer, which stores what
    /// it holds exactly).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Dtype::I64 => 0.0,
            Dtype::F64 => f64::EPSILON / 2.0,
            Dtype::F32 => f32::EPSILON as f64 / 2.0,
            Dtype::F16 => 2f64.powi(-11),
            Dtype::BF16 => 2f64.powi(-8),
        }
    }
}

impl core::fmt::Display for Dtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl Dtype {
    /// The safetensors dtype of the same name.
    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F64 => safetensors::Dtype::F64,
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::BF16 => safetensors::Dtype::BF16,
            Dtype::I64 => safetensors::Dtype::I64,
        }
    }

    /// The dtype of a safetensors tensor, if it is a float type this crate
    /// reads (or an integer, for counters).
    pub(crate) fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        match dtype {
            safetensors::Dtype::F64 => Some(Dtype::F64),
            safetensors::Dtype::F32 => Some(Dtype::F32),
            safetensors::Dtype::F16 => Some(Dtype::F16),
            safetensors::Dtype::BF16 => Some(Dtype::BF16),
            safetensors::Dtype::I64 => Some(Dtype::I64),
            _ => None,
        }
    }

    /// The dtype of a `torch.save` storage, by the name the pickle reader
    /// gives it (`"F32"`, …), if it is a float type this crate reads.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "F64" => Some(Dtype::F64),
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "I64" => Some(Dtype::I64),
            _ => None,
        }
    }

    /// Little-endian `bytes` of this dtype as `f64`; a trailing partial
    /// element is ignored (callers have checked the length).
    pub(crate) fn decode(self, bytes: &[u8]) -> Vec<f64> {
        fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
            bytes
                .chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        match self {
            Dtype::F64 => each(bytes, f64::from_le_bytes),
            Dtype::F32 => each(bytes, |b| f32::from_le_bytes(b).into()),
            Dtype::F16 => each(bytes, |b| half::f16::from_le_bytes(b).to_f64()),
            Dtype::BF16 => each(bytes, |b| half::bf16::from_le_bytes(b).to_f64()),
            // A counter: exact below 2⁵³, which no count of batches reaches.
            Dtype::I64 => each(bytes, |b| i64::from_le_bytes(b) as f64),
        }
    }
}
