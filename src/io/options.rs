//! [`LoadOptions`]: the settings a file without metadata may need, where
//! its run's config does not give them.

use std::path::PathBuf;

use crate::block::Mask;

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
    /// [`Layout::Transformer`](crate::io::Layout::Transformer), its one `α`.
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
    /// The run config to read, instead of looking beside the checkpoint.
    pub config: Option<PathBuf>,
    /// The number of attention heads, where no config gives `n_head`.
    pub heads: Option<usize>,
    /// The attention mask, where no config gives one (default causal).
    pub mask: Option<Mask>,
    /// The attention scale `α` of [`Layout::AttentionLm`](crate::io::Layout::AttentionLm), where no config
    /// gives `attn_scale` (it has no default).
    pub attn_scale: Option<f64>,
}

impl LoadOptions {
    /// The options given (not `None`), by field name, in declaration order.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        [
            ("residual_scale", self.residual_scale.is_some()),
            ("skip", self.skip.is_some()),
            ("config", self.config.is_some()),
            ("heads", self.heads.is_some()),
            ("mask", self.mask.is_some()),
            ("attn_scale", self.attn_scale.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The options given that a layout reading only `reads` leaves unread.
    pub(crate) fn unused(&self, reads: &[&str]) -> Vec<&'static str> {
        self.given()
            .into_iter()
            .filter(|name| !reads.contains(name))
            .collect()
    }
}
