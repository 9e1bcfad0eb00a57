//! The Gram step at the speed of its GEMMs: `G' = D̃_A H D̃_Bᵀ`,
//! `H = w_id X_11∘X_22 + w_sw X_12∘X_21`, `X_ij = U^A_i G (U^B_j)ᵀ`, without
//! the `2r × 2r` product. `Y = U_A G` is formed a tile of units of `A` at a
//! time; panels of `B`'s units run in parallel, each walking every tile into
//! its own columns of `Z = D̃_A H` (one task, one order per column: the result
//! does not depend on the thread count). Selector units (one nonzero per
//! input row: the constant, residual units) are gathered and scattered
//! instead of multiplied; a self product computes `H`'s lower tiles `L`,
//! `G' = F + Fᵀ`. Why, and measurements: "The bilinear kernel" in
//! `docs/performance-engine.md` (repository).

use core::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, DVectorView, Dyn};
use rayon::prelude::*;

use super::{CpFactors, TensorBlock};
use crate::error::{Error, Incomparable, Result};
use crate::linalg::{gemm, mul, mul_nt};
use crate::scalar::{Real, from_f64};
use crate::symmetry::{SymmetryGroup, leg_pairings};
use crate::validate::{check_shape, check_symmetric};

/// Default number of units of `A` per tile; a panel of `B` has about 4
/// tiles' units (2 in a self product). Measured best at (512, 2048) with
/// faer (`benches/recursion.rs`): the `2t × m × 4t` products of `X` run
/// faster than wider or taller ones, and a panel's blocks and columns of `Z`
/// stay in the core's L2.
const DEFAULT_TILE: usize = 128;

/// A self product computes the diagonal tiles in full, `1 + t/h` times the
/// exact half: it takes tiles of about `h/16` units, within these bounds.
const SELF_TILE: (usize, usize) = (32, 128);

/// A unit whose input rows are `U_1[ρ,:] = c_1 e_{i_1}ᵀ`, `U_2[ρ,:] = c_2 e_{i_2}ᵀ`
/// (a zero row has `c = 0`).
#[derive(Clone, Copy, Debug)]
struct Selector<T> {
    unit: usize,
    coef: [T; 2],
    index: [usize; 2],
}

/// The units of one order-2 block: a contiguous dense range, and selector
/// units outside it.
#[derive(Clone, Debug)]
struct Units<T> {
    dense: Range<usize>,
    selectors: Vec<Selector<T>>,
}

impl<T> Units<T> {
    /// The dense units among `cols`: a subrange of `cols`, empty at
    /// `cols.start` when there are none (never inverted).
    fn dense_in(&self, cols: &Range<usize>) -> Range<usize> {
        let start = self.dense.start.clamp(cols.start, cols.end);
        start..self.dense.end.clamp(start, cols.end)
    }
}

impl<T> Default for Units<T> {
    fn default() -> Self {
        Self {
            dense: 0..0,
            selectors: Vec::new(),
        }
    }
}

/// One panel task's scratch.
#[derive(Debug)]
struct Lane<T> {
    x1: Vec<T>,
    x2: Vec<T>,
    h: Vec<T>,
    w: Vec<T>,
    nonzeros: Vec<(usize, T)>,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Self {
            x1: Vec::new(),
            x2: Vec::new(),
            h: Vec::new(),
            w: Vec::new(),
            nonzeros: Vec::new(),
        }
    }
}

/// Scratch for the panels running in parallel: a panel takes the first free
/// lane, and a panel never waits on rayon, so no more lanes are ever in use
/// than the pool has threads.
#[derive(Debug)]
struct Lanes<T>(Vec<Mutex<Lane<T>>>);

impl<T> Clone for Lanes<T> {
    /// Scratch only: a clone starts empty.
    fn clone(&self) -> Self {
        Self(Vec::new())
    }
}

impl<T> Lanes<T> {
    /// One lane per thread of the current pool.
    fn prepare(&mut self) {
        let n = rayon::current_num_threads().max(1);
        if self.0.len() < n {
            self.0.resize_with(n, || Mutex::new(Lane::default()));
        }
    }

    fn acquire(&self) -> MutexGuard<'_, Lane<T>> {
        for lane in &self.0 {
            match lane.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        // Unreachable by the invariant above; waiting is still correct.
        self.0[0].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn capacity(&self) -> usize {
        self.0
            .iter()
            .map(|lane| {
                let lane = lane.lock().unwrap_or_else(PoisonError::into_inner);
                lane.x1.capacity() + lane.x2.capacity() + lane.h.capacity() + lane.w.capacity()
            })
            .sum()
    }
}

/// What every panel reads of side `B` of an order-2 step.
struct Side<'a, T> {
    /// `U_Bᵀ`, column-major `wb × 2 r_B`.
    ut: &'a [T],
    wb: usize,
    rank: usize,
    units: &'a Units<T>,
    weights: (T, T),
}

/// Reusable buffers for [`cp_gram_step`](crate::cp_gram_step): run the recursion
/// over a model, or many pairs of models, without allocating in the
/// per-layer loop once the buffers have grown to the largest shapes.
///
/// Every method computes exactly what [`cp_gram_step`](crate::cp_gram_step)
/// computes (up to rounding: products are associated differently); the
/// workspace only holds scratch memory, so one workspace serves any blocks.
/// An order-2 step runs its panels in parallel on rayon's pool (its result
/// does not depend on the number of threads); a workspace serves one step
/// at a time.
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{gram_step, Bilinear, GramWorkspace};
///
/// let l = DMatrix::from_fn(5, 3, |i, j| (i as f64 - j as f64) * 0.3);
/// let r = DMatrix::from_fn(5, 3, |i, j| ((i * j) % 3) as f64 - 0.5);
/// let d = DMatrix::from_fn(3, 5, |i, j| ((i + 2 * j) % 4) as f64 - 1.5);
/// // A residual stream (s = 0.5) and a down projection back to width 3.
/// let block = Bilinear::builder(l, r).down(d).residual(0.5).build()?;
/// let g = DMatrix::<f64>::identity(4, 4);
///
/// let mut ws = GramWorkspace::new();
/// let mut cross = DMatrix::zeros(0, 0);
/// ws.step(&block, &block, &g, &mut cross)?;
/// let mut own = DMatrix::zeros(0, 0);
/// ws.self_step(&block, &g, &mut own)?; // about half the work
/// let reference = gram_step(&block, &block, &g)?;
/// assert!((&cross - &reference).amax() < 1e-12 * reference.amax());
/// assert!((&own - &reference).amax() < 1e-12 * reference.amax());
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GramWorkspace<T: Real> {
    tile: usize,
    units_a: Units<T>,
    units_b: Units<T>,
    y: Vec<T>,
    x: Vec<T>,
    z: Vec<T>,
    lanes: Lanes<T>,
    rows: Vec<usize>,
    slot: Vec<usize>,
    gsel: Vec<T>,
    /// `U_Bᵀ` and `D̃_Bᵀ`, column-major: the GEMMs read their right operand
    /// with unit row stride (faer is up to twice as fast so, `benches/gemm.rs`).
    ut: Vec<T>,
    dt: Vec<T>,
    nonzeros: Vec<(usize, T)>,
}

impl<T: Real> Default for GramWorkspace<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Real> GramWorkspace<T> {
    /// An empty workspace; buffers grow on first use.
    pub fn new() -> Self {
        Self::with_tile(DEFAULT_TILE)
    }

    /// An empty workspace walking `tile` units of `A` at a time, against
    /// panels of about `4·tile` units of `B` (at least 1; the default is
    /// 128; self products take tiles of at most `h/16`, within 32…128, and
    /// panels of `2·tile`). Only speed and scratch memory depend on it.
    pub fn with_tile(tile: usize) -> Self {
        Self {
            tile: tile.max(1),
            units_a: Units::default(),
            units_b: Units::default(),
            y: Vec::new(),
            x: Vec::new(),
            z: Vec::new(),
            lanes: Lanes(Vec::new()),
            rows: Vec::new(),
            slot: Vec::new(),
            gsel: Vec::new(),
            ut: Vec::new(),
            dt: Vec::new(),
            nonzeros: Vec::new(),
        }
    }

    /// Scratch memory held, in scalars: the peak of the step's own
    /// allocations beyond its input and output.
    pub fn scratch_len(&self) -> usize {
        self.y.capacity()
            + self.x.capacity()
            + self.z.capacity()
            + self.lanes.capacity()
            + self.gsel.capacity()
            + self.ut.capacity()
            + self.dt.capacity()
    }

    /// `out ← G' = D̃_A H D̃_Bᵀ`, the Gram step of [`cp_gram_step`](crate::cp_gram_step),
    /// resizing `out` only when its shape changes.
    ///
    /// An error if the blocks' orders differ, or `g` is not
    /// `(m_A+1) × (m_B+1)`.
    pub fn step(
        &mut self,
        a: &dyn TensorBlock<T>,
        b: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) -> Result<()> {
        self.cp_step((cp_of(a)?, a.symmetry()), (cp_of(b)?, b.symmetry()), g, out)
    }

    /// `out ← G' = D̃ H D̃ᵀ` for the self product of block `a` with a
    /// symmetric `g` (every `G_AA` is): the step of `⟨A, A⟩`, computing only
    /// the lower half of `H`. The result is exactly symmetric.
    ///
    /// An error if `g` is not `(m+1) × (m+1)` or not symmetric (up to
    /// `64 ε` of its largest entry).
    pub fn self_step(
        &mut self,
        a: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) -> Result<()> {
        self.cp_self_step((cp_of(a)?, a.symmetry()), g, out)
    }

    /// [`step`](Self::step) on factors and groups.
    pub(crate) fn cp_step(
        &mut self,
        (fa, sa): (&CpFactors<T>, &dyn SymmetryGroup),
        (fb, sb): (&CpFactors<T>, &dyn SymmetryGroup),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) -> Result<()> {
        check_step(fa, fb, g)?;
        match (fa.order(), fa.output(), fb.output()) {
            (1, ..) => self.linear(fa, fb, g, out),
            (2, Some(da), Some(db)) => {
                let w = pair_weights(sa, sb)?;
                self.bilinear(fa, da, fb, db, w, g, out);
            }
            _ => *out = generic_step((fa, sa), (fb, sb), g)?,
        }
        Ok(())
    }

    /// [`self_step`](Self::self_step) on factors and a group.
    pub(crate) fn cp_self_step(
        &mut self,
        (fa, sa): (&CpFactors<T>, &dyn SymmetryGroup),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) -> Result<()> {
        check_step(fa, fa, g)?;
        check_symmetric_gram(g)?;
        match (fa.order(), fa.output()) {
            (2, Some(da)) => {
                let w = pair_weights(sa, sa)?;
                self.bilinear_self(fa, da, w, g, out);
            }
            _ => self.cp_step((fa, sa), (fa, sa), g, out)?,
        }
        Ok(())
    }

    /// Order 1: `G' = D̃_A (U_A G U_Bᵀ) D̃_Bᵀ` (`D̃ = I` for [`Linear`](crate::Linear)).
    fn linear(
        &mut self,
        fa: &CpFactors<T>,
        fb: &CpFactors<T>,
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) {
        let (ua, ub) = (fa.stacked_inputs(), fb.stacked_inputs());
        let (ra, rb) = (ua.nrows(), ub.nrows());
        let (one, zero) = (T::one(), T::zero());
        let mut y = view_mut(&mut self.y, ra, g.ncols());
        gemm(one, ua, g, zero, &mut y);
        let (na, nb) = (fa.output_width() + 1, fb.output_width() + 1);
        reshape(out, na, nb);
        match (fa.output(), fb.output()) {
            (None, None) => gemm(
                one,
                &y,
                &t_rows(transpose_into(&mut self.ut, ub), ub.ncols(), 0, rb),
                zero,
                out,
            ),
            (da, db) => {
                let mut x = view_mut(&mut self.x, ra, rb);
                gemm(
                    one,
                    &y,
                    &t_rows(transpose_into(&mut self.ut, ub), ub.ncols(), 0, rb),
                    zero,
                    &mut x,
                );
                let mut left = view_mut(&mut self.z, na, rb);
                match da {
                    Some(da) => gemm(one, da, &x, zero, &mut left),
                    None => left.copy_from(&x),
                }
                match db {
                    Some(db) => gemm(
                        one,
                        &left,
                        &t_rows(transpose_into(&mut self.dt, db), db.ncols(), 0, db.nrows()),
                        zero,
                        out,
                    ),
                    None => out.copy_from(&left),
                }
            }
        }
    }

    /// Order 2, general pair.
    #[allow(clippy::too_many_arguments)]
    fn bilinear(
        &mut self,
        fa: &CpFactors<T>,
        da: &DMatrix<T>,
        fb: &CpFactors<T>,
        db: &DMatrix<T>,
        weights: (T, T),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) {
        let Self {
            tile,
            units_a,
            units_b,
            y,
            z,
            lanes,
            rows,
            slot,
            gsel,
            ut,
            dt,
            nonzeros,
            ..
        } = self;
        let tile = *tile;
        classify(fa, units_a);
        classify(fb, units_b);
        lanes.prepare();
        let (ua, ub) = (fa.stacked_inputs(), fb.stacked_inputs());
        let (ra, rb) = (fa.rank(), fb.rank());
        let (wa, wb) = (ua.ncols(), ub.ncols());
        let na = da.nrows();
        let side = Side {
            ut: transpose_into(ut, ub),
            wb,
            rank: rb,
            units: units_b,
            weights,
        };
        let dense_a = units_a.dense.clone();
        let y = inputs(y, ua, ra, dense_a.clone(), tile, g);

        // The rows of G the selectors of A read, and (G[rows, :])ᵀ: their
        // rows of X are (G[rows, :] U_jBᵀ)ᵀ = U_jB G[rows, :]ᵀ, a GEMM with
        // `rows.len()` columns per panel.
        slot.clear();
        slot.resize(wa, usize::MAX);
        rows.clear();
        for s in &units_a.selectors {
            for i in s.index {
                if slot[i] == usize::MAX {
                    slot[i] = rows.len();
                    rows.push(i);
                }
            }
        }
        let ne = rows.len();
        {
            let mut gs = view_mut(gsel, wb, ne);
            for (q, &i) in rows.iter().enumerate() {
                gs.column_mut(q).tr_copy_from(&g.row(i));
            }
        }
        let gs = DMatrixView::from_slice(&gsel[..wb * ne], wb, ne);
        let (slot, selectors_a) = (&*slot, &units_a.selectors);

        let width = panel_width(rb, 4 * tile);
        let z = grow(z, na * rb);
        let lanes = &*lanes;
        z.par_chunks_mut(na * width)
            .enumerate()
            .for_each(|(j, zp)| {
                let cols = j * width..j * width + zp.len() / na;
                let mut zp = DMatrixViewMut::from_slice(zp, na, cols.len());
                zp.fill(T::zero());
                let mut lane = lanes.acquire();
                for (k, start) in dense_a.clone().step_by(tile).enumerate() {
                    let tt = tile.min(dense_a.end - start);
                    let yt = &y[2 * k * tile * wb..][..2 * tt * wb];
                    add_block(
                        &mut lane,
                        yt,
                        tt,
                        &side,
                        cols.clone(),
                        0..0,
                        &da.columns(start, tt),
                        &mut zp,
                        cols.start,
                    );
                }
                if !selectors_a.is_empty() {
                    add_selector_rows(
                        &mut lane,
                        selectors_a,
                        slot,
                        &gs,
                        ub,
                        da,
                        g,
                        &side,
                        cols,
                        &mut zp,
                    );
                }
            });

        let z = DMatrixView::from_slice(&z[..na * rb], na, rb);
        finish(
            &z,
            db,
            &units_b.dense,
            &units_b.selectors,
            nonzeros,
            dt,
            out,
            db.nrows(),
        );
    }

    /// Order 2, `A = B` and `g` symmetric: the tiles of `H` on and below the
    /// diagonal, `G' = F + Fᵀ`.
    fn bilinear_self(
        &mut self,
        fa: &CpFactors<T>,
        da: &DMatrix<T>,
        weights: (T, T),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) {
        let Self {
            tile,
            units_a,
            y,
            z,
            lanes,
            nonzeros,
            ut,
            dt,
            ..
        } = self;
        classify(fa, units_a);
        lanes.prepare();
        let u = fa.stacked_inputs();
        let r = fa.rank();
        let n = da.nrows();
        let wu = u.ncols();
        let side = Side {
            ut: transpose_into(ut, u),
            wb: wu,
            rank: r,
            units: units_a,
            weights,
        };
        let dense = units_a.dense.clone();
        let width = panel_width(r, 2 * *tile);
        let tile = (*tile).min((dense.len() / 16).clamp(SELF_TILE.0, SELF_TILE.1));
        let y = inputs(y, u, r, dense.clone(), tile, g);

        let z = grow(z, n * r);
        let lanes = &*lanes;
        z.par_chunks_mut(n * width).enumerate().for_each(|(j, zp)| {
            let cols = j * width..j * width + zp.len() / n;
            let mut zp = DMatrixViewMut::from_slice(zp, n, cols.len());
            zp.fill(T::zero());
            let mut lane = lanes.acquire();
            for (k, start) in dense.clone().step_by(tile).enumerate() {
                let end = (start + tile).min(dense.end);
                let tt = end - start;
                let yt = &y[2 * k * tile * wu..][..2 * tt * wu];
                // L[tile, :] has the columns before the tile's end and
                // the selector columns after the dense range.
                let below = cols.start..cols.end.min(end);
                let after = cols.start.max(dense.end)..cols.end;
                for part in [below, after] {
                    if !part.is_empty() {
                        add_block(
                            &mut lane,
                            yt,
                            tt,
                            &side,
                            part,
                            start..end,
                            &da.columns(start, tt),
                            &mut zp,
                            cols.start,
                        );
                    }
                }
            }
        });
        let mut z = DMatrixViewMut::from_slice(&mut z[..n * r], n, r);

        // Selector × selector: ½ H_SS in L.
        let half: T = from_f64(0.5);
        let (wid, wsw) = weights;
        for s in &units_a.selectors {
            column_nonzeros(da, s.unit, nonzeros);
            if nonzeros.is_empty() {
                continue;
            }
            for sb in &units_a.selectors {
                let v = half * selector_pair(s, sb, g, wid, wsw);
                for &(o, d) in nonzeros.iter() {
                    z[(o, sb.unit)] += d * v;
                }
            }
        }

        finish(
            &z.as_view(),
            da,
            &dense,
            &units_a.selectors,
            nonzeros,
            dt,
            out,
            n,
        );
        for j in 0..n {
            let v = out[(j, j)];
            out[(j, j)] = v + v;
            for i in j + 1..n {
                let v = out[(i, j)] + out[(j, i)];
                out[(i, j)] = v;
                out[(j, i)] = v;
            }
        }
    }
}
/// `out ← Z[:, dense] D̃[:, dense]ᵀ`, plus the selector columns of `Z`
/// scattered through their sparse columns of `D̃` (`dt`: scratch for `D̃ᵀ`).
#[allow(clippy::too_many_arguments)]
fn finish<T: Real>(
    z: &DMatrixView<'_, T>,
    d: &DMatrix<T>,
    dense: &Range<usize>,
    selectors: &[Selector<T>],
    nonzeros: &mut Vec<(usize, T)>,
    dt: &mut Vec<T>,
    out: &mut DMatrix<T>,
    n_out: usize,
) {
    reshape(out, z.nrows(), n_out);
    if dense.is_empty() {
        out.fill(T::zero());
    } else {
        gemm(
            T::one(),
            &z.columns(dense.start, dense.len()),
            &t_columns(transpose_into(dt, d), d.ncols(), dense.start, dense.len()),
            T::zero(),
            out,
        );
    }
    for s in selectors {
        column_nonzeros(d, s.unit, nonzeros);
        for &(o, v) in nonzeros.iter() {
            out.column_mut(o).axpy(v, &z.column(s.unit), T::one());
        }
    }
}

/// Panels of equal width, about `tile` units each, covering `rank` units.
fn panel_width(rank: usize, tile: usize) -> usize {
    rank.div_ceil(rank.div_ceil(tile).max(1)).max(1)
}

/// `Y = [U_1[tile]; U_2[tile]] G` for every tile of `range`, tile after tile
/// (`2t × (m_B+1)` each, column-major), in parallel; a copy where `G = I`
/// (the first block on the identity metric).
fn inputs<'a, T: Real>(
    y: &'a mut Vec<T>,
    u: &DMatrix<T>,
    rank: usize,
    range: Range<usize>,
    tile: usize,
    g: &DMatrix<T>,
) -> &'a [T] {
    let (wa, wb) = (u.ncols(), g.ncols());
    let identity = g.is_square() && g.is_identity(T::zero());
    let y = grow(y, 2 * range.len() * wb);
    y.par_chunks_mut(2 * tile * wb)
        .enumerate()
        .for_each(|(k, yt)| {
            let start = range.start + k * tile;
            let tt = yt.len() / (2 * wb);
            let mut yt = DMatrixViewMut::from_slice(yt, 2 * tt, wb);
            let first = u.view((start, 0), (tt, wa));
            let second = u.view((rank + start, 0), (tt, wa));
            if identity {
                yt.rows_mut(0, tt).copy_from(&first);
                yt.rows_mut(tt, tt).copy_from(&second);
            } else {
                gemm(T::one(), &first, g, T::zero(), &mut yt.rows_mut(0, tt));
                gemm(T::one(), &second, g, T::zero(), &mut yt.rows_mut(tt, tt));
            }
        });
    y
}

/// `Z[:, cols] += D̃_A[:, tile] H[tile, cols]` (`z` holds the columns from
/// `z0`): the dense columns of `H` from two GEMMs on `Y[tile]`, the selector
/// columns of `B` gathered from it, and the columns in `halve` halved (the
/// diagonal tile of a self product).
#[allow(clippy::too_many_arguments)]
fn add_block<T: Real>(
    lane: &mut Lane<T>,
    yt: &[T],
    tt: usize,
    b: &Side<'_, T>,
    cols: Range<usize>,
    halve: Range<usize>,
    d_tile: &DMatrixView<'_, T>,
    z: &mut DMatrixViewMut<'_, T>,
    z0: usize,
) {
    let (one, zero) = (T::one(), T::zero());
    let (wid, wsw) = b.weights;
    let Lane { x1, x2, h, .. } = lane;
    let ht = grow(h, tt * cols.len());
    let dense = b.units.dense_in(&cols);
    if !dense.is_empty() {
        let nd = dense.len();
        let ytv = DMatrixView::from_slice(yt, 2 * tt, b.wb);
        gemm(
            one,
            &ytv,
            &t_rows(b.ut, b.wb, dense.start, nd),
            zero,
            &mut view_mut(x1, 2 * tt, nd),
        );
        let right = t_rows(b.ut, b.wb, b.rank + dense.start, nd);
        gemm(one, &ytv, &right, zero, &mut view_mut(x2, 2 * tt, nd));
        let at = (dense.start - cols.start) * tt..(dense.end - cols.start) * tt;
        hadamard(
            &x1[..2 * tt * nd],
            &x2[..2 * tt * nd],
            &mut ht[at],
            tt,
            wid,
            wsw,
        );
    }
    gather_columns(yt, &b.units.selectors, ht, cols.clone(), tt, wid, wsw);
    let halve = halve.start.max(cols.start)..halve.end.min(cols.end);
    if !halve.is_empty() {
        let half: T = from_f64(0.5);
        ht[(halve.start - cols.start) * tt..(halve.end - cols.start) * tt]
            .iter_mut()
            .for_each(|v| *v *= half);
    }
    let ht = DMatrixView::from_slice(ht, tt, cols.len());
    gemm(
        one,
        d_tile,
        &ht,
        one,
        &mut z.columns_mut(cols.start - z0, cols.len()),
    );
}

/// The rows of `H` of the selector units of `A` on the panel `cols`,
/// scattered into `Z` through their (mostly sparse) columns of `D̃_A`.
#[allow(clippy::too_many_arguments)]
fn add_selector_rows<T: Real>(
    lane: &mut Lane<T>,
    selectors: &[Selector<T>],
    slot: &[usize],
    gs: &DMatrixView<'_, T>,
    ub: &DMatrix<T>,
    da: &DMatrix<T>,
    g: &DMatrix<T>,
    b: &Side<'_, T>,
    cols: Range<usize>,
    z: &mut DMatrixViewMut<'_, T>,
) {
    let (one, zero) = (T::one(), T::zero());
    let (wid, wsw) = b.weights;
    let (na, ne) = (da.nrows(), gs.ncols());
    let dense = b.units.dense_in(&cols);
    let nd = dense.len();
    let Lane { h, w, nonzeros, .. } = lane;
    let wv = grow(w, 2 * ne * nd);
    if nd > 0 {
        let (w1, w2) = wv.split_at_mut(ne * nd);
        for (wj, row) in [(w1, dense.start), (w2, b.rank + dense.start)] {
            let uj = ub.view((row, 0), (nd, b.wb));
            gemm(
                one,
                &uj,
                gs,
                zero,
                &mut DMatrixViewMut::from_slice(wj, nd, ne),
            );
        }
    }
    let (w1, w2) = wv.split_at(ne * nd);
    let hrow = grow(h, cols.len());
    let off = dense.start - cols.start;
    for s in selectors {
        let [c1, c2] = s.coef;
        let (e1, e2) = (slot[s.index[0]] * nd, slot[s.index[1]] * nd);
        let (w1a, w2a) = (&w1[e1..e1 + nd], &w2[e1..e1 + nd]);
        let (w1b, w2b) = (&w1[e2..e2 + nd], &w2[e2..e2 + nd]);
        let c12 = c1 * c2;
        for (c, v) in hrow[off..off + nd].iter_mut().enumerate() {
            *v = c12 * (wid * w1a[c] * w2b[c] + wsw * w2a[c] * w1b[c]);
        }
        for sb in b
            .units
            .selectors
            .iter()
            .filter(|sb| cols.contains(&sb.unit))
        {
            hrow[sb.unit - cols.start] = selector_pair(s, sb, g, wid, wsw);
        }
        column_nonzeros(da, s.unit, nonzeros);
        if 4 * nonzeros.len() > na {
            // A dense output column (the constant unit with a bias): one
            // rank-1 update.
            z.ger(
                one,
                &da.column(s.unit),
                &DVectorView::from_slice(hrow, cols.len()),
                one,
            );
        } else {
            for &(o, d) in nonzeros.iter() {
                for (c, &v) in hrow.iter().enumerate() {
                    z[(o, c)] += d * v;
                }
            }
        }
    }
}

/// `H = w_id X_11∘X_22 + w_sw X_12∘X_21` for a tile: `x1 = [X_11; X_21]`,
/// `x2 = [X_12; X_22]`, both `2t × c` column-major; `h` is `t × c`.
fn hadamard<T: Real>(x1: &[T], x2: &[T], h: &mut [T], tt: usize, wid: T, wsw: T) {
    for ((hc, c1), c2) in h
        .chunks_exact_mut(tt)
        .zip(x1.chunks_exact(2 * tt))
        .zip(x2.chunks_exact(2 * tt))
    {
        let (x11, x21) = c1.split_at(tt);
        let (x12, x22) = c2.split_at(tt);
        for i in 0..tt {
            hc[i] = wid * x11[i] * x22[i] + wsw * x12[i] * x21[i];
        }
    }
}

/// The columns `cols` of a tile of `H` (`h`, `t × |cols|`) for selector
/// units of `B`: `X_ij[:, ρ'] = c'_j Y_i[:, i'_j]`.
fn gather_columns<T: Real>(
    yt: &[T],
    selectors: &[Selector<T>],
    h: &mut [T],
    cols: Range<usize>,
    tt: usize,
    wid: T,
    wsw: T,
) {
    for s in selectors.iter().filter(|s| cols.contains(&s.unit)) {
        let [c1, c2] = s.coef;
        let column = |i: usize| &yt[i * 2 * tt..(i + 1) * 2 * tt];
        let (y1a, y2a) = column(s.index[0]).split_at(tt);
        let (y1b, y2b) = column(s.index[1]).split_at(tt);
        let c = s.unit - cols.start;
        let hc = &mut h[c * tt..(c + 1) * tt];
        for i in 0..tt {
            hc[i] = c1 * c2 * (wid * y1a[i] * y2b[i] + wsw * y1b[i] * y2a[i]);
        }
    }
}

fn selector_pair<T: Real>(s: &Selector<T>, t: &Selector<T>, g: &DMatrix<T>, wid: T, wsw: T) -> T {
    let x = |i: usize, j: usize| g[(s.index[i], t.index[j])];
    s.coef[0]
        * s.coef[1]
        * t.coef[0]
        * t.coef[1]
        * (wid * x(0, 0) * x(1, 1) + wsw * x(0, 1) * x(1, 0))
}

/// Splits the units of an order-2 block into the smallest contiguous range
/// holding every non-selector unit, and the selector units outside it.
fn classify<T: Real>(cp: &CpFactors<T>, units: &mut Units<T>) {
    let r = cp.rank();
    let u = cp.stacked_inputs();
    let single = |row: usize| -> Option<(T, usize)> {
        let mut found = None;
        for (i, &v) in u.row(row).iter().enumerate() {
            if v != T::zero() {
                if found.is_some() {
                    return None;
                }
                found = Some((v, i));
            }
        }
        Some(found.unwrap_or((T::zero(), 0)))
    };
    let selector = |unit: usize| -> Option<Selector<T>> {
        let (c1, i1) = single(unit)?;
        let (c2, i2) = single(r + unit)?;
        Some(Selector {
            unit,
            coef: [c1, c2],
            index: [i1, i2],
        })
    };
    units.selectors.clear();
    let mut start = 0;
    while start < r {
        match selector(start) {
            Some(s) => units.selectors.push(s),
            None => break,
        }
        start += 1;
    }
    let mut end = r;
    while end > start {
        match selector(end - 1) {
            Some(s) => units.selectors.push(s),
            None => break,
        }
        end -= 1;
    }
    units.dense = start..end;
}

/// The nonzero entries of column `c` of `m`.
fn column_nonzeros<T: Real>(m: &DMatrix<T>, c: usize, out: &mut Vec<(usize, T)>) {
    out.clear();
    out.extend(
        m.column(c)
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != T::zero())
            .map(|(o, &v)| (o, v)),
    );
}

/// `(w_id, w_swap)`: the weights of the two leg pairings of an order-2 step.
fn pair_weights<T: Real>(a: &dyn SymmetryGroup, b: &dyn SymmetryGroup) -> Result<(T, T)> {
    let (mut wid, mut wsw) = (0.0, 0.0);
    for (pi, w) in leg_pairings(a, b, 2)? {
        if pi.apply(0) == 0 {
            wid += w;
        } else {
            wsw += w;
        }
    }
    Ok((from_f64(wid), from_f64(wsw)))
}

fn check_step<T: Real>(fa: &CpFactors<T>, fb: &CpFactors<T>, g: &DMatrix<T>) -> Result<()> {
    if fb.order() != fa.order() {
        return Err(Incomparable::StepOrders {
            a: fa.order(),
            b: fb.order(),
        }
        .into());
    }
    check_shape(
        "cross Gram matrix",
        g,
        (fa.input_width() + 1, fb.input_width() + 1),
    )
}

/// The CP factors of a block the CP kernels are asked to step; an error
/// naming the kind of a block that has none (it supplies its own step).
pub(crate) fn cp_of<T: Real>(block: &dyn TensorBlock<T>) -> Result<&CpFactors<T>> {
    cp_of_kind(block.as_cp(), block.kind())
}

/// As [`cp_of`], from a block's answer and kind.
pub(crate) fn cp_of_kind<'a, T: Real>(
    cp: Option<&'a CpFactors<T>>,
    kind: &str,
) -> Result<&'a CpFactors<T>> {
    cp.ok_or_else(|| {
        Error::InvalidBlock(format!(
            "a {kind} block has no CP factors: it must supply its own Gram step, \
             and a CP block cannot be compared with it at the same position"
        ))
    })
}

fn check_symmetric_gram<T: Real>(g: &DMatrix<T>) -> Result<()> {
    let tolerance = g.amax() * T::default_epsilon() * from_f64(64.0);
    check_symmetric("Gram matrix of a self product", g, tolerance)
}

/// Any order and symmetry, any output factors: all `k²` leg-pair products
/// from one stacked product, then the weighted Hadamard products.
pub(crate) fn generic_step<T: Real>(
    (fa, sa): (&CpFactors<T>, &dyn SymmetryGroup),
    (fb, sb): (&CpFactors<T>, &dyn SymmetryGroup),
    g: &DMatrix<T>,
) -> Result<DMatrix<T>> {
    let k = fa.order();
    let (ra, rb) = (fa.rank(), fb.rank());
    let rows_b = fb.stacked_inputs().nrows();
    let x = mul(
        &mul(fa.stacked_inputs(), g),
        &transposed(fb.stacked_inputs(), 0, rows_b),
    );

    let mut h = DMatrix::zeros(ra, rb);
    let mut term = DMatrix::zeros(ra, rb);
    for (pi, weight) in leg_pairings(sa, sb, k)? {
        term.copy_from(&x.view((0, pi.apply(0) * rb), (ra, rb)));
        for j in 1..k {
            term.component_mul_assign(&x.view((j * ra, pi.apply(j) * rb), (ra, rb)));
        }
        let weight: T = from_f64(weight);
        h.zip_apply(&term, |acc, t| *acc += weight * t);
    }

    let left = match fa.output() {
        Some(d) => mul(d, &h),
        None => h,
    };
    Ok(match fb.output() {
        Some(d) => mul_nt(&left, d),
        None => left,
    })
}

/// `(rows start..start+len of m)ᵀ` as a strided view: no copy, and the GEMM
/// kernel reads it directly.
fn transposed<T: Real>(m: &DMatrix<T>, start: usize, len: usize) -> DMatrixView<'_, T, Dyn, Dyn> {
    let (rows, cols) = m.shape();
    assert!(
        start + len <= rows,
        "rows {start}..{} of {rows}",
        start + len
    );
    DMatrixView::from_slice_with_strides_generic(
        &m.as_slice()[start..],
        Dyn(cols),
        Dyn(len),
        Dyn(rows),
        Dyn(1),
    )
}

/// `mᵀ` into `buf`, column-major: a right operand with unit row stride,
/// which faer multiplies up to twice as fast (`benches/gemm.rs`).
fn transpose_into<'a, T: Real>(buf: &'a mut Vec<T>, m: &DMatrix<T>) -> &'a [T] {
    let (rows, cols) = m.shape();
    let dst = grow(buf, rows * cols);
    crate::linalg::transpose_to(m.as_slice(), rows, cols, dst);
    dst
}

/// `(rows start..start+len of m)ᵀ` from `mᵀ` (column-major, `width` rows):
/// its columns `start..start+len`, contiguous.
fn t_rows<T: Real>(mt: &[T], width: usize, start: usize, len: usize) -> DMatrixView<'_, T> {
    DMatrixView::from_slice(&mt[start * width..(start + len) * width], width, len)
}

/// `(columns start..start+len of m)ᵀ` from `mᵀ` (column-major, `width`
/// rows, `mt.len() / width` columns): its rows `start..start+len`.
fn t_columns<T: Real>(
    mt: &[T],
    width: usize,
    start: usize,
    len: usize,
) -> DMatrixView<'_, T, Dyn, Dyn> {
    assert!(
        start + len <= width,
        "rows {start}..{} of {width}",
        start + len
    );
    DMatrixView::from_slice_with_strides_generic(
        &mt[start..],
        Dyn(len),
        Dyn(mt.len() / width),
        Dyn(1),
        Dyn(width),
    )
}

/// The first `len` scalars of `buf`, grown (never shrunk) to hold them:
/// exactly, not doubled, since the buffers are large and their final size
/// is known.
fn grow<T: Real>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.reserve_exact(len - buf.len());
        buf.resize(len, T::zero());
    }
    &mut buf[..len]
}

/// A column-major `rows × cols` view of the front of `buf`.
fn view_mut<T: Real>(buf: &mut Vec<T>, rows: usize, cols: usize) -> DMatrixViewMut<'_, T> {
    DMatrixViewMut::from_slice(grow(buf, rows * cols), rows, cols)
}

/// Gives `m` the shape `rows × cols`, reusing its allocation.
fn reshape<T: Real>(m: &mut DMatrix<T>, rows: usize, cols: usize) {
    if m.shape() != (rows, cols) {
        let mut data: Vec<T> = core::mem::replace(m, DMatrix::zeros(0, 0)).data.into();
        data.clear();
        data.resize(rows * cols, T::zero());
        *m = DMatrix::from_vec(rows, cols, data);
    }
}
