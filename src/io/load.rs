//! Loading a model: a file (safetensors or `torch.save`) or an in-memory
//! `state_dict`, through its layout and architecture, to a checked model.

use std::collections::HashMap;
use std::path::Path;

use super::arch::Architecture;
use super::infer::{self, Names};
use super::raw::{RawFile, RawTensor};
use super::spec::{self, BlockSpec, LayoutSpec};
use super::{build, read};
use crate::error::{Error, FileError, Result};
use crate::io::{CheckpointSource, Layout, LoadOptions, ModelFile, TensorData};
use crate::model::Model;

/// The model in the file at `path` (safetensors or `torch.save`), in
/// `f64`, with default [`LoadOptions`]: a file with metadata, or one of the
/// vector research layouts. Every failure is an [`Error::File`] naming the
/// file.
pub fn load(path: impl AsRef<Path>) -> Result<Model<f64>> {
    load_with(path, &LoadOptions::default())
}

/// The model in the file at `path`, in `f64`, with `options` standing in
/// for what the file's run config does not give (heads, residual scale, …).
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model<f64>> {
    open(path, options).map(|f| f.model)
}

/// The model in the file at `path` in the scalar type `T` (for instance
/// `f32`, for the `f32` compute path): values are read as stored, widened
/// to `f64`, and rounded once to `T`; a value beyond `T`'s range is
/// [`FileError::OutOfRange`], naming its tensor. The `T` is the scalar type
/// the model is computed in, not a storage dtype (that is
/// [`save_with_dtype`](crate::io::save_with_dtype)'s).
///
/// ```no_run
/// let model = tensor_similarity::io::load_as::<f32>("model.safetensors", &Default::default())?;
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn load_as<T: crate::Real>(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model<T>> {
    open_as(path, options).map(|f| f.model)
}

/// The model in the file at `path` with what was learnt reading it: its
/// layout, tensors, run config, native context, the defaults assumed and
/// the options left unused (what `tensor-similarity inspect` shows).
pub fn open(path: impl AsRef<Path>, options: &LoadOptions) -> Result<ModelFile> {
    open_as(path, options)
}

/// As [`open`], with the model in the scalar type `T` (each value rounded
/// once from what the file stores, as [`load_as`] does).
pub fn open_as<T: crate::Real>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<ModelFile<T>> {
    let path = path.as_ref();
    let inner = || finish(read::read(path)?, path, options);
    inner().map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })
}

/// The architecture and block layout of a file: its metadata, or the
/// research layout its names fit with its run's config resolved.
fn layout_of(
    file: &RawFile,
    path: &Path,
    options: &LoadOptions,
) -> core::result::Result<(Architecture, LayoutSpec), FileError> {
    match file.metadata.get(spec::KEY) {
        Some(json) => {
            let spec = spec::from_json(json)?;
            Ok((
                Architecture::resolve(Layout::Described, path, options)?,
                spec,
            ))
        }
        None => {
            let names = Names(&file.tensors);
            let mut arch = Architecture::resolve(infer::detect(&names)?, path, options)?;
            let spec = infer::layout_spec(&names, &mut arch)?;
            Ok((arch, spec))
        }
    }
}

/// The model of a read file (or state_dict) at `path`.
fn finish<T: crate::Real>(
    mut file: RawFile,
    path: &Path,
    options: &LoadOptions,
) -> core::result::Result<ModelFile<T>, FileError> {
    let stripped = strip_framework_prefixes(&mut file)?;
    let file = &file;
    let (mut arch, layout) = layout_of(file, path, options)?;
    if !stripped.is_empty() {
        arch.assumptions.insert(
            0,
            format!(
                "tensor names under the framework prefix {:?} (DistributedDataParallel's \
                 module., torch.compile's _orig_mod.): read without it",
                stripped.concat()
            ),
        );
    }
    check_non_weights(file, &layout.blocks, arch.layout)?;
    let built = build::build(file, &layout, arch.layout.name())?;
    let mut assumptions = std::mem::take(&mut arch.assumptions);
    assumptions.extend(built.assumptions);
    Ok(ModelFile {
        model: built.model,
        layout: arch.layout,
        tensors: built.tensors,
        norms: built.norms,
        native_context: arch.native_context(),
        config: arch.config.and_then(super::config::Origin::into_path),
        ignored_config_keys: arch.ignored_config_keys,
        assumptions,
        unused_options: arch.unused_options,
        checkpoint: file.torch.clone().map(|t| CheckpointSource {
            key: t.key,
            step: t.step,
            ignored: t.ignored,
        }),
    })
}

/// The prefixes trainers leave on every name of a state_dict:
/// `module.` (`DistributedDataParallel`) and `_orig_mod.` (`torch.compile`).
const FRAMEWORK_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// Strips the framework prefixes that every tensor name of a file without
/// metadata shares, outermost first and nested in any order, and returns
/// them. An error if some names carry one and others do not: a mixed
/// state_dict, whose two halves the layout could not tell apart.
fn strip_framework_prefixes(
    file: &mut RawFile,
) -> core::result::Result<Vec<&'static str>, FileError> {
    let mut stripped = Vec::new();
    if file.metadata.contains_key(spec::KEY) || file.tensors.is_empty() {
        return Ok(stripped);
    }
    while let Some(prefix) = FRAMEWORK_PREFIXES
        .into_iter()
        .find(|p| file.tensors.keys().any(|name| name.starts_with(p)))
    {
        let (with, without): (Vec<&String>, Vec<&String>) = file
            .tensors
            .keys()
            .partition(|name| name.starts_with(prefix));
        if let (Some(a), Some(b)) = (with.iter().min(), without.iter().min()) {
            return Err(FileError::UnknownLayout {
                reason: format!(
                    "a mixed state_dict: {} names under the framework prefix {prefix:?} (such as \
                     {a:?}) and {} without it (such as {b:?}); save one model's state_dict",
                    with.len(),
                    without.len()
                ),
            });
        }
        file.tensors = std::mem::take(&mut file.tensors)
            .into_iter()
            .map(|(name, tensor)| (name[prefix.len()..].to_owned(), tensor))
            .collect();
        stripped.push(prefix);
    }
    Ok(stripped)
}

/// A `torch.save` file's integer and bool tensors are not weights: one the
/// layout names is a dtype error, any other an unused tensor (as every
/// tensor no block uses is).
fn check_non_weights(
    file: &RawFile,
    blocks: &[BlockSpec],
    layout: Layout,
) -> core::result::Result<(), FileError> {
    let other = file.torch.as_ref().map_or(&[][..], |t| &t.other[..]);
    let named = |name: &str| {
        blocks
            .iter()
            .any(|b| b.tensors().iter().any(|&(_, t)| t == name))
    };
    if let Some((name, dtype)) = other.iter().find(|(name, _)| named(name)) {
        return Err(FileError::Dtype {
            tensor: name.clone(),
            dtype: (*dtype).to_owned(),
        });
    }
    match other.first() {
        Some((name, _)) => Err(FileError::UnusedTensor {
            tensor: name.clone(),
            layout: layout.name().to_owned(),
        }),
        None => Ok(()),
    }
}

/// A model from tensors held in memory, as a `state_dict` maps names to
/// tensors (what the Python bindings pass): the layout is `metadata` (the
/// JSON of `__metadata__["tensor_similarity"]`) or, without it, inferred
/// from the names exactly as for a file. A run config can only be given
/// through [`LoadOptions::config`] (there is no folder to look in).
///
/// Errors are [`Error::StateDict`]: a shape whose product is not the
/// number of values, a non-finite value, and everything a file's tensors
/// can get wrong.
///
/// ```
/// use std::collections::HashMap;
/// use tensor_similarity::io::{self, Dtype, LoadOptions, TensorData};
///
/// let t = |shape: &[usize], values: Vec<f64>| TensorData { dtype: Dtype::F32, shape: shape.to_vec(), values };
/// let tensors = HashMap::from([
///     ("bi_linear.weight".to_owned(), t(&[4, 2], vec![1.0, 0.5, -1.0, 2.0, 0.25, 1.0, 3.0, -0.5])),
///     ("projection.weight".to_owned(), t(&[1, 2], vec![1.0, -1.0])),
/// ]);
/// let file = io::from_state_dict(tensors, None, &LoadOptions::default())?;
/// assert_eq!(file.layout, io::Layout::BiLinearProjection);
/// assert_eq!(file.model.input_width(), 2);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn from_state_dict(
    tensors: HashMap<String, TensorData>,
    metadata: Option<&str>,
    options: &LoadOptions,
) -> Result<ModelFile> {
    let inner = || -> core::result::Result<ModelFile, FileError> {
        let mut raw = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            let len = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if len != Some(t.values.len()) {
                return Err(FileError::TensorShape {
                    tensor: name,
                    role: "state_dict entry".into(),
                    expected: format!("{} values for its shape", t.values.len()),
                    found: t.shape,
                });
            }
            let tensor = RawTensor::finite(&name, t.dtype, t.shape, t.values)?;
            raw.insert(name, tensor);
        }
        let metadata = metadata
            .map(|m| HashMap::from([(spec::KEY.to_owned(), m.to_owned())]))
            .unwrap_or_default();
        let file = RawFile {
            tensors: raw,
            metadata,
            torch: None,
        };
        finish(file, Path::new(""), options)
    };
    inner().map_err(|source| Error::StateDict { source })
}
