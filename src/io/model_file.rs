//! What loading a file gives besides the model: [`ModelFile`] with its
//! [`TensorEntry`] list and [`CheckpointSource`], and [`TensorData`], one
//! tensor of an in-memory `state_dict`.

use std::path::PathBuf;

use crate::io::{Dtype, FileNorm, Layout, NormReading};
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

impl TensorEntry {
    /// The number of values the tensor stores: the product of its shape
    /// (1 for a scalar, such as a norm's energy).
    pub fn value_count(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
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
    /// The model's normalisations, in block order: each folded exactly (a
    /// norm constant at eval) or removed
    /// ([`LoadOptions::ignore_norms`](crate::io::LoadOptions::ignore_norms)).
    /// Any removed means the model read is not the checkpoint's function
    /// ([`ModelFile::norms_removed`]).
    pub norms: Vec<FileNorm>,
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

impl<T: crate::Real> ModelFile<T> {
    /// Whether a norm was removed
    /// ([`LoadOptions::ignore_norms`](crate::io::LoadOptions::ignore_norms)):
    /// the model read is the checkpoint's without its norms, another
    /// function, and every output about it must say so.
    pub fn norms_removed(&self) -> bool {
        (self.norms.iter()).any(|n| n.reading == NormReading::Removed)
    }

    /// The number of parameters of the file: the values its tensors store,
    /// each tensor once, as PyTorch's `sum(p.numel() for p in
    /// model.parameters())` counts them. An absent bias counts nothing; a
    /// tensor that serves two roles (tied weights, quadratic attention's
    /// `q` and `k`) counts once; a norm's buffers (running statistics and
    /// `num_batches_tracked`) are not parameters, its affine weight and
    /// bias are. This is the count the command line's `inspect` prints and
    /// Python's `Model.parameter_count` returns; it differs from
    /// [`Model::parameter_count`] for tied tensors and folded norms.
    pub fn parameter_count(&self) -> usize {
        Self::count(self.tensors.iter())
    }

    /// [`parameter_count`](Self::parameter_count) of block `block`'s
    /// tensors alone (0 for a block index the model does not have).
    pub fn block_parameter_count(&self, block: usize) -> usize {
        Self::count(self.tensors.iter().filter(|t| t.block == block))
    }

    /// The values of `tensors`, each name once.
    fn count<'a>(tensors: impl Iterator<Item = &'a TensorEntry>) -> usize {
        let mut seen = std::collections::HashSet::new();
        /// A norm's buffers: PyTorch's `buffers()`, not `parameters()`.
        const BUFFERS: [&str; 4] = ["energy", "norm_mean", "norm_var", "norm_counter"];
        tensors
            .filter(|t| !BUFFERS.contains(&t.role))
            .filter(|t| seen.insert(t.name.as_str()))
            .fold(0usize, |n, t| n.saturating_add(t.value_count()))
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::TensorData;
    use crate::io::{Dtype, LoadOptions, from_state_dict};

    /// The research embed/body/head names without a single bias.
    fn without_biases() -> HashMap<String, TensorData> {
        let shapes: [(&str, [usize; 2]); 5] = [
            ("embed.weight", [4, 3]),
            ("body.0.l.weight", [5, 4]),
            ("body.0.r.weight", [5, 4]),
            ("body.0.d.weight", [4, 5]),
            ("head.weight", [2, 4]),
        ];
        shapes
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let len = shape[0] * shape[1];
                let values = (0..len)
                    .map(|i| ((i * 7 + k * 3) % 11) as f64 / 11.0 - 0.4)
                    .collect();
                let data = TensorData {
                    dtype: Dtype::F32,
                    shape: shape.to_vec(),
                    values,
                };
                (name.to_owned(), data)
            })
            .collect()
    }

    #[test]
    fn absent_biases_are_not_parameters() {
        let file = from_state_dict(without_biases(), None, &LoadOptions::default()).unwrap();
        // By hand: 4·3 + 5·4 + 5·4 + 4·5 + 2·4, no bias anywhere.
        let by_hand = 12 + 20 + 20 + 20 + 8;
        assert_eq!(file.parameter_count(), by_hand);
        assert_eq!(file.model.parameter_count(), by_hand);
        let per_block: Vec<usize> = (0..file.model.depth())
            .map(|b| file.block_parameter_count(b))
            .collect();
        assert_eq!(per_block, [12, 60, 8]);
        assert_eq!(file.block_parameter_count(3), 0);
        // The weight baseline still lists the absent biases as zeros, to
        // line up two blocks' shapes: 4 + (5 + 5 + 4) + 2 more values.
        let listed: usize = file
            .model
            .blocks()
            .iter()
            .flat_map(|b| b.parameters())
            .map(|p| p.values.len())
            .sum();
        assert_eq!(listed, by_hand + 20);
    }

    #[test]
    fn a_tied_tensor_counts_once() {
        // One [5, 4] tensor as both L and R (a symmetric bilinear block).
        let mut tensors = without_biases();
        tensors.remove("body.0.r.weight");
        let layout = r#"{"version": 1, "blocks": [
            {"kind": "linear", "weight": "embed.weight"},
            {"kind": "bilinear", "left": "body.0.l.weight", "right": "body.0.l.weight",
             "down": "body.0.d.weight"},
            {"kind": "linear", "weight": "head.weight"}]}"#;
        let file = from_state_dict(tensors, Some(layout), &LoadOptions::default()).unwrap();
        assert_eq!(file.parameter_count(), 12 + 20 + 20 + 8);
        assert_eq!(file.block_parameter_count(1), 40);
    }
}
