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
//! {"kind": "linear",   "weight": NAME, "bias": NAME?, "transpose": BOOL?}  // transpose: W is stored [in, out]
//! {"kind": "bilinear", "left": NAME, "right": NAME,      // or "fused": NAME (rows: L then R)
//!                      "down": NAME?, "left_bias": NAME?, "right_bias": NAME?,
//!                      "fused_bias": NAME?, "down_bias": NAME?, "residual": FLOAT?}
//! {"kind": "attention", "q1": NAME, "k1": NAME, "q2": NAME, "k2": NAME, "v": NAME, "o": NAME,
//!                       "q1_bias": NAME?, …, "o_bias": NAME?, "heads": INT,
//!                       "mask": "causal"|"none"|"diag"?, "rotary_base": FLOAT|null?,
//!                       "scale": FLOAT?, "skip": FLOAT?, "score_scale": FLOAT?}
//! ```
//!
//! A layout with an attention block is a sequence model (and so is one
//! marked `"sequence": true`).
//!
//! Without it, the names of four research layouts are recognised: two
//! vector layouts ([`Layout::EmbedBodyHead`], [`Layout::BiLinearProjection`]),
//! with the residual scale of [`LoadOptions`], and two sequence layouts
//! ([`Layout::Transformer`], [`Layout::AttentionLm`]), whose settings come
//! from the run's config (or [`LoadOptions`]), read once and checked
//! against the tensors; every default applied is listed in
//! [`ModelFile::assumptions`]. Tensors may be F64, F32, F16 or BF16
//! (stored row-major, `[out, in]` as PyTorch does); they are computed in
//! `f64`. [The file format guide](crate::guide::format) has the details and a PyTorch snippet.
//!
//! Every failure is an [`Error::File`](crate::Error::File) naming the file,
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

// The public items, each in the module of its idea; this file only
// declares and re-exports (the modules below depend on one another
// without cycles: `raw` and the public types are leaves, the readers
// build on `raw`, `load` and `save` on everything).
mod arch;
mod build;
mod config;
mod dtype;
mod ignored;
mod infer;
mod layout;
mod load;
mod model_file;
mod norm;
mod open;
mod options;
mod pickle;
mod raw;
mod read;
mod safetensors_file;
mod save;
mod spec;
mod torch;
mod write;
mod yaml11;

/// Re-exported here, where files are read; defined with the crate's
/// [`Error`](crate::Error), which wraps it, so that the error type does not
/// depend on `io`.
pub use crate::error::{ConfigHint, FileError, LoadOption};
pub use dtype::Dtype;
pub use layout::Layout;
pub use load::{from_state_dict, load, load_as, load_with, open, open_as};
pub use model_file::{CheckpointSource, IgnoredConfigKey, ModelFile, TensorData, TensorEntry};
pub use norm::{FileNorm, NormPlace, NormReading};
pub use options::{ConfigSource, LoadOptions};
#[allow(deprecated)]
pub use save::save_as;
pub use save::{save, save_with_dtype};
