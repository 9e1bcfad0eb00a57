//! From a layout and a file's tensors to a checked [`Model`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;

use nalgebra::{DMatrix, DVector};

use super::norm::{Affine, FileNorm, NormReading, NormSpec, NormType, fold_after, fold_before};
use super::raw::{RawFile, RawTensor};
use super::spec::{
    ATTENTION_BIAS_ROLES, ATTENTION_ROLES, AttentionSpec, Axes, Axis, BlockSpec, Factors,
    LayoutSpec, Residual,
};
use crate::block::{Attention, Bilinear, BilinearBuilder, Linear, TensorBlock};
use crate::error::FileError;
use crate::io::TensorEntry;
use crate::model::Model;
use crate::scalar::{Real, to_f64};

/// `v` in `T`, each value rounded once.
fn cast_vector<T: Real>(v: DVector<f64>) -> DVector<T> {
    v.map(T::from_f64_lossy)
}

/// `m` in `T`: moved, not copied, when `T` is `f64`.
fn cast<T: Real>(m: DMatrix<f64>) -> DMatrix<T> {
    let any: Box<dyn core::any::Any> = Box::new(m);
    match any.downcast::<DMatrix<T>>() {
        Ok(m) => *m,
        Err(any) => match any.downcast::<DMatrix<f64>>() {
            Ok(m) => m.map(T::from_f64_lossy),
            Err(_) => unreachable!("the box holds a DMatrix<f64>"),
        },
    }
}

/// A built model with what reading it learnt.
pub(crate) struct Built<T: Real> {
    pub(crate) model: Model<T>,
    /// Every tensor read, with its block and role.
    pub(crate) tensors: Vec<TensorEntry>,
    /// The norms, folded or removed, in block order.
    pub(crate) norms: Vec<FileNorm>,
    /// What the norms' stored values made the reading assume.
    pub(crate) assumptions: Vec<String>,
}

/// Builds the model that `layout` describes from `file`'s tensors, checking
/// every shape against its role and the width the previous block writes,
/// and that every tensor of the file is used.
///
/// Values are read in `f64` and rounded once to `T`; a value beyond `T`'s
/// range is [`FileError::OutOfRange`], naming its tensor. Norms are folded
/// in `f64`, before the rounding.
pub(crate) fn build<T: Real>(
    file: &RawFile,
    layout: &LayoutSpec,
    layout_name: &str,
) -> Result<Built<T>, FileError> {
    let mut reader = Reader::<T>::new(file, &layout.axes);
    let mut built: Vec<Arc<dyn TensorBlock<T>>> = Vec::with_capacity(layout.blocks.len());
    // The width the previous block writes: what the next one must read.
    let mut width: Option<usize> = None;
    for (i, spec) in layout.blocks.iter().enumerate() {
        let block = match spec {
            BlockSpec::Linear {
                weight,
                bias,
                transpose,
                pre_norm,
                post_norm,
            } => {
                let norms = [pre_norm.as_ref(), post_norm.as_ref()];
                linear_block(&mut reader, i, width, weight, bias, *transpose, norms)?
            }
            BlockSpec::Attention(a) => attention_block(&mut reader, i, width, a)?,
            BlockSpec::Bilinear {
                factors,
                down,
                down_bias,
                residual,
            } => bilinear_block(&mut reader, i, width, factors, down, down_bias, *residual)?,
        };
        width = Some(block.output_width());
        built.push(block);
    }
    let mut model = Model::new(built).map_err(chain_error)?;
    if layout.sequence {
        model = model.into_sequence();
    }
    check_all_used(file, &reader.used, layout_name)?;
    Ok(Built {
        model,
        tensors: reader.used,
        norms: reader.norms,
        assumptions: reader.assumptions,
    })
}

/// A linear block `W x + b`, where `W` may be stored transposed (an
/// embedding table), read through a norm (`norms[0]`, before the
/// unembedding) and followed by one (`norms[1]`, after the embedding),
/// each folded in.
fn linear_block<T: Real>(
    reader: &mut Reader<'_, T>,
    i: usize,
    width: Option<usize>,
    weight: &str,
    bias: &Option<String>,
    transpose: bool,
    [pre, post]: [Option<&NormSpec>; 2],
) -> Result<Arc<dyn TensorBlock<T>>, FileError> {
    let role = Role::new(i, "linear");
    let w = if transpose {
        reader
            .matrix(weight, role.of("weight"), width, None)?
            .transpose()
    } else {
        reader.matrix(weight, role.of("weight"), None, width)?
    };
    let b = reader.vector(bias.as_deref(), role.of("bias"), w.nrows())?;
    let (w, b) = match pre {
        Some(norm) => match reader.norm(i, norm, w.ncols())? {
            Some(n) => fold_before(w, b, &n),
            None => (w, b),
        },
        None => (w, b),
    };
    let (w, b) = match post {
        Some(norm) => match reader.norm(i, norm, w.nrows())? {
            Some(n) => fold_after(w, b, &n),
            None => (w, b),
        },
        None => (w, b),
    };
    Ok(Arc::new(
        Linear::new(cast(w), b.map(cast_vector)).map_err(|e| block_error(i, e))?,
    ))
}

/// A bilinear attention block. Each role's shape follows from q1's (the
/// stream width d, H·e) and v's (H·e_v); o writes d_out.
fn attention_block<T: Real>(
    reader: &mut Reader<'_, T>,
    i: usize,
    width: Option<usize>,
    a: &AttentionSpec,
) -> Result<Arc<dyn TensorBlock<T>>, FileError> {
    let role = Role::new(i, "attention");
    let [q1, k1, q2, k2, v, o] = &a.weights;
    let mut read = |name: &str, r: usize, rows, cols| {
        reader.matrix(name, role.of(ATTENTION_ROLES[r]), rows, cols)
    };
    let q1 = read(q1, 0, None, width)?;
    let (qk, d) = q1.shape();
    let k1 = read(k1, 1, Some(qk), Some(d))?;
    let q2 = read(q2, 2, Some(qk), Some(d))?;
    let k2 = read(k2, 3, Some(qk), Some(d))?;
    let v = read(v, 4, None, Some(d))?;
    let o = read(o, 5, None, Some(v.nrows()))?;
    let lengths = [qk, qk, qk, qk, v.nrows(), o.nrows()];
    let mut biases = Vec::with_capacity(6);
    for ((name, r), len) in a.biases.iter().zip(ATTENTION_BIAS_ROLES).zip(lengths) {
        biases.push(reader.vector(name.as_deref(), role.of(r), len)?);
    }
    let mut biases = biases.into_iter();
    let mut maps = [q1, k1, q2, k2, v].map(|w| (w, biases.next().flatten()));
    let o_bias = biases.next().flatten().map(cast_vector);
    // q1 … v read the normed stream; o and the skip do not.
    if let Some(norm) = &a.pre_norm
        && let Some(n) = reader.norm(i, norm, d)?
    {
        maps = maps.map(|(w, b)| fold_before(w, b, &n));
    }
    let [q1, k1, q2, k2, v] = maps.map(|(w, b)| (cast(w), b.map(cast_vector)));
    let mut builder = Attention::builder(a.heads, q1.0, k1.0, q2.0, k2.0, v.0, cast(o))
        .q1_bias(q1.1)
        .k1_bias(k1.1)
        .q2_bias(q2.1)
        .k2_bias(k2.1)
        .v_bias(v.1)
        .o_bias(o_bias)
        .rotary(a.rotary_base)
        .mask(a.mask.clone());
    if let Some(alpha) = a.scale {
        builder = builder.scale(alpha);
    }
    if let Some(r) = a.skip {
        builder = builder.skip(r);
    }
    if let Some(c) = a.score_scale {
        builder = builder.score_scale(c);
    }
    builder
        .build()
        .and_then(Attention::into_shared)
        .map_err(|e| block_error(i, e))
}

/// A bilinear block: its factors, then an optional down projection and
/// output bias, and its residual scale.
fn bilinear_block<T: Real>(
    reader: &mut Reader<'_, T>,
    i: usize,
    width: Option<usize>,
    factors: &Factors,
    down: &Option<String>,
    down_bias: &Option<String>,
    residual: Residual,
) -> Result<Arc<dyn TensorBlock<T>>, FileError> {
    let role = Role::new(i, "bilinear");
    let (builder, h) = bilinear_factors(reader, i, width, factors, &role)?;
    let d = match down {
        Some(name) => Some(reader.matrix(name, role.of("down"), None, Some(h))?),
        None => None,
    };
    let n = d.as_ref().map_or(h, |d| d.nrows());
    let db = reader.vector(down_bias.as_deref(), role.of("down_bias"), n)?;
    let mut builder = builder.down(d.map(cast)).down_bias(db.map(cast_vector));
    builder = builder.scale(residual.scale).skip(residual.skip);
    Ok(Arc::new(builder.build().map_err(|e| block_error(i, e))?))
}

/// The builder of a bilinear block with `L` and `R` (and their biases)
/// read, split or fused, and its hidden width `h`.
fn bilinear_factors<T: Real>(
    reader: &mut Reader<'_, T>,
    i: usize,
    width: Option<usize>,
    factors: &Factors,
    role: &Role,
) -> Result<(BilinearBuilder<T>, usize), FileError> {
    match factors {
        Factors::Split {
            left,
            right,
            left_bias,
            right_bias,
        } => {
            let l = reader.matrix(left, role.of("left"), None, width)?;
            let (h, m) = l.shape();
            let r = reader.matrix(right, role.of("right"), Some(h), Some(m))?;
            let lb = reader.vector(left_bias.as_deref(), role.of("left_bias"), h)?;
            let rb = reader.vector(right_bias.as_deref(), role.of("right_bias"), h)?;
            let builder = Bilinear::builder(cast(l), cast(r))
                .left_bias(lb.map(cast_vector))
                .right_bias(rb.map(cast_vector));
            Ok((builder, h))
        }
        Factors::Fused { fused, bias } => {
            let f = reader.matrix(fused, role.of("fused"), None, width)?;
            if f.nrows() % 2 != 0 {
                return Err(FileError::TensorShape {
                    tensor: fused.clone(),
                    role: role.of("fused").2,
                    expected: "[2h, m]: an even number of rows, L then R".into(),
                    found: vec![f.nrows(), f.ncols()],
                });
            }
            let b = reader.vector(bias.as_deref(), role.of("fused_bias"), f.nrows())?;
            let h = f.nrows() / 2;
            let builder =
                Bilinear::from_fused(cast(f), b.map(cast_vector)).map_err(|e| block_error(i, e))?;
            Ok((builder, h))
        }
    }
}

/// The error for a chain [`Model::new`] refused: located at the block the
/// error names. Every layout has a block and every block read has non-zero
/// widths, so an error naming no block is not expected; it blames none.
fn chain_error(e: crate::Error) -> FileError {
    match e {
        crate::Error::WidthMismatch { block, .. } | crate::Error::ConstantNotKept { block, .. } => {
            block_error(block, e)
        }
        other => FileError::Model {
            source: Box::new(other),
        },
    }
}

/// An error if a tensor of `file` is in no block (`used`).
fn check_all_used(
    file: &RawFile,
    used: &[TensorEntry],
    layout_name: &str,
) -> Result<(), FileError> {
    let used: BTreeSet<&str> = used.iter().map(|t| t.name.as_str()).collect();
    let mut names: Vec<&String> = file.tensors.keys().collect();
    names.sort();
    match names.into_iter().find(|n| !used.contains(n.as_str())) {
        Some(unused) => Err(FileError::UnusedTensor {
            tensor: unused.clone(),
            layout: layout_name.to_owned(),
        }),
        None => Ok(()),
    }
}

/// A hint for a weight of another shape than `[rows, cols]` that its
/// role's `"{role}_axes"` would read: per-head 3-D (the TransformerLens
/// convention) or `[in, out]` (applied as `x @ W`).
fn axes_hint(
    role: &str,
    shape: &[usize],
    rows: Option<usize>,
    cols: Option<usize>,
) -> Option<String> {
    let fits = |want: Option<usize>, got: usize| want.is_none_or(|w| w == got);
    let attention = ATTENTION_ROLES.contains(&role);
    match *shape {
        [_, _, _] if attention => Some(format!(
            "; a per-head 3-D weight needs its axes stated in the layout, e.g. \
             \"{role}_axes\": {}",
            if role == "o" {
                "[\"heads\", \"d_head\", \"d_model\"] (TransformerLens W_O)"
            } else {
                "[\"heads\", \"d_model\", \"d_head\"] (TransformerLens W_Q, W_K, W_V)"
            }
        )),
        [r, c] if (rows.is_some() || cols.is_some()) && fits(rows, c) && fits(cols, r) => {
            Some(format!(
                "; if it is stored [in, out] (applied as x @ W), say so in the layout: \
             \"{role}_axes\": [\"in\", \"out\"]"
            ))
        }
        _ => None,
    }
}

/// `t` read through `axes` as its role's `[out, in]` matrix (or `[out]`
/// bias), row-major: a `heads` axis of size `H` joins the head side,
/// outermost, so that head `h` owns rows `h·O … (h+1)·O` (q, k, v: out is
/// the head side) or columns `h·I … (h+1)·I` (o). The error says what the
/// stored shape should have been.
fn rearrange(t: &RawTensor, axes: &Axes) -> Result<(Vec<usize>, Vec<f64>), String> {
    if t.shape.len() != axes.order.len() {
        return Err(format!("a {}-D tensor", axes.order.len()));
    }
    // Row-major strides of the stored tensor, and each axis's size and
    // stride (an absent axis: size 1, stride 0).
    let mut strides = vec![1; t.shape.len()];
    for k in (1..t.shape.len()).rev() {
        strides[k - 1] = strides[k] * t.shape[k];
    }
    let axis = |which: Axis| {
        (axes.order.iter().position(|&a| a == which)).map_or((1, 0), |k| (t.shape[k], strides[k]))
    };
    let ((heads, sh), (out, so), (inp, si)) = (axis(Axis::Heads), axis(Axis::Out), axis(Axis::In));
    if let Some(h) = axes.heads
        && axes.order.contains(&Axis::Heads)
        && heads != h
    {
        return Err(format!("a heads axis of size {h}, the block's heads"));
    }
    // The sizes multiply to the number of values the file holds, so
    // neither product overflows.
    let (rows, cols) = match axes.head_side {
        Axis::In => (out, heads * inp),
        _ => (heads * out, inp),
    };
    let mut values = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let (h, o, i) = match axes.head_side {
                Axis::In => (c / inp, r, c % inp),
                _ => (r / out, r % out, c),
            };
            values.push(t.values[h * sh + o * so + i * si]);
        }
    }
    let is_bias = !axes.order.contains(&Axis::In);
    let shape = if is_bias {
        vec![rows]
    } else {
        vec![rows, cols]
    };
    Ok((shape, values))
}

fn block_error(block: usize, e: crate::Error) -> FileError {
    FileError::Block {
        block,
        source: Box::new(e),
    }
}

/// "block 2 (bilinear)": the prefix of every role name.
struct Role {
    block: usize,
    kind: &'static str,
}

impl Role {
    fn new(block: usize, kind: &'static str) -> Self {
        Self { block, kind }
    }

    fn of(&self, role: &'static str) -> (usize, &'static str, String) {
        (
            self.block,
            role,
            format!("block {} ({}) {role}", self.block, self.kind),
        )
    }
}

/// A role's tensor as the role reads it (`[out, in]`, `[out]`), with a
/// note for errors saying how it was stored (empty: as it is).
struct Canonical<'a> {
    shape: Vec<usize>,
    values: Cow<'a, [f64]>,
    note: String,
}

/// Reads a file's tensors by name for the scalar type `T`, listing each
/// one read with its block and role.
struct Reader<'a, T> {
    file: &'a RawFile,
    /// The roles stored in another axis order, by block and role.
    axes: &'a BTreeMap<(usize, &'static str), Axes>,
    used: Vec<TensorEntry>,
    /// The norms read, folded or removed.
    norms: Vec<FileNorm>,
    /// What the norms' stored values made the reading assume.
    assumptions: Vec<String>,
    scalar: PhantomData<T>,
}

impl<'a, T: Real> Reader<'a, T> {
    fn new(file: &'a RawFile, axes: &'a BTreeMap<(usize, &'static str), Axes>) -> Self {
        Self {
            file,
            axes,
            used: Vec::new(),
            norms: Vec::new(),
            assumptions: Vec::new(),
            scalar: PhantomData,
        }
    }

    /// The tensor `name` for `role` as the role reads it: `[out, in]` for
    /// a weight, `[out]` for a bias, rearranged from the stored axes where
    /// the layout names them, with a note for a shape error saying how it
    /// was read.
    fn canonical(
        &mut self,
        name: &str,
        role: &(usize, &'static str, String),
    ) -> Result<Canonical<'a>, FileError> {
        let axes = self.axes.get(&(role.0, role.1));
        let file = self.file;
        self.weight(name, role)?;
        let t = &file.tensors[name];
        let Some(axes) = axes else {
            return Ok(Canonical {
                shape: t.shape.clone(),
                values: Cow::Borrowed(&t.values[..]),
                note: String::new(),
            });
        };
        let note = format!(" (stored as {})", axes.written());
        let (shape, values) = rearrange(t, axes).map_err(|why| FileError::TensorShape {
            tensor: name.to_owned(),
            role: role.2.clone(),
            expected: format!("{why}{note}"),
            found: t.shape.clone(),
        })?;
        Ok(Canonical {
            shape,
            values: Cow::Owned(values),
            note,
        })
    }

    /// The tensor `name` for `role`; an error if it is missing, or if a
    /// value is beyond the range of `T`.
    fn get(
        &mut self,
        name: &str,
        role: &(usize, &'static str, String),
    ) -> Result<&RawTensor, FileError> {
        let t = self
            .file
            .tensors
            .get(name)
            .ok_or_else(|| FileError::MissingTensor {
                tensor: name.to_owned(),
                role: role.2.clone(),
            })?;
        self.used.push(TensorEntry {
            name: name.to_owned(),
            block: role.0,
            role: role.1,
            dtype: t.dtype,
            shape: t.shape.clone(),
        });
        let beyond = |v: f64| !to_f64(T::from_f64_lossy(v)).is_finite();
        if let Some((index, &value)) = t.values.iter().enumerate().find(|(_, v)| beyond(**v)) {
            return Err(FileError::OutOfRange {
                tensor: name.to_owned(),
                index,
                value,
                scalar: std::any::type_name::<T>(),
            });
        }
        Ok(t)
    }

    /// A 2-D tensor `[rows, cols]` (row-major in the file), non-empty, with
    /// the given sizes where known.
    fn matrix(
        &mut self,
        name: &str,
        role: (usize, &'static str, String),
        rows: Option<usize>,
        cols: Option<usize>,
    ) -> Result<DMatrix<f64>, FileError> {
        let Canonical {
            shape,
            values,
            note,
        } = self.canonical(name, &role)?;
        let fits = |want: Option<usize>, got: usize| got > 0 && want.is_none_or(|w| w == got);
        match shape[..] {
            [r, c] if fits(rows, r) && fits(cols, c) => {
                // `values` has r·c entries: the reader decoded exactly the
                // bytes that safetensors checked against shape × dtype size.
                // Row-major `r × c` is column-major `c × r`: transpose it
                // by cache blocks.
                let mut data = vec![0.0; r * c];
                crate::linalg::transpose_to(&values, c, r, &mut data);
                Ok(DMatrix::from_vec(r, c, data))
            }
            _ => {
                let dim = |d: Option<usize>| d.map_or("*".to_owned(), |d| d.to_string());
                let mut expected = format!("[{}, {}]", dim(rows), dim(cols));
                if cols.is_some() && rows.is_none() {
                    expected.push_str(" (columns: the width the previous block writes)");
                }
                if !note.is_empty() {
                    expected = format!("{expected} as [out, in]{note}, read as {shape:?}");
                } else if let Some(hint) = axes_hint(role.1, &shape, rows, cols) {
                    expected.push_str(&hint);
                }
                Err(FileError::TensorShape {
                    tensor: name.to_owned(),
                    role: role.2,
                    expected,
                    found: self.file.tensors[name].shape.clone(),
                })
            }
        }
    }

    /// The tensor `name` for `role`, which must hold floats: an integer
    /// tensor is only ever a counter.
    fn weight(
        &mut self,
        name: &str,
        role: &(usize, &'static str, String),
    ) -> Result<&RawTensor, FileError> {
        let t = self.get(name, role)?;
        if !t.dtype.is_float() {
            return Err(FileError::Dtype {
                tensor: name.to_owned(),
                dtype: t.dtype.name().into(),
            });
        }
        Ok(t)
    }

    /// A counter (`num_batches_tracked`): one non-negative integer, of
    /// any dtype.
    fn counter(
        &mut self,
        name: &str,
        role: (usize, &'static str, String),
    ) -> Result<u64, FileError> {
        let t = self.get(name, &role)?;
        match t.values[..] {
            [x] if t.shape.iter().all(|&n| n == 1) && x >= 0.0 && x.fract() == 0.0 => Ok(x as u64),
            _ => Err(FileError::TensorShape {
                tensor: name.to_owned(),
                role: role.2,
                expected: "one non-negative integer (a count of batches)".into(),
                found: t.shape.clone(),
            }),
        }
    }

    /// The norm `spec` on a stream of width `d`, read at block `block`:
    /// the affine map it is at eval, or `None` where it is removed (its
    /// tensors read all the same, so that none is unused). Records the
    /// norm, and what a counter of 0 (or none) makes the reading assume.
    fn norm(
        &mut self,
        block: usize,
        spec: &NormSpec,
        d: usize,
    ) -> Result<Option<Affine>, FileError> {
        let what = format!("block {block}'s {} norm at {}", spec.kind, spec.place);
        let role = |r: &'static str| (block, r, format!("{r} of {what}"));
        let counter = match spec.tensor("norm_counter") {
            Some(t) => Some((t.to_owned(), self.counter(t, role("norm_counter"))?)),
            None => None,
        };
        let record = |reading| FileNorm {
            kind: spec.kind.name(),
            place: spec.place,
            eps: spec.eps,
            reading,
        };
        if spec.removed {
            for (r, t) in spec.tensors.iter().filter(|(r, _)| *r != "norm_counter") {
                self.get(t, &role(r))?;
            }
            self.norms.push(record(NormReading::Removed));
            return Ok(None);
        }
        let named = |r: &'static str| {
            spec.tensor(r)
                .map(str::to_owned)
                .ok_or_else(|| FileError::MissingTensor {
                    tensor: format!("{}.?", spec.place.module()),
                    role: role(r).2,
                })
        };
        let affine = match spec.kind {
            NormType::Tok0Batch => {
                let energy = named("energy")?;
                let e = self.scalar(&energy, role("energy"))?;
                let affine =
                    Affine::tok0_batch(e, spec.eps, d).ok_or_else(|| FileError::TensorShape {
                        tensor: energy.clone(),
                        role: role("energy").2,
                        expected: format!(
                            "a scalar energy E with E + eps > 0 (eps {:e})",
                            spec.eps
                        ),
                        found: vec![1],
                    })?;
                match &counter {
                    Some((t, 0)) => self.assumptions.push(format!(
                        "{t} = 0: saved before its first training batch, the tok0_batch norm at \
                         {} divides by the batch at eval; read with its stored \
                         running_mean_energy ({e}), as the research code reads it",
                        spec.place
                    )),
                    None => self.assumptions.push(format!(
                        "{}.num_batches_tracked absent: the tok0_batch norm at {} is read with \
                         its stored running_mean_energy ({e})",
                        spec.place.module(),
                        spec.place
                    )),
                    Some(_) => {}
                }
                affine
            }
            NormType::BatchNorm => {
                let mut vector = |r: &'static str, required: bool| -> Result<_, FileError> {
                    match spec.tensor(r) {
                        Some(t) => self.vector(Some(t), role(r), d),
                        None if required => Err(named(r).unwrap_err()),
                        None => Ok(None),
                    }
                };
                let mean = vector("norm_mean", true)?.unwrap_or_default();
                let var = vector("norm_var", true)?.unwrap_or_default();
                let weight = vector("norm_weight", false)?;
                let bias = vector("norm_bias", false)?;
                Affine::batchnorm(&mean, &var, weight.as_ref(), bias.as_ref(), spec.eps).map_err(
                    |k| FileError::TensorShape {
                        tensor: spec.tensor("norm_var").unwrap_or_default().to_owned(),
                        role: role("norm_var").2,
                        expected: format!(
                            "variances with var + eps > 0 (eps {:e}); entry {k} is {}",
                            spec.eps, var[k]
                        ),
                        found: vec![d],
                    },
                )?
            }
            other => {
                return Err(FileError::InputDependentNorm {
                    config: None,
                    found: what,
                    why: other.input_dependent().unwrap_or_default().into(),
                });
            }
        };
        self.norms.push(record(NormReading::Folded {
            scale: affine.scale_range(),
            shift: affine.shift_range(),
        }));
        Ok(Some(affine))
    }

    /// A tensor holding one value (shape `[]`, `[1]` or `[1, 1]`).
    fn scalar(
        &mut self,
        name: &str,
        role: (usize, &'static str, String),
    ) -> Result<f64, FileError> {
        let t = self.weight(name, &role)?;
        match t.values[..] {
            [x] if t.shape.iter().all(|&n| n == 1) => Ok(x),
            _ => Err(FileError::TensorShape {
                tensor: name.to_owned(),
                role: role.2,
                expected: "a scalar ([] or [1])".into(),
                found: t.shape.clone(),
            }),
        }
    }

    /// An optional 1-D tensor of length `len`.
    fn vector(
        &mut self,
        name: Option<&str>,
        role: (usize, &'static str, String),
        len: usize,
    ) -> Result<Option<DVector<f64>>, FileError> {
        let Some(name) = name else { return Ok(None) };
        let Canonical {
            shape,
            values,
            note,
        } = self.canonical(name, &role)?;
        if shape[..] != [len] {
            return Err(FileError::TensorShape {
                tensor: name.to_owned(),
                role: role.2,
                expected: format!("[{len}]{note}"),
                found: self.file.tensors[name].shape.clone(),
            });
        }
        Ok(Some(DVector::from_column_slice(&values)))
    }
}
