//! Options named in errors: [`LoadOption`], one per field of
//! [`LoadOptions`](crate::io::LoadOptions), and [`Spelling`], how the
//! caller writes them (a Rust field, a command-line flag, a Python
//! keyword), so that an error tells each caller what to type.
//!
//! An error that names an option holds it typed; its `Display` spells it
//! for Rust, and [`Error::spelled`](crate::Error::spelled) for another
//! caller. Nothing here depends on `io` (the error type is a leaf).

use core::fmt;

/// A setting given when reading a file: one field of
/// [`LoadOptions`](crate::io::LoadOptions), typed, so that an error can
/// name it as its caller spells it ([`LoadOption::spelled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadOption {
    /// [`LoadOptions::residual_scale`](crate::io::LoadOptions::residual_scale): `--residual-scale`, `residual_scale=`.
    ResidualScale,
    /// [`LoadOptions::skip`](crate::io::LoadOptions::skip): `--skip`, `skip=`.
    Skip,
    /// [`LoadOptions::config`](crate::io::LoadOptions::config): `--config`, `config=`.
    Config,
    /// [`LoadOptions::heads`](crate::io::LoadOptions::heads): `--heads`, `heads=`.
    Heads,
    /// [`LoadOptions::mask`](crate::io::LoadOptions::mask): `--mask`, `mask=`.
    Mask,
    /// [`LoadOptions::attn_scale`](crate::io::LoadOptions::attn_scale): `--attn-scale`, `attn_scale=`.
    AttnScale,
    /// [`LoadOptions::rope_base`](crate::io::LoadOptions::rope_base): `--rope-base`, `rope_base=`.
    RopeBase,
    /// [`LoadOptions::ignore_norms`](crate::io::LoadOptions::ignore_norms): `--ignore-norms`, `ignore_norms=`.
    IgnoreNorms,
}

impl LoadOption {
    /// Every option, in the order of [`LoadOptions`](crate::io::LoadOptions)' fields.
    pub const ALL: [LoadOption; 8] = [
        LoadOption::ResidualScale,
        LoadOption::Skip,
        LoadOption::Config,
        LoadOption::Heads,
        LoadOption::Mask,
        LoadOption::AttnScale,
        LoadOption::RopeBase,
        LoadOption::IgnoreNorms,
    ];

    /// The field of [`LoadOptions`](crate::io::LoadOptions), which is also
    /// the Python keyword without its `=` (`"attn_scale"`).
    pub fn field(self) -> &'static str {
        match self {
            LoadOption::ResidualScale => "residual_scale",
            LoadOption::Skip => "skip",
            LoadOption::Config => "config",
            LoadOption::Heads => "heads",
            LoadOption::Mask => "mask",
            LoadOption::AttnScale => "attn_scale",
            LoadOption::RopeBase => "rope_base",
            LoadOption::IgnoreNorms => "ignore_norms",
        }
    }

    /// The option of that field name, if there is one.
    ///
    /// ```
    /// use tensor_similarity::LoadOption;
    /// assert_eq!(LoadOption::from_field("rope_base"), Some(LoadOption::RopeBase));
    /// assert_eq!(LoadOption::from_field("rope-base"), None);
    /// ```
    pub fn from_field(field: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.field() == field)
    }

    /// The command-line flag (`"--attn-scale"`).
    pub fn flag(self) -> &'static str {
        match self {
            LoadOption::ResidualScale => "--residual-scale",
            LoadOption::Skip => "--skip",
            LoadOption::Config => "--config",
            LoadOption::Heads => "--heads",
            LoadOption::Mask => "--mask",
            LoadOption::AttnScale => "--attn-scale",
            LoadOption::RopeBase => "--rope-base",
            LoadOption::IgnoreNorms => "--ignore-norms",
        }
    }

    /// The option as `spelling`'s caller writes it: `LoadOptions::heads`
    /// (Rust), `--heads` (command line), `heads=` (Python).
    ///
    /// ```
    /// use tensor_similarity::{LoadOption, Spelling};
    /// assert_eq!(LoadOption::Heads.spelled(Spelling::Rust).to_string(), "LoadOptions::heads");
    /// assert_eq!(LoadOption::Heads.spelled(Spelling::CommandLine).to_string(), "--heads");
    /// assert_eq!(LoadOption::Heads.spelled(Spelling::Python).to_string(), "heads=");
    /// ```
    pub fn spelled(self, spelling: Spelling) -> impl fmt::Display {
        Spelled(self, spelling)
    }
}

impl fmt::Display for LoadOption {
    /// The Rust spelling, `LoadOptions::heads`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Spelled(*self, Spelling::Rust).fmt(f)
    }
}

/// An option with the spelling it is written in.
struct Spelled(LoadOption, Spelling);

impl fmt::Display for Spelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Spelling::Rust => write!(f, "LoadOptions::{}", self.0.field()),
            Spelling::CommandLine => f.write_str(self.0.flag()),
            Spelling::Python => write!(f, "{}=", self.0.field()),
        }
    }
}

/// How a caller writes options, for an error message that tells it what
/// to type: the `Display` of an error is [`Spelling::Rust`], and
/// [`Error::spelled`](crate::Error::spelled) renders it for the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Spelling {
    /// The library's API: `LoadOptions::heads`, `TensorSimilarity::with_context`.
    #[default]
    Rust,
    /// The `tensor-similarity` command line: `--heads`, `--context N`.
    CommandLine,
    /// The Python package's keywords: `heads=`, `context=N`.
    Python,
}

impl Spelling {
    /// The two other Gaussian metrics where the exact one does not fit:
    /// the closure by name and Monte Carlo.
    pub(crate) fn gaussian_alternatives(self) -> &'static str {
        match self {
            Spelling::Rust => "GaussianSimilarity::closure() or GaussianMonteCarlo",
            Spelling::CommandLine => "--metric gaussian-closure or --metric gaussian-mc",
            Spelling::Python => "metric=\"gaussian-closure\" or metric=\"gaussian-mc\"",
        }
    }

    /// The work limit of a comparison, for [`Error::WorkLimit`](crate::Error::WorkLimit).
    pub(crate) fn max_work(self) -> &'static str {
        match self {
            Spelling::Rust => "TensorSimilarity::with_max_work",
            Spelling::CommandLine => "--max-work N",
            Spelling::Python => "max_work=N",
        }
    }

    /// The run-config option where it may be given a file: `--config FILE`
    /// on the command line, `config=` (a path or a dict) in Python.
    pub(crate) fn config(self) -> &'static str {
        match self {
            Spelling::Rust => "LoadOptions::config",
            Spelling::CommandLine => "--config FILE",
            Spelling::Python => "config= (a path or a dict)",
        }
    }

    /// A config given as content rather than a file, for its errors.
    pub(crate) fn config_content(self) -> &'static str {
        match self {
            Spelling::Rust => "LoadOptions::config content",
            Spelling::CommandLine => "given as content",
            Spelling::Python => "the dict given as config=",
        }
    }

    /// Where a model is described explicitly, by role, for a file whose
    /// names and config do not say it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Spelling::Rust => "describe the model with tensor_similarity metadata",
            Spelling::CommandLine => {
                "save the model as safetensors with tensor_similarity metadata"
            }
            Spelling::Python => "describe the model with Model.from_state_dict(…, layout=…)",
        }
    }

    /// How to give a sequence model's context length.
    pub(crate) fn context(self) -> &'static str {
        match self {
            Spelling::Rust => "TensorSimilarity::with_context",
            Spelling::CommandLine => "--context N",
            Spelling::Python => "context=N",
        }
    }
}

/// Advice or a detail of a run config's error ([`FileError::Config`](crate::io::FileError::Config))
/// that names a [`LoadOption`], rendered as the caller spells it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigHint {
    /// An option given disagrees with the config's key that it stands in
    /// for (the reason names the key and the config's value).
    Disagrees {
        /// The option.
        option: LoadOption,
        /// Its value, as given.
        given: String,
    },
    /// Which config to read cannot be told (two in one folder, or one that
    /// is not a regular file where a config is looked for): say which with
    /// [`LoadOption::Config`].
    Choose,
    /// Keys this reader does not know, which may change the function: an
    /// edited copy of the config without them ([`LoadOption::Config`]),
    /// or the model described explicitly.
    EditOrDescribe {
        /// The keys the layout knows (listed last: the longest part).
        known: Vec<&'static str>,
    },
}

impl ConfigHint {
    /// The hint's words, appended to the reason.
    pub(crate) fn render(&self, f: &mut fmt::Formatter<'_>, spelling: Spelling) -> fmt::Result {
        match self {
            ConfigHint::Disagrees { option, given } => {
                write!(f, ", but {} says {given}", option.spelled(spelling))
            }
            ConfigHint::Choose => {
                write!(f, ", or say which config to use with {}", spelling.config())
            }
            ConfigHint::EditOrDescribe { known } => write!(
                f,
                "; where a key cannot change the function at eval, give a copy of the config \
                 without it with {}; where it can, {} (known: {})",
                spelling.config(),
                spelling.describe(),
                // The reader's own list (at most a dozen names), whole.
                super::listed(known, known.len())
            ),
        }
    }
}
