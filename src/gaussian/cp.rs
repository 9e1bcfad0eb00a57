//! The moment step of position-wise CP blocks, and the two fast paths of
//! linear blocks at the ends of a model.
//!
//! On independent positions the step is the Wick step of one position
//! ([`wick`](super::wick)), and the positions stay independent. On the
//! joint moments of a stream (after a block that mixes positions) it steps
//! every pair of positions on the padded blocks `[p̂, q̂]`. A first linear
//! block takes its moments from `Σ` directly and a last linear block is read
//! out from the second moments, so a vocabulary-wide covariance is never
//! formed.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::moments::{JointMoments, Moments};
use super::wick::{Legs, covariance, through_outputs};
use crate::block::factors::CpFactors;
use crate::linalg::mul_nt;
use crate::padded::padded_block;
use crate::scalar::{LogScaled, Real, to_f64};

/// The joint output moments of CP blocks `fa`, `fb` (in the input's scale).
pub(crate) fn step<T: Real>(
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    input: &JointMoments<T>,
) -> JointMoments<T> {
    if input.is_self_product() {
        return JointMoments::same(self_step(fa, input.a()));
    }
    let (a, b) = (input.a(), input.b());
    if input.is_independent() {
        let (legs_a, legs_b) = (Legs::new(fa, a), Legs::new(fb, b));
        let cross = through_outputs(
            fa,
            fb,
            covariance(fa, fb, &legs_a, &legs_b, &a.mean, &b.mean, input.cross()),
        );
        return JointMoments {
            a: legs_a.output_side(fa, a),
            other: Some((legs_b.output_side(fb, b), cross)),
        };
    }
    let (x, y) = (Positions::new(fa, a), Positions::new(fb, b));
    let cross = output_covariance((fa, &x), (fb, &y), input.cross(), false);
    JointMoments {
        a: x.side(fa, a),
        other: Some((y.side(fb, b), cross)),
    }
}

/// One model's output moments of CP block `f` (in the input's scale).
pub(crate) fn self_step<T: Real>(f: &CpFactors<T>, input: &Moments<T>) -> Moments<T> {
    if input.independent {
        return Legs::new(f, input).output_side(f, input);
    }
    Positions::new(f, input).side(f, input)
}

/// One side's position-wise moments and legs at every position.
struct Positions<T: Real> {
    at: Vec<Moments<T>>,
    legs: Vec<Legs<T>>,
}

impl<T: Real> Positions<T> {
    fn new(f: &CpFactors<T>, act: &Moments<T>) -> Self {
        let at: Vec<Moments<T>> = (0..act.context).map(|p| act.at_position(p)).collect();
        let legs = at.par_iter().map(|s| Legs::new(f, s)).collect();
        Self { at, legs }
    }

    fn mean(&self, f: &CpFactors<T>) -> DVector<T> {
        let means: Vec<DVector<T>> = self
            .legs
            .iter()
            .map(|l| match f.output() {
                Some(d) => d * l.mean(),
                None => l.mean().clone(),
            })
            .collect();
        let w = f.output_width();
        let mut out = DVector::zeros(means.len() * w + 1);
        out[0] = means[0][0];
        for (p, m) in means.iter().enumerate() {
            out.rows_mut(1 + p * w, w).copy_from(&m.rows(1, w));
        }
        out
    }

    /// The output moments of the whole stream, from the input's.
    fn side(&self, f: &CpFactors<T>, act: &Moments<T>) -> Moments<T> {
        Moments {
            mean: self.mean(f),
            cov: output_covariance((f, self), (f, self), &act.cov, true),
            ln_scale: act.ln_scale,
            context: act.context,
            independent: false,
        }
    }
}

/// `Cov` of the outputs of `fa` over positions `x` and `fb` over `y`, from
/// the input covariance `c` between them (`sym`: the same side, so only
/// `p ≤ q` is computed).
fn output_covariance<T: Real>(
    (fa, x): (&CpFactors<T>, &Positions<T>),
    (fb, y): (&CpFactors<T>, &Positions<T>),
    c: &DMatrix<T>,
    sym: bool,
) -> DMatrix<T> {
    let n = x.at.len();
    let (ma, mb) = (fa.input_width(), fb.input_width());
    let (na, nb) = (fa.output_width(), fb.output_width());
    let blocks: Vec<(usize, usize, DMatrix<T>)> = (0..n * n)
        .into_par_iter()
        .filter(|pq| !sym || pq / n <= pq % n)
        .map(|pq| {
            let (p, q) = (pq / n, pq % n);
            let mut block = DMatrix::zeros(ma + 1, mb + 1);
            padded_block(c, p, q, ma, mb, &mut block);
            let h = covariance(
                fa,
                fb,
                &x.legs[p],
                &y.legs[q],
                &x.at[p].mean,
                &y.at[q].mean,
                &block,
            );
            (p, q, through_outputs(fa, fb, h))
        })
        .collect();
    let mut out = DMatrix::zeros(n * na + 1, n * nb + 1);
    for (p, q, h) in blocks {
        let inner = h.view((1, 1), (na, nb));
        out.view_mut((1 + p * na, 1 + q * nb), (na, nb))
            .copy_from(&inner);
        if sym && p != q {
            out.view_mut((1 + q * na, 1 + p * nb), (na, nb))
                .tr_copy_from(&inner);
        }
    }
    out
}

/// Whether `f` is a linear block `ỹ = U x̃` (order 1, no output factor).
pub(crate) fn is_linear<T: Real>(f: &CpFactors<T>) -> bool {
    f.order() == 1 && f.output().is_none()
}

/// The moments after first blocks of order 1, from `Σ = F Fᵀ` directly
/// (`factor` `None` for `Σ = I`): `E[z] = U m̃`,
/// `Cov(z_A, z_B) = U_A[:, 1:] Σ U_B[:, 1:]ᵀ`, on independent positions.
pub(crate) fn first_linear<T: Real>(
    fa: &CpFactors<T>,
    fb: Option<&CpFactors<T>>,
    mean: &DVector<T>,
    factor: Option<&DMatrix<T>>,
    context: usize,
) -> JointMoments<T> {
    let d = mean.len() - 1;
    let reduced = |f: &CpFactors<T>| {
        let u = f.stacked_inputs().columns(1, d);
        match factor {
            Some(ff) => u * ff,
            None => u.into_owned(),
        }
    };
    let side = |f: &CpFactors<T>, g: &DMatrix<T>| {
        let m = match f.output() {
            Some(dd) => dd * (f.stacked_inputs() * mean),
            None => f.stacked_inputs() * mean,
        };
        Moments::independent(m, through_outputs(f, f, mul_nt(g, g)), context)
    };
    let ga = reduced(fa);
    let a = side(fa, &ga);
    match fb {
        None => JointMoments::same(a),
        Some(fb) => {
            let gb = reduced(fb);
            JointMoments {
                other: Some((side(fb, &gb), through_outputs(fa, fb, mul_nt(&ga, &gb)))),
                a,
            }
        }
    }
}

/// `⟨f_A,f_B⟩`, `⟨f_A,f_A⟩`, `⟨f_B,f_B⟩` through last linear blocks
/// `ỹ = U x̃`: `Σ_p ⟨U_A[1:]ᵀ U_B[1:], Ŝ_AB[p̂, p̂]⟩`, `Ŝ = Ĉ + m̂ m̂ᵀ`.
pub(crate) fn read_out_linear<T: Real>(
    state: &JointMoments<T>,
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
) -> [LogScaled; 3] {
    let rows = |f: &CpFactors<T>| {
        let u = f.stacked_inputs();
        u.rows(1, u.nrows() - 1).into_owned()
    };
    let (ua, ub) = (rows(fa), rows(fb));
    let inner =
        |ux: &DMatrix<T>, uy: &DMatrix<T>, x: &Moments<T>, y: &Moments<T>, c: &DMatrix<T>| {
            let gram = crate::linalg::mul_tn(ux, uy);
            let (mx, my) = (ux.ncols() - 1, uy.ncols() - 1);
            let mut block = DMatrix::zeros(mx + 1, my + 1);
            let mut value = T::zero();
            let stored = if x.independent { 1 } else { x.context };
            for p in 0..stored {
                padded_block(c, p, p, mx, my, &mut block);
                let (px, py) = (x.padded_mean(p), y.padded_mean(p));
                block.ger(T::one(), &px, &py, T::one());
                value += gram.dot(&block);
            }
            LogScaled::from_scaled(to_f64(value) * x.multiplicity(), x.ln_scale + y.ln_scale)
        };
    let (a, b) = (state.a(), state.b());
    // The three Gram matrices `U_Xᵀ U_Y` (vocabulary-long sums) at once.
    let (cross, (ra, rb)) = rayon::join(
        || inner(&ua, &ub, a, b, state.cross()),
        || {
            rayon::join(
                || inner(&ua, &ua, a, a, &a.cov),
                || inner(&ub, &ub, b, b, &b.cov),
            )
        },
    );
    [cross, ra, rb]
}
