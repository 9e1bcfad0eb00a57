//! A file's tensors as read, before any layout: named row-major `f64`
//! tensors, the file's metadata, and what a `torch.save` file held beside
//! them; and which format a file's first bytes say it is.
//!
//! Both readers (`safetensors_file` and `torch`) produce a [`RawFile`];
//! this module depends on neither.

use std::collections::HashMap;

use crate::error::FileError;
use crate::io::Dtype;

/// One tensor of a file, converted to `f64`, row-major.
#[derive(Clone, Debug)]
pub(crate) struct RawTensor {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Vec<f64>,
}

impl RawTensor {
    /// The tensor `name`; an error naming it and the first bad index if a
    /// value is NaN or infinite (no computation should see one).
    pub(crate) fn finite(
        name: &str,
        dtype: Dtype,
        shape: Vec<usize>,
        values: Vec<f64>,
    ) -> Result<Self, FileError> {
        match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            Some((index, &value)) => Err(FileError::NonFinite {
                tensor: name.to_owned(),
                index,
                value,
            }),
            None => Ok(Self {
                dtype,
                shape,
                values,
            }),
        }
    }
}

/// A file's tensors by name and its `__metadata__`.
#[derive(Debug)]
pub(crate) struct RawFile {
    pub(crate) tensors: HashMap<String, RawTensor>,
    pub(crate) metadata: HashMap<String, String>,
    /// Where a `torch.save` file's tensors came from; `None` for safetensors.
    pub(crate) torch: Option<TorchInfo>,
}

/// What a `torch.save` file held beside the tensors of its state_dict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TorchInfo {
    /// The wrapper key the state_dict came from; `None`: the top level was
    /// the state_dict.
    pub(crate) key: Option<String>,
    /// The wrapper's integer `"step"` entry, if any.
    pub(crate) step: Option<i64>,
    /// The wrapper's other top-level keys, sorted.
    pub(crate) ignored: Vec<String>,
    /// The state_dict's integer and bool tensors (not weights, so not in
    /// `tensors`) with their dtype (`"I64"`, `"BOOL"`, …), sorted by name.
    pub(crate) other: Vec<(String, &'static str)>,
}

/// The first bytes of the legacy (before PyTorch 1.6) `torch.save` format:
/// pickle protocol 2, then the 10-byte magic number as a `LONG1`.
const LEGACY_TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a";

/// The first bytes of a zip archive (a local file header).
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The kind of a model file, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A `torch.save` zip archive (`PK\x03\x04`).
    TorchZip,
    /// The legacy `torch.save` pickle stream (refused: it cannot be read
    /// without running it).
    LegacyTorch,
    /// Anything else is read as safetensors (whose reader says if it is not).
    Safetensors,
}

impl Format {
    /// The format `bytes` begin with.
    pub(crate) fn sniff(bytes: &[u8]) -> Self {
        if bytes.starts_with(ZIP_MAGIC) {
            Format::TorchZip
        } else if bytes.starts_with(LEGACY_TORCH_MAGIC) {
            Format::LegacyTorch
        } else {
            Format::Safetensors
        }
    }
}
