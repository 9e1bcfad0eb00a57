//! Baselines the tensor similarity is compared against (SPEC §4).

use crate::error::{Error, Incomparable, Result, Side};
use crate::model::Model;
use crate::scalar::{Real, to_f64};

/// The cosine of all parameters concatenated in block order (a missing bias
/// counting as zeros of its shape): the naive weight-space similarity.
///
/// It sees every parameter but none of the symmetries: permuting hidden
/// units, rescaling `L_r`, `R_r` against `D_{:,r}`, or swapping `L_r ↔ R_r`
/// changes it although the function is unchanged. An error unless both
/// models have parameters of the same shapes in the same order, or if one
/// model's parameters are all zero.
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{weight_cosine, Linear, Model};
/// let a = Model::builder().block(Linear::new(dmatrix![1.0, 0.0], None)?).build()?;
/// let b = Model::builder().block(Linear::new(dmatrix![1.0, 1.0], None)?).build()?;
/// assert!((weight_cosine(&a, &b)? - 0.5f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn weight_cosine<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<f64> {
    if a.depth() != b.depth() {
        return Err(Incomparable::Depth {
            a: a.depth(),
            b: b.depth(),
        }
        .into());
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (block, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
        let (px, py) = (x.parameters(), y.parameters());
        if px.len() != py.len() {
            let role = if px.len() > py.len() {
                px[py.len()].role
            } else {
                py[px.len()].role
            };
            let index = px.len().min(py.len());
            let shape = |p: Option<&crate::Parameter<'_, T>>| p.map_or((0, 0), |p| p.shape);
            return Err(Incomparable::ParameterShape {
                block,
                index,
                role,
                a: shape(px.get(index)),
                b: shape(py.get(index)),
            }
            .into());
        }
        for (index, (p, q)) in px.iter().zip(&py).enumerate() {
            if p.shape != q.shape || p.role != q.role {
                return Err(Incomparable::ParameterShape {
                    block,
                    index,
                    role: p.role,
                    a: p.shape,
                    b: q.shape,
                }
                .into());
            }
            for (&u, &v) in p.values.iter().zip(q.values.iter()) {
                let (u, v) = (to_f64(u), to_f64(v));
                ab += u * v;
                aa += u * u;
                bb += v * v;
            }
        }
    }
    for (norm, side) in [(aa, Side::A), (bb, Side::B)] {
        if norm == 0.0 {
            return Err(Error::ZeroNorm(side));
        }
    }
    Ok((ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0))
}
