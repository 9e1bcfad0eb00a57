//! The research layouts, recognised by tensor names when a file has no
//! `tensor_similarity` metadata ([SPEC §5](crate::spec#5-model-files), [§8](crate::spec#8-sequence-model-files)).
//!
//! [`detect`] names the layout the tensor names fit; [`layout_spec`] then
//! names every block's tensors from the names and the file's resolved
//! [`Architecture`], checking what the run's config declares (layer
//! counts, widths, attention kind, biases) against the tensors. The config
//! itself is read once, in [`Architecture::resolve`].

use std::collections::HashMap;

use super::arch::{Architecture, AttentionSettings, NormPlan, ScoreKind};
use super::norm::{NormPlace, NormSpec, NormType};
use super::raw::RawTensor;
use super::spec::{AttentionSpec, BlockSpec, Factors, LayoutSpec, Residual};
use crate::error::{FileError, listed};
use crate::io::Layout;

/// The research layout whose names the tensors fit: the attention-only LM
/// (`layers.…`, `unembed.weight`), the Transformer (`body.{i}.attn.…`),
/// `bi_linear`/`projection`, or `embed`/`body`/`head`, looked for in that
/// order. Names that fit none, or a layout whose skeleton is missing while
/// tensors it does not know are present (a model of its own naming that
/// shares `embed.weight` with a research layout), are
/// [`FileError::UnknownLayout`] naming the closest layout, what it misses
/// and how to describe the model instead.
pub(crate) fn detect(names: &Names<'_>) -> Result<Layout, FileError> {
    let found = if names.has_prefix("layers.") || names.has("unembed.weight") {
        Some(Layout::AttentionLm)
    } else if names.has_prefix("body.") && names.0.keys().any(|n| n.contains(".attn.")) {
        Some(Layout::Transformer)
    } else if names.has_prefix("bi_linear.") || names.has_prefix("projection.") {
        Some(Layout::BiLinearProjection)
    } else if names.has_prefix("embed.") || names.has_prefix("body.") || names.has_prefix("head.") {
        Some(Layout::EmbedBodyHead)
    } else {
        None
    };
    if let Some(layout) = found {
        let fit = Fit::of(layout, names);
        if fit.unexplained.is_empty() || fit.missing.is_empty() {
            // Extra tensors beside a whole skeleton are named one by one
            // later (an unused tensor, a norm); a missing tensor with no
            // stranger is named with its role.
            return Ok(layout);
        }
        return Err(closest(names, Some(fit)));
    }
    Err(closest(names, None))
}

/// The research layouts, in the order [`detect`] tries them.
const RESEARCH_LAYOUTS: [Layout; 4] = [
    Layout::AttentionLm,
    Layout::Transformer,
    Layout::BiLinearProjection,
    Layout::EmbedBodyHead,
];

/// How a research layout explains a file's tensor names.
struct Fit<'a> {
    layout: Layout,
    /// Names the layout reads.
    explained: Vec<&'a str>,
    /// Names it has no role for.
    unexplained: Vec<&'a str>,
    /// The weights of its skeleton that are absent (of the layers present,
    /// or of layer 0 where none is).
    missing: Vec<String>,
}

impl<'a> Fit<'a> {
    fn of(layout: Layout, names: &Names<'a>) -> Self {
        let mut sorted: Vec<&'a str> = names.0.keys().map(String::as_str).collect();
        sorted.sort_unstable();
        let (explained, unexplained) = sorted.into_iter().partition(|n| explains(layout, n));
        let missing = skeleton(layout, names)
            .into_iter()
            .filter(|n| !names.has(n))
            .collect();
        Self {
            layout,
            explained,
            unexplained,
            missing,
        }
    }
}

/// Whether `layout` has a role for the tensor `name`.
fn explains(layout: Layout, name: &str) -> bool {
    // `prefix{i}.rest` with a layer number i.
    let layer = |prefix: &str| -> Option<&str> {
        let (i, rest) = name.strip_prefix(prefix)?.split_once('.')?;
        i.parse::<usize>().ok().map(|_| rest)
    };
    let param = |rest: &str, roles: &[&str]| {
        rest.split_once('.')
            .is_some_and(|(r, p)| roles.contains(&r) && (p == "weight" || p == "bias"))
    };
    let linear =
        |prefix: &str| name == format!("{prefix}.weight") || name == format!("{prefix}.bias");
    match layout {
        Layout::AttentionLm => {
            ["embed.weight", "unembed.weight", "unembed.bias"].contains(&name)
                || name.starts_with("embed_norm.")
                || name.starts_with("final_norm.")
                || layer("layer_norms.").is_some()
                || layer("layers.")
                    .is_some_and(|rest| param(rest, &["q1", "k1", "q2", "k2", "q", "k", "v", "o"]))
        }
        Layout::Transformer => {
            linear("embed")
                || linear("head")
                || layer("body.").is_some_and(|rest| {
                    rest.strip_prefix("attn.")
                        .is_some_and(|r| param(r, &["q1", "k1", "q2", "k2", "v", "o"]))
                        || rest
                            .strip_prefix("mlp.")
                            .is_some_and(|r| param(r, &["l", "r", "d"]))
                })
        }
        Layout::BiLinearProjection => linear("bi_linear") || linear("projection"),
        Layout::EmbedBodyHead | Layout::Described => {
            linear("embed")
                || linear("head")
                || layer("body.").is_some_and(|rest| param(rest, &["l", "r", "d"]))
        }
    }
}

/// The weights `layout` needs, for the layers the names have (layer 0
/// where they have none).
fn skeleton(layout: Layout, names: &Names<'_>) -> Vec<String> {
    let layers = |prefix: &str| -> Vec<usize> {
        let found = names.indices(prefix);
        if found.is_empty() {
            vec![0]
        } else {
            found.into_iter().collect()
        }
    };
    let per_layer = |prefix: &str, roles: &[&str]| -> Vec<String> {
        (layers(prefix).into_iter())
            .flat_map(|i| roles.iter().map(move |r| format!("{prefix}{i}.{r}.weight")))
            .collect()
    };
    match layout {
        Layout::AttentionLm => {
            let quadratic = names.0.keys().any(|n| n.ends_with(".q.weight"));
            let roles: &[&str] = if quadratic {
                &["q", "k", "v", "o"]
            } else {
                &["q1", "k1", "q2", "k2", "v", "o"]
            };
            let mut needed = vec!["embed.weight".to_owned()];
            needed.extend(per_layer("layers.", roles));
            needed.push("unembed.weight".into());
            needed
        }
        Layout::Transformer => {
            let mut needed = vec!["embed.weight".to_owned()];
            needed.extend(per_layer(
                "body.",
                &[
                    "attn.q1", "attn.k1", "attn.q2", "attn.k2", "attn.v", "attn.o", "mlp.l",
                    "mlp.r", "mlp.d",
                ],
            ));
            needed.push("head.weight".into());
            needed
        }
        Layout::BiLinearProjection => vec!["bi_linear.weight".into(), "projection.weight".into()],
        Layout::EmbedBodyHead | Layout::Described => {
            let mut needed = vec!["embed.weight".to_owned()];
            needed.extend(per_layer("body.", &["l", "r", "d"]));
            needed.push("head.weight".into());
            needed
        }
    }
}

/// The error for names no research layout fits: the closest one (`fit`,
/// or the one explaining most names), the names it expects that are
/// missing, those it does not know, and how to describe the model.
fn closest(names: &Names<'_>, fit: Option<Fit<'_>>) -> FileError {
    let fit = fit.unwrap_or_else(|| {
        (RESEARCH_LAYOUTS.into_iter())
            .map(|layout| Fit::of(layout, names))
            .max_by_key(|f| (f.explained.len(), std::cmp::Reverse(f.missing.len())))
            .expect("four layouts")
    });
    // Few names per list: the message is one line, whatever the file.
    let quoted = |list: &[&str], limit| listed(list.iter().map(|n| format!("{n:?}")), limit);
    let describe = "describe the model with layout=[…] in Python or the \"tensor_similarity\" \
                    metadata in a file (the file format guide has examples)";
    let reason = if fit.explained.is_empty() {
        format!(
            "no \"tensor_similarity\" metadata, and the tensors [{}] fit none of \
             embed/body.{{i}}.{{l,r,d}}/head, bi_linear/projection, \
             embed/body.{{i}}.{{attn,mlp}}/head or embed/layers.{{i}}/unembed; {describe}",
            quoted(&fit.unexplained, 4),
        )
    } else {
        let missing: Vec<&str> = fit.missing.iter().map(String::as_str).collect();
        format!(
            "no \"tensor_similarity\" metadata, and no research layout fits the tensors: the \
             closest, {}, reads {} of {}, misses [{}] and has no role for [{}]; {describe}",
            fit.layout.name(),
            fit.explained.len(),
            fit.explained.len() + fit.unexplained.len(),
            quoted(&missing, 2),
            quoted(&fit.unexplained, 2),
        )
    };
    FileError::UnknownLayout { reason }
}

/// The blocks of a file with the research layout `arch.layout`, named from
/// its tensors and checked against what its config declares.
pub(crate) fn layout_spec(
    names: &Names<'_>,
    arch: &mut Architecture,
) -> Result<LayoutSpec, FileError> {
    let (blocks, sequence) = match (arch.layout, &arch.attention) {
        (Layout::BiLinearProjection, _) => (bilinear_projection(names, arch.residual), false),
        (Layout::EmbedBodyHead, _) => (embed_body_head(names, arch.residual)?, false),
        (Layout::Transformer, Some(attention)) => (transformer(names, arch, attention)?, true),
        (Layout::AttentionLm, Some(attention)) => {
            let attention = attention.clone();
            (attention_lm(names, arch, &attention)?, true)
        }
        (layout, _) => {
            return Err(FileError::UnknownLayout {
                reason: format!("the {} layout is not read off tensor names", layout.name()),
            });
        }
    };
    Ok(LayoutSpec {
        blocks,
        sequence,
        axes: Default::default(),
    })
}

/// `bi_linear` (a fused bilinear block without down projection), then
/// `projection`.
fn bilinear_projection(names: &Names<'_>, residual: Residual) -> Vec<BlockSpec> {
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
        linear(names, "projection"),
    ]
}

/// `embed`, bilinear blocks `body.{i}.{l,r,d}`, then `head`.
fn embed_body_head(names: &Names<'_>, residual: Residual) -> Result<Vec<BlockSpec>, FileError> {
    let mut blocks = vec![linear(names, "embed")];
    for i in 0..names.layers("body.", "l.weight")? {
        blocks.push(mlp(names, &format!("body.{i}."), residual));
    }
    blocks.push(linear(names, "head"));
    Ok(blocks)
}

/// The tensor names of a file.
pub(crate) struct Names<'a>(pub(crate) &'a HashMap<String, RawTensor>);

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

    /// The layer numbers `i` of the names `prefix{i}.…`, sorted.
    fn indices(&self, prefix: &str) -> std::collections::BTreeSet<usize> {
        (self.0.keys())
            .filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok())
            .collect()
    }

    /// The number of layers `prefix{i}.…` (numbered from 0; a gap is an
    /// error naming the missing layer's `first` tensor).
    fn layers(&self, prefix: &str, first: &str) -> Result<usize, FileError> {
        // The indices present, sorted: the first gap is the first index
        // that is not its own position. (A name like `layers.999999999.x`
        // costs no more than any other: nothing loops up to what a file claims.)
        let present = self.indices(prefix);
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
        pre_norm: None,
        post_norm: None,
    }
}

/// A bilinear block `p.l`, `p.r`, `p.d` with whatever biases are present.
fn mlp(names: &Names<'_>, p: &str, residual: Residual) -> BlockSpec {
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

/// The research `Transformer`: `embed`, per layer `body.{i}.attn.*` and
/// `body.{i}.mlp.*`, then `head`; one `α` for the attention (`r = 1 − α`)
/// and the MLP's lerp residual.
fn transformer(
    names: &Names<'_>,
    arch: &Architecture,
    attention: &AttentionSettings,
) -> Result<Vec<BlockSpec>, FileError> {
    let depth = names.layers("body.", "attn.q1.weight")?;
    let declared = &arch.declared;
    arch.check_count("n_layer", declared.n_layer, depth, "layers body.{i}")?;
    if let Some(&[d, _]) = names.shape("embed.weight") {
        arch.check_count("d_model", declared.d_model, d, "rows of embed.weight")?;
    }
    if let Some(bias) = declared.bias {
        transformer_biases(names, depth, bias, arch)?;
    }
    let mut blocks = vec![linear(names, "embed")];
    for i in 0..depth {
        let p = format!("body.{i}.attn.");
        let role = |r: &str| format!("{p}{r}.weight");
        let bias = |r: &str| names.optional(&format!("{p}{r}.bias"));
        blocks.push(attention_block(
            attention,
            ["q1", "k1", "q2", "k2", "v", "o"].map(role),
            ["q1", "k1", "q2", "k2", "v", "o"].map(bias),
        ));
        blocks.push(mlp(names, &format!("body.{i}.mlp."), arch.residual));
    }
    blocks.push(linear(names, "head"));
    Ok(blocks)
}

/// The research `Transformer`'s q/k biases as its config's `bias` says,
/// as `use_bias_qk` does for the LM: `true`, every layer has
/// `attn.{q1,k1,q2,k2}.bias`; `false`, none has any of them. (The other
/// biases, such as `mlp.d.bias`, are read wherever present.) A
/// disagreement names the first tensor missing or present.
fn transformer_biases(
    names: &Names<'_>,
    depth: usize,
    bias: bool,
    arch: &Architecture,
) -> Result<(), FileError> {
    let mut qk = (0..depth)
        .flat_map(|i| ["q1", "k1", "q2", "k2"].map(|r| format!("body.{i}.attn.{r}.bias")));
    let (disagreeing, found) = if bias {
        (qk.find(|n| !names.has(n)), "has no")
    } else {
        (qk.find(|n| names.has(n)), "has")
    };
    match disagreeing {
        Some(name) => Err(arch.refuse(
            "bias",
            format!("is {bias}, but the checkpoint {found} {name}"),
        )),
        None => Ok(()),
    }
}

/// One attention block with `attention`'s settings.
fn attention_block(
    attention: &AttentionSettings,
    weights: [String; 6],
    biases: [Option<String>; 6],
) -> BlockSpec {
    BlockSpec::Attention(Box::new(AttentionSpec {
        weights,
        biases,
        heads: attention.heads,
        mask: attention.mask.clone(),
        rotary_base: attention.rotary_base,
        scale: Some(attention.scale),
        skip: Some(attention.skip),
        score_scale: None,
        pre_norm: None,
    }))
}

/// The research group's attention-only language model, as its training
/// runs save it: an embedding table, `layers.{i}` of bilinear (or
/// quadratic) attention with an additive residual, and an unembedding with
/// an optional final scalar norm folded in.
fn attention_lm(
    names: &Names<'_>,
    arch: &mut Architecture,
    attention: &AttentionSettings,
) -> Result<Vec<BlockSpec>, FileError> {
    let depth = names.layers("layers.", "v.weight")?;
    let kind = lm_score_kind(names, depth, arch)?;
    let score = score_roles(kind);
    let with_bias = lm_qk_biases(names, depth, score)?;
    if let (Some(declared), Some(found)) = (arch.declared.use_bias_qk, with_bias)
        && declared != found
    {
        return Err(arch.refuse(
            "use_bias_qk",
            format!(
                "is {declared}, but the checkpoint's layers {} q/k biases (layers.0.{}.bias)",
                if found { "have" } else { "have no" },
                score[0]
            ),
        ));
    }
    check_lm_sizes(names, depth, arch)?;
    let mut norms = lm_norms(names, arch, depth)?;
    let mut blocks = vec![BlockSpec::Linear {
        weight: "embed.weight".into(),
        bias: None,
        transpose: true,
        pre_norm: None,
        post_norm: norms.remove(&NormPlace::PostEmbed),
    }];
    let [s1, k1, s2, k2] = match kind {
        ScoreKind::Quadratic => ["q", "k", "q", "k"],
        ScoreKind::Bilinear => ["q1", "k1", "q2", "k2"],
    };
    for i in 0..depth {
        let p = format!("layers.{i}.");
        let w = |r: &str| format!("{p}{r}.weight");
        let b = |r: &str| names.optional(&format!("{p}{r}.bias"));
        let mut block = attention_block(
            attention,
            [w(s1), w(k1), w(s2), w(k2), w("v"), w("o")],
            [b(s1), b(k1), b(s2), b(k2), b("v"), b("o")],
        );
        if let BlockSpec::Attention(a) = &mut block {
            a.pre_norm = norms.remove(&NormPlace::PreLayer(i));
        }
        blocks.push(block);
    }
    blocks.push(BlockSpec::Linear {
        weight: "unembed.weight".into(),
        bias: names.optional("unembed.bias"),
        transpose: false,
        pre_norm: norms.remove(&NormPlace::PreUnembed),
        post_norm: None,
    });
    Ok(blocks)
}

/// The LM's norms by place ([SPEC §8](crate::spec#8-sequence-model-files)):
/// those its config declares, checked against the tensors under
/// `embed_norm.`, `layer_norms.{i}.` and `final_norm.`; without a config,
/// those the tensor names show. A norm that depends on its input is refused
/// unless the norms are ignored (then every norm is read and removed).
fn lm_norms(
    names: &Names<'_>,
    arch: &mut Architecture,
    depth: usize,
) -> Result<HashMap<NormPlace, NormSpec>, FileError> {
    let places = std::iter::once(NormPlace::PostEmbed)
        .chain((0..depth).map(NormPlace::PreLayer))
        .chain(std::iter::once(NormPlace::PreUnembed));
    let mut norms = HashMap::new();
    for place in places {
        let prefix = format!("{}.", place.module());
        let mut present: Vec<&str> = (names.0.keys())
            .filter(|n| n.starts_with(&prefix))
            .map(String::as_str)
            .collect();
        present.sort_unstable();
        let spec = match &arch.declared.norms {
            Some(plan) => declared_norm(names, arch, plan, place, &present)?,
            None => seen_norm(names, arch, place, &present)?,
        };
        if let Some(spec) = spec {
            norms.insert(place, spec);
        }
    }
    // Norms of layers past the last are named as unused tensors by the build.
    if let Some(norm) = norms.values().find(|n| n.eps_assumed && !n.removed) {
        let how = if arch.config.is_some() {
            "norm_kwargs.eps absent"
        } else {
            "no run config: the norms are read from their tensor names, and eps"
        };
        arch.assume(format!(
            "{how}: {:e}, the research code's default for {}",
            norm.eps, norm.kind
        ));
    }
    Ok(norms)
}

/// The norm the config puts at `place`, if any: its tensors (all but the
/// counter must be present), and none other under the place's module.
fn declared_norm(
    names: &Names<'_>,
    arch: &Architecture,
    plan: &NormPlan,
    place: NormPlace,
    present: &[&str],
) -> Result<Option<NormSpec>, FileError> {
    let at = match place {
        NormPlace::PostEmbed => plan.post_embed,
        NormPlace::PreLayer(_) => plan.pre_layer,
        NormPlace::PreUnembed => plan.pre_unembed,
    };
    let Some(kind) = plan.kind.filter(|_| at) else {
        return match present.first() {
            Some(name) => Err(arch.refuse(
                "norm_places",
                format!(
                    "is {:?}{}, which puts no norm at {place}, but the checkpoint has {name}",
                    plan.places,
                    if plan.any() || plan.places.is_empty() {
                        ""
                    } else {
                        " with norm_type none"
                    }
                ),
            )),
            None => Ok(None),
        };
    };
    let module = place.module();
    let tensors = kind.tensors(&module, plan.affine);
    if let Some(stranger) = present
        .iter()
        .find(|n| !tensors.iter().any(|(_, t)| t == *n))
    {
        return Err(arch.refuse(
            "norm_type",
            format!(
                "is {kind}, whose {module} holds [{}], but the checkpoint has {stranger}",
                listed(tensors.iter().map(|(_, t)| t.clone()), 6)
            ),
        ));
    }
    let mut found = Vec::with_capacity(tensors.len());
    for (role, tensor) in tensors {
        if names.has(&tensor) {
            found.push((role, tensor));
        } else if role != "norm_counter" {
            return Err(FileError::MissingTensor {
                tensor,
                role: format!("the {kind} norm at {place} (model.norm_type, model.norm_places)"),
            });
        }
    }
    Ok(Some(NormSpec {
        kind,
        place,
        tensors: found,
        eps: plan.eps.unwrap_or(kind.default_eps()),
        eps_assumed: plan.eps.is_none(),
        removed: arch.ignore_norms,
    }))
}

/// Without a config, the norm the tensors under `place`'s module show:
/// `running_mean_energy` a `tok0_batch`, `bn.*` a `batchnorm`, a `weight`
/// (and `bias`) an RMSNorm (a LayerNorm), refused unless the norms are
/// ignored. A norm that holds no tensors (`tok0`, `maxrmsnorm`) cannot be
/// seen: the architecture says so among its assumptions.
fn seen_norm(
    names: &Names<'_>,
    arch: &Architecture,
    place: NormPlace,
    present: &[&str],
) -> Result<Option<NormSpec>, FileError> {
    if present.is_empty() {
        return Ok(None);
    }
    let module = place.module();
    let has = |name: &str| names.has(&format!("{module}.{name}"));
    let (kind, affine) = if has("running_mean_energy") {
        (NormType::Tok0Batch, false)
    } else if has("bn.running_mean") || has("bn.running_var") {
        (NormType::BatchNorm, has("bn.weight") || has("bn.bias"))
    } else if has("weight") && has("bias") {
        (NormType::LayerNorm, true)
    } else if has("weight") {
        (NormType::RmsNorm, true)
    } else {
        // Nothing a research norm holds: named as unused by the build.
        return Ok(None);
    };
    if !arch.ignore_norms
        && let Some(why) = kind.input_dependent()
    {
        return Err(FileError::InputDependentNorm {
            config: None,
            found: format!(
                "{} (no run config: a {} at {place}, by its tensors)",
                listed(present.iter().map(|n| n.to_string()), 3),
                if kind == NormType::LayerNorm {
                    "LayerNorm"
                } else {
                    "RMSNorm"
                },
            ),
            why: why.into(),
        });
    }
    let tensors = (kind.tensors(&module, affine).into_iter())
        .filter(|(_, t)| names.has(t))
        .collect();
    Ok(Some(NormSpec {
        kind,
        place,
        tensors,
        eps: kind.default_eps(),
        eps_assumed: true,
        removed: arch.ignore_norms,
    }))
}

/// The q/k roles of a layer whose scores are `kind`.
fn score_roles(kind: ScoreKind) -> &'static [&'static str] {
    match kind {
        ScoreKind::Quadratic => &["q", "k"],
        ScoreKind::Bilinear => &["q1", "k1", "q2", "k2"],
    }
}

/// Whether the LM's layers are quadratic (`q.weight`) or bilinear
/// (`q1.weight`): all alike, and as the config's `attn_type` says.
fn lm_score_kind(
    names: &Names<'_>,
    depth: usize,
    arch: &Architecture,
) -> Result<ScoreKind, FileError> {
    let quadratic = (0..depth).any(|i| names.has(&format!("layers.{i}.q.weight")));
    let bilinear = (0..depth).any(|i| names.has(&format!("layers.{i}.q1.weight")));
    if quadratic && bilinear {
        return Err(FileError::UnknownLayout {
            reason: "some layers have q.weight (quadratic) and some q1.weight (bilinear)".into(),
        });
    }
    let kind = if quadratic {
        ScoreKind::Quadratic
    } else {
        ScoreKind::Bilinear
    };
    if let Some(declared) = arch.declared.attn_type
        && depth > 0
        && declared != kind
    {
        return Err(arch.refuse(
            "attn_type",
            format!(
                "is {:?}, but the checkpoint's layers have {} (attn_type {:?})",
                declared.name(),
                if quadratic { "q.weight" } else { "q1.weight" },
                kind.name()
            ),
        ));
    }
    Ok(kind)
}

/// Whether the LM's layers have q/k biases (`None`: no layers): in each
/// layer all or none of `score`'s, and the same in every layer.
fn lm_qk_biases(
    names: &Names<'_>,
    depth: usize,
    score: &[&str],
) -> Result<Option<bool>, FileError> {
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
    Ok(with_bias)
}

/// The LM config's sizes against the tensors: `n_layers`, `vocab_size`
/// and `d_model` against `embed.weight` `[vocab, d]`, `n_head` dividing
/// `d_model`, and `unembed.weight` with as many rows as `embed.weight`.
fn check_lm_sizes(names: &Names<'_>, depth: usize, arch: &Architecture) -> Result<(), FileError> {
    if arch.config.is_none() {
        return Ok(());
    }
    let declared = &arch.declared;
    arch.check_count("n_layers", declared.n_layers, depth, "layers.{i}")?;
    let embed = names.shape("embed.weight");
    if let Some(&[vocab, d]) = embed {
        let rows = "rows of embed.weight [vocab, d]";
        arch.check_count("vocab_size", declared.vocab_size, vocab, rows)?;
        let columns = "columns of embed.weight [vocab, d]";
        arch.check_count("d_model", declared.d_model, d, columns)?;
        if let Some(h) = declared.n_head
            && (h == 0 || d % h != 0)
        {
            return Err(arch.refuse("n_head", format!("{h} does not divide d_model {d}")));
        }
    }
    if let (Some(&[vocab, _]), Some(&[unembed, _])) = (embed, names.shape("unembed.weight"))
        && unembed != vocab
    {
        return Err(arch.refuse(
            "vocab_size",
            format!("embed.weight has {vocab} rows but unembed.weight {unembed}"),
        ));
    }
    Ok(())
}
