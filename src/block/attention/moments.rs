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
use crate::error::Result;
use crate::gaussian::moments::{JointMoments, Moments};
use crate::linalg::{gemm, gemm_nt, mul, mul_nt};
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

/// The covariance tables of two models `X`, `Y` (or one with itself), per
/// pair of positions `(p, q)` and of heads `(h, h')`: one small contiguous
/// matrix each, so that the sums of one pair of heads read a few hundred
/// kilobytes, not the whole table. Pairs of independent positions hold
/// nothing; a table of one model with itself holds `p ≤ q` only (the rest
/// are the transposes, `Ĉ` being symmetric).
struct Tables<T: Real> {
    /// `F_X,h(p)[:, 1:] Ĉ_XY[p,q] F_Y,h'(q)[:, 1:]ᵀ` at `((p·n + q)·H_X + h)·H_Y + h'`.
    forms: Vec<DMatrix<T>>,
    /// `Ĉ_XY[p,q] F_Y,h'(q)[:, 1:]ᵀ` at `(p·n + q)·H_Y + h'`: `X`'s input with `Y`'s legs.
    input_forms: Vec<DMatrix<T>>,
    /// `F_X,h(p)[:, 1:] Ĉ_XY[p,q]` at `(p·n + q)·H_X + h`: `X`'s legs with `Y`'s input.
    form_inputs: Vec<DMatrix<T>>,
    /// Whether `Ĉ_XY[p,q]` is zero (independent positions), at `p·n + q`.
    zero: Vec<bool>,
    heads: [usize; 2],
    /// A model with itself: the pairs `p > q` are read as `(q, p)` transposed.
    mirrored: bool,
    /// Only the pairs of a head with itself are held, `forms` at
    /// `(p·n + q)·H + h`, and no input tables ([`Tables::into_diagonal`]).
    diagonal: bool,
}

impl<T: Real> Tables<T> {
    /// The tables of `x` and `y` on `cov = Ĉ_XY`; `mirrored` when `y` is `x`
    /// and `cov` its own covariance.
    fn new(x: &Side<'_, T>, y: &Side<'_, T>, cov: &DMatrix<T>, n: usize, mirrored: bool) -> Self {
        let (dx, dy) = (x.width, y.width);
        let (hx, hy) = (x.heads, y.heads);
        type Items<T> = (Vec<DMatrix<T>>, Vec<DMatrix<T>>, Vec<DMatrix<T>>, bool);
        let empty = || DMatrix::zeros(0, 0);
        let items: Vec<Items<T>> = (0..n * n)
            .into_par_iter()
            .with_max_len(1)
            .map(|pq| {
                let (p, q) = (pq / n, pq % n);
                let c = cov.view((1 + p * dx, 1 + q * dy), (dx, dy));
                let zero = c.iter().all(|v| *v == T::zero());
                if zero || (mirrored && p > q) {
                    // Never read: `view` answers zero, or reads (q, p).
                    return (
                        (0..hx * hy).map(|_| empty()).collect(),
                        (0..hy).map(|_| empty()).collect(),
                        (0..hx).map(|_| empty()).collect(),
                        zero,
                    );
                }
                let input_forms: Vec<DMatrix<T>> = (0..hy)
                    .map(|h2| mul_nt(&c, &y.forms[q * hy + h2].columns(1, dy)))
                    .collect();
                let mut forms = Vec::with_capacity(hx * hy);
                let mut form_inputs = Vec::with_capacity(hx);
                for h in 0..hx {
                    let fx = x.forms[p * hx + h].columns(1, dx);
                    for cf in &input_forms {
                        forms.push(mul(&fx, cf));
                    }
                    form_inputs.push(mul(&fx, &c));
                }
                (forms, input_forms, form_inputs, zero)
            })
            .collect();
        let mut t = Self {
            forms: Vec::with_capacity(n * n * hx * hy),
            input_forms: Vec::with_capacity(n * n * hy),
            form_inputs: Vec::with_capacity(n * n * hx),
            zero: Vec::with_capacity(n * n),
            heads: [hx, hy],
            mirrored,
            diagonal: false,
        };
        for (f, i, fi, z) in items {
            t.forms.extend(f);
            t.input_forms.extend(i);
            t.form_inputs.extend(fi);
            t.zero.push(z);
        }
        t
    }

    /// A model's tables with itself kept for what the cross product reads
    /// of them: the covariances of one configuration's own legs, one head
    /// with itself. The rest (`H² − H` of every `H²` head pairs, and the
    /// input tables) is dropped, so that the cross product's own tables
    /// are made beside `1/H` of each side's instead of all of them.
    fn into_diagonal(mut self) -> Self {
        let [h, h2] = self.heads;
        debug_assert!(self.mirrored && h == h2, "a model's tables with itself");
        let pairs = self.zero.len();
        let mut forms = Vec::with_capacity(pairs * h);
        // Head pair (k, k) of each position pair is its entry k (H + 1).
        for (i, m) in std::mem::take(&mut self.forms).into_iter().enumerate() {
            if (i % (h * h)) % (h + 1) == 0 {
                forms.push(m);
            }
        }
        self.forms = forms;
        self.input_forms = Vec::new();
        self.form_inputs = Vec::new();
        self.diagonal = true;
        self
    }
}

/// A block of one table matrix: `rows × cols` from `(row, col)`.
struct Block<'a, T: Real> {
    matrix: &'a DMatrix<T>,
    row: usize,
    col: usize,
    rows: usize,
    cols: usize,
}

impl<'a, T: Real> Block<'a, T> {
    fn new(
        matrix: &'a DMatrix<T>,
        (row, col): (usize, usize),
        (rows, cols): (usize, usize),
    ) -> Self {
        Self {
            matrix,
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
    xx: &'a Tables<T>,
    xy: &'a Tables<T>,
    yy: &'a Tables<T>,
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
            (0, 0) => self.xx,
            (0, 1) => self.xy,
            _ => self.yy,
        };
        Self::lookup(t, self.n, a, b)
    }

    /// `C(a, b)` from table `t`, `a` on its rows' side and `b` on its
    /// columns', as [`Self::block`] answers.
    fn lookup(t: &Tables<T>, n: usize, a: Leg, b: Leg) -> Option<(Block<'_, T>, bool)> {
        let pos = |l: Leg| match l {
            Leg::Form { pos, .. } | Leg::Input { pos, .. } => pos,
        };
        let at = pos(a) * n + pos(b);
        if t.zero[at] {
            return None;
        }
        if t.mirrored && pos(a) > pos(b) {
            // One model with itself: (q, p) holds the transpose.
            return Self::lookup(t, n, b, a).map(|(v, tr)| (v, !tr));
        }
        let [hx, hy] = t.heads;
        let whole = |m: &DMatrix<T>| (m.nrows(), m.ncols());
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
                    let at = if t.diagonal {
                        debug_assert_eq!(ha, hb, "one configuration's legs share its head");
                        at * hx + ha
                    } else {
                        (at * hx + ha) * hy + hb
                    };
                    Block::new(&t.forms[at], (ra, rb), (wa, wb))
                }
                (
                    Leg::Input { .. },
                    Leg::Form {
                        head, row, width, ..
                    },
                ) => {
                    let m = &t.input_forms[at * hy + head];
                    Block::new(m, (0, row), (whole(m).0, width))
                }
                (
                    Leg::Form {
                        head, row, width, ..
                    },
                    Leg::Input { .. },
                ) => {
                    let m = &t.form_inputs[at * hx + head];
                    Block::new(m, (row, 0), (width, whole(m).1))
                }
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
                let ls = blk.matrix.nrows();
                let src = blk.matrix.as_slice();
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
            let v = blk.matrix.view((blk.row, blk.col), (blk.rows, blk.cols));
            (0..v.nrows().min(v.ncols())).fold(T::zero(), |acc, i| acc + v[(i, i)])
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

    /// `Cov(Y_X[s], Y_Y[s'])` for all `s, s'`, flattened and padded (row
    /// and column 0 zero), given each side's means.
    fn output_covariance(
        &self,
        means: [&Means<T>; 2],
        cov_xy: &DMatrix<T>,
        sym: bool,
    ) -> DMatrix<T> {
        let n = self.n;
        let ez = [&means[0].per_position[..], &means[1].per_position[..]];
        let [x, y] = self.sides;
        let (hx, hy) = (x.heads * x.ev, y.heads * y.ev);

        // Σ over configuration pairs of Cov(z, z') = E[z z'ᵀ] − E[z] E[z']ᵀ,
        // per query pair (s, s'); zero, and skipped, for pairs whose legs
        // are independent (positions that no earlier block mixed, as in a
        // first attention layer). Summed in place: one task per head and
        // query position (h, s) of X (a contiguous run of its
        // configurations) owns rows h of every Z(s, ·) and sums its pairs
        // in order, so that the result does not depend on the thread count
        // and nothing grows as the n⁴ pairs. A
        // self product (`sym`) takes each unordered pair once: the pairs
        // j > i go to `strict`, the pairs j = i to `diagonal`, and
        // Z(a, b) = strict(a, b) + strict(b, a)ᵀ + diagonal(a, b).
        let runs: Vec<core::ops::Range<usize>> = {
            let mut runs: Vec<core::ops::Range<usize>> = Vec::new();
            for (i, c) in x.configs.iter().enumerate() {
                match runs.last_mut() {
                    Some(r) if (x.configs[r.start].0, x.configs[r.start].1) == (c.0, c.1) => {
                        r.end = i + 1
                    }
                    _ => runs.push(i..i + 1),
                }
            }
            runs
        };
        type Rows<T> = (usize, usize, DMatrix<T>, DMatrix<T>);
        let rows: Vec<Rows<T>> = runs
            .into_par_iter()
            .with_max_len(1)
            .map_init(
                || (Inputs::default(), Workspace::default(), None),
                |(inp, ws, held), run| {
                    let (h, s, _, _) = x.configs[run.start];
                    // Rows h of Z(s, s') for every s', side by side: e_v × n H' e_v'.
                    let mut strict = DMatrix::<T>::zeros(x.ev, n * hy);
                    let mut diagonal = DMatrix::<T>::zeros(x.ev, if sym { hy } else { 0 });
                    for i in run {
                        let (_, _, t, wx) = x.configs[i];
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
                                diagonal.columns_mut(h2 * y.ev, y.ev)
                            } else {
                                strict.columns_mut(s2 * hy + h2 * y.ev, y.ev)
                            };
                            chain::moment_into(inp, ws, wx * wy, &mut blk);
                            let (mx, my) = (&means[0].per_config[i], &means[1].per_config[j]);
                            blk.ger(-T::one(), mx, my, T::one());
                        }
                    }
                    (h, s, strict, diagonal)
                },
            )
            .collect();
        let mut zz = vec![DMatrix::<T>::zeros(hx, hy); n * n];
        for (h, s, strict, diagonal) in &rows {
            for s2 in 0..n {
                let mut blk = zz[s * n + s2].rows_mut(h * x.ev, x.ev);
                blk += strict.columns(s2 * hy, hy);
            }
            if sym {
                let mut blk = zz[s * n + s].rows_mut(h * x.ev, x.ev);
                blk += diagonal;
            }
        }
        if sym {
            // strict(b, a)ᵀ: each task's rows h of Z(s, s'), transposed,
            // into the columns h of the mirrored blocks Z(s', s).
            for (h, s, strict, _) in &rows {
                for s2 in 0..n {
                    let mut blk = zz[s2 * n + s].columns_mut(h * x.ev, x.ev);
                    blk += strict.columns(s2 * hy, hy).transpose();
                }
            }
        }
        drop(rows);

        // The skip: Cov(X_X[s], z_Y[s']) and Cov(z_X[s], X_Y[s']).
        let (rx, ry) = (x.block.skip(), y.block.skip());
        let input_with = |side: usize, other: &Side<'_, T>, ez_other: &[DVector<T>]| {
            let me = self.sides[side];
            let d = me.width;
            let ho = other.heads * other.ev;
            // One task per input position s, summing into its own row of
            // blocks (s, ·) in order: nothing grows as the n³ items.
            let mut out: Vec<DMatrix<T>> = (0..n)
                .into_par_iter()
                .flat_map_iter(|s| {
                    let mut row = vec![DMatrix::<T>::zeros(d, ho); n];
                    let (mut inp, mut ws) = (Inputs::default(), Workspace::default());
                    for j in 0..other.configs.len() {
                        let (h, s2, t, w) = other.configs[j];
                        let (nodes, v) = other.legs(1 - side, (h, s2, t));
                        let input = Leg::Input { side, pos: s };
                        self.inputs(&nodes, &[input, v], &mut inp, 0);
                        let mut blk = row[s2].columns_mut(h * other.ev, other.ev);
                        chain::moment_into(&inp, &mut ws, w, &mut blk);
                    }
                    row
                })
                .collect();
            for s in 0..n {
                for s2 in 0..n {
                    out[s * n + s2].ger(-T::one(), &me.input_means[s], &ez_other[s2], T::one());
                }
            }
            out
        };
        let xz = (rx != 0.0).then(|| input_with(0, y, ez[1]));
        // Cov(z_X[s], X_Y[s']) = Cov(X_Y[s'], z_X[s])ᵀ.
        let zx = (ry != 0.0).then(|| {
            let own;
            let yx = match (&xz, sym) {
                (Some(xz), true) => xz,
                _ => {
                    own = input_with(1, x, ez[0]);
                    &own
                }
            };
            (0..n * n)
                .map(|i| yx[(i % n) * n + i / n].transpose())
                .collect::<Vec<_>>()
        });
        let (ox, oy) = (x.block.weight(Role::O), y.block.weight(Role::O));
        let (ax, ay): (T, T) = (from_f64(x.block.scale()), from_f64(y.block.scale()));
        let kx4 = x.constant * x.constant * x.constant * x.constant;
        let ky4 = y.constant * y.constant * y.constant * y.constant;
        let (rx, ry): (T, T) = (from_f64(rx), from_f64(ry));
        let (outx, outy) = (ox.nrows(), oy.nrows());
        // Each block (s, s') by its own task, copied in after: the same
        // products in the same order on any number of threads.
        let blocks: Vec<DMatrix<T>> = (0..n * n)
            .into_par_iter()
            .with_max_len(1)
            .map(|at| {
                let (s, s2) = (at / n, at % n);
                let mut blk = DMatrix::zeros(outx, outy);
                let oz = mul(ox, &zz[at]);
                gemm_nt(ax * ay, &oz, oy, T::zero(), &mut blk);
                if let Some(xz) = &xz {
                    gemm_nt(rx * kx4 * ay, &xz[at], oy, T::one(), &mut blk);
                }
                if let Some(zx) = &zx {
                    gemm(ax * ry * ky4, ox, &zx[at], T::one(), &mut blk);
                }
                if rx != T::zero() && ry != T::zero() {
                    let c = cov_xy.view((1 + s * x.width, 1 + s2 * y.width), (x.width, y.width));
                    blk.zip_apply(&c, |o, c| *o += rx * ry * kx4 * ky4 * c);
                }
                blk
            })
            .collect();
        let mut cov = DMatrix::zeros(n * outx + 1, n * outy + 1);
        for (at, blk) in blocks.iter().enumerate() {
            let (s, s2) = (at / n, at % n);
            cov.view_mut((1 + s * outx, 1 + s2 * outy), (outx, outy))
                .copy_from(blk);
        }
        cov
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
    let n = state.context();
    let state = state.joint();
    let sa = Side::new(a, state.a(), n)?;
    let aa = Tables::new(&sa, &sa, &state.a().cov, n, true);
    let self_product = |side: &Side<'_, T>, t: &Tables<T>, cov: &DMatrix<T>| {
        let p = Product {
            sides: [side, side],
            xx: t,
            xy: t,
            yy: t,
            n,
        };
        let means = mean_scores(&p, 0);
        let c = p.output_covariance([&means, &means], cov, true);
        (means, c)
    };
    let (ez_a, cov_a) = self_product(&sa, &aa, &state.a().cov);
    let side_a = Moments::new(output_mean(&sa, &ez_a.per_position), cov_a, n)?;
    let Some(b) = b else {
        return Ok(JointMoments::same(side_a));
    };
    // One model's whole tables at a time: each self product's, then the
    // cross product's beside the heads' own pairs of both (all it reads of
    // them).
    let aa = aa.into_diagonal();
    let sb = Side::new(b, state.b(), n)?;
    let bb = Tables::new(&sb, &sb, &state.b().cov, n, true);
    let (ez_b, cov_b) = self_product(&sb, &bb, &state.b().cov);
    let bb = bb.into_diagonal();
    let ab = Tables::new(&sa, &sb, state.cross(), n, false);
    let cross = Product {
        sides: [&sa, &sb],
        xx: &aa,
        xy: &ab,
        yy: &bb,
        n,
    }
    .output_covariance([&ez_a, &ez_b], state.cross(), false);
    JointMoments::new(
        side_a,
        Moments::new(output_mean(&sb, &ez_b.per_position), cov_b, n)?,
        cross,
    )
}

/// An estimate of the scalars of [`step`] beyond its input and output
/// moments on `n` positions: the covariance tables it holds at once (one
/// pair of sides' whole, beside the heads' own pairs of the self tables
/// made before) and the moments of the largest set of configuration pairs
/// (see [`crate::resources`]).
pub(super) fn scalars<T: Real>(a: &Attention<T>, b: &Attention<T>, n: usize) -> f64 {
    let nf = n as f64;
    let per_matrix = 96.0 / size_of::<T>() as f64;
    // (heads, legs per head, e_v, d) of a block.
    let shape = |att: &Attention<T>| {
        let (h, e, ev) = (
            att.heads() as f64,
            att.qk_width() as f64,
            att.value_width() as f64,
        );
        (h, 4.0 * e + ev, ev, att.input_width() as f64)
    };
    let (sx, sy) = (shape(a), shape(b));
    // The covariance tables per pair of positions and heads, and what the
    // step sums into: Z per query pair, the skip's input–value blocks.
    let tables = |(hx, lx, evx, dx): (f64, f64, f64, f64),
                  (hy, ly, evy, dy): (f64, f64, f64, f64)| {
        nf * nf
            * (hx * hy * lx * ly
                + hy * dx * ly
                + hx * lx * dy
                + hx * evx * hy * evy
                + dx * hy * evy
                + dy * hx * evx
                + per_matrix * (hx * hy + hx + hy + 2.0))
    };
    // The tasks' rows of Z, collected before they are added (as large as
    // Z), and each thread's Wick sum scratch: four nodes' transfers and
    // their products (`2e × 2e`, about 80), and the 64 paths to an end (an
    // input, `d + 1` wide, or a value).
    let (e, d) = (
        a.qk_width().max(b.qk_width()) as f64,
        a.input_width().max(b.input_width()) as f64,
    );
    let scratch = 80.0 * 4.0 * e * e + 64.0 * 2.0 * e * (d + 1.0).max(sx.2).max(sy.2);
    let rows = |(hx, _, evx, _): (f64, f64, f64, f64), (hy, _, evy, _): (f64, f64, f64, f64)| {
        nf * nf * hx * evx * hy * evy
    };
    // A model's tables with itself kept for the cross product: one head
    // with itself (`Tables::into_diagonal`).
    let diagonal = |(h, l, _, _): (f64, f64, f64, f64)| nf * nf * (h * l * l + per_matrix * h);
    // One whole set of tables at a time: A's, then B's beside A's heads'
    // own, then the cross product's beside both sides' own.
    let held = tables(sx, sx)
        .max(diagonal(sx) + tables(sy, sy))
        .max(diagonal(sx) + diagonal(sy) + tables(sx, sy));
    // Beside them all along: each side's leg forms per position and head,
    // and the output blocks `(s, s')` before they are copied out.
    let forms = |(h, l, _, d): (f64, f64, f64, f64)| nf * h * l * (d + 1.0);
    let outputs = nf * nf * a.output_width() as f64 * b.output_width() as f64;
    let threads = rayon::current_num_threads() as f64;
    held + forms(sx)
        + forms(sy)
        + outputs
        + rows(sx, sy).max(rows(sx, sx)).max(rows(sy, sy))
        + threads * scratch
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
        let (n, d, heads, e) = (3, 4, 2, 2);
        let w = |seed: usize, r: usize, c: usize| DMatrix::from_fn(r, c, |i, j| value(seed, i, j));
        let he = heads * e;
        let block = Attention::builder(
            heads,
            w(1, he, d),
            w(2, he, d),
            w(3, he, d),
            w(4, he, d),
            w(5, he, d),
            w(6, d, he),
        )
        .build()
        .unwrap();
        // Positions 0 and 1 correlated, position 2 independent of both.
        let f = w(7, n * d, n * d);
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
        let t = Tables::new(&side, &side, &moments.cov, n, true);
        let p = Product {
            sides: [&side, &side],
            xx: &t,
            xy: &t,
            yy: &t,
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
}
