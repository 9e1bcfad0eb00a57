//! The moment step of bilinear attention ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)) under a jointly Gaussian input:
//! `Y[s] = r κ⁴ X[s] + α (O z[s] + κ⁵ b_o)` (`κ` the normalised constant),
//! `z_h[s] = (1/c) Σ_t W[s,t] (q1·k1)(q2·k2) v`. Each configuration `(h, s, t)`
//! is two score nodes and a value leg; every pair of configurations of the
//! two models is one [`chain`](super::chain) sum over legs whose means and
//! covariances come from tables `F_A(p) Ĉ_AB[p, q] F_B(q)ᵀ` per pair of
//! positions and heads. Each pair adds its own covariance, its second
//! moment less the product of its means, so that a pair of independent
//! legs is skipped; the step is exact when its input is Gaussian.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::chain::{self, Between, End, Inputs, Slot, Workspace};
use super::layer::{Attention, Role};
use super::step::{WHOLE_PRODUCTS_UP_TO, key_runs, rows_within};
use crate::error::Result;
use crate::gaussian::moments::{JointMoments, Moments};
use crate::linalg::{gemm, gemm_nt, mul, mul_nt};
use crate::resources::flat_entries;
use crate::scalar::{Real, from_f64};

/// One model's block and what its configurations read.
struct Side<'a, T: Real> {
    block: &'a Attention<T>,
    heads: usize,
    e: usize,
    ev: usize,
    width: usize,
    /// `F_h(p)`, one head's stacked padded leg forms `[q1; k1; q2; k2; v]`
    /// (`(4e + e_v) × (d+1)`) at `p·H + h`: compact, so that the tables
    /// below hold one small matrix per pair of heads.
    forms: Vec<DMatrix<T>>,
    /// Leg means `F_h(p) m̂[p̂]`, at `p·H + h`.
    means: Vec<DVector<T>>,
    /// The input means `m̂[p]` (unpadded) and the constant `κ = m̂_0`.
    input_means: Vec<DVector<T>>,
    constant: T,
    /// `(h, s, t, W[s,t] / c)` for every configuration with `W[s,t] ≠ 0`.
    configs: Vec<(usize, usize, usize, T)>,
}

impl<'a, T: Real> Side<'a, T> {
    fn new(block: &'a Attention<T>, act: &Moments<T>, n: usize) -> Result<Self> {
        let d = block.input_width();
        let mask = block.mask().weights(n)?;
        let (heads, e, ev) = (block.heads(), block.qk_width(), block.value_width());
        let forms: Vec<DMatrix<T>> = (0..n)
            .flat_map(|p| {
                let f = block.leg_factors(p);
                (0..heads)
                    .map(|h| {
                        let mut fh = DMatrix::zeros(4 * e + ev, d + 1);
                        for l in 0..5 {
                            let w = if l < 4 { e } else { ev };
                            fh.rows_mut(l * e, w)
                                .copy_from(&f.rows(block.leg_row(l, h), w));
                        }
                        fh
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let constant = act.mean[0];
        let input_means: Vec<DVector<T>> = (0..n)
            .map(|p| act.mean.rows(1 + p * d, d).into_owned())
            .collect();
        let means = forms
            .iter()
            .enumerate()
            .map(|(ph, f)| {
                let mut v = f.columns(1, d) * &input_means[ph / heads];
                v.axpy(constant, &f.column(0), T::one());
                v
            })
            .collect();
        let c = block.score_scale();
        let mut configs = Vec::new();
        for h in 0..block.heads() {
            for s in 0..n {
                for t in 0..n {
                    if mask[(s, t)] != 0.0 {
                        configs.push((h, s, t, from_f64(mask[(s, t)] / c)));
                    }
                }
            }
        }
        Ok(Self {
            block,
            heads: block.heads(),
            e: block.qk_width(),
            ev: block.value_width(),
            width: d,
            forms,
            means,
            input_means,
            constant,
            configs,
        })
    }

    /// The legs of configuration `(h, s, t)`: nodes `(q1[s], k1[t])`,
    /// `(q2[s], k2[t])` and the value leg `v[t]`.
    fn legs(&self, side: usize, (h, s, t): (usize, usize, usize)) -> ([(Leg, Leg); 2], Leg) {
        let leg = |l: usize, pos: usize| Leg::Form {
            side,
            head: h,
            row: l * self.e,
            width: if l < 4 { self.e } else { self.ev },
            pos,
        };
        ([(leg(0, s), leg(1, t)), (leg(2, s), leg(3, t))], leg(4, t))
    }
}

/// A Gaussian vector the sums read: rows of one head's leg forms at a
/// position, or one model's input at a position (the skip).
#[derive(Clone, Copy)]
enum Leg {
    Form {
        side: usize,
        head: usize,
        row: usize,
        width: usize,
        pos: usize,
    },
    Input {
        side: usize,
        pos: usize,
    },
}

/// Where the blocks of one item lie in its storage. Every item of one
/// table, the covariances of one pair of positions `(p, q)` of two models
/// `X`, `Y`, has the same blocks, one small contiguous matrix per pair of
/// heads, so that the sums of one pair of heads read a few hundred
/// kilobytes, not a whole table:
/// `F_X,h(p)[:, 1:] Ĉ_XY[p,q] F_Y,h'(q)[:, 1:]ᵀ` (`L_X × L_Y`) at
/// `h·H_Y + h'` (in a table of the heads' own pairs, at `h` for `h' = h`,
/// and nothing else); then `Ĉ_XY[p,q] F_Y,h'(q)[:, 1:]ᵀ` (`d_X × L_Y`, `X`'s
/// input with `Y`'s legs) per head `h'`; then `F_X,h(p)[:, 1:] Ĉ_XY[p,q]`
/// (`L_X × d_Y`, `X`'s legs with `Y`'s input) per head `h`.
#[derive(Clone, Copy)]
struct Layout {
    heads: [usize; 2],
    /// Leg rows per head, `4e + e_v`.
    legs: [usize; 2],
    widths: [usize; 2],
    own_heads: bool,
}

impl Layout {
    fn new<T: Real>(x: &Side<'_, T>, y: &Side<'_, T>, own_heads: bool) -> Self {
        Self {
            heads: [x.heads, y.heads],
            legs: [4 * x.e + x.ev, 4 * y.e + y.ev],
            widths: [x.width, y.width],
            own_heads,
        }
    }

    /// The offset of the forms of head pair `k` (`h·H_Y + h'`, or `h`).
    fn form(&self, k: usize) -> usize {
        k * self.legs[0] * self.legs[1]
    }

    /// The offset of `Y`'s head `h'`'s input table.
    fn input_form(&self, h2: usize) -> usize {
        let pairs = if self.own_heads {
            self.heads[0]
        } else {
            self.heads[0] * self.heads[1]
        };
        self.form(pairs) + h2 * self.widths[0] * self.legs[1]
    }

    /// The offset of `X`'s head `h`'s input table.
    fn form_input(&self, h: usize) -> usize {
        let inputs = if self.own_heads { 0 } else { self.heads[1] };
        self.input_form(inputs) + h * self.legs[0] * self.widths[1]
    }

    /// The scalars of one item.
    fn len(&self) -> usize {
        if self.own_heads {
            self.input_form(0)
        } else {
            self.form_input(self.heads[0])
        }
    }
}

/// Writes the item of `(p, q)` for `x` and `y` on `cov = Ĉ_XY` into `out`
/// (every scalar of it), in `layout`; each block by the same products
/// whatever the table, so that the same pair has the same bits in a whole
/// table, a tile's row and a table of the heads' own pairs.
fn make_item<T: Real>(
    x: &Side<'_, T>,
    y: &Side<'_, T>,
    cov: &DMatrix<T>,
    (p, q): (usize, usize),
    layout: Layout,
    out: &mut [T],
) {
    let (dx, dy) = (x.width, y.width);
    let (hx, hy) = (x.heads, y.heads);
    let c = cov.view((1 + p * dx, 1 + q * dy), (dx, dy));
    let fx = |h: usize| x.forms[p * hx + h].columns(1, dx);
    let input_form = |h2: usize| mul_nt(&c, &y.forms[q * hy + h2].columns(1, dy));
    let mut put = |at: usize, m: &DMatrix<T>| out[at..at + m.len()].copy_from_slice(m.as_slice());
    if layout.own_heads {
        for h in 0..hx {
            put(layout.form(h), &mul(&fx(h), &input_form(h)));
        }
        return;
    }
    let input_forms: Vec<DMatrix<T>> = (0..hy).map(input_form).collect();
    for h in 0..hx {
        let f = fx(h);
        for (h2, cf) in input_forms.iter().enumerate() {
            put(layout.form(h * hy + h2), &mul(&f, cf));
        }
        put(layout.form_input(h), &mul(&f, &c));
    }
    for (h2, cf) in input_forms.iter().enumerate() {
        put(layout.input_form(h2), cf);
    }
}

/// One row `p` of a table, one allocation: the items, and at `q` the index
/// of the item of `(p, q)`, `None` where `Ĉ[p,q]` is zero (independent
/// positions) or where another row holds it.
struct Row<T: Real> {
    data: Vec<T>,
    at: Vec<Option<usize>>,
}

/// The covariance tables of two models `X`, `Y` (or one with itself), by
/// rows of `X`'s positions: all held (a whole table), or those of one tile
/// of query positions and one key position at a time (see
/// [`query_tile`]). A table of one model with itself (`mirrored`) keeps
/// one item per unordered pair `p ≤ q` (the pair `(q, p)` reads it
/// transposed, `Ĉ` being symmetric): in a whole table in row `p`; a row
/// made for a tile holds every `q`, the pairs `q < p` as the item of
/// `(q, p)`, made as row `q` would make it, so that the tile size changes
/// no bit.
struct Tables<T: Real> {
    /// Row `p`, when held.
    rows: Vec<Option<Row<T>>>,
    /// Whether `Ĉ_XY[p,q]` is zero, at `p·n + q`, for every pair.
    zero: Vec<bool>,
    layout: Layout,
    mirrored: bool,
    /// The storage of released rows (and of the step's earlier tables),
    /// for the next rows of the same size: a tile's rows and key rows come
    /// and go many times, and each product's tables follow another's, and
    /// fresh storage would be faulted in (or fragment the allocator's
    /// heaps) each time.
    spare: Vec<Vec<T>>,
}

impl<T: Real> Tables<T> {
    /// The tables of `x` and `y` on `cov = Ĉ_XY`, no row held; `mirrored`
    /// when `y` is `x` and `cov` its own covariance; with `own_heads`, only
    /// the pairs of a head with itself and no input tables: all that the
    /// sums read of a model with itself beside another model. `spare`:
    /// storage to reuse (see [`Tables::spare`]).
    fn unheld(
        x: &Side<'_, T>,
        y: &Side<'_, T>,
        cov: &DMatrix<T>,
        n: usize,
        (mirrored, own_heads): (bool, bool),
        spare: Vec<Vec<T>>,
    ) -> Self {
        let (dx, dy) = (x.width, y.width);
        let zero = (0..n * n)
            .map(|pq| {
                let c = cov.view((1 + (pq / n) * dx, 1 + (pq % n) * dy), (dx, dy));
                c.iter().all(|v| *v == T::zero())
            })
            .collect();
        Self {
            rows: (0..n).map(|_| None).collect(),
            zero,
            layout: Layout::new(x, y, own_heads),
            mirrored,
            spare,
        }
    }

    /// The whole tables (every row held).
    fn whole(
        x: &Side<'_, T>,
        y: &Side<'_, T>,
        cov: &DMatrix<T>,
        n: usize,
        kind: (bool, bool),
        spare: Vec<Vec<T>>,
    ) -> Self {
        let mut t = Self::unheld(x, y, cov, n, kind, spare);
        t.make_rows(x, y, cov, 0..n, false);
        t
    }

    /// Makes and holds rows `ps`, in parallel by position pair; with
    /// `tiled`, a mirrored row holds every pair (see [`Tables`]).
    fn make_rows(
        &mut self,
        x: &Side<'_, T>,
        y: &Side<'_, T>,
        cov: &DMatrix<T>,
        ps: core::ops::Range<usize>,
        tiled: bool,
    ) {
        let n = self.rows.len();
        let len = self.layout.len();
        // Per row, the pair whose item each column holds.
        let sources: Vec<Vec<Option<(usize, usize)>>> = ps
            .clone()
            .map(|p| {
                (0..n)
                    .map(|q| {
                        if self.zero[p * n + q] {
                            None
                        } else if self.mirrored && q < p {
                            tiled.then_some((q, p))
                        } else {
                            Some((p, q))
                        }
                    })
                    .collect()
            })
            .collect();
        // Every scalar of an item is written below: a spare of the size is
        // reused as it is, and fresh storage comes zeroed from the system
        // (first touched by the parallel fill, not written here), once the
        // spares that fit nothing are dropped.
        let sizes: Vec<usize> = sources
            .iter()
            .map(|pairs| pairs.iter().flatten().count() * len)
            .collect();
        let reused: Vec<Option<Vec<T>>> = sizes
            .iter()
            .map(|&size| {
                let at = self.spare.iter().position(|d| d.len() == size)?;
                Some(self.spare.swap_remove(at))
            })
            .collect();
        if reused.iter().any(Option::is_none) {
            self.spare.clear();
        }
        let mut rows: Vec<Row<T>> = (sources.iter().zip(sizes).zip(reused))
            .map(|((pairs, size), data)| {
                let data = data.unwrap_or_else(|| vec![T::zero(); size]);
                let mut next = 0..;
                let at = pairs.iter().map(|s| s.and_then(|_| next.next())).collect();
                Row { data, at }
            })
            .collect();
        let layout = self.layout;
        let jobs: Vec<(&mut [T], (usize, usize))> = rows
            .iter_mut()
            .zip(&sources)
            .flat_map(|(row, pairs)| {
                row.data
                    .chunks_mut(len.max(1))
                    .zip(pairs.iter().flatten().copied())
            })
            .collect();
        jobs.into_par_iter()
            .with_max_len(1)
            .for_each(|(out, pq)| make_item(x, y, cov, pq, layout, out));
        for (p, row) in ps.zip(rows) {
            self.rows[p] = Some(row);
        }
    }

    /// Drops rows `ps`, their storage kept for the next rows made.
    fn release(&mut self, ps: core::ops::Range<usize>) {
        for p in ps {
            if let Some(row) = self.rows[p].take() {
                self.spare.push(row.data);
            }
        }
    }

    /// The item of `(p, q)` (`p ≤ q` in a mirrored table), from whichever
    /// of the two rows is held.
    fn item(&self, p: usize, q: usize) -> &[T] {
        let len = self.layout.len();
        let at = |r: usize, c: usize| {
            let row = self.rows[r].as_ref()?;
            row.at[c].map(|i| &row.data[i * len..(i + 1) * len])
        };
        let found = match at(p, q) {
            None if self.mirrored => at(q, p),
            found => found,
        };
        found.expect("the step holds every row it reads")
    }

    /// A model's whole tables with itself kept for what the cross product
    /// reads of them: the covariances of one configuration's own legs, one
    /// head with itself. The rest (`H² − H` of every `H²` head pairs, and
    /// the input tables) is dropped, row by row, so that the cross
    /// product's own tables are made beside `1/H` of each side's instead of
    /// all of them; the storage of the whole rows goes to `spare`.
    fn into_own_heads(self, spare: &mut Vec<Vec<T>>) -> Self {
        let heads = self.layout.heads[0];
        debug_assert!(
            self.mirrored && heads == self.layout.heads[1],
            "a model's tables with itself"
        );
        let own = Layout {
            own_heads: true,
            ..self.layout
        };
        let (from, to) = (self.layout.len(), own.len());
        let block = own.form(1);
        let rows = self
            .rows
            .into_iter()
            .map(|row| {
                row.map(|row| {
                    let items = row.data.len() / from.max(1);
                    let mut data = Vec::with_capacity(items * to);
                    for item in row.data.chunks(from.max(1)) {
                        // Head pair (k, k) is entry k (H + 1).
                        for k in 0..heads {
                            let at = self.layout.form(k * (heads + 1));
                            data.extend_from_slice(&item[at..at + block]);
                        }
                    }
                    spare.push(row.data);
                    Row { data, at: row.at }
                })
            })
            .collect();
        Self {
            rows,
            zero: self.zero,
            layout: own,
            mirrored: self.mirrored,
            spare: Vec::new(),
        }
    }

    /// The storage of the rows held and of the spares.
    fn into_spare(self) -> Vec<Vec<T>> {
        let mut spare = self.spare;
        spare.extend(self.rows.into_iter().flatten().map(|row| row.data));
        spare
    }
}

/// A block of one table matrix: `rows × cols` from `(row, col)` of the
/// column-major matrix at the start of `data`, `ld` rows high.
struct Block<'a, T: Real> {
    data: &'a [T],
    ld: usize,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

impl<'a, T: Real> Block<'a, T> {
    fn new(
        data: &'a [T],
        ld: usize,
        (row, col): (usize, usize),
        (rows, cols): (usize, usize),
    ) -> Self {
        Self {
            data,
            ld,
            row,
            col,
            rows,
            cols,
        }
    }
}

/// The sides and tables of one product `⟨X, Y⟩`: `X` is side 0, `Y` side 1.
struct Product<'a, T: Real> {
    sides: [&'a Side<'a, T>; 2],
    /// Each side's tables with itself; `None`: `xy`'s (a model with
    /// itself, its tables whole).
    own: [Option<&'a Tables<T>>; 2],
    xy: &'a Tables<T>,
    n: usize,
}

impl<T: Real> Product<'_, T> {
    fn width(&self, leg: Leg) -> usize {
        match leg {
            Leg::Form { width, .. } => width,
            Leg::Input { side, .. } => self.sides[side].width,
        }
    }

    fn mean(&self, leg: Leg) -> nalgebra::DVectorView<'_, T> {
        match leg {
            Leg::Form {
                side,
                head,
                row,
                width,
                pos,
            } => {
                let me = self.sides[side];
                me.means[pos * me.heads + head].rows(row, width)
            }
            Leg::Input { side, pos } => {
                let m = &self.sides[side].input_means[pos];
                m.rows(0, m.len())
            }
        }
    }

    /// `C(a, b)` as a block of its table, `None` when it is zero; with
    /// `transposed`, the block holds `C(b, a)` (the tables keep one order).
    fn block(&self, a: Leg, b: Leg) -> Option<(Block<'_, T>, bool)> {
        let side = |l: Leg| match l {
            Leg::Form { side, .. } | Leg::Input { side, .. } => side,
        };
        if side(a) == 1 && side(b) == 0 {
            return self.block(b, a).map(|(v, t)| (v, !t));
        }
        let t = match (side(a), side(b)) {
            (0, 1) => self.xy,
            (s, _) => self.own[s].unwrap_or(self.xy),
        };
        Self::lookup(t, self.n, a, b)
    }

    /// `C(a, b)` from table `t`, `a` on its rows' side and `b` on its
    /// columns', as [`Self::block`] answers.
    fn lookup(t: &Tables<T>, n: usize, a: Leg, b: Leg) -> Option<(Block<'_, T>, bool)> {
        let pos = |l: Leg| match l {
            Leg::Form { pos, .. } | Leg::Input { pos, .. } => pos,
        };
        let (pa, pb) = (pos(a), pos(b));
        if t.zero[pa * n + pb] {
            return None;
        }
        if t.mirrored && pa > pb {
            // One model with itself: (q, p) holds the transpose.
            return Self::lookup(t, n, b, a).map(|(v, tr)| (v, !tr));
        }
        let item = t.item(pa, pb);
        let l = t.layout;
        let ([_, hy], [lx, _], [dx, dy]) = (l.heads, l.legs, l.widths);
        Some((
            match (a, b) {
                (
                    Leg::Form {
                        head: ha,
                        row: ra,
                        width: wa,
                        ..
                    },
                    Leg::Form {
                        head: hb,
                        row: rb,
                        width: wb,
                        ..
                    },
                ) => {
                    let k = if l.own_heads {
                        debug_assert_eq!(ha, hb, "one configuration's legs share its head");
                        ha
                    } else {
                        ha * hy + hb
                    };
                    Block::new(&item[l.form(k)..], lx, (ra, rb), (wa, wb))
                }
                (
                    Leg::Input { .. },
                    Leg::Form {
                        head, row, width, ..
                    },
                ) => Block::new(&item[l.input_form(head)..], dx, (0, row), (dx, width)),
                (
                    Leg::Form {
                        head, row, width, ..
                    },
                    Leg::Input { .. },
                ) => Block::new(&item[l.form_input(head)..], lx, (row, 0), (width, dy)),
                (Leg::Input { .. }, Leg::Input { .. }) => {
                    unreachable!("the sums never pair two inputs")
                }
            },
            false,
        ))
    }

    /// Copies `C(a, b)` into `dst` at `(r0, c0)`, or zeros there; whether
    /// it is nonzero. Columns are copied as slices (a `memcpy` each), a
    /// transposed block column by column into rows.
    #[inline(always)]
    fn fill_or_zero(&self, a: Leg, b: Leg, dst: &mut DMatrix<T>, (r0, c0): (usize, usize)) -> bool {
        let ld = dst.nrows();
        let d = dst.as_mut_slice();
        match self.block(a, b) {
            Some((blk, transposed)) => {
                let (ls, src) = (blk.ld, blk.data);
                if transposed {
                    // Column c of the block is row c of C(a, b).
                    crate::linalg::transpose_block(
                        src,
                        ls,
                        (blk.row, blk.col),
                        (blk.rows, blk.cols),
                        d,
                        ld,
                        (r0, c0),
                    );
                } else {
                    for c in 0..blk.cols {
                        let from = &src[(blk.col + c) * ls + blk.row..][..blk.rows];
                        d[(c0 + c) * ld + r0..][..blk.rows].copy_from_slice(from);
                    }
                }
                true
            }
            None => {
                let (rows, cols) = (self.width(a), self.width(b));
                for c in 0..cols {
                    d[(c0 + c) * ld + r0..][..rows].fill(T::zero());
                }
                false
            }
        }
    }

    /// `tr C(a, b)`.
    fn trace(&self, a: Leg, b: Leg) -> T {
        self.block(a, b).map_or(T::zero(), |(blk, _)| {
            (0..blk.rows.min(blk.cols)).fold(T::zero(), |acc, i| {
                acc + blk.data[(blk.col + i) * blk.ld + blk.row + i]
            })
        })
    }

    /// The blocks `C(x, y)` of `parts` (`(x, y, (r0, c0))`) into `slot`'s
    /// storage at `rows × cols`, zeros where one is zero (the parts cover
    /// it): bit `i` of the answer says part `i` is nonzero, and the slot is
    /// unset when none is.
    #[inline(always)]
    fn fill_parts(
        &self,
        slot: &mut Slot<T>,
        (rows, cols): (usize, usize),
        parts: &[(Leg, Leg, (usize, usize))],
    ) -> u8 {
        let m = slot.reuse(rows, cols);
        let mut nonzero = 0;
        for (i, &(x, y, at)) in parts.iter().enumerate() {
            if self.fill_or_zero(x, y, m, at) {
                nonzero |= 1 << i;
            }
        }
        if nonzero == 0 {
            slot.clear();
        }
        nonzero
    }

    /// The chain inputs for these nodes and ends, refilled in `inp`'s
    /// storage (every entry written); the copies compiled for AVX2 where
    /// the CPU has it (see [`super::lanes::avx2`]). The first `kept` nodes
    /// and the first end are those `inp` holds from the last call, with the
    /// same nodes and ends after them: what only they read is kept (one
    /// configuration of `X` against every one of `Y`).
    fn inputs(&self, nodes: &[(Leg, Leg)], ends: &[Leg], inp: &mut Inputs<T>, kept: usize) {
        #[cfg(target_arch = "x86_64")]
        if super::lanes::avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2`.
            unsafe { self.inputs_avx2(nodes, ends, inp, kept) };
            return;
        }
        self.inputs_body(nodes, ends, inp, kept);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn inputs_avx2(&self, nodes: &[(Leg, Leg)], ends: &[Leg], inp: &mut Inputs<T>, kept: usize) {
        self.inputs_body(nodes, ends, inp, kept);
    }

    #[inline(always)]
    fn inputs_body(&self, nodes: &[(Leg, Leg)], ends: &[Leg], inp: &mut Inputs<T>, kept: usize) {
        let k = nodes.len();
        inp.transfer.resize_with(k * k, Slot::default);
        inp.blocks.resize(k * k, 0);
        for (a, &(qa, ka)) in nodes.iter().enumerate() {
            for (b, &(qb, kb)) in nodes.iter().enumerate() {
                if a < kept && b < kept {
                    continue;
                }
                let slot = &mut inp.transfer[a * k + b];
                if a == b {
                    slot.clear();
                    continue;
                }
                // Part 2r + c is block (r, c): rows (k_a, q_a), columns
                // (q_b, k_b), as `Inputs::blocks` numbers them.
                let (ea, eb) = (self.width(qa), self.width(qb));
                inp.blocks[a * k + b] = self.fill_parts(
                    slot,
                    (2 * ea, 2 * eb),
                    &[
                        (ka, qb, (0, 0)),
                        (ka, kb, (0, eb)),
                        (qa, qb, (ea, 0)),
                        (qa, kb, (ea, eb)),
                    ],
                );
            }
        }
        let stack = |x: nalgebra::DVectorView<'_, T>,
                     y: nalgebra::DVectorView<'_, T>,
                     v: &mut DVector<T>| {
            let v = chain::resized(v, x.len() + y.len());
            v.rows_mut(0, x.len()).copy_from(&x);
            v.rows_mut(x.len(), y.len()).copy_from(&y);
        };
        inp.start.resize_with(k, || DVector::zeros(0));
        inp.stop.resize_with(k, || DVector::zeros(0));
        inp.single.resize(k, T::zero());
        for (i, &(q, kk)) in nodes.iter().enumerate().skip(kept) {
            stack(self.mean(q), self.mean(kk), &mut inp.start[i]);
            stack(self.mean(kk), self.mean(q), &mut inp.stop[i]);
            inp.single[i] = self.mean(q).dot(&self.mean(kk)) + self.trace(q, kk);
        }
        inp.ends.resize_with(ends.len(), End::default);
        for (i, (end, &e)) in inp.ends.iter_mut().zip(ends).enumerate() {
            // The first end with the kept nodes: kept too.
            let skip = if i == 0 { kept } else { 0 };
            if skip == 0 {
                let m = self.mean(e);
                chain::resized(&mut end.mean, m.len()).copy_from(&m);
            }
            end.to_node.resize_with(k, Slot::default);
            let we = self.width(e);
            for (slot, &(q, kk)) in end.to_node.iter_mut().zip(nodes).skip(skip) {
                // [C(e, q) C(e, k)].
                let wq = self.width(q);
                let parts = [(e, q, (0, 0)), (e, kk, (0, wq))];
                self.fill_parts(slot, (we, wq + self.width(kk)), &parts);
            }
        }
        if let [ea, eb] = *ends {
            let between = inp.between.get_or_insert_with(Between::default);
            let direct = chain::reshaped(&mut between.direct, self.width(ea), self.width(eb));
            self.fill_or_zero(ea, eb, direct, (0, 0));
            between.from_node.resize_with(k, Slot::default);
            let wb = self.width(eb);
            for (slot, &(q, kk)) in between.from_node.iter_mut().zip(nodes) {
                // [C(k, ε_B); C(q, ε_B)].
                let wk = self.width(kk);
                let parts = [(kk, eb, (0, 0)), (q, eb, (wk, 0))];
                self.fill_parts(slot, (wk + self.width(q), wb), &parts);
            }
        } else {
            inp.between = None;
        }
    }

    /// Whether every leg at positions `px` of `X` is independent of every
    /// leg at positions `py` of `Y`.
    fn independent(&self, px: [usize; 2], py: [usize; 2]) -> bool {
        px.iter()
            .all(|&p| py.iter().all(|&q| self.xy.zero[p * self.n + q]))
    }

    /// Adds to each task the pairs of its configurations whose key is in
    /// `keys` with every configuration of `Y` (a self product: with those
    /// after it), and, when `Y` has a skip in a cross product, its
    /// configurations' covariances with `Y`'s input. One task per run
    /// `(h, s)`, in parallel; each sums its configurations in order, so
    /// that neither the thread count nor the tiles change a bit.
    fn pair_sums(
        &self,
        tasks: &mut [Task<T>],
        keys: core::ops::Range<usize>,
        means: [&Means<T>; 2],
        sym: bool,
    ) {
        let [x, y] = self.sides;
        let hy = y.heads * y.ev;
        tasks.par_iter_mut().with_max_len(1).for_each_init(
            || {
                let inp = (Inputs::default(), Inputs::default());
                (inp, Workspace::default(), None)
            },
            |((inp, skip), ws, held), task| {
                for i in task.configs.clone() {
                    let (h, s, t, wx) = x.configs[i];
                    if !keys.contains(&t) {
                        continue;
                    }
                    let (nodes_x, v_x) = x.legs(0, (h, s, t));
                    let first = if sym { i } else { 0 };
                    for j in first..y.configs.len() {
                        let (h2, s2, t2, wy) = y.configs[j];
                        if self.independent([s, t], [s2, t2]) {
                            continue;
                        }
                        let (nodes_y, v_y) = y.legs(1, (h2, s2, t2));
                        let nodes = [nodes_x[0], nodes_x[1], nodes_y[0], nodes_y[1]];
                        // `inp` holds X's configuration `held` from the last pair.
                        let kept = if *held == Some(i) { 2 } else { 0 };
                        self.inputs(&nodes, &[v_x, v_y], inp, kept);
                        *held = Some(i);
                        let mut blk = if sym && j == i {
                            task.diagonal.columns_mut(h2 * y.ev, y.ev)
                        } else {
                            task.strict.columns_mut(s2 * hy + h2 * y.ev, y.ev)
                        };
                        chain::moment_into(inp, ws, wx * wy, &mut blk);
                        let (mx, my) = (&means[0].per_config[i], &means[1].per_config[j]);
                        blk.ger(-T::one(), mx, my, T::one());
                    }
                    // Cov(X_Y[s'], z_X,h[s]) for every s' (the moments; the
                    // means' product is taken when the task is done).
                    for s2 in 0..task.skip.ncols() / x.ev {
                        let input = Leg::Input { side: 1, pos: s2 };
                        self.inputs(&nodes_x, &[input, v_x], skip, 0);
                        let mut blk = task.skip.columns_mut(s2 * x.ev, x.ev);
                        chain::moment_into(skip, ws, wx, &mut blk);
                    }
                }
            },
        );
    }

    /// `Cov(X_X[s], z_Y,h'[s'])` (less the means' product) for every `s'`,
    /// side by side (`d_X × n e_v'`): `X`'s skip with the values of `Y`'s
    /// head `h'`, its configurations summed in order.
    fn input_with_values(&self, s: usize, h2: usize) -> DMatrix<T> {
        let [x, y] = self.sides;
        let mut row = DMatrix::<T>::zeros(x.width, self.n * y.ev);
        let (mut inp, mut ws) = (Inputs::default(), Workspace::default());
        for &(h, s2, t, w) in y.configs.iter().filter(|c| c.0 == h2) {
            let (nodes, v) = y.legs(1, (h, s2, t));
            self.inputs(&nodes, &[Leg::Input { side: 0, pos: s }, v], &mut inp, 0);
            let mut blk = row.columns_mut(s2 * y.ev, y.ev);
            chain::moment_into(&inp, &mut ws, w, &mut blk);
        }
        row
    }
}

/// One run of `X`'s configurations, a head and query position `(h, s)`
/// with its keys in order, and what it sums.
struct Task<T: Real> {
    h: usize,
    s: usize,
    configs: core::ops::Range<usize>,
    /// Rows `h` of `Z(s, s')` for every `s'`, side by side (`e_v × n H' e_v'`);
    /// in a self product the pairs `j > i` only.
    strict: DMatrix<T>,
    /// A self product's pairs `j = i`: rows `h` of `Z(s, s)`.
    diagonal: DMatrix<T>,
    /// `Cov(X_Y[s'], z_X,h[s])` for every `s'`, side by side (`d_Y × n e_v`),
    /// when `Y` has a skip in a cross product; empty otherwise.
    skip: DMatrix<T>,
}

/// The runs of a side's configurations that share a head and a query
/// position, in order.
fn runs<T: Real>(side: &Side<'_, T>) -> Vec<core::ops::Range<usize>> {
    let mut runs: Vec<core::ops::Range<usize>> = Vec::new();
    for (i, c) in side.configs.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if (side.configs[r.start].0, side.configs[r.start].1) == (c.0, c.1) => {
                r.end = i + 1
            }
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// The blocks of one product's output covariance that [`output_covariance`]
/// sums, per pair of query positions at `s·n + s'` (empty where not held).
struct Sums<T: Real> {
    /// `Σ Cov(z_X[s], z_Y[s'])` (`H e_v × H' e_v'`).
    zz: Vec<DMatrix<T>>,
    /// `Cov(X_X[s], z_Y[s'])` when `X` has a skip.
    xz: Vec<DMatrix<T>>,
    /// `Cov(X_Y[s], z_X[s'])` when `Y` has a skip in a cross product (a
    /// self product reads `xz`).
    yx: Vec<DMatrix<T>>,
}

/// `Cov(Y_X[s], Y_Y[s'])` for all `s, s'`, flattened and padded (row and
/// column 0 zero), given each side's means, with `X`'s rows of `xy` held
/// for `tile` query positions at a time (all `n`: `xy` is whole).
///
/// The sums `Σ Cov(z, z')` over configuration pairs, per query pair
/// `(s, s')`, are zero, and skipped, for pairs whose legs are independent
/// (positions that no earlier block mixed, as in a first attention layer).
/// One task per head and query position `(h, s)` of `X` (a contiguous run
/// of its configurations) owns rows `h` of every `Z(s, ·)` and sums its
/// pairs in order, so that the result depends neither on the thread count
/// nor on the tiles, and nothing grows as the `n⁴` pairs. A tile holds
/// `X`'s rows of its query positions; the keys outside it are made one at
/// a time, and every task of the tile sums that key's configurations.
///
/// A self product (`sym`) takes each unordered pair once: the pairs
/// `j > i` go to `strict`, the pairs `j = i` to `diagonal`, and
/// `Z(a, b) = strict(a, b) + strict(b, a)ᵀ + diagonal(a, b)`. Its blocks
/// `(s, ·)` are complete only when every tile is done; a cross product's
/// when the tile of `s` is, and they are folded into the output and
/// dropped there.
fn output_covariance<T: Real>(
    sides: [&Side<'_, T>; 2],
    own: [Option<&Tables<T>>; 2],
    xy: &mut Tables<T>,
    means: [&Means<T>; 2],
    cov_xy: &DMatrix<T>,
    sym: bool,
    tile: usize,
) -> DMatrix<T> {
    let n = xy.rows.len();
    let [x, y] = sides;
    let whole = tile >= n;
    let (rx, ry) = (x.block.skip() != 0.0, y.block.skip() != 0.0);
    let (hx, hy) = (x.heads * x.ev, y.heads * y.ev);
    let empty = || DMatrix::<T>::zeros(0, 0);
    let mut sums = Sums {
        zz: (0..n * n).map(|_| empty()).collect(),
        xz: (0..n * n).map(|_| empty()).collect(),
        yx: (0..n * n).map(|_| empty()).collect(),
    };
    // The output, made when the first blocks are folded into it.
    let out = (
        n * x.block.output_width() + 1,
        n * y.block.output_width() + 1,
    );
    let mut cov: Option<DMatrix<T>> = None;
    let runs = runs(x);
    let tile = tile.clamp(1, n);
    for start in (0..n).step_by(tile) {
        let queries = start..(start + tile).min(n);
        if !whole {
            xy.make_rows(x, y, cov_xy, queries.clone(), true);
        }
        let mut tasks: Vec<Task<T>> = runs
            .iter()
            .filter(|r| queries.contains(&x.configs[r.start].1))
            .map(|r| Task {
                h: x.configs[r.start].0,
                s: x.configs[r.start].1,
                configs: r.clone(),
                strict: DMatrix::zeros(x.ev, n * hy),
                diagonal: DMatrix::zeros(x.ev, if sym { hy } else { 0 }),
                skip: DMatrix::zeros(y.width, if ry && !sym { n * x.ev } else { 0 }),
            })
            .collect();
        // The key positions any query of the tile reads, in ascending order:
        // runs inside the tile use its rows; each key outside is made alone.
        let keys: Vec<usize> = (0..n)
            .filter(|&t| {
                tasks
                    .iter()
                    .any(|k| k.configs.clone().any(|i| x.configs[i].2 == t))
            })
            .collect();
        for (run, outside) in key_runs(&keys, &queries) {
            if outside {
                xy.make_rows(x, y, cov_xy, run.clone(), true);
            }
            let product = Product { sides, own, xy, n };
            product.pair_sums(&mut tasks, run.clone(), means, sym);
            if outside {
                xy.release(run);
            }
        }
        // The tasks' sums into Z and Y's skip blocks, each block made when
        // first reached (a self product's mirrored half reaches the rows of
        // other tiles), and the tasks dropped before X's skip blocks are
        // made: no more of the sums is held at once than the fold holds.
        for task in &tasks {
            for s2 in 0..n {
                let z = held(&mut sums.zz[task.s * n + s2], (hx, hy));
                let mut blk = z.rows_mut(task.h * x.ev, x.ev);
                blk += task.strict.columns(s2 * hy, hy);
            }
            if sym {
                let z = held(&mut sums.zz[task.s * n + task.s], (hx, hy));
                let mut blk = z.rows_mut(task.h * x.ev, x.ev);
                blk += &task.diagonal;
            }
            for s2 in 0..task.skip.ncols() / x.ev {
                let b = held(&mut sums.yx[s2 * n + task.s], (y.width, hx));
                let mut blk = b.columns_mut(task.h * x.ev, x.ev);
                blk.copy_from(&task.skip.columns(s2 * x.ev, x.ev));
            }
        }
        if sym {
            // strict(b, a)ᵀ: each task's rows h of Z(s, s'), transposed,
            // into the columns h of the mirrored blocks Z(s', s).
            for task in &tasks {
                for s2 in 0..n {
                    let z = held(&mut sums.zz[s2 * n + task.s], (hx, hy));
                    let mut blk = z.columns_mut(task.h * x.ev, x.ev);
                    blk += task.strict.columns(s2 * hy, hy).transpose();
                }
            }
        } else if ry {
            for s in queries.clone() {
                for s2 in 0..n {
                    let (m, ez) = (&y.input_means[s2], &means[0].per_position[s]);
                    let b = held(&mut sums.yx[s2 * n + s], (y.width, hx));
                    b.ger(-T::one(), m, ez, T::one());
                }
            }
        }
        drop(tasks);
        if rx {
            // X's skip with Y's values, one task per query and head of Y.
            let product = Product { sides, own, xy, n };
            let items: Vec<(usize, usize)> = queries
                .clone()
                .flat_map(|s| (0..y.heads).map(move |h2| (s, h2)))
                .collect();
            let rows: Vec<DMatrix<T>> = items
                .par_iter()
                .with_max_len(1)
                .map(|&(s, h2)| product.input_with_values(s, h2))
                .collect();
            for (&(s, h2), row) in items.iter().zip(&rows) {
                for s2 in 0..n {
                    let b = held(&mut sums.xz[s * n + s2], (x.width, hy));
                    let mut blk = b.columns_mut(h2 * y.ev, y.ev);
                    blk.copy_from(&row.columns(s2 * y.ev, y.ev));
                }
            }
            drop(rows);
            for s in queries.clone() {
                for s2 in 0..n {
                    let (m, ez) = (&x.input_means[s], &means[1].per_position[s2]);
                    sums.xz[s * n + s2].ger(-T::one(), m, ez, T::one());
                }
            }
        }
        if !whole {
            xy.release(queries.clone());
        }
        if !sym {
            let cov = cov.get_or_insert_with(|| DMatrix::zeros(out.0, out.1));
            fold(sides, &mut sums, cov_xy, sym, queries, cov);
        }
    }
    let mut cov = cov.unwrap_or_else(|| DMatrix::zeros(out.0, out.1));
    if sym {
        for start in (0..n).step_by(tile) {
            let queries = start..(start + tile).min(n);
            fold(sides, &mut sums, cov_xy, sym, queries, &mut cov);
        }
    }
    cov
}

/// `m`, made `rows × cols` of zeros if it is not yet (empty).
fn held<T: Real>(m: &mut DMatrix<T>, (rows, cols): (usize, usize)) -> &mut DMatrix<T> {
    if m.is_empty() {
        *m = DMatrix::zeros(rows, cols);
    }
    m
}

/// The output blocks `(s, s')` of the query positions `queries` into `cov`:
/// `α_X α_Y O_X Z O_Yᵀ` and the skips' terms, each block by its own task
/// and copied in after (the same products in the same order on any number
/// of threads); the sums of those rows are dropped.
fn fold<T: Real>(
    [x, y]: [&Side<'_, T>; 2],
    sums: &mut Sums<T>,
    cov_xy: &DMatrix<T>,
    sym: bool,
    queries: core::ops::Range<usize>,
    cov: &mut DMatrix<T>,
) {
    let n = x.input_means.len();
    let (rx, ry) = (x.block.skip(), y.block.skip());
    let (ox, oy) = (x.block.weight(Role::O), y.block.weight(Role::O));
    let (ax, ay): (T, T) = (from_f64(x.block.scale()), from_f64(y.block.scale()));
    let kx4 = x.constant * x.constant * x.constant * x.constant;
    let ky4 = y.constant * y.constant * y.constant * y.constant;
    let (rx, ry): (T, T) = (from_f64(rx), from_f64(ry));
    let (outx, outy) = (ox.nrows(), oy.nrows());
    let at: Vec<usize> = queries
        .clone()
        .flat_map(|s| (0..n).map(move |s2| s * n + s2))
        .collect();
    // A query with no configuration (a row of the mask all zero) has no
    // task: its blocks of Z are zero.
    for &at in &at {
        held(&mut sums.zz[at], (x.heads * x.ev, y.heads * y.ev));
    }
    // Cov(z_X[s], X_Y[s']) = Cov(X_Y[s'], z_X[s])ᵀ, at s'·n + s.
    let yx = if sym { &sums.xz } else { &sums.yx };
    let blocks: Vec<DMatrix<T>> = at
        .par_iter()
        .with_max_len(1)
        .map(|&at| {
            let (s, s2) = (at / n, at % n);
            let mut blk = DMatrix::zeros(outx, outy);
            let oz = mul(ox, &sums.zz[at]);
            gemm_nt(ax * ay, &oz, oy, T::zero(), &mut blk);
            if rx != T::zero() {
                gemm_nt(rx * kx4 * ay, &sums.xz[at], oy, T::one(), &mut blk);
            }
            if ry != T::zero() {
                let zx = yx[s2 * n + s].transpose();
                gemm(ax * ry * ky4, ox, &zx, T::one(), &mut blk);
            }
            if rx != T::zero() && ry != T::zero() {
                let c = cov_xy.view((1 + s * x.width, 1 + s2 * y.width), (x.width, y.width));
                blk.zip_apply(&c, |o, c| *o += rx * ry * kx4 * ky4 * c);
            }
            blk
        })
        .collect();
    for (&at, blk) in at.iter().zip(&blocks) {
        let (s, s2) = (at / n, at % n);
        cov.view_mut((1 + s * outx, 1 + s2 * outy), (outx, outy))
            .copy_from(blk);
    }
    if !sym {
        // A cross product's blocks of these rows are done.
        for &at in &at {
            let (s, s2) = (at / n, at % n);
            sums.zz[at] = DMatrix::zeros(0, 0);
            sums.xz[at] = DMatrix::zeros(0, 0);
            sums.yx[s2 * n + s] = DMatrix::zeros(0, 0);
        }
    }
}

/// The means of one side's attention output.
struct Means<T: Real> {
    /// `E[z[s]]` per query position (`H e_v`).
    per_position: Vec<DVector<T>>,
    /// `(W[s,t]/c) E[z_h(s,t)]` per configuration, in the order of `configs`.
    per_config: Vec<DVector<T>>,
}

/// The means of `z`: the five-leg Wick sums of each configuration,
/// weighted, and their sums per query position.
fn mean_scores<T: Real>(product: &Product<'_, T>, side: usize) -> Means<T> {
    let me = product.sides[side];
    let n = product.n;
    let per_config: Vec<DVector<T>> = me
        .configs
        .par_iter()
        .map_init(
            || (Inputs::default(), Workspace::default()),
            |(inp, ws), &(h, s, t, w)| {
                let (nodes, v) = me.legs(side, (h, s, t));
                product.inputs(&nodes, &[v], inp, 0);
                let mut m = DMatrix::zeros(me.ev, 1);
                chain::moment_into(inp, ws, w, &mut m.columns_mut(0, 1));
                DVector::from_column_slice(m.as_slice())
            },
        )
        .collect();
    let mut per_position = vec![DVector::zeros(me.heads * me.ev); n];
    for (&(h, s, _, _), m) in me.configs.iter().zip(&per_config) {
        let mut blk = per_position[s].rows_mut(h * me.ev, me.ev);
        blk += m;
    }
    Means {
        per_position,
        per_config,
    }
}

/// `m'[s] = r κ⁴ m̂[s] + α (O E[z[s]] + κ⁵ b_o)`, padded with `κ⁵`.
fn output_mean<T: Real>(side: &Side<'_, T>, ez: &[DVector<T>]) -> DVector<T> {
    let b = side.block;
    let o = b.weight(Role::O);
    let out = o.nrows();
    let k = side.constant;
    let k4 = k * k * k * k;
    let (alpha, r): (T, T) = (from_f64(b.scale()), from_f64(b.skip()));
    let mut mean = DVector::zeros(ez.len() * out + 1);
    mean[0] = k4 * k;
    for (s, z) in ez.iter().enumerate() {
        let mut m = o * z * alpha;
        if let Some(bo) = b.bias(Role::O) {
            m.axpy(alpha * k4 * k, bo, T::one());
        }
        if r != T::zero() {
            m.axpy(r * k4, &side.input_means[s], T::one());
        }
        mean.rows_mut(1 + s * out, out).copy_from(&m);
    }
    mean
}

/// The joint output moments of attention blocks `a`, `b` (`None`: the self
/// product of `a`, and only its side is computed) on the joint moments of
/// the stream, in the input's scale.
pub(super) fn step<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    state: &JointMoments<T>,
) -> Result<JointMoments<T>> {
    let tile = query_tile(a, b.unwrap_or(a), state.context());
    step_in_tiles(a, b, state, tile)
}

/// [`step`] with the covariance tables' rows of `query_tile` query positions
/// held at once (`n`: whole); the tile size changes no bit of the result.
pub(super) fn step_in_tiles<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    state: &JointMoments<T>,
    query_tile: usize,
) -> Result<JointMoments<T>> {
    let n = state.context();
    let state = state.joint();
    let tile = query_tile.clamp(1, n.max(1));
    // The storage of each product's tables, reused by the next.
    let mut spare = Vec::new();
    let sa = Side::new(a, state.a(), n)?;
    let (own_a, ez_a, cov_a) = self_product(&sa, &state.a().cov, n, tile, &mut spare);
    let side_a = Moments::new(output_mean(&sa, &ez_a.per_position), cov_a, n)?;
    let Some(b) = b else {
        return Ok(JointMoments::same(side_a));
    };
    // One model's tables at a time: each self product's, then the cross
    // product's beside the heads' own pairs of both (all it reads of them).
    let sb = Side::new(b, state.b(), n)?;
    let (own_b, ez_b, cov_b) = self_product(&sb, &state.b().cov, n, tile, &mut spare);
    let mut ab = if tile >= n {
        Tables::whole(&sa, &sb, state.cross(), n, (false, false), spare)
    } else {
        Tables::unheld(&sa, &sb, state.cross(), n, (false, false), spare)
    };
    let cross = output_covariance(
        [&sa, &sb],
        [Some(&own_a), Some(&own_b)],
        &mut ab,
        [&ez_a, &ez_b],
        state.cross(),
        false,
        tile,
    );
    JointMoments::new(
        side_a,
        Moments::new(output_mean(&sb, &ez_b.per_position), cov_b, n)?,
        cross,
    )
}

/// A model with itself on its covariance `cov`: the means of its scores,
/// its output covariance, and its tables of one head with itself (what a
/// cross product reads of them). Whole tables serve both while they fit
/// (`tile ≥ n`); otherwise the heads' own pairs are made whole first, and
/// the rest by rows. The storage of the tables it drops goes to `spare`,
/// whose storage it reuses.
fn self_product<T: Real>(
    side: &Side<'_, T>,
    cov: &DMatrix<T>,
    n: usize,
    tile: usize,
    spare: &mut Vec<Vec<T>>,
) -> (Tables<T>, Means<T>, DMatrix<T>) {
    let reuse = std::mem::take(spare);
    let (mut xy, own) = if tile >= n {
        (
            Tables::whole(side, side, cov, n, (true, false), reuse),
            None,
        )
    } else {
        let own = Tables::whole(side, side, cov, n, (true, true), Vec::new());
        (
            Tables::unheld(side, side, cov, n, (true, false), reuse),
            Some(own),
        )
    };
    let own_tables = [own.as_ref(), own.as_ref()];
    let means = mean_scores(
        &Product {
            sides: [side, side],
            own: own_tables,
            xy: &xy,
            n,
        },
        0,
    );
    let c = output_covariance(
        [side, side],
        own_tables,
        &mut xy,
        [&means, &means],
        cov,
        true,
        tile,
    );
    let own = match own {
        Some(own) => {
            spare.extend(xy.into_spare());
            own
        }
        None => xy.into_own_heads(spare),
    };
    (own, means, c)
}

/// The shape of one block's configurations: heads, leg rows per head
/// (`4e + e_v`), `e_v`, the input width `d`, the output width.
#[derive(Clone, Copy)]
struct Shape {
    heads: f64,
    legs: f64,
    ev: f64,
    d: f64,
    out: f64,
}

impl Shape {
    fn of<T: Real>(att: &Attention<T>) -> Self {
        Self {
            heads: att.heads() as f64,
            legs: (4 * att.qk_width() + att.value_width()) as f64,
            ev: att.value_width() as f64,
            d: att.input_width() as f64,
            out: att.output_width() as f64,
        }
    }
}

/// The scalars of one item of `x`'s tables with `y` (see [`Layout`]).
fn item_scalars(x: Shape, y: Shape) -> f64 {
    x.heads * y.heads * x.legs * y.legs + y.heads * x.d * y.legs + x.heads * x.legs * y.d
}

/// The scalars of one item of a model's tables of a head with itself.
fn own_item_scalars(x: Shape) -> f64 {
    x.heads * x.legs * x.legs
}

/// The query positions whose rows of the covariance tables [`step`] holds
/// at once: all `n` when the largest product's whole tables fit the
/// attention step's budget (see [`super::step::WHOLE_PRODUCTS_UP_TO`], or
/// the step's moments in and out if larger); else at most as many as fit in
/// it beside the one key row made at a time (at least one), in tiles of
/// equal size: as many tiles, fewer rows held and fewer key rows made again
/// than a full tile and a short last one.
fn query_tile<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize) -> usize {
    let moments = |x: &Attention<T>, y: &Attention<T>| {
        flat_entries(n, x.input_width(), y.input_width())
            + flat_entries(n, x.output_width(), y.output_width())
    };
    let budget = WHOLE_PRODUCTS_UP_TO.max(moments(a, a) + moments(b, b) + moments(a, b));
    let (sx, sy) = (Shape::of(a), Shape::of(b));
    let item = item_scalars(sx, sx)
        .max(item_scalars(sy, sy))
        .max(item_scalars(sx, sy));
    let most = rows_within(budget, n as f64 * item, n);
    if most >= n {
        n
    } else {
        n.div_ceil(n.div_ceil(most))
    }
}

/// An estimate of the scalars of [`step`] beyond its input and output
/// moments on `n` positions: the covariance tables it holds at once (one
/// product's, whole or by rows, beside the heads' own pairs of the self
/// tables made before), the sums and the moments of the largest set of
/// configuration pairs (see [`crate::resources`]).
pub(super) fn scalars<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize) -> f64 {
    tiled_scalars::<T>(a, b, n, query_tile(a, b, n))
}

/// [`scalars`] with `tile` query positions' rows held at once.
fn tiled_scalars<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize, tile: usize) -> f64 {
    let nf = n as f64;
    let (sx, sy) = (Shape::of(a), Shape::of(b));
    let whole = tile >= n;
    let k = tile.min(n) as f64;
    // A model's heads' own pairs: `p ≤ q`, but counted as `n²` items (as
    // before the tables were held by rows): at context 4 of the issue-23
    // models the peak resident size of `compare` is 0.07 GB above the live
    // peak on a counting allocator (0.02 GB when the tables were separate
    // matrices; not explained by the allocator's retention of large blocks,
    // which a fixed mmap threshold does not change), and the count with
    // `n(n+1)/2` came within 1 % of it.
    let own = |x: Shape| nf * nf * own_item_scalars(x);
    // A product's tables: whole (a self product's `p ≤ q`), or the tile's
    // rows and a key row, each of every `q`.
    let tables = |x: Shape, y: Shape, sym: bool| {
        let items = if !whole {
            (k + 1.0) * nf
        } else if sym {
            nf * (nf + 1.0) / 2.0
        } else {
            nf * nf
        };
        items * item_scalars(x, y)
    };
    // What a product sums into: the tasks' rows of Z of the tile's queries
    // and their skip blocks, Z and the skips' blocks (a self product's of
    // every query pair, a cross product's of the tile's), and the output
    // blocks of one tile before they are copied out.
    let sums = |x: Shape, y: Shape, sym: bool| {
        let held = if sym { nf } else { k };
        let z = x.heads * x.ev * y.heads * y.ev;
        let skips = x.d * y.heads * y.ev + if sym { 0.0 } else { y.d * x.heads * x.ev };
        k * nf * (z + y.d * x.heads * x.ev) + held * nf * (z + skips) + k * nf * x.out * y.out
    };
    let phases = [
        tables(sx, sx, true) + sums(sx, sx, true) + if whole { 0.0 } else { own(sx) },
        own(sx) + tables(sy, sy, true) + sums(sy, sy, true) + if whole { 0.0 } else { own(sy) },
        own(sx) + own(sy) + tables(sx, sy, false) + sums(sx, sy, false),
    ];
    let held = phases.into_iter().fold(0.0, f64::max);
    // Beside them all along: each side's leg forms per position and head,
    // and each thread's Wick sum scratch: four nodes' transfers and their
    // products (`2e × 2e`, about 80), and the 64 paths to an end (an input,
    // `d + 1` wide, or a value).
    let (e, d) = (a.qk_width().max(b.qk_width()) as f64, sx.d.max(sy.d));
    let scratch = 80.0 * 4.0 * e * e + 64.0 * 2.0 * e * (d + 1.0).max(sx.ev).max(sy.ev);
    let forms = |x: Shape| nf * x.heads * x.legs * (x.d + 1.0);
    let threads = rayon::current_num_threads() as f64;
    held + forms(sx) + forms(sy) + 2.0 * threads * scratch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(seed: usize, i: usize, j: usize) -> f64 {
        let x = (seed * 7919 + i * 104_729 + j * 1_299_709) % 10_007;
        x as f64 / 10_007.0 - 0.5
    }

    /// The transfers' nonzero-block bits (`Inputs::blocks`, which the sums'
    /// block products trust) against the transfers themselves, for every
    /// pair of configurations of a block whose last position is independent
    /// of the others: each bit `2r + c` set exactly when block `(r, c)` has
    /// a nonzero entry, and an unset transfer when none has.
    #[test]
    fn block_bits_mark_the_nonzero_blocks_of_each_transfer() {
        let (n, d) = (3, 4);
        // Two heads of 2, causal; the skip is not read by the transfers.
        let block = random_block(0, d, 2, (2, 2), crate::Mask::Causal, false, false);
        // Positions 0 and 1 correlated, position 2 independent of both.
        let f = DMatrix::from_fn(n * d, n * d, |i, j| value(7, i, j));
        let mut cov = DMatrix::zeros(n * d + 1, n * d + 1);
        cov.view_mut((1, 1), (n * d, n * d))
            .copy_from(&(&f * f.transpose()));
        for i in 0..2 * d {
            for j in 2 * d..n * d {
                cov[(1 + i, 1 + j)] = 0.0;
                cov[(1 + j, 1 + i)] = 0.0;
            }
        }
        let mut mean = DVector::from_fn(n * d + 1, |i, _| value(8, i, 0));
        mean[0] = 1.0;
        let moments = Moments::new(mean, cov, n).unwrap();
        let side = Side::new(&block, &moments, n).unwrap();
        let t = Tables::whole(&side, &side, &moments.cov, n, (true, false), Vec::new());
        let p = Product {
            sides: [&side, &side],
            own: [None, None],
            xy: &t,
            n,
        };
        let mut inp = Inputs::default();
        let (mut partial, mut unset) = (0, 0);
        for &(h, s, tt, _) in &side.configs {
            let (nodes_x, v_x) = side.legs(0, (h, s, tt));
            for &(h2, s2, t2, _) in &side.configs {
                let (nodes_y, v_y) = side.legs(1, (h2, s2, t2));
                let nodes = [nodes_x[0], nodes_x[1], nodes_y[0], nodes_y[1]];
                p.inputs(&nodes, &[v_x, v_y], &mut inp, 0);
                for a in 0..4 {
                    for b in (0..4).filter(|&b| b != a) {
                        let bits = inp.blocks[a * 4 + b];
                        let Some(m) = inp.transfer[a * 4 + b].get() else {
                            assert_eq!(bits, 0, "an unset transfer has no nonzero block");
                            unset += 1;
                            continue;
                        };
                        let (hr, hc) = (m.nrows() / 2, m.ncols() / 2);
                        for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let nonzero =
                                m.view((r * hr, c * hc), (hr, hc)).iter().any(|v| *v != 0.0);
                            assert_eq!(bits >> (2 * r + c) & 1 == 1, nonzero, "block ({r}, {c})");
                        }
                        partial += usize::from(bits.count_ones() < 4);
                    }
                }
            }
        }
        // The fixture has transfers of every kind.
        assert!(partial > 0 && unset > 0, "{partial} partial, {unset} unset");
    }

    /// A block of `heads` heads over a stream of `d`, with `e`, `e_v`, the
    /// mask, rotary and q/k/v/o biases as asked.
    #[allow(clippy::too_many_arguments)]
    fn random_block(
        seed: usize,
        d: usize,
        heads: usize,
        (e, ev): (usize, usize),
        mask: crate::Mask,
        rotary: bool,
        biases: bool,
    ) -> Attention<f64> {
        let w = |k: usize, r: usize, c: usize| DMatrix::from_fn(r, c, |i, j| value(seed + k, i, j));
        let mut b = Attention::builder(
            heads,
            w(1, heads * e, d),
            w(2, heads * e, d),
            w(3, heads * e, d),
            w(4, heads * e, d),
            w(5, heads * ev, d),
            w(6, d, heads * ev),
        )
        .mask(mask)
        .skip(if seed.is_multiple_of(2) { 1.0 } else { 0.6 });
        if rotary {
            b = b.rotary(50.0);
        }
        if biases {
            let v = |k: usize, len: usize| DVector::from_fn(len, |i, _| value(seed + k, i, 3));
            b = b
                .q1_bias(v(20, heads * e))
                .k2_bias(v(23, heads * e))
                .v_bias(v(24, heads * ev))
                .o_bias(v(25, d));
        }
        b.build().unwrap()
    }

    /// Joint moments of two streams of widths `da`, `db` on `n` positions,
    /// from a random factor: every position correlated with every other,
    /// or (`split`) the last independent of the rest, in both streams.
    fn joint(seed: usize, n: usize, (da, db): (usize, usize), split: bool) -> JointMoments<f64> {
        let (na, nb) = (n * da, n * db);
        let f = DMatrix::from_fn(na + nb, na + nb, |i, j| value(seed, i, j));
        let mut c = &f * f.transpose();
        let pos = |i: usize| if i < na { i / da } else { (i - na) / db };
        for i in 0..na + nb {
            for j in 0..na + nb {
                if split && (pos(i) == n - 1) != (pos(j) == n - 1) {
                    c[(i, j)] = 0.0;
                }
            }
        }
        let padded = |r: usize, c0: usize, rows: usize, cols: usize| {
            let mut m = DMatrix::zeros(rows + 1, cols + 1);
            m.view_mut((1, 1), (rows, cols))
                .copy_from(&c.view((r, c0), (rows, cols)));
            m
        };
        let mean = |len: usize, k: usize| {
            let mut m = DVector::from_fn(len + 1, |i, _| value(seed + k, i, 1));
            m[0] = 1.0;
            m
        };
        JointMoments::new(
            Moments::new(mean(na, 1), padded(0, 0, na, na), n).unwrap(),
            Moments::new(mean(nb, 2), padded(na, na, nb, nb), n).unwrap(),
            padded(0, na, na, nb),
        )
        .unwrap()
    }

    /// The step with its tables by rows of a few query positions (sizes
    /// that do not divide `n`) against the tables held whole: the same
    /// bits, cross and self products, every mask, rotary on and off,
    /// biases, different heads and widths, correlated and independent
    /// positions; and on one thread.
    #[test]
    fn tiles_change_no_bit() {
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for n in 1..=6 {
            let weights = DMatrix::from_fn(n, n, |i, j| {
                let v = value(n, i, j);
                if v > 0.2 { 0.0 } else { v + 1.0 }
            });
            let masks = [
                crate::Mask::Causal,
                crate::Mask::None,
                crate::Mask::Diagonal,
                crate::Mask::Matrix(weights),
            ];
            for (k, mask) in masks.into_iter().enumerate() {
                let seed = 10 * n + k;
                let (rotary, biases) = (seed % 2 == 0, seed % 3 != 0);
                let a = random_block(seed, 3, 2, (2, 1 + k % 2), mask.clone(), rotary, biases);
                let b = random_block(seed + 1, 2, 1 + n % 3, (2, 2), mask, !rotary, !biases);
                let state = joint(seed, n, (3, 2), k % 2 == 1);
                let whole = step_in_tiles(&a, Some(&b), &state, n).unwrap();
                let own = JointMoments::same(state.a().clone());
                let whole_self = step_in_tiles(&a, None, &own, n).unwrap();
                for tile in [1, 2, 4].into_iter().filter(|&t| t < n) {
                    let tiled = step_in_tiles(&a, Some(&b), &state, tile).unwrap();
                    assert_eq!(tiled, whole, "n = {n}, mask {k}, tiles of {tile}");
                    let tiled = step_in_tiles(&a, None, &own, tile).unwrap();
                    assert_eq!(
                        tiled, whole_self,
                        "self, n = {n}, mask {k}, tiles of {tile}"
                    );
                }
                let serial = one_thread.install(|| step_in_tiles(&a, Some(&b), &state, 2));
                assert_eq!(serial.unwrap(), whole, "n = {n}, mask {k}, one thread");
            }
        }
    }

    /// The tables are held whole while they fit the budget, and otherwise
    /// by rows of equal tiles whose rows (and a key row) fit it, at the
    /// issue's language-model shapes (`d` 256, 8 heads of 32); the estimate
    /// follows the tiles down.
    #[test]
    fn tiles_follow_the_budget() {
        let (d, heads, e) = (256, 8, 32);
        let lm = random_block(1, d, heads, (e, e), crate::Mask::Causal, true, false);
        for n in 1..=6 {
            assert_eq!(query_tile(&lm, &lm, n), n, "n = {n}: whole");
        }
        assert_eq!(query_tile(&lm, &lm, 8), 4, "two tiles of 4, not 6 and 2");
        assert_eq!(query_tile(&lm, &lm, 16), 2);
        let shape = Shape::of(&lm);
        for n in [8, 16, 32] {
            let tile = query_tile(&lm, &lm, n);
            let row = n as f64 * item_scalars(shape, shape);
            let flat = (n * d + 1) as f64;
            let budget = WHOLE_PRODUCTS_UP_TO.max(6.0 * flat * flat);
            assert!((tile + 1) as f64 * row <= budget, "n = {n}, tile {tile}");
            assert!(n as f64 * row > budget, "n = {n}: whole would not fit");
            let (tiled, whole) = (
                tiled_scalars::<f64>(&lm, &lm, n, tile),
                tiled_scalars::<f64>(&lm, &lm, n, n),
            );
            // Context 8 holds 5 rows of 8 where whole is 8 of 8 (and the
            // heads' own tables beside both); longer, a fraction.
            let fraction = if n < 16 { 0.7 } else { 0.5 };
            assert!(
                tiled < fraction * whole,
                "n = {n}: {tiled:.3e} against {whole:.3e}"
            );
        }
    }
}
