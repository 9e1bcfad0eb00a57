//! Reading a model file into named `f64` tensors: safetensors here,
//! `torch.save` archives in `torch.rs`, told apart by their first bytes.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{SafeTensorError, SafeTensors};
use serde_json::Value;

use super::{Dtype, FileError};

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

/// The length prefix of a safetensors file: a little-endian `u64` giving
/// the header's size in bytes.
const PREFIX: usize = 8;

/// Reads and checks the file, then converts every tensor. Only a regular
/// file is read (see [`open_regular`](super::open::open_regular)); a
/// directory, FIFO, device or socket is a [`FileError::Io`] saying which.
///
/// The only allocation sized by the file's content is the file itself; a
/// header's declared sizes are checked against the file's length (here, and
/// by the safetensors reader for data offsets) before anything of that size
/// exists, and tensor buffers are at most 4× the file's data section.
///
/// The file is memory-mapped while it is parsed (`memmap2`): no copy of it
/// into the heap (20% of the time of loading a 27 MB checkpoint). It is
/// checked as a buffer was, and a file whose length or modification time
/// differs after parsing is [`FileError::Changed`].
pub(crate) fn read(path: &Path) -> Result<RawFile, FileError> {
    // A device or pipe has no length to check against (and /dev/zero none
    // at all), and opening a FIFO would wait for a writer: regular files
    // only, opened without blocking.
    let (file, before) = super::open::open_regular(path)?;
    if before.len() == 0 {
        // Mapping zero bytes fails on some platforms; an empty file is a
        // truncated one.
        return parse_any(&[]);
    }
    // SAFETY: a read-only map, read only by the checked parsers, which copy
    // what they keep. Should another process write the file meanwhile, the
    // check below catches it; should it truncate it, this process gets
    // SIGBUS, as any reader of a map would.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let parsed = parse_any(&map);
    drop(map);
    unchanged(&before, &file.metadata()?)?;
    parsed
}

/// [`FileError::Changed`] unless the length and modification time agree.
fn unchanged(before: &std::fs::Metadata, after: &std::fs::Metadata) -> Result<(), FileError> {
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        return Err(FileError::Changed {
            before_len: before.len(),
            after_len: after.len(),
        });
    }
    Ok(())
}

/// The bytes of a file of any kind read: a `torch.save` zip archive
/// (`PK\x03\x04`), the legacy `torch.save` format (refused), or safetensors.
pub(crate) fn parse_any(bytes: &[u8]) -> Result<RawFile, FileError> {
    if bytes.starts_with(super::torch::ZIP_MAGIC) {
        super::torch::parse(bytes)
    } else if bytes.starts_with(super::torch::LEGACY_MAGIC) {
        Err(FileError::LegacyTorch)
    } else {
        parse(bytes)
    }
}

/// As [`read`], on the bytes of a safetensors file.
pub(crate) fn parse(bytes: &[u8]) -> Result<RawFile, FileError> {
    let available = bytes.len() as u64;
    let Some(prefix) = bytes.get(..PREFIX) else {
        return Err(FileError::Truncated {
            what: "header length prefix",
            declared: PREFIX as u64,
            available,
        });
    };
    let mut n = [0u8; PREFIX];
    n.copy_from_slice(prefix);
    let declared = u64::from_le_bytes(n);
    // A safetensors header is a JSON object: after the length prefix comes
    // `{` (possibly after spaces). Anything else is another kind of file,
    // whatever length its first 8 bytes happen to spell.
    let opens_json = bytes[PREFIX..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|&b| b == b'{');
    if !opens_json {
        return Err(FileError::NotSafetensors {
            start: bytes[..bytes.len().min(16)].to_vec(),
        });
    }
    if declared > available - PREFIX as u64 {
        return Err(FileError::Truncated {
            what: "header",
            declared,
            available: available - PREFIX as u64,
        });
    }
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e, bytes, declared as usize))?;
    // read_metadata has checked that the data offsets tile the rest of the
    // file exactly and match each shape and dtype; `get` keeps this panic-free.
    let data = bytes.get(PREFIX + header_len..).unwrap_or_default();
    let mut tensors = HashMap::with_capacity(header.tensors().len());
    for (name, info) in header.tensors() {
        let (start, end) = info.data_offsets;
        let raw = data.get(start..end).ok_or_else(|| FileError::Corrupt {
            reason: format!("tensor {name:?} has data offsets outside the file"),
        })?;
        let dtype = match info.dtype {
            safetensors::Dtype::F64 => Dtype::F64,
            safetensors::Dtype::F32 => Dtype::F32,
            safetensors::Dtype::F16 => Dtype::F16,
            safetensors::Dtype::BF16 => Dtype::BF16,
            other => {
                return Err(FileError::Dtype {
                    tensor: name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        let tensor = RawTensor::finite(&name, dtype, info.shape.clone(), decode(dtype, raw))?;
        tensors.insert(name, tensor);
    }
    Ok(RawFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
        torch: None,
    })
}

/// Little-endian `bytes` of `dtype` as `f64`. The safetensors reader has
/// checked that the length is the element count times the element size.
fn decode(dtype: Dtype, bytes: &[u8]) -> Vec<f64> {
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
    match dtype {
        Dtype::F64 => each(bytes, f64::from_le_bytes),
        Dtype::F32 => each(bytes, |b| f32::from_le_bytes(b).into()),
        Dtype::F16 => each(bytes, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::BF16 => each(bytes, |b| half::bf16::from_le_bytes(b).to_f64()),
    }
}

/// The error for what the safetensors reader rejected. A file whose data
/// section is shorter than its header declares is reported as truncated,
/// with both sizes (the header is valid JSON by then, so reading the largest
/// declared offset from it cannot fail in a way that matters).
fn corrupt(e: SafeTensorError, bytes: &[u8], header_len: usize) -> FileError {
    if let SafeTensorError::MetadataIncompleteBuffer = e {
        let available = (bytes.len() - PREFIX - header_len) as u64;
        if let Some(declared) = declared_data_len(bytes.get(PREFIX..PREFIX + header_len))
            && declared > available
        {
            return FileError::Truncated {
                what: "tensor data",
                declared,
                available,
            };
        }
    }
    let reason = match e {
        SafeTensorError::InvalidHeader(e) => format!("the header is not UTF-8 ({e})"),
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            format!("the header is not a safetensors JSON header ({e})")
        }
        SafeTensorError::HeaderTooLarge => "the header is larger than 100 MB".into(),
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "the header length prefix is invalid".into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name:?} has data offsets that overlap or leave gaps")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's data offsets do not match its shape and dtype".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's declared size overflows".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors' data does not end where the file ends (truncated file or trailing bytes)"
                .into()
        }
        other => other.to_string(),
    };
    FileError::Corrupt { reason }
}

/// The largest `data_offsets[1]` in a header: the data length it declares.
fn declared_data_len(header: Option<&[u8]>) -> Option<u64> {
    let value: Value = serde_json::from_slice(header?).ok()?;
    value
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
