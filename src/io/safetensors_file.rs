//! The safetensors format: an 8-byte little-endian header length, a JSON
//! header naming each tensor's dtype, shape and data offsets (and an
//! optional `__metadata__` map of strings), then the tensors' bytes.

use std::collections::HashMap;

use safetensors::{SafeTensorError, SafeTensors};
use serde_json::Value;

use super::raw::{RawFile, RawTensor};
use crate::error::FileError;
use crate::io::Dtype;

/// The length prefix of a safetensors file: a little-endian `u64` giving
/// the header's size in bytes.
const PREFIX: usize = 8;

/// The tensors and metadata of the safetensors file `bytes`, every size
/// checked against `bytes.len()` before anything of that size exists.
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
        let Some(dtype) = Dtype::from_safetensors(info.dtype) else {
            return Err(FileError::Dtype {
                tensor: name,
                dtype: format!("{:?}", info.dtype),
            });
        };
        let tensor = RawTensor::finite(&name, dtype, info.shape.clone(), dtype.decode(raw))?;
        tensors.insert(name, tensor);
    }
    Ok(RawFile {
        tensors,
        metadata: header.metadata().clone().unwrap_or_default(),
        torch: None,
    })
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
