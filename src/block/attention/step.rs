//! The exact Gram step of two attention blocks (derivation and cost model:
//! `docs/attention.md`).
//!
//! Each block's output `(s, o)` is, as an order-5 tensor on the flattened
//! padded stream, the sum of three terms:
//!
//! * `T1` attention: `α/c Σ_t W[s,t] Σ_h Σ_{a,b,c} O[o,(h,c)] q1[s]_a k1[t]_a q2[s]_b k2[t]_b v[t]_c`,
//!   every factor a linear form on `x̃` (legs `Q1 K1 Q2 K2 V`);
//! * `T2` skip: `r · x̃_{(s,o)} ⊗ e_0 ⊗ e_0 ⊗ e_0 ⊗ e_0`;
//! * `T3` constant: `β_o e_0^{⊗5}` with `β = (1, α b_o)`.
//!
//! `G'` sums `⟨T_i^A, P T_j^B⟩_G` over the nine pairs, `P` the average over
//! `S_5`. Pairs with `T2` or `T3` fix four or five legs to `e_0`, whose
//! products with `G` are the legs' "mean" values `m = U G e_0`: they are
//! the block's forward pass, or its derivative, on those values. The pair
//! `T1 × T1` sums 120 leg bijections; contracting each A score node
//! (`{Q1,K1}`, `{Q2,K2}`) over its shared index first, both orders of its
//! two legs at once, leaves 30 assignments, each a chain of small matrices
//! over head widths.

use nalgebra::{DMatrix, DMatrixView, DVector, Dyn};
use rayon::prelude::*;

use super::heads::HeadTerms;
use super::layer::{Attention, Mask, Role};
use crate::error::{Error, Result};
use crate::linalg::{gemm, gemm_nt, gemm_op, gemm_tn, mul, mul_nt};
use crate::padded::padded_block;
use crate::resources::{flat_entries, flat_width, zeros};
use crate::scalar::{Real, from_f64};
use crate::validate::check_shape;

/// Legs: 0 `Q1`, 1 `K1`, 2 `Q2`, 3 `K2` (score legs, nodes `{0,1}` and
/// `{2,3}`), 4 `V`. The partner of a score leg shares its node's index.
const PARTNER: [usize; 4] = [1, 0, 3, 2];
/// Whether a leg reads the query position `s` (else the key position `t`).
const AT_QUERY: [bool; 5] = [true, false, true, false, false];

/// One block's view of the step: its weights, leg layout and constants.
struct Side<'a, T: Real> {
    block: &'a Attention<T>,
    heads: usize,
    e: usize,
    ev: usize,
    out: usize,
    mask: DMatrix<f64>,
    /// `F(p)`: the stacked padded leg forms at each position.
    legs: Vec<DMatrix<T>>,
}

impl<'a, T: Real> Side<'a, T> {
    fn new(block: &'a Attention<T>, n: usize) -> Result<Self> {
        Ok(Self {
            block,
            heads: block.heads(),
            e: block.qk_width(),
            ev: block.value_width(),
            out: block.output_width(),
            mask: block.mask().weights(n)?,
            legs: (0..n)
                .into_par_iter()
                .map(|p| block.leg_factors(p))
                .collect(),
        })
    }

    /// First row of leg `l`, head `h` in the stacked forms.
    fn row(&self, l: usize, h: usize) -> usize {
        self.block.leg_row(l, h)
    }

    /// The rows of head `h`'s five legs in a head's own stacked forms.
    fn head_row(&self, l: usize) -> usize {
        if l < 4 { l * self.e } else { 4 * self.e }
    }

    /// Rows of one head's five legs, `4e + e_v`.
    fn leg_rows(&self) -> usize {
        4 * self.e + self.ev
    }

    /// The rows of `m` (stacked leg-major, as `F(p)`) regrouped by head:
    /// head `h`'s `[Q1; K1; Q2; K2; V]`, `(4e + e_v) × cols`.
    fn by_head(&self, m: &DMatrix<T>) -> Vec<DMatrix<T>> {
        (0..self.heads)
            .map(|h| {
                let mut out = DMatrix::zeros(self.leg_rows(), m.ncols());
                for l in 0..5 {
                    let w = self.leg_width(l);
                    out.rows_mut(self.head_row(l), w)
                        .copy_from(&m.rows(self.row(l, h), w));
                }
                out
            })
            .collect()
    }

    /// Width of leg `l` per head.
    fn leg_width(&self, l: usize) -> usize {
        if l < 4 { self.e } else { self.ev }
    }

    /// `β = (1, α b_o)`: the constant term's output, padded.
    fn beta(&self) -> DVector<T> {
        let mut beta = DVector::zeros(self.out + 1);
        beta[0] = T::one();
        if let Some(b) = self.block.bias(Role::O) {
            beta.rows_mut(1, self.out)
                .copy_from(&(b * from_f64::<T>(self.block.scale())));
        }
        beta
    }

    /// The attention term evaluated with every leg at `m(p)` (`phi`,
    /// `n × out`), and its derivative along `dirs(p)` (one `L × k` matrix
    /// per position): `(1/5) Σ_j T1(m, …, dirs at leg j, …, m)` per query
    /// position, `out × k` (`psi`); and the scores' weighted values before
    /// `O`, `Σ_t W[s,t] s1 s2 v` (`H e_v × n`), which the head paths read.
    fn linearize(
        &self,
        m: &[DVector<T>],
        dirs: Option<&[DMatrixView<'_, T>]>,
    ) -> (DMatrix<T>, Vec<DMatrix<T>>, DMatrix<T>) {
        let n = m.len();
        let k = dirs.map_or(0, |d| d[0].ncols());
        let hv = self.heads * self.ev;
        let mut zphi = DMatrix::<T>::zeros(hv, n);
        let mut zpsi = vec![DMatrix::<T>::zeros(hv, k); if dirs.is_some() { n } else { 0 }];
        let mut dscore = DMatrix::<T>::zeros(k, 1);
        // `s` indexes positions in `m`, the mask and `zpsi` alike.
        #[allow(clippy::needless_range_loop)]
        for s in 0..n {
            for t in 0..n {
                let w: T = from_f64(self.mask[(s, t)]);
                if w == T::zero() {
                    continue;
                }
                for h in 0..self.heads {
                    let leg = |l: usize| {
                        let p = if AT_QUERY[l] { s } else { t };
                        m[p].rows(self.row(l, h), self.leg_width(l))
                    };
                    let (s1, s2) = (leg(0).dot(&leg(1)), leg(2).dot(&leg(3)));
                    let v = leg(4);
                    zphi.column_mut(s).rows_mut(h * self.ev, self.ev).axpy(
                        w * s1 * s2,
                        &v,
                        T::one(),
                    );
                    if let Some(dirs) = dirs {
                        let dir = |l: usize| {
                            let p = if AT_QUERY[l] { s } else { t };
                            dirs[p].rows(self.row(l, h), self.leg_width(l))
                        };
                        // d(s1 s2) = ds1 s2 + s1 ds2, a column over the k
                        // directions: ds1 = dir(0)ᵀ leg(1) + dir(1)ᵀ leg(0),
                        // each by the GEMM engine.
                        let column = |l: usize| {
                            let p = if AT_QUERY[l] { s } else { t };
                            let r = self.row(l, h);
                            DMatrixView::from_slice(
                                &m[p].as_slice()[r..r + self.leg_width(l)],
                                self.leg_width(l),
                                1,
                            )
                        };
                        dscore.fill(T::zero());
                        for (x, y, c) in [(0, 1, s2), (1, 0, s2), (2, 3, s1), (3, 2, s1)] {
                            gemm_tn(c, &dir(x), &column(y), T::one(), &mut dscore);
                        }
                        let mut z = zpsi[s].view_mut((h * self.ev, 0), (self.ev, k));
                        z.ger(w, &v, &dscore.column(0), T::one());
                        add_scaled(&mut z, w * s1 * s2, &dir(4));
                    }
                }
            }
        }
        let coef: T = from_f64(self.block.scale() / self.block.score_scale());
        let o = self.block.weight(Role::O);
        let phi = mul(o, &zphi).transpose() * coef;
        let fifth: T = from_f64(0.2);
        let psi = zpsi
            .iter()
            .map(|z| {
                let mut oz = DMatrix::zeros(o.nrows(), k);
                gemm(coef * fifth, o, z, T::zero(), &mut oz);
                oz
            })
            .collect();
        (phi, psi, zphi)
    }
}

/// The shapes a step's memory depends on, as `f64` (never overflows).
struct Shapes {
    /// Stacked leg rows `H (4e + e_v)`, of A and B.
    legs: (f64, f64),
    /// `H e_v`.
    values: (f64, f64),
    heads: (f64, f64),
    inputs: (usize, usize),
    outputs: (usize, usize),
    /// B's widest head leg, `max(e, e_v)`.
    head_width: f64,
}

impl Shapes {
    fn of<T: Real>(a: &Attention<T>, b: &Attention<T>) -> Self {
        let legs = |x: &Attention<T>| (x.heads() * (4 * x.qk_width() + x.value_width())) as f64;
        let values = |x: &Attention<T>| (x.heads() * x.value_width()) as f64;
        Self {
            legs: (legs(a), legs(b)),
            values: (values(a), values(b)),
            heads: (a.heads() as f64, b.heads() as f64),
            inputs: (a.input_width(), b.input_width()),
            outputs: (a.output_width(), b.output_width()),
            head_width: b.qk_width().max(b.value_width()) as f64,
        }
    }

    /// Scalars of one row of `X`: `X(p,q)` for every `q`, all head pairs.
    fn x_row(&self, n: usize) -> f64 {
        n as f64 * self.legs.0 * self.legs.1
    }

    /// The step's Gram matrices, in and out.
    fn grams(&self, n: usize) -> f64 {
        let (da, db) = self.inputs;
        let (oa, ob) = self.outputs;
        flat_entries(n, da, db) + flat_entries(n, oa, ob)
    }
}

/// `X` is held whole up to this many scalars (1 GiB of `f64`), or up to the
/// size of the step's Gram matrices if larger; beyond, in tiles of query
/// positions. A tile makes the key rows outside it again, so tiles cost
/// `O(n³ L² d)` more per-leg multiply–adds, which only pays where the
/// memory matters.
pub(super) const WHOLE_PRODUCTS_UP_TO: f64 = (1u64 << 27) as f64;

/// Columns (or rows) of position pairs [`gram_step`] makes at once in its
/// linearised passes.
const COLUMNS_AT_ONCE: usize = 4;

/// The query positions whose rows of `X` [`gram_step`] holds at once: all
/// `n` when `X` fits the budget above; else as many as fit in it beside the
/// one key row made at a time (at least one).
fn query_tile(shapes: &Shapes, n: usize) -> usize {
    rows_within(
        WHOLE_PRODUCTS_UP_TO.max(shapes.grams(n)),
        shapes.x_row(n),
        n,
    )
}

/// A tile's keys (ascending) as the ranges its tasks sum at once: each run
/// of keys inside the tile, whose rows the tile holds, and each key outside
/// alone (`true`: its row is made for it and dropped after).
pub(super) fn key_runs(
    keys: &[usize],
    queries: &core::ops::Range<usize>,
) -> Vec<(core::ops::Range<usize>, bool)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let t = keys[i];
        let mut end = i + 1;
        if queries.contains(&t) {
            while end < keys.len() && queries.contains(&keys[end]) {
                end += 1;
            }
        }
        runs.push((t..keys[end - 1] + 1, !queries.contains(&t)));
        i = end;
    }
    runs
}

/// Of `n` rows of `row` scalars each, how many query rows a step holds
/// within `budget`: all `n` when they all fit; else as many as fit beside
/// the one key row made at a time (at least one). The tensor step's tiles
/// and the Gaussian step's (see `moments::query_tile`) follow it.
pub(super) fn rows_within(budget: f64, row: f64, n: usize) -> usize {
    if n as f64 * row <= budget {
        n
    } else {
        ((budget / row) as usize).saturating_sub(1).clamp(1, n)
    }
}

/// An estimate of the scalars [`gram_step`] of `a` and `b` holds at its
/// peak on `n` positions (see [`TensorBlock::gram_step_scalars`]), in `f64`.
pub(super) fn scalars<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize) -> f64 {
    let shapes = Shapes::of(a, b);
    tiled_scalars(&shapes, n, query_tile(&shapes, n))
}

/// [`scalars`] with `tile` query positions' rows of `X` held at once.
fn tiled_scalars(shapes: &Shapes, n: usize, tile: usize) -> f64 {
    let nf = n as f64;
    let (la, lb) = shapes.legs;
    let (va, vb) = shapes.values;
    let (da, db) = (shapes.inputs.0 as f64, shapes.inputs.1 as f64);
    let (oa, ob) = (shapes.outputs.0 as f64, shapes.outputs.1 as f64);
    // The leg forms per position (and B's regrouped by head, transposed).
    let legs = nf * (la * (da + 1.0) + 2.0 * lb * (db + 1.0));
    // The rows of X held: all, or the tile's and one key row.
    let products = if tile >= n {
        nf * shapes.x_row(n)
    } else {
        (tile as f64 + 1.0) * shapes.x_row(n)
    };
    // In flight, a few columns (or rows) of position pairs: Y(·,q) and its
    // directions, the linearised terms and their products with O.
    let at_once = COLUMNS_AT_ONCE.min(n) as f64;
    let width = la.max(lb) * (da.max(db) + 1.0);
    let columns = at_once * nf * (2.0 * width + (va.max(vb) + oa.max(ob)) * (da.max(db) + 1.0));
    // Z of the tile's query positions as the tasks' rows, a self product's
    // mirrors (counted always), and each task's scratch.
    let t = tile.min(n) as f64;
    // (At most one task per query of the tile and head of A runs at once:
    // its `E` matrices and `E_ν(Q1', Q2')` for every `s'`.)
    let w = shapes.head_width;
    let scratch = t * shapes.heads.0 * (32.0 + 2.0 * nf) * w * w;
    let z = t * nf * va * vb + t * shapes.heads.0 * va * vb + scratch;
    let output = flat_entries(n, shapes.outputs.0, shapes.outputs.1);
    legs + products + columns + z + output
}

/// An estimate of the multiply–adds of [`gram_step`] of `a` and `b` on `n`
/// positions (see [`TensorBlock::gram_step_work`]): the cost model of the
/// [attention guide](crate::guide::attention#cost-model), term by term,
/// with the key rows a tile makes again. Counted as a cross step (a self
/// step does about half its pair contraction and `n(n+1)/2` of the `n²`
/// products `X`, and no `T2 × T1` pass), so on the high side.
pub(super) fn work<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize) -> f64 {
    let shapes = Shapes::of(a, b);
    let nf = n as f64;
    let (la, lb) = shapes.legs;
    let (va, vb) = shapes.values;
    let (da, db) = (shapes.inputs.0 as f64 + 1.0, shapes.inputs.1 as f64 + 1.0);
    let (oa, ob) = (shapes.outputs.0 as f64 + 1.0, shapes.outputs.1 as f64 + 1.0);
    let pairs = |m: &Mask| match m {
        Mask::Causal => nf * (nf + 1.0) / 2.0,
        Mask::None => nf * nf,
        Mask::Diagonal => nf,
        Mask::Matrix(w) => w.iter().filter(|v| **v != 0.0).count() as f64,
    };
    // Y = F_A(p) Ĝ[p,q] and X = Y F_B(q)ᵀ for every pair of positions, and
    // the key rows outside a tile made again for each tile.
    let x_pair = la * da * db + la * lb * db;
    let tile = query_tile(&shapes, n) as f64;
    let again = if tile < nf {
        (nf / tile).ceil() * nf * nf * la * lb * db
    } else {
        0.0
    };
    // About 52 products of e × e matrices per pair of (s, t) pairs and
    // heads, the lower terms per position triple, and O applied.
    let e = shapes.head_width;
    let contraction =
        shapes.heads.0 * shapes.heads.1 * pairs(a.mask()) * pairs(b.mask()) * 52.0 * e * e * e;
    let lower = nf * nf * nf * (la * db + lb * da) * e;
    let output = nf * nf * (oa * va * vb + oa * ob * vb + (la + lb) * (da + db));
    nf * nf * x_pair + again + contraction + lower + output
}

/// `G'` for attention blocks `a` and `b` (`None`: the self product) on
/// `n` positions.
///
/// The per-position-pair products `Y = F_A(p) Ĝ[p,q]` and `Ỹ = Ĝ[p,q] F_B(q)ᵀ`
/// live only while one column (or row) of position pairs is processed: what
/// is kept is `X = Y F_B(q)ᵀ`, one matrix per pair of positions and heads
/// (in a self product, per unordered pair of positions: `X(q,p) =
/// X(p,q)ᵀ`). The attention pairs
/// then run one task per query position and head of `A`, each summing its
/// own rows of `Z` in a fixed order, so that the result does not depend on
/// the number of threads.
pub(super) fn gram_step<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    n: usize,
) -> Result<DMatrix<T>> {
    let tile = query_tile(&Shapes::of(a, b.unwrap_or(a)), n);
    gram_step_in_tiles(a, b, g, n, tile)
}

/// [`gram_step`] with `query_tile` query positions' rows of `X` held at once
/// (`n`: all of `X`); the tile size changes no bit of the result.
pub(super) fn gram_step_in_tiles<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    n: usize,
    query_tile: usize,
) -> Result<DMatrix<T>> {
    Ok(step(a, b, g, n, query_tile, false)?.0)
}

/// [`gram_step`] and what the head paths of the step read
/// ([`HeadTerms`]): the same work, with each `Z(p,q)` kept.
pub(super) fn gram_step_with_heads<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    n: usize,
) -> Result<(DMatrix<T>, HeadTerms<T>)> {
    let tile = query_tile(&Shapes::of(a, b.unwrap_or(a)), n);
    let (out, heads) = step(a, b, g, n, tile, true)?;
    Ok((out, heads.expect("asked for")))
}

/// The step; with `keep_heads`, also its [`HeadTerms`].
fn step<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    n: usize,
    query_tile: usize,
    keep_heads: bool,
) -> Result<(DMatrix<T>, Option<HeadTerms<T>>)> {
    if n == 0 {
        return Err(Error::ZeroContext);
    }
    // The shape first: `g` exists, so `n` is then no larger than its rows.
    let (da, db) = (a.input_width(), b.unwrap_or(a).input_width());
    check_shape(
        "cross Gram matrix",
        g,
        (flat_width(n, da)?, flat_width(n, db)?),
    )?;
    let sa = Side::new(a, n)?;
    // A self product's B is A.
    let sb_own = b.map(|b| Side::new(b, n)).transpose()?;
    let sb = sb_own.as_ref().unwrap_or(&sa);
    let same = b.is_none();

    // Mean legs m = F G e_0 on each side: A's from the padded column 0 of
    // Ĝ[p,0], B's from the padded row 0 of Ĝ[0,q].
    let g00 = g[(0, 0)];
    let ma: Vec<DVector<T>> = (0..n)
        .map(|p| {
            let mut col = DVector::zeros(da + 1);
            col[0] = g00;
            col.rows_mut(1, da)
                .copy_from(&g.view((1 + p * da, 0), (da, 1)));
            &sa.legs[p] * col
        })
        .collect();
    let mb: Vec<DVector<T>> = (0..n)
        .map(|q| {
            let mut row = DVector::zeros(db + 1);
            row[0] = g00;
            row.rows_mut(1, db)
                .copy_from(&g.view((0, 1 + q * db), (1, db)).transpose());
            &sb.legs[q] * row
        })
        .collect();

    let (oa, ob) = (sa.out, sb.out);
    let (ra, rb): (T, T) = (from_f64(a.skip()), from_f64(sb.block.skip()));
    let (beta_a, beta_b) = (sa.beta(), sb.beta());
    let g00_4 = g00 * g00 * g00 * g00;
    let g00_5 = g00_4 * g00;

    let (phi_a, _, zphi_a) = sa.linearize(&ma, None);
    let (phi_b, _, zphi_b) = sb.linearize(&mb, None);

    let mut out = zeros::<T>(flat_width(n, oa)?, flat_width(n, ob)?)?;
    // Constant row and column, and the terms with T3 or T2 × T2.
    out[(0, 0)] = g00_5;
    for q in 0..n {
        for o in 0..ob {
            let col = 1 + q * ob + o;
            let mut v = phi_b[(q, o)] + beta_b[1 + o] * g00_5;
            if rb != T::zero() {
                v += rb * g[(0, 1 + q * db + o)] * g00_4;
            }
            out[(0, col)] = v;
        }
    }
    for p in 0..n {
        for o in 0..oa {
            let row = 1 + p * oa + o;
            let mut v = phi_a[(p, o)] + beta_a[1 + o] * g00_5;
            if ra != T::zero() {
                v += ra * g[(1 + p * da + o, 0)] * g00_4;
            }
            out[(row, 0)] = v;
        }
    }
    let fifth: T = from_f64(0.2);
    let four: T = from_f64(4.0);
    // Per row `1 + p o_A + o`: (its row `1 + p d_A + o` in Ĝ, β_A, φ_A,
    // Ĝ[that row, 0]).
    let rows_a: Vec<(usize, T, T, T)> = (0..n)
        .flat_map(|p| (0..oa).map(move |o| (p, o)))
        .map(|(p, o)| {
            let g_row = 1 + p * da + o;
            let ga0 = if ra != T::zero() {
                g[(g_row, 0)]
            } else {
                T::zero()
            };
            (g_row, beta_a[1 + o], phi_a[(p, o)], ga0)
        })
        .collect();
    // Each column of `out` past the first on its own (`n² o_A o_B` terms:
    // run on one thread they left the other idle).
    let height = out.nrows();
    out.as_mut_slice()
        .par_chunks_mut(height)
        .enumerate()
        .skip(1)
        .with_min_len(16)
        .for_each(|(col, column)| {
            let (q, o2) = ((col - 1) / ob, (col - 1) % ob);
            let (bb, pb) = (beta_b[1 + o2], phi_b[(q, o2)]);
            let g0b = g[(0, 1 + q * db + o2)];
            for (&(g_row, ba, pa, ga0), v_out) in rows_a.iter().zip(&mut column[1..]) {
                let mut v = pa * bb + ba * pb + ba * bb * g00_5;
                if rb != T::zero() {
                    v += ba * rb * g0b * g00_4;
                }
                if ra != T::zero() {
                    v += ra * ga0 * g00_4 * bb;
                }
                if ra != T::zero() && rb != T::zero() {
                    let gab = g[(g_row, 1 + q * db + o2)];
                    v += ra * rb * fifth * (gab * g00_4 + four * ga0 * g0b * g00 * g00 * g00);
                }
                *v_out = v;
            }
        });

    // B's forms by head, transposed once: `(d_B + 1) × (4e + e_v)`.
    let heads_b: Vec<Vec<DMatrix<T>>> = sb
        .legs
        .iter()
        .map(|f| sb.by_head(f).iter().map(|h| h.transpose()).collect())
        .collect();
    let pairs = PairProducts {
        sa: &sa,
        heads_b: &heads_b,
        g,
        widths: (da, db),
    };
    let rows = query_tile.clamp(1, n);
    let whole = rows == n;
    // Columns (rows) of position pairs in flight: a bound the memory
    // estimate can count on whatever the thread count; each column's
    // positions run in parallel too.
    let in_flight = COLUMNS_AT_ONCE;

    // T1 × T2 (A's attention with one leg on a column of G, B's skip input),
    // one column q of position pairs at a time, a few columns at once: Y(·,q)
    // gives the directions, and, when X is held whole, X(·,q) (in a self
    // product X(p,q) for p ≤ q only); then it is dropped. Each column adds
    // into its own columns of `out`.
    let mut products = Products::new(n, (sa.heads, sb.heads));
    // A block with `α = 0` (a skip part, SPEC §9) has no attention term:
    // no pass below that reads it runs.
    let (active_a, active_b) = (a.scale() != 0.0, sb.block.scale() != 0.0);
    let t1_t1 = active_a && active_b;
    let t1_t2 = active_a && rb != T::zero();
    // In a self product T2 × T1 at (p, q) is T1 × T2 at (q, p) transposed
    // (one block, Ĝ symmetric), and `out` is symmetrised at the end: T1 × T2
    // counted twice stands for both, and T2 × T1 is not made.
    let t1_t2_weight = if same { rb + rb } else { rb };
    // Nothing to make column by column when X is tiled and B has no skip.
    if (whole && t1_t1) || t1_t2 {
        let height = out.nrows();
        let (_, by_column) = out.as_mut_slice().split_at_mut(height);
        let mut columns = by_column.chunks_mut(ob * height).enumerate();
        loop {
            let batch: Vec<(usize, &mut [T])> = columns.by_ref().take(in_flight).collect();
            if batch.is_empty() {
                break;
            }
            let xs: Vec<Option<Vec<Entry<T>>>> = batch
                .into_par_iter()
                .map(|(q, column)| {
                    let ys: Vec<DMatrix<T>> =
                        (0..n).into_par_iter().map(|p| pairs.y(p, q)).collect();
                    // A self product's X(p,q) below the diagonal is
                    // X(q,p)ᵀ (one block, Ĝ symmetric): read transposed.
                    let x = (whole && t1_t1).then(|| {
                        ys.par_iter()
                            .enumerate()
                            .map(|(p, y)| (!same || p <= q).then(|| (pairs.x(y, q), false)))
                            .collect()
                    });
                    if t1_t2 {
                        let dirs: Vec<DMatrixView<'_, T>> =
                            ys.iter().map(|y| y.columns(1, db)).collect();
                        let psi = sa.linearize(&ma, Some(&dirs)).1;
                        let mut column = nalgebra::DMatrixViewMut::from_slice(column, height, ob);
                        for (p, psi) in psi.iter().enumerate() {
                            let mut blk = column.view_mut((1 + p * oa, 0), (oa, ob));
                            add_scaled(&mut blk, t1_t2_weight, psi);
                        }
                    }
                    x
                })
                .collect();
            for x in xs.into_iter().flatten() {
                products.push_column(x);
            }
        }
    }
    // T2 × T1: B's attention with one leg on a row of G (A's skip input),
    // one row p of position pairs at a time, a few rows at once.
    if ra != T::zero() && active_b && !same {
        for first in (0..n).step_by(in_flight) {
            let rows_at_once = first..(first + in_flight).min(n);
            let psis: Vec<Vec<DMatrix<T>>> = rows_at_once
                .clone()
                .into_par_iter()
                .map(|p| {
                    let dirs: Vec<DMatrix<T>> = (0..n)
                        .map(|q| mul_nt(&sb.legs[q], &pairs.block(p, q).rows(1, da)))
                        .collect();
                    let views: Vec<DMatrixView<'_, T>> = dirs.iter().map(|d| d.as_view()).collect();
                    sb.linearize(&mb, Some(&views)).1
                })
                .collect();
            for (p, psi) in rows_at_once.zip(&psis) {
                for (q, psi) in psi.iter().enumerate() {
                    let mut blk = out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob));
                    add_scaled(&mut blk, ra, &psi.transpose());
                }
            }
        }
    }

    // T1 × T1, one tile of query positions at a time: X's rows of the tile
    // are held (all of X when it is held whole), every other key row the
    // tile reads is made, used and dropped in turn, and the tile's rows of Z
    // are folded into `out` when its keys are done. Each task sums its keys
    // in ascending order whatever the tiles, so the tile size changes no bit.
    let coef: T =
        from_f64(a.scale() * sb.block.scale() / (a.score_scale() * sb.block.score_scale() * 120.0));
    let (o_a, o_b) = (a.weight(Role::O), sb.block.weight(Role::O));
    let starts: Vec<usize> = if t1_t1 {
        (0..n).step_by(rows).collect()
    } else {
        Vec::new()
    };
    // Z(p, q) for the head paths, at p·n + q.
    let mut kept_z: Vec<DMatrix<T>> = Vec::new();
    if keep_heads {
        kept_z = vec![DMatrix::zeros(sa.heads * sa.ev, sb.heads * sb.ev); n * n];
    }
    for start in starts {
        let queries = start..(start + rows).min(n);
        if !whole {
            let held: Vec<_> = queries
                .clone()
                .map(|p| (p, pairs.x_row(p, n, same)))
                .collect();
            for (p, row) in held {
                products.hold(p, row);
            }
        }
        let mut sums = PairSums::new(&sa, sb, queries.clone(), n, same);
        // The key positions any query of the tile reads, in ascending order:
        // runs inside the tile use its rows; each key outside is made alone.
        let keys: Vec<usize> = (0..n)
            .filter(|&t| queries.clone().any(|s| sa.mask[(s, t)] != 0.0))
            .collect();
        for (run, outside) in key_runs(&keys, &queries) {
            if outside {
                products.hold(run.start, pairs.x_row(run.start, n, same));
            }
            attention_pairs(&sa, sb, &products, run.clone(), &mut sums);
            if outside {
                products.release(run.start);
            }
        }
        // O_A Z(p,q) O_Bᵀ for the tile's pairs in parallel, added in order.
        let tile_pairs: Vec<(usize, usize)> = queries
            .clone()
            .flat_map(|p| (if same { p..n } else { 0..n }).map(move |q| (p, q)))
            .collect();
        // In a self product the block at (q, p) is the one at (p, q)
        // transposed (Z(q,p) = Z(p,q)ᵀ), and `out` is symmetrised at the
        // end: the block at (p, q), q > p, counted twice stands for both.
        let double = coef + coef;
        let folded: Vec<(DMatrix<T>, Option<DMatrix<T>>)> = tile_pairs
            .par_iter()
            .map(|&(p, q)| {
                let mut zpq = DMatrix::<T>::zeros(sa.heads * sa.ev, sb.heads * sb.ev);
                sums.block(p, q, &mut zpq);
                let mut ozo = DMatrix::zeros(oa, ob);
                let scale = if same && q > p { double } else { coef };
                gemm_nt(scale, &mul(o_a, &zpq), o_b, T::zero(), &mut ozo);
                (ozo, keep_heads.then_some(zpq))
            })
            .collect();
        for (&(p, q), (ozo, zpq)) in tile_pairs.iter().zip(folded) {
            if let Some(zpq) = zpq {
                if same && q > p {
                    kept_z[q * n + p] = zpq.transpose();
                }
                kept_z[p * n + q] = zpq;
            }
            let mut blk = out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob));
            blk += ozo;
        }
        if !whole {
            for p in queries {
                products.release(p);
            }
        }
    }
    if same {
        // Symmetric up to rounding; the next self step relies on it exactly.
        // In place: `(x + y) / 2` is the same bits at `(i, j)` and `(j, i)`.
        let half: T = from_f64(0.5);
        for j in 0..out.ncols() {
            for i in 0..j {
                let v = (out[(i, j)] + out[(j, i)]) * half;
                out[(i, j)] = v;
                out[(j, i)] = v;
            }
        }
    }
    let heads = keep_heads.then(|| HeadTerms {
        n,
        z: kept_z,
        values: [zphi_a, zphi_b],
        o: [o_a.clone(), o_b.clone()],
        scales: [
            from_f64(a.scale() / a.score_scale()),
            from_f64(sb.block.scale() / sb.block.score_scale()),
        ],
        pair_scale: coef,
        widths: [sa.ev, sb.ev],
        constant: g00_5,
        same,
    });
    Ok((out, heads))
}

/// `dst += a · src` for matrices of one shape.
#[inline(always)]
fn add_scaled<T, S1, S2>(
    dst: &mut nalgebra::Matrix<T, Dyn, Dyn, S1>,
    a: T,
    src: &nalgebra::Matrix<T, Dyn, Dyn, S2>,
) where
    T: Real,
    S1: nalgebra::StorageMut<T, Dyn, Dyn>,
    S2: nalgebra::Storage<T, Dyn, Dyn>,
{
    assert_eq!(dst.shape(), src.shape(), "add_scaled: shapes differ");
    for (mut d, s) in dst.column_iter_mut().zip(src.column_iter()) {
        d.axpy(a, &s, T::one());
    }
}

/// What makes the per-position-pair products of one step.
struct PairProducts<'a, T: Real> {
    sa: &'a Side<'a, T>,
    /// B's forms by head, transposed: `heads_b[q][h']`, `(d_B + 1) × (4e + e_v)`.
    heads_b: &'a [Vec<DMatrix<T>>],
    g: &'a DMatrix<T>,
    widths: (usize, usize),
}

impl<T: Real> PairProducts<'_, T> {
    /// `Ĝ[p,q]`, the padded block of the input Gram matrix.
    fn block(&self, p: usize, q: usize) -> DMatrix<T> {
        let (da, db) = self.widths;
        let mut block = DMatrix::zeros(da + 1, db + 1);
        padded_block(self.g, p, q, da, db, &mut block);
        block
    }

    /// `Y(p,q) = F_A(p) Ĝ[p,q]`.
    fn y(&self, p: usize, q: usize) -> DMatrix<T> {
        mul(&self.sa.legs[p], &self.block(p, q))
    }

    /// `X(p,q) = Y(p,q) F_B(q)ᵀ` per head pair, `[h H_B + h']`.
    fn x(&self, y: &DMatrix<T>, q: usize) -> Vec<DMatrix<T>> {
        self.sa
            .by_head(y)
            .iter()
            .flat_map(|y_h| self.heads_b[q].iter().map(move |f| mul(y_h, f)))
            .collect()
    }

    /// Row `p` of `X`: `X(p,q)` for every `q`, as [`Products`] holds it
    /// (in a self product, `X(q,p)` for `q < p`, to be read transposed:
    /// the same bits as `X` held whole).
    fn x_row(&self, p: usize, n: usize, same: bool) -> Vec<Entry<T>> {
        (0..n)
            .into_par_iter()
            .map(|q| {
                Some(if same && q < p {
                    (self.x(&self.y(q, p), p), true)
                } else {
                    (self.x(&self.y(p, q), q), false)
                })
            })
            .collect()
    }
}

/// The rows of `X` held: `X(p,q) = F_A(p) Ĝ[p,q] F_B(q)ᵀ` per pair of
/// positions and heads, each a small contiguous matrix over the five legs
/// of both heads, so that the pair contraction reads compact memory. In a
/// self product `X(q,p) = X(p,q)ᵀ` (one block, `Ĝ` symmetric), so only one
/// of the two is made.
struct Products<T: Real> {
    /// `rows[p][q]` for the rows held: `(X(p,q), false)`, or in a self
    /// product `(X(q,p), true)`, read transposed; `None` where a self
    /// product reads `X(q,p)` from row `q`.
    rows: Vec<Option<Vec<Entry<T>>>>,
    heads: (usize, usize),
}

/// An entry of [`Products`]: one position pair's matrices per head pair
/// (`[h H' + h']` of the pair it holds) and whether they are read
/// transposed.
type Entry<T> = Option<(Vec<DMatrix<T>>, bool)>;

impl<T: Real> Products<T> {
    fn new(n: usize, heads: (usize, usize)) -> Self {
        Self {
            rows: (0..n).map(|_| None).collect(),
            heads,
        }
    }

    /// Appends column `q` (the next) of every row: `x[p]`.
    fn push_column(&mut self, x: Vec<Entry<T>>) {
        for (row, x) in self.rows.iter_mut().zip(x) {
            row.get_or_insert_with(Vec::new).push(x);
        }
    }

    fn hold(&mut self, p: usize, row: Vec<Entry<T>>) {
        self.rows[p] = Some(row);
    }

    fn release(&mut self, p: usize) {
        self.rows[p] = None;
    }

    /// `X(p,q)` of heads `(h, h')` as a matrix `m` held and whether it is
    /// `mᵀ`.
    fn get(&self, p: usize, q: usize, h: usize, h2: usize) -> (&DMatrix<T>, bool) {
        let held = |p: usize, q: usize| self.rows[p].as_ref().and_then(|row| row[q].as_ref());
        let hb = self.heads.1;
        match held(p, q) {
            Some((x, false)) => (&x[h * hb + h2], false),
            // X(q,p) of heads (h', h): a self product, H = H'.
            Some((x, true)) => (&x[h2 * hb + h], true),
            None => match held(q, p) {
                Some((x, false)) => (&x[h2 * hb + h], true),
                _ => unreachable!("the step holds every product of X it reads"),
            },
        }
    }
}

/// `Z(s,s') = Σ_{t,t'} W_A[s,t] W_B[s',t'] Σ_σ N_σ`, `(H e_v^A) × (H' e_v^B)`
/// per query pair, for the query positions `s` of one tile, held as each
/// task's rows.
struct PairSums<T: Real> {
    queries: core::ops::Range<usize>,
    /// `rows[(s − start) H_A + h]`: rows `h` of every `Z(s, ·)`,
    /// `e_v^A × (n H' e_v^B)`.
    rows: Vec<DMatrix<T>>,
    /// Self products: each task's share of the diagonal blocks' lower
    /// triangle of configurations, `Z(s,s)`-shaped (summed in task order).
    mirrors: Vec<Option<DMatrix<T>>>,
    heads: (usize, usize),
    widths: (usize, usize),
    same: bool,
}

impl<T: Real> PairSums<T> {
    fn new(
        sa: &Side<'_, T>,
        sb: &Side<'_, T>,
        queries: core::ops::Range<usize>,
        n: usize,
        same: bool,
    ) -> Self {
        let tasks = queries.len() * sa.heads;
        Self {
            queries,
            rows: vec![DMatrix::zeros(sa.ev, n * sb.heads * sb.ev); tasks],
            mirrors: (0..tasks)
                .map(|_| same.then(|| DMatrix::zeros(sa.heads * sa.ev, sb.heads * sb.ev)))
                .collect(),
            heads: (sa.heads, sb.heads),
            widths: (sa.ev, sb.ev),
            same,
        }
    }

    /// `Z(p,q)` into `out`, for a query `p` of the tile (and, in a self
    /// product, `q ≥ p`).
    fn block(&self, p: usize, q: usize, out: &mut DMatrix<T>) {
        let ((ha, hb), (eva, evb)) = (self.heads, self.widths);
        let i = p - self.queries.start;
        for h in 0..ha {
            out.rows_mut(h * eva, eva)
                .copy_from(&self.rows[i * ha + h].columns(q * hb * evb, hb * evb));
        }
        if self.same && p == q {
            for mirror in self.mirrors[i * ha..(i + 1) * ha].iter().flatten() {
                *out += mirror;
            }
        }
    }
}

/// Adds to `sums` the terms of `Z(s, ·)` for the tile's query positions `s`
/// with key positions `t` in `keys`: the sum over the 120 leg bijections `σ`
/// of every head pair, key `t'` and query `s'` of B.
///
/// One task per query position `s` and head `h` of `A`: it owns rows `h` of
/// every `Z(s, ·)` and sums them in one order. A self product (`same`)
/// computes `Z(s, s')` for `s' ≥ s` only (`Z(s',s) = Z(s,s')ᵀ`), and in the
/// diagonal blocks each unordered pair of configurations `(h, t)`, `(h', t')`
/// once: swapping them transposes `N`, and the transposed half goes to the
/// task's mirror.
fn attention_pairs<T: Real>(
    sa: &Side<'_, T>,
    sb: &Side<'_, T>,
    products: &Products<T>,
    keys: core::ops::Range<usize>,
    sums: &mut PairSums<T>,
) {
    let same = sums.same;
    let start = sums.queries.start;
    sums.rows
        .par_iter_mut()
        .zip(sums.mirrors.par_iter_mut())
        .enumerate()
        .with_max_len(1)
        .for_each(|(task, (rows, mirror))| {
            let task = Task {
                sa,
                sb,
                products,
                s: start + task / sa.heads,
                h: task % sa.heads,
                keys: keys.clone(),
                same,
            };
            pair_task(&task, rows, mirror.as_mut());
        });
}

/// One task of [`attention_pairs`]: query `s`, head `h` of `A`, and what
/// it reads.
struct Task<'a, T: Real> {
    sa: &'a Side<'a, T>,
    sb: &'a Side<'a, T>,
    products: &'a Products<T>,
    s: usize,
    h: usize,
    keys: core::ops::Range<usize>,
    same: bool,
}

/// Runs a task with AVX2 where the CPU has it: the task's own arithmetic
/// (traces, scaled sums, copies; the small products go to the GEMM engine,
/// which picks its own kernels) is most of its time beside the products,
/// and the baseline target compiles it to two-lane SSE2. No FMA: the same
/// operations in the same order, so the same bits either way.
fn pair_task<T: Real>(task: &Task<'_, T>, rows: &mut DMatrix<T>, mirror: Option<&mut DMatrix<T>>) {
    #[cfg(target_arch = "x86_64")]
    if super::lanes::avx2() {
        // SAFETY: the CPU has AVX2, checked by `avx2`.
        unsafe { pair_task_avx2(task, rows, mirror) };
        return;
    }
    pair_task_body(task, rows, mirror);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn pair_task_avx2<T: Real>(
    task: &Task<'_, T>,
    rows: &mut DMatrix<T>,
    mirror: Option<&mut DMatrix<T>>,
) {
    pair_task_body(task, rows, mirror);
}

#[inline(always)]
fn pair_task_body<T: Real>(
    task: &Task<'_, T>,
    rows: &mut DMatrix<T>,
    mut mirror: Option<&mut DMatrix<T>>,
) {
    let Task {
        sa,
        sb,
        products,
        s,
        h,
        ref keys,
        same,
    } = *task;
    let n = sa.legs.len();
    let mut scratch = Scratch::new(sa.ev, sb.e, sb.ev);
    for t in keys.clone().filter(|&t| sa.mask[(s, t)] != 0.0) {
        let wa: T = from_f64(sa.mask[(s, t)]);
        let blocks = |h2: usize, pos_b: [usize; 2]| Blocks {
            sa,
            sb,
            products,
            h,
            h2,
            pos_a: [s, t],
            pos_b,
        };
        for h2 in 0..sb.heads {
            // E_ν(Q1', Q2') reads only s': once per s'.
            let mut by_query: Vec<Option<[DMatrix<T>; 2]>> = vec![None; n];
            for t2 in 0..n {
                let todo: Vec<usize> = (if same { s..n } else { 0..n })
                    .filter(|&s2| {
                        sb.mask[(s2, t2)] != 0.0 && (!same || s2 > s || (h2, t2) >= (h, t))
                    })
                    .collect();
                if todo.is_empty() {
                    continue;
                }
                // What reads only t': E_ν(K1', V'), E_ν(K2', V'), E_ν(K1', K2').
                let at_key = blocks(h2, [0, t2]);
                for nu in 0..2 {
                    for u in [1, 3] {
                        node_pair(&at_key, nu, u, 4, &mut scratch.to_v[nu * 4 + u]);
                    }
                    node_pair(&at_key, nu, 1, 3, &mut scratch.cross[nu * 4 + 3]);
                }
                for s2 in todo {
                    let b = blocks(h2, [s2, t2]);
                    let cached = by_query[s2].get_or_insert_with(|| {
                        std::array::from_fn(|nu| {
                            let mut e = DMatrix::zeros(sb.e, sb.e);
                            node_pair(&b, nu, 0, 2, &mut e);
                            e
                        })
                    });
                    for (nu, cached) in cached.iter().enumerate() {
                        scratch.cross[nu * 4].copy_from(cached);
                        for u in [0, 2] {
                            node_pair(&b, nu, u, 4, &mut scratch.to_v[nu * 4 + u]);
                        }
                        node_pair(&b, nu, 0, 3, &mut scratch.cross[nu * 4 + 1]);
                        node_pair(&b, nu, 1, 2, &mut scratch.cross[nu * 4 + 2]);
                    }
                    let w = wa * from_f64::<T>(sb.mask[(s2, t2)]);
                    network_sum(&b, &mut scratch);
                    let mut own = rows.columns_mut((s2 * sb.heads + h2) * sb.ev, sb.ev);
                    add_scaled(&mut own, w, &scratch.m);
                    if let Some(mirror) = mirror.as_mut().filter(|_| s2 == s && (h2, t2) != (h, t))
                    {
                        let mut m = mirror.view_mut((h2 * sa.ev, h * sb.ev), (sa.ev, sb.ev));
                        add_scaled(&mut m, w, &scratch.m.transpose());
                    }
                }
            }
        }
    }
}

/// The per-leg products of one head pair at one choice of the four positions.
struct Blocks<'a, T: Real> {
    sa: &'a Side<'a, T>,
    sb: &'a Side<'a, T>,
    products: &'a Products<T>,
    h: usize,
    h2: usize,
    pos_a: [usize; 2],
    pos_b: [usize; 2],
}

impl<T: Real> Blocks<'_, T> {
    /// `X_{l,l'} = U^A_l(p) Ĝ[p,q] U^B_{l'}(q)ᵀ` for this head pair, `w_A(l) × w_B(l')`.
    fn x(&self, l: usize, l2: usize) -> Op<'_, T> {
        let p = self.pos_a[usize::from(!AT_QUERY[l])];
        let q = self.pos_b[usize::from(!AT_QUERY[l2])];
        let (rows, cols) = (self.sa.head_row(l), self.sb.head_row(l2));
        let (wa, wb) = (self.sa.leg_width(l), self.sb.leg_width(l2));
        match self.products.get(p, q, self.h, self.h2) {
            (x, false) => Op {
                m: x.view((rows, cols), (wa, wb)),
                t: false,
            },
            // A self product: A's and B's legs have one layout.
            (x, true) => Op {
                m: x.view((cols, rows), (wb, wa)),
                t: true,
            },
        }
    }
}

/// A block of `X` as held: `m`, or `mᵀ` when `t`.
struct Op<'a, T: Real> {
    m: DMatrixView<'a, T>,
    t: bool,
}

impl<T: Real> Op<'_, T> {
    /// `⟨self, other⟩`, the sum of the entrywise products.
    #[inline(always)]
    fn dot(&self, other: &Self) -> T {
        if self.t == other.t {
            return self.m.dot(&other.m);
        }
        // ⟨aᵀ, b⟩ = Σ_ij a[j,i] b[i,j].
        self.m.tr_dot(&other.m)
    }
}

/// Buffers of one task.
struct Scratch<T: Real> {
    /// `E_ν(u, V')` for A node `ν` and B score leg `u`: `e_B × e_v^B`.
    to_v: Vec<DMatrix<T>>,
    /// `E_ν(u, w')` for `u ∈ {0,1}`, `w' ∈ {2,3}`: `e_B × e_B`.
    cross: Vec<DMatrix<T>>,
    /// `R(u)`, `e_B × e_v^B`.
    r: DMatrix<T>,
    /// `Σ_{z'} X(V, z') R(partner z')`, `e_v^A × e_v^B`.
    m: DMatrix<T>,
}

impl<T: Real> Scratch<T> {
    fn new(eva: usize, eb: usize, evb: usize) -> Self {
        Self {
            to_v: vec![DMatrix::zeros(eb, evb); 8],
            cross: vec![DMatrix::zeros(eb, eb); 8],
            r: DMatrix::zeros(eb, evb),
            m: DMatrix::zeros(eva, evb),
        }
    }
}

/// `E_ν(x', y') = X(2ν, x')ᵀ X(2ν+1, y') + X(2ν+1, x')ᵀ X(2ν, y')`: A node `ν`
/// contracted over its index, both orders of its legs.
fn node_pair<T: Real>(b: &Blocks<'_, T>, nu: usize, x2: usize, y2: usize, out: &mut DMatrix<T>) {
    let (l1, l2) = (2 * nu, 2 * nu + 1);
    let (one, zero) = (T::one(), T::zero());
    let product = |x: Op<'_, T>, y: Op<'_, T>, beta: T, out: &mut DMatrix<T>| {
        gemm_op(one, &x.m, !x.t, &y.m, y.t, beta, out);
    };
    product(b.x(l1, x2), b.x(l2, y2), zero, out);
    product(b.x(l2, x2), b.x(l1, y2), one, out);
}

/// `tr E_ν(x', y')` for `x', y'` in one B node (they share its index).
#[inline(always)]
fn node_trace<T: Real>(b: &Blocks<'_, T>, nu: usize, x2: usize, y2: usize) -> T {
    let (l1, l2) = (2 * nu, 2 * nu + 1);
    b.x(l1, x2).dot(&b.x(l2, y2)) + b.x(l2, x2).dot(&b.x(l1, y2))
}

/// `s.m ← Σ_σ N_σ` (`e_v^A × e_v^B`) for one head pair and position choice.
///
/// `s.to_v` and `s.cross` hold this position choice's `E` matrices (the
/// caller computes each once for every choice that shares it).
#[inline(always)]
fn network_sum<T: Real>(b: &Blocks<'_, T>, s: &mut Scratch<T>) {
    let one = T::one();
    // tr E_ν over B node {0,1} and {2,3}.
    let traces = [
        [node_trace(b, 0, 0, 1), node_trace(b, 0, 2, 3)],
        [node_trace(b, 1, 0, 1), node_trace(b, 1, 2, 3)],
    ];
    let cross_index = |u: usize, w2: usize| -> (usize, bool) {
        // (index into `cross` within a node's four, transposed?)
        let (x2, y2, t) = if u < 2 { (u, w2, false) } else { (w2, u, true) };
        (x2 * 2 + (y2 - 2), t)
    };

    // Assignments with σ(V) = V': the score legs of B split between the two A nodes.
    let mut scalar = traces[0][0] * traces[1][1] + traces[0][1] * traces[1][0];
    for (x2, &px) in PARTNER.iter().enumerate().take(2) {
        for (y2, &py) in PARTNER.iter().enumerate().skip(2) {
            let (i, _) = cross_index(x2, y2);
            let (j, _) = cross_index(px, py);
            scalar += s.cross[i].dot(&s.cross[4 + j]);
        }
    }
    let v = b.x(4, 4);
    if v.t {
        s.m.tr_copy_from(&v.m);
    } else {
        s.m.copy_from(&v.m);
    }
    s.m *= scalar;

    // σ(V) = z', a score leg: the path enters B node(z') and leaves by u.
    for (z2, &u) in PARTNER.iter().enumerate() {
        let other = if u < 2 { 1 } else { 0 };
        // ν takes {u, V'}; ν̄ takes the other node's two legs.
        s.r.zip_zip_apply(&s.to_v[u], &s.to_v[4 + u], |r, x0, x1| {
            *r = traces[1][other] * x0 + traces[0][other] * x1;
        });
        for nu in 0..2 {
            let bar = 1 - nu;
            // ν takes {u, w'} with w' in the other node; ν̄ takes {partner w', V'}.
            for w2 in [2 * other, 2 * other + 1] {
                let (i, t) = cross_index(u, w2);
                let (e, v) = (&s.cross[nu * 4 + i], &s.to_v[bar * 4 + PARTNER[w2]]);
                // E_ν(w', u) = E_ν(u, w')ᵀ, read in place.
                if t {
                    gemm_tn(one, e, v, one, &mut s.r);
                } else {
                    gemm(one, e, v, one, &mut s.r);
                }
            }
        }
        let v = b.x(4, z2);
        gemm_op(one, &v.m, v.t, &s.r, false, one, &mut s.m);
    }
}

#[cfg(test)]
mod tests {
    //! The step against the generic CP step (all 120 bijections, one by
    //! one) on attention's CP form at context `n`, built here from [SPEC §7](crate::spec#7-sequences-and-bilinear-attention):
    //! a different route to the same tensor.
    use super::*;
    use crate::block::{AttentionBuilder, CpFactors, Mask, kernel::generic_step};
    use crate::symmetry::Full;

    fn value(seed: usize, i: usize, j: usize) -> f64 {
        let x = (seed * 7919 + i * 104_729 + j * 1_299_709) % 10_007;
        (x as f64 / 10_007.0 - 0.5) * 1.5
    }

    fn matrix(seed: usize, r: usize, c: usize) -> DMatrix<f64> {
        DMatrix::from_fn(r, c, |i, j| value(seed, i, j))
    }

    /// The flattened CP form of `a` at `n` positions: constant, skip and
    /// attention units, `D̃` over `(s, o)`.
    fn cp_form(a: &Attention<f64>, n: usize) -> CpFactors<f64> {
        let d = a.input_width();
        let out = a.output_width();
        let flat = n * d + 1;
        let w = a.mask().weights(n).unwrap();
        let lift = |f: nalgebra::DVectorView<'_, f64>, p: usize| {
            let mut v = DVector::zeros(flat);
            v[0] = f[0];
            v.rows_mut(1 + p * d, d).copy_from(&f.rows(1, d));
            v
        };
        let mut e0 = DVector::zeros(flat);
        e0[0] = 1.0;
        let mut units: Vec<([DVector<f64>; 5], DVector<f64>)> = Vec::new();
        let mut beta = DVector::zeros(n * out + 1);
        beta[0] = 1.0;
        if let Some(b) = a.bias(crate::block::Role::O) {
            for s in 0..n {
                beta.rows_mut(1 + s * out, out).copy_from(&(b * a.scale()));
            }
        }
        units.push((std::array::from_fn(|_| e0.clone()), beta));
        for s in 0..n {
            for i in 0..d {
                let mut sel = DVector::zeros(flat);
                sel[1 + s * d + i] = 1.0;
                let mut col = DVector::zeros(n * out + 1);
                col[1 + s * out + i] = a.skip();
                let legs = [sel, e0.clone(), e0.clone(), e0.clone(), e0.clone()];
                units.push((legs, col));
            }
        }
        let (e, ev) = (a.qk_width(), a.value_width());
        let he = a.heads() * e;
        for s in 0..n {
            for t in 0..n {
                if w[(s, t)] == 0.0 {
                    continue;
                }
                let (fs, ft) = (a.leg_factors(s), a.leg_factors(t));
                for h in 0..a.heads() {
                    for i in 0..e {
                        for j in 0..e {
                            for c in 0..ev {
                                let row = |f: &DMatrix<f64>, r: usize, p: usize| {
                                    lift(f.row(r).transpose().as_view(), p)
                                };
                                let legs = [
                                    row(&fs, h * e + i, s),
                                    row(&ft, he + h * e + i, t),
                                    row(&fs, 2 * he + h * e + j, s),
                                    row(&ft, 3 * he + h * e + j, t),
                                    row(&ft, 4 * he + h * ev + c, t),
                                ];
                                let mut col = DVector::zeros(n * out + 1);
                                let k = a.scale() * w[(s, t)] / a.score_scale();
                                col.rows_mut(1 + s * out, out).copy_from(
                                    &(a.weight(crate::block::Role::O).column(h * ev + c) * k),
                                );
                                units.push((legs, col));
                            }
                        }
                    }
                }
            }
        }
        let r = units.len();
        let inputs: Vec<DMatrix<f64>> = (0..5)
            .map(|j| DMatrix::from_fn(r, flat, |u, i| units[u].0[j][i]))
            .collect();
        let output = DMatrix::from_fn(n * out + 1, r, |o, u| units[u].1[o]);
        CpFactors::new(&inputs, Some(output)).unwrap()
    }

    fn block(seed: usize, d: usize, heads: usize, e: usize, ev: usize) -> AttentionBuilder<f64> {
        Attention::builder(
            heads,
            matrix(seed, heads * e, d),
            matrix(seed + 1, heads * e, d),
            matrix(seed + 2, heads * e, d),
            matrix(seed + 3, heads * e, d),
            matrix(seed + 4, heads * ev, d),
            matrix(seed + 5, d, heads * ev),
        )
    }

    fn check(a: &Attention<f64>, b: &Attention<f64>, n: usize) {
        let (na, nb) = (n * a.input_width() + 1, n * b.input_width() + 1);
        let g = DMatrix::from_fn(na, nb, |i, j| {
            value(99, i, j) + if i == j { 1.0 } else { 0.0 }
        });
        let fast = gram_step(a, Some(b), &g, n).unwrap();
        let (ca, cb) = (cp_form(a, n), cp_form(b, n));
        let slow = generic_step((&ca, &Full), (&cb, &Full), &g).unwrap();
        let err = (&fast - &slow).amax() / slow.amax();
        assert!(
            err < 1e-12,
            "relative error {err:.3e}\nfast {fast:.5}\nslow {slow:.5}"
        );
    }

    /// The self step (half the configurations) against the generic step.
    fn check_self(a: &Attention<f64>, n: usize) {
        let na = n * a.input_width() + 1;
        let r = DMatrix::from_fn(na, na, |i, j| value(5, i, j));
        let g = &r * r.transpose();
        let fast = gram_step(a, None, &g, n).unwrap();
        let ca = cp_form(a, n);
        let slow = generic_step((&ca, &Full), (&ca, &Full), &g).unwrap();
        let err = (&fast - &slow).amax() / slow.amax();
        assert!(err < 1e-12, "relative error {err:.3e}");
    }

    /// A pseudo-random block: `heads`, stream width `d`, `e`, `e_v`, the
    /// mask, rotary or not, q/k biases or not, lerp or additive skip.
    fn random_block(
        seed: usize,
        d: usize,
        heads: usize,
        e: usize,
        mask: Mask,
        rotary: bool,
        biases: bool,
    ) -> Attention<f64> {
        let ev = 1 + seed % 3;
        let mut b = block(seed, d, heads, e, ev)
            .mask(mask)
            .scale(0.3 + (seed % 5) as f64 * 0.1)
            .skip(if seed.is_multiple_of(2) { 1.0 } else { 0.6 });
        if rotary {
            b = b.rotary(50.0);
        }
        if biases {
            let v = |k: usize, len: usize| matrix(seed + k, len, 1).column(0).into_owned();
            b = b
                .q1_bias(v(20, heads * e))
                .k1_bias(v(21, heads * e))
                .q2_bias(v(22, heads * e))
                .k2_bias(v(23, heads * e))
                .v_bias(v(24, heads * ev))
                .o_bias(v(25, d));
        }
        b.build().unwrap()
    }

    fn masks(n: usize, seed: usize) -> [Mask; 4] {
        let w = DMatrix::from_fn(n, n, |i, j| {
            let v = value(seed, i, j);
            if v > 0.2 { 0.0 } else { v + 1.0 }
        });
        [Mask::Causal, Mask::None, Mask::Diagonal, Mask::Matrix(w)]
    }

    /// The streamed step against the step as it stood before
    /// (`reference.rs`), to `1e-12` relative: contexts 1 to 9, every mask,
    /// rotary on and off, q/k biases, different widths, heads and `e`, cross
    /// and self products.
    #[test]
    fn matches_the_reference_step() {
        for n in 1..=9 {
            for (k, mask) in masks(n, n).into_iter().enumerate() {
                let seed = 10 * n + k;
                let (rotary, biases) = (seed % 2 == 0, seed % 3 != 0);
                let a = random_block(seed, 3, 2, 2, mask.clone(), rotary, biases);
                let b = random_block(seed + 1, 2, 1 + n % 3, 1 + k % 2, mask, !rotary, !biases);
                let (na, nb) = (n * 3 + 1, n * 2 + 1);
                let g = DMatrix::from_fn(na, nb, |i, j| value(seed, i, j));
                let fast = gram_step(&a, Some(&b), &g, n).unwrap();
                let slow = super::super::reference::reference_step(&a, Some(&b), &g, n).unwrap();
                let err = (&fast - &slow).amax() / slow.amax();
                assert!(err < 1e-12, "n = {n}, mask {k}: relative error {err:.3e}");
                // Tiles of query positions, sizes that do not divide `n`:
                // the same bits as `X` held whole.
                for tile in [1, 2, 4] {
                    let tiled = gram_step_in_tiles(&a, Some(&b), &g, n, tile).unwrap();
                    assert_eq!(tiled, fast, "n = {n}, mask {k}, tiles of {tile}");
                }
                let r = DMatrix::from_fn(na, na, |i, j| value(seed + 3, i, j));
                let g = &r * r.transpose();
                let fast = gram_step(&a, None, &g, n).unwrap();
                let slow = super::super::reference::reference_step(&a, None, &g, n).unwrap();
                let err = (&fast - &slow).amax() / slow.amax();
                assert!(
                    err < 1e-12,
                    "self, n = {n}, mask {k}: relative error {err:.3e}"
                );
                assert_eq!(fast, fast.transpose(), "a self step is exactly symmetric");
                for tile in [1, 3] {
                    let tiled = gram_step_in_tiles(&a, None, &g, n, tile).unwrap();
                    assert_eq!(tiled, fast, "self, n = {n}, mask {k}, tiles of {tile}");
                }
            }
        }
    }

    /// A cross and a self step of random blocks at `n` positions (B's mask
    /// given), as one closure: the bit-identity tests run it twice.
    fn cross_and_self(
        n: usize,
        seed: usize,
        mask_b: Mask,
    ) -> impl Fn() -> (DMatrix<f64>, DMatrix<f64>) {
        let a = random_block(seed, 4, 2, 2, Mask::Causal, true, true);
        let b = random_block(seed + 1, 3, 3, 2, mask_b, true, false);
        let g = DMatrix::from_fn(n * 4 + 1, n * 3 + 1, |i, j| value(seed + 5, i, j));
        let r = DMatrix::from_fn(n * 4 + 1, n * 4 + 1, |i, j| value(seed + 6, i, j));
        let gs = &r * r.transpose();
        move || {
            (
                gram_step(&a, Some(&b), &g, n).unwrap(),
                gram_step(&a, None, &gs, n).unwrap(),
            )
        }
    }

    /// The same bits on one thread and on two: every sum has one order.
    #[test]
    fn bit_identical_on_one_and_two_threads() {
        let steps = cross_and_self(5, 3, Mask::Causal);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(&steps)
        };
        assert_eq!(run(1), run(2));
    }

    /// The pair sums compiled for AVX2 and for the baseline target give the
    /// same bits (no FMA, the same order). Other tests running meanwhile
    /// may take the baseline path too: the same bits, by this test.
    #[test]
    fn bit_identical_with_and_without_avx2() {
        use std::sync::atomic::Ordering::Relaxed;
        let steps = cross_and_self(4, 5, Mask::None);
        let fast = steps();
        super::super::lanes::LANES_AT_MOST.store(128, Relaxed);
        let baseline = steps();
        super::super::lanes::LANES_AT_MOST.store(512, Relaxed);
        assert_eq!(fast, baseline);
    }

    /// `X` is held whole while it is small, and otherwise in tiles that
    /// fit the budget: the language model (`d` 256, 8 heads of 32).
    #[test]
    fn tiles_follow_the_budget() {
        let shapes = |d: usize, heads: usize| Shapes {
            legs: ((5 * d) as f64, (5 * d) as f64),
            values: (d as f64, d as f64),
            heads: (heads as f64, heads as f64),
            inputs: (d, d),
            outputs: (d, d),
            head_width: (d / heads) as f64,
        };
        let lm = shapes(256, 8);
        for n in [1, 4, 8] {
            assert_eq!(query_tile(&lm, n), n, "n = {n}: X fits whole");
        }
        // One row of X at n = 16 is 16 · 1280² scalars: four rows and the
        // key row in 2²⁷.
        assert_eq!(query_tile(&lm, 16), 4);
        assert_eq!(query_tile(&lm, 32), 1);
        for n in [16, 32, 64] {
            let tile = query_tile(&lm, n);
            let held = (tile as f64 + 1.0) * lm.x_row(n);
            assert!(held <= WHOLE_PRODUCTS_UP_TO.max(lm.grams(n)), "n = {n}");
            assert!(tiled_scalars(&lm, n, tile) < tiled_scalars(&lm, n, n));
        }
        assert_eq!(query_tile(&shapes(8, 2), 32), 32, "small X is held whole");
    }

    #[test]
    fn matches_the_cp_form() {
        let plain = block(1, 2, 1, 2, 1).build().unwrap();
        check(&plain, &plain, 1);
        check(&plain, &plain, 2);
        let biased = block(7, 2, 2, 2, 1)
            .q1_bias(matrix(3, 4, 1).column(0).into_owned())
            .k2_bias(matrix(4, 4, 1).column(0).into_owned())
            .v_bias(matrix(5, 2, 1).column(0).into_owned())
            .o_bias(matrix(6, 2, 1).column(0).into_owned())
            .rotary(100.0)
            .scale(0.7)
            .build()
            .unwrap();
        check(&biased, &biased, 2);
        check(&plain, &biased, 2);
        let additive = block(11, 2, 1, 2, 2)
            .skip(1.0)
            .mask(Mask::None)
            .build()
            .unwrap();
        check(&additive, &biased, 2);
        let narrow = block(13, 2, 2, 1, 1)
            .mask(Mask::Diagonal)
            .scale(0.3)
            .skip(0.0)
            .build()
            .unwrap();
        check(&narrow, &additive, 2);
        check(&biased, &narrow, 3);
        for block in [&plain, &biased, &additive, &narrow] {
            check_self(block, 2);
        }
        check_self(&biased, 3);
    }
}
