//! The Gram step at the speed of its GEMMs.
//!
//! For an order-2 block pair the step is `G' = D̃_A H D̃_Bᵀ` with
//! `H = w_id X_11∘X_22 + w_sw X_12∘X_21` and `X_ij = U^A_i G (U^B_j)ᵀ`. The
//! kernel never holds the `2r × 2r` product: it walks the units of `A` in
//! tiles of `t` rows, computes `Y = U^A[tile] G`, the four `t × r_B` blocks
//! of `X`, their Hadamard combination, and adds `D̃_A[:, tile] H[tile, :]`
//! into `Z = D̃_A H` (`(n_A+1) × r_B`); then `G' = Z D̃_Bᵀ`. The work is the
//! GEMMs and one pass over each `X` tile while it is still warm in cache.
//!
//! **Selector units.** A unit whose input rows each have at most one
//! nonzero (`U_j[ρ,:] = c_j e_{i_j}ᵀ`) reads single entries of `G`: the
//! constant unit `e_0` and the `m` residual units of a bilinear block with
//! `s ≠ 1` are of this kind. Their rows of `X` are rows of `G U_Bᵀ`, their
//! columns are columns of `U_A G`, and their rows of `H` reach `G'` through
//! the nonzeros of their columns of `D̃` (one for a residual unit), so they
//! are gathered and scattered instead of multiplied: the residual costs
//! `O(h m²)` instead of raising the rank from `1+h` to `1+h+m` in every
//! `O(r² m)` product. Only the units outside the span of
//! the non-selector units are treated this way, so the dense units stay one
//! contiguous range that GEMMs can read in place.
//!
//! **Self products.** With `A = B` and `G` symmetric, `X_ij = X_jiᵀ` and `H`
//! is symmetric: the kernel computes only the tiles on and below the
//! diagonal, `L` (diagonal tiles halved), so that `H = L + Lᵀ` and
//! `G' = F + Fᵀ` with `F = D̃ L D̃ᵀ`, about half the work.

use core::ops::Range;

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, DVectorView, Dyn};

use super::{CpFactors, TensorBlock, check_shape, check_symmetric};
use crate::error::{Error, Incomparable, Result};
use crate::linalg::{gemm, mul, mul_nt};
use crate::scalar::{Real, from_f64};
use crate::symmetry::{SymmetryGroup, leg_pairings};

/// Default number of units of `A` per tile: large enough for the GEMMs to
/// run at full speed (their inner dimension in `Z += D̃_A[:, tile] H[tile, :]`
/// is the tile), small enough that a tile of `X` stays in the outer caches.
const DEFAULT_TILE: usize = 256;

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

impl<T> Default for Units<T> {
    fn default() -> Self {
        Self {
            dense: 0..0,
            selectors: Vec::new(),
        }
    }
}

/// Reusable buffers for [`gram_step`](crate::gram_step): run the recursion
/// over a model, or many pairs of models, without allocating in the
/// per-layer loop once the buffers have grown to the largest shapes.
///
/// Every method computes exactly what [`gram_step`](crate::gram_step)
/// computes (up to rounding: products are associated differently); the
/// workspace only holds scratch memory, so one workspace serves any blocks,
/// and it is not `Sync` by design: give each thread its own.
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
    x1: Vec<T>,
    x2: Vec<T>,
    h: Vec<T>,
    z: Vec<T>,
    rows: Vec<usize>,
    slot: Vec<usize>,
    gsel: Vec<T>,
    w: Vec<T>,
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

    /// An empty workspace walking `tile` units of `A` at a time (at least 1;
    /// the default is 256; self products take at most `h/16`, within
    /// 32…128). Only speed and scratch memory depend on it.
    pub fn with_tile(tile: usize) -> Self {
        Self {
            tile: tile.max(1),
            units_a: Units::default(),
            units_b: Units::default(),
            y: Vec::new(),
            x1: Vec::new(),
            x2: Vec::new(),
            h: Vec::new(),
            z: Vec::new(),
            rows: Vec::new(),
            slot: Vec::new(),
            gsel: Vec::new(),
            w: Vec::new(),
            ut: Vec::new(),
            dt: Vec::new(),
            nonzeros: Vec::new(),
        }
    }

    /// Scratch memory held, in scalars: the peak of the step's own
    /// allocations beyond its input and output.
    pub fn scratch_len(&self) -> usize {
        self.y.capacity()
            + self.x1.capacity()
            + self.x2.capacity()
            + self.h.capacity()
            + self.z.capacity()
            + self.gsel.capacity()
            + self.w.capacity()
            + self.ut.capacity()
            + self.dt.capacity()
    }

    /// `out ← G' = D̃_A H D̃_Bᵀ`, the Gram step of [`gram_step`](crate::gram_step),
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
                let mut x = view_mut(&mut self.x1, ra, rb);
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
        (wid, wsw): (T, T),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) {
        let Self {
            tile,
            units_a,
            units_b,
            y,
            x1,
            x2,
            h,
            z,
            rows,
            slot,
            gsel,
            w,
            nonzeros,
            ut,
            dt,
        } = self;
        classify(fa, units_a);
        classify(fb, units_b);
        let (ua, ub) = (fa.stacked_inputs(), fb.stacked_inputs());
        let ubt = transpose_into(ut, ub);
        let identity = g.is_square() && g.is_identity(T::zero());
        let (ra, rb) = (fa.rank(), fb.rank());
        let (wa, wb) = (ua.ncols(), ub.ncols());
        let (na, nb) = (da.nrows(), db.nrows());
        let dense_b = units_b.dense.clone();
        let ndb = dense_b.len();
        let (one, zero) = (T::one(), T::zero());
        let mut z = view_mut(z, na, rb);
        z.fill(zero);

        let mut start = units_a.dense.start;
        while start < units_a.dense.end {
            let tt = (*tile).min(units_a.dense.end - start);
            let yt = tile_inputs(y, ua, ra, start, tt, g, identity);
            let ytv = DMatrixView::from_slice(yt, 2 * tt, wb);
            let ht = &mut grow(h, tt * rb)[..];
            if ndb > 0 {
                let mut x1v = view_mut(x1, 2 * tt, ndb);
                gemm(
                    one,
                    &ytv,
                    &t_rows(ubt, wb, dense_b.start, ndb),
                    zero,
                    &mut x1v,
                );
                let mut x2v = view_mut(x2, 2 * tt, ndb);
                gemm(
                    one,
                    &ytv,
                    &t_rows(ubt, wb, rb + dense_b.start, ndb),
                    zero,
                    &mut x2v,
                );
                let len = 2 * tt * ndb;
                hadamard(
                    &x1[..len],
                    &x2[..len],
                    &mut ht[dense_b.start * tt..dense_b.end * tt],
                    tt,
                    wid,
                    wsw,
                );
            }
            gather_columns(yt, &units_b.selectors, ht, tt, wid, wsw);
            let ht = DMatrixView::from_slice(ht, tt, rb);
            gemm(one, &da.columns(start, tt), &ht, one, &mut z);
            start += tt;
        }

        if !units_a.selectors.is_empty() {
            // The rows of G the selectors read, and their rows of G U_Bᵀ.
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
            // (G[rows, :])ᵀ, then (G[rows, :] U_jBᵀ)ᵀ = U_jB G[rows, :]ᵀ: with
            // `ne` columns, which GEMM (or, for the lone constant unit, a
            // column-wise gemv) handles at full speed.
            let mut gs = view_mut(gsel, wb, ne);
            for (q, &i) in rows.iter().enumerate() {
                gs.column_mut(q).tr_copy_from(&g.row(i));
            }
            let wv = grow(w, 2 * ne * ndb);
            if ndb > 0 {
                let (w1, w2) = wv.split_at_mut(ne * ndb);
                gemm(
                    one,
                    &ub.view((dense_b.start, 0), (ndb, wb)),
                    &gs,
                    zero,
                    &mut DMatrixViewMut::from_slice(w1, ndb, ne),
                );
                gemm(
                    one,
                    &ub.view((rb + dense_b.start, 0), (ndb, wb)),
                    &gs,
                    zero,
                    &mut DMatrixViewMut::from_slice(w2, ndb, ne),
                );
            }
            let (w1, w2) = wv.split_at(ne * ndb);
            let hrow = grow(h, rb);
            for s in &units_a.selectors {
                let [c1, c2] = s.coef;
                let (e1, e2) = (slot[s.index[0]] * ndb, slot[s.index[1]] * ndb);
                let (w1a, w2a) = (&w1[e1..e1 + ndb], &w2[e1..e1 + ndb]);
                let (w1b, w2b) = (&w1[e2..e2 + ndb], &w2[e2..e2 + ndb]);
                let c12 = c1 * c2;
                for (c, v) in hrow[dense_b.clone()].iter_mut().enumerate() {
                    *v = c12 * (wid * w1a[c] * w2b[c] + wsw * w2a[c] * w1b[c]);
                }
                for sb in &units_b.selectors {
                    hrow[sb.unit] = selector_pair(s, sb, g, wid, wsw);
                }
                column_nonzeros(da, s.unit, nonzeros);
                if 4 * nonzeros.len() > na {
                    // A dense output column (the constant unit with a bias):
                    // one rank-1 update, column by column.
                    let hrow = DVectorView::from_slice(hrow, rb);
                    z.ger(one, &da.column(s.unit), &hrow, one);
                } else {
                    for &(o, d) in nonzeros.iter() {
                        for (c, &v) in hrow.iter().enumerate() {
                            z[(o, c)] += d * v;
                        }
                    }
                }
            }
        }

        finish(&z, db, &dense_b, &units_b.selectors, nonzeros, dt, out, nb);
    }

    /// Order 2, `A = B` and `g` symmetric: the tiles of `H` on and below the
    /// diagonal, `G' = F + Fᵀ`.
    fn bilinear_self(
        &mut self,
        fa: &CpFactors<T>,
        da: &DMatrix<T>,
        (wid, wsw): (T, T),
        g: &DMatrix<T>,
        out: &mut DMatrix<T>,
    ) {
        let Self {
            tile,
            units_a,
            y,
            x1,
            x2,
            h,
            z,
            nonzeros,
            ut,
            dt,
            ..
        } = self;
        classify(fa, units_a);
        let u = fa.stacked_inputs();
        let wu = u.ncols();
        let ut = transpose_into(ut, u);
        let identity = g.is_square() && g.is_identity(T::zero());
        let r = fa.rank();
        let n = da.nrows();
        let dense = units_a.dense.clone();
        let (one, zero) = (T::one(), T::zero());
        let half: T = from_f64(0.5);
        let mut z = view_mut(z, n, r);
        z.fill(zero);

        let self_tile = (dense.len() / 16).clamp(SELF_TILE.0, SELF_TILE.1);
        let tile = (*tile).min(self_tile);
        let mut start = dense.start;
        while start < dense.end {
            let tt = tile.min(dense.end - start);
            let end = start + tt;
            let nc = end - dense.start;
            let yt = tile_inputs(y, u, r, start, tt, g, identity);
            let ytv = DMatrixView::from_slice(yt, 2 * tt, g.ncols());
            let ht = &mut grow(h, tt * r)[..];
            let mut x1v = view_mut(x1, 2 * tt, nc);
            gemm(one, &ytv, &t_rows(ut, wu, dense.start, nc), zero, &mut x1v);
            let mut x2v = view_mut(x2, 2 * tt, nc);
            gemm(
                one,
                &ytv,
                &t_rows(ut, wu, r + dense.start, nc),
                zero,
                &mut x2v,
            );
            let hd = &mut ht[dense.start * tt..end * tt];
            let len = 2 * tt * nc;
            hadamard(&x1[..len], &x2[..len], hd, tt, wid, wsw);
            // The diagonal tile appears once in L and once in Lᵀ.
            hd[(start - dense.start) * tt..]
                .iter_mut()
                .for_each(|v| *v *= half);
            gather_columns(yt, &units_a.selectors, ht, tt, wid, wsw);
            let ht = DMatrixView::from_slice(ht, tt, r);
            let d_tile = da.columns(start, tt);
            gemm(
                one,
                &d_tile,
                &ht.columns(0, end),
                one,
                &mut z.columns_mut(0, end),
            );
            if dense.end < r {
                gemm(
                    one,
                    &d_tile,
                    &ht.columns(dense.end, r - dense.end),
                    one,
                    &mut z.columns_mut(dense.end, r - dense.end),
                );
            }
            start = end;
        }

        // Selector × selector: ½ H_SS in L.
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

        finish(&z, da, &dense, &units_a.selectors, nonzeros, dt, out, n);
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
    z: &DMatrixViewMut<'_, T>,
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

/// `[U_1[tile]; U_2[tile]] G` into `y`, `2t × (m_B+1)` column-major (a copy
/// when `identity`: `G = I`).
fn tile_inputs<'a, T: Real>(
    y: &'a mut Vec<T>,
    u: &DMatrix<T>,
    rank: usize,
    start: usize,
    tt: usize,
    g: &DMatrix<T>,
    identity: bool,
) -> &'a [T] {
    let wa = u.ncols();
    let mut yt = view_mut(y, 2 * tt, g.ncols());
    let (one, zero) = (T::one(), T::zero());
    let first = u.view((start, 0), (tt, wa));
    let second = u.view((rank + start, 0), (tt, wa));
    if identity {
        // `U I = U` (the first block on the identity metric): a copy, not
        // a product.
        yt.rows_mut(0, tt).copy_from(&first);
        yt.rows_mut(tt, tt).copy_from(&second);
    } else {
        gemm(one, &first, g, zero, &mut yt.rows_mut(0, tt));
        gemm(one, &second, g, zero, &mut yt.rows_mut(tt, tt));
    }
    &y[..2 * tt * g.ncols()]
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

/// The columns of a tile of `H` for selector units of `B`: `X_ij[:, ρ'] =
/// c'_j Y_i[:, i'_j]`.
fn gather_columns<T: Real>(
    yt: &[T],
    selectors: &[Selector<T>],
    h: &mut [T],
    tt: usize,
    wid: T,
    wsw: T,
) {
    for s in selectors {
        let [c1, c2] = s.coef;
        let column = |i: usize| &yt[i * 2 * tt..(i + 1) * 2 * tt];
        let (y1a, y2a) = column(s.index[0]).split_at(tt);
        let (y1b, y2b) = column(s.index[1]).split_at(tt);
        let hc = &mut h[s.unit * tt..(s.unit + 1) * tt];
        for i in 0..tt {
            hc[i] = c1 * c2 * (wid * y1a[i] * y2b[i] + wsw * y1b[i] * y2a[i]);
        }
    }
}

/// `H[ρ, ρ']` for two selector units: `X_ij = c_i c'_j G[i_i, i'_j]`.
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
    cp_of_kind(block.cp_factors(), block.kind())
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
