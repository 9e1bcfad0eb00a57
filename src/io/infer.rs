//! The research layouts, recognised by tensor names when a file has no
//! `tensor_similarity` metadata ([SPEC §5](crate::spec#5-model-files), [§8](crate::spec#8-sequence-model-files)).
//!
//! The two sequence layouts leave settings to the run's config: they are
//! read from it or from the loading options, checked against the tensors,
//! and every default applied is recorded, so that `inspect` can say it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{self, RunConfig};
use super::read::RawTensor;
use super::spec::{AttentionSpec, BlockSpec, Factors, LayoutSpec};
use super::{FileError, Layout, LoadOptions};
use crate::block::{DEFAULT_ROTARY_BASE, Mask};
use crate::error::{LISTED, listed};

/// A layout read off the names, with what was assumed to build it.
pub(crate) struct Inferred {
    pub(crate) layout: Layout,
    pub(crate) spec: LayoutSpec,
    /// The config file read, if any.
    pub(crate) config: Option<PathBuf>,
    /// The model's native context (`n_ctx`), if the config gives it.
    pub(crate) native_context: Option<usize>,
    /// Defaults applied where neither the config nor the options said.
    pub(crate) assumptions: Vec<String>,
    /// The options given that this layout does not read.
    pub(crate) unused: Vec<&'static str>,
}

/// The layout of a file without metadata, from its tensor names.
pub(crate) fn infer(
    tensors: &HashMap<String, RawTensor>,
    checkpoint: &Path,
    options: &LoadOptions,
) -> Result<Inferred, FileError> {
    let names = Names(tensors);
    let vector = |layout, blocks| {
        Ok(Inferred {
            unused: unused_options(options, &["residual_scale"]),
            layout,
            spec: LayoutSpec {
                blocks,
                sequence: false,
            },
            config: None,
            native_context: None,
            assumptions: Vec::new(),
        })
    };
    if names.has_prefix("layers.") || names.has("unembed.weight") {
        return attention_lm(&names, checkpoint, options);
    }
    if names.has_prefix("body.") && names.0.keys().any(|n| n.contains(".attn.")) {
        return transformer(&names, checkpoint, options);
    }
    if names.has_prefix("bi_linear.") || names.has_prefix("projection.") {
        let residual = options.residual_scale;
        return vector(
            Layout::BiLinearProjection,
            vec![
                BlockSpec::Bilinear {
                    factors: Factors::Fused {
                        fused: "bi_linear.weight".into(),
                        bias: names.optional("bi_linear.bias"),
                    },
                    down: None,
                    down_bias: None,
                    residual,
                },
                linear(&names, "projection"),
            ],
        );
    }
    if names.has_prefix("embed.") || names.has_prefix("body.") || names.has_prefix("head.") {
        let mut blocks = vec![linear(&names, "embed")];
        for i in 0..names.layers("body.", "l.weight")? {
            blocks.push(mlp(&names, &format!("body.{i}."), options.residual_scale));
        }
        blocks.push(linear(&names, "head"));
        return vector(Layout::EmbedBodyHead, blocks);
    }
    let mut sorted: Vec<&str> = tensors.keys().map(String::as_str).collect();
    sorted.sort_unstable();
    Err(FileError::UnknownLayout {
        reason: format!(
            "no \"tensor_similarity\" metadata, and the tensors [{}] fit none of \
             embed/body.{{i}}.{{l,r,d}}/head, bi_linear/projection, \
             embed/body.{{i}}.{{attn,mlp}}/head or embed/layers.{{i}}/unembed (see the file format guide)",
            listed(sorted.iter().map(|n| format!("{n:?}")), LISTED),
        ),
    })
}

/// The tensor names of a file.
struct Names<'a>(&'a HashMap<String, RawTensor>);

impl Names<'_> {
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.0.keys().any(|n| n.starts_with(prefix))
    }

    fn optional(&self, name: &str) -> Option<String> {
        self.has(name).then(|| name.to_owned())
    }

    fn shape(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).map(|t| &t.shape[..])
    }

    /// The number of layers `prefix{i}.…` (numbered from 0; a gap is an
    /// error naming the missing layer's `first` tensor).
    fn layers(&self, prefix: &str, first: &str) -> Result<usize, FileError> {
        // The indices present, sorted: the first gap is the first index
        // that is not its own position. (A name like `layers.999999999.x`
        // costs no more than any other: nothing loops up to what a file claims.)
        let present: std::collections::BTreeSet<usize> = self
            .0
            .keys()
            .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .collect();
        let depth = present.last().map_or(0, |&i| i.saturating_add(1));
        match present.iter().enumerate().find(|&(k, &i)| k != i) {
            Some((missing, _)) => Err(FileError::MissingTensor {
                tensor: format!("{prefix}{missing}.{first}"),
                role: format!(
                    "layer {missing} of {depth} (0-based; layer {} exists)",
                    depth - 1
                ),
            }),
            None => Ok(depth),
        }
    }
}

fn linear(names: &Names<'_>, prefix: &str) -> BlockSpec {
    BlockSpec::Linear {
        weight: format!("{prefix}.weight"),
        bias: names.optional(&format!("{prefix}.bias")),
        transpose: false,
        energy: None,
    }
}

/// A bilinear block `p.l`, `p.r`, `p.d` with whatever biases are present.
fn mlp(names: &Names<'_>, p: &str, residual: Option<f64>) -> BlockSpec {
    BlockSpec::Bilinear {
        factors: Factors::Split {
            left: format!("{p}l.weight"),
            right: format!("{p}r.weight"),
            left_bias: names.optional(&format!("{p}l.bias")),
            right_bias: names.optional(&format!("{p}r.bias")),
        },
        down: Some(format!("{p}d.weight")),
        down_bias: names.optional(&format!("{p}d.bias")),
        residual,
    }
}

/// The options given that a layout does not read, by [`LoadOptions`] field name.
pub(crate) fn unused_options(options: &LoadOptions, reads: &[&str]) -> Vec<&'static str> {
    [
        ("residual_scale", options.residual_scale.is_some()),
        ("config", options.config.is_some()),
        ("heads", options.heads.is_some()),
        ("mask", options.mask.is_some()),
        ("attn_scale", options.attn_scale.is_some()),
    ]
    .into_iter()
    .filter(|(name, given)| *given && !reads.contains(name))
    .map(|(name, _)| name)
    .collect()
}

/// A setting from the config's `key`, from the option `flag`, or neither;
/// where both give it they must agree.
fn setting<T: PartialEq + std::fmt::Display>(
    cfg: Option<&RunConfig>,
    key: &str,
    read: impl Fn(&RunConfig) -> Result<Option<T>, FileError>,
    option: Option<T>,
    flag: &str,
) -> Result<Option<T>, FileError> {
    let Some(c) = cfg else { return Ok(option) };
    match (read(c)?, option) {
        (Some(from_config), Some(o)) if from_config != o => {
            Err(c.refuse(key, format!("is {from_config}, but {flag} says {o}")))
        }
        (from_config, o) => Ok(from_config.or(o)),
    }
}

/// The research `Transformer`: `embed`, per layer `body.{i}.attn.*` and
/// `body.{i}.mlp.*`, then `head`; one `α` for the attention (`r = 1 − α`)
/// and the MLP's lerp residual.
fn transformer(
    names: &Names<'_>,
    checkpoint: &Path,
    options: &LoadOptions,
) -> Result<Inferred, FileError> {
    let layout = Layout::Transformer;
    let config = config::find(checkpoint, options.config.as_deref())?;
    let cfg = config.as_ref();
    if let Some(c) = cfg {
        c.check_keys(&[
            "n_head",
            "n_layers",
            "d_model",
            "alpha",
            "mask",
            "rope_base",
            "n_ctx",
        ])?;
    }
    let mut assumptions = Vec::new();
    let heads = heads(cfg, options, layout)?;
    let alpha = setting(
        cfg,
        "alpha",
        |c| c.f64("alpha"),
        options.residual_scale,
        "--residual-scale",
    )?
    .unwrap_or_else(|| {
        assumptions.push("α (alpha / --residual-scale) absent: 1, no residual".into());
        1.0
    });
    let mask = mask(cfg, options, &mut assumptions)?;
    let rotary = match cfg
        .map(|c| c.positive_f64("rope_base"))
        .transpose()?
        .flatten()
    {
        Some(base) => Some(base),
        None => {
            assumptions.push("rope_base absent: no rotary".into());
            None
        }
    };
    let depth = names.layers("body.", "attn.q1.weight")?;
    check_count(cfg, "n_layers", depth, "layers body.{i}")?;
    if let (Some(c), Some(&[d, _])) = (cfg, names.shape("embed.weight")) {
        check_count(Some(c), "d_model", d, "rows of embed.weight")?;
    }
    let mut blocks = vec![linear(names, "embed")];
    for i in 0..depth {
        let p = format!("body.{i}.attn.");
        let role = |r: &str| format!("{p}{r}.weight");
        let bias = |r: &str| names.optional(&format!("{p}{r}.bias"));
        blocks.push(BlockSpec::Attention(Box::new(AttentionSpec {
            weights: ["q1", "k1", "q2", "k2", "v", "o"].map(role),
            biases: ["q1", "k1", "q2", "k2", "v", "o"].map(bias),
            heads,
            mask: mask.clone(),
            rotary_base: rotary,
            scale: Some(alpha),
            skip: Some(1.0 - alpha),
            score_scale: None,
        })));
        blocks.push(mlp(names, &format!("body.{i}.mlp."), Some(alpha)));
    }
    blocks.push(linear(names, "head"));
    // α is the residual scale here; the LM's attn_scale is not read.
    let reads = ["residual_scale", "config", "heads", "mask"];
    sequence_layout(
        layout,
        blocks,
        config,
        assumptions,
        unused_options(options, &reads),
    )
}

/// A sequence layout read with `config`.
fn sequence_layout(
    layout: Layout,
    blocks: Vec<BlockSpec>,
    config: Option<RunConfig>,
    assumptions: Vec<String>,
    unused: Vec<&'static str>,
) -> Result<Inferred, FileError> {
    Ok(Inferred {
        layout,
        spec: LayoutSpec {
            blocks,
            sequence: true,
        },
        // A native context of no positions is no model's.
        native_context: config
            .as_ref()
            .map(|c| c.positive("n_ctx"))
            .transpose()?
            .flatten(),
        config: config.map(|c| c.path),
        assumptions,
        unused,
    })
}

/// `n_head` from the config or `--heads`; one of them is needed.
fn heads(
    cfg: Option<&RunConfig>,
    options: &LoadOptions,
    layout: Layout,
) -> Result<usize, FileError> {
    setting(
        cfg,
        "n_head",
        |c| c.usize("n_head"),
        options.heads,
        "--heads",
    )?
    .ok_or(FileError::NeedsConfig {
        layout: layout.name(),
        what: "the number of heads (n_head)",
        flag: "--heads",
    })
}

/// The mask: `mask` in the config, or the option, else causal.
fn mask(
    cfg: Option<&RunConfig>,
    options: &LoadOptions,
    assumptions: &mut Vec<String>,
) -> Result<Mask, FileError> {
    /// A mask that prints as its name, for [`setting`].
    #[derive(PartialEq)]
    struct Named(Mask);
    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0.name())
        }
    }
    let read = |c: &RunConfig| match c.str("mask")? {
        Some(name) => super::spec::parse_mask(name)
            .map(|m| Some(Named(m)))
            .ok_or_else(|| c.refuse("mask", format!("{name:?} is not causal, none or diag"))),
        None => Ok(None),
    };
    let option = options.mask.clone().map(Named);
    match setting(cfg, "mask", read, option, "--mask")? {
        Some(Named(m)) => Ok(m),
        None => {
            assumptions.push("mask absent: causal".into());
            Ok(Mask::Causal)
        }
    }
}

/// A count the config gives must be what the tensors say.
fn check_count(
    cfg: Option<&RunConfig>,
    key: &str,
    found: usize,
    what: &str,
) -> Result<(), FileError> {
    let Some(c) = cfg else { return Ok(()) };
    match c.usize(key)? {
        Some(n) if n != found => Err(c.refuse(
            key,
            format!("is {n}, but the checkpoint has {found} {what}"),
        )),
        _ => Ok(()),
    }
}

/// The keys of an `AttentionLM` run config.
const LM_KEYS: [&str; 12] = [
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
    "use_rmsnorm_qk",
];

/// The research group's attention-only language model, as its training
/// runs save it: an embedding table, `layers.{i}` of bilinear (or
/// quadratic) attention with an additive residual, and an unembedding with
/// an optional final scalar norm folded in.
fn attention_lm(
    names: &Names<'_>,
    checkpoint: &Path,
    options: &LoadOptions,
) -> Result<Inferred, FileError> {
    let layout = Layout::AttentionLm;
    let config = config::find(checkpoint, options.config.as_deref())?;
    let cfg = config.as_ref();
    let mut assumptions = Vec::new();
    if let Some(c) = cfg {
        c.check_keys(&LM_KEYS)?;
        // What is not polynomial is refused, naming the key.
        match c.str("attn_type")? {
            None | Some("bilinear" | "quadratic") => {}
            Some(other) => {
                return Err(c.refuse(
                    "attn_type",
                    format!("{other:?} attention is not polynomial; only bilinear and quadratic are exact"),
                ));
            }
        }
        let norm_type = c.str("norm_type")?;
        if c.list_len("norm_places")?.unwrap_or(0) > 0 && norm_type.is_some_and(|t| t != "none") {
            return Err(c.refuse(
                "norm_places",
                format!(
                    "normalisation ({}) inside the network is not polynomial",
                    norm_type.unwrap_or_default()
                ),
            ));
        }
        if c.bool("use_rmsnorm_qk")? == Some(true) {
            return Err(c.refuse("use_rmsnorm_qk", "RMS-normalised q/k are not polynomial"));
        }
    }
    let depth = names.layers("layers.", "v.weight")?;
    let quadratic = (0..depth).any(|i| names.has(&format!("layers.{i}.q.weight")));
    let bilinear = (0..depth).any(|i| names.has(&format!("layers.{i}.q1.weight")));
    if quadratic && bilinear {
        return Err(FileError::UnknownLayout {
            reason: "some layers have q.weight (quadratic) and some q1.weight (bilinear)".into(),
        });
    }
    let attn_type = if quadratic { "quadratic" } else { "bilinear" };
    if let Some(c) = cfg
        && let Some(t) = c.str("attn_type")?
        && depth > 0
        && t != attn_type
    {
        return Err(c.refuse(
            "attn_type",
            format!(
                "is {t:?}, but the checkpoint's layers have {} (attn_type {attn_type:?})",
                if quadratic { "q.weight" } else { "q1.weight" }
            ),
        ));
    }
    let heads = heads(cfg, options, layout)?;
    let alpha = setting(
        cfg,
        "attn_scale",
        |c| c.f64("attn_scale"),
        options.attn_scale,
        "--attn-scale",
    )?
    // No default: the research codes disagree (0.2 and 0.35).
    .ok_or(FileError::NeedsConfig {
        layout: layout.name(),
        what: "the attention scale (attn_scale)",
        flag: "--attn-scale",
    })?;
    let rotary = match cfg
        .map(|c| c.positive_f64("rope_base"))
        .transpose()?
        .flatten()
    {
        Some(base) => base,
        None => {
            assumptions.push(format!("rope_base absent: {DEFAULT_ROTARY_BASE}"));
            DEFAULT_ROTARY_BASE
        }
    };
    let mask = match &options.mask {
        Some(m) => m.clone(),
        None => Mask::Causal,
    };
    let score: &[&str] = if quadratic {
        &["q", "k"]
    } else {
        &["q1", "k1", "q2", "k2"]
    };
    let mut with_bias = None;
    for i in 0..depth {
        let has = score
            .iter()
            .filter(|r| names.has(&format!("layers.{i}.{r}.bias")))
            .count();
        if has != 0 && has != score.len() {
            return Err(FileError::MissingTensor {
                tensor: format!("layers.{i}.{}.bias", score[0]),
                role: format!("layer {i}: q/k biases must be all present or all absent"),
            });
        }
        match with_bias {
            None => with_bias = Some(has != 0),
            Some(b) if b != (has != 0) => {
                return Err(FileError::UnknownLayout {
                    reason: format!("layer {i} differs from layer 0 in having q/k biases"),
                });
            }
            _ => {}
        }
    }
    if let (Some(c), Some(b)) = (cfg, with_bias)
        && let Some(u) = c.bool("use_bias_qk")?
        && u != b
    {
        return Err(c.refuse(
            "use_bias_qk",
            format!(
                "is {u}, but the checkpoint's layers {} q/k biases (layers.0.{}.bias)",
                if b { "have" } else { "have no" },
                score[0]
            ),
        ));
    }
    let embed = names.shape("embed.weight");
    if let Some(c) = cfg {
        check_count(Some(c), "n_layers", depth, "layers.{i}")?;
        if let Some(&[vocab, d]) = embed {
            check_count(
                Some(c),
                "vocab_size",
                vocab,
                "rows of embed.weight [vocab, d]",
            )?;
            check_count(Some(c), "d_model", d, "columns of embed.weight [vocab, d]")?;
            if let Some(h) = c.usize("n_head")?
                && (h == 0 || d % h != 0)
            {
                return Err(c.refuse("n_head", format!("{h} does not divide d_model {d}")));
            }
        }
        if let (Some(&[vocab, _]), Some(&[unembed, _])) = (embed, names.shape("unembed.weight"))
            && unembed != vocab
        {
            return Err(c.refuse(
                "vocab_size",
                format!("embed.weight has {vocab} rows but unembed.weight {unembed}"),
            ));
        }
    }
    let mut blocks = vec![BlockSpec::Linear {
        weight: "embed.weight".into(),
        bias: None,
        transpose: true,
        energy: None,
    }];
    for i in 0..depth {
        let p = format!("layers.{i}.");
        let w = |r: &str| format!("{p}{r}.weight");
        let b = |r: &str| names.optional(&format!("{p}{r}.bias"));
        let [s1, k1, s2, k2] = if quadratic {
            ["q", "k", "q", "k"]
        } else {
            ["q1", "k1", "q2", "k2"]
        };
        blocks.push(BlockSpec::Attention(Box::new(AttentionSpec {
            weights: [w(s1), w(k1), w(s2), w(k2), w("v"), w("o")],
            biases: [b(s1), b(k1), b(s2), b(k2), b("v"), b("o")],
            heads,
            mask: mask.clone(),
            rotary_base: Some(rotary),
            scale: Some(alpha),
            skip: Some(1.0),
            score_scale: None,
        })));
    }
    blocks.push(BlockSpec::Linear {
        weight: "unembed.weight".into(),
        bias: names.optional("unembed.bias"),
        transpose: false,
        energy: names.optional("final_norm.running_mean_energy"),
    });
    // The residual is additive (r = 1); there is no residual scale.
    let reads = ["config", "heads", "mask", "attn_scale"];
    sequence_layout(
        layout,
        blocks,
        config,
        assumptions,
        unused_options(options, &reads),
    )
}
