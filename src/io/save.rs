//! Saving a model: its tensors under a layout, encoded in a storage dtype,
//! written as a safetensors file with `tensor_similarity` metadata.

use std::collections::HashMap;
use std::path::Path;

use super::{spec, write};
use crate::error::{Error, FileError, Result};
use crate::io::{Dtype, Layout};
use crate::model::Model;

/// Writes `model` to `path` in F64 under `layout`; see [`save_with_dtype`].
pub fn save(model: &Model<f64>, path: impl AsRef<Path>, layout: Layout) -> Result<()> {
    save_with_dtype(model, path, layout, Dtype::F64)
}

/// Writes `model` to `path` under `layout`, storing every value as the
/// element type `dtype` (each rounded once from `f64`). The model's own
/// scalar type is `f64`; [`load_as`](crate::io::load_as) chooses the
/// scalar type a file is read into.
///
/// Every layout also writes `__metadata__["tensor_similarity"]` naming the
/// tensors, so that what the research layouts' names cannot say (a residual
/// scale other than 1, which their loaders take from the model's config)
/// survives a round trip: the loader prefers metadata to names. An absent
/// bias is not written; an absent down projection is written as the
/// identity where the layout requires one (`body.{i}.d.weight`).
///
/// [`Layout::Described`] writes any chain of [`Linear`](crate::Linear),
/// [`Bilinear`](crate::Bilinear) and [`Attention`](crate::Attention)
/// blocks, every attention setting included (a sequence model is written
/// only so). [`Layout::EmbedBodyHead`] and [`Layout::BiLinearProjection`]
/// write linear and bilinear blocks in the order their names have;
/// [`Layout::Transformer`] and [`Layout::AttentionLm`] are not written
/// (their settings live in a run config).
///
/// An error if the layout cannot express the model (another block kind,
/// such as [`CpBlock`](crate::CpBlock), an attention block with a given
/// mask matrix, a sequence model under a research layout, or blocks in an
/// order the research layout does not have), if a value overflows `dtype`,
/// or if the file cannot be written.
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{io, Linear, Model};
///
/// let model = Model::builder().block(Linear::new(DMatrix::from_element(2, 3, 0.5), None)?).build()?;
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("half.safetensors");
/// io::save_with_dtype(&model, &path, io::Layout::Described, io::Dtype::F16)?;
/// let file = io::open(&path, &Default::default())?;
/// assert_eq!(file.tensors[0].dtype, io::Dtype::F16);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn save_with_dtype(
    model: &Model<f64>,
    path: impl AsRef<Path>,
    layout: Layout,
    dtype: Dtype,
) -> Result<()> {
    let path = path.as_ref();
    save_inner(model, path, layout, dtype).map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })
}

/// The former name of [`save_with_dtype`]: the `as` read like the scalar
/// type of [`load_as`](crate::io::load_as), but this `dtype` is the
/// element type stored in the file.
#[deprecated(note = "renamed `save_with_dtype`: `dtype` is the file's storage type")]
pub fn save_as(
    model: &Model<f64>,
    path: impl AsRef<Path>,
    layout: Layout,
    dtype: Dtype,
) -> Result<()> {
    save_with_dtype(model, path, layout, dtype)
}

/// [`save_with_dtype`], with the error not yet wrapped with the path.
fn save_inner(
    model: &Model<f64>,
    path: &Path,
    layout: Layout,
    dtype: Dtype,
) -> core::result::Result<(), FileError> {
    if !dtype.is_float() {
        return Err(FileError::Unsupported {
            layout: layout.name(),
            reason: format!("weights are stored as a float type, not {dtype}"),
        });
    }
    let (specs, tensors) = write::tensors(model, layout)?;
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            let bytes = encode(&name, dtype, &values)?;
            Ok((name, shape, bytes))
        })
        .collect::<core::result::Result<_, FileError>>()?;
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(dtype.to_safetensors(), shape.clone(), bytes)
                    .map_err(|e| FileError::Corrupt {
                        reason: format!("tensor {name:?}: {e}"),
                    })?;
            Ok((name.as_str(), view))
        })
        .collect::<core::result::Result<Vec<_>, FileError>>()?;
    let metadata = HashMap::from([(spec::KEY.to_owned(), spec::to_json(&specs))]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| FileError::Corrupt {
        reason: e.to_string(),
    })?;
    std::fs::write(path, bytes)?;
    Ok(())
}

/// Little-endian bytes of `values` rounded to `dtype`; an error if one
/// overflows it.
fn encode(name: &str, dtype: Dtype, values: &[f64]) -> core::result::Result<Vec<u8>, FileError> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for &v in values {
        let back = match dtype {
            Dtype::F64 => {
                out.extend_from_slice(&v.to_le_bytes());
                v
            }
            Dtype::F32 => {
                let x = v as f32;
                out.extend_from_slice(&x.to_le_bytes());
                x.into()
            }
            Dtype::F16 => {
                let x = half::f16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.to_f64()
            }
            Dtype::BF16 => {
                let x = half::bf16::from_f64(v);
                out.extend_from_slice(&x.to_le_bytes());
                x.to_f64()
            }
            Dtype::I64 => unreachable!("save_inner refuses integer dtypes"),
        };
        if !back.is_finite() {
            return Err(FileError::Overflow {
                tensor: name.to_owned(),
                dtype: dtype.name(),
                value: v,
            });
        }
    }
    Ok(out)
}
