//! Bilinear attention ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): an order-5 block that mixes positions.
//!
//! Per head `h`, with `q1_h[s] = Rot_s(Q1_h X[s] + b_q1,h)` and likewise
//! `k1`, `q2`, `k2`, and `v_h[t] = V_h X[t] (+ b_v,h)`:
//!
//! ```text
//! P_h[s,t] = W[s,t] · (q1_h[s]·k1_h[t]) · (q2_h[s]·k2_h[t]) / c
//! Y[s]     = r · X[s] + α · (O [Σ_t P_h[s,t] v_h[t]]_{h=1…H} (+ b_o))
//! ```
//!
//! Every leg is a linear form on the flattened padded stream, so the block
//! is a homogeneous order-5 tensor on `x̃` (skip and biases lifted through
//! the constant), symmetrised over `S_5`. Its CP rank grows as `n² e² e_v`
//! per head, so it supplies its own exact Gram step ([the attention guide](crate::guide::attention)).

mod chain;
mod heads;
mod lanes;
mod layer;
mod moments;
#[cfg(test)]
mod reference;
mod step;

pub(crate) use heads::HeadTerms;
pub use layer::{Attention, AttentionBuilder, DEFAULT_ROTARY_BASE, Mask, Role};

use nalgebra::DMatrix;

use super::{Description, Parameter, Setting, TensorBlock};
use crate::error::{Error, Result};
use crate::gaussian::moments::{JointMoments, Moments};
use crate::scalar::Real;
use crate::symmetry::{Full, SymmetryGroup};

/// Implements the items for `T = f32` and `T = f64` (a generic impl would
/// overlap [`CpKind`](super::CpKind)'s blanket impl for a scalar type of
/// another crate).
macro_rules! for_f32_and_f64 {
    ($($item:item)*) => {
        const _: () = {
            type T = f32;
            $($item)*
        };
        const _: () = {
            type T = f64;
            $($item)*
        };
    };
}

for_f32_and_f64! {
    impl TensorBlock<T> for Attention<T> {
        fn kind(&self) -> &'static str {
            "attention"
        }

        fn order(&self) -> usize {
            5
        }

        /// `r·x` as attention with `α = 0` (its step then makes no
        /// attention term) and one zero head of width 1, whose legs cost
        /// nothing to form; none when `r = 0`.
        fn skip_part(&self) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>> {
            if self.skip() == 0.0 {
                return Ok(None);
            }
            let d = Attention::input_width(self);
            let zero = DMatrix::<T>::zeros(1, d);
            let part = Attention::builder(
                1,
                zero.clone(),
                zero.clone(),
                zero.clone(),
                zero.clone(),
                zero,
                DMatrix::zeros(Attention::output_width(self), 1),
            )
            .mask(self.mask().clone())
            .scale(0.0)
            .skip(self.skip())
            .build()?;
            Ok(Some(std::sync::Arc::new(part)))
        }

        fn input_width(&self) -> usize {
            Attention::input_width(self)
        }

        fn output_width(&self) -> usize {
            Attention::output_width(self)
        }

        fn mixes_positions(&self) -> bool {
            true
        }

        /// `S_5`, as for every kind that does not narrow it; the attention step
        /// does not read the group.
        fn symmetry(&self) -> &dyn SymmetryGroup {
            &Full
        }

        /// The six weights and present biases by [`Role`], and the settings
        /// `heads`, `qk_width`, `value_width`, `mask`, `rotary_base`, `scale`,
        /// `skip`, `score_scale`.
        fn describe(&self) -> Description<'_, T> {
            let mut parameters = Vec::with_capacity(12);
            for role in Role::ALL {
                parameters.push(Parameter::matrix(role.name(), self.weight(role)));
            }
            for role in Role::ALL {
                if let Some(b) = self.bias(role) {
                    parameters.push(Parameter::vector(role.bias_name(), b));
                }
            }
            Description {
                kind: "attention",
                settings: vec![
                    ("heads", Setting::Count(self.heads())),
                    ("qk_width", Setting::Count(self.qk_width())),
                    ("value_width", Setting::Count(self.value_width())),
                    ("mask", Setting::Name(self.mask().name())),
                    ("rotary_base", Setting::Optional(self.rotary_base())),
                    ("scale", Setting::Real(self.scale())),
                    ("skip", Setting::Real(self.skip())),
                    ("score_scale", Setting::Real(self.score_scale())),
                ],
                parameters,
            }
        }

        fn parameters(&self) -> Vec<Parameter<'_, T>> {
            let mut p = Vec::with_capacity(12);
            for role in Role::ALL {
                let len = match role {
                    Role::V => self.weight(Role::V).nrows(),
                    Role::O => self.weight(Role::O).nrows(),
                    _ => self.weight(Role::Q1).nrows(),
                };
                p.push(Parameter::matrix(role.name(), self.weight(role)));
                p.push(Parameter::vector_or_zeros(
                    role.bias_name(),
                    self.bias(role),
                    len,
                ));
            }
            p
        }

        /// [`AttentionBuilder::build`] checks its shapes; its Gram step keeps
        /// the constant by construction.
        fn keeps_constant_by_construction(&self) -> bool {
            true
        }

        fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
            self.forward_rows(x)
        }

        /// The projections of every sequence at one position as one GEMM.
        fn forward_sequences(&self, x: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
            super::check_sequences(x, context, self.input_width())?;
            self.forward_batch(x, context)
        }

        fn gram_step(
            &self,
            other: &dyn TensorBlock<T>,
            g: &DMatrix<T>,
            context: usize,
        ) -> Result<DMatrix<T>> {
            step::gram_step(self, Some(same_kind(other)?), g, context)
        }

        fn self_gram_step(&self, g: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
            step::gram_step(self, None, g, context)
        }

        fn gram_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
            // A step with another kind is refused before it allocates.
            step::scalars(self, same_kind(other).unwrap_or(self), context)
        }

        fn gram_step_work(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
            step::work(self, same_kind(other).unwrap_or(self), context)
        }

        fn moment_step(
            &self,
            other: &dyn TensorBlock<T>,
            input: &JointMoments<T>,
        ) -> Result<JointMoments<T>> {
            moments::step(self, Some(same_kind(other)?), input)
        }

        fn self_moment_step(&self, input: &Moments<T>) -> Result<Moments<T>> {
            let joint = JointMoments::same(input.joint().into_owned());
            Ok(moments::step(self, None, &joint)?.a)
        }

        fn moment_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
            moments::scalars(self, same_kind(other).unwrap_or(self), context)
        }
    }
}

/// Not part of the API (hidden, may change in any release): the attention
/// Gram step with the rows of its per-position-pair products for
/// `query_tile` query positions held at once, whatever the step would choose
/// itself, for the repository's memory test. The tile size changes no bit of
/// the result.
#[doc(hidden)]
pub fn gram_step_in_tiles<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    context: usize,
    query_tile: usize,
) -> Result<DMatrix<T>> {
    step::gram_step_in_tiles(a, b, g, context, query_tile)
}

/// Not part of the API (hidden, may change in any release): the attention
/// block's Gaussian moment step (`b = None`: the self step) with the rows of
/// its covariance tables for `query_tile` query positions held at once,
/// whatever the step would choose itself, for the repository's memory test.
/// The tile size changes no bit of the result.
#[doc(hidden)]
pub fn moment_step_in_tiles<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    input: &JointMoments<T>,
    query_tile: usize,
) -> Result<JointMoments<T>> {
    moments::step_in_tiles(a, b, input, query_tile)
}

/// The step of two attention blocks (`b = None`: the self step) and what
/// their head paths read; `None` when `a` is not attention. (SPEC §9.)
pub(crate) fn gram_step_with_heads<T: Real>(
    a: &dyn TensorBlock<T>,
    b: Option<&dyn TensorBlock<T>>,
    g: &DMatrix<T>,
    context: usize,
) -> Result<Option<(DMatrix<T>, HeadTerms<T>)>> {
    let any: &dyn core::any::Any = a;
    let Some(a) = any.downcast_ref::<Attention<T>>() else {
        return Ok(None);
    };
    let b = b.map(same_kind).transpose()?;
    step::gram_step_with_heads(a, b, g, context).map(Some)
}

/// Head `head`'s part of the attention block `block` (SPEC §9): its
/// attention term alone (`r = 0`, no `o` bias, the other heads' `O` columns
/// zero). An error if the block is not attention or has no such head.
pub(crate) fn head_part<T: Real>(
    block: &dyn TensorBlock<T>,
    head: usize,
) -> Result<std::sync::Arc<dyn TensorBlock<T>>> {
    let any: &dyn core::any::Any = block;
    let Some(a) = any.downcast_ref::<Attention<T>>() else {
        return Err(Error::InvalidOption {
            what: "head path",
            reason: format!("the block is a {} block, not attention", block.kind()),
        });
    };
    if head >= a.heads() {
        return Err(Error::InvalidOption {
            what: "head path",
            reason: format!(
                "head {head} does not exist; the block has {} heads",
                a.heads()
            ),
        });
    }
    let ev = a.value_width();
    let mut o = a.weight(Role::O).clone();
    for c in (0..o.ncols()).filter(|c| c / ev != head) {
        o.column_mut(c).fill(T::zero());
    }
    a.to_builder()
        .o(o)
        .o_bias(None)
        .skip(0.0)
        .build()?
        .into_shared()
}

/// Whether a block is attention (it has heads).
pub(crate) fn is_attention<T: Real>(block: &dyn TensorBlock<T>) -> bool {
    let any: &dyn core::any::Any = block;
    any.is::<Attention<T>>()
}

/// The attention block at the other model's position; an error naming the
/// kind there otherwise (both metrics pair attention only with attention).
fn same_kind<T: Real>(other: &dyn TensorBlock<T>) -> Result<&Attention<T>> {
    let any: &dyn core::any::Any = other;
    any.downcast_ref::<Attention<T>>().ok_or_else(|| {
        Error::InvalidBlock(format!(
            "an attention block is compared with a {} block at the same position; \
             both must be attention",
            other.kind()
        ))
    })
}
