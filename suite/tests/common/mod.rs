//! The suite's one helper module: every test that needs seeded random
//! data, random models or files declares `mod common;` and takes them from
//! here.
//!
//! * **Random draws** from one seeded generator, [`rng`]: Gaussian matrices
//!   and vectors, invertible matrices, cyclic permutations.
//! * **Networks as plain data** ([`Net`] of [`Layer`]s) with their own
//!   forward pass, the symmetry transformations of SPEC §2 and conversion
//!   to a library `Model`. Oracles built on them share no code with the
//!   library. (Sequence models as plain data are the sequence oracle's own,
//!   `seq_oracle::SeqNet`.)
//! * **The file tests' models** ([`embed_body_head`], [`bilinear_projection`]),
//!   which fit the file layouts.
//! * **Files** ([`files`]): the fixture directory and files written by hand.
//! * **A dense oracle for degree-2 maps** ([`quadratic_form`],
//!   [`dense_quadratic_inner`], [`gaussian_quadratic_inner`]) read from
//!   forward passes alone.
#![allow(dead_code)]

pub mod files;

use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use tensor_similarity::{Bilinear, Linear, Model, Real};

// ---------------------------------------------------------------------------
// Random draws

/// The generator every test seeds: the same seed, the same data.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A `rows × cols` matrix of `scale·N(0, 1)` entries.
pub fn gaussian_matrix(rng: &mut StdRng, rows: usize, cols: usize, scale: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        scale * rng.sample::<f64, _>(StandardNormal)
    })
}

/// A vector of `scale·N(0, 1)` entries.
pub fn gaussian_vector(rng: &mut StdRng, len: usize, scale: f64) -> DVector<f64> {
    DVector::from_fn(len, |_, _| scale * rng.sample::<f64, _>(StandardNormal))
}

/// A random well-conditioned invertible matrix: `Q diag(σ)` with a random
/// orthogonal `Q` and `σ ∈ [0.5, 2]`.
pub fn random_invertible(rng: &mut StdRng, n: usize) -> DMatrix<f64> {
    let q = gaussian_matrix(rng, n, n, 1.0).qr().q();
    let sigma = DVector::from_fn(n, |_, _| rng.random_range(0.5..2.0));
    q * DMatrix::from_diagonal(&sigma)
}

/// A uniformly random cyclic permutation of `0..n` (Sattolo's algorithm):
/// no unit stays in place.
pub fn random_cycle(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut a: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..i);
        a.swap(i, j);
    }
    a
}

/// A random well-conditioned invertible matrix `Q diag(±σ)`: as
/// [`random_invertible`], with a random sign on each `σ`, so that it may
/// reverse orientation (the sequence tests' changes of basis).
pub fn random_invertible_signed(rng: &mut StdRng, n: usize) -> DMatrix<f64> {
    let q = gaussian_matrix(rng, n, n, 1.0).qr().q();
    let s = DVector::from_fn(n, |_, _| {
        let v: f64 = rng.random_range(0.5..2.0);
        if rng.random::<bool>() { v } else { -v }
    });
    q * DMatrix::from_diagonal(&s)
}

/// A random permutation with no fixed point (a single `n`-cycle), `n ≥ 2`,
/// through a shuffled order: `perm[u]` is where unit `u` goes. The same
/// distribution as [`random_cycle`], drawn differently (the sequence tests'
/// seeds were chosen with it).
pub fn random_cycle_from_shuffle(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let mut perm = vec![0; n];
    for i in 0..n {
        perm[order[i]] = order[(i + 1) % n];
    }
    perm
}

// ---------------------------------------------------------------------------
// The file tests' models

/// The file tests' weights: `N(0, 1/c)` entries (`N(0,1)/√c`).
pub fn matrix(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| {
        rng.sample::<f64, _>(StandardNormal) / (c as f64).sqrt()
    })
}

/// The file tests' biases: `0.3·N(0, 1)` entries.
pub fn vector(rng: &mut StdRng, n: usize) -> DVector<f64> {
    DVector::from_fn(n, |_, _| 0.3 * rng.sample::<f64, _>(StandardNormal))
}

/// embed (d→w, bias) · bilinear blocks with down projection, all biases and
/// residual `s` · head (w→c, bias): fits every layout but bi_linear/projection.
pub fn embed_body_head(seed: u64, depth: usize, residual: f64) -> Model<f64> {
    let (d, w, h, c) = (5, 4, 6, 3);
    let mut r = rng(seed);
    let mut b =
        Model::builder().block(Linear::new(matrix(&mut r, w, d), Some(vector(&mut r, w))).unwrap());
    for _ in 0..depth {
        b = b.block(
            Bilinear::builder(matrix(&mut r, h, w), matrix(&mut r, h, w))
                .down(matrix(&mut r, w, h))
                .left_bias(vector(&mut r, h))
                .right_bias(vector(&mut r, h))
                .down_bias(vector(&mut r, w))
                .residual(residual)
                .build()
                .unwrap(),
        );
    }
    b.block(Linear::new(matrix(&mut r, c, w), Some(vector(&mut r, c))).unwrap())
        .build()
        .unwrap()
}

/// bilinear without down (fused biases) · projection with bias.
pub fn bilinear_projection(seed: u64, residual: f64) -> Model<f64> {
    let (d, c) = (4, 3);
    let mut r = rng(seed);
    Model::builder()
        .block(
            Bilinear::builder(matrix(&mut r, d, d), matrix(&mut r, d, d))
                .left_bias(vector(&mut r, d))
                .right_bias(vector(&mut r, d))
                .residual(residual)
                .build()
                .unwrap(),
        )
        .block(Linear::new(matrix(&mut r, c, d), Some(vector(&mut r, c))).unwrap())
        .build()
        .unwrap()
}

/// An MLP with one bilinear block: an optional embedding (`d_in → d`,
/// bias), the bilinear block (`d → d` through `h` hidden units, down
/// projection, every bias, residual `s`), and a head (`d → c`, bias). The
/// Gaussian metric is exact on it (one block of order 2).
pub fn mlp(
    seed: u64,
    embed: Option<usize>,
    (d, h, c): (usize, usize, usize),
    residual: f64,
) -> Model<f64> {
    let mut r = rng(seed);
    let mut b = Model::builder();
    if let Some(d_in) = embed {
        b = b.block(Linear::new(matrix(&mut r, d, d_in), Some(vector(&mut r, d))).unwrap());
    }
    b.block(
        Bilinear::builder(matrix(&mut r, h, d), matrix(&mut r, h, d))
            .down(matrix(&mut r, d, h))
            .left_bias(vector(&mut r, h))
            .right_bias(vector(&mut r, h))
            .down_bias(vector(&mut r, d))
            .residual(residual)
            .build()
            .unwrap(),
    )
    .block(Linear::new(matrix(&mut r, c, d), Some(vector(&mut r, c))).unwrap())
    .build()
    .unwrap()
}

/// embed (d_in→d, bias) · bilinear attention (`heads` heads of width 2,
/// q/k and v/o biases, causal, rotary base 10 000, additive residual
/// `r = 1`, `α = 0.5`) · head (d→d_out, bias): one attention block with
/// linear maps around it, on which the Gaussian metric is exact (SPEC §7).
pub fn embed_attention_head(
    seed: u64,
    (d_in, d, d_out): (usize, usize, usize),
    heads: usize,
) -> Model<f64> {
    embed_attention_layers(seed, (d_in, d, d_out), heads, 1)
}

/// [`embed_attention_head`] with `layers` attention blocks: beyond one,
/// the Gaussian metric is a closure (SPEC §3).
pub fn embed_attention_layers(
    seed: u64,
    (d_in, d, d_out): (usize, usize, usize),
    heads: usize,
    layers: usize,
) -> Model<f64> {
    use tensor_similarity::Attention;
    let mut r = rng(seed);
    let he = 2 * heads;
    let w = |r: &mut StdRng, rows: usize, cols: usize| matrix(r, rows, cols);
    let attention = |r: &mut StdRng| {
        Attention::builder(
            heads,
            w(r, he, d),
            w(r, he, d),
            w(r, he, d),
            w(r, he, d),
            w(r, he, d),
            w(r, d, he),
        )
        .q1_bias(vector(r, he))
        .k1_bias(vector(r, he))
        .q2_bias(vector(r, he))
        .k2_bias(vector(r, he))
        .v_bias(vector(r, he))
        .o_bias(vector(r, d))
        .rotary(10_000.0)
        .scale(0.5)
        .skip(1.0)
        .build()
        .unwrap()
    };
    let blocks: Vec<Attention> = (0..layers).map(|_| attention(&mut r)).collect();
    let mut b = Model::builder()
        .block(Linear::new(matrix(&mut r, d, d_in), Some(vector(&mut r, d))).unwrap());
    for block in blocks {
        b = b.block(block);
    }
    b.block(Linear::new(matrix(&mut r, d_out, d), Some(vector(&mut r, d_out))).unwrap())
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Networks as plain data

fn cast<T: Real>(m: &DMatrix<f64>) -> DMatrix<T> {
    m.map(|x| nalgebra::convert::<f64, T>(x))
}

fn cast_vec<T: Real>(v: &DVector<f64>) -> DVector<T> {
    v.map(|x| nalgebra::convert::<f64, T>(x))
}

#[derive(Clone, Debug)]
pub struct LinearParams {
    pub w: DMatrix<f64>,
    pub b: Option<DVector<f64>>,
}

#[derive(Clone, Debug)]
pub struct BilinearParams {
    pub l: DMatrix<f64>,
    pub r: DMatrix<f64>,
    pub d: Option<DMatrix<f64>>,
    pub bl: Option<DVector<f64>>,
    pub br: Option<DVector<f64>>,
    pub bd: Option<DVector<f64>>,
    pub s: f64,
    /// Build through `Bilinear::from_fused`.
    pub fused: bool,
}

#[derive(Clone, Debug)]
pub enum Layer {
    Linear(LinearParams),
    Bilinear(BilinearParams),
}

/// A network as plain data.
#[derive(Clone, Debug)]
pub struct Net {
    pub layers: Vec<Layer>,
}

/// What random bilinear layers get.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub biases: bool,
    pub down: bool,
    pub residual: f64,
    pub fused: bool,
    pub scale: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            biases: true,
            down: true,
            residual: 1.0,
            fused: false,
            scale: 1.0,
        }
    }
}

impl LinearParams {
    pub fn random(rng: &mut StdRng, n: usize, m: usize, bias: bool, scale: f64) -> Self {
        let w = gaussian_matrix(rng, n, m, scale / (m as f64).sqrt());
        let b = bias.then(|| gaussian_vector(rng, n, 0.5 * scale));
        Self { w, b }
    }

    pub fn forward(&self, x: &DVector<f64>) -> DVector<f64> {
        let y = &self.w * x;
        match &self.b {
            Some(b) => y + b,
            None => y,
        }
    }
}

impl BilinearParams {
    /// A bilinear layer `m → n` of hidden width `h` (`n = h` without `down`).
    pub fn random(rng: &mut StdRng, m: usize, h: usize, n: usize, o: Options) -> Self {
        let sc = o.scale / (m as f64).sqrt();
        let l = gaussian_matrix(rng, h, m, sc);
        let r = gaussian_matrix(rng, h, m, sc);
        let d = o
            .down
            .then(|| gaussian_matrix(rng, n, h, o.scale / (h as f64).sqrt()));
        let n = if o.down { n } else { h };
        let bl = o.biases.then(|| gaussian_vector(rng, h, 0.5 * o.scale));
        let br = o.biases.then(|| gaussian_vector(rng, h, 0.5 * o.scale));
        let bd = o.biases.then(|| gaussian_vector(rng, n, 0.5 * o.scale));
        Self {
            l,
            r,
            d,
            bl,
            br,
            bd,
            s: o.residual,
            fused: o.fused,
        }
    }

    pub fn hidden(&self) -> usize {
        self.l.nrows()
    }

    /// `y = s·(D((Lx + b_L) ∘ (Rx + b_R)) + b_D) + (1−s)·x`, written out.
    pub fn forward(&self, x: &DVector<f64>) -> DVector<f64> {
        let h = self.hidden();
        let mut z = DVector::zeros(h);
        for u in 0..h {
            let mut a = self.bl.as_ref().map_or(0.0, |b| b[u]);
            let mut c = self.br.as_ref().map_or(0.0, |b| b[u]);
            for i in 0..x.len() {
                a += self.l[(u, i)] * x[i];
                c += self.r[(u, i)] * x[i];
            }
            z[u] = a * c;
        }
        let mut y = match &self.d {
            Some(d) => d * z,
            None => z,
        };
        if let Some(b) = &self.bd {
            y += b;
        }
        if self.s != 1.0 {
            y * self.s + x * (1.0 - self.s)
        } else {
            y
        }
    }
}

impl Layer {
    pub fn forward(&self, x: &DVector<f64>) -> DVector<f64> {
        match self {
            Layer::Linear(p) => p.forward(x),
            Layer::Bilinear(p) => p.forward(x),
        }
    }

    pub fn input_width(&self) -> usize {
        match self {
            Layer::Linear(p) => p.w.ncols(),
            Layer::Bilinear(p) => p.l.ncols(),
        }
    }
}

impl Net {
    /// `embed (d → w)`, `depth` bilinear layers on a stream of width `w`
    /// with hidden widths `hidden[i]`, and `head (w → out)`. With
    /// `o.down == false` the stream width changes to the hidden width and
    /// the residual must be 1.
    pub fn random(
        rng: &mut StdRng,
        d: usize,
        w: usize,
        hidden: &[usize],
        out: usize,
        o: Options,
    ) -> Self {
        let mut layers = vec![Layer::Linear(LinearParams::random(
            rng, w, d, o.biases, 1.0,
        ))];
        let mut width = w;
        for &h in hidden {
            let p = BilinearParams::random(rng, width, h, width, o);
            width = if o.down { width } else { h };
            layers.push(Layer::Bilinear(p));
        }
        layers.push(Layer::Linear(LinearParams::random(
            rng, out, width, o.biases, 1.0,
        )));
        Net { layers }
    }

    /// The same network on the absolute values of its parameters.
    ///
    /// The recursion is a sum of products of parameters (its per-layer
    /// normalisations are positive scalings), so the same recursion run on
    /// `|θ|` bounds the magnitude of every term it adds: its value over the
    /// true value is the condition number of the computed inner product, and
    /// rounding moves the result by at most a small multiple of `ε` times it
    /// (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1).
    pub fn magnitudes(&self) -> Net {
        let abs = |m: &DMatrix<f64>| m.abs();
        let abs_v = |v: &Option<DVector<f64>>| v.as_ref().map(|v| v.abs());
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Layer::Linear(p) => Layer::Linear(LinearParams {
                    w: abs(&p.w),
                    b: abs_v(&p.b),
                }),
                Layer::Bilinear(p) => Layer::Bilinear(BilinearParams {
                    l: abs(&p.l),
                    r: abs(&p.r),
                    d: p.d.as_ref().map(abs),
                    bl: abs_v(&p.bl),
                    br: abs_v(&p.br),
                    bd: abs_v(&p.bd),
                    ..p.clone()
                }),
            })
            .collect();
        Net { layers }
    }

    pub fn forward(&self, x: &DVector<f64>) -> DVector<f64> {
        self.layers.iter().fold(x.clone(), |h, l| l.forward(&h))
    }

    pub fn model<T: Real>(&self) -> Model<T> {
        let mut b = Model::builder();
        for layer in &self.layers {
            b = match layer {
                Layer::Linear(p) => {
                    b.block(Linear::new(cast(&p.w), p.b.as_ref().map(cast_vec)).unwrap())
                }
                Layer::Bilinear(p) => {
                    let builder = if p.fused {
                        let mut fused = DMatrix::zeros(2 * p.hidden(), p.l.ncols());
                        fused.rows_mut(0, p.hidden()).copy_from(&p.l);
                        fused.rows_mut(p.hidden(), p.hidden()).copy_from(&p.r);
                        let fused_bias = match (&p.bl, &p.br) {
                            (None, None) => None,
                            (bl, br) => {
                                let h = p.hidden();
                                let mut v = DVector::zeros(2 * h);
                                if let Some(bl) = bl {
                                    v.rows_mut(0, h).copy_from(bl);
                                }
                                if let Some(br) = br {
                                    v.rows_mut(h, h).copy_from(br);
                                }
                                Some(v)
                            }
                        };
                        Bilinear::from_fused(cast(&fused), fused_bias.as_ref().map(cast_vec))
                            .unwrap()
                    } else {
                        Bilinear::builder(cast(&p.l), cast(&p.r))
                            .left_bias(p.bl.as_ref().map(cast_vec))
                            .right_bias(p.br.as_ref().map(cast_vec))
                    };
                    b.block(
                        builder
                            .down(p.d.as_ref().map(cast))
                            .down_bias(p.bd.as_ref().map(cast_vec))
                            .residual(nalgebra::convert(p.s))
                            .build()
                            .unwrap(),
                    )
                }
            };
        }
        b.build().unwrap()
    }

    fn bilinear_mut(&mut self, index: usize) -> &mut BilinearParams {
        match &mut self.layers[index] {
            Layer::Bilinear(p) => p,
            Layer::Linear(_) => panic!("layer {index} is not bilinear"),
        }
    }

    /// Permutes the hidden units of bilinear layer `index` by `perm`
    /// (unit `u` moves to position `perm[u]`).
    pub fn permute_hidden(&mut self, index: usize, perm: &[usize]) {
        let p = self.bilinear_mut(index);
        assert!(
            p.d.is_some(),
            "a hidden permutation needs a down projection to absorb it"
        );
        let h = p.hidden();
        let (l, r, d) = (p.l.clone(), p.r.clone(), p.d.clone().unwrap());
        let (bl, br) = (p.bl.clone(), p.br.clone());
        for u in 0..h {
            let v = perm[u];
            p.l.row_mut(v).copy_from(&l.row(u));
            p.r.row_mut(v).copy_from(&r.row(u));
            p.d.as_mut().unwrap().column_mut(v).copy_from(&d.column(u));
            if let (Some(dst), Some(src)) = (p.bl.as_mut(), bl.as_ref()) {
                dst[v] = src[u];
            }
            if let (Some(dst), Some(src)) = (p.br.as_mut(), br.as_ref()) {
                dst[v] = src[u];
            }
        }
    }

    /// `L_u → α_u L_u`, `R_u → β_u R_u`, `D_{:,u} → D_{:,u}/(α_u β_u)`, biases along.
    pub fn rescale_hidden(&mut self, index: usize, alpha: &[f64], beta: &[f64]) {
        let p = self.bilinear_mut(index);
        for u in 0..p.hidden() {
            p.l.row_mut(u).scale_mut(alpha[u]);
            p.r.row_mut(u).scale_mut(beta[u]);
            if let Some(b) = p.bl.as_mut() {
                b[u] *= alpha[u];
            }
            if let Some(b) = p.br.as_mut() {
                b[u] *= beta[u];
            }
            p.d.as_mut()
                .expect("rescaling needs a down projection")
                .column_mut(u)
                .scale_mut(1.0 / (alpha[u] * beta[u]));
        }
    }

    /// Swaps `L_u ↔ R_u` (with biases) for the units in `units`.
    pub fn swap_factors(&mut self, index: usize, units: &[usize]) {
        let p = self.bilinear_mut(index);
        for &u in units {
            let lu = p.l.row(u).clone_owned();
            p.l.row_mut(u).copy_from(&p.r.row(u));
            p.r.row_mut(u).copy_from(&lu);
            match (p.bl.as_mut(), p.br.as_mut()) {
                (Some(a), Some(b)) => core::mem::swap(&mut a[u], &mut b[u]),
                (None, None) => {}
                _ => panic!("swap with one bias only"),
            }
        }
    }

    /// The affine change of basis `x ↦ P x + t` of the stream between the
    /// embedding and the head: every layer writing the stream gets `P̃ D̃`,
    /// every layer reading it `U P̃⁻¹`. Needs residual-stream models
    /// (bilinear layers with a down projection back to the stream).
    pub fn change_stream_basis(&mut self, p: &DMatrix<f64>, t: &DVector<f64>) {
        let p_inv = p.clone().try_inverse().expect("P must be invertible");
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            match layer {
                Layer::Linear(q) if i == 0 => {
                    // writes: y' = P (W x + b) + t
                    q.w = p * &q.w;
                    q.b = Some(p * q.b.clone().unwrap_or_else(|| DVector::zeros(p.nrows())) + t);
                }
                Layer::Linear(q) => {
                    assert_eq!(i, last);
                    // reads: W x = W P⁻¹ (x' − t)
                    let shift = &q.w * &p_inv * t;
                    q.w = &q.w * &p_inv;
                    q.b = Some(q.b.clone().unwrap_or_else(|| DVector::zeros(q.w.nrows())) - shift);
                }
                Layer::Bilinear(q) => {
                    let d =
                        q.d.as_ref()
                            .expect("a stream change needs down projections");
                    let h = q.hidden();
                    for (f, b) in [(&mut q.l, &mut q.bl), (&mut q.r, &mut q.br)] {
                        let shift = &*f * &p_inv * t;
                        *f = &*f * &p_inv;
                        *b = Some(b.clone().unwrap_or_else(|| DVector::zeros(h)) - shift);
                    }
                    q.d = Some(p * d);
                    q.bd = Some(p * q.bd.clone().unwrap_or_else(|| DVector::zeros(p.nrows())) + t);
                }
            }
        }
    }
}

/// A bound on the rounding error of the computed tensor cosine of `a` and
/// `b`, from the conditioning of its three inner products.
///
/// With `cos = ⟨A,B⟩/√(⟨A,A⟩⟨B,B⟩)` and each product off by at most `γ` times
/// its magnitude bound (the same product on [`Net::magnitudes`]),
/// `|δcos| ≤ γ·(⟨|A|,|B|⟩/√(⟨A,A⟩⟨B,B⟩) + (κ_A + κ_B)/2)` with
/// `κ_A = ⟨|A|,|A|⟩/⟨A,A⟩`. `γ = 64ε` covers the few dozen roundings on any
/// one path through these small networks; measured errors stay below `2εκ`.
/// Random networks are often ill-conditioned (half of the small deep ones
/// here have `κ > 10³`): their tensor is small beside their weights, and no
/// evaluation from the weights can recover the digits that cancel.
pub fn cosine_rounding_bound(a: &Net, b: &Net) -> f64 {
    use tensor_similarity::{RecursiveSimilarity, TensorSimilarity};
    let s = TensorSimilarity::new();
    let (ma, mb) = (a.model::<f64>(), b.model::<f64>());
    let (aa_, bb_) = (a.magnitudes().model::<f64>(), b.magnitudes().model::<f64>());
    let aa = s.squared_norm(&ma).unwrap();
    let bb = s.squared_norm(&mb).unwrap();
    let ab_bound = s.inner_product(&aa_, &bb_).unwrap();
    let kappa_ab = (ab_bound / (aa * bb).sqrt()).to_f64();
    let kappa_a = (s.squared_norm(&aa_).unwrap() / aa).to_f64();
    let kappa_b = (s.squared_norm(&bb_).unwrap() / bb).to_f64();
    64.0 * f64::EPSILON * (kappa_ab + 0.5 * (kappa_a + kappa_b))
}

/// A degree-2 map's exact coefficients from forward passes alone:
/// `f(x) = c + g·x + xᵀ S x` per output (`S = H/2` symmetric), read by
/// finite differences on `n_in` inputs, which are exact for quadratics.
pub fn quadratic_form(
    f: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    n_in: usize,
) -> (DVector<f64>, DMatrix<f64>, Vec<DMatrix<f64>>) {
    let e = |i: usize| {
        let mut v = DVector::zeros(n_in);
        v[i] = 1.0;
        v
    };
    let c = f(&DVector::zeros(n_in));
    let n_out = c.len();
    let plus: Vec<_> = (0..n_in).map(|i| f(&e(i))).collect();
    let minus: Vec<_> = (0..n_in).map(|i| f(&-e(i))).collect();
    let g = DMatrix::from_fn(n_out, n_in, |o, i| (plus[i][o] - minus[i][o]) / 2.0);
    let mut s = vec![DMatrix::zeros(n_in, n_in); n_out];
    for i in 0..n_in {
        for j in 0..n_in {
            let h = if i == j {
                &plus[i] + &minus[i] - &c * 2.0
            } else {
                f(&(e(i) + e(j))) - &plus[i] - &plus[j] + &c
            };
            for (o, so) in s.iter_mut().enumerate() {
                so[(i, j)] = h[o] / 2.0;
            }
        }
    }
    (c, g, s)
}

/// SPEC §2's `⟨A, B⟩` of two degree-2 maps from their padded symmetric
/// tensors `T[o] = [[c, g/2], [g/2, S]]` (input metric `I`, all outputs).
pub fn dense_quadratic_inner(
    a: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    b: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    n_in: usize,
) -> f64 {
    let ((ca, ga, sa), (cb, gb, sb)) = (quadratic_form(a, n_in), quadratic_form(b, n_in));
    (0..ca.len())
        .map(|o| {
            ca[o] * cb[o]
                + 2.0 * (ga.row(o).dot(&gb.row(o)) / 4.0)
                + sa[o].component_mul(&sb[o]).sum()
        })
        .sum()
}

/// `E[f_A(x)·f_B(x)]` for `x ∼ N(0, I)` of two degree-2 maps in closed form
/// (Isserlis): `c_A c_B + c_A tr S_B + c_B tr S_A + g_A·g_B + tr S_A tr S_B
/// + 2 tr(S_A S_B)`.
pub fn gaussian_quadratic_inner(
    a: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    b: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    n_in: usize,
) -> f64 {
    let ((ca, ga, sa), (cb, gb, sb)) = (quadratic_form(a, n_in), quadratic_form(b, n_in));
    (0..ca.len())
        .map(|o| {
            let (ta, tb) = (sa[o].trace(), sb[o].trace());
            ca[o] * cb[o]
                + ca[o] * tb
                + cb[o] * ta
                + ga.row(o).dot(&gb.row(o))
                + ta * tb
                + 2.0 * (&sa[o] * &sb[o]).trace()
        })
        .sum()
}
