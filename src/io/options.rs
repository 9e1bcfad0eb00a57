//! [`LoadOptions`]: the settings a file without metadata may need, where
//! its run's config does not give them.

use std::path::{Path, PathBuf};

use crate::block::Mask;
use crate::error::LoadOption;

/// A run config given to the reader ([`LoadOptions::config`]): a file to
/// read, or the config's content.
///
/// The content is what a `config.json` parses to, `{"model": {…}, …}`
/// (the Python package's `config=` dict becomes one); it is read exactly
/// as that file would be, and its errors name it as content.
///
/// ```
/// use tensor_similarity::io::{ConfigSource, LoadOptions};
/// use tensor_similarity::serde_json::json;
/// let from_file = LoadOptions { config: Some("runs/lm/config.yaml".into()), ..LoadOptions::default() };
/// let given = LoadOptions {
///     config: Some(ConfigSource::Content(json!({"model": {"n_head": 4, "attn_scale": 0.35}}))),
///     ..LoadOptions::default()
/// };
/// # let _ = (from_file, given);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigSource {
    /// A `config.json`, `config.yaml` or `config.yml` to read (YAML by its
    /// extension, JSON otherwise).
    File(PathBuf),
    /// The config's content, as its JSON parses.
    Content(serde_json::Value),
}

impl ConfigSource {
    /// The file, for a config given as one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(path) => Some(path),
            ConfigSource::Content(_) => None,
        }
    }
}

impl From<PathBuf> for ConfigSource {
    fn from(path: PathBuf) -> Self {
        ConfigSource::File(path)
    }
}

impl From<&Path> for ConfigSource {
    fn from(path: &Path) -> Self {
        ConfigSource::File(path.to_owned())
    }
}

impl From<&str> for ConfigSource {
    /// A path.
    fn from(path: &str) -> Self {
        ConfigSource::File(path.into())
    }
}

impl From<serde_json::Value> for ConfigSource {
    fn from(content: serde_json::Value) -> Self {
        ConfigSource::Content(content)
    }
}

/// How to read files; only files without metadata need options.
///
/// The sequence layouts ([`Layout::Transformer`](crate::io::Layout::Transformer), [`Layout::AttentionLm`](crate::io::Layout::AttentionLm))
/// read their settings from the run's config (`config.json` or
/// `config.yaml` beside the checkpoint, or one or two folders up); these
/// options stand in where no config says, and must agree with it where
/// one does. An option the file's layout does not read is ignored for that
/// file and listed in [`ModelFile::unused_options`](crate::io::ModelFile::unused_options).
///
/// ```
/// use tensor_similarity::io::LoadOptions;
/// let options = LoadOptions { heads: Some(4), attn_scale: Some(0.35), ..LoadOptions::default() };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadOptions {
    /// The residual scale of every bilinear block in a file without
    /// metadata (the research code sets one for the whole model): alone,
    /// the research code's lerp `s` (`α = s`, `r = 1 − s`); with
    /// [`skip`](Self::skip), the output scale `α`. `None` with no `skip`:
    /// `α = 1`, no residual, recorded as an assumption. For
    /// [`Layout::Transformer`](crate::io::Layout::Transformer), its one `α` (the config's `scale`).
    /// A file with metadata names its own residuals and ignores this.
    pub residual_scale: Option<f64>,
    /// The skip weight `r` of every bilinear block in a file without
    /// metadata ([SPEC §1](crate::spec#1-blocks-and-models)):
    /// `y = α·D(Lx ∘ Rx) + r·x`; 1 is the usual additive residual
    /// `x + D(Lx ∘ Rx)`. `α` is [`residual_scale`](Self::residual_scale),
    /// default 1. Read by the vector layouts
    /// ([`EmbedBodyHead`](crate::io::Layout::EmbedBodyHead),
    /// [`BiLinearProjection`](crate::io::Layout::BiLinearProjection)).
    pub skip: Option<f64>,
    /// The run config to read, instead of looking beside the checkpoint: a
    /// file, or its content ([`ConfigSource`]).
    pub config: Option<ConfigSource>,
    /// The number of attention heads, where no config gives `n_head`.
    pub heads: Option<usize>,
    /// The attention mask, where no config gives one (default causal).
    pub mask: Option<Mask>,
    /// The attention scale `α` of [`Layout::AttentionLm`](crate::io::Layout::AttentionLm), where no config
    /// gives `attn_scale` (it has no default).
    pub attn_scale: Option<f64>,
    /// The rotary base of [`Layout::AttentionLm`](crate::io::Layout::AttentionLm)'s
    /// attention, where no config gives `rope_base` (a positive number;
    /// default 10 000). A config that gives `rope_base` must agree with it.
    /// [`Layout::Transformer`](crate::io::Layout::Transformer) does not read
    /// it (listed as unused): the research `Transformer`'s attention always
    /// applies rotary with base 10 000, as its code hard-codes. There is no
    /// option for "no rotary": a file whose attention has none and whose
    /// layout would apply one is described with metadata
    /// (`"rotary_base": null`).
    pub rope_base: Option<f64>,
    /// Read [`Layout::AttentionLm`](crate::io::Layout::AttentionLm) without
    /// its normalisations, every one taken as the identity, as the research
    /// code's `ignore_norms=True` does: an explicit opt-in for models whose
    /// norms depend on their input (`rmsnorm`, `layernorm`, …), which are
    /// refused otherwise. It is the similarity of another function: the
    /// constant norms (`tok0_batch`, `batchnorm`), which are otherwise
    /// folded exactly, are removed too, and the norms removed are listed in
    /// [`ModelFile::norms`](crate::io::ModelFile::norms).
    pub ignore_norms: bool,
}

impl LoadOptions {
    /// Whether `option` is given (not `None`).
    pub fn is_given(&self, option: LoadOption) -> bool {
        match option {
            LoadOption::ResidualScale => self.residual_scale.is_some(),
            LoadOption::Skip => self.skip.is_some(),
            LoadOption::Config => self.config.is_some(),
            LoadOption::Heads => self.heads.is_some(),
            LoadOption::Mask => self.mask.is_some(),
            LoadOption::AttnScale => self.attn_scale.is_some(),
            LoadOption::RopeBase => self.rope_base.is_some(),
            LoadOption::IgnoreNorms => self.ignore_norms,
        }
    }

    /// The options given, in declaration order.
    pub(crate) fn given(&self) -> impl Iterator<Item = LoadOption> + '_ {
        LoadOption::ALL.into_iter().filter(|&o| self.is_given(o))
    }

    /// The options given that a layout reading only `reads` leaves unread,
    /// by field name.
    pub(crate) fn unused(&self, reads: &[LoadOption]) -> Vec<&'static str> {
        self.given()
            .filter(|option| !reads.contains(option))
            .map(LoadOption::field)
            .collect()
    }
}
