//! An independent dense reference for sequence models (SPEC §1, §2, §7).
//!
//! Written from the specification alone; it shares no code with the
//! library (only nalgebra, rand and the suite's random draws in
//! `common`). What it does:
//!
//! * networks are plain parameter data ([`SeqNet`] of [`Block`]s) with two
//!   forward passes of their own: a plain one on `X ∈ R^{n×d}`
//!   ([`Block::forward`], written with nalgebra matrix products, as SPEC §7
//!   reads) and a **homogeneous** one on the flattened padded stream
//!   `x̃ = (c, X[0], …, X[n−1])` ([`Block::forward_homogeneous`], written
//!   with scalar loops), where every bias, the residual and the constant
//!   output are multiplied by the power of `c` that makes the block a
//!   homogeneous polynomial of its order `k` (1 linear, 2 bilinear, 5
//!   attention). At `c = 1` the two agree, which the sanity tests check.
//! * each block's **symmetrised padded tensor** ([`dense_tensor`]) is read
//!   off the homogeneous forward by multilinear polarisation,
//!   `T(v_1,…,v_k) = 1/(2^k k!) Σ_{ε∈{±1}^k} (Π ε_j) F(Σ ε_j v_j)`, on basis
//!   vectors: exact up to rounding (every evaluation point has small
//!   integer coordinates), and the unique symmetric tensor of the block's
//!   polynomial, i.e. its symmetrisation over the full `S_k`.
//! * the Gram recursion `G' = T_A (G ⊗ … ⊗ G) T_Bᵀ` ([`gram_step`]) is done
//!   densely, one leg at a time, from `G_0 = I` on the flattened stream;
//!   `⟨A,B⟩ = Σ_{o≥1} G_L[o,o]` ([`inner_product`]) and the cosine
//!   ([`similarity`]).
//!
//! Sizes must stay tiny: a block of order `k` on a stream of `w = n d + 1`
//! padded coordinates has `(n d_out + 1) · w^k` dense entries (an attention
//! block with `n = 3, d = 3`: `10 · 10^5`).
//!
//! It also carries the function-preserving transformations of SPEC §7
//! (head permutation, score-factor swap, value/output change of basis,
//! `Q1/K1` rescaling, rotary-plane rotation, residual-stream change of
//! basis) on the plain data, for the invariance tests.
#![allow(dead_code)]

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;

// Random parameters are drawn with the suite's helpers (`tests/common`).
use crate::common::{gaussian_matrix, gaussian_vector};

// ---------------------------------------------------------------------------
// Blocks as plain data

/// The attention mask `W[s,t]`.
#[derive(Clone, Debug, PartialEq)]
pub enum MaskKind {
    /// `t ≤ s` (the default).
    Causal,
    /// All ones.
    Full,
    /// `t == s`.
    Diagonal,
    /// A given `n × n` matrix, `W[s,t]` at row `s`, column `t`.
    Matrix(DMatrix<f64>),
}

impl MaskKind {
    pub fn weight(&self, s: usize, t: usize) -> f64 {
        match self {
            MaskKind::Causal => f64::from(u8::from(t <= s)),
            MaskKind::Full => 1.0,
            MaskKind::Diagonal => f64::from(u8::from(t == s)),
            MaskKind::Matrix(w) => w[(s, t)],
        }
    }

    /// The mask as an `n × n` matrix.
    pub fn matrix(&self, n: usize) -> DMatrix<f64> {
        DMatrix::from_fn(n, n, |s, t| self.weight(s, t))
    }
}

/// A position-wise linear block `y = W x + b`.
#[derive(Clone, Debug)]
pub struct LinearParams {
    pub w: DMatrix<f64>,
    pub b: Option<DVector<f64>>,
}

/// A position-wise bilinear block
/// `y = s·(D((L x + b_L) ∘ (R x + b_R)) + b_D) + (1−s)·x`.
#[derive(Clone, Debug)]
pub struct BilinearParams {
    pub l: DMatrix<f64>,
    pub r: DMatrix<f64>,
    pub d: Option<DMatrix<f64>>,
    pub bl: Option<DVector<f64>>,
    pub br: Option<DVector<f64>>,
    pub bd: Option<DVector<f64>>,
    pub s: f64,
}

/// Bilinear attention (SPEC §7). `None` in an optional setting means "the
/// library's default" (the conversion then leaves the builder call out);
/// the oracle resolves it itself: mask causal, `c = e²`, `α = 1`,
/// `r = 1 − α`, no rotary.
#[derive(Clone, Debug)]
pub struct AttnParams {
    pub heads: usize,
    pub q1: DMatrix<f64>,
    pub k1: DMatrix<f64>,
    pub q2: DMatrix<f64>,
    pub k2: DMatrix<f64>,
    pub v: DMatrix<f64>,
    pub o: DMatrix<f64>,
    pub bq1: Option<DVector<f64>>,
    pub bk1: Option<DVector<f64>>,
    pub bq2: Option<DVector<f64>>,
    pub bk2: Option<DVector<f64>>,
    pub bv: Option<DVector<f64>>,
    pub bo: Option<DVector<f64>>,
    pub rotary: Option<f64>,
    pub mask: Option<MaskKind>,
    pub score_scale: Option<f64>,
    pub alpha: Option<f64>,
    pub skip: Option<f64>,
    /// Build through `Attention::quadratic` (needs `q1 = q2`, `k1 = k2`,
    /// equal biases).
    pub quadratic: bool,
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Block {
    Linear(LinearParams),
    Bilinear(BilinearParams),
    Attention(AttnParams),
}

/// A sequence model as plain data.
#[derive(Clone, Debug)]
pub struct SeqNet {
    pub blocks: Vec<Block>,
}

fn add_opt(y: DVector<f64>, b: &Option<DVector<f64>>) -> DVector<f64> {
    match b {
        Some(b) => y + b,
        None => y,
    }
}

fn opt_entry(b: &Option<DVector<f64>>, i: usize) -> f64 {
    b.as_ref().map_or(0.0, |b| b[i])
}

/// Rotary position encoding, "half" layout, on one head vector at
/// position `s`: pair `j < e/2` with `j + e/2`, angle `s·base^{−2j/e}`.
pub fn rope(x: &[f64], s: usize, base: f64) -> Vec<f64> {
    let e = x.len();
    assert!(e.is_multiple_of(2), "rotary needs an even head width");
    let half = e / 2;
    let mut out = x.to_vec();
    for j in 0..half {
        let theta = base.powf(-2.0 * j as f64 / e as f64);
        let (sin, cos) = (s as f64 * theta).sin_cos();
        out[j] = x[j] * cos - x[j + half] * sin;
        out[j + half] = x[j + half] * cos + x[j] * sin;
    }
    out
}

impl LinearParams {
    pub fn random(rng: &mut StdRng, out: usize, inp: usize, bias: bool, scale: f64) -> Self {
        Self {
            w: gaussian_matrix(rng, out, inp, scale / (inp as f64).sqrt()),
            b: bias.then(|| gaussian_vector(rng, out, 0.5 * scale)),
        }
    }
}

impl BilinearParams {
    /// A residual-stream bilinear MLP `m → m` with hidden width `h`, a
    /// down projection, biases as asked and residual scale `s`.
    pub fn random(rng: &mut StdRng, m: usize, h: usize, biases: bool, s: f64, scale: f64) -> Self {
        let sc = scale / (m as f64).sqrt();
        Self {
            l: gaussian_matrix(rng, h, m, sc),
            r: gaussian_matrix(rng, h, m, sc),
            d: Some(gaussian_matrix(rng, m, h, scale / (h as f64).sqrt())),
            bl: biases.then(|| gaussian_vector(rng, h, 0.5 * scale)),
            br: biases.then(|| gaussian_vector(rng, h, 0.5 * scale)),
            bd: biases.then(|| gaussian_vector(rng, m, 0.5 * scale)),
            s,
        }
    }

    pub fn hidden(&self) -> usize {
        self.l.nrows()
    }

    pub fn output_width(&self) -> usize {
        self.d.as_ref().map_or(self.hidden(), |d| d.nrows())
    }
}

/// What a random attention block gets.
#[derive(Clone, Debug)]
pub struct AttnOptions {
    pub heads: usize,
    /// Rows per head of q/k.
    pub e: usize,
    /// Rows per head of v.
    pub ev: usize,
    pub qk_bias: bool,
    pub v_bias: bool,
    pub o_bias: bool,
    pub rotary: Option<f64>,
    pub mask: Option<MaskKind>,
    pub score_scale: Option<f64>,
    pub alpha: Option<f64>,
    pub skip: Option<f64>,
    pub quadratic: bool,
    /// Overall weight scale.
    pub scale: f64,
}

impl Default for AttnOptions {
    fn default() -> Self {
        Self {
            heads: 2,
            e: 2,
            ev: 2,
            qk_bias: true,
            v_bias: true,
            o_bias: true,
            rotary: Some(10_000.0),
            mask: None,
            score_scale: None,
            alpha: None,
            skip: None,
            quadratic: false,
            scale: 1.0,
        }
    }
}

impl AttnParams {
    /// A random attention block on a stream of width `d` (`d → d`).
    pub fn random(rng: &mut StdRng, d: usize, o: &AttnOptions) -> Self {
        let (h, e, ev) = (o.heads, o.e, o.ev);
        let sc = o.scale / (d as f64).sqrt();
        let q1 = gaussian_matrix(rng, h * e, d, sc);
        let k1 = gaussian_matrix(rng, h * e, d, sc);
        let (q2, k2) = if o.quadratic {
            (q1.clone(), k1.clone())
        } else {
            (
                gaussian_matrix(rng, h * e, d, sc),
                gaussian_matrix(rng, h * e, d, sc),
            )
        };
        let v = gaussian_matrix(rng, h * ev, d, sc);
        let out = gaussian_matrix(rng, d, h * ev, o.scale / ((h * ev) as f64).sqrt());
        let mut bias = |len: usize, on: bool| on.then(|| gaussian_vector(rng, len, 0.5 * o.scale));
        let bq1 = bias(h * e, o.qk_bias);
        let bk1 = bias(h * e, o.qk_bias);
        let (bq2, bk2) = if o.quadratic {
            (bq1.clone(), bk1.clone())
        } else {
            (bias(h * e, o.qk_bias), bias(h * e, o.qk_bias))
        };
        let bv = bias(h * ev, o.v_bias);
        let bo = bias(d, o.o_bias);
        Self {
            heads: h,
            q1,
            k1,
            q2,
            k2,
            v,
            o: out,
            bq1,
            bk1,
            bq2,
            bk2,
            bv,
            bo,
            rotary: o.rotary,
            mask: o.mask.clone(),
            score_scale: o.score_scale,
            alpha: o.alpha,
            skip: o.skip,
            quadratic: o.quadratic,
        }
    }

    pub fn e(&self) -> usize {
        self.q1.nrows() / self.heads
    }

    pub fn ev(&self) -> usize {
        self.v.nrows() / self.heads
    }

    pub fn d(&self) -> usize {
        self.q1.ncols()
    }

    /// The mask with its default resolved.
    pub fn mask_kind(&self) -> MaskKind {
        self.mask.clone().unwrap_or(MaskKind::Causal)
    }

    /// `c`, default `e²`.
    pub fn c(&self) -> f64 {
        self.score_scale.unwrap_or((self.e() * self.e()) as f64)
    }

    /// `α`, default 1.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(1.0)
    }

    /// `r`, default `1 − α`.
    pub fn r(&self) -> f64 {
        self.skip.unwrap_or(1.0 - self.alpha())
    }

    /// Plain forward on `X` (`n × d`), as SPEC §7 reads, with nalgebra.
    pub fn forward(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        let n = x.nrows();
        let (hh, e, ev) = (self.heads, self.e(), self.ev());
        let mask = self.mask_kind();
        let mut z = DMatrix::<f64>::zeros(n, hh * ev);
        for h in 0..hh {
            let project = |w: &DMatrix<f64>, b: &Option<DVector<f64>>, s: usize, rows: usize| {
                let wh = w.rows(h * rows, rows);
                let mut y = wh * x.row(s).transpose();
                if let Some(b) = b {
                    y += b.rows(h * rows, rows);
                }
                y
            };
            let rot = |y: DVector<f64>, s: usize| match self.rotary {
                Some(base) => DVector::from_vec(rope(y.as_slice(), s, base)),
                None => y,
            };
            let q1: Vec<_> = (0..n)
                .map(|s| rot(project(&self.q1, &self.bq1, s, e), s))
                .collect();
            let k1: Vec<_> = (0..n)
                .map(|t| rot(project(&self.k1, &self.bk1, t, e), t))
                .collect();
            let q2: Vec<_> = (0..n)
                .map(|s| rot(project(&self.q2, &self.bq2, s, e), s))
                .collect();
            let k2: Vec<_> = (0..n)
                .map(|t| rot(project(&self.k2, &self.bk2, t, e), t))
                .collect();
            let v: Vec<_> = (0..n).map(|t| project(&self.v, &self.bv, t, ev)).collect();
            for s in 0..n {
                for t in 0..n {
                    let p = mask.weight(s, t) * q1[s].dot(&k1[t]) * q2[s].dot(&k2[t]) / self.c();
                    for u in 0..ev {
                        z[(s, h * ev + u)] += p * v[t][u];
                    }
                }
            }
        }
        let mut y: DMatrix<f64> = &z * self.o.transpose();
        if let Some(bo) = &self.bo {
            for s in 0..n {
                for i in 0..y.ncols() {
                    y[(s, i)] += bo[i];
                }
            }
        }
        x * self.r() + y * self.alpha()
    }
}

impl Block {
    /// The order of the block's padded form.
    pub fn order(&self) -> usize {
        match self {
            Block::Linear(_) => 1,
            Block::Bilinear(_) => 2,
            Block::Attention(_) => 5,
        }
    }

    /// Width per position read.
    pub fn input_width(&self) -> usize {
        match self {
            Block::Linear(p) => p.w.ncols(),
            Block::Bilinear(p) => p.l.ncols(),
            Block::Attention(p) => p.d(),
        }
    }

    /// Width per position written.
    pub fn output_width(&self) -> usize {
        match self {
            Block::Linear(p) => p.w.nrows(),
            Block::Bilinear(p) => p.output_width(),
            Block::Attention(p) => p.o.nrows(),
        }
    }

    /// Plain forward on `X` (`n × d`), one row per position.
    pub fn forward(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        match self {
            Block::Linear(p) => {
                let rows: Vec<_> = (0..x.nrows())
                    .map(|s| add_opt(&p.w * x.row(s).transpose(), &p.b).transpose())
                    .collect();
                DMatrix::from_rows(&rows)
            }
            Block::Bilinear(p) => {
                let rows: Vec<_> = (0..x.nrows())
                    .map(|s| {
                        let xs = x.row(s).transpose();
                        let a = add_opt(&p.l * &xs, &p.bl);
                        let b = add_opt(&p.r * &xs, &p.br);
                        let z = a.component_mul(&b);
                        let y = add_opt(
                            match &p.d {
                                Some(d) => d * z,
                                None => z,
                            },
                            &p.bd,
                        );
                        if p.s == 1.0 {
                            y.transpose()
                        } else {
                            (y * p.s + xs * (1.0 - p.s)).transpose()
                        }
                    })
                    .collect();
                DMatrix::from_rows(&rows)
            }
            Block::Attention(p) => p.forward(x),
        }
    }

    /// The homogeneous form on the flattened padded stream
    /// `x̃ = (c, X[0], …, X[n−1])`: returns `(c^k, Y[0], …, Y[n−1])`, every
    /// term of total degree `k` in `x̃` (so that at `c = 1` it is the plain
    /// forward, and `F(λx̃) = λ^k F(x̃)`). Scalar loops, no nalgebra
    /// products: a second, independent reading of the definitions.
    pub fn forward_homogeneous(&self, xt: &[f64], n: usize) -> Vec<f64> {
        let m = self.input_width();
        assert_eq!(xt.len(), n * m + 1);
        let c = xt[0];
        let xs = |s: usize, i: usize| xt[1 + s * m + i];
        let out_w = self.output_width();
        let mut y = vec![0.0; 1 + n * out_w];
        y[0] = c.powi(self.order() as i32);
        match self {
            Block::Linear(p) => {
                for s in 0..n {
                    for o in 0..out_w {
                        let mut acc = opt_entry(&p.b, o) * c;
                        for i in 0..m {
                            acc += p.w[(o, i)] * xs(s, i);
                        }
                        y[1 + s * out_w + o] = acc;
                    }
                }
            }
            Block::Bilinear(p) => {
                let h = p.hidden();
                for s in 0..n {
                    let mut z = vec![0.0; h];
                    for (u, zu) in z.iter_mut().enumerate() {
                        let mut a = opt_entry(&p.bl, u) * c;
                        let mut b = opt_entry(&p.br, u) * c;
                        for i in 0..m {
                            a += p.l[(u, i)] * xs(s, i);
                            b += p.r[(u, i)] * xs(s, i);
                        }
                        *zu = a * b;
                    }
                    for o in 0..out_w {
                        let mut acc = opt_entry(&p.bd, o) * c * c;
                        for (u, zu) in z.iter().enumerate() {
                            acc += match &p.d {
                                Some(d) => d[(o, u)] * zu,
                                None => f64::from(u8::from(o == u)) * zu,
                            };
                        }
                        let mut val = p.s * acc;
                        if p.s != 1.0 {
                            val += (1.0 - p.s) * c * xs(s, o);
                        }
                        y[1 + s * out_w + o] = val;
                    }
                }
            }
            Block::Attention(p) => {
                let (hh, e, ev) = (p.heads, p.e(), p.ev());
                let mask = p.mask_kind();
                let (alpha, r, cs) = (p.alpha(), p.r(), p.c());
                // proj[s][row] = W[row,:] X[s] + b[row] c, then rotary per head.
                let project = |w: &DMatrix<f64>, b: &Option<DVector<f64>>, rot: bool| {
                    let rows = w.nrows();
                    let mut out = vec![vec![0.0; rows]; n];
                    for (s, os) in out.iter_mut().enumerate() {
                        for (row, v) in os.iter_mut().enumerate() {
                            let mut acc = opt_entry(b, row) * c;
                            for i in 0..m {
                                acc += w[(row, i)] * xs(s, i);
                            }
                            *v = acc;
                        }
                        if rot && let Some(base) = p.rotary {
                            for h in 0..hh {
                                let r = rope(&os[h * e..(h + 1) * e], s, base);
                                os[h * e..(h + 1) * e].copy_from_slice(&r);
                            }
                        }
                    }
                    out
                };
                let q1 = project(&p.q1, &p.bq1, true);
                let k1 = project(&p.k1, &p.bk1, true);
                let q2 = project(&p.q2, &p.bq2, true);
                let k2 = project(&p.k2, &p.bk2, true);
                let v = project(&p.v, &p.bv, false);
                let c4 = c * c * c * c;
                for s in 0..n {
                    let mut z = vec![0.0; hh * ev];
                    for h in 0..hh {
                        for t in 0..n {
                            let w = mask.weight(s, t);
                            if w == 0.0 {
                                continue;
                            }
                            let (mut d1, mut d2) = (0.0, 0.0);
                            for j in h * e..(h + 1) * e {
                                d1 += q1[s][j] * k1[t][j];
                                d2 += q2[s][j] * k2[t][j];
                            }
                            let score = w * d1 * d2 / cs;
                            for u in h * ev..(h + 1) * ev {
                                z[u] += score * v[t][u];
                            }
                        }
                    }
                    for o in 0..out_w {
                        let mut acc = opt_entry(&p.bo, o) * c4 * c;
                        for (u, zu) in z.iter().enumerate() {
                            acc += p.o[(o, u)] * zu;
                        }
                        y[1 + s * out_w + o] = r * c4 * xs(s, o) + alpha * acc;
                    }
                }
            }
        }
        y
    }
}

impl SeqNet {
    pub fn input_width(&self) -> usize {
        self.blocks[0].input_width()
    }

    pub fn output_width(&self) -> usize {
        self.blocks.last().unwrap().output_width()
    }

    pub fn forward(&self, x: &DMatrix<f64>) -> DMatrix<f64> {
        self.blocks.iter().fold(x.clone(), |h, b| b.forward(&h))
    }

    /// The composition of the blocks' homogeneous forwards, of degree
    /// `Π k_ℓ`.
    pub fn forward_homogeneous(&self, xt: &[f64], n: usize) -> Vec<f64> {
        self.blocks
            .iter()
            .fold(xt.to_vec(), |h, b| b.forward_homogeneous(&h, n))
    }

    pub fn degree(&self) -> usize {
        self.blocks.iter().map(Block::order).product()
    }

    /// The research `Transformer`: a linear embed `d_in → d`, per layer an
    /// attention block with `r = 1 − α` (the default) and a bilinear MLP
    /// with lerp residual `s = α` and a down bias, then a linear head
    /// `d → d_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn transformer(
        rng: &mut StdRng,
        d_in: usize,
        d: usize,
        d_out: usize,
        layers: usize,
        mlp_hidden: usize,
        alpha: f64,
        attn: &AttnOptions,
    ) -> Self {
        let mut blocks = vec![Block::Linear(LinearParams::random(
            rng, d, d_in, false, 1.0,
        ))];
        for _ in 0..layers {
            let a = AttnOptions {
                alpha: Some(alpha),
                skip: None,
                ..attn.clone()
            };
            blocks.push(Block::Attention(AttnParams::random(rng, d, &a)));
            let mut mlp = BilinearParams::random(rng, d, mlp_hidden, false, alpha, 1.0);
            mlp.bd = Some(gaussian_vector(rng, d, 0.5));
            blocks.push(Block::Bilinear(mlp));
        }
        blocks.push(Block::Linear(LinearParams::random(
            rng, d_out, d, false, 1.0,
        )));
        SeqNet { blocks }
    }
}

// ---------------------------------------------------------------------------
// Dense symmetrised tensors by polarisation

/// A block's dense padded tensor: `t` is `out × w^k` (column-major), the
/// column of multi-index `(i_0, …, i_{k−1})` is `Σ_j i_j w^j`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub order: usize,
    pub width: usize,
    pub t: DMatrix<f64>,
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

fn factorial(k: usize) -> f64 {
    (1..=k).map(|i| i as f64).product()
}

/// Calls `f` on every non-decreasing sequence of length `k` over `0..w`.
fn for_each_multiset(w: usize, k: usize, f: &mut impl FnMut(&[usize])) {
    fn rec(w: usize, k: usize, start: usize, cur: &mut Vec<usize>, f: &mut impl FnMut(&[usize])) {
        if cur.len() == k {
            f(cur);
            return;
        }
        for i in start..w {
            cur.push(i);
            rec(w, k, i, cur, f);
            cur.pop();
        }
    }
    rec(w, k, 0, &mut Vec::with_capacity(k), f);
}

/// The next lexicographic permutation in place; false after the last.
fn next_permutation(a: &mut [usize]) -> bool {
    let n = a.len();
    if n < 2 {
        return false;
    }
    let mut i = n - 1;
    while i > 0 && a[i - 1] >= a[i] {
        i -= 1;
    }
    if i == 0 {
        return false;
    }
    let mut j = n - 1;
    while a[j] <= a[i - 1] {
        j -= 1;
    }
    a.swap(i - 1, j);
    a[i..].reverse();
    true
}

/// The symmetric `k`-linear form of a homogeneous polynomial map `F` of
/// degree `k` on `R^w` (`F` returns `out` values), as a dense tensor.
///
/// For a multiset of basis indices with distinct members `i` of
/// multiplicity `a_i`, the polarisation sum over `ε ∈ {±1}^k` groups into
/// `m_i` minus signs among the `a_i` copies of `e_i`:
/// `T = 1/(2^k k!) Σ_m Π_i C(a_i, m_i) (−1)^{m_i} F(Σ_i (a_i − 2m_i) e_i)`.
/// `F(−x) = (−1)^k F(x)` makes a point and its negation contribute equally,
/// so only points whose first non-zero coordinate is positive are
/// evaluated (the zero point contributes `F(0) = 0`).
pub fn polarise(w: usize, k: usize, out: usize, f: &mut impl FnMut(&[f64]) -> Vec<f64>) -> Dense {
    let cols = w.pow(k as u32);
    let mut t = DMatrix::zeros(out, cols);
    let norm = 2f64.powi(k as i32) * factorial(k);
    let mut point = vec![0.0; w];
    for_each_multiset(w, k, &mut |idx: &[usize]| {
        let mut support: Vec<usize> = Vec::new();
        let mut mult: Vec<usize> = Vec::new();
        for &i in idx {
            if support.last() == Some(&i) {
                *mult.last_mut().unwrap() += 1;
            } else {
                support.push(i);
                mult.push(1);
            }
        }
        let mut value = vec![0.0; out];
        let mut minus = vec![0usize; support.len()];
        loop {
            let coeffs: Vec<i64> = mult
                .iter()
                .zip(&minus)
                .map(|(&a, &m)| a as i64 - 2 * m as i64)
                .collect();
            if let Some(&first) = coeffs.iter().find(|&&c| c != 0)
                && first > 0
            {
                let mut weight = 2.0;
                for (&a, &m) in mult.iter().zip(&minus) {
                    weight *= binomial(a, m) * if m % 2 == 0 { 1.0 } else { -1.0 };
                }
                for (&i, &c) in support.iter().zip(&coeffs) {
                    point[i] = c as f64;
                }
                let y = f(&point);
                assert_eq!(y.len(), out);
                for (acc, yo) in value.iter_mut().zip(&y) {
                    *acc += weight * yo;
                }
                for &i in &support {
                    point[i] = 0.0;
                }
            }
            // Odometer over m_i ∈ 0..=a_i.
            let mut pos = 0;
            loop {
                if pos == minus.len() {
                    break;
                }
                if minus[pos] < mult[pos] {
                    minus[pos] += 1;
                    break;
                }
                minus[pos] = 0;
                pos += 1;
            }
            if pos == minus.len() {
                break;
            }
        }
        for v in &mut value {
            *v /= norm;
        }
        let mut perm = idx.to_vec();
        loop {
            let col = perm.iter().rev().fold(0, |acc, &i| acc * w + i);
            for (o, v) in value.iter().enumerate() {
                t[(o, col)] = *v;
            }
            if !next_permutation(&mut perm) {
                break;
            }
        }
    });
    Dense {
        order: k,
        width: w,
        t,
    }
}

/// A block's symmetrised padded tensor on the flattened stream of `n`
/// positions.
pub fn dense_tensor(block: &Block, n: usize) -> Dense {
    let w = n * block.input_width() + 1;
    let out = n * block.output_width() + 1;
    polarise(w, block.order(), out, &mut |x| {
        block.forward_homogeneous(x, n)
    })
}

/// The whole network's tensor of its composed homogeneous forward (degree
/// `Π k_ℓ`): the symmetrised end-to-end tensor. With at most one block of
/// order above 1 that is the end-to-end tensor itself.
pub fn dense_tensor_of_net(net: &SeqNet, n: usize) -> Dense {
    let w = n * net.input_width() + 1;
    let out = n * net.output_width() + 1;
    polarise(w, net.degree(), out, &mut |x| net.forward_homogeneous(x, n))
}

impl Dense {
    /// `T ×_1 M ×_2 M … ×_k M` on every leg with the same `w × w'` matrix
    /// `M`, returned as `(w'^k × out)`: the rows in the column order of a
    /// tensor on `w'` (leg 0 fastest).
    fn contract_legs(&self, m: &DMatrix<f64>) -> DMatrix<f64> {
        assert_eq!(m.nrows(), self.width);
        let (w, w2) = (self.width, m.ncols());
        // Layout, fastest first: [o, L_0, …, L_{k−1}]. Each pass takes the
        // slowest leg as the column of a (rest × w) matrix, multiplies by M
        // and transposes, which moves the new leg to the fastest place:
        // after k passes the layout is [J_0, …, J_{k−1}, o].
        let mut data = self.t.as_slice().to_vec();
        for _ in 0..self.order {
            let rest = data.len() / w;
            let a = DMatrix::from_vec(rest, w, data);
            let b = (a * m).transpose();
            data = b.as_slice().to_vec();
        }
        let out = self.t.nrows();
        DMatrix::from_vec(w2.pow(self.order as u32), out, data)
    }

    /// `T(x, …, x)`.
    pub fn apply(&self, x: &[f64]) -> DVector<f64> {
        let m = DMatrix::from_column_slice(x.len(), 1, x);
        let r = self.contract_legs(&m);
        r.row(0).transpose()
    }
}

/// One step of the Gram recursion: `G' = T_A (G ⊗ … ⊗ G) T_Bᵀ`.
pub fn gram_step(ta: &Dense, tb: &Dense, g: &DMatrix<f64>) -> DMatrix<f64> {
    assert_eq!(ta.order, tb.order, "block orders must agree");
    assert_eq!((g.nrows(), g.ncols()), (ta.width, tb.width));
    let x = ta.contract_legs(g);
    (&tb.t * x).transpose()
}

/// Every block's dense tensor at context `n`.
pub fn tensors(net: &SeqNet, n: usize) -> Vec<Dense> {
    net.blocks.iter().map(|b| dense_tensor(b, n)).collect()
}

/// `G_L` from `G_0 = I`.
pub fn final_gram(ta: &[Dense], tb: &[Dense]) -> DMatrix<f64> {
    assert_eq!(ta.len(), tb.len(), "depths must agree");
    let mut g = DMatrix::identity(ta[0].width, tb[0].width);
    for (a, b) in ta.iter().zip(tb) {
        g = gram_step(a, b, &g);
    }
    g
}

/// `⟨A,B⟩ = Σ_{o≥1} G_L[o,o]`.
pub fn inner_of(ta: &[Dense], tb: &[Dense]) -> f64 {
    let g = final_gram(ta, tb);
    assert_eq!(g.nrows(), g.ncols(), "output widths must agree");
    (1..g.nrows()).map(|o| g[(o, o)]).sum()
}

pub fn inner_product(a: &SeqNet, b: &SeqNet, n: usize) -> f64 {
    inner_of(&tensors(a, n), &tensors(b, n))
}

/// The three inner products `(⟨A,B⟩, ⟨A,A⟩, ⟨B,B⟩)`.
pub fn inner_products(a: &SeqNet, b: &SeqNet, n: usize) -> (f64, f64, f64) {
    let (ta, tb) = (tensors(a, n), tensors(b, n));
    (inner_of(&ta, &tb), inner_of(&ta, &ta), inner_of(&tb, &tb))
}

pub fn similarity(a: &SeqNet, b: &SeqNet, n: usize) -> f64 {
    let (ab, aa, bb) = inner_products(a, b, n);
    ab / (aa * bb).sqrt()
}

// ---------------------------------------------------------------------------
// Function-preserving transformations (SPEC §2, §7)

fn attn_mut(net: &mut SeqNet, index: usize) -> &mut AttnParams {
    match &mut net.blocks[index] {
        Block::Attention(p) => p,
        _ => panic!("block {index} is not attention"),
    }
}

fn permute_row_blocks(m: &mut DMatrix<f64>, perm: &[usize], size: usize) {
    let src = m.clone();
    for (h, &to) in perm.iter().enumerate() {
        m.rows_mut(to * size, size)
            .copy_from(&src.rows(h * size, size));
    }
}

fn permute_vec_blocks(v: &mut Option<DVector<f64>>, perm: &[usize], size: usize) {
    if let Some(v) = v {
        let src = v.clone();
        for (h, &to) in perm.iter().enumerate() {
            v.rows_mut(to * size, size)
                .copy_from(&src.rows(h * size, size));
        }
    }
}

impl AttnParams {
    /// Head `h` moves to place `perm[h]`.
    pub fn permute_heads(&mut self, perm: &[usize]) {
        let (e, ev) = (self.e(), self.ev());
        for m in [&mut self.q1, &mut self.k1, &mut self.q2, &mut self.k2] {
            permute_row_blocks(m, perm, e);
        }
        for b in [&mut self.bq1, &mut self.bk1, &mut self.bq2, &mut self.bk2] {
            permute_vec_blocks(b, perm, e);
        }
        permute_row_blocks(&mut self.v, perm, ev);
        permute_vec_blocks(&mut self.bv, perm, ev);
        let mut ot = self.o.transpose();
        permute_row_blocks(&mut ot, perm, ev);
        self.o = ot.transpose();
    }

    /// `(Q1_h, K1_h, b) ↔ (Q2_h, K2_h, b)` in head `h`.
    pub fn swap_score_factors(&mut self, h: usize) {
        let e = self.e();
        let swap_rows = |a: &mut DMatrix<f64>, b: &mut DMatrix<f64>| {
            let t = a.rows(h * e, e).clone_owned();
            a.rows_mut(h * e, e).copy_from(&b.rows(h * e, e));
            b.rows_mut(h * e, e).copy_from(&t);
        };
        swap_rows(&mut self.q1, &mut self.q2);
        swap_rows(&mut self.k1, &mut self.k2);
        let swap_bias = |a: &mut Option<DVector<f64>>, b: &mut Option<DVector<f64>>| match (a, b) {
            (Some(a), Some(b)) => {
                let t = a.rows(h * e, e).clone_owned();
                a.rows_mut(h * e, e).copy_from(&b.rows(h * e, e));
                b.rows_mut(h * e, e).copy_from(&t);
            }
            (None, None) => {}
            _ => panic!("swap with one bias only"),
        };
        swap_bias(&mut self.bq1, &mut self.bq2);
        swap_bias(&mut self.bk1, &mut self.bk2);
    }

    /// `V_h → P V_h` (and `b_v,h`), `O_h → O_h P⁻¹`.
    pub fn change_value_basis(&mut self, h: usize, p: &DMatrix<f64>) {
        let ev = self.ev();
        let p_inv = p.clone().try_inverse().expect("P must be invertible");
        let vh = p * self.v.rows(h * ev, ev);
        self.v.rows_mut(h * ev, ev).copy_from(&vh);
        if let Some(b) = &mut self.bv {
            let bh = p * b.rows(h * ev, ev);
            b.rows_mut(h * ev, ev).copy_from(&bh);
        }
        let oh = self.o.columns(h * ev, ev) * p_inv;
        self.o.columns_mut(h * ev, ev).copy_from(&oh);
    }

    /// `Q1_h → c Q1_h`, `K1_h → K1_h / c`, biases along.
    pub fn rescale_first_factor(&mut self, h: usize, c: f64) {
        let e = self.e();
        self.q1.rows_mut(h * e, e).scale_mut(c);
        self.k1.rows_mut(h * e, e).scale_mut(1.0 / c);
        if let Some(b) = &mut self.bq1 {
            b.rows_mut(h * e, e).scale_mut(c);
        }
        if let Some(b) = &mut self.bk1 {
            b.rows_mut(h * e, e).scale_mut(1.0 / c);
        }
    }

    /// The rotation by `phi` in rotary plane `(j, j + e/2)` of head `h`,
    /// applied to the rows of `Q1_h` and `K1_h` and their biases. It
    /// commutes with `Rot_s` (both are rotations of the same plane), and
    /// `(R q)·(R k) = q·k`.
    pub fn rotate_first_plane(&mut self, h: usize, j: usize, phi: f64) {
        let e = self.e();
        let (a, b) = (h * e + j, h * e + j + e / 2);
        let (sin, cos) = phi.sin_cos();
        for m in [&mut self.q1, &mut self.k1] {
            let (ra, rb) = (m.row(a).clone_owned(), m.row(b).clone_owned());
            m.row_mut(a).copy_from(&(&ra * cos - &rb * sin));
            m.row_mut(b).copy_from(&(&rb * cos + &ra * sin));
        }
        for bias in [&mut self.bq1, &mut self.bk1].into_iter().flatten() {
            let (va, vb) = (bias[a], bias[b]);
            bias[a] = va * cos - vb * sin;
            bias[b] = vb * cos + va * sin;
        }
    }
}

impl SeqNet {
    pub fn attention_mut(&mut self, index: usize) -> &mut AttnParams {
        attn_mut(self, index)
    }

    /// The affine change of basis `x ↦ P x + t` of the residual stream
    /// (every position alike) between block 0 (the embedding, which writes
    /// it) and the last block (the head, which reads it). Every block in
    /// between reads and writes the stream:
    ///
    /// * reading, `W x = W P⁻¹ (x' − t)`: `W → W P⁻¹`, `b → b − W P⁻¹ t`
    ///   (q1, k1, q2, k2, v of attention; L, R of the MLP; the head);
    /// * writing, attention: `Y' = P Y + t = r X' − r t + α P O z + α P b_o + t`,
    ///   so `O → P O`, `b_o → P b_o + (1 − r)/α · t`: the skip `r X` maps
    ///   the stream to itself and carries `r t` of the shift, the output
    ///   projection the rest (`t` for the lerp `r = 1 − α`, nothing for the
    ///   additive `r = 1`);
    /// * writing, the MLP with lerp residual `s`:
    ///   `y' = s (P D z + P b_D + t) + (1 − s) x'`: `D → P D`, `b_D → P b_D + t`.
    pub fn change_stream_basis(&mut self, p: &DMatrix<f64>, t: &DVector<f64>) {
        let p_inv = p.clone().try_inverse().expect("P must be invertible");
        let last = self.blocks.len() - 1;
        let read = |w: &mut DMatrix<f64>, b: &mut Option<DVector<f64>>| {
            let shift = &*w * &p_inv * t;
            *w = &*w * &p_inv;
            *b = Some(b.clone().unwrap_or_else(|| DVector::zeros(w.nrows())) - shift);
        };
        for (i, block) in self.blocks.iter_mut().enumerate() {
            match block {
                Block::Linear(q) if i == 0 => {
                    q.w = p * &q.w;
                    q.b = Some(p * q.b.clone().unwrap_or_else(|| DVector::zeros(p.nrows())) + t);
                }
                Block::Linear(q) => {
                    assert_eq!(i, last, "only the embedding and the head may be linear");
                    read(&mut q.w, &mut q.b);
                }
                Block::Bilinear(q) => {
                    read(&mut q.l, &mut q.bl);
                    read(&mut q.r, &mut q.br);
                    let d =
                        q.d.as_ref()
                            .expect("a stream change needs a down projection");
                    q.d = Some(p * d);
                    q.bd = Some(p * q.bd.clone().unwrap_or_else(|| DVector::zeros(p.nrows())) + t);
                }
                Block::Attention(q) => {
                    // (q1 = q2, k1 = k2 of the quadratic form stay tied: both
                    // change alike.)
                    read(&mut q.q1, &mut q.bq1);
                    read(&mut q.k1, &mut q.bk1);
                    read(&mut q.q2, &mut q.bq2);
                    read(&mut q.k2, &mut q.bk2);
                    read(&mut q.v, &mut q.bv);
                    let (alpha, r) = (q.alpha(), q.r());
                    assert!(alpha != 0.0);
                    q.o = p * &q.o;
                    q.bo = Some(
                        p * q.bo.clone().unwrap_or_else(|| DVector::zeros(p.nrows()))
                            + t * ((1.0 - r) / alpha),
                    );
                }
            }
        }
    }
}
