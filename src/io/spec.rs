//! The layout of a model file: which tensor plays which role in which block,
//! and its JSON form, `__metadata__["tensor_similarity"]` ([SPEC §5](crate::spec#5-model-files)).

use serde_json::{Map, Value, json};

use super::FileError;

/// The version of the metadata schema this crate reads and writes.
pub(crate) const VERSION: u64 = 1;

/// The metadata key.
pub(crate) const KEY: &str = "tensor_similarity";

/// One block of a layout, naming its tensors.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BlockSpec {
    Linear {
        weight: String,
        bias: Option<String>,
    },
    Bilinear {
        factors: Factors,
        down: Option<String>,
        down_bias: Option<String>,
        residual: Option<f64>,
    },
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
            BlockSpec::Linear { weight, bias } => {
                vec![("weight", Some(weight)), ("bias", bias.as_ref())]
            }
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

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "kind".into(),
            json!(match self {
                BlockSpec::Linear { .. } => "linear",
                BlockSpec::Bilinear { .. } => "bilinear",
            }),
        );
        for (role, name) in self.tensors() {
            m.insert(role.into(), json!(name));
        }
        if let BlockSpec::Bilinear {
            residual: Some(s), ..
        } = self
        {
            m.insert("residual".into(), json!(s));
        }
        Value::Object(m)
    }
}

/// The metadata JSON for `blocks`.
pub(crate) fn to_json(blocks: &[BlockSpec]) -> String {
    json!({
        "version": VERSION,
        "blocks": blocks.iter().map(BlockSpec::to_json).collect::<Vec<_>>(),
    })
    .to_string()
}

fn bad(reason: impl Into<String>) -> FileError {
    FileError::Metadata {
        reason: reason.into(),
    }
}

/// Parses the metadata JSON, rejecting unknown keys (a misspelt optional
/// role would otherwise be silently dropped) and ambiguous combinations.
pub(crate) fn from_json(text: &str) -> Result<Vec<BlockSpec>, FileError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let root = value
        .as_object()
        .ok_or_else(|| bad("the top level must be a JSON object"))?;
    for key in root.keys() {
        if key != "version" && key != "blocks" {
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
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| parse_block(i, b))
        .collect()
}

fn parse_block(i: usize, value: &Value) -> Result<BlockSpec, FileError> {
    let obj = value
        .as_object()
        .ok_or_else(|| bad(format!("block {i} must be a JSON object")))?;
    let kind = obj
        .get("kind")
        .ok_or_else(|| bad(format!("block {i} has no \"kind\"")))?
        .as_str()
        .ok_or_else(|| bad(format!("block {i}: \"kind\" must be a string")))?;
    let allowed: &[&str] = match kind {
        "linear" => &["kind", "weight", "bias"],
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
        ],
        other => {
            return Err(bad(format!(
                "block {i}: unknown kind {other:?} (expected \"linear\" or \"bilinear\")"
            )));
        }
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(bad(format!("block {i} ({kind}): unknown key {key:?}")));
        }
    }
    let name = |key: &str| -> Result<Option<String>, FileError> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!(
                "block {i} ({kind}): \"{key}\" must be a tensor name (a string)"
            ))),
        }
    };
    let required = |key: &str| -> Result<String, FileError> {
        name(key)?.ok_or_else(|| bad(format!("block {i} ({kind}): the role \"{key}\" is missing")))
    };
    if kind == "linear" {
        return Ok(BlockSpec::Linear {
            weight: required("weight")?,
            bias: name("bias")?,
        });
    }
    let factors = match (name("fused")?, name("left")?, name("right")?) {
        (Some(fused), None, None) => {
            for key in ["left_bias", "right_bias"] {
                if obj.contains_key(key) {
                    return Err(bad(format!(
                        "block {i} (bilinear): \"{key}\" goes with \"left\"/\"right\"; a fused weight takes \"fused_bias\""
                    )));
                }
            }
            Factors::Fused {
                fused,
                bias: name("fused_bias")?,
            }
        }
        (None, Some(left), Some(right)) => {
            if obj.contains_key("fused_bias") {
                return Err(bad(format!(
                    "block {i} (bilinear): \"fused_bias\" needs \"fused\", not \"left\"/\"right\""
                )));
            }
            Factors::Split {
                left,
                right,
                left_bias: name("left_bias")?,
                right_bias: name("right_bias")?,
            }
        }
        _ => {
            return Err(bad(format!(
                "block {i} (bilinear): give either \"left\" and \"right\", or \"fused\""
            )));
        }
    };
    let residual = match obj.get("residual") {
        None => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| {
            bad(format!(
                "block {i} (bilinear): \"residual\" must be a number"
            ))
        })?),
    };
    Ok(BlockSpec::Bilinear {
        factors,
        down: name("down")?,
        down_bias: name("down_bias")?,
        residual,
    })
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
            },
            BlockSpec::Bilinear {
                factors: Factors::Fused {
                    fused: "f".into(),
                    bias: None,
                },
                down: Some("d".into()),
                down_bias: None,
                residual: Some(0.25),
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
                residual: None,
            },
        ];
        assert_eq!(from_json(&to_json(&blocks)).unwrap(), blocks);
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
        ] {
            assert!(
                matches!(from_json(text), Err(FileError::Metadata { .. })),
                "{text}"
            );
        }
    }
}
