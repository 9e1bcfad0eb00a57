//! From a [`Model`] to named row-major tensors and the layout that names them.

use nalgebra::{DMatrix, DVector};

use super::spec::{
    ATTENTION_BIAS_ROLES, ATTENTION_ROLES, AttentionSpec, BlockSpec, Factors, LayoutSpec, Residual,
};
use crate::block::{Mask, Role, Setting, TensorBlock};
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
    let kinds: Vec<Kind> = model
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
                    Kind::Attention(a) => out.attention(a, &p),
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
            axes: Default::default(),
        },
        out.tensors,
    ))
}

/// A block's parameters and settings as a file writes them, read from its
/// [`describe`](TensorBlock::describe): only the crate's own kinds
/// (`linear`, `bilinear`, `attention`) have a file form.
enum Kind {
    Linear(LinearParts),
    Bilinear(BilinearParts),
    Attention(Box<AttentionParts>),
}

struct LinearParts {
    weight: DMatrix<f64>,
    bias: Option<DVector<f64>>,
}

struct BilinearParts {
    left: DMatrix<f64>,
    right: DMatrix<f64>,
    left_bias: Option<DVector<f64>>,
    right_bias: Option<DVector<f64>>,
    down: Option<DMatrix<f64>>,
    down_bias: Option<DVector<f64>>,
    residual: Residual,
}

struct AttentionParts {
    weights: [DMatrix<f64>; 6],
    biases: [Option<DVector<f64>>; 6],
    heads: usize,
    mask: Mask,
    rotary_base: Option<f64>,
    scale: f64,
    skip: f64,
    score_scale: f64,
}

impl LinearParts {
    fn weight(&self) -> &DMatrix<f64> {
        &self.weight
    }
    fn bias(&self) -> Option<&DVector<f64>> {
        self.bias.as_ref()
    }
}

impl BilinearParts {
    fn left(&self) -> &DMatrix<f64> {
        &self.left
    }
    fn right(&self) -> &DMatrix<f64> {
        &self.right
    }
    fn left_bias(&self) -> Option<&DVector<f64>> {
        self.left_bias.as_ref()
    }
    fn right_bias(&self) -> Option<&DVector<f64>> {
        self.right_bias.as_ref()
    }
    fn down(&self) -> Option<&DMatrix<f64>> {
        self.down.as_ref()
    }
    fn down_bias(&self) -> Option<&DVector<f64>> {
        self.down_bias.as_ref()
    }
    fn hidden_width(&self) -> usize {
        self.left.nrows()
    }
}

impl AttentionParts {
    fn weight(&self, role: usize) -> &DMatrix<f64> {
        &self.weights[role]
    }
    fn bias(&self, role: usize) -> Option<&DVector<f64>> {
        self.biases[role].as_ref()
    }
    fn mask(&self) -> &Mask {
        &self.mask
    }
}

impl Kind {
    fn of(i: usize, block: &dyn TensorBlock<f64>, layout: Layout) -> Result<Self, FileError> {
        let d = block.describe();
        let missing = |what: &str| FileError::Unsupported {
            layout: layout.name(),
            reason: format!(
                "block {i} is a {} block without the {what} its kind's files hold",
                d.kind
            ),
        };
        let matrix = |role: &str| d.parameter(role).map(|p| p.to_matrix());
        let vector = |role: &str| {
            d.parameter(role)
                .map(|p| DVector::from_column_slice(&p.values))
        };
        let count = |name: &str| match d.setting(name) {
            Some(Setting::Count(c)) => Some(*c),
            _ => None,
        };
        match d.kind {
            "linear" => Ok(Kind::Linear(LinearParts {
                weight: matrix("weight").ok_or_else(|| missing("weight"))?,
                bias: vector("bias"),
            })),
            "bilinear" => Ok(Kind::Bilinear(BilinearParts {
                left: matrix("left").ok_or_else(|| missing("left"))?,
                right: matrix("right").ok_or_else(|| missing("right"))?,
                left_bias: vector("left_bias"),
                right_bias: vector("right_bias"),
                down: matrix("down"),
                down_bias: vector("down_bias"),
                residual: Residual {
                    scale: d.real("scale").ok_or_else(|| missing("scale"))?,
                    skip: d.real("skip").ok_or_else(|| missing("skip"))?,
                },
            })),
            "attention" => {
                let mut weights = Vec::with_capacity(6);
                for role in Role::ALL {
                    weights.push(matrix(role.name()).ok_or_else(|| missing(role.name()))?);
                }
                let mask = match d.setting("mask") {
                    Some(Setting::Name("causal")) => Mask::Causal,
                    Some(Setting::Name("none")) => Mask::None,
                    Some(Setting::Name("diag")) => Mask::Diagonal,
                    _ => {
                        return Err(FileError::Unsupported {
                            layout: Layout::Described.name(),
                            reason: format!(
                                "block {i} has a given mask matrix; files name only causal, none \
                                 and diag"
                            ),
                        });
                    }
                };
                let real = |name: &str| d.real(name).ok_or_else(|| missing(name));
                Ok(Kind::Attention(Box::new(AttentionParts {
                    weights: weights.try_into().map_err(|_| missing("weights"))?,
                    biases: Role::ALL.map(|role| vector(role.bias_name())),
                    heads: count("heads").ok_or_else(|| missing("heads"))?,
                    mask,
                    rotary_base: match d.setting("rotary_base") {
                        Some(Setting::Optional(base)) => *base,
                        _ => return Err(missing("rotary_base")),
                    },
                    scale: real("scale")?,
                    skip: real("skip")?,
                    score_scale: real("score_scale")?,
                })))
            }
            kind => Err(FileError::Unsupported {
                layout: layout.name(),
                reason: format!(
                    "block {i} is a {kind} block; files hold only linear, bilinear and attention \
                     blocks"
                ),
            }),
        }
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

    fn linear(&mut self, l: &LinearParts, weight: &str, bias: &str) {
        let spec = BlockSpec::Linear {
            weight: self.matrix(weight, l.weight()),
            bias: self.vector(bias, l.bias()),
            transpose: false,
            pre_norm: None,
            post_norm: None,
        };
        self.specs.push(spec);
    }

    /// Every setting is written out, defaults included, so that a later
    /// change of default cannot change what the file means.
    fn attention(&mut self, a: &AttentionParts, prefix: &str) {
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
                heads: a.heads,
                mask: a.mask().clone(),
                rotary_base: a.rotary_base,
                scale: Some(a.scale),
                skip: Some(a.skip),
                score_scale: Some(a.score_scale),
                pre_norm: None,
            })));
    }

    fn bilinear_split(
        &mut self,
        b: &BilinearParts,
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
            residual: b.residual,
        };
        self.specs.push(spec);
    }

    fn bilinear_fused(&mut self, b: &BilinearParts, fused: &str, bias: &str) {
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
            residual: b.residual,
        };
        self.specs.push(spec);
    }
}
