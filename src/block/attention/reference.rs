//! The attention Gram step as it stood before it streamed: every position
//! pair's products held at once, each configuration pair's contribution
//! collected before it is summed. Kept unchanged as the reference the
//! streamed step (`step.rs`) is tested against; see `docs/attention.md`.

use nalgebra::{DMatrix, DMatrixView, DVector, Dyn};
use rayon::prelude::*;

use super::layer::{Attention, Role};
use crate::error::{Error, Result};
use crate::linalg::{gemm, gemm_nt, mul, mul_nt};
use crate::padded::padded_block;
use crate::resources::{flat_width, zeros};
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
            legs: (0..n).map(|p| block.leg_factors(p)).collect(),
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
    /// position, `out × k` (`psi`).
    fn linearize(
        &self,
        m: &[DVector<T>],
        dirs: Option<&[DMatrix<T>]>,
    ) -> (DMatrix<T>, Vec<DMatrix<T>>) {
        let n = m.len();
        let k = dirs.map_or(0, |d| d[0].ncols());
        let hv = self.heads * self.ev;
        let mut zphi = DMatrix::<T>::zeros(hv, n);
        let mut zpsi = vec![DMatrix::<T>::zeros(hv, k); if dirs.is_some() { n } else { 0 }];
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
                        // d(s1 s2) = ds1 s2 + s1 ds2, each a row over the k directions.
                        let ds1 = dir(0).tr_mul(&leg(1)) + dir(1).tr_mul(&leg(0));
                        let ds2 = dir(2).tr_mul(&leg(3)) + dir(3).tr_mul(&leg(2));
                        let dscore = ds1 * s2 + ds2 * s1;
                        let mut z = zpsi[s].view_mut((h * self.ev, 0), (self.ev, k));
                        z.ger(w, &v, &dscore, T::one());
                        add_scaled(&mut z, w * s1 * s2, &dir(4));
                    }
                }
            }
        }
        let coef: T = from_f64(self.block.scale() / self.block.score_scale());
        let o = self.block.weight(Role::O);
        let phi = (o * zphi).transpose() * coef;
        let fifth: T = from_f64(0.2);
        let psi = zpsi.iter().map(|z| (o * z) * (coef * fifth)).collect();
        (phi, psi)
    }
}

/// `G'` for attention blocks `a` and `b` (`None`: the self product) on
/// `n` positions.
pub(super) fn reference_step<T: Real>(
    a: &Attention<T>,
    b: Option<&Attention<T>>,
    g: &DMatrix<T>,
    n: usize,
) -> Result<DMatrix<T>> {
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
    let sb = Side::new(b.unwrap_or(a), n)?;
    let (la, lb) = (sa.legs[0].nrows(), sb.legs[0].nrows());

    // Per position pair: Y = F_A(p) Ĝ[p,q], Ỹ = Ĝ[p,q] F_B(q)ᵀ, X = Y F_B(q)ᵀ.
    // Per position pair: Y = F_A(p) Ĝ[p,q] and Ỹ = Ĝ[p,q] F_B(q)ᵀ; and per
    // head pair X = Y_h F_B,h'(q)ᵀ with its transpose, each a small
    // contiguous matrix over the five legs of both heads, so that the pair
    // contraction reads compact memory. In parallel.
    let same = b.is_none();
    let heads_b: Vec<Vec<DMatrix<T>>> = sb.legs.iter().map(|f| sb.by_head(f)).collect();
    type Products<T> = (DMatrix<T>, DMatrix<T>, Vec<(DMatrix<T>, DMatrix<T>)>);
    let products: Vec<Products<T>> = (0..n * n)
        .into_par_iter()
        .map(|pq| {
            let (p, q) = (pq / n, pq % n);
            let mut block = DMatrix::zeros(da + 1, db + 1);
            padded_block(g, p, q, da, db, &mut block);
            let y = mul(&sa.legs[p], &block);
            let yt = mul_nt(&block, &sb.legs[q]);
            let mut x = Vec::with_capacity(sa.heads * sb.heads);
            for y_h in sa.by_head(&y) {
                for f in &heads_b[q] {
                    let xh = mul_nt(&y_h, f);
                    let xt = xh.transpose();
                    x.push((xh, xt));
                }
            }
            (y, yt, x)
        })
        .collect();
    let mut ys = Vec::with_capacity(n * n);
    let mut yts = Vec::with_capacity(n * n);
    let mut xs = Vec::with_capacity(n * n * sa.heads * sb.heads);
    let mut xts = Vec::with_capacity(n * n * sa.heads * sb.heads);
    for (y, yt, x) in products {
        ys.push(y);
        yts.push(yt);
        for (xh, xt) in x {
            xs.push(xh);
            xts.push(xt);
        }
    }
    debug_assert_eq!(xs.len() * sa.leg_rows() * sb.leg_rows(), n * n * la * lb);
    let at = |p: usize, q: usize| p * n + q;

    // Mean legs m = F G e_0 on each side.
    let ma: Vec<DVector<T>> = (0..n)
        .map(|p| ys[at(p, 0)].column(0).into_owned())
        .collect();
    let mb: Vec<DVector<T>> = (0..n).map(|q| yts[at(0, q)].row(0).transpose()).collect();

    let (oa, ob) = (sa.out, sb.out);
    let (ra, rb): (T, T) = (from_f64(a.skip()), from_f64(sb.block.skip()));
    let (beta_a, beta_b) = (sa.beta(), sb.beta());
    let g00 = g[(0, 0)];
    let g00_4 = g00 * g00 * g00 * g00;
    let g00_5 = g00_4 * g00;

    let (phi_a, _) = sa.linearize(&ma, None);
    let (phi_b, _) = sb.linearize(&mb, None);

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
    for p in 0..n {
        for o in 0..oa {
            let row = 1 + p * oa + o;
            let (ba, pa) = (beta_a[1 + o], phi_a[(p, o)]);
            let ga0 = if ra != T::zero() {
                g[(1 + p * da + o, 0)]
            } else {
                T::zero()
            };
            for q in 0..n {
                for o2 in 0..ob {
                    let col = 1 + q * ob + o2;
                    let (bb, pb) = (beta_b[1 + o2], phi_b[(q, o2)]);
                    let mut v = pa * bb + ba * pb + ba * bb * g00_5;
                    if rb != T::zero() {
                        v += ba * rb * g[(0, 1 + q * db + o2)] * g00_4;
                    }
                    if ra != T::zero() {
                        v += ra * ga0 * g00_4 * bb;
                    }
                    if ra != T::zero() && rb != T::zero() {
                        let gab = g[(1 + p * da + o, 1 + q * db + o2)];
                        let g0b = g[(0, 1 + q * db + o2)];
                        v += ra * rb * fifth * (gab * g00_4 + four * ga0 * g0b * g00 * g00 * g00);
                    }
                    out[(row, col)] = v;
                }
            }
        }
    }

    // T1 × T2: A's attention with one leg on a column of G (B's skip input).
    if rb != T::zero() {
        let psis: Vec<Vec<DMatrix<T>>> = (0..n)
            .into_par_iter()
            .map(|q| {
                let dirs: Vec<DMatrix<T>> = (0..n)
                    .map(|p| ys[at(p, q)].columns(1, db).into_owned())
                    .collect();
                sa.linearize(&ma, Some(&dirs)).1
            })
            .collect();
        for (q, psi) in psis.iter().enumerate() {
            for (p, psi) in psi.iter().enumerate() {
                let mut blk = out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob));
                add_scaled(&mut blk, rb, psi);
            }
        }
    }
    // T2 × T1: B's attention with one leg on a row of G (A's skip input).
    if ra != T::zero() {
        let psis: Vec<Vec<DMatrix<T>>> = (0..n)
            .into_par_iter()
            .map(|p| {
                let dirs: Vec<DMatrix<T>> = (0..n)
                    .map(|q| yts[at(p, q)].rows(1, da).transpose())
                    .collect();
                sb.linearize(&mb, Some(&dirs)).1
            })
            .collect();
        for (p, psi) in psis.iter().enumerate() {
            for (q, psi) in psi.iter().enumerate() {
                let mut blk = out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob));
                add_scaled(&mut blk, ra, &psi.transpose());
            }
        }
    }

    // T1 × T1.
    let z = attention_pairs(&sa, &sb, (&xs, &xts), n, same);
    let coef: T =
        from_f64(a.scale() * sb.block.scale() / (a.score_scale() * sb.block.score_scale() * 120.0));
    let (o_a, o_b) = (a.weight(Role::O), sb.block.weight(Role::O));
    for p in 0..n {
        for q in 0..n {
            let zpq = &z[at(p, q)];
            let mut blk = out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob));
            gemm_nt(coef, &mul(o_a, zpq), o_b, T::one(), &mut blk);
        }
    }
    if same {
        // Symmetric up to rounding; the next self step relies on it exactly.
        out = (&out + out.transpose()) * from_f64::<T>(0.5);
    }
    Ok(out)
}

/// `dst += a · src` for matrices of one shape.
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

/// `Z(s,s') = Σ_{t,t'} W_A[s,t] W_B[s',t'] Σ_σ N_σ`, `(H e_v^A) × (H' e_v^B)`
/// per query pair, summed over the 120 leg bijections `σ` of every head pair.
///
/// A self product (`same`) computes each unordered pair of configurations
/// `(h, s, t)`, `(h', s', t')` once: swapping them transposes `N`.
fn attention_pairs<T: Real>(
    sa: &Side<'_, T>,
    sb: &Side<'_, T>,
    (xs, xts): (&[DMatrix<T>], &[DMatrix<T>]),
    n: usize,
    same: bool,
) -> Vec<DMatrix<T>> {
    let configs = |side: &Side<'_, T>| -> Vec<(usize, usize, usize)> {
        (0..side.heads)
            .flat_map(|h| {
                valid_pairs(&side.mask, n)
                    .into_iter()
                    .map(move |(s, t)| (h, s, t))
            })
            .collect()
    };
    let configs_a = configs(sa);
    // The index of each configuration (h', s', t') of B, for the self product.
    let mut index = vec![usize::MAX; sb.heads * n * n];
    for (j, &(h, s, t)) in configs(sb).iter().enumerate() {
        index[(h * n + s) * n + t] = j;
    }
    // Per configuration of A: its contributions (s, h, s', h', N).
    type Part<T> = Vec<((usize, usize, usize, usize), DMatrix<T>)>;
    // One task per configuration, each stealable on its own: a self
    // product's tasks shrink from the first to the last.
    let parts: Vec<Part<T>> = configs_a
        .par_iter()
        .with_max_len(1)
        .enumerate()
        .map(|(i, &(h, s, t))| {
            let mut scratch = Scratch::new(sa.ev, sb.e, sb.ev);
            let mut part: Part<T> = Vec::new();
            let mut acc = DMatrix::<T>::zeros(sa.ev, sb.ev);
            let wa: T = from_f64(sa.mask[(s, t)]);
            let blocks = |h2: usize, pos_b: [usize; 2]| Blocks {
                sa,
                sb,
                xs,
                xts,
                n,
                h,
                h2,
                pos_a: [s, t],
                pos_b,
            };
            for h2 in 0..sb.heads {
                // E_ν(Q1', Q2') reads only s': once per s'.
                let mut by_query: Vec<Option<[DMatrix<T>; 2]>> = vec![None; n];
                for t2 in 0..n {
                    let todo: Vec<usize> = (0..n)
                        .filter(|&s2| {
                            let j = index[(h2 * n + s2) * n + t2];
                            j != usize::MAX && (!same || j >= i)
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
                        acc.fill(T::zero());
                        network_sum(&b, &mut scratch, w, &mut acc);
                        if same && (h2, s2, t2) != (h, s, t) {
                            part.push(((s2, h2, s, h), acc.transpose()));
                        }
                        part.push(((s, h, s2, h2), acc.clone()));
                    }
                }
            }
            part
        })
        .collect();
    let mut z = vec![DMatrix::<T>::zeros(sa.heads * sa.ev, sb.heads * sb.ev); n * n];
    for ((s, h, s2, h2), m) in parts.into_iter().flatten() {
        let mut blk = z[s * n + s2].view_mut((h * sa.ev, h2 * sb.ev), (sa.ev, sb.ev));
        blk += m;
    }
    z
}

/// `(s, t)` with `W[s,t] ≠ 0`.
fn valid_pairs(mask: &DMatrix<f64>, n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .flat_map(|s| (0..n).map(move |t| (s, t)))
        .filter(|&(s, t)| mask[(s, t)] != 0.0)
        .collect()
}

/// The per-leg products of one head pair at one choice of the four positions.
struct Blocks<'a, T: Real> {
    sa: &'a Side<'a, T>,
    sb: &'a Side<'a, T>,
    xs: &'a [DMatrix<T>],
    xts: &'a [DMatrix<T>],
    n: usize,
    h: usize,
    h2: usize,
    pos_a: [usize; 2],
    pos_b: [usize; 2],
}

impl<T: Real> Blocks<'_, T> {
    /// `X_{l,l'} = U^A_l(p) Ĝ[p,q] U^B_{l'}(q)ᵀ` for this head pair, `w_A(l) × w_B(l')`.
    fn x(&self, l: usize, l2: usize) -> DMatrixView<'_, T> {
        self.xs[self.index(l, l2)].view(
            (self.sa.head_row(l), self.sb.head_row(l2)),
            (self.sa.leg_width(l), self.sb.leg_width(l2)),
        )
    }

    /// Which head-pair product holds `X_{l,l'}`.
    fn index(&self, l: usize, l2: usize) -> usize {
        let p = self.pos_a[usize::from(!AT_QUERY[l])];
        let q = self.pos_b[usize::from(!AT_QUERY[l2])];
        ((p * self.n + q) * self.sa.heads + self.h) * self.sb.heads + self.h2
    }

    /// `X_{l,l'}ᵀ`, from the transposed products.
    fn xt(&self, l: usize, l2: usize) -> DMatrixView<'_, T> {
        self.xts[self.index(l, l2)].view(
            (self.sb.head_row(l2), self.sa.head_row(l)),
            (self.sb.leg_width(l2), self.sa.leg_width(l)),
        )
    }
}

/// Buffers of one task.
struct Scratch<T: Real> {
    /// `E_ν(u, V')` for A node `ν` and B score leg `u`: `e_B × e_v^B`.
    to_v: Vec<DMatrix<T>>,
    /// `E_ν(u, w')` for `u ∈ {0,1}`, `w' ∈ {2,3}`: `e_B × e_B`.
    cross: Vec<DMatrix<T>>,
    /// Their transposes, `E_ν(w', u)`.
    cross_t: Vec<DMatrix<T>>,
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
            cross_t: vec![DMatrix::zeros(eb, eb); 8],
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
    gemm(one, &b.xt(l1, x2), &b.x(l2, y2), zero, out);
    gemm(one, &b.xt(l2, x2), &b.x(l1, y2), one, out);
}

/// `tr E_ν(x', y')` for `x', y'` in one B node (they share its index).
fn node_trace<T: Real>(b: &Blocks<'_, T>, nu: usize, x2: usize, y2: usize) -> T {
    let (l1, l2) = (2 * nu, 2 * nu + 1);
    b.x(l1, x2).dot(&b.x(l2, y2)) + b.x(l2, x2).dot(&b.x(l1, y2))
}

/// Adds `w · Σ_σ N_σ` (`e_v^A × e_v^B`) for one head pair and position
/// choice into `target`.
///
/// `s.to_v` and `s.cross` hold this position choice's `E` matrices (the
/// caller computes each once for every choice that shares it).
fn network_sum<T: Real>(b: &Blocks<'_, T>, s: &mut Scratch<T>, w: T, target: &mut DMatrix<T>) {
    let (one, zero) = (T::one(), T::zero());
    for (c, t) in s.cross.iter().zip(s.cross_t.iter_mut()) {
        t.tr_copy_from(c);
    }
    // tr E_ν over B node {0,1} and {2,3}.
    let tr = |nu: usize, node: usize| node_trace(b, nu, 2 * node, 2 * node + 1);
    let traces = [[tr(0, 0), tr(0, 1)], [tr(1, 0), tr(1, 1)]];
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
    s.m.copy_from(&b.x(4, 4));
    s.m *= scalar;

    // σ(V) = z', a score leg: the path enters B node(z') and leaves by u.
    for (z2, &u) in PARTNER.iter().enumerate() {
        let other = if u < 2 { 1 } else { 0 };
        s.r.fill(zero);
        for nu in 0..2 {
            let bar = 1 - nu;
            // ν takes {u, V'}; ν̄ takes the other node's two legs.
            add_scaled(&mut s.r, traces[bar][other], &s.to_v[nu * 4 + u]);
            // ν takes {u, w'} with w' in the other node; ν̄ takes {partner w', V'}.
            for w2 in [2 * other, 2 * other + 1] {
                let (i, t) = cross_index(u, w2);
                let e = if t {
                    &s.cross_t[nu * 4 + i]
                } else {
                    &s.cross[nu * 4 + i]
                };
                gemm(one, e, &s.to_v[bar * 4 + PARTNER[w2]], one, &mut s.r);
            }
        }
        gemm(one, &b.x(4, z2), &s.r, one, &mut s.m);
    }
    add_scaled(target, w, &s.m);
}
