//! The Gaussian metric on sequences ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): moments of the flattened
//! stream with i.i.d. rows. A position-wise block steps per pair of
//! positions on the padded blocks `[p̂, q̂]`; attention has [its own
//! step](super::attention). After a first position-wise block the positions
//! stay independent (one position, repeated); a first linear block takes its
//! moments from `Σ` directly and a last linear block is read out from the
//! second moments, so a vocabulary-wide covariance is never formed.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::GaussianSimilarity;
use super::wick::{Activation, Legs, Moments, check_finite_state, covariance, through_outputs};
use crate::block::positionwise::padded_block;
use crate::block::{Attention, CpFactors, Mask, TensorBlock};
use crate::error::{Error, Result, Side};
use crate::linalg::mul_nt;
use crate::model::Model;
use crate::resources::{flat_entries, scalars};
use crate::scalar::{LogScaled, Real, to_f64};

/// The three inner products of one pass: `⟨f_A,f_B⟩`, `⟨f_A,f_A⟩`, `⟨f_B,f_B⟩`.
pub(super) struct Readout {
    pub(super) cross: LogScaled,
    pub(super) a: LogScaled,
    pub(super) b: LogScaled,
}

impl Readout {
    pub(super) fn of(state: &Moments<impl Real>) -> Self {
        Self {
            cross: state.read_out(),
            a: state.a.read_out_self(),
            b: state.b.read_out_self(),
        }
    }
}

/// What one block is to the Gaussian metric.
enum Kind<'a, T: Real> {
    PositionWise(&'a CpFactors<T>),
    Attention(&'a Attention<T>),
}

fn kind<T: Real>(block: &dyn TensorBlock<T>, side: Side, position: usize) -> Result<Kind<'_, T>> {
    if let Some(cp) = block.cp_factors() {
        return Ok(Kind::PositionWise(cp));
    }
    if let Some(att) = block
        .as_any()
        .and_then(|b| b.downcast_ref::<Attention<T>>())
    {
        return Ok(Kind::Attention(att));
    }
    Err(Error::Unsupported {
        block: position,
        side,
        kind: block.kind(),
        metric: "the Gaussian metric",
    })
}

fn is_linear<T: Real>(f: &CpFactors<T>) -> bool {
    f.order() == 1 && f.output().is_none()
}

/// An estimate of the peak bytes of [`propagate`] on `n` positions: the
/// three moment states (`A`, `B` and their cross moments) in and out of the
/// largest step, with an attention step's covariance tables for each pair of
/// sides and the moments of its largest set of configuration pairs. In
/// `f64`, on the high side (see [`crate::resources`]).
pub(super) fn bytes<T: Real>(a: &Model<T>, b: &Model<T>, same: bool, n: usize) -> f64 {
    let nf = n as f64;
    let sides = if same { 1.0 } else { 3.0 };
    let per_matrix = 96.0 / size_of::<T>() as f64;
    // A collected configuration pair: an e_v × e_v moment, its tuple and
    // matrix header (80 bytes) and allocation header (16), with the growth
    // and concatenation of rayon's collect (up to 2.5 × the headers).
    let per_pair = 216.0 / size_of::<T>() as f64;
    let mut peak: f64 = 0.0;
    for (x, y) in a.blocks().iter().zip(b.blocks()) {
        let states = sides
            * (flat_entries(n, x.input_width(), y.input_width())
                + flat_entries(n, x.output_width(), y.output_width()));
        // (heads, legs per head, e_v, d, configurations) of an attention block.
        let shape = |b: &dyn TensorBlock<T>| match kind(b, Side::A, 0) {
            Ok(Kind::Attention(att)) => {
                let pairs = match att.mask() {
                    Mask::Causal => nf * (nf + 1.0) / 2.0,
                    Mask::None => nf * nf,
                    Mask::Diagonal => nf,
                    Mask::Matrix(w) => w.iter().filter(|v| **v != 0.0).count().max(1) as f64,
                };
                let (h, e, ev) = (
                    att.heads() as f64,
                    att.qk_width() as f64,
                    att.value_width() as f64,
                );
                Some((h, 4.0 * e + ev, ev, att.input_width() as f64, h * pairs))
            }
            _ => None,
        };
        let (Some(sx), Some(sy)) = (shape(&**x), shape(&**y)) else {
            peak = peak.max(states);
            continue;
        };
        let tables = |(hx, lx, evx, dx, _): (f64, f64, f64, f64, f64),
                      (hy, ly, evy, dy, _): (f64, f64, f64, f64, f64)| {
            nf * nf
                * (hx * hy * lx * ly
                    + hy * dx * ly
                    + hx * lx * dy
                    + hx * evx * hy * evy
                    + dx * hy * evy
                    + dy * hx * evx
                    + per_matrix * (hx * hy + hx + hy + 2.0))
        };
        let pairs = |(_, _, evx, _, cx): (f64, f64, f64, f64, f64),
                     (_, _, evy, _, cy): (f64, f64, f64, f64, f64),
                     sym: bool| {
            let count = if sym { cx * (cx + 1.0) / 2.0 } else { cx * cy };
            count * (evx * evy + per_pair)
        };
        let (tables, pairs) = if same {
            (tables(sx, sx), pairs(sx, sx, true))
        } else {
            (
                tables(sx, sy) + tables(sx, sx) + tables(sy, sy),
                pairs(sx, sy, false)
                    .max(pairs(sx, sx, true))
                    .max(pairs(sy, sy, true)),
            )
        };
        peak = peak.max(states + tables + pairs);
    }
    scalars::<T>(peak)
}

/// `E[f_A f_B]`, `E[|f_A|²]`, `E[|f_B|²]` on `n` positions.
pub(super) fn propagate<T: Real>(
    metric: &GaussianSimilarity<T>,
    a: &Model<T>,
    b: &Model<T>,
    same: bool,
    n: usize,
) -> Result<Readout> {
    let depth = a.depth();
    let kinds = |position: usize| -> Result<(Kind<'_, T>, Kind<'_, T>)> {
        Ok((
            kind(&*a.blocks()[position], Side::A, position)?,
            kind(&*b.blocks()[position], Side::B, position)?,
        ))
    };
    let d = a.input_width();
    let (mut state, mut position) = match kinds(0)? {
        (Kind::PositionWise(fa), Kind::PositionWise(fb)) => {
            super::check_order(fa.order(), Side::A, 0)?;
            super::check_order(fb.order(), Side::B, 0)?;
            let one = if fa.order() == 1 && fb.order() == 1 {
                metric.first_linear(fa, fb, d)?
            } else {
                let input = metric.input_state(d)?;
                if same {
                    input.step_same(fa, 0)?
                } else {
                    input.step(fa, fb, 0)?
                }
            };
            (tile(&one, n), 1)
        }
        _ => (metric.flattened_input_state(d, n)?, 0),
    };
    while position < depth {
        let (ka, kb) = kinds(position)?;
        state = match (ka, kb) {
            (Kind::PositionWise(fa), Kind::PositionWise(fb)) => {
                super::check_order(fa.order(), Side::A, position)?;
                super::check_order(fb.order(), Side::B, position)?;
                if position + 1 == depth && is_linear(fa) && is_linear(fb) {
                    return Ok(read_out_linear(&state, fa, fb, n));
                }
                positionwise(&state, fa, fb, same, n, position)?
            }
            (Kind::Attention(aa), Kind::Attention(ab)) => {
                let mut next = super::attention::step(aa, ab, &state, same, n)?;
                normalise(&mut next, position)?;
                next
            }
            (ka, _) => {
                let side = if matches!(ka, Kind::Attention(_)) {
                    Side::B
                } else {
                    Side::A
                };
                let other = if side == Side::A { a } else { b };
                return Err(Error::InvalidBlock(format!(
                    "block {position}: the Gaussian metric compares an attention block only with \
                     an attention block, and model {side:?} has a {} block there",
                    other.blocks()[position].kind()
                )));
            }
        };
        position += 1;
    }
    Ok(Readout::of(&state))
}

fn normalise<T: Real>(state: &mut Moments<T>, block: usize) -> Result<()> {
    let ca = state.a.normalise(block)?;
    let cb = state.b.normalise(block)?;
    state.cross /= ca * cb;
    check_finite_state(state, block)
}

/// One position's joint moments repeated on `n` independent positions.
fn tile<T: Real>(one: &Moments<T>, n: usize) -> Moments<T> {
    let side = |act: &Activation<T>| Activation {
        mean: tile_mean(&act.mean, n),
        cov: tile_cov(&act.cov, n),
        ln_scale: act.ln_scale,
    };
    Moments {
        a: side(&one.a),
        b: side(&one.b),
        cross: tile_cov(&one.cross, n),
    }
}

fn tile_mean<T: Real>(m: &DVector<T>, n: usize) -> DVector<T> {
    let w = m.len() - 1;
    let mut out = DVector::zeros(n * w + 1);
    out[0] = m[0];
    for p in 0..n {
        out.rows_mut(1 + p * w, w).copy_from(&m.rows(1, w));
    }
    out
}

fn tile_cov<T: Real>(c: &DMatrix<T>, n: usize) -> DMatrix<T> {
    let (r, k) = (c.nrows() - 1, c.ncols() - 1);
    let mut out = DMatrix::zeros(n * r + 1, n * k + 1);
    for p in 0..n {
        out.view_mut((1 + p * r, 1 + p * k), (r, k))
            .copy_from(&c.view((1, 1), (r, k)));
    }
    out
}

/// The padded moments of one position: `(m̂_0, m̂[p])` and `Ĉ[p̂, p̂]`.
fn at_position<T: Real>(act: &Activation<T>, p: usize, m: usize) -> Activation<T> {
    let mean = padded_mean(act, p, m);
    let mut cov = DMatrix::zeros(m + 1, m + 1);
    padded_block(&act.cov, p, p, m, m, &mut cov);
    Activation {
        mean,
        cov,
        ln_scale: act.ln_scale,
    }
}

/// `(m̂_0, m̂[p])`.
fn padded_mean<T: Real>(act: &Activation<T>, p: usize, m: usize) -> DVector<T> {
    let mut mean = DVector::zeros(m + 1);
    mean[0] = act.mean[0];
    mean.rows_mut(1, m).copy_from(&act.mean.rows(1 + p * m, m));
    mean
}

/// One side's position-wise moments and legs at every position.
struct Positions<T: Real> {
    at: Vec<Activation<T>>,
    legs: Vec<Legs<T>>,
}

impl<T: Real> Positions<T> {
    fn new(f: &CpFactors<T>, act: &Activation<T>, n: usize) -> Self {
        let at: Vec<Activation<T>> = (0..n)
            .map(|p| at_position(act, p, f.input_width()))
            .collect();
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

/// The moment step of position-wise blocks on the flattened stream.
fn positionwise<T: Real>(
    state: &Moments<T>,
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    same: bool,
    n: usize,
    block: usize,
) -> Result<Moments<T>> {
    let x = Positions::new(fa, &state.a, n);
    let side = |f: &CpFactors<T>, pos: &Positions<T>, act: &Activation<T>| Activation {
        mean: pos.mean(f),
        cov: output_covariance((f, pos), (f, pos), &act.cov, true),
        ln_scale: act.ln_scale * f.order() as f64,
    };
    let a = side(fa, &x, &state.a);
    let mut next = if same {
        Moments {
            cross: a.cov.clone(),
            b: a.clone(),
            a,
        }
    } else {
        let y = Positions::new(fb, &state.b, n);
        Moments {
            cross: output_covariance((fa, &x), (fb, &y), &state.cross, false),
            b: side(fb, &y, &state.b),
            a,
        }
    };
    if !(next.a.ln_scale.is_finite() && next.b.ln_scale.is_finite()) {
        return Err(Error::NumericalBreakdown {
            block,
            reason: "the log scale overflowed".into(),
        });
    }
    normalise(&mut next, block)?;
    Ok(next)
}

/// The read-out through last linear blocks `ỹ = U x̃`:
/// `Σ_p ⟨U_A[1:]ᵀ U_B[1:], Ŝ_AB[p̂, p̂]⟩`, `Ŝ = Ĉ + m̂ m̂ᵀ`.
fn read_out_linear<T: Real>(
    state: &Moments<T>,
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    n: usize,
) -> Readout {
    let rows = |f: &CpFactors<T>| {
        let u = f.stacked_inputs();
        u.rows(1, u.nrows() - 1).into_owned()
    };
    let (ua, ub) = (rows(fa), rows(fb));
    let inner =
        |ux: &DMatrix<T>, uy: &DMatrix<T>, x: &Activation<T>, y: &Activation<T>, c: &DMatrix<T>| {
            let gram = ux.transpose() * uy;
            let (mx, my) = (ux.ncols() - 1, uy.ncols() - 1);
            let mut block = DMatrix::zeros(mx + 1, my + 1);
            let mut value = T::zero();
            for p in 0..n {
                padded_block(c, p, p, mx, my, &mut block);
                let (px, py) = (padded_mean(x, p, mx), padded_mean(y, p, my));
                block.ger(T::one(), &px, &py, T::one());
                value += gram.dot(&block);
            }
            LogScaled::from_scaled(to_f64(value), x.ln_scale + y.ln_scale)
        };
    Readout {
        cross: inner(&ua, &ub, &state.a, &state.b, &state.cross),
        a: inner(&ua, &ua, &state.a, &state.a, &state.a.cov),
        b: inner(&ub, &ub, &state.b, &state.b, &state.b.cov),
    }
}

impl<T: Real> GaussianSimilarity<T> {
    /// The moments after first blocks of order 1 at one position, from
    /// `Σ` directly: `E[z] = U m̃`, `Cov(z_A, z_B) = U_A[:, 1:] Σ U_B[:, 1:]ᵀ`.
    fn first_linear(&self, fa: &CpFactors<T>, fb: &CpFactors<T>, d: usize) -> Result<Moments<T>> {
        let mut mean = DVector::zeros(d + 1);
        mean[0] = T::one();
        if let Some(mu) = &self.mean {
            crate::block::check_len("input mean", mu, d)?;
            mean.rows_mut(1, d).copy_from(mu);
        }
        let factor = match &self.covariance {
            Some(sigma) => Some(super::covariance_factor(sigma)?),
            None => None,
        };
        let reduced = |f: &CpFactors<T>| {
            let u = f.stacked_inputs().columns(1, d);
            match &factor {
                Some(ff) => u * ff,
                None => u.into_owned(),
            }
        };
        let (ga, gb) = (reduced(fa), reduced(fb));
        let side = |f: &CpFactors<T>, g: &DMatrix<T>| Activation {
            mean: match f.output() {
                Some(dd) => dd * (f.stacked_inputs() * &mean),
                None => f.stacked_inputs() * &mean,
            },
            cov: through_outputs(f, f, mul_nt(g, g)),
            ln_scale: 0.0,
        };
        let mut state = Moments {
            cross: through_outputs(fa, fb, mul_nt(&ga, &gb)),
            a: side(fa, &ga),
            b: side(fb, &gb),
        };
        normalise(&mut state, 0)?;
        Ok(state)
    }

    /// `m = (1, μ, …, μ)`, `C = diag(0, Σ, …, Σ)` on `n` positions, normalised.
    fn flattened_input_state(&self, d: usize, n: usize) -> Result<Moments<T>> {
        let one = self.input_state(d)?;
        Ok(tile(&one, n))
    }
}
