//! What can go wrong reading or writing a model file (the `io` module).

use core::fmt;

use super::option::{ConfigHint, LoadOption, Spelling};

/// Why a model file could not be read or written; wrapped with the file's
/// path in [`Error::File`](crate::Error::File). Each variant names the
/// tensor, or the block and role, that is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The operating system could not read or write the file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a safetensors file at all: after the 8-byte header
    /// length there is no JSON header.
    #[error(
        "not a safetensors file: it does not begin with an 8-byte header length and a JSON header (first bytes {start:02x?})"
    )]
    NotSafetensors {
        /// The first bytes of the file (at most 16).
        start: Vec<u8>,
    },
    /// The file is shorter than its header says: cut off, or a header that
    /// declares an absurd size. Nothing of the declared size is allocated.
    #[error("truncated file: the {what} needs {declared} bytes but only {available} remain")]
    Truncated {
        /// The part whose declared size does not fit.
        what: &'static str,
        /// Bytes the header declares.
        declared: u64,
        /// Bytes the file has for it.
        available: u64,
    },
    /// The file changed while it was read (another process wrote to it or
    /// truncated it: its length or modification time differ before and
    /// after); what was read is not used.
    #[error(
        "the file changed while it was read ({before_len} bytes before, {after_len} after); read it again once it is complete"
    )]
    Changed {
        /// The length when the file was opened.
        before_len: u64,
        /// The length after reading.
        after_len: u64,
    },
    /// Not a valid safetensors file: a header that is not JSON, or offsets,
    /// shapes and dtypes that disagree with each other or with the file.
    #[error("not a valid safetensors file: {reason}")]
    Corrupt {
        /// What the safetensors reader found.
        reason: String,
    },
    /// The `tensor_similarity` metadata is not valid JSON or does not follow
    /// the schema of [the file format guide](crate::guide::format).
    #[error("invalid tensor_similarity metadata: {reason}")]
    Metadata {
        /// What is wrong, naming the block and key.
        reason: String,
    },
    /// A run's config (`config.json`, `config.yaml`, or a config given as
    /// content) cannot be read, holds a key this crate does not know or
    /// refuses (a part that is not polynomial), disagrees with the
    /// checkpoint's tensors, or disagrees with an option given.
    #[error("{}", self.spelled(Spelling::Rust))]
    Config {
        /// The config file; empty for a config given as content
        /// ([`ConfigSource::Content`](crate::io::ConfigSource::Content)).
        config: std::path::PathBuf,
        /// What is wrong, naming the key (and the tensor it disagrees with).
        reason: String,
        /// What the message adds that names an option (the option that
        /// disagrees, or the one that settles it), rendered after the
        /// reason as the caller spells it ([`FileError::spelled`]).
        hint: Option<ConfigHint>,
    },
    /// The layout leaves an option to a run's config, and there is none (nor
    /// the option that stands in for it).
    #[error("{}", self.spelled(Spelling::Rust))]
    NeedsConfig {
        /// The layout inferred from the tensor names.
        layout: &'static str,
        /// The missing setting, as the config names it.
        what: &'static str,
        /// The option that can give it instead.
        option: LoadOption,
    },
    /// An option given has a value it cannot take (a rotary base that is
    /// not positive).
    #[error("{}", self.spelled(Spelling::Rust))]
    InvalidOption {
        /// The option.
        option: LoadOption,
        /// What is wrong with its value.
        reason: String,
    },
    /// A normalisation that divides by a statistic of its input (`rmsnorm`,
    /// `layernorm`, `maxrmsnorm`, `causal_maxrmsnorm`, `tok0`, a
    /// `tok0_batch` without its running statistic, a `batchnorm` that does
    /// not track its statistics): not a fixed function, so the model is not
    /// polynomial. [`LoadOption::IgnoreNorms`] reads the model without its
    /// norms, which is another function.
    #[error("{}", self.spelled(Spelling::Rust))]
    InputDependentNorm {
        /// The run config that says it (empty for a config given as
        /// content); `None` where no config was read and the tensors show
        /// the norm.
        config: Option<std::path::PathBuf>,
        /// What says it: the config's key and value
        /// (`model.norm_type is "rmsnorm"`), or the tensors that hold it.
        found: String,
        /// What it divides by.
        why: String,
    },
    /// The file has no `tensor_similarity` metadata and its tensor names fit
    /// no research layout.
    #[error("unknown layout: {reason}")]
    UnknownLayout {
        /// The names expected and those found.
        reason: String,
    },
    /// A tensor that the layout names is not in the file.
    #[error("missing tensor {tensor:?} ({role})")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
        /// The block and role it was wanted for.
        role: String,
    },
    /// The file holds a tensor that the layout does not use; ignoring it
    /// could silently compare a different model.
    #[error("tensor {tensor:?} is not used by the layout ({layout})")]
    UnusedTensor {
        /// The tensor's name.
        tensor: String,
        /// The layout that was read.
        layout: String,
    },
    /// A tensor's shape does not fit its role.
    #[error("tensor {tensor:?} ({role}) has shape {found:?}, expected {expected}")]
    TensorShape {
        /// The tensor's name.
        tensor: String,
        /// The block and role.
        role: String,
        /// The shape it needs, in words (`[*, 5]`: any rows, 5 columns).
        expected: String,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// A weight's dtype is not one of F64, F32, F16, BF16 (an `I64` is read
    /// only as a norm's counter).
    #[error(
        "tensor {tensor:?} has dtype {dtype}; a weight is F64, F32, F16 or BF16 (an integer \
         tensor is read only as a norm's num_batches_tracked)"
    )]
    Dtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor holds NaN or an infinity.
    #[error("tensor {tensor:?} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
        /// Row-major index of the first non-finite entry.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The tensors are well-formed but do not make a valid block (for
    /// example a residual scale on a block whose widths differ).
    #[error("{}", self.spelled(Spelling::Rust))]
    Block {
        /// Position of the block (0-based).
        block: usize,
        /// Why the block was rejected.
        source: Box<crate::Error>,
    },
    /// The blocks, each valid, do not make a model as a whole (an empty
    /// chain); a fault of one block, or between two, is [`FileError::Block`].
    #[error("{}", self.spelled(Spelling::Rust))]
    Model {
        /// Why the chain was rejected.
        source: Box<crate::Error>,
    },
    /// A value the file holds, finite, is beyond the range of the scalar
    /// type the model is read in (an F64 tensor holding `1e300`, read with
    /// `load_as::<f32>`): rounded to it, the value would be infinite.
    #[error(
        "tensor {tensor:?} holds {value} at flat index {index}, beyond the range of {scalar}: non-finite once rounded to {scalar}"
    )]
    OutOfRange {
        /// The tensor's name.
        tensor: String,
        /// Row-major index of the first such value.
        index: usize,
        /// The value, as stored.
        value: f64,
        /// The scalar type (`"f32"`).
        scalar: &'static str,
    },
    /// The chosen layout cannot express the model (on save).
    #[error("the {layout} layout cannot express this model: {reason}")]
    Unsupported {
        /// The layout.
        layout: &'static str,
        /// Which block does not fit, and why.
        reason: String,
    },
    /// A file that starts like a zip archive is not a readable `torch.save`
    /// archive: truncated (no zip directory at its end), compressed or
    /// duplicate entries, no `<name>/data.pkl`, a missing storage entry or
    /// one whose length differs from what the pickle declares, a CRC
    /// mismatch, or a big-endian `byteorder`.
    #[error("not a readable torch.save archive: {reason}")]
    Archive {
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// The `data.pkl` of a `torch.save` archive holds something the
    /// restricted unpickler does not read: a global outside the allowlist
    /// (a whole model saved with `torch.save(model)`, or any other Python
    /// object), an unsupported or unknown opcode, a length or memo index
    /// that does not fit, nesting too deep, or a tensor view that reaches
    /// past its storage. Nothing in the pickle is ever run.
    #[error("data.pkl at byte {offset}: {reason}")]
    Pickle {
        /// Byte offset of the opcode in `data.pkl`.
        offset: u64,
        /// What was found (the opcode or the `module.name` global) and what to do.
        reason: String,
    },
    /// A `torch.save` file's content is readable, but no single flat
    /// state_dict is in it: not a dict, several candidate wrapper keys, none,
    /// or a nested state_dict.
    #[error("{reason}")]
    StateDict {
        /// What was found, naming the keys.
        reason: String,
    },
    /// The legacy `torch.save` format (before PyTorch 1.6, or
    /// `_use_new_zipfile_serialization=False`): a bare pickle stream that
    /// cannot be read without running it.
    #[error(
        "a legacy (pre-1.6) torch.save file: load it in Python and save it again with \
         PyTorch ≥ 1.6 `torch.save(state_dict, path)`, which writes the zip format"
    )]
    LegacyTorch,
    /// A value does not fit the dtype chosen for saving.
    #[error("tensor {tensor:?}: value {value} overflows {dtype}")]
    Overflow {
        /// The tensor's name.
        tensor: String,
        /// The dtype.
        dtype: &'static str,
        /// The value.
        value: f64,
    },
}

impl FileError {
    /// The message with every option it names spelled as `spelling`'s
    /// caller writes it (`--heads` on the command line, `heads=` in
    /// Python); the `Display` of the error is [`Spelling::Rust`].
    ///
    /// ```
    /// use tensor_similarity::io::FileError;
    /// use tensor_similarity::{LoadOption, Spelling};
    /// let e = FileError::NeedsConfig { layout: "attention_lm", what: "the number of heads (n_head)", option: LoadOption::Heads };
    /// assert!(e.to_string().ends_with("LoadOptions::config, or LoadOptions::heads"));
    /// assert!(e.spelled(Spelling::CommandLine).to_string().ends_with("--config FILE, or --heads"));
    /// assert!(e.spelled(Spelling::Python).to_string().ends_with("or heads="));
    /// ```
    pub fn spelled(&self, spelling: Spelling) -> impl fmt::Display + '_ {
        SpelledFile(self, spelling)
    }
}

/// A [`FileError`] with the spelling its options are written in.
struct SpelledFile<'a>(&'a FileError, Spelling);

impl fmt::Display for SpelledFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spelling = self.1;
        match self.0 {
            FileError::Config {
                config,
                reason,
                hint,
            } => {
                if config.as_os_str().is_empty() {
                    write!(f, "config ({}): {reason}", spelling.config_content())?;
                } else {
                    write!(f, "config {}: {reason}", config.display())?;
                }
                match hint {
                    Some(hint) => hint.render(f, spelling),
                    None => Ok(()),
                }
            }
            FileError::NeedsConfig {
                layout,
                what,
                option,
            } => write!(
                f,
                "the {layout} layout needs {what}: give a config.json/config.yaml beside the \
                 checkpoint (or one or two folders up), {}, or {}",
                spelling.config(),
                option.spelled(spelling)
            ),
            FileError::InvalidOption { option, reason } => {
                write!(f, "{}: {reason}", option.spelled(spelling))
            }
            FileError::InputDependentNorm { config, found, why } => {
                match config {
                    Some(c) if c.as_os_str().is_empty() => {
                        write!(f, "config ({}): ", spelling.config_content())?
                    }
                    Some(c) => write!(f, "config {}: ", c.display())?,
                    None => {}
                }
                write!(
                    f,
                    "{found}: {why}, so it is not a fixed function and the model is not \
                 polynomial; {} reads the model without its norms (the similarity of another \
                 function)",
                    LoadOption::IgnoreNorms.spelled(spelling)
                )
            }
            FileError::Block { block, source } => {
                write!(f, "block {block}: {}", source.spelled(spelling))
            }
            FileError::Model { source } => write!(
                f,
                "the blocks do not make a model: {}",
                source.spelled(spelling)
            ),
            other => fmt::Display::fmt(other, f),
        }
    }
}
