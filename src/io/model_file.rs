//! What loading a file gives besides the model: [`ModelFile`] with its
//! [`TensorEntry`] list and [`CheckpointSource`], and [`TensorData`], one
//! tensor of an in-memory `state_dict`.

use std::path::PathBuf;

use crate::io::{Dtype, Layout};
use crate::model::Model;

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

/// A key of a run config's `"model"` section that cannot change the
/// function at eval (dropout, initialisation, optimiser, schedule, training
/// loop, run environment, logging): read, not used, and listed
/// ([`ModelFile::ignored_config_keys`]) so that nothing is passed over
/// silently. [The file format guide](crate::guide::format) lists the keys.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct IgnoredConfigKey {
    /// The key, as the config spells it (`"attn_dropout"`).
    pub key: String,
    /// Its value (a mapping, for a section such as `optimizer`).
    pub value: serde_json::Value,
    /// Why it cannot change the function at eval, in a few words
    /// (`"dropout: the identity at eval"`).
    pub why: &'static str,
}

/// A loaded file: the model, the layout it was read with, and its tensors.
/// The model is in `f64` unless read with [`open_as`](crate::io::open_as) in another scalar type.
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
    /// The keys of the run config's `"model"` section that cannot change
    /// the function at eval (dropout, `init_*`, optimiser and schedule
    /// keys, …), sorted by key: read and ignored. Empty without a config.
    pub ignored_config_keys: Vec<IgnoredConfigKey>,
    /// The model's native context length (`n_ctx` in its config), if known;
    /// comparisons choose their own with
    /// [`TensorSimilarity::with_context`](crate::TensorSimilarity::with_context).
    pub native_context: Option<usize>,
    /// The defaults applied where neither metadata, config nor options gave
    /// a setting (`"rope_base absent: 10000"`), so that nothing is assumed
    /// silently.
    pub assumptions: Vec<String>,
    /// The [`LoadOptions`](crate::io::LoadOptions) given that this file's layout does not read (by
    /// field name: `"heads"`, `"residual_scale"`, …): metadata names every
    /// setting, and vector layouts have no attention. They are ignored for
    /// this file; the command line refuses an option that no file reads.
    pub unused_options: Vec<&'static str>,
    /// For a `torch.save` file, where its state_dict was found; `None` for
    /// safetensors.
    pub checkpoint: Option<CheckpointSource>,
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
