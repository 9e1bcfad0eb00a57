//! `torch.save` files (`.pt`, `.pth`, `.bin`; [SPEC §8](crate::spec#8-sequence-model-files)):
//! a zip archive of a pickle (`{prefix}/data.pkl`) and one entry per
//! storage (`{prefix}/data/{key}`), read without running the pickle.
//!
//! The pickle goes through the restricted interpreter of `pickle.rs`, which
//! builds plain data and strided tensor views of storages. The state_dict
//! is the top-level dict if it holds only tensors, or else the one dict of
//! tensors under [`WRAPPER_KEYS`]; its floating-point tensors are gathered
//! into row-major `f64` [`RawTensor`]s, its integer and bool tensors are
//! listed apart (they are not weights), and the wrapper's other entries
//! (optimizer state, step counters) are named and skipped.
//!
//! Sizes are never taken on trust: each entry's declared sizes are checked
//! against the archive's length before it is read, each storage's entry
//! must be exactly as long as its persistent id says, and each view is
//! checked (in overflow-checked arithmetic) to lie inside its storage
//! before anything is gathered.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::pickle::{self, Unpickled, Value, View};
use super::raw::{RawFile, RawTensor, TorchInfo};
use crate::error::{CLIPPED, FileError, LISTED, clipped, listed};
use crate::io::Dtype;

/// The keys of a checkpoint wrapper under which a state_dict is looked for.
pub(crate) const WRAPPER_KEYS: [&str; 6] = [
    "model_state_dict",
    "state_dict",
    "model",
    "module",
    "net",
    "weights",
];

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

fn archive_error(reason: impl Into<String>) -> FileError {
    FileError::Archive {
        reason: reason.into(),
    }
}

fn state_dict_error(reason: impl Into<String>) -> FileError {
    FileError::StateDict {
        reason: reason.into(),
    }
}

/// Reads a `torch.save` zip archive; see the module docs.
pub(crate) fn parse(bytes: &[u8]) -> Result<RawFile, FileError> {
    let mut zip = ZipArchive::new(Cursor::new(bytes)).map_err(|e| match e {
        ZipError::InvalidArchive(why) => archive_error(format!(
            "not a complete zip archive ({why}): the file is truncated or corrupt \
             (a torch.save archive ends with its zip directory)"
        )),
        other => archive_error(other.to_string()),
    })?;
    if zip.has_duplicate_names() {
        return Err(archive_error("two entries have the same name"));
    }
    let names = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| archive_error(format!("an entry name is unreadable ({e})")))?;
    let prefix = prefix(&names)?;

    let byteorder = format!("{prefix}/byteorder");
    if names.contains(&byteorder) {
        let order = read_entry(&mut zip, &byteorder, bytes.len())?;
        match order.as_slice() {
            b"little" => {}
            b"big" => {
                return Err(archive_error(
                    "the archive was written on a big-endian machine (byteorder \"big\"); \
                     only little-endian archives are read: load and re-save it with torch.save \
                     on a little-endian machine",
                ));
            }
            other => {
                return Err(archive_error(format!(
                    "unknown byteorder {:?}",
                    String::from_utf8_lossy(other.get(..other.len().min(16)).unwrap_or_default())
                )));
            }
        }
    }

    let pkl = read_entry(&mut zip, &format!("{prefix}/data.pkl"), bytes.len())?;
    let file = pickle::load(&pkl)?;
    for s in &file.storages {
        let name = format!("{prefix}/data/{}", s.key);
        let declared = entry_sizes(&mut zip, &name)?.0;
        // numel × element size was checked not to overflow by the pickle reader.
        let expected = s.numel.saturating_mul(s.kind.size);
        if u64::try_from(expected).ok() != Some(declared) {
            return Err(archive_error(format!(
                "storage {:?} is a {} of {} elements ({expected} bytes) in data.pkl, but its \
                 entry {name:?} holds {declared} bytes",
                s.key, s.kind.class, s.numel
            )));
        }
    }

    let (entries, mut info) = state_dict(&file)?;
    let mut tensors = HashMap::with_capacity(entries.len());
    let mut data: HashMap<usize, Vec<u8>> = HashMap::new();
    // Views may share storages (tied weights); bound what gathering them
    // allocates by the file's own length all the same.
    let limit = bytes.len().saturating_mul(2).saturating_add(64);
    let mut total: usize = 0;
    for (name, tid) in entries {
        let view = file
            .tensors
            .get(tid)
            .ok_or_else(|| state_dict_error(format!("tensor {name:?} is not a tensor view")))?;
        let storage = file
            .storages
            .get(view.storage)
            .ok_or_else(|| state_dict_error(format!("tensor {name:?} has no storage")))?;
        let Some(dtype) = Dtype::from_name(storage.kind.dtype) else {
            info.other.push((name, storage.kind.dtype));
            continue;
        };
        total = total.saturating_add(view.numel);
        if total > limit {
            return Err(state_dict_error(format!(
                "the state_dict's tensors hold more than {limit} elements in all, over twice \
                 the file's {} bytes (many views of shared storages)",
                bytes.len()
            )));
        }
        let raw = match data.entry(view.storage) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let entry = format!("{prefix}/data/{}", storage.key);
                e.insert(read_entry(&mut zip, &entry, bytes.len())?)
            }
        };
        let values = gather(view, raw, dtype).ok_or_else(|| {
            archive_error(format!("tensor {name:?} reads past the end of its storage"))
        })?;
        let tensor = RawTensor::finite(&name, dtype, view.shape.clone(), values)?;
        tensors.insert(name, tensor);
    }
    info.other.sort_unstable();
    Ok(RawFile {
        tensors,
        metadata: HashMap::new(),
        torch: Some(info),
    })
}

/// The archive's prefix: `P` of the single entry `P/data.pkl`.
fn prefix(names: &[String]) -> Result<String, FileError> {
    let pickles: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("/data.pkl"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .collect();
    match pickles.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(archive_error(format!(
            "a zip archive without a `<name>/data.pkl` entry, so not a torch.save file \
             (entries: {})",
            shown(names)
        ))),
        many => Err(archive_error(format!(
            "several `data.pkl` entries ({}): not a single torch.save archive",
            shown(
                &many
                    .iter()
                    .map(|p| format!("{p}/data.pkl"))
                    .collect::<Vec<_>>()
            )
        ))),
    }
}

/// The first few names, quoted, and how many more.
fn shown(names: &[String]) -> String {
    listed(names.iter().map(|n| format!("{n:?}")), LISTED)
}

/// An entry's declared (uncompressed, stored) sizes.
fn entry_sizes(zip: &mut Archive<'_>, name: &str) -> Result<(u64, u64), FileError> {
    let index = zip
        .index_for_name(name)
        .ok_or_else(|| archive_error(format!("the entry {name:?} is missing")))?;
    let entry = zip
        .by_index_data(index)
        .map_err(|e| archive_error(format!("entry {name:?}: {e}")))?;
    Ok((entry.size(), entry.compressed_size()))
}

/// An entry's bytes, after checking its declared sizes against the
/// archive's length `limit` (the zip reader verifies its CRC).
fn read_entry(zip: &mut Archive<'_>, name: &str, limit: usize) -> Result<Vec<u8>, FileError> {
    let (size, packed) = entry_sizes(zip, name)?;
    let available = u64::try_from(limit).unwrap_or(u64::MAX);
    if size.max(packed) > available {
        return Err(FileError::Truncated {
            what: "zip entry",
            declared: size.max(packed),
            available,
        });
    }
    let mut file = zip.by_name(name).map_err(|e| match e {
        ZipError::UnsupportedArchive(_) | ZipError::CompressionMethodNotSupported(_) => {
            archive_error(format!(
                "entry {name:?} is compressed ({e}); torch.save stores entries uncompressed"
            ))
        }
        other => archive_error(format!("entry {name:?}: {other}")),
    })?;
    let capacity = usize::try_from(size).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    file.read_to_end(&mut out)
        .map_err(|e| archive_error(format!("entry {name:?} cannot be read ({e})")))?;
    if u64::try_from(out.len()).ok() != Some(size) {
        return Err(archive_error(format!(
            "entry {name:?} holds {} bytes but declares {size}",
            out.len()
        )));
    }
    Ok(out)
}

/// The elements of `view`, row-major, from its storage's bytes; `None` if
/// one lies outside them (which the view and entry-size checks exclude).
fn gather(view: &View, raw: &[u8], dtype: Dtype) -> Option<Vec<f64>> {
    fn at<const N: usize>(raw: &[u8], i: usize) -> Option<[u8; N]> {
        let start = i.checked_mul(N)?;
        raw.get(start..start.checked_add(N)?)?.try_into().ok()
    }
    let element = |i: usize| -> Option<f64> {
        Some(match dtype {
            Dtype::F64 => f64::from_le_bytes(at(raw, i)?),
            Dtype::F32 => f32::from_le_bytes(at(raw, i)?).into(),
            Dtype::F16 => half::f16::from_le_bytes(at(raw, i)?).to_f64(),
            Dtype::BF16 => half::bf16::from_le_bytes(at(raw, i)?).to_f64(),
            Dtype::I64 => i64::from_le_bytes(at(raw, i)?) as f64,
        })
    };
    let mut out = Vec::with_capacity(view.numel);
    if view.numel == 0 {
        return Some(out);
    }
    // An odometer over the row-major index; `pos` = offset + Σ idx_d·stride_d.
    let mut idx = vec![0usize; view.shape.len()];
    let mut pos = view.offset;
    loop {
        out.push(element(pos)?);
        let mut d = view.shape.len();
        loop {
            if d == 0 {
                return Some(out);
            }
            d -= 1;
            let (i, &n, &st) = (idx.get_mut(d)?, view.shape.get(d)?, view.stride.get(d)?);
            *i += 1;
            if *i < n {
                pos = pos.checked_add(st)?;
                break;
            }
            // Back to the start of this dimension.
            pos = pos.checked_sub((n - 1).checked_mul(st)?)?;
            *i = 0;
        }
    }
}

/// Why a dict is not a flat dict of tensors.
enum NotTensors {
    /// A value is itself a dict (the key is named).
    Nested(String),
    /// Anything else, in words.
    Other(String),
}

/// The dict's entries as `(name, tensor)` if it holds only tensors under
/// string keys; a repeated key keeps its last value, as in Python.
fn tensor_dict(entries: &[(Value, Value)]) -> Result<Vec<(String, usize)>, NotTensors> {
    let mut out: Vec<(String, usize)> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut nested = None;
    for (k, v) in entries {
        match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => match index.get(&**name) {
                Some(&i) => {
                    if let Some(slot) = out.get_mut(i) {
                        slot.1 = *t;
                    }
                }
                None => {
                    index.insert(name.to_string(), out.len());
                    out.push((name.to_string(), *t));
                }
            },
            (k, Value::Tensor(_)) => {
                return Err(NotTensors::Other(format!(
                    "a tensor's key is {}, not a string",
                    k.describe()
                )));
            }
            (k, Value::Dict(_)) => {
                nested.get_or_insert_with(|| k.key_text());
            }
            (k, other) => {
                return Err(NotTensors::Other(format!(
                    "its entry {:?} is {}, not a tensor",
                    clipped(&k.key_text(), CLIPPED),
                    other.describe()
                )));
            }
        }
    }
    match nested {
        Some(key) => Err(NotTensors::Nested(key)),
        None => Ok(out),
    }
}

/// The state_dict of the unpickled file, and where it came from.
fn state_dict(file: &Unpickled) -> Result<(Vec<(String, usize)>, TorchInfo), FileError> {
    let Value::Dict(root) = file.root else {
        return Err(state_dict_error(format!(
            "the file holds {}, not a dict: a state_dict (a dict of tensors), or a checkpoint \
             dict holding one, is expected; save it with `torch.save(model.state_dict(), path)`",
            file.root.describe()
        )));
    };
    let top = file.dict(root);
    let top_nested = match tensor_dict(top) {
        Ok(sd) => return Ok((sd, TorchInfo::default())),
        Err(NotTensors::Nested(key)) => top
            .iter()
            .any(|(_, v)| matches!(v, Value::Tensor(_)))
            .then_some(key),
        Err(NotTensors::Other(_)) => None,
    };

    let lookup = |key: &str| {
        top.iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
            .map(|(_, v)| v)
    };
    let mut found = Vec::new();
    let mut nested = Vec::new();
    let mut why = Vec::new();
    for key in WRAPPER_KEYS {
        match lookup(key) {
            None => {}
            Some(Value::Dict(id)) => match tensor_dict(file.dict(*id)) {
                Ok(sd) => found.push((key, sd)),
                Err(NotTensors::Nested(inner)) => nested.push((key, inner)),
                Err(NotTensors::Other(w)) => why.push(format!("{key:?}: {w}")),
            },
            Some(other) => why.push(format!("{key:?} holds {}", other.describe())),
        }
    }
    if found.len() + nested.len() > 1 {
        let keys = found
            .iter()
            .map(|(k, _)| format!("{k:?}"))
            .chain(nested.iter().map(|(k, _)| format!("{k:?}")));
        return Err(state_dict_error(format!(
            "several entries could be the state_dict ({}); none is chosen: save one of them \
             alone, or a dict with only one of the keys {WRAPPER_KEYS:?}",
            listed(keys, LISTED)
        )));
    }
    if let Some((key, inner)) = nested.first() {
        return Err(nested_error(Some(key), inner));
    }
    let mut keys: Vec<String> = top.iter().map(|(k, _)| k.key_text()).collect();
    keys.sort_unstable();
    keys.dedup();
    let Some((key, sd)) = found.pop() else {
        if let Some(inner) = top_nested {
            return Err(nested_error(None, &inner));
        }
        let mut reason = format!(
            "no state_dict found: the top-level dict has the keys [{}], and a state_dict (a \
             dict of tensors) is looked for at the top level or under one of {WRAPPER_KEYS:?}",
            listed(keys.iter().map(|k| format!("{k:?}")), LISTED)
        );
        if !why.is_empty() {
            // One entry per wrapper key looked at (six at most).
            reason.push_str(&format!(" ({})", why.join("; ")));
        }
        return Err(state_dict_error(reason));
    };
    let step = match lookup("step") {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    };
    keys.retain(|k| k != key);
    Ok((
        sd,
        TorchInfo {
            key: Some(key.to_owned()),
            step,
            ignored: keys,
            other: Vec::new(),
        },
    ))
}

fn nested_error(key: Option<&str>, inner: &str) -> FileError {
    let place = match key {
        Some(key) => format!("the state_dict under {key:?}"),
        None => "the top-level state_dict".to_owned(),
    };
    state_dict_error(format!(
        "{place} is nested: its entry {:?} is a dict, not a tensor; a state_dict is flat \
         (`model.state_dict()` names every tensor `layer.sub.weight`)",
        clipped(inner, CLIPPED)
    ))
}
