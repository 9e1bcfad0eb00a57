//! From a [`Model`] to named row-major tensors and the layout that names them.

use nalgebra::{DMatrix, DVector};

use super::spec::{
    ATTENTION_BIAS_ROLES, ATTENTION_ROLES, AttentionSpec, BlockSpec, Factors, LayoutSpec,
};
use crate::block::{Attention, Bilinear, Linear, Mask, TensorBlock};
use crate::error::FileError;
use crate::io::Layout;
use crate::model::Model;

/// A tensor to write: name, shape, row-major values.
pub(crate) type Named = (String, Vec<usize>, Vec<f64>);

/// The tensors of `model` under `layout`, and the block specs that describe
/// them (written as metadata in every layout, so that what the names cannot
/// say, such as a residual scale, survives).
pub(crate) fn tensors(
    model: &Model<f64>,
    layout: Layout,
) -> Result<(LayoutSpec, Vec<Named>), FileError> {
    if model.is_sequence() && layout != Layout::Described {
        return Err(FileError::Unsupported {
            layout: layout.name(),
            reason: "the model is a sequence model: write it with the metadata layout, which \
                     marks it as one and names every attention setting"
                .into(),
        });
    }
    let kinds: Vec<Kind<'_>> = model
        .blocks()
        .iter()
        .enumerate()
        .map(|(i, b)| Kind::of(i, &**b, layout))
        .collect::<Result<_, _>>()?;
    let mut out = Writer::default();
    match layout {
        Layout::Described => {
            for (i, kind) in kinds.iter().enumerate() {
                let p = format!("blocks.{i}.");
                match kind {
                    Kind::Linear(l) => out.linear(l, &format!("{p}weight"), &format!("{p}bias")),
                    Kind::Attention(a) => out.attention(i, a, &p)?,
                    Kind::Bilinear(b) => out.bilinear_split(
                        b,
                        [
                            format!("{p}left"),
                            format!("{p}right"),
                            format!("{p}left_bias"),
                            format!("{p}right_bias"),
                        ],
                        b.down().map(|_| format!("{p}down")),
                        format!("{p}down_bias"),
                    ),
                }
            }
        }
        Layout::Transformer | Layout::AttentionLm => {
            return Err(FileError::Unsupported {
                layout: layout.name(),
                reason: "its settings live in a run config, which this crate does not write; \
                         use the metadata layout"
                    .into(),
            });
        }
        Layout::EmbedBodyHead => {
            let unsupported = |reason: String| FileError::Unsupported {
                layout: layout.name(),
                reason,
            };
            let last = kinds.len() - 1;
            match (kinds.first(), kinds.last()) {
                (Some(Kind::Linear(_)), Some(Kind::Linear(_))) if last > 0 => {}
                _ => {
                    return Err(unsupported(
                        "it needs a linear embed, bilinear body blocks and a linear head".into(),
                    ));
                }
            }
            for (i, kind) in kinds.iter().enumerate() {
                match (i, kind) {
                    (0, Kind::Linear(l)) => out.linear(l, "embed.weight", "embed.bias"),
                    (i, Kind::Linear(l)) if i == last => out.linear(l, "head.weight", "head.bias"),
                    (i, Kind::Bilinear(b)) => {
                        let p = format!("body.{}.", i - 1);
                        // The layout always has `d`; an identity down
                        // projection is written out, which is the same map.
                        out.bilinear_split(
                            b,
                            [
                                format!("{p}l.weight"),
                                format!("{p}r.weight"),
                                format!("{p}l.bias"),
                                format!("{p}r.bias"),
                            ],
                            Some(format!("{p}d.weight")),
                            format!("{p}d.bias"),
                        )
                    }
                    (i, Kind::Linear(_)) => {
                        return Err(unsupported(format!(
                            "block {i} is linear, but only the first and last blocks may be"
                        )));
                    }
                    (i, Kind::Attention(_)) => {
                        return Err(unsupported(format!("block {i} is attention")));
                    }
                }
            }
        }
        Layout::BiLinearProjection => {
            let unsupported = |reason: &str| FileError::Unsupported {
                layout: layout.name(),
                reason: reason.into(),
            };
            let [Kind::Bilinear(b), Kind::Linear(p)] = &kinds[..] else {
                return Err(unsupported(
                    "it needs exactly two blocks: a bilinear block, then a linear projection",
                ));
            };
            if b.down().is_some() {
                return Err(unsupported(
                    "the bilinear block has a down projection; bi_linear holds only L and R",
                ));
            }
            if b.down_bias().is_some() {
                return Err(unsupported(
                    "the bilinear block has an output bias; bi_linear holds only [b_L; b_R]",
                ));
            }
            out.bilinear_fused(b, "bi_linear.weight", "bi_linear.bias");
            out.linear(p, "projection.weight", "projection.bias");
        }
    }
    Ok((
        LayoutSpec {
            blocks: out.specs,
            sequence: model.is_sequence(),
        },
        out.tensors,
    ))
}

/// The concrete kind of a block; only the crate's own kinds have a file form.
enum Kind<'a> {
    Linear(&'a Linear<f64>),
    Bilinear(&'a Bilinear<f64>),
    Attention(&'a Attention<f64>),
}

impl<'a> Kind<'a> {
    fn of(i: usize, block: &'a dyn TensorBlock<f64>, layout: Layout) -> Result<Self, FileError> {
        let any = block.as_any();
        if let Some(l) = any.and_then(|a| a.downcast_ref::<Linear<f64>>()) {
            return Ok(Kind::Linear(l));
        }
        if let Some(b) = any.and_then(|a| a.downcast_ref::<Bilinear<f64>>()) {
            return Ok(Kind::Bilinear(b));
        }
        if let Some(a) = any.and_then(|a| a.downcast_ref::<Attention<f64>>()) {
            return Ok(Kind::Attention(a));
        }
        Err(FileError::Unsupported {
            layout: layout.name(),
            reason: format!(
                "block {i} is a {} block; files hold only linear, bilinear and attention blocks",
                block.kind()
            ),
        })
    }
}

#[derive(Default)]
struct Writer {
    specs: Vec<BlockSpec>,
    tensors: Vec<Named>,
}

impl Writer {
    fn matrix(&mut self, name: &str, m: &DMatrix<f64>) -> String {
        let row_major = m.transpose().as_slice().to_vec();
        self.tensors
            .push((name.to_owned(), vec![m.nrows(), m.ncols()], row_major));
        name.to_owned()
    }

    fn vector(&mut self, name: &str, v: Option<&DVector<f64>>) -> Option<String> {
        let v = v?;
        self.tensors
            .push((name.to_owned(), vec![v.len()], v.as_slice().to_vec()));
        Some(name.to_owned())
    }

    fn linear(&mut self, l: &Linear<f64>, weight: &str, bias: &str) {
        let spec = BlockSpec::Linear {
            weight: self.matrix(weight, l.weight()),
            bias: self.vector(bias, l.bias()),
            transpose: false,
            energy: None,
        };
        self.specs.push(spec);
    }

    /// Every setting is written out, defaults included, so that a later
    /// change of default cannot change what the file means.
    fn attention(&mut self, i: usize, a: &Attention<f64>, prefix: &str) -> Result<(), FileError> {
        if let Mask::Matrix(_) = a.mask() {
            return Err(FileError::Unsupported {
                layout: Layout::Described.name(),
                reason: format!(
                    "block {i} has a given mask matrix; files name only causal, none and diag"
                ),
            });
        }
        let weights = std::array::from_fn(|r| {
            self.matrix(&format!("{prefix}{}", ATTENTION_ROLES[r]), a.weight(r))
        });
        let biases = std::array::from_fn(|r| {
            self.vector(&format!("{prefix}{}", ATTENTION_BIAS_ROLES[r]), a.bias(r))
        });
        self.specs
            .push(BlockSpec::Attention(Box::new(AttentionSpec {
                weights,
                biases,
                heads: a.heads(),
                mask: a.mask().clone(),
                rotary_base: a.rotary_base(),
                scale: Some(a.scale()),
                skip: Some(a.skip()),
                score_scale: Some(a.score_scale()),
            })));
        Ok(())
    }

    fn bilinear_split(
        &mut self,
        b: &Bilinear<f64>,
        [left, right, left_bias, right_bias]: [String; 4],
        down: Option<String>,
        down_bias: String,
    ) {
        let factors = Factors::Split {
            left: self.matrix(&left, b.left()),
            right: self.matrix(&right, b.right()),
            left_bias: self.vector(&left_bias, b.left_bias()),
            right_bias: self.vector(&right_bias, b.right_bias()),
        };
        let down = down.map(|name| {
            let identity;
            let d = match b.down() {
                Some(d) => d,
                None => {
                    identity = DMatrix::identity(b.hidden_width(), b.hidden_width());
                    &identity
                }
            };
            self.matrix(&name, d)
        });
        let spec = BlockSpec::Bilinear {
            factors,
            down,
            down_bias: self.vector(&down_bias, b.down_bias()),
            residual: residual(b),
        };
        self.specs.push(spec);
    }

    fn bilinear_fused(&mut self, b: &Bilinear<f64>, fused: &str, bias: &str) {
        let h = b.hidden_width();
        let mut f = DMatrix::zeros(2 * h, b.left().ncols());
        f.rows_mut(0, h).copy_from(b.left());
        f.rows_mut(h, h).copy_from(b.right());
        let fused_bias = (b.left_bias().is_some() || b.right_bias().is_some()).then(|| {
            let zeros = DVector::zeros(h);
            let (l, r) = (
                b.left_bias().unwrap_or(&zeros),
                b.right_bias().unwrap_or(&zeros),
            );
            DVector::from_iterator(2 * h, l.iter().chain(r.iter()).copied())
        });
        let spec = BlockSpec::Bilinear {
            factors: Factors::Fused {
                fused: self.matrix(fused, &f),
                bias: self.vector(bias, fused_bias.as_ref()),
            },
            down: None,
            down_bias: None,
            residual: residual(b),
        };
        self.specs.push(spec);
    }
}

/// The residual scale to record: none for the default, 1.
fn residual(b: &Bilinear<f64>) -> Option<f64> {
    (b.residual() != 1.0).then_some(b.residual())
}
