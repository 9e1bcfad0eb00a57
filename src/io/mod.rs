//! Model files: safetensors checkpoints in, models out, and back ([SPEC §5](crate::spec#5-model-files)).
//! PyTorch `torch.save` files (`.pt`, `.pth`, `.bin`) are read too, without
//! running their pickle ([SPEC §8](crate::spec#8-sequence-model-files)):
//! a state_dict, or the one under a checkpoint's `model_state_dict`,
//! `state_dict`, `model`, `module`, `net` or `weights` key
//! ([`ModelFile::checkpoint`] says which).
//!
//! A file's layout is read from `__metadata__["tensor_similarity"]`, a JSON
//! object `{"version": 1, "blocks": [...]}` whose blocks name their tensors
//! by role, so any PyTorch `state_dict` can be described without renaming:
//!
//! ```text
//! {"kind": "linear",   "weight": NAME, "bias": NAME?}
//! {"kind": "bilinear", "left": NAME, "right": NAME,      // or "fused": NAME (rows: L then R)
//!                      "down": NAME?, "left_bias": NAME?, "right_bias": NAME?,
//!                      "fused_bias": NAME?, "down_bias": NAME?, "residual": FLOAT?}
//! ```
//!
//! Without it, the names of two research layouts are recognised
//! ([`Layout::EmbedBodyHead`], [`Layout::BiLinearProjection`]), with the
//! residual scale of [`LoadOptions`]. Tensors may be F64, F32, F16 or BF16
//! (stored row-major, `[out, in]` as PyTorch does); they are computed in
//! `f64`. [The file format guide](crate::guide::format) has the details and a PyTorch snippet.
//!
//! Every failure is an [`Error::File`] naming the file,
//! with a [`FileError`] naming the tensor or role: missing or unused
//! tensors, wrong shapes, unsupported dtypes, non-finite values, truncated
//! or corrupt files, invalid metadata. A header's declared sizes are
//! checked against the file's length before anything of that size is
//! allocated.
//!
//! # Example
//!
//! ```
//! use nalgebra::DMatrix;
//! use tensor_similarity::{io, similarity, Bilinear, Linear, Model};
//!
//! let model = Model::builder()
//!     .block(Bilinear::new(DMatrix::from_fn(4, 3, |i, j| (i + j) as f64), DMatrix::identity(4, 3))?)
//!     .block(Linear::new(DMatrix::from_fn(2, 4, |i, j| (i * j) as f64 - 1.0), None)?)
//!     .build()?;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("model.safetensors");
//! io::save(&model, &path, io::Layout::BiLinearProjection)?;
//! let back = io::load(&path)?;
//! assert!((similarity(&model, &back)? - 1.0).abs() < 1e-12);
//! # Ok::<(), tensor_similarity::Error>(())
//! ```

mod build;
mod config;
mod infer;
mod open;
mod pickle;
mod read;
mod spec;
mod torch;
mod write;
mod yaml11;

/// Re-exported here, where files are read; defined with the crate's
/// [`Error`](crate::Error), which wraps it, so that the error type does not
/// depend on `io`.
pub use crate::error::FileError;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::block::Mask;
use crate::error::{Error, Result};
use crate::model::Model;

/// Where the blocks' tensors are found in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// Described by `__metadata__["tensor_similarity"]`; any chain of linear
    /// and bilinear blocks. [`save`] names the tensors `blocks.{i}.{role}`.
    #[default]
    Described,
    /// `embed.weight`, then `body.{i}.l.weight`, `body.{i}.r.weight`,
    /// `body.{i}.d.weight` for `i = 0, 1, …`, then `head.weight`, each with
    /// an optional `.bias`: a linear embedding, bilinear blocks with down
    /// projections, and a linear head.
    EmbedBodyHead,
    /// `bi_linear.weight` (fused `[L; R]`, `2h × m`) with an optional
    /// `bi_linear.bias`, then `projection.weight` (+ bias): a bilinear
    /// block without down projection, then a linear layer.
    BiLinearProjection,
    /// The research `Transformer` (a sequence model): `embed.weight`, per
    /// layer `i` `body.{i}.attn.{q1,k1,q2,k2,v,o}.weight` (+ `.bias`) and
    /// `body.{i}.mlp.{l,r,d}.weight` (+ `.bias`), then `head.weight`; one `α`
    /// for both, attention with `r = 1 − α`, the MLP with lerp residual
    /// `α`. Heads, mask, `α` and rotary come from the run's config or
    /// [`LoadOptions`].
    Transformer,
    /// The research group's attention-only language model as its training
    /// runs save it (a sequence model): `embed.weight` `[vocab, d]` (a
    /// table), `layers.{i}.{q1,k1,q2,k2}` (bilinear) or `layers.{i}.{q,k}`
    /// (quadratic) `.weight` (+ `.bias`), `layers.{i}.{v,o}.weight`,
    /// `unembed.weight` `[vocab, d]` and an optional
    /// `final_norm.running_mean_energy` folded into the unembedding.
    /// Additive residual, `α = attn_scale`, causal, rotary base `rope_base`,
    /// all from the run's config ([SPEC §8](crate::spec#8-sequence-model-files)).
    AttentionLm,
}

impl Layout {
    /// A short name, as error messages and `inspect` show it.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Described => "tensor_similarity metadata",
            Layout::EmbedBodyHead => "embed/body/head",
            Layout::BiLinearProjection => "bi_linear/projection",
            Layout::Transformer => "research Transformer (embed/body.{i}.attn,mlp/head)",
            Layout::AttentionLm => "attention-only LM (embed/layers.{i}/unembed)",
        }
    }
}

/// How to read files; only files without metadata need options.
///
/// The sequence layouts ([`Layout::Transformer`], [`Layout::AttentionLm`])
/// read their settings from the run's config (`config.json` or
/// `config.yaml` beside the checkpoint, or one or two folders up); these
/// options stand in where no config says, and must agree with it where
/// one does. An option the file's layout does not read is ignored for that
/// file and listed in [`ModelFile::unused_options`].
///
/// ```
/// use tensor_similarity::io::LoadOptions;
/// let options = LoadOptions { heads: Some(4), attn_scale: Some(0.35), ..LoadOptions::default() };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// The residual scale `s` of every bilinear block in a file without
    /// metadata (the research code sets one for the whole model); `None`
    /// means 1, no residual. For [`Layout::Transformer`], its one `α`. A
    /// file with metadata names its own residuals and ignores this.
    pub residual_scale: Option<f64>,
    /// The run config to read, instead of looking beside the checkpoint.
    pub config: Option<PathBuf>,
    /// The number of attention heads, where no config gives `n_head`.
    pub heads: Option<usize>,
    /// The attention mask, where no config gives one (default causal).
    pub mask: Option<Mask>,
    /// The attention scale `α` of [`Layout::AttentionLm`], where no config
    /// gives `attn_scale` (it has no default).
    pub attn_scale: Option<f64>,
}

/// The element type of a stored tensor.
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
}

impl Dtype {
    /// The safetensors name (`"F64"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// The unit roundoff `u`: rounding a finite, in-range `x` to this dtype
    /// changes it by at most `u·|x|`.
    pub fn unit_roundoff(self) -> f64 {
        match self {
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

/// One tensor of a loaded file and the role it plays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// The tensor's name in the file.
    pub name: String,
    /// The block it belongs to (0-based).
    pub block: usize,
    /// Its role in the block (`"weight"`, `"left"`, `"fused_bias"`, …).
    pub role: &'static str,
    /// Its stored element type.
    pub dtype: Dtype,
    /// Its stored shape.
    pub shape: Vec<usize>,
}

/// Where the weights of a `torch.save` file came from: the top level of the
/// file, or one entry of a training-checkpoint dict.
///
/// A checkpoint such as `{"model_state_dict": sd, "optimizer_state_dict":
/// …, "step": 1200}` gives `key: Some("model_state_dict")`, `step:
/// Some(1200)` and `ignored: ["optimizer_state_dict", "step"]`; a bare
/// `state_dict` gives `key: None`, no step and nothing ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointSource {
    /// The wrapper key the state_dict was read from (one of
    /// `model_state_dict`, `state_dict`, `model`, `module`, `net`,
    /// `weights`); `None` when the file's top level is the state_dict.
    pub key: Option<String>,
    /// The wrapper's integer `"step"` entry, if it has one.
    pub step: Option<i64>,
    /// The wrapper's other top-level keys (optimizer state, counters,
    /// configs), sorted: read as data, never as weights.
    pub ignored: Vec<String>,
}

/// A loaded file: the model, the layout it was read with, and its tensors.
/// The model is in `f64` unless read with [`open_as`] in another scalar type.
#[derive(Clone, Debug)]
pub struct ModelFile<T: crate::Real = f64> {
    /// The model.
    pub model: Model<T>,
    /// How the layout was found: [`Layout::Described`] for files with
    /// metadata, otherwise the research layout recognised.
    pub layout: Layout,
    /// Every tensor of the file with its block and role, in block order (a
    /// tensor serving two roles, such as tied weights, is listed for each).
    pub tensors: Vec<TensorEntry>,
    /// The run config the layout was read with, if any.
    pub config: Option<PathBuf>,
    /// The model's native context length (`n_ctx` in its config), if known;
    /// comparisons choose their own with
    /// [`TensorSimilarity::with_context`](crate::TensorSimilarity::with_context).
    pub native_context: Option<usize>,
    /// The defaults applied where neither metadata, config nor options gave
    /// a setting (`"rope_base absent: 10000"`), so that nothing is assumed
    /// silently.
    pub assumptions: Vec<String>,
    /// The [`LoadOptions`] given that this file's layout does not read (by
    /// field name: `"heads"`, `"residual_scale"`, …): metadata names every
    /// setting, and vector layouts have no attention. They are ignored for
    /// this file; the command line refuses an option that no file reads.
    pub unused_options: Vec<&'static str>,
    /// For a `torch.save` file, where its state_dict was found; `None` for
    /// safetensors.
    pub checkpoint: Option<CheckpointSource>,
}

/// The model in the file at `path`, with default [`LoadOptions`].
pub fn load(path: impl AsRef<Path>) -> Result<Model<f64>> {
    load_with(path, &LoadOptions::default())
}

/// The model in the file at `path`.
pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model<f64>> {
    open(path, options).map(|f| f.model)
}

/// The model in the file at `path` in the scalar type `T` (for instance
/// `f32`, for the `f32` compute path): values are read as stored, widened
/// to `f64`, and rounded once to `T`; a value beyond `T`'s range is an
/// error naming its tensor.
///
/// ```no_run
/// let model = tensor_similarity::io::load_as::<f32>("model.safetensors", &Default::default())?;
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn load_as<T: crate::Real>(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Model<T>> {
    open_as(path, options).map(|f| f.model)
}

/// The model in the file at `path`, with its layout and tensors (what
/// `tensor-similarity inspect` shows).
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
    let inner = || finish(&read::read(path)?, path, options);
    inner().map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })
}

/// The layout of a file: its metadata, or the research layout its names fit.
fn layout_of(
    file: &read::RawFile,
    path: &Path,
    options: &LoadOptions,
) -> core::result::Result<infer::Inferred, FileError> {
    match file.metadata.get(spec::KEY) {
        Some(json) => Ok(infer::Inferred {
            layout: Layout::Described,
            spec: spec::from_json(json)?,
            config: None,
            native_context: None,
            assumptions: Vec::new(),
            // Metadata names every setting.
            unused: infer::unused_options(options, &[]),
        }),
        None => infer::infer(&file.tensors, path, options),
    }
}

/// The model of a read file (or state_dict) at `path`.
fn finish<T: crate::Real>(
    file: &read::RawFile,
    path: &Path,
    options: &LoadOptions,
) -> core::result::Result<ModelFile<T>, FileError> {
    let found = layout_of(file, path, options)?;
    check_non_weights(file, &found.spec.blocks, found.layout)?;
    let (model, tensors) = build::build(file, &found.spec, found.layout.name())?;
    Ok(ModelFile {
        model,
        layout: found.layout,
        tensors,
        config: found.config,
        native_context: found.native_context,
        assumptions: found.assumptions,
        unused_options: found.unused,
        checkpoint: file.torch.clone().map(|t| CheckpointSource {
            key: t.key,
            step: t.step,
            ignored: t.ignored,
        }),
    })
}

/// A `torch.save` file's integer and bool tensors are not weights: one the
/// layout names is a dtype error, any other an unused tensor (as every
/// tensor no block uses is).
fn check_non_weights(
    file: &read::RawFile,
    blocks: &[spec::BlockSpec],
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

/// One tensor of an in-memory `state_dict`: its stored dtype, shape, and
/// values in row-major order (as NumPy's C order and PyTorch's contiguous
/// tensors hold them), widened to `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorData {
    /// The dtype the values were stored in (reported by `inspect`-style
    /// listings; the values themselves are already `f64`).
    pub dtype: Dtype,
    /// The shape; `values.len()` must be its product.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: Vec<f64>,
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
            let tensor = read::RawTensor::finite(&name, t.dtype, t.shape, t.values)?;
            raw.insert(name, tensor);
        }
        let metadata = metadata
            .map(|m| HashMap::from([(spec::KEY.to_owned(), m.to_owned())]))
            .unwrap_or_default();
        let file = read::RawFile {
            tensors: raw,
            metadata,
            torch: None,
        };
        finish(&file, Path::new(""), options)
    };
    inner().map_err(|source| Error::StateDict { source })
}

/// Writes `model` to `path` in F64 under `layout`; see [`save_as`].
pub fn save(model: &Model<f64>, path: impl AsRef<Path>, layout: Layout) -> Result<()> {
    save_as(model, path, layout, Dtype::F64)
}

/// Writes `model` to `path` under `layout`, storing values as `dtype`.
///
/// Every layout also writes `__metadata__["tensor_similarity"]` naming the
/// tensors, so that what the research layouts' names cannot say (a residual
/// scale other than 1, which their loaders take from the model's config)
/// survives a round trip: the loader prefers metadata to names. An absent
/// bias is not written; an absent down projection is written as the
/// identity where the layout requires one (`body.{i}.d.weight`).
///
/// An error if the layout cannot express the model (a block kind other than
/// [`Linear`](crate::Linear) and [`Bilinear`](crate::Bilinear), or blocks
/// in an order the research layout does not have), if a value overflows
/// `dtype`, or if the file cannot be written.
pub fn save_as(
    model: &Model<f64>,
    path: impl AsRef<Path>,
    layout: Layout,
    dtype: Dtype,
) -> Result<()> {
    let path = path.as_ref();
    save_inner(model, path, layout, dtype).map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })
}

fn save_inner(
    model: &Model<f64>,
    path: &Path,
    layout: Layout,
    dtype: Dtype,
) -> core::result::Result<(), FileError> {
    let (specs, tensors) = write::tensors(model, layout)?;
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = encode(&name, dtype, &values)?;
            Ok((name, shape, bytes))
        })
        .collect::<core::result::Result<_, FileError>>()?;
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(st_dtype(dtype), shape.clone(), bytes)
                .map_err(|e| FileError::Corrupt {
                    reason: format!("tensor {name:?}: {e}"),
                })?;
            Ok((name.as_str(), view))
        })
        .collect::<core::result::Result<Vec<_>, FileError>>()?;
    let metadata = HashMap::from([(spec::KEY.to_owned(), spec::to_json(&specs))]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| FileError::Corrupt {
        reason: e.to_string(),
    })?;
    std::fs::write(path, bytes)?;
    Ok(())
}

fn st_dtype(dtype: Dtype) -> safetensors::Dtype {
    match dtype {
        Dtype::F64 => safetensors::Dtype::F64,
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F16 => safetensors::Dtype::F16,
        Dtype::BF16 => safetensors::Dtype::BF16,
    }
}

/// Little-endian bytes of `values` rounded to `dtype`; an error if one
/// overflows it.
fn encode(name: &str, dtype: Dtype, values: &[f64]) -> core::result::Result<Vec<u8>, FileError> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for &v in values {
        let back = match dtype {
            Dtype::F64 => {
                out.extend_from_slice(&v.to_le_bytes());
                v
            }
            Dtype::F32 => {
                let x = v as f32;
                out.extend_from_slice(&x.to_le_bytes());
                x.into()
            }
            Dtype::F16 => {
                let x = half::f16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.to_f64()
            }
            Dtype::BF16 => {
                let x = half::bf16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.to_f64()
            }
        };
        if !back.is_finite() {
            return Err(FileError::Overflow {
                tensor: name.to_owned(),
                dtype: dtype.name(),
                value: v,
            });
        }
    }
    Ok(out)
}
