//! A file's architecture, resolved once: the run config's `"model"` keys
//! (each checked and typed in one place), merged with the [`LoadOptions`]
//! that stand in for them, every default applied and recorded, for the
//! layout inferred from the tensor names ([SPEC §8](crate::spec#8-sequence-model-files)).
//!
//! Layout inference then only consumes an [`Architecture`]: it checks the
//! declared sizes against the tensors and names the blocks' tensors, and
//! never reads the config itself. A new config key is one field of
//! [`ModelKeys`] and one line of [`ModelKeys::read`]; a new layout is one
//! row of [`LayoutRules::of`].

use std::path::Path;

use super::config::{self, Origin, RunConfig};
use super::norm::NormType;
use super::spec::{Residual, parse_mask};
use crate::block::{DEFAULT_ROTARY_BASE, Mask};
use crate::error::{FileError, LoadOption};
use crate::io::{IgnoredConfigKey, Layout, LoadOptions};

/// What each layout reads: its config's keys and the options it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LayoutRules {
    /// Whether a run config is looked for; its `"model"` keys must all be
    /// in `keys` or be keys that cannot change the function at eval.
    pub(crate) config: bool,
    /// The `"model"` keys the layout knows.
    pub(crate) keys: &'static [&'static str],
    /// The [`LoadOptions`] the layout reads; any other given is listed as
    /// unused.
    pub(crate) options: &'static [LoadOption],
    /// Keys refused by name in this layout's config, each with why: keys
    /// another layout reads that would say something false about this one.
    pub(crate) refused: &'static [(&'static str, &'static str)],
}

/// The rotary base of the research `Transformer`'s attention: its
/// `Attention` hard-codes it, and no config key changes it.
pub(crate) const TRANSFORMER_ROTARY_BASE: f64 = 10_000.0;

/// Why a `rope_base` key is refused in a research `Transformer`'s config.
const TRANSFORMER_ROPE_BASE: &str = "the research Transformer has no rope_base key: its \
     attention always applies rotary with base 10000 (hard-coded in its Attention), so the key \
     would change nothing there and a config that sets it was not written for this model; \
     remove the key, or describe the model (\"rotary_base\" in the metadata) if its attention \
     uses another base";

impl LayoutRules {
    /// The rules of `layout`: one row per layout.
    pub(crate) fn of(layout: Layout) -> Self {
        match layout {
            // Metadata names every setting.
            Layout::Described => Self {
                config: false,
                keys: &[],
                options: &[],
                refused: &[],
            },
            Layout::EmbedBodyHead | Layout::BiLinearProjection => Self {
                config: false,
                keys: &[],
                options: &[LoadOption::ResidualScale, LoadOption::Skip],
                refused: &[],
            },
            // α (the config's `scale`) is the residual scale here; the LM's
            // attn_scale is not read. The rotary base is fixed (10 000):
            // neither `rope_base` nor the option changes it.
            Layout::Transformer => Self {
                config: true,
                keys: &[
                    "n_head", "n_layer", "d_model", "n_ctx", "mask", "bias", "scale",
                ],
                options: &[
                    LoadOption::ResidualScale,
                    LoadOption::Config,
                    LoadOption::Heads,
                    LoadOption::Mask,
                ],
                refused: &[("rope_base", TRANSFORMER_ROPE_BASE)],
            },
            // The residual is additive (r = 1); there is no residual scale.
            Layout::AttentionLm => Self {
                config: true,
                keys: &[
                    "vocab_size",
                    "d_model",
                    "n_head",
                    "n_layers",
                    "attn_scale",
                    "attn_type",
                    "rope_base",
                    "use_bias_qk",
                    "n_ctx",
                    "norm_type",
                    "norm_places",
                    "norm_kwargs",
                    "use_rmsnorm_qk",
                ],
                options: &[
                    LoadOption::Config,
                    LoadOption::Heads,
                    LoadOption::Mask,
                    LoadOption::AttnScale,
                    LoadOption::RopeBase,
                    LoadOption::IgnoreNorms,
                ],
                refused: &[],
            },
        }
    }
}

/// How a layer's attention scores are formed, as `attn_type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScoreKind {
    /// Two query/key pairs, `(q1·k1)(q2·k2)`: tensors `q1, k1, q2, k2`.
    Bilinear,
    /// One pair, squared, `(q·k)²`: tensors `q, k`.
    Quadratic,
}

impl ScoreKind {
    /// The config's name for it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ScoreKind::Bilinear => "bilinear",
            ScoreKind::Quadratic => "quadratic",
        }
    }
}

/// The `"model"` keys of a run config, each read once, typed and checked
/// on its own (a key that is not polynomial is refused here). `None`: the
/// key is absent or null (or there is no config).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ModelKeys {
    /// `attn_type`: bilinear or quadratic (softmax and others are refused).
    pub(crate) attn_type: Option<ScoreKind>,
    /// `n_head`: the number of attention heads.
    pub(crate) n_head: Option<usize>,
    /// `scale`: the research Transformer's one `α` (attention `r = 1 − α`
    /// and the MLP's lerp).
    pub(crate) scale: Option<f64>,
    /// `attn_scale`: the attention-only LM's attention scale.
    pub(crate) attn_scale: Option<f64>,
    /// `mask`: causal, none or diag.
    pub(crate) mask: Option<Mask>,
    /// `rope_base`: the rotary base (positive).
    pub(crate) rope_base: Option<f64>,
    /// `use_bias_qk`: whether the q/k projections have biases.
    pub(crate) use_bias_qk: Option<bool>,
    /// `bias`: whether the research Transformer's layers have biases.
    pub(crate) bias: Option<bool>,
    /// `n_layers`: the LM's number of layers.
    pub(crate) n_layers: Option<usize>,
    /// `n_layer`: the research Transformer's number of layers.
    pub(crate) n_layer: Option<usize>,
    /// `vocab_size`: the rows of the embedding table.
    pub(crate) vocab_size: Option<usize>,
    /// `d_model`: the stream width.
    pub(crate) d_model: Option<usize>,
    /// `n_ctx`: the native context length (positive).
    pub(crate) n_ctx: Option<usize>,
    /// `norm_type`, `norm_places` and `norm_kwargs`, checked together.
    pub(crate) norms: Option<NormPlan>,
}

/// The normalisations a run config declares: one type at the places
/// `norm_places` names, with the `norm_kwargs` that change it at eval.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NormPlan {
    /// `norm_type` (the research default `rmsnorm` where absent); `None`
    /// for `none`.
    pub(crate) kind: Option<NormType>,
    /// `post_embed` in `norm_places`.
    pub(crate) post_embed: bool,
    /// `pre_layer` in `norm_places`.
    pub(crate) pre_layer: bool,
    /// `pre_unembed` in `norm_places`, or implied by `pre_layer`.
    pub(crate) pre_unembed: bool,
    /// `norm_kwargs.eps`.
    pub(crate) eps: Option<f64>,
    /// `norm_kwargs.affine` (batchnorm; default true).
    pub(crate) affine: bool,
    /// `norm_places` as written, for errors.
    pub(crate) places: Vec<String>,
}

impl NormPlan {
    /// Whether the config places any norm.
    pub(crate) fn any(&self) -> bool {
        self.post_embed || self.pre_layer || self.pre_unembed
    }
}

impl ModelKeys {
    /// Every key of `config`'s `"model"` section, under `rules`: a key the
    /// layout refuses by name is refused first, with why; then an unknown
    /// one (outside its keys, and not one that cannot change the function
    /// at eval); then each is typed, in a fixed order; with them, the keys
    /// ignored. A norm that depends on its input is refused here unless
    /// `ignore_norms`; RMS-normalised q/k always are.
    pub(crate) fn read(
        config: &RunConfig,
        rules: &LayoutRules,
        ignore_norms: bool,
    ) -> Result<(Self, Vec<IgnoredConfigKey>), FileError> {
        if let Some((key, why)) = rules.refused.iter().find(|(key, _)| config.has(key)) {
            return Err(config.refuse(key, *why));
        }
        let ignored = config.check_keys(rules.keys)?;
        let attn_type = score_kind(config)?;
        if config.bool("use_rmsnorm_qk")? == Some(true) {
            return Err(config.refuse("use_rmsnorm_qk", "RMS-normalised q/k are not polynomial"));
        }
        let norms = if rules.keys.contains(&"norm_type") {
            Some(norm_plan(config, ignore_norms)?)
        } else {
            None
        };
        let keys = Self {
            attn_type,
            n_head: config.usize("n_head")?,
            scale: config.f64("scale")?,
            attn_scale: config.f64("attn_scale")?,
            mask: mask(config)?,
            rope_base: config.positive_f64("rope_base")?,
            use_bias_qk: config.bool("use_bias_qk")?,
            bias: config.bool("bias")?,
            n_layers: config.usize("n_layers")?,
            n_layer: config.usize("n_layer")?,
            vocab_size: config.usize("vocab_size")?,
            d_model: config.usize("d_model")?,
            // A native context of no positions is no model's.
            n_ctx: config.positive("n_ctx")?,
            norms,
        };
        Ok((keys, ignored))
    }
}

/// `attn_type`, refusing what is not polynomial.
fn score_kind(config: &RunConfig) -> Result<Option<ScoreKind>, FileError> {
    match config.str("attn_type")? {
        None => Ok(None),
        Some("bilinear") => Ok(Some(ScoreKind::Bilinear)),
        Some("quadratic") => Ok(Some(ScoreKind::Quadratic)),
        Some(other) => Err(config.refuse(
            "attn_type",
            format!("{other:?} attention is not polynomial; only bilinear and quadratic are exact"),
        )),
    }
}

/// The norms a config declares ([SPEC §8](crate::spec#8-sequence-model-files)):
/// `norm_type` (default `rmsnorm`, as in the research code), `norm_places`
/// (default none) and the `norm_kwargs` the type takes. A norm that
/// depends on its input, at any place, is refused by name unless
/// `ignore_norms`.
fn norm_plan(config: &RunConfig, ignore_norms: bool) -> Result<NormPlan, FileError> {
    let kind = match config.str("norm_type")? {
        None => Some(NormType::RmsNorm),
        Some("none") => None,
        Some(name) => Some(NormType::parse(name).ok_or_else(|| {
            config.refuse(
                "norm_type",
                format!(
                    "{name:?} is not a norm type of the research code (none, {})",
                    NormType::ALL.map(NormType::name).join(", ")
                ),
            )
        })?),
    };
    let places: Vec<String> = (config.strings("norm_places")?.unwrap_or_default())
        .into_iter()
        .map(str::to_owned)
        .collect();
    for place in &places {
        if !["post_embed", "pre_layer", "pre_unembed"].contains(&place.as_str()) {
            return Err(config.refuse(
                "norm_places",
                format!("{place:?} is not post_embed, pre_layer or pre_unembed"),
            ));
        }
    }
    let at = |p: &str| kind.is_some() && places.iter().any(|q| q == p);
    let mut plan = NormPlan {
        kind,
        post_embed: at("post_embed"),
        pre_layer: at("pre_layer"),
        pre_unembed: at("pre_unembed") || at("pre_layer"),
        eps: None,
        affine: true,
        places,
    };
    let kwargs = config.mapping("norm_kwargs")?;
    let Some(kind) = kind.filter(|_| plan.any()) else {
        return Ok(plan);
    };
    let kwarg = |key: &str| kwargs.and_then(|m| m.get(key)).filter(|v| !v.is_null());
    if let Some(m) = kwargs
        && let Some(key) = m.keys().find(|k| !kind.kwargs().contains(&k.as_str()))
    {
        return Err(config.refuse(
            "norm_kwargs",
            format!(
                "{key:?} is not an argument of the research code's {kind} (it takes {})",
                if kind.kwargs().is_empty() {
                    "none".to_owned()
                } else {
                    kind.kwargs().join(", ")
                }
            ),
        ));
    }
    let flag = |key: &str| -> Result<Option<bool>, FileError> {
        kwarg(key)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    config.refuse(
                        &format!("norm_kwargs.{key}"),
                        format!("must be true or false, found {}", config.show(v)),
                    )
                })
            })
            .transpose()
    };
    plan.eps = kwarg("eps")
        .map(|v| {
            v.as_f64()
                .filter(|e| e.is_finite() && *e >= 0.0)
                .ok_or_else(|| {
                    config.refuse(
                        "norm_kwargs.eps",
                        format!("must be a non-negative number, found {}", config.show(v)),
                    )
                })
        })
        .transpose()?;
    plan.affine = flag("affine")?.unwrap_or(true);
    let refused = |key: &str, value: &str, why: &str| FileError::InputDependentNorm {
        config: Some(config.origin.error_path()),
        found: format!("model.{key} is {value}"),
        why: why.into(),
    };
    if ignore_norms {
        return Ok(plan);
    }
    if let Some(why) = kind.input_dependent() {
        return Err(refused("norm_type", &format!("{:?}", kind.name()), why));
    }
    if kind == NormType::Tok0Batch && flag("use_running_stats")? == Some(false) {
        return Err(refused(
            "norm_kwargs.use_running_stats",
            "false",
            "a tok0_batch norm without running statistics divides by the batch's mean energy \
             of position 0 at eval",
        ));
    }
    if kind == NormType::BatchNorm && flag("track_running_stats")? == Some(false) {
        return Err(refused(
            "norm_kwargs.track_running_stats",
            "false",
            "a batchnorm without running statistics normalises by the batch at eval",
        ));
    }
    Ok(plan)
}

/// `mask`, by name.
fn mask(config: &RunConfig) -> Result<Option<Mask>, FileError> {
    match config.str("mask")? {
        Some(name) => parse_mask(name)
            .map(Some)
            .ok_or_else(|| config.refuse("mask", format!("{name:?} is not causal, none or diag"))),
        None => Ok(None),
    }
}

/// The attention settings of a sequence layout, the same for every layer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttentionSettings {
    /// The number of heads.
    pub(crate) heads: usize,
    /// The mask.
    pub(crate) mask: Mask,
    /// The rotary base; `None`: no rotary.
    pub(crate) rotary_base: Option<f64>,
    /// The scale `α` of the attention's output.
    pub(crate) scale: f64,
    /// The skip (residual) weight `r`.
    pub(crate) skip: f64,
}

/// A file's architecture as far as its tensors do not give it: the layout,
/// the config read (if any) and what it declares, the settings that
/// inference needs, and every default applied.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Architecture {
    /// The layout, from the metadata or the tensor names.
    pub(crate) layout: Layout,
    /// Where the run config read came from, if there is one.
    pub(crate) config: Option<Origin>,
    /// What the config declares (all `None` without one): inference checks
    /// the counts and kinds against the tensors.
    pub(crate) declared: ModelKeys,
    /// The config's keys that cannot change the function at eval, read
    /// and not used.
    pub(crate) ignored_config_keys: Vec<IgnoredConfigKey>,
    /// The bilinear blocks' output scale `α` and skip weight `r`.
    pub(crate) residual: Residual,
    /// The attention settings of a sequence layout; `None` for the others.
    pub(crate) attention: Option<AttentionSettings>,
    /// The defaults applied where neither the config nor the options said,
    /// one line each (`"mask absent: causal"`).
    pub(crate) assumptions: Vec<String>,
    /// The options given that this layout does not read.
    pub(crate) unused_options: Vec<&'static str>,
    /// Read the model without its norms
    /// ([`LoadOptions::ignore_norms`]), where the layout reads the option.
    pub(crate) ignore_norms: bool,
}

impl Architecture {
    /// The architecture of a file with `layout`, for the checkpoint at
    /// `checkpoint`: its run config found (or `options.config`) and read,
    /// then merged with `options`.
    pub(crate) fn resolve(
        layout: Layout,
        checkpoint: &Path,
        options: &LoadOptions,
    ) -> Result<Self, FileError> {
        let rules = LayoutRules::of(layout);
        let config = if rules.config {
            config::find(checkpoint, options.config.as_ref())?
        } else {
            None
        };
        let (declared, ignored_config_keys) = match &config {
            Some(c) => ModelKeys::read(c, &rules, options.ignore_norms)?,
            None => (ModelKeys::default(), Vec::new()),
        };
        let mut arch = Self {
            layout,
            config: None,
            declared,
            ignored_config_keys,
            residual: Residual::NONE,
            attention: None,
            assumptions: Vec::new(),
            unused_options: options.unused(rules.options),
            ignore_norms: options.ignore_norms && rules.options.contains(&LoadOption::IgnoreNorms),
        };
        let merge = Merge {
            config: config.as_ref(),
            options,
        };
        match layout {
            Layout::Described => {}
            Layout::EmbedBodyHead | Layout::BiLinearProjection => arch.vector_residual(options),
            Layout::Transformer => arch.transformer(&merge)?,
            Layout::AttentionLm => arch.attention_lm(&merge)?,
        }
        arch.config = config.map(|c| c.origin);
        Ok(arch)
    }

    /// The config's native context length (`n_ctx`), if it gives one.
    pub(crate) fn native_context(&self) -> Option<usize> {
        self.declared.n_ctx
    }

    /// The bilinear blocks of a vector layout, whose tensor names cannot
    /// tell whether a block adds its input: `--residual-scale s` alone is
    /// the research code's lerp (`α = s`, `r = 1 − s`); `--skip r` sets
    /// `r`, with `α` from `--residual-scale` (default 1). With neither, no
    /// residual, and the assumption says how to give one.
    fn vector_residual(&mut self, options: &LoadOptions) {
        self.residual = match (options.residual_scale, options.skip) {
            (Some(s), None) => Residual::lerp(s),
            (scale, Some(skip)) => {
                if scale.is_none() {
                    self.assume("α (--residual-scale, Python residual_scale=) absent: 1");
                }
                Residual {
                    scale: scale.unwrap_or(1.0),
                    skip,
                }
            }
            (None, None) => {
                self.assume(
                    "residual absent: each bilinear block is α·D(Lx ∘ Rx) with α = 1 and no \
                     skip (r = 0); for the additive x + D(Lx ∘ Rx) give --skip 1 (Python skip=1), \
                     for the research lerp --residual-scale s",
                );
                Residual::NONE
            }
        };
    }

    /// The research `Transformer`: one `α` (`scale`) for the attention
    /// (`r = 1 − α`) and the MLP's lerp residual (default 1, no residual),
    /// a mask (default causal), and rotary at its fixed base
    /// [`TRANSFORMER_ROTARY_BASE`] (no key or option changes it).
    fn transformer(&mut self, merge: &Merge<'_>) -> Result<(), FileError> {
        let heads = merge.heads(self.declared.n_head, self.layout)?;
        let alpha = merge
            .agree(
                "scale",
                self.declared.scale,
                merge.options.residual_scale,
                LoadOption::ResidualScale,
            )?
            .unwrap_or_else(|| {
                self.assume("α (scale / --residual-scale) absent: 1, no residual");
                1.0
            });
        let mask = merge.mask(self.declared.mask.clone())?.unwrap_or_else(|| {
            self.assume("mask absent: causal");
            Mask::Causal
        });
        self.residual = Residual::lerp(alpha);
        self.attention = Some(AttentionSettings {
            heads,
            mask,
            rotary_base: Some(TRANSFORMER_ROTARY_BASE),
            scale: alpha,
            skip: 1.0 - alpha,
        });
        Ok(())
    }

    /// The attention-only LM: additive residual (`r = 1`), the attention
    /// scale `attn_scale` (no default: the research codes disagree, 0.2
    /// and 0.35), rotary base `rope_base` (default
    /// [`DEFAULT_ROTARY_BASE`]), causal unless `--mask` says otherwise.
    fn attention_lm(&mut self, merge: &Merge<'_>) -> Result<(), FileError> {
        let heads = merge.heads(self.declared.n_head, self.layout)?;
        let scale = merge
            .agree(
                "attn_scale",
                self.declared.attn_scale,
                merge.options.attn_scale,
                LoadOption::AttnScale,
            )?
            .ok_or(FileError::NeedsConfig {
                layout: self.layout.name(),
                what: "the attention scale (attn_scale)",
                option: LoadOption::AttnScale,
            })?;
        let rotary_base = merge
            .rope_base(self.declared.rope_base)?
            .unwrap_or_else(|| {
                self.assume(format!("rope_base absent: {DEFAULT_ROTARY_BASE}"));
                DEFAULT_ROTARY_BASE
            });
        if merge.config.is_none() {
            self.assume(
                "no run config: the norms are those the tensor names show (embed_norm, \
                 layer_norms.{i}, final_norm); one that holds no tensors (tok0, maxrmsnorm, \
                 causal_maxrmsnorm) cannot be seen, so give the run's config if it had one",
            );
        }
        self.attention = Some(AttentionSettings {
            heads,
            mask: merge.options.mask.clone().unwrap_or(Mask::Causal),
            rotary_base: Some(rotary_base),
            scale,
            skip: 1.0,
        });
        Ok(())
    }

    /// An error about the config's `key`, naming the config.
    pub(crate) fn refuse(&self, key: &str, reason: impl Into<String>) -> FileError {
        FileError::Config {
            config: self
                .config
                .as_ref()
                .map(Origin::error_path)
                .unwrap_or_default(),
            reason: format!("model.{key}: {}", reason.into()),
            hint: None,
        }
    }

    /// A count the config declares (`declared`, under `key`) must be the
    /// `found` the tensors say (`what`, in words).
    pub(crate) fn check_count(
        &self,
        key: &str,
        declared: Option<usize>,
        found: usize,
        what: &str,
    ) -> Result<(), FileError> {
        match declared {
            Some(n) if n != found => Err(self.refuse(
                key,
                format!("is {n}, but the checkpoint has {found} {what}"),
            )),
            _ => Ok(()),
        }
    }

    /// Records a default applied.
    pub(crate) fn assume(&mut self, line: impl Into<String>) {
        self.assumptions.push(line.into());
    }
}

/// A config (if any) and the options that stand in for its keys.
struct Merge<'a> {
    config: Option<&'a RunConfig>,
    options: &'a LoadOptions,
}

impl Merge<'_> {
    /// The config's `key` value or the option `given`'s (from `option`),
    /// or neither; where both give it they must agree.
    fn agree<T: PartialEq + std::fmt::Display>(
        &self,
        key: &str,
        from_config: Option<T>,
        given: Option<T>,
        option: LoadOption,
    ) -> Result<Option<T>, FileError> {
        match (self.config, from_config, given) {
            (Some(c), Some(from_config), Some(o)) if from_config != o => {
                Err(c.disagrees(key, from_config, option, o))
            }
            (_, from_config, o) => Ok(from_config.or(o)),
        }
    }

    /// `n_head` from the config or the `heads` option; one of them is
    /// needed.
    fn heads(&self, n_head: Option<usize>, layout: Layout) -> Result<usize, FileError> {
        self.agree("n_head", n_head, self.options.heads, LoadOption::Heads)?
            .ok_or(FileError::NeedsConfig {
                layout: layout.name(),
                what: "the number of heads (n_head)",
                option: LoadOption::Heads,
            })
    }

    /// `rope_base` from the config or the `rope_base` option (a positive
    /// finite number, as the config's must be), or neither.
    fn rope_base(&self, from_config: Option<f64>) -> Result<Option<f64>, FileError> {
        if let Some(base) = self.options.rope_base
            && !(base.is_finite() && base > 0.0)
        {
            return Err(FileError::InvalidOption {
                option: LoadOption::RopeBase,
                reason: format!("a rotary base must be a positive finite number, found {base}"),
            });
        }
        self.agree(
            "rope_base",
            from_config,
            self.options.rope_base,
            LoadOption::RopeBase,
        )
    }

    /// The mask from the config or `--mask`, compared by name.
    fn mask(&self, from_config: Option<Mask>) -> Result<Option<Mask>, FileError> {
        /// A mask that prints as its name, for [`Merge::agree`].
        #[derive(PartialEq)]
        struct Named(Mask);
        impl std::fmt::Display for Named {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0.name())
            }
        }
        let named = self.agree(
            "mask",
            from_config.map(Named),
            self.options.mask.clone().map(Named),
            LoadOption::Mask,
        )?;
        Ok(named.map(|Named(m)| m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file `config.yaml` with `model` holding `body`, in a fresh
    /// folder, and options that point at it.
    fn with_config(body: &str) -> (tempfile::TempDir, LoadOptions) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, format!("model:\n{body}")).expect("written");
        let options = LoadOptions {
            config: Some(path.into()),
            ..LoadOptions::default()
        };
        (dir, options)
    }

    fn resolve(layout: Layout, options: &LoadOptions) -> Result<Architecture, FileError> {
        Architecture::resolve(layout, Path::new("model.pt"), options)
    }

    #[test]
    fn a_config_with_every_key_is_read_whole_with_nothing_assumed() {
        let (_dir, options) = with_config(
            "  vocab_size: 50\n  d_model: 8\n  n_head: 2\n  n_layers: 3\n  attn_scale: 0.35\n  \
             attn_type: quadratic\n  rope_base: 500\n  use_bias_qk: true\n  n_ctx: 64\n  \
             norm_type: none\n  norm_places: []\n  use_rmsnorm_qk: false\n",
        );
        let arch = resolve(Layout::AttentionLm, &options).expect("a valid config");
        assert_eq!(
            arch.declared,
            ModelKeys {
                attn_type: Some(ScoreKind::Quadratic),
                n_head: Some(2),
                scale: None,
                attn_scale: Some(0.35),
                mask: None,
                rope_base: Some(500.0),
                use_bias_qk: Some(true),
                bias: None,
                n_layers: Some(3),
                n_layer: None,
                vocab_size: Some(50),
                d_model: Some(8),
                n_ctx: Some(64),
                norms: Some(NormPlan {
                    kind: None,
                    post_embed: false,
                    pre_layer: false,
                    pre_unembed: false,
                    eps: None,
                    affine: true,
                    places: vec![],
                }),
            }
        );
        assert_eq!(
            arch.attention,
            Some(AttentionSettings {
                heads: 2,
                mask: Mask::Causal,
                rotary_base: Some(500.0),
                scale: 0.35,
                skip: 1.0,
            })
        );
        assert_eq!(arch.residual, Residual::NONE);
        assert_eq!(arch.native_context(), Some(64));
        assert!(arch.assumptions.is_empty(), "{:?}", arch.assumptions);
        assert_eq!(
            arch.config.and_then(Origin::into_path).as_deref(),
            options.config.as_ref().and_then(|c| c.path())
        );
        assert!(arch.unused_options.is_empty());

        // The research Transformer's own keys (SPEC §8); its rotary base
        // is fixed, not a key.
        let (_dir, options) = with_config(
            "  n_head: 4\n  n_layer: 2\n  d_model: 16\n  scale: 0.25\n  mask: diag\n  \
             bias: true\n  n_ctx: 32\n",
        );
        let arch = resolve(Layout::Transformer, &options).expect("a valid config");
        assert_eq!(arch.residual, Residual::lerp(0.25));
        assert_eq!(
            arch.attention,
            Some(AttentionSettings {
                heads: 4,
                mask: Mask::Diagonal,
                rotary_base: Some(10000.0),
                scale: 0.25,
                skip: 0.75,
            })
        );
        assert_eq!(
            (
                arch.declared.n_layer,
                arch.declared.d_model,
                arch.declared.bias
            ),
            (Some(2), Some(16), Some(true))
        );
        assert_eq!(arch.native_context(), Some(32));
        assert!(arch.assumptions.is_empty(), "{:?}", arch.assumptions);
    }

    #[test]
    fn missing_keys_take_recorded_defaults() {
        let (_dir, options) = with_config("  n_head: 2\n");
        let arch = resolve(Layout::Transformer, &options).expect("n_head is enough");
        assert_eq!(
            arch.assumptions,
            [
                "α (scale / --residual-scale) absent: 1, no residual",
                "mask absent: causal",
            ]
        );
        assert_eq!(
            arch.attention,
            Some(AttentionSettings {
                heads: 2,
                mask: Mask::Causal,
                rotary_base: Some(10000.0),
                scale: 1.0,
                skip: 0.0,
            })
        );
        assert_eq!(arch.native_context(), None);

        let (_dir, mut options) = with_config("  attn_scale: 0.2\n");
        options.heads = Some(3);
        options.residual_scale = Some(0.5);
        let arch = resolve(Layout::AttentionLm, &options).expect("--heads stands in");
        assert_eq!(
            arch.assumptions,
            [format!("rope_base absent: {DEFAULT_ROTARY_BASE}")]
        );
        let attention = arch.attention.expect("a sequence layout");
        assert_eq!(attention.heads, 3);
        assert_eq!(attention.rotary_base, Some(DEFAULT_ROTARY_BASE));
        // The LM has no residual scale: the option is listed as unused.
        assert_eq!(arch.unused_options, ["residual_scale"]);

        // Without a config, what has no default is asked for by name.
        let none = LoadOptions {
            heads: Some(2),
            ..LoadOptions::default()
        };
        // Two folders deep, so that no config above the temporary folder is found.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let alone = dir.path().join("run").join("checkpoints").join("model.pt");
        match Architecture::resolve(Layout::AttentionLm, &alone, &none) {
            Err(FileError::NeedsConfig { option, .. }) => assert_eq!(option, LoadOption::AttnScale),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused() {
        let (_dir, options) = with_config("  n_head: 2\n  vocab_size: 10\n");
        // vocab_size is the LM's, not the Transformer's.
        match resolve(Layout::Transformer, &options) {
            Err(FileError::Config { reason, .. }) => {
                assert!(
                    reason.contains("unknown model key \"vocab_size\""),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let (_dir, options) = with_config("  n_head: two\n");
        match resolve(Layout::Transformer, &options) {
            Err(FileError::Config { reason, .. }) => {
                assert!(reason.contains("model.n_head must be"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let (_dir, mut options) = with_config("  n_head: 2\n  attn_scale: 0.2\n");
        options.heads = Some(4);
        match resolve(Layout::AttentionLm, &options) {
            Err(e @ FileError::Config { .. }) => {
                let message = e.spelled(crate::Spelling::CommandLine).to_string();
                assert!(message.contains("is 2, but --heads says 4"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let (_dir, options) = with_config("  attn_type: softmax\n");
        assert!(matches!(
            resolve(Layout::AttentionLm, &options),
            Err(FileError::Config { .. })
        ));
    }

    #[test]
    fn the_transformer_s_rotary_is_fixed_at_10000() {
        // Without a config: rotary 10 000, nothing assumed about it, and
        // the rope_base option is not read (listed as unused).
        let options = LoadOptions {
            heads: Some(2),
            residual_scale: Some(0.5),
            rope_base: Some(500.0),
            ..LoadOptions::default()
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let alone = dir.path().join("run").join("checkpoints").join("model.pt");
        let arch = Architecture::resolve(Layout::Transformer, &alone, &options).expect("no config");
        let attention = arch.attention.expect("a sequence layout");
        assert_eq!(attention.rotary_base, Some(TRANSFORMER_ROTARY_BASE));
        assert_eq!(TRANSFORMER_ROTARY_BASE, 10_000.0);
        assert!(
            arch.assumptions.iter().all(|a| !a.contains("rope")),
            "{:?}",
            arch.assumptions
        );
        assert_eq!(arch.unused_options, ["rope_base"]);
        // A rope_base key is refused by name, saying why, whatever its
        // value (null too: the key says the config is another model's)
        // and whatever else the config holds.
        for body in [
            "  n_head: 2\n  rope_base: 500\n",
            "  n_head: 2\n  rope_base: 10000\n  lr: 0.1\n  alpha: 1\n",
            "  n_head: 2\n  rope_base: null\n",
        ] {
            let (_dir, options) = with_config(body);
            match resolve(Layout::Transformer, &options) {
                Err(FileError::Config { reason, .. }) => assert!(
                    reason
                        .starts_with("model.rope_base: the research Transformer has no rope_base")
                        && reason.contains("base 10000"),
                    "{reason}"
                ),
                other => panic!("{other:?}"),
            }
        }
        // The LM's spellings are not the Transformer's keys.
        for key in ["alpha: 0.5", "n_layers: 2", "attn_scale: 0.5"] {
            let (_dir, options) = with_config(&format!("  n_head: 2\n  {key}\n"));
            match resolve(Layout::Transformer, &options) {
                Err(FileError::Config { reason, .. }) => {
                    assert!(reason.contains("unknown model key"), "{reason}")
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        // Mistyped keys name themselves.
        for (body, key) in [
            ("bias: 1", "bias"),
            ("scale: x", "scale"),
            ("n_layer: -1", "n_layer"),
        ] {
            let (_dir, options) = with_config(&format!("  n_head: 2\n  {body}\n"));
            match resolve(Layout::Transformer, &options) {
                Err(FileError::Config { reason, .. }) => {
                    assert!(
                        reason.starts_with(&format!("model.{key} must be")),
                        "{reason}"
                    )
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn vector_layouts_read_only_the_residual_scale() {
        let options = LoadOptions {
            residual_scale: Some(0.5),
            heads: Some(2),
            ..LoadOptions::default()
        };
        let arch = resolve(Layout::EmbedBodyHead, &options).expect("no config needed");
        assert_eq!(arch.residual, Residual::lerp(0.5));
        assert_eq!(arch.attention, None);
        assert_eq!(arch.unused_options, ["heads"]);
        let arch = resolve(Layout::Described, &options).expect("metadata names everything");
        assert_eq!(arch.unused_options, ["residual_scale", "heads"]);
    }
}
