//! The layout of a model file: which tensor plays which role in which block,
//! and its JSON form, `__metadata__["tensor_similarity"]` ([SPEC §5](crate::spec#5-model-files)).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::norm::NormSpec;
use crate::block::Mask;
use crate::error::FileError;

/// The version of the metadata schema this crate reads and writes.
pub(crate) const VERSION: u64 = 1;

/// The metadata key.
pub(crate) const KEY: &str = "tensor_similarity";

/// A whole layout: the blocks, and whether the model reads sequences.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LayoutSpec {
    pub(crate) blocks: Vec<BlockSpec>,
    /// The top-level `"sequence"` flag ([SPEC §8](crate::spec#8-sequence-model-files)); attention anywhere implies it.
    pub(crate) sequence: bool,
    /// The roles stored in another axis order than `[out, in]` (`[out]`
    /// for a bias), by block and role: the metadata's `"{role}_axes"`.
    pub(crate) axes: BTreeMap<(usize, &'static str), Axes>,
}

/// An axis of a stored weight, by what it indexes in `y = W x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    /// The output (`W`'s rows).
    Out,
    /// The input (`W`'s columns).
    In,
    /// The head: with the head-side axis it makes `W`'s head-major rows
    /// (q, k, v) or columns (o).
    Heads,
}

/// How a role's tensor is stored when it is not `[out, in]`: its axes in
/// storage order ([`Axis`]), as the metadata's `"{role}_axes"` names them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Axes {
    /// The names as written (`"d_model"`, `"heads"`, …), for the JSON form
    /// and error messages.
    pub(crate) names: Vec<String>,
    /// What each stored axis indexes.
    pub(crate) order: Vec<Axis>,
    /// The axis a `heads` axis merges with, outermost: [`Axis::Out`] for
    /// q, k, v (rows `h e + i`), [`Axis::In`] for o (columns `h e_v + i`).
    pub(crate) head_side: Axis,
    /// The block's head count, which a `heads` axis must have.
    pub(crate) heads: Option<usize>,
}

impl Axes {
    /// The stored order as written: `[heads, d_model, d_head]`.
    pub(crate) fn written(&self) -> String {
        format!("[{}]", self.names.join(", "))
    }
}

/// One block of a layout, naming its tensors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BlockSpec {
    Linear {
        weight: String,
        bias: Option<String>,
        /// The tensor is `[in, out]` (an embedding table) and `W` is its transpose.
        transpose: bool,
        /// A norm the block reads its input through (`final_norm` before
        /// the unembedding; inferred layouts only, not metadata).
        pre_norm: Option<NormSpec>,
        /// A norm applied to the block's output (`embed_norm` after the
        /// embedding; inferred layouts only).
        post_norm: Option<NormSpec>,
    },
    Bilinear {
        factors: Factors,
        down: Option<String>,
        down_bias: Option<String>,
        residual: Residual,
    },
    Attention(Box<AttentionSpec>),
}

/// A bilinear block's output scale `α` and skip weight `r`
/// ([SPEC §1](crate::spec#1-blocks-and-models)): `y = α·(D(Lx ∘ Rx) + b_D) + r·x`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Residual {
    pub(crate) scale: f64,
    pub(crate) skip: f64,
}

impl Residual {
    /// No residual: `α = 1`, `r = 0`.
    pub(crate) const NONE: Self = Self {
        scale: 1.0,
        skip: 0.0,
    };

    /// The research code's lerp `s`: `α = s`, `r = 1 − s`.
    pub(crate) fn lerp(s: f64) -> Self {
        Self {
            scale: s,
            skip: 1.0 - s,
        }
    }
}

/// A bilinear attention block's tensors and options; `None` options take
/// the defaults of [SPEC §8](crate::spec#8-sequence-model-files).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AttentionSpec {
    /// `q1, k1, q2, k2, v, o` (quadratic attention names `q` and `k` twice).
    pub(crate) weights: [String; 6],
    pub(crate) biases: [Option<String>; 6],
    pub(crate) heads: usize,
    pub(crate) mask: Mask,
    /// `None`: no rotary (JSON `null`); absent in JSON means the default base.
    pub(crate) rotary_base: Option<f64>,
    pub(crate) scale: Option<f64>,
    pub(crate) skip: Option<f64>,
    pub(crate) score_scale: Option<f64>,
    /// A norm that `q1 … v` read the stream through (`layer_norms.{i}`;
    /// inferred layouts only): the skip carries the unnormed stream.
    pub(crate) pre_norm: Option<NormSpec>,
}

/// The roles of [`AttentionSpec::weights`] and their biases, as metadata names them.
pub(crate) const ATTENTION_ROLES: [&str; 6] = ["q1", "k1", "q2", "k2", "v", "o"];
pub(crate) const ATTENTION_BIAS_ROLES: [&str; 6] = [
    "q1_bias", "k1_bias", "q2_bias", "k2_bias", "v_bias", "o_bias",
];

/// The masks a file can name.
pub(crate) fn parse_mask(name: &str) -> Option<Mask> {
    match name {
        "causal" => Some(Mask::Causal),
        "none" => Some(Mask::None),
        "diag" => Some(Mask::Diagonal),
        _ => None,
    }
}

/// How a bilinear block stores `L` and `R`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Factors {
    Split {
        left: String,
        right: String,
        left_bias: Option<String>,
        right_bias: Option<String>,
    },
    /// `[L; R]` stacked by rows, as GLU-style layers store it.
    Fused { fused: String, bias: Option<String> },
}

impl BlockSpec {
    /// Every `(role, tensor)` pair of the block.
    pub(crate) fn tensors(&self) -> Vec<(&'static str, &str)> {
        let roles: Vec<(&'static str, Option<&String>)> = match self {
            BlockSpec::Linear {
                weight,
                bias,
                pre_norm,
                post_norm,
                ..
            } => {
                let mut roles = vec![("weight", Some(weight)), ("bias", bias.as_ref())];
                for norm in [pre_norm, post_norm].into_iter().flatten() {
                    roles.extend(norm.tensors.iter().map(|(role, t)| (*role, Some(t))));
                }
                roles
            }
            BlockSpec::Attention(a) => ATTENTION_ROLES
                .iter()
                .zip(&a.weights)
                .map(|(role, w)| (*role, Some(w)))
                .chain(
                    ATTENTION_BIAS_ROLES
                        .iter()
                        .zip(&a.biases)
                        .map(|(role, b)| (*role, b.as_ref())),
                )
                .chain(
                    (a.pre_norm.iter())
                        .flat_map(|n| n.tensors.iter().map(|(role, t)| (*role, Some(t)))),
                )
                .collect(),
            BlockSpec::Bilinear {
                factors,
                down,
                down_bias,
                ..
            } => {
                let mut roles = match factors {
                    Factors::Split {
                        left,
                        right,
                        left_bias,
                        right_bias,
                    } => vec![
                        ("left", Some(left)),
                        ("right", Some(right)),
                        ("left_bias", left_bias.as_ref()),
                        ("right_bias", right_bias.as_ref()),
                    ],
                    Factors::Fused { fused, bias } => {
                        vec![("fused", Some(fused)), ("fused_bias", bias.as_ref())]
                    }
                };
                roles.push(("down", down.as_ref()));
                roles.push(("down_bias", down_bias.as_ref()));
                roles
            }
        };
        roles
            .into_iter()
            .filter_map(|(role, name)| Some((role, name?.as_str())))
            .collect()
    }

    fn to_json(&self, axes: &[(&'static str, &Axes)]) -> Value {
        let mut m = Map::new();
        m.insert(
            "kind".into(),
            json!(match self {
                BlockSpec::Linear { .. } => "linear",
                BlockSpec::Bilinear { .. } => "bilinear",
                BlockSpec::Attention(_) => "attention",
            }),
        );
        for (role, name) in self.tensors() {
            m.insert(role.into(), json!(name));
        }
        for (role, axes) in axes {
            m.insert(format!("{role}_axes"), json!(axes.names));
        }
        match self {
            BlockSpec::Bilinear { residual, .. } if *residual != Residual::NONE => {
                // A lerp is written as the research code's one number.
                if *residual == Residual::lerp(residual.scale) {
                    m.insert("residual".into(), json!(residual.scale));
                } else {
                    m.insert("scale".into(), json!(residual.scale));
                    m.insert("skip".into(), json!(residual.skip));
                }
            }
            BlockSpec::Linear {
                transpose: true, ..
            } => {
                m.insert("transpose".into(), json!(true));
            }
            BlockSpec::Attention(a) => {
                m.insert("heads".into(), json!(a.heads));
                m.insert("mask".into(), json!(a.mask.name()));
                m.insert("rotary_base".into(), json!(a.rotary_base));
                for (key, x) in [
                    ("scale", a.scale),
                    ("skip", a.skip),
                    ("score_scale", a.score_scale),
                ] {
                    if let Some(x) = x {
                        m.insert(key.into(), json!(x));
                    }
                }
            }
            _ => {}
        }
        Value::Object(m)
    }
}

/// The metadata JSON for a layout. The `"sequence"` flag is written only
/// where no attention block implies it.
pub(crate) fn to_json(layout: &LayoutSpec) -> String {
    let blocks: Vec<Value> = (layout.blocks.iter().enumerate())
        .map(|(i, block)| {
            let axes: Vec<_> = (layout.axes.range((i, "")..(i + 1, "")))
                .map(|(&(_, role), axes)| (role, axes))
                .collect();
            block.to_json(&axes)
        })
        .collect();
    let mut root = json!({ "version": VERSION, "blocks": blocks });
    if layout.sequence && !layout.has_attention() {
        root["sequence"] = json!(true);
    }
    root.to_string()
}

impl LayoutSpec {
    /// Whether a block mixes positions.
    pub(crate) fn has_attention(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b, BlockSpec::Attention(_)))
    }
}

fn bad(reason: impl Into<String>) -> FileError {
    FileError::Metadata {
        reason: reason.into(),
    }
}

/// Parses the metadata JSON, rejecting unknown keys (a misspelt optional
/// role would otherwise be silently dropped) and ambiguous combinations.
pub(crate) fn from_json(text: &str) -> Result<LayoutSpec, FileError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let root = value
        .as_object()
        .ok_or_else(|| bad("the top level must be a JSON object"))?;
    for key in root.keys() {
        if !["version", "blocks", "sequence"].contains(&key.as_str()) {
            return Err(bad(format!("unknown top-level key {key:?}")));
        }
    }
    match root.get("version") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(bad(format!(
                "version {v} is not supported (expected {VERSION})"
            )));
        }
        None => return Err(bad("the key \"version\" is missing")),
    }
    let blocks = root
        .get("blocks")
        .ok_or_else(|| bad("the key \"blocks\" is missing"))?
        .as_array()
        .ok_or_else(|| bad("\"blocks\" must be an array"))?;
    if blocks.is_empty() {
        return Err(bad("\"blocks\" is empty"));
    }
    let sequence = match root.get("sequence") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("\"sequence\" must be true or false")),
    };
    let mut axes = BTreeMap::new();
    let blocks = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| parse_block(i, b, &mut axes))
        .collect::<Result<Vec<_>, _>>()?;
    let mut layout = LayoutSpec {
        blocks,
        sequence,
        axes,
    };
    if layout.has_attention() {
        if root.get("sequence") == Some(&Value::Bool(false)) {
            return Err(bad(
                "\"sequence\" is false, but an attention block mixes positions",
            ));
        }
        layout.sequence = true;
    }
    Ok(layout)
}

/// The keys a block of `kind` may have; `None` for an unknown kind.
fn allowed_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "linear" => &["kind", "weight", "bias", "transpose"],
        "attention" => &[
            "kind",
            "q1",
            "k1",
            "q2",
            "k2",
            "v",
            "o",
            "q1_bias",
            "k1_bias",
            "q2_bias",
            "k2_bias",
            "v_bias",
            "o_bias",
            "heads",
            "mask",
            "rotary_base",
            "scale",
            "skip",
            "score_scale",
        ],
        "bilinear" => &[
            "kind",
            "left",
            "right",
            "fused",
            "down",
            "left_bias",
            "right_bias",
            "fused_bias",
            "down_bias",
            "residual",
            "scale",
            "skip",
        ],
        _ => return None,
    })
}

/// The roles of a block of `kind` whose tensor may be stored in another
/// axis order, named by a key `"{role}_axes"`.
fn roles_with_axes(kind: &str) -> &'static [&'static str] {
    match kind {
        "linear" => &["weight"],
        "bilinear" => &["left", "right", "fused", "down"],
        "attention" => &[
            "q1", "k1", "q2", "k2", "v", "o", "q1_bias", "k1_bias", "q2_bias", "k2_bias", "v_bias",
        ],
        _ => &[],
    }
}

/// Block `i` of the metadata: its kind, then its keys (all known), then
/// the kind's roles and settings, then the axes of roles stored in
/// another order (into `axes`).
fn parse_block(
    i: usize,
    value: &Value,
    axes: &mut BTreeMap<(usize, &'static str), Axes>,
) -> Result<BlockSpec, FileError> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad(format!("block {i} must be a JSON object")))?;
    let kind = obj
        .get("kind")
        .ok_or_else(|| bad(format!("block {i} has no \"kind\"")))?
        .as_str()
        .ok_or_else(|| bad(format!("block {i}: \"kind\" must be a string")))?;
    let Some(allowed) = allowed_keys(kind) else {
        return Err(bad(format!(
            "block {i}: unknown kind {kind:?} (expected \"linear\", \"bilinear\" or \"attention\")"
        )));
    };
    let with_axes = roles_with_axes(kind);
    let axes_role = |key: &str| {
        let role = key.strip_suffix("_axes")?;
        with_axes.iter().copied().find(|r| *r == role)
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) && axes_role(key).is_none() {
            return Err(bad(format!("block {i} ({kind}): unknown key {key:?}")));
        }
    }
    let block = BlockJson { i, kind, obj };
    let spec = match kind {
        "linear" => block.linear(),
        "attention" => block.attention(),
        _ => block.bilinear(),
    }?;
    let heads = match &spec {
        BlockSpec::Attention(a) => Some(a.heads),
        _ => None,
    };
    let named: Vec<&str> = spec.tensors().iter().map(|&(role, _)| role).collect();
    for (key, value) in obj {
        let Some(role) = axes_role(key) else { continue };
        if !named.contains(&role) {
            return Err(block.error(format!(
                "\"{key}\" is given, but the role \"{role}\" is not"
            )));
        }
        if matches!(
            spec,
            BlockSpec::Linear {
                transpose: true,
                ..
            }
        ) {
            return Err(block.error(
                "\"transpose\" and \"weight_axes\" both say how the weight is stored: give one",
            ));
        }
        axes.insert((i, role), block.axes(role, value, heads)?);
    }
    Ok(spec)
}

/// One block's JSON object, read key by key with errors naming the block.
struct BlockJson<'a> {
    i: usize,
    kind: &'a str,
    obj: &'a Map<String, Value>,
}

impl BlockJson<'_> {
    fn error(&self, what: impl std::fmt::Display) -> FileError {
        bad(format!("block {} ({}): {what}", self.i, self.kind))
    }

    /// An optional tensor name.
    fn name(&self, key: &str) -> Result<Option<String>, FileError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(format!("\"{key}\" must be a tensor name (a string)"))),
        }
    }

    /// A tensor name the block needs.
    fn required(&self, key: &str) -> Result<String, FileError> {
        self.name(key)?
            .ok_or_else(|| self.error(format!("the role \"{key}\" is missing")))
    }

    /// An optional number.
    fn number(&self, key: &str) -> Result<Option<f64>, FileError> {
        match self.obj.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.error(format!("\"{key}\" must be a number"))),
        }
    }

    /// The axes of `role`'s stored tensor, `value` a list of axis names:
    /// `"out"` and `"in"` (for a weight, `"heads"` too in attention), or,
    /// in attention, `"d_model"` (the residual stream's side: in for q, k,
    /// v, out for o) and `"d_head"` (the head's side). A weight has one out
    /// and one in axis; an attention q/k/v bias is `[heads, d_head]` in
    /// some order.
    fn axes(&self, role: &str, value: &Value, heads: Option<usize>) -> Result<Axes, FileError> {
        let key = format!("{role}_axes");
        let is_o = role == "o";
        let is_bias = role.ends_with("_bias");
        let attention = heads.is_some();
        let vocabulary = match (attention, is_bias) {
            (false, _) => "\"out\" and \"in\"",
            (true, false) => "\"heads\", \"d_model\" and \"d_head\" (or \"out\" and \"in\")",
            (true, true) => "\"heads\" and \"d_head\"",
        };
        let names: Vec<String> = value
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| {
                self.error(format!(
                    "\"{key}\" must be a list of axis names ({vocabulary})"
                ))
            })?;
        let order = names
            .iter()
            .map(|name| match (name.as_str(), attention) {
                ("out", _) => Some(Axis::Out),
                ("in", _) if !is_bias => Some(Axis::In),
                ("heads", true) => Some(Axis::Heads),
                ("d_model", true) if !is_bias => Some(if is_o { Axis::Out } else { Axis::In }),
                ("d_head", true) => Some(if is_o { Axis::In } else { Axis::Out }),
                _ => None,
            })
            .collect::<Option<Vec<Axis>>>()
            .ok_or_else(|| {
                self.error(format!(
                    "\"{key}\": {value} names an axis other than {vocabulary}"
                ))
            })?;
        let count = |axis| order.iter().filter(|&&a| a == axis).count();
        let fits = if is_bias {
            count(Axis::Heads) == 1 && count(Axis::Out) == 1 && order.len() == 2
        } else {
            count(Axis::Out) == 1 && count(Axis::In) == 1 && count(Axis::Heads) <= 1
        };
        if !fits {
            let expected = match (is_bias, is_o) {
                (true, _) => "[\"heads\", \"d_head\"] in some order",
                (false, false) if attention => {
                    "one \"d_model\" and one \"d_head\", and at most one \"heads\" \
                     (TransformerLens: [\"heads\", \"d_model\", \"d_head\"])"
                }
                (false, true) => {
                    "one \"d_model\" and one \"d_head\", and at most one \"heads\" \
                     (TransformerLens: [\"heads\", \"d_head\", \"d_model\"])"
                }
                (false, false) => "[\"out\", \"in\"] or [\"in\", \"out\"]",
            };
            return Err(self.error(format!("\"{key}\": {value} must be {expected}")));
        }
        Ok(Axes {
            names,
            order,
            head_side: if is_o { Axis::In } else { Axis::Out },
            heads,
        })
    }

    fn linear(&self) -> Result<BlockSpec, FileError> {
        let transpose = match self.obj.get("transpose") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(self.error("\"transpose\" must be true or false")),
        };
        Ok(BlockSpec::Linear {
            weight: self.required("weight")?,
            bias: self.name("bias")?,
            transpose,
            pre_norm: None,
            post_norm: None,
        })
    }

    fn attention(&self) -> Result<BlockSpec, FileError> {
        let heads = match self.obj.get("heads") {
            None => return Err(self.error("\"heads\" is missing")),
            Some(v) => v
                .as_u64()
                .and_then(|h| usize::try_from(h).ok())
                .filter(|&h| h > 0)
                .ok_or_else(|| {
                    self.error(format!("\"heads\" must be a positive integer, found {v}"))
                })?,
        };
        let mask = match self.obj.get("mask") {
            None => Mask::Causal,
            Some(Value::String(m)) => parse_mask(m).ok_or_else(|| {
                self.error(format!(
                    "unknown mask {m:?} (expected \"causal\", \"none\" or \"diag\")"
                ))
            })?,
            Some(_) => return Err(self.error("\"mask\" must be a string")),
        };
        let rotary_base = match self.obj.get("rotary_base") {
            None => Some(crate::block::DEFAULT_ROTARY_BASE),
            Some(Value::Null) => None,
            Some(_) => self.number("rotary_base")?,
        };
        let [q1, k1, q2, k2, v, o] = ATTENTION_ROLES.map(|r| self.required(r));
        let [bq1, bk1, bq2, bk2, bv, bo] = ATTENTION_BIAS_ROLES.map(|r| self.name(r));
        Ok(BlockSpec::Attention(Box::new(AttentionSpec {
            weights: [q1?, k1?, q2?, k2?, v?, o?],
            biases: [bq1?, bk1?, bq2?, bk2?, bv?, bo?],
            heads,
            mask,
            rotary_base,
            scale: self.number("scale")?,
            skip: self.number("skip")?,
            score_scale: self.number("score_scale")?,
            pre_norm: None,
        })))
    }

    fn bilinear(&self) -> Result<BlockSpec, FileError> {
        let factors = self.factors()?;
        let residual = match (
            self.number("residual")?,
            self.number("scale")?,
            self.number("skip")?,
        ) {
            (Some(s), None, None) => Residual::lerp(s),
            (None, scale, skip) => Residual {
                scale: scale.unwrap_or(1.0),
                skip: skip.unwrap_or(0.0),
            },
            (Some(_), _, _) => {
                return Err(self.error(
                    "\"residual\" (the lerp s: α = s, r = 1 − s) and \"scale\"/\"skip\" (α, r) \
                     say the same thing twice: give one",
                ));
            }
        };
        Ok(BlockSpec::Bilinear {
            factors,
            down: self.name("down")?,
            down_bias: self.name("down_bias")?,
            residual,
        })
    }

    /// `left` and `right` (with their biases) or `fused` (with its bias),
    /// never both.
    fn factors(&self) -> Result<Factors, FileError> {
        match (self.name("fused")?, self.name("left")?, self.name("right")?) {
            (Some(fused), None, None) => {
                for key in ["left_bias", "right_bias"] {
                    if self.obj.contains_key(key) {
                        return Err(self.error(format!(
                            "\"{key}\" goes with \"left\"/\"right\"; a fused weight takes \"fused_bias\""
                        )));
                    }
                }
                Ok(Factors::Fused {
                    fused,
                    bias: self.name("fused_bias")?,
                })
            }
            (None, Some(left), Some(right)) => {
                if self.obj.contains_key("fused_bias") {
                    return Err(
                        self.error("\"fused_bias\" needs \"fused\", not \"left\"/\"right\"")
                    );
                }
                Ok(Factors::Split {
                    left,
                    right,
                    left_bias: self.name("left_bias")?,
                    right_bias: self.name("right_bias")?,
                })
            }
            _ => Err(self.error("give either \"left\" and \"right\", or \"fused\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips() {
        let blocks = vec![
            BlockSpec::Linear {
                weight: "w".into(),
                bias: Some("b".into()),
                transpose: true,
                pre_norm: None,
                post_norm: None,
            },
            BlockSpec::Attention(Box::new(AttentionSpec {
                weights: ["a", "b", "c", "d", "e", "f"].map(String::from),
                biases: [Some("g".into()), None, None, None, None, Some("h".into())],
                heads: 2,
                mask: Mask::Diagonal,
                rotary_base: None,
                scale: Some(0.5),
                skip: None,
                score_scale: Some(3.0),
                pre_norm: None,
            })),
            BlockSpec::Bilinear {
                factors: Factors::Fused {
                    fused: "f".into(),
                    bias: None,
                },
                down: Some("d".into()),
                down_bias: None,
                residual: Residual::lerp(0.25),
            },
            BlockSpec::Bilinear {
                factors: Factors::Split {
                    left: "l".into(),
                    right: "r".into(),
                    left_bias: Some("lb".into()),
                    right_bias: None,
                },
                down: None,
                down_bias: Some("db".into()),
                residual: Residual::NONE,
            },
        ];
        for sequence in [false, true] {
            let layout = LayoutSpec {
                blocks: blocks.clone(),
                sequence,
                axes: BTreeMap::new(),
            };
            // An attention block makes it a sequence model either way.
            let back = from_json(&to_json(&layout)).unwrap();
            assert_eq!(back.blocks, blocks);
            assert!(back.sequence);
        }
        let vector = LayoutSpec {
            blocks: blocks[..1].to_vec(),
            sequence: false,
            axes: BTreeMap::new(),
        };
        assert_eq!(from_json(&to_json(&vector)).unwrap(), vector);
        let marked = LayoutSpec {
            sequence: true,
            ..vector
        };
        assert_eq!(from_json(&to_json(&marked)).unwrap(), marked);
    }

    #[test]
    fn axes_round_trip_and_read_by_role() {
        let text = r#"{"version": 1, "blocks": [
            {"kind": "linear", "weight": "e", "weight_axes": ["in", "out"]},
            {"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "v", "o": "o",
             "heads": 2, "q1_axes": ["heads", "d_model", "d_head"], "o_axes": ["heads", "d_head", "d_model"],
             "v_bias": "vb", "v_bias_axes": ["heads", "d_head"]}]}"#;
        let layout = from_json(text).unwrap();
        assert_eq!(from_json(&to_json(&layout)).unwrap(), layout);
        let order = |block, role| layout.axes[&(block, role)].order.clone();
        assert_eq!(order(0, "weight"), [Axis::In, Axis::Out]);
        // d_model is q's input and o's output; the heads merge with d_head.
        assert_eq!(order(1, "q1"), [Axis::Heads, Axis::In, Axis::Out]);
        assert_eq!(order(1, "o"), [Axis::Heads, Axis::In, Axis::Out]);
        assert_eq!(layout.axes[&(1, "q1")].head_side, Axis::Out);
        assert_eq!(layout.axes[&(1, "o")].head_side, Axis::In);
        assert_eq!(layout.axes[&(1, "o")].heads, Some(2));
        assert_eq!(order(1, "v_bias"), [Axis::Heads, Axis::Out]);
        assert_eq!(layout.axes.len(), 4);
    }

    #[test]
    fn attention_defaults_and_errors() {
        let one = |extra: &str| {
            from_json(&format!(
                r#"{{"version": 1, "blocks": [{{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "o": "f"{extra}}}]}}"#
            ))
        };
        let Ok(LayoutSpec {
            blocks,
            sequence: true,
            ..
        }) = one(r#", "heads": 2"#)
        else {
            panic!("a minimal attention block reads");
        };
        let BlockSpec::Attention(a) = &blocks[0] else {
            panic!("attention")
        };
        assert_eq!(a.mask, Mask::Causal);
        assert_eq!(a.rotary_base, Some(crate::block::DEFAULT_ROTARY_BASE));
        assert_eq!((a.scale, a.skip, a.score_scale), (None, None, None));
        for bad in [
            "",
            r#", "heads": 0"#,
            r#", "heads": 1.5"#,
            r#", "heads": 2, "mask": "upper""#,
            r#", "heads": 2, "rotary_base": "big""#,
            r#", "heads": 2, "scale": null"#,
            r#", "heads": 2, "rope_base": 10"#,
        ] {
            assert!(matches!(one(bad), Err(FileError::Metadata { .. })), "{bad}");
        }
        let no_o = r#"{"version": 1, "blocks": [{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "heads": 1}]}"#;
        assert!(matches!(from_json(no_o), Err(FileError::Metadata { .. })));
        let contradiction = r#"{"version": 1, "sequence": false, "blocks": [{"kind": "attention", "q1": "a", "k1": "b", "q2": "c", "k2": "d", "v": "e", "o": "f", "heads": 1}]}"#;
        assert!(matches!(
            from_json(contradiction),
            Err(FileError::Metadata { .. })
        ));
    }

    #[test]
    fn rejects_bad_metadata() {
        for text in [
            "",
            "[1]",
            r#"{"version": 2, "blocks": [{"kind": "linear", "weight": "w"}]}"#,
            r#"{"blocks": [{"kind": "linear", "weight": "w"}]}"#,
            r#"{"version": 1, "blocks": []}"#,
            r#"{"version": 1, "blocks": [{"kind": "conv", "weight": "w"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "linear", "wieght": "w"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "linear", "weight": 3}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l", "right": "r", "fused": "f"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "bilinear", "fused": "f", "left_bias": "b"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "bilinear", "left": "l", "right": "r", "residual": "x"}]}"#,
            r#"{"version": 1, "sequence": 1, "blocks": [{"kind": "linear", "weight": "w"}]}"#,
            r#"{"version": 1, "blocks": [{"kind": "linear", "weight": "w", "transpose": "yes"}]}"#,
        ] {
            assert!(
                matches!(from_json(text), Err(FileError::Metadata { .. })),
                "{text}"
            );
        }
    }
}
