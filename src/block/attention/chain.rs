//! The Wick sum of bilinear attention, `E[ε_A ⊗ ε_B · Π_ν (q_ν · k_ν)]`:
//! each partition of the legs into singletons and pairs is a set of paths
//! and cycles through the score nodes `ν = (q_ν, k_ν)` (derivation: [the
//! metrics guide](crate::guide::metrics#the-gaussian-metric-on-sequences)).
//! `N(ν, μ)[x, y] = C(x̄, y)` (`x` the leg of `ν` entered, `x̄` its other
//! leg) sums both ways through a node; `κ(S)`, the pieces covering exactly
//! the nodes `S`, give `Z(R) = E[Π_{ν∈R} q_ν·k_ν]` by set partitions, and
//!
//! ```text
//! E[ε_A ε_Bᵀ Π_ν S_ν] = Σ_S M(S) Z(N∖S) + Σ_{S∩S'=∅} u_A(S) u_B(S')ᵀ Z(N∖S∖S')
//! ```
//!
//! with `M(S)` the paths from `ε_A` to `ε_B` through exactly `S` and `u_ε(S)`
//! those from `ε` to a singleton. A path from an end has a direction; a
//! path between singletons is enumerated from both ends and halved; a cycle
//! is taken once (its reverse has the same trace), a two-node cycle halved.

use nalgebra::{DMatrix, DMatrixViewMut, DVector};

use crate::linalg::gemm;
use crate::scalar::{Real, from_f64};

/// The most score nodes one sum takes: two per model.
pub(super) const MAX_NODES: usize = 4;

/// A matrix whose storage outlives one sum: a caller summing thousands of
/// configuration pairs refills the same few hundred kilobytes instead of
/// allocating and zeroing them per pair. `set` says whether it holds a
/// value for the present sum; unset, it is zero and products skip it.
pub(super) struct Slot<T: Real> {
    matrix: DMatrix<T>,
    set: bool,
}

impl<T: Real> Default for Slot<T> {
    fn default() -> Self {
        Self {
            matrix: DMatrix::zeros(0, 0),
            set: false,
        }
    }
}

impl<T: Real> Slot<T> {
    /// The value, `None` when zero.
    pub(super) fn get(&self) -> Option<&DMatrix<T>> {
        self.set.then_some(&self.matrix)
    }

    /// Marks the slot zero (its storage kept).
    pub(super) fn clear(&mut self) {
        self.set = false;
    }

    /// The storage at `rows × cols`, marked set. Its entries are what the
    /// last sum left: the caller overwrites every one.
    #[inline(always)]
    pub(super) fn reuse(&mut self, rows: usize, cols: usize) -> &mut DMatrix<T> {
        self.set = true;
        reshaped(&mut self.matrix, rows, cols)
    }

    /// A slot holding `m` (for building inputs in tests).
    #[cfg(test)]
    fn of(m: Option<DMatrix<T>>) -> Self {
        match m {
            Some(matrix) => Self { matrix, set: true },
            None => Self::default(),
        }
    }
}

/// `v` resized to `len` (contents unspecified when it was another length).
#[inline(always)]
pub(super) fn resized<T: Real>(v: &mut DVector<T>, len: usize) -> &mut DVector<T> {
    if v.len() != len {
        *v = DVector::zeros(len);
    }
    v
}

/// `m` reshaped to `rows × cols` (contents unspecified when it was another shape).
#[inline(always)]
pub(super) fn reshaped<T: Real>(m: &mut DMatrix<T>, rows: usize, cols: usize) -> &mut DMatrix<T> {
    if m.shape() != (rows, cols) {
        *m = DMatrix::zeros(rows, cols);
    }
    m
}

/// The legs' moments for one choice of configurations, in the block forms
/// of the [module documentation](self). Nodes are numbered `0 … k−1`; node
/// `ν` has legs `q_ν` (rows `0 … e_ν` of its stacked index) and `k_ν` (rows
/// `e_ν … 2e_ν`). A caller refills one value for every sum it takes.
pub(super) struct Inputs<T: Real> {
    /// `N(ν, μ)` for `ν ≠ μ` at `ν·k + μ` (`2e_ν × 2e_μ`); unset when it is
    /// zero (legs at independent positions), so that products skip it.
    pub(super) transfer: Vec<Slot<T>>,
    /// Which of each transfer's four blocks `C(x, y)` are nonzero: bit
    /// `2r + c` for block row `r` (`k_ν`, `q_ν`) and column `c` (`q_μ`,
    /// `k_μ`), so that products skip the zero ones (a first attention
    /// layer's positions are independent: most blocks are zero there).
    pub(super) blocks: Vec<u8>,
    /// `[μ_q; μ_k]`: a path that starts on a singleton leg of `ν`.
    pub(super) start: Vec<DVector<T>>,
    /// `[μ_k; μ_q]`: a path that enters `ν` and ends on its other leg.
    pub(super) stop: Vec<DVector<T>>,
    /// `κ({ν}) = μ_q·μ_k + tr C(q, k)`.
    pub(super) single: Vec<T>,
    /// The ends, at most two: for each, its mean `μ_ε` and `E(ε, ν) =
    /// [C(ε, q_ν) C(ε, k_ν)]` (`w_ε × 2e_ν`, unset when zero).
    pub(super) ends: Vec<End<T>>,
    /// With two ends: `C(ε_A, ε_B)` and `Ē(ν, ε_B) = [C(k_ν, ε_B); C(q_ν, ε_B)]`
    /// (`2e_ν × w_B`, unset when zero).
    pub(super) between: Option<Between<T>>,
}

impl<T: Real> Default for Inputs<T> {
    fn default() -> Self {
        Self {
            transfer: Vec::new(),
            blocks: Vec::new(),
            start: Vec::new(),
            stop: Vec::new(),
            single: Vec::new(),
            ends: Vec::new(),
            between: None,
        }
    }
}

/// One end of the sum.
pub(super) struct End<T: Real> {
    pub(super) mean: DVector<T>,
    pub(super) to_node: Vec<Slot<T>>,
}

impl<T: Real> Default for End<T> {
    fn default() -> Self {
        Self {
            mean: DVector::zeros(0),
            to_node: Vec::new(),
        }
    }
}

/// What a path from the first end to the second needs.
pub(super) struct Between<T: Real> {
    pub(super) direct: DMatrix<T>,
    pub(super) from_node: Vec<Slot<T>>,
}

impl<T: Real> Default for Between<T> {
    fn default() -> Self {
        Self {
            direct: DMatrix::zeros(0, 0),
            from_node: Vec::new(),
        }
    }
}

/// The scratch of [`moment_into`], kept by a caller across its sums.
pub(super) struct Workspace<T: Real> {
    /// `s(μ, S)`, the paths from `μ` to a singleton through exactly `S`, at `μ << k | S`.
    single_paths: Vec<Slot<T>>,
    /// `N(x,y) N(y,z)` at `(x·k + y)·k + z`, and whether it was formed.
    products: Vec<Slot<T>>,
    formed: Vec<bool>,
    kappa: Vec<T>,
    z: Vec<T>,
    /// `u_A`, `u_B`: the paths from each end to a singleton, per set.
    to_singleton: [DMatrix<T>; 2],
    /// One node's `s(ν, S)` side by side, and `E(ε, ν)` times them.
    columns: DMatrix<T>,
    through: DMatrix<T>,
    /// The subset weights: `Ω` (two ends) or `Z(N∖S)` (one end).
    weights: DMatrix<T>,
    /// `u_B Ω`.
    weighted: DMatrix<T>,
    /// `V(μ, U)` at `μ << k | U`.
    paths: Vec<Slot<T>>,
}

impl<T: Real> Default for Workspace<T> {
    fn default() -> Self {
        let empty = || DMatrix::zeros(0, 0);
        Self {
            single_paths: Vec::new(),
            products: Vec::new(),
            formed: Vec::new(),
            kappa: Vec::new(),
            z: Vec::new(),
            to_singleton: [empty(), empty()],
            columns: empty(),
            through: empty(),
            weights: empty(),
            weighted: empty(),
            paths: Vec::new(),
        }
    }
}

/// `tr(P · J M' J)` for two matrices of one shape between nodes `ν`, `μ`
/// (`2e_ν × 2e_μ`), `J` swapping each node's two legs:
/// `Σ_{i,k} P[i,k] M[J i, J k]`. With `M = N(ν,μ)` and `J Mᵀ J = N(μ,ν)`,
/// this is the trace of a product that ends on the reverse of `M`, read
/// without a transposed copy: the swapped halves of each column of `M` are
/// contiguous, summed in eight lanes, column by column in order.
#[inline(always)]
fn trace_reversed<T: Real>(p: &DMatrix<T>, m: &DMatrix<T>) -> T {
    let (rows, cols) = p.shape();
    debug_assert_eq!(m.shape(), (rows, cols));
    let (hr, hc) = (rows / 2, cols / 2);
    let (p, m) = (p.as_slice(), m.as_slice());
    let mut sum = T::zero();
    for k in 0..cols {
        let jk = if k < hc { k + hc } else { k - hc };
        let (pc, mc) = (&p[k * rows..(k + 1) * rows], &m[jk * rows..(jk + 1) * rows]);
        sum += dot(&pc[..hr], &mc[hr..]) + dot(&pc[hr..], &mc[..hr]);
    }
    sum
}

/// `Σ x_i y_i` in eight lanes, added pairwise at the end: a fixed order,
/// so the same bits on every run.
#[inline(always)]
fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    debug_assert_eq!(x.len(), y.len());
    let mut lanes = [T::zero(); 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    for (l, (&x, &y)) in xr.iter().zip(yr).enumerate() {
        lanes[l] += x * y;
    }
    let [a, b, c, d, e, f, g, h] = lanes;
    ((a + b) + (c + d)) + ((e + f) + (g + h))
}

/// `y ← N x`, or `y += N x` with `accumulate`, for a transfer `N` whose
/// zero blocks (`blocks`) are skipped as by [`by_blocks`]: sixteen rows at
/// a time held in registers across the columns, each entry summing its
/// products in column order (the same bits at every vector width). The
/// GEMM engine's matrix–vector path costs a call and a store per column
/// at these sizes (`2e × 2e`).
#[inline(always)]
fn gemv<T: Real>(n: &DMatrix<T>, blocks: u8, x: &[T], y: &mut [T], accumulate: bool) {
    let (rows, cols) = n.shape();
    debug_assert!(x.len() == cols && y.len() == rows);
    let (hr, hc) = (rows / 2, cols / 2);
    by_blocks(n, blocks, accumulate, |part, accumulate| match part {
        Part::Whole => gemv_block(n.as_slice(), rows, (0, 0), x, y, accumulate),
        Part::Block(r, c) => {
            let (x, y) = (&x[c * hc..][..hc], &mut y[r * hr..][..hr]);
            gemv_block(n.as_slice(), rows, (r * hr, c * hc), x, y, accumulate);
        }
        Part::Zero(r) => y[r * hr..][..hr].fill(T::zero()),
    });
}

/// `y ← A x` or `y += A x` for the block of `y.len() × x.len()` at
/// `(r0, c0)` of a column-major matrix `a` with leading dimension `ld`.
#[inline(always)]
fn gemv_block<T: Real>(
    a: &[T],
    ld: usize,
    (r0, c0): (usize, usize),
    x: &[T],
    y: &mut [T],
    accumulate: bool,
) {
    const R: usize = 16;
    let rows = y.len();
    let whole = rows - rows % R;
    for i0 in (0..whole).step_by(R) {
        let mut acc = [T::zero(); R];
        if accumulate {
            acc.copy_from_slice(&y[i0..i0 + R]);
        }
        for (j, &xj) in x.iter().enumerate() {
            let column = &a[(c0 + j) * ld + r0 + i0..][..R];
            for l in 0..R {
                acc[l] += column[l] * xj;
            }
        }
        y[i0..i0 + R].copy_from_slice(&acc);
    }
    for (i, out) in y.iter_mut().enumerate().skip(whole) {
        let mut acc = if accumulate { *out } else { T::zero() };
        for (j, &xj) in x.iter().enumerate() {
            acc += a[(c0 + j) * ld + r0 + i] * xj;
        }
        *out = acc;
    }
}

/// All four blocks of a transfer nonzero.
#[cfg(test)]
const DENSE: u8 = 0b1111;

/// One product of a walk of [`by_blocks`].
enum Part {
    /// The whole transfer.
    Whole,
    /// Block `(r, c)` into block row `r` of the result.
    Block(usize, usize),
    /// Block row `r` of the result is zero.
    Zero(usize),
}

/// A product by transfer `n`, whose zero blocks are `blocks` (as
/// [`Inputs::blocks`]), as the parts `part(p, accumulate)` to take: the
/// whole unless at most two blocks are nonzero and its halves are at least
/// 16 wide (below that, a call or a loop per block costs more than it
/// saves); then each nonzero block in order, the first of a block row
/// overwriting it unless `accumulate`, and a zero block row when
/// overwriting one that has none.
#[inline(always)]
fn by_blocks<T: Real>(
    n: &DMatrix<T>,
    blocks: u8,
    accumulate: bool,
    mut part: impl FnMut(Part, bool),
) {
    if blocks.count_ones() > 2 || n.nrows().min(n.ncols()) < 32 {
        part(Part::Whole, accumulate);
        return;
    }
    for r in 0..2 {
        let mut written = accumulate;
        for c in (0..2).filter(|c| blocks & 1 << (2 * r + c) != 0) {
            part(Part::Block(r, c), written);
            written = true;
        }
        if !written {
            part(Part::Zero(r), false);
        }
    }
}

/// `out ← n x`, or `out += n x` with `accumulate`, for a transfer `n` whose
/// zero blocks are skipped as by [`by_blocks`].
#[inline(always)]
fn mul_blocks<T: Real>(
    n: &DMatrix<T>,
    blocks: u8,
    x: &DMatrix<T>,
    accumulate: bool,
    out: &mut DMatrix<T>,
) {
    let (hr, hc) = (n.nrows() / 2, n.ncols() / 2);
    by_blocks(n, blocks, accumulate, |part, accumulate| {
        let beta = if accumulate { T::one() } else { T::zero() };
        match part {
            Part::Whole => gemm(T::one(), n, x, beta, out),
            Part::Block(r, c) => {
                let (a, b) = (n.view((r * hr, c * hc), (hr, hc)), x.rows(c * hc, hc));
                gemm(T::one(), &a, &b, beta, &mut out.rows_mut(r * hr, hr));
            }
            Part::Zero(r) => out.rows_mut(r * hr, hr).fill(T::zero()),
        }
    });
}

/// `N(x,y) N(y,z)` into its slot once per sum; whether it is nonzero.
#[inline(always)]
fn product<T: Real>(
    ws: &mut Workspace<T>,
    inp: &Inputs<T>,
    k: usize,
    (x, y, z): (usize, usize, usize),
) -> bool {
    let at = (x * k + y) * k + z;
    if !ws.formed[at] {
        ws.formed[at] = true;
        match (inp.transfer[x * k + y].get(), inp.transfer[y * k + z].get()) {
            (Some(a), Some(b)) => {
                let out = ws.products[at].reuse(a.nrows(), b.ncols());
                mul_blocks(a, inp.blocks[x * k + y], b, false, out);
            }
            _ => ws.products[at].clear(),
        }
    }
    ws.products[at].get().is_some()
}

/// `u_ε(S)`, the paths from an end to a singleton through exactly `S`, as
/// the columns of `u` (column `S`): for each first node `ν`, one product
/// `E(ε, ν) · [s(ν, S) for the sets S ∋ ν]`.
#[inline(always)]
fn paths_to_singleton<T: Real>(
    end: &End<T>,
    single_paths: &[Slot<T>],
    k: usize,
    columns: &mut DMatrix<T>,
    through: &mut DMatrix<T>,
    u: &mut DMatrix<T>,
) {
    let w = end.mean.len();
    reshaped(u, w, 1 << k).fill(T::zero());
    u.column_mut(0).copy_from(&end.mean);
    for (nu, e) in end.to_node.iter().enumerate() {
        let Some(e) = e.get() else { continue };
        let sets = || {
            (1..1usize << k).filter(move |&set| {
                set & 1 << nu != 0 && single_paths[nu << k | set].get().is_some()
            })
        };
        let count = sets().count();
        if count == 0 {
            continue;
        }
        let cols = reshaped(columns, e.ncols(), count);
        for (c, set) in sets().enumerate() {
            let r = single_paths[nu << k | set].get().expect("filtered on set");
            cols.column_mut(c).copy_from(&r.column(0));
        }
        gemm(T::one(), e, &*cols, T::zero(), reshaped(through, w, count));
        for (c, set) in sets().enumerate() {
            let mut dst = u.column_mut(set);
            dst += through.column(c);
        }
    }
}

/// `E[ε_A ε_Bᵀ Π_ν S_ν]` (`w_A × w_B`) with two ends, `E[ε_A Π_ν S_ν]`
/// (`w_A × 1`) with one, `E[Π_ν S_ν]` (`1 × 1`) with none, in a new matrix
/// (the sums' tests; the callers use [`moment_into`]).
#[cfg(test)]
pub(super) fn moment<T: Real>(inp: &Inputs<T>) -> DMatrix<T> {
    let rows = inp.ends.first().map_or(1, |e| e.mean.len());
    let cols = inp.ends.get(1).map_or(1, |e| e.mean.len());
    let mut out = DMatrix::zeros(rows, cols);
    moment_into(
        inp,
        &mut Workspace::default(),
        T::one(),
        &mut out.columns_mut(0, cols),
    );
    out
}

/// `out += α ·` the moment of [`moment`], with `ws`'s storage; compiled
/// for AVX-512 or AVX2 where the CPU has them (see [`super::lanes::avx2`]).
pub(super) fn moment_into<T: Real>(
    inp: &Inputs<T>,
    ws: &mut Workspace<T>,
    alpha: T,
    out: &mut DMatrixViewMut<'_, T>,
) {
    #[cfg(target_arch = "x86_64")]
    if super::lanes::avx2() {
        if super::lanes::avx512() {
            // SAFETY: the CPU has AVX-512F, checked by `avx512`.
            unsafe { moment_avx512(inp, ws, alpha, out) };
        } else {
            // SAFETY: the CPU has AVX2, checked by `avx2`.
            unsafe { moment_avx2(inp, ws, alpha, out) };
        }
        return;
    }
    moment_body(inp, ws, alpha, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
fn moment_avx512<T: Real>(
    inp: &Inputs<T>,
    ws: &mut Workspace<T>,
    alpha: T,
    out: &mut DMatrixViewMut<'_, T>,
) {
    moment_body(inp, ws, alpha, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn moment_avx2<T: Real>(
    inp: &Inputs<T>,
    ws: &mut Workspace<T>,
    alpha: T,
    out: &mut DMatrixViewMut<'_, T>,
) {
    moment_body(inp, ws, alpha, out);
}

/// [`moment_into`]'s sum, inlined into each of its compilations.
#[inline(always)]
fn moment_body<T: Real>(
    inp: &Inputs<T>,
    ws: &mut Workspace<T>,
    alpha: T,
    out: &mut DMatrixViewMut<'_, T>,
) {
    let k = inp.start.len();
    debug_assert!(k <= MAX_NODES);
    let all = (1usize << k) - 1;
    let transfer = |from: usize, to: usize| inp.transfer[from * k + to].get();
    let half: T = from_f64(0.5);

    // Paths that end on a singleton leg, summed per first node and set of
    // nodes: s(μ, S) = Σ over the sequences from μ through exactly S of
    // N(μ, ν2) … N(ν_{j−1}, ν_j) [μ_k; μ_q](ν_j), by
    // s(μ, {μ}) = [μ_k; μ_q](μ), s(μ, S) = Σ_{λ ∈ S∖μ} N(μ, λ) s(λ, S∖μ):
    // 48 matrix–vector products for four nodes, against 60 one per
    // sequence ([`gemv`]). A subset is a smaller number than its set, so
    // increasing sets come in order.
    ws.single_paths.resize_with(k << k, Slot::default);
    for set in 1..=all {
        for mu in (0..k).filter(|&m| set & 1 << m != 0) {
            let mut acc = std::mem::take(&mut ws.single_paths[mu << k | set]);
            acc.clear();
            let rest = set & !(1 << mu);
            if rest == 0 {
                let v = &inp.stop[mu];
                acc.reuse(v.len(), 1).column_mut(0).copy_from(v);
            }
            for lambda in (0..k).filter(|&l| rest & 1 << l != 0) {
                if let (Some(n), Some(next)) = (
                    transfer(mu, lambda),
                    ws.single_paths[lambda << k | rest].get(),
                ) {
                    let accumulate = acc.get().is_some();
                    gemv(
                        n,
                        inp.blocks[mu * k + lambda],
                        next.as_slice(),
                        acc.reuse(n.nrows(), 1).as_mut_slice(),
                        accumulate,
                    );
                }
            }
            ws.single_paths[mu << k | set] = acc;
        }
    }

    // κ(S): scalar paths (both directions, so halved) and cycles.
    ws.kappa.clear();
    ws.kappa.resize(1 << k, T::zero());
    for set in (1..=all).filter(|s: &usize| s.count_ones() >= 2) {
        for mu in (0..k).filter(|&m| set & 1 << m != 0) {
            if let Some(r) = ws.single_paths[mu << k | set].get() {
                ws.kappa[set] += half * dot(inp.start[mu].as_slice(), r.as_slice());
            }
        }
    }
    for (i, &v) in inp.single.iter().enumerate() {
        ws.kappa[1 << i] = v;
    }
    // Cycles. A cycle and its reverse have equal traces (`N(ν,μ) = J N(μ,ν)ᵀ J`,
    // `J` swapping a node's two legs), so a cycle of three or four nodes is
    // taken once; a cycle of two nodes is its own reverse, so the halving
    // stays. Each trace ends on the reverse of a matrix already at hand
    // ([`trace_reversed`]), and products `N(x,y) N(y,z)` are shared
    // between cycles.
    ws.products.resize_with(k * k * k, Slot::default);
    ws.formed.clear();
    ws.formed.resize(k * k * k, false);
    let at = |x: usize, y: usize, z: usize| (x * k + y) * k + z;
    // tr(N(a,b) N(b,a)), N(b,a) being the reverse of N(a,b).
    for a in 0..k {
        for b in a + 1..k {
            if let Some(x) = transfer(a, b) {
                ws.kappa[1 << a | 1 << b] += half * trace_reversed(x, x);
            }
        }
    }
    if k == 4 {
        // tr(N(0,x) N(x,y) · N(y,z) N(z,0)): the second product is the
        // reverse of N(0,z) N(z,y), a product from node 0 as the first.
        for (x, y, z) in [(1, 2, 3), (1, 3, 2), (2, 1, 3)] {
            if product(ws, inp, k, (0, x, y)) && product(ws, inp, k, (0, z, y)) {
                let (p, q) = (&ws.products[at(0, x, y)], &ws.products[at(0, z, y)]);
                if let (Some(p), Some(q)) = (p.get(), q.get()) {
                    ws.kappa[15] += trace_reversed(p, q);
                }
            }
        }
    }
    for a in 0..k {
        for b in a + 1..k {
            for c in b + 1..k {
                // tr(N(a,b) N(b,c) · N(c,a)), N(c,a) the reverse of N(a,c),
                // from the product N(a,b) N(b,c) (formed above for a = 0).
                product(ws, inp, k, (a, b, c));
                if let (Some(p), Some(m)) = (ws.products[at(a, b, c)].get(), transfer(a, c)) {
                    ws.kappa[1 << a | 1 << b | 1 << c] += trace_reversed(p, m);
                }
            }
        }
    }

    // Z(R) = Σ over set partitions of R of Π κ(block).
    let (kappa, z) = (&ws.kappa, &mut ws.z);
    z.clear();
    z.resize(1 << k, T::zero());
    z[0] = T::one();
    for r in 1..=all {
        let low = r & r.wrapping_neg();
        let rest = r & !low;
        // Blocks containing the lowest node: low ∪ (any subset of rest).
        let mut sub = rest;
        let mut acc = T::zero();
        loop {
            acc += kappa[low | sub] * z[rest & !sub];
            if sub == 0 {
                break;
            }
            sub = (sub - 1) & rest;
        }
        z[r] = acc;
    }
    let z = &ws.z;

    match inp.ends.as_slice() {
        [] => out[(0, 0)] += alpha * z[all],
        [end] => {
            let [u, _] = &mut ws.to_singleton;
            paths_to_singleton(
                end,
                &ws.single_paths,
                k,
                &mut ws.columns,
                &mut ws.through,
                u,
            );
            let weights = reshaped(&mut ws.weights, 1 << k, 1);
            for s in 0..1 << k {
                weights[s] = z[all & !s];
            }
            gemm(alpha, &*u, &*weights, T::one(), out);
        }
        [ea, eb] => {
            let between = inp
                .between
                .as_ref()
                .expect("two ends come with their covariances");
            let [ua, ub] = &mut ws.to_singleton;
            paths_to_singleton(
                ea,
                &ws.single_paths,
                k,
                &mut ws.columns,
                &mut ws.through,
                ua,
            );
            paths_to_singleton(
                eb,
                &ws.single_paths,
                k,
                &mut ws.columns,
                &mut ws.through,
                ub,
            );
            // Σ_{S∩S'=∅} u_A(S) u_B(S')ᵀ Z(N∖S∖S') = u_A Vᵀ with
            // V[:, S] = Σ_{S' ⊆ N∖S} Z(N∖S∖S') u_B(S') = u_B · Ω[:, S].
            let omega = reshaped(&mut ws.weights, 1 << k, 1 << k);
            for sa in 0..1 << k {
                let free = all & !sa;
                for sb in 0..1 << k {
                    omega[(sb, sa)] = if sb & !free == 0 {
                        z[free & !sb]
                    } else {
                        T::zero()
                    };
                }
            }
            let v = reshaped(&mut ws.weighted, ub.nrows(), 1 << k);
            gemm(T::one(), &*ub, &*omega, T::zero(), v);
            let direct = alpha * z[all];
            out.zip_apply(&between.direct, |o, d| *o += direct * d);
            crate::linalg::gemm_nt(alpha, &*ua, &*v, T::one(), out);
            // Paths from ε_A to ε_B: R(seq) = N(ν1,ν2) … Ē(ν_j, ε_B), weighted
            // by Z of the nodes they leave, summed per first node. Summed
            // over the sequences that share a start and a set of nodes
            // already used, not sequence by sequence:
            // V(μ, U) = Σ over sequences from μ avoiding U of Z(N∖U∖seq) R(seq)
            //         = Z(N∖U∖μ) Ē(μ, ε_B) + Σ_{λ ∉ U∪μ} N(μ, λ) V(λ, U∪μ),
            // supersets first (they are the larger numbers); the sum from ν
            // is V(ν, ∅). That is
            // k(k−1)2^(k−2) products (48 for four nodes) against one per
            // sequence of two or more nodes (60), and the weights ride on
            // the products' accumulation.
            // V(μ, N∖μ) = Z(∅) Ē(μ) = Ē(μ): read in place, never copied.
            fn path<'a, T: Real>(
                paths: &'a [Slot<T>],
                last: &'a [Slot<T>],
                k: usize,
                mu: usize,
                used: usize,
            ) -> Option<&'a DMatrix<T>> {
                if used | 1 << mu == (1 << k) - 1 {
                    last[mu].get()
                } else {
                    paths[mu << k | used].get()
                }
            }
            ws.paths.resize_with(k << k, Slot::default);
            for used in (0..all).rev() {
                for mu in (0..k).filter(|&m| used & 1 << m == 0) {
                    let with = used | 1 << mu;
                    if with == all {
                        continue;
                    }
                    // Taken out while the products read the other slots
                    // (a swap with an empty matrix: nothing allocated).
                    let mut acc = std::mem::take(&mut ws.paths[mu << k | used]);
                    acc.clear();
                    if let Some(e) = between.from_node[mu].get() {
                        let m = acc.reuse(e.nrows(), e.ncols());
                        let weight = z[all & !with];
                        m.zip_apply(e, |m, e| *m = e * weight);
                    }
                    for lambda in (0..k).filter(|&l| with & 1 << l == 0) {
                        if let (Some(n), Some(next)) = (
                            transfer(mu, lambda),
                            path(&ws.paths, &between.from_node, k, lambda, with),
                        ) {
                            let accumulate = acc.get().is_some();
                            let out = acc.reuse(n.nrows(), next.ncols());
                            mul_blocks(n, inp.blocks[mu * k + lambda], next, accumulate, out);
                        }
                    }
                    ws.paths[mu << k | used] = acc;
                }
            }
            for nu in 0..k {
                if let (Some(e), Some(w)) = (
                    ea.to_node[nu].get(),
                    path(&ws.paths, &between.from_node, k, nu, 0),
                ) {
                    gemm(alpha, e, w, T::one(), out);
                }
            }
        }
        _ => unreachable!("at most two ends"),
    }
}

#[cfg(test)]
mod tests {
    //! The sum against Isserlis written out by brute force: every partition
    //! of the scalar legs into singletons and pairs, on small widths.
    use super::*;

    /// A leg: its node (or end), and its coordinate index range.
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// A random Gaussian law over legs of the given widths, laid end to
    /// end: each leg's offset, the mean and `scale · F Fᵀ`.
    struct Law {
        width: Vec<usize>,
        offset: Vec<usize>,
        mu: DVector<f64>,
        c: DMatrix<f64>,
    }

    impl Law {
        fn random(mut seed: u64, width: &[usize], scale: f64) -> Self {
            let mut offset = vec![0];
            for w in width {
                offset.push(offset.last().unwrap() + w);
            }
            let dim = *offset.last().unwrap();
            let f = DMatrix::from_fn(dim, dim, |_, _| lcg(&mut seed));
            let c = &f * f.transpose() * scale;
            let mu = DVector::from_fn(dim, |_, _| lcg(&mut seed));
            Self {
                width: width.to_vec(),
                offset,
                mu,
                c,
            }
        }

        fn inputs(&self, nodes: &[(usize, usize)], ends: &[usize]) -> Inputs<f64> {
            inputs(nodes, ends, &self.width, &self.offset, &self.mu, &self.c)
        }
    }

    /// Brute force: legs are blocks of a Gaussian vector `g` with mean `mu`
    /// and covariance `c`; `E[ε_A[i] ε_B[j] Π_ν (q_ν·k_ν)]` by summing every
    /// index assignment and, for each, Isserlis over the scalar factors.
    fn brute(
        nodes: &[(usize, usize)],
        ends: &[usize],
        width: &[usize],
        offset: &[usize],
        mu: &DVector<f64>,
        c: &DMatrix<f64>,
    ) -> DMatrix<f64> {
        let wa = ends.first().map_or(1, |&e| width[e]);
        let wb = ends.get(1).map_or(1, |&e| width[e]);
        let mut out = DMatrix::zeros(wa, wb);
        // Node index assignments.
        let dims: Vec<usize> = nodes.iter().map(|&(q, _)| width[q]).collect();
        let total: usize = dims.iter().product();
        for i in 0..wa {
            for j in 0..wb {
                let mut acc = 0.0;
                for flat in 0..total {
                    let mut rem = flat;
                    let mut factors = Vec::new();
                    for (&(q, k), &d) in nodes.iter().zip(&dims) {
                        let a = rem % d;
                        rem /= d;
                        factors.push(offset[q] + a);
                        factors.push(offset[k] + a);
                    }
                    if let Some(&e) = ends.first() {
                        factors.push(offset[e] + i);
                    }
                    if let Some(&e) = ends.get(1) {
                        factors.push(offset[e] + j);
                    }
                    acc += isserlis(&factors, mu, c);
                }
                out[(i, j)] = acc;
            }
        }
        out
    }

    /// `E[Π g_f]` for a Gaussian `g`: singletons and pairs, recursively.
    fn isserlis(f: &[usize], mu: &DVector<f64>, c: &DMatrix<f64>) -> f64 {
        let Some((&first, rest)) = f.split_first() else {
            return 1.0;
        };
        let mut acc = mu[first] * isserlis(rest, mu, c);
        for i in 0..rest.len() {
            let mut others = rest.to_vec();
            let partner = others.remove(i);
            acc += c[(first, partner)] * isserlis(&others, mu, c);
        }
        acc
    }

    fn inputs(
        nodes: &[(usize, usize)],
        ends: &[usize],
        width: &[usize],
        offset: &[usize],
        mu: &DVector<f64>,
        c: &DMatrix<f64>,
    ) -> Inputs<f64> {
        let block = |x: usize, y: usize| {
            c.view((offset[x], offset[y]), (width[x], width[y]))
                .into_owned()
        };
        let mean = |x: usize| mu.rows(offset[x], width[x]).into_owned();
        let stack_rows = |top: DMatrix<f64>, bottom: DMatrix<f64>| {
            let mut m = DMatrix::zeros(top.nrows() + bottom.nrows(), top.ncols());
            m.rows_mut(0, top.nrows()).copy_from(&top);
            m.rows_mut(top.nrows(), bottom.nrows()).copy_from(&bottom);
            m
        };
        let stack_cols =
            |l: DMatrix<f64>, r: DMatrix<f64>| stack_rows(l.transpose(), r.transpose()).transpose();
        let k = nodes.len();
        let mut transfer: Vec<Slot<f64>> = (0..k * k).map(|_| Slot::default()).collect();
        let blocks = vec![DENSE; k * k];
        for (a, &(qa, ka)) in nodes.iter().enumerate() {
            for (b, &(qb, kb)) in nodes.iter().enumerate() {
                if a != b {
                    transfer[a * k + b] = Slot::of(Some(stack_rows(
                        stack_cols(block(ka, qb), block(ka, kb)),
                        stack_cols(block(qa, qb), block(qa, kb)),
                    )));
                }
            }
        }
        let vstack = |a: DVector<f64>, b: DVector<f64>| {
            DVector::from_iterator(a.len() + b.len(), a.iter().chain(b.iter()).copied())
        };
        let end = |e: usize| End {
            mean: mean(e),
            to_node: nodes
                .iter()
                .map(|&(q, k)| Slot::of(Some(stack_cols(block(e, q), block(e, k)))))
                .collect(),
        };
        Inputs {
            transfer,
            blocks,
            start: nodes
                .iter()
                .map(|&(q, k)| vstack(mean(q), mean(k)))
                .collect(),
            stop: nodes
                .iter()
                .map(|&(q, k)| vstack(mean(k), mean(q)))
                .collect(),
            single: nodes
                .iter()
                .map(|&(q, k)| mean(q).dot(&mean(k)) + block(q, k).trace())
                .collect(),
            ends: ends.iter().map(|&e| end(e)).collect(),
            between: (ends.len() == 2).then(|| Between {
                direct: block(ends[0], ends[1]),
                from_node: nodes
                    .iter()
                    .map(|&(q, k)| Slot::of(Some(stack_rows(block(k, ends[1]), block(q, ends[1])))))
                    .collect(),
            }),
        }
    }

    #[test]
    fn matches_isserlis_by_brute_force() {
        // Legs: 0..8 node legs (4 nodes), 8, 9 ends; widths small.
        let law = Law::random(3, &[2, 2, 1, 1, 2, 2, 1, 1, 2, 3], 0.5);
        let nodes = [(0, 1), (2, 3), (4, 5), (6, 7)];
        for (k, ends) in [
            (4, vec![8, 9]),
            (2, vec![8]),
            (3, vec![9, 8]),
            (4, vec![]),
            (1, vec![8, 9]),
            (0, vec![8, 9]),
        ] {
            let fast = moment(&law.inputs(&nodes[..k], &ends));
            let slow = brute(&nodes[..k], &ends, &law.width, &law.offset, &law.mu, &law.c);
            let err = (&fast - &slow).amax() / slow.amax();
            assert!(
                err < 1e-12,
                "{k} nodes, ends {ends:?}: {err:e}\n{fast}\n{slow}"
            );
        }
    }

    /// One workspace kept across sums of other shapes, node counts and
    /// zero blocks gives the bits of a fresh one: nothing a sum reads is
    /// left over from the last.
    #[test]
    fn a_kept_workspace_gives_the_sums_of_a_fresh_one() {
        let law = Law::random(11, &[2, 2, 1, 1, 2, 2, 1, 1, 2, 3], 0.5);
        let nodes = [(0, 1), (2, 3), (4, 5), (6, 7)];
        let mut cases = Vec::new();
        for (k, ends) in [
            (4, vec![8, 9]),
            (2, vec![8]),
            (4, vec![9, 8]),
            (3, vec![8, 9]),
            (4, vec![]),
            (4, vec![8, 9]),
        ] {
            cases.push(law.inputs(&nodes[..k], &ends));
        }
        // A sum whose transfers and end blocks are partly zero, after sums
        // that set them.
        let mut sparse = law.inputs(&nodes, &[8, 9]);
        for at in [1, 6, 11] {
            sparse.transfer[at].clear();
        }
        sparse.ends[0].to_node[2].clear();
        sparse.between.as_mut().unwrap().from_node[1].clear();
        cases.push(sparse);
        let mut ws = Workspace::default();
        for (i, inp) in cases.iter().enumerate() {
            let fresh = moment(inp);
            let mut kept = DMatrix::zeros(fresh.nrows(), fresh.ncols());
            moment_into(inp, &mut ws, 1.0, &mut kept.columns_mut(0, fresh.ncols()));
            assert_eq!(kept, fresh, "case {i}");
        }
    }

    /// The sum compiled for AVX-512, for AVX2 and for the baseline target
    /// gives the same bits (no FMA, the same order). Other tests running
    /// meanwhile may take a narrower path too: the same bits, by this test.
    #[test]
    fn bit_identical_at_every_vector_width() {
        use std::sync::atomic::Ordering::Relaxed;
        let law = Law::random(17, &[3, 3, 5, 5, 3, 3, 5, 5, 9, 7], 0.5);
        let nodes = [(0, 1), (2, 3), (4, 5), (6, 7)];
        for (k, ends) in [(4, vec![8, 9]), (2, vec![8]), (4, vec![])] {
            let inp = law.inputs(&nodes[..k], &ends);
            let widest = moment(&inp);
            for bits in [256, 128] {
                super::super::lanes::LANES_AT_MOST.store(bits, Relaxed);
                let narrower = moment(&inp);
                super::super::lanes::LANES_AT_MOST.store(512, Relaxed);
                assert_eq!(widest, narrower, "{k} nodes, ends {ends:?}, {bits} bits");
            }
        }
    }

    /// Blocks of a transfer that are zero, marked so, are skipped: the sum
    /// equals the one that multiplies them (every pattern of zero blocks
    /// on every transfer of four nodes, one transfer at a time).
    #[test]
    fn zero_blocks_of_a_transfer_are_skipped() {
        // Halves of 16 and 17: wide enough for the products by block.
        let law = Law::random(23, &[16, 16, 17, 17, 16, 16, 17, 17, 5, 3], 0.5);
        let nodes = [(0, 1), (2, 3), (4, 5), (6, 7)];
        for at in [1, 2, 7, 9, 14] {
            for blocks in 1..DENSE {
                let mut inp = law.inputs(&nodes, &[8, 9]);
                let n = inp.transfer[at].get().expect("dense inputs").clone();
                let (hr, hc) = (n.nrows() / 2, n.ncols() / 2);
                let mut zeroed = n.clone();
                for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    if blocks & 1 << (2 * r + c) == 0 {
                        zeroed.view_mut((r * hr, c * hc), (hr, hc)).fill(0.0);
                    }
                }
                inp.transfer[at] = Slot::of(Some(zeroed));
                let multiplied = moment(&inp);
                inp.blocks[at] = blocks;
                let skipped = moment(&inp);
                let err = (&multiplied - &skipped).amax() / multiplied.amax();
                assert!(err < 1e-13, "transfer {at}, blocks {blocks:04b}: {err:e}");
            }
        }
    }

    #[test]
    fn zero_blocks_are_skipped_exactly() {
        let law = Law::random(5, &[2, 2, 2, 2, 3, 3], 1.0);
        let nodes = [(0, 1), (2, 3)];
        let mut inp = law.inputs(&nodes, &[4, 5]);
        let dense = moment(&inp);
        // Dropping a block that is zero gives the same sum.
        let m = inp.transfer[1].get().expect("dense inputs") * 0.0;
        inp.transfer[1] = Slot::of(Some(m));
        let with_zero = moment(&inp);
        inp.transfer[1].clear();
        let skipped = moment(&inp);
        assert!((&with_zero - &skipped).amax() < 1e-14);
        assert!((&dense - &with_zero).amax() > 1e-6);
    }
}
