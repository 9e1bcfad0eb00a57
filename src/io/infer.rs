//! The two research layouts, recognised by tensor names when a file has no
//! `tensor_similarity` metadata ([SPEC §5](crate::spec#5-model-files)).

use std::collections::HashMap;

use super::FileError;
use super::Layout;
use super::read::RawTensor;
use super::spec::{BlockSpec, Factors};

/// The layout of a file without metadata, from its tensor names; `residual`
/// is the scale of every bilinear block (the research code's global
/// setting; `None` means 1).
pub(crate) fn infer(
    tensors: &HashMap<String, RawTensor>,
    residual: Option<f64>,
) -> Result<(Layout, Vec<BlockSpec>), FileError> {
    let has_prefix = |p: &str| tensors.keys().any(|n| n.starts_with(p));
    let optional = |name: String| tensors.contains_key(&name).then_some(name);
    if has_prefix("bi_linear.") || has_prefix("projection.") {
        return Ok((
            Layout::BiLinearProjection,
            vec![
                BlockSpec::Bilinear {
                    factors: Factors::Fused {
                        fused: "bi_linear.weight".into(),
                        bias: optional("bi_linear.bias".into()),
                    },
                    down: None,
                    down_bias: None,
                    residual,
                },
                BlockSpec::Linear {
                    weight: "projection.weight".into(),
                    bias: optional("projection.bias".into()),
                },
            ],
        ));
    }
    if has_prefix("embed.") || has_prefix("body.") || has_prefix("head.") {
        // Layers are numbered from 0; a gap shows up as a missing tensor.
        let depth = tensors
            .keys()
            .filter_map(|n| {
                n.strip_prefix("body.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |i| i.saturating_add(1));
        let mut blocks = vec![BlockSpec::Linear {
            weight: "embed.weight".into(),
            bias: optional("embed.bias".into()),
        }];
        for i in 0..depth {
            if !has_prefix(&format!("body.{i}.")) {
                return Err(FileError::MissingTensor {
                    tensor: format!("body.{i}.l.weight"),
                    role: format!("block {} (bilinear) left", i + 1),
                });
            }
            blocks.push(BlockSpec::Bilinear {
                factors: Factors::Split {
                    left: format!("body.{i}.l.weight"),
                    right: format!("body.{i}.r.weight"),
                    left_bias: optional(format!("body.{i}.l.bias")),
                    right_bias: optional(format!("body.{i}.r.bias")),
                },
                down: Some(format!("body.{i}.d.weight")),
                down_bias: optional(format!("body.{i}.d.bias")),
                residual,
            });
        }
        blocks.push(BlockSpec::Linear {
            weight: "head.weight".into(),
            bias: optional("head.bias".into()),
        });
        return Ok((Layout::EmbedBodyHead, blocks));
    }
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort_unstable();
    let shown = names
        .iter()
        .take(8)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>();
    Err(FileError::UnknownLayout {
        reason: format!(
            "no \"tensor_similarity\" metadata, and the tensors [{}{}] fit neither \
             embed/body.{{i}}.{{l,r,d}}/head nor bi_linear/projection (see docs/format.md)",
            shown.join(", "),
            if names.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
    })
}
