//! The attention block itself: its weights and settings, its builder and
//! its forward pass.

use core::any::Any;
use std::sync::Arc;

use nalgebra::{DMatrix, DVector};

use crate::block::TensorBlock;
use crate::error::{Error, Result};
use crate::padded::pad;
use crate::scalar::{Real, from_f64};
use crate::validate::{check_finite, check_shape};

/// The rotary base of [SPEC §7](crate::spec#7-sequences-and-bilinear-attention) when a file or config gives none.
pub const DEFAULT_ROTARY_BASE: f64 = 10_000.0;

/// The attention mask `W ∈ R^{n×n}`: `W[s,t]` weighs the score of query
/// position `s` on key position `t`.
#[derive(Clone, Debug, PartialEq)]
pub enum Mask {
    /// `W[s,t] = 1` for `t ≤ s`, else 0 (the default).
    Causal,
    /// `W[s,t] = 1` everywhere.
    None,
    /// `W[s,t] = 1` for `t = s` only.
    Diagonal,
    /// A given `n × n` matrix; the context length compared must be `n`.
    Matrix(DMatrix<f64>),
}

impl Mask {
    /// `W` at context length `n`; an error if a given matrix is not `n × n`,
    /// or if `n × n` entries cannot exist ([`Error::SizeOverflow`]).
    pub fn weights(&self, n: usize) -> Result<DMatrix<f64>> {
        crate::resources::check_size::<f64>(n, n)?;
        Ok(match self {
            Mask::Causal => DMatrix::from_fn(n, n, |s, t| if t <= s { 1.0 } else { 0.0 }),
            Mask::None => DMatrix::from_element(n, n, 1.0),
            Mask::Diagonal => DMatrix::identity(n, n),
            Mask::Matrix(w) => {
                check_shape("attention mask at this context length", w, (n, n))?;
                w.clone()
            }
        })
    }

    /// The name used in files and by `inspect`: `causal`, `none`, `diag`
    /// or `matrix`.
    pub fn name(&self) -> &'static str {
        match self {
            Mask::Causal => "causal",
            Mask::None => "none",
            Mask::Diagonal => "diag",
            Mask::Matrix(_) => "matrix",
        }
    }
}

/// A bilinear attention block ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)): `H` heads of q/k width `e` and
/// value width `e_v` on a residual stream of width `d`, writing `d_out`.
///
/// Built with [`Attention::builder`] (two score factors) or
/// [`Attention::quadratic`] (one squared score factor, `(q·k)²`).
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{Attention, Linear, Mask, Model, RecursiveSimilarity, TensorSimilarity};
///
/// let (d, heads, e) = (4, 2, 2);
/// let w = |seed: usize, rows: usize| {
///     DMatrix::from_fn(rows, d, |i, j| (((i * 7 + j * 3 + seed) % 11) as f64 - 5.0) * 0.1)
/// };
/// let attn = Attention::builder(heads, w(1, heads * e), w(2, heads * e), w(3, heads * e),
///                               w(4, heads * e), w(5, heads * e), w(6, d).transpose())
///     .rotary(10_000.0)
///     .mask(Mask::Causal)
///     .skip(1.0) // additive residual
///     .build()?;
/// let model = Model::builder().block(attn).build()?;
/// assert!(model.is_sequence());
/// let sim = TensorSimilarity::new().with_context(3)?;
/// assert!((sim.similarity(&model, &model)? - 1.0).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Attention<T: Real = f64> {
    heads: usize,
    q1: DMatrix<T>,
    k1: DMatrix<T>,
    q2: DMatrix<T>,
    k2: DMatrix<T>,
    v: DMatrix<T>,
    o: DMatrix<T>,
    biases: [Option<DVector<T>>; 6],
    rotary: Option<f64>,
    mask: Mask,
    score_scale: f64,
    scale: f64,
    skip: f64,
}

/// Options of an [`Attention`] block; [`build`](Self::build) checks them.
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the block"]
pub struct AttentionBuilder<T: Real = f64> {
    heads: usize,
    weights: [DMatrix<T>; 6],
    biases: [Option<DVector<T>>; 6],
    rotary: Option<f64>,
    mask: Mask,
    score_scale: Option<f64>,
    scale: f64,
    skip: Option<f64>,
}

/// The role of one of an [`Attention`] block's six weight matrices (and
/// its bias), in the order of [`Attention::builder`]: the two score factors'
/// queries and keys, the value and the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `W_q1` (`H e × d`).
    Q1,
    /// `W_k1` (`H e × d`).
    K1,
    /// `W_q2` (`H e × d`).
    Q2,
    /// `W_k2` (`H e × d`).
    K2,
    /// `W_v` (`H e_v × d`).
    V,
    /// `W_o` (`d_out × H e_v`).
    O,
}

impl Role {
    /// Every role, in the builder's order.
    pub const ALL: [Role; 6] = [Role::Q1, Role::K1, Role::Q2, Role::K2, Role::V, Role::O];

    /// The role's name in files and descriptions: `q1`, `k1`, `q2`, `k2`, `v`, `o`.
    pub fn name(self) -> &'static str {
        ROLES[self as usize]
    }

    /// The name of the role's bias: `q1_bias`, …, `o_bias`.
    pub fn bias_name(self) -> &'static str {
        BIAS_ROLES[self as usize]
    }
}

/// Roles of the six weight matrices, in the order of [`Attention::builder`].
const ROLES: [&str; 6] = ["q1", "k1", "q2", "k2", "v", "o"];
const BIAS_ROLES: [&str; 6] = [
    "q1_bias", "k1_bias", "q2_bias", "k2_bias", "v_bias", "o_bias",
];

impl<T: Real> AttentionBuilder<T> {
    /// A builder for bilinear attention with `heads` heads and every weight
    /// still to give, by role: [`q1`](Self::q1), [`k1`](Self::k1),
    /// [`q2`](Self::q2), [`k2`](Self::k2), [`v`](Self::v), [`o`](Self::o)
    /// (or [`weight`](Self::weight)). The defaults are those of
    /// [`Attention::builder`], which takes the six weights at once.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{AttentionBuilder, Role, TensorBlock};
    ///
    /// let w = |rows: usize, cols: usize| DMatrix::from_fn(rows, cols, |i, j| (i + 2 * j) as f64 * 0.1);
    /// let attention = AttentionBuilder::new(2)
    ///     .q1(w(4, 3)).k1(w(4, 3)).q2(w(4, 3)).k2(w(4, 3))
    ///     .v(w(2, 3))
    ///     .weight(Role::O, w(3, 2))
    ///     .skip(1.0)
    ///     .build()?;
    /// assert_eq!((attention.heads(), attention.input_width(), attention.output_width()), (2, 3, 3));
    /// // A weight not given is an error naming it.
    /// assert!(AttentionBuilder::<f64>::new(2).q1(w(4, 3)).build().is_err());
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn new(heads: usize) -> Self {
        Self {
            heads,
            weights: Default::default(),
            biases: Default::default(),
            rotary: None,
            mask: Mask::Causal,
            score_scale: None,
            scale: 1.0,
            skip: None,
        }
    }

    /// The weight of `role` (see [`Role`] for the shapes).
    pub fn weight(mut self, role: Role, w: DMatrix<T>) -> Self {
        self.weights[role as usize] = w;
        self
    }
    /// `W_q1` (`H e × d`).
    pub fn q1(self, w: DMatrix<T>) -> Self {
        self.weight(Role::Q1, w)
    }
    /// `W_k1` (`H e × d`).
    pub fn k1(self, w: DMatrix<T>) -> Self {
        self.weight(Role::K1, w)
    }
    /// `W_q2` (`H e × d`).
    pub fn q2(self, w: DMatrix<T>) -> Self {
        self.weight(Role::Q2, w)
    }
    /// `W_k2` (`H e × d`).
    pub fn k2(self, w: DMatrix<T>) -> Self {
        self.weight(Role::K2, w)
    }
    /// `W_v` (`H e_v × d`).
    pub fn v(self, w: DMatrix<T>) -> Self {
        self.weight(Role::V, w)
    }
    /// `W_o` (`d_out × H e_v`).
    pub fn o(self, w: DMatrix<T>) -> Self {
        self.weight(Role::O, w)
    }
    /// The bias of `role`, or none.
    pub fn bias(self, role: Role, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(role as usize, b)
    }

    fn set_bias(mut self, i: usize, b: impl Into<Option<DVector<T>>>) -> Self {
        self.biases[i] = b.into();
        self
    }
    /// `b_q1` (length `H e`).
    pub fn q1_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(0, b)
    }
    /// `b_k1` (length `H e`).
    pub fn k1_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(1, b)
    }
    /// `b_q2` (length `H e`).
    pub fn q2_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(2, b)
    }
    /// `b_k2` (length `H e`).
    pub fn k2_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(3, b)
    }
    /// `b_v` (length `H e_v`).
    pub fn v_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(4, b)
    }
    /// `b_o` (length `d_out`), inside the scale: `α (O z + b_o)`.
    pub fn o_bias(self, b: impl Into<Option<DVector<T>>>) -> Self {
        self.set_bias(5, b)
    }
    /// Rotary position encoding with this base ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention) "half" layout);
    /// the default is none. [`DEFAULT_ROTARY_BASE`] is the usual base.
    pub fn rotary(mut self, base: impl Into<Option<f64>>) -> Self {
        self.rotary = base.into();
        self
    }
    /// The mask; default [`Mask::Causal`].
    pub fn mask(mut self, mask: Mask) -> Self {
        self.mask = mask;
        self
    }
    /// The score scale `c`; default `e²`.
    pub fn score_scale(mut self, c: f64) -> Self {
        self.score_scale = Some(c);
        self
    }
    /// The scale `α` of the attention output; default 1.
    pub fn scale(mut self, alpha: f64) -> Self {
        self.scale = alpha;
        self
    }
    /// The skip weight `r` of `r·X[s]`; default `1 − α` (the research
    /// `lerp`); language-model checkpoints use `r = 1`.
    pub fn skip(mut self, r: f64) -> Self {
        self.skip = Some(r);
        self
    }

    /// The block; an error (naming the tensor) unless `heads ≥ 1` divides
    /// the rows of `q1 … v`, `q1 … k2` share one shape `H e × d`, `v` is
    /// `H e_v × d`, `o` is `d_out × H e_v`, biases have their lengths,
    /// `e` is even when rotary is on, `d_out = d` when `r ≠ 0`, and every
    /// value is finite.
    pub fn build(self) -> Result<Attention<T>> {
        if let Some(role) = Role::ALL
            .into_iter()
            .find(|&r| self.weights[r as usize].is_empty())
        {
            return Err(Error::InvalidBlock(format!(
                "attention weight {} not given (AttentionBuilder::{} or ::weight)",
                role.name(),
                role.name()
            )));
        }
        let [q1, k1, q2, k2, v, o] = self.weights;
        let heads = self.heads;
        let d = q1.ncols();
        if heads == 0 || q1.nrows() % heads != 0 || q1.nrows() == 0 {
            return Err(Error::Heads {
                what: "q1",
                rows: q1.nrows(),
                heads,
            });
        }
        for (role, m) in ROLES.iter().zip([&q1, &k1, &q2, &k2]) {
            check_shape(role, m, q1.shape())?;
        }
        if v.ncols() != d || v.nrows() == 0 {
            return Err(Error::Shape {
                what: "v".into(),
                expected: (v.nrows().max(heads), d),
                found: v.shape(),
            });
        }
        if v.nrows() % heads != 0 {
            return Err(Error::Heads {
                what: "v",
                rows: v.nrows(),
                heads,
            });
        }
        if o.ncols() != v.nrows() || o.nrows() == 0 {
            return Err(Error::Shape {
                what: "o".into(),
                expected: (o.nrows().max(1), v.nrows()),
                found: o.shape(),
            });
        }
        let e = q1.nrows() / heads;
        let alpha = self.scale;
        let skip = self.skip.unwrap_or(1.0 - alpha);
        let score_scale = self.score_scale.unwrap_or((e * e) as f64);
        for (what, x) in [
            ("scale", alpha),
            ("skip", skip),
            ("score_scale", score_scale),
        ] {
            if !x.is_finite() || (what == "score_scale" && x == 0.0) {
                return Err(Error::InvalidBlock(format!(
                    "attention {what} must be finite{}, found {x}",
                    if what == "score_scale" {
                        " and nonzero"
                    } else {
                        ""
                    }
                )));
            }
        }
        if skip != 0.0 && o.nrows() != d {
            return Err(Error::Residual {
                scale: skip,
                input: d,
                output: o.nrows(),
            });
        }
        if let Some(base) = self.rotary {
            if !(base.is_finite() && base > 0.0) {
                return Err(Error::InvalidBlock(format!(
                    "rotary base must be positive and finite, found {base}"
                )));
            }
            if !e.is_multiple_of(2) {
                return Err(Error::OddRotaryWidth { width: e });
            }
        }
        let lengths = [
            q1.nrows(),
            q1.nrows(),
            q1.nrows(),
            q1.nrows(),
            v.nrows(),
            o.nrows(),
        ];
        for ((role, b), len) in BIAS_ROLES.iter().zip(&self.biases).zip(lengths) {
            if let Some(b) = b {
                if b.len() != len {
                    return Err(Error::Shape {
                        what: (*role).into(),
                        expected: (len, 1),
                        found: (b.len(), 1),
                    });
                }
                check_finite(role, b)?;
            }
        }
        for (role, m) in ROLES.iter().zip([&q1, &k1, &q2, &k2, &v, &o]) {
            check_finite(role, m)?;
        }
        if let Mask::Matrix(w) = &self.mask {
            check_finite("attention mask", w)?;
            if w.nrows() != w.ncols() {
                return Err(Error::Shape {
                    what: "attention mask".into(),
                    expected: (w.nrows(), w.nrows()),
                    found: w.shape(),
                });
            }
        }
        Ok(Attention {
            heads,
            q1,
            k1,
            q2,
            k2,
            v,
            o,
            biases: self.biases,
            rotary: self.rotary,
            mask: self.mask,
            score_scale,
            scale: alpha,
            skip,
        })
    }
}

impl<T: Real> Attention<T> {
    /// A builder for bilinear attention with `heads` heads: `q1, k1, q2, k2`
    /// are `H e × d` (head `h` owns rows `h e … (h+1) e`), `v` is
    /// `H e_v × d`, `o` is `d_out × H e_v`. Defaults: no biases, no rotary,
    /// causal mask, `c = e²`, `α = 1`, `r = 1 − α`.
    pub fn builder(
        heads: usize,
        q1: DMatrix<T>,
        k1: DMatrix<T>,
        q2: DMatrix<T>,
        k2: DMatrix<T>,
        v: DMatrix<T>,
        o: DMatrix<T>,
    ) -> AttentionBuilder<T> {
        AttentionBuilder::new(heads)
            .q1(q1)
            .k1(k1)
            .q2(q2)
            .k2(k2)
            .v(v)
            .o(o)
    }

    /// Quadratic attention, one score factor squared, `(q·k)²`: bilinear
    /// attention with `q1 = q2 = q`, `k1 = k2 = k` (give q/k biases to both
    /// factors alike).
    pub fn quadratic(
        heads: usize,
        q: DMatrix<T>,
        k: DMatrix<T>,
        v: DMatrix<T>,
        o: DMatrix<T>,
    ) -> AttentionBuilder<T> {
        Self::builder(heads, q.clone(), k.clone(), q, k, v, o)
    }

    /// A builder holding this block's weights and options, to change some.
    pub fn to_builder(&self) -> AttentionBuilder<T> {
        AttentionBuilder {
            heads: self.heads,
            weights: [
                self.q1.clone(),
                self.k1.clone(),
                self.q2.clone(),
                self.k2.clone(),
                self.v.clone(),
                self.o.clone(),
            ],
            biases: self.biases.clone(),
            rotary: self.rotary,
            mask: self.mask.clone(),
            score_scale: Some(self.score_scale),
            scale: self.scale,
            skip: Some(self.skip),
        }
    }

    /// Number of heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// q/k width per head `e`.
    pub fn qk_width(&self) -> usize {
        self.q1.nrows() / self.heads
    }
    /// Value width per head `e_v`.
    pub fn value_width(&self) -> usize {
        self.v.nrows() / self.heads
    }
    /// The weight matrix of a role.
    pub fn weight(&self, role: Role) -> &DMatrix<T> {
        [&self.q1, &self.k1, &self.q2, &self.k2, &self.v, &self.o][role as usize]
    }
    /// The bias of a role, if any.
    pub fn bias(&self, role: Role) -> Option<&DVector<T>> {
        self.biases[role as usize].as_ref()
    }
    /// The rotary base, or `None` without rotary.
    pub fn rotary_base(&self) -> Option<f64> {
        self.rotary
    }
    /// The mask.
    pub fn mask(&self) -> &Mask {
        &self.mask
    }
    /// The score scale `c`.
    pub fn score_scale(&self) -> f64 {
        self.score_scale
    }
    /// The scale `α`.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// The skip weight `r`.
    pub fn skip(&self) -> f64 {
        self.skip
    }

    /// The first row of leg `l` (0 `q1`, 1 `k1`, 2 `q2`, 3 `k2`, 4 `v`) of
    /// head `h` in [`leg_factors`](Self::leg_factors).
    pub(crate) fn leg_row(&self, l: usize, h: usize) -> usize {
        let he = self.q1.nrows();
        if l < 4 {
            l * he + h * self.qk_width()
        } else {
            4 * he + h * self.value_width()
        }
    }

    /// The padded linear forms of the five legs at position `p`, stacked:
    /// `[Q1(p); K1(p); Q2(p); K2(p); V]`, `(4 H e + H e_v) × (d+1)`, column 0
    /// the bias; the score legs rotated by `Rot_p`.
    pub(crate) fn leg_factors(&self, p: usize) -> DMatrix<T> {
        let he = self.q1.nrows();
        let hv = self.v.nrows();
        let d = self.q1.ncols();
        let mut f = DMatrix::zeros(4 * he + hv, d + 1);
        for (l, w) in [&self.q1, &self.k1, &self.q2, &self.k2, &self.v]
            .into_iter()
            .enumerate()
        {
            let rows = w.nrows();
            let mut block = f.view_mut((l * he, 0), (rows, d + 1));
            if let Some(b) = &self.biases[l] {
                block.column_mut(0).copy_from(b);
            }
            block.columns_mut(1, d).copy_from(w);
            if l < 4
                && let Some(base) = self.rotary
            {
                let e = self.qk_width();
                for h in 0..self.heads {
                    rotate(&mut block.rows_mut(h * e, e), p, base);
                }
            }
        }
        f
    }
}

/// Applies `Rot_p` ("half" layout: row `j < e/2` pairs with `j + e/2`,
/// angle `p · base^{−2j/e}`) to the rows of one head's linear forms.
fn rotate<T: Real>(rows: &mut nalgebra::DMatrixViewMut<'_, T>, p: usize, base: f64) {
    let e = rows.nrows();
    let half = e / 2;
    let turns: Vec<(T, T)> = (0..half)
        .map(|j| {
            let angle = p as f64 * base.powf(-2.0 * j as f64 / e as f64);
            let (sin, cos) = angle.sin_cos();
            (from_f64(sin), from_f64(cos))
        })
        .collect();
    // Column by column: the rows of one column are contiguous (the forms
    // are column-major and thousands of rows tall).
    for mut column in rows.column_iter_mut() {
        for (j, &(sin, cos)) in turns.iter().enumerate() {
            let (x, y) = (column[j], column[j + half]);
            column[j] = x * cos - y * sin;
            column[j + half] = y * cos + x * sin;
        }
    }
}

impl<T: Real> Attention<T> {
    /// The block as a model's shared block, for code generic in the scalar
    /// type: attention implements [`TensorBlock`] for `f32` and `f64`, and
    /// this is an error ([`Error::InvalidBlock`]) for another `T`.
    pub fn into_shared(self) -> Result<Arc<dyn TensorBlock<T>>> {
        fn shared<S: Real>(a: Attention<S>) -> Box<dyn Any>
        where
            Attention<S>: TensorBlock<S>,
        {
            let block: Arc<dyn TensorBlock<S>> = Arc::new(a);
            Box::new(block)
        }
        let unsupported =
            || Error::InvalidBlock("attention blocks hold f32 or f64 scalars only".into());
        let any: Box<dyn Any> = Box::new(self);
        let block = match any.downcast::<Attention<f64>>() {
            Ok(a) => shared(*a),
            Err(any) => match any.downcast::<Attention<f32>>() {
                Ok(a) => shared(*a),
                Err(_) => return Err(unsupported()),
            },
        };
        // `T` is the type just matched, so the box holds this very type.
        block
            .downcast::<Arc<dyn TensorBlock<T>>>()
            .map(|b| *b)
            .map_err(|_| unsupported())
    }
}

impl<T: Real> Attention<T> {
    /// Unpadded input width `d`.
    pub fn input_width(&self) -> usize {
        self.q1.ncols()
    }

    /// Unpadded output width `d_out`.
    pub fn output_width(&self) -> usize {
        self.o.nrows()
    }

    /// The block on a sequence, one position per row.
    pub(super) fn forward_rows(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        let (n, d) = (x.nrows(), self.input_width());
        if x.ncols() != d {
            return Err(Error::Shape {
                what: "attention input (one position per row)".into(),
                expected: (n, d),
                found: x.shape(),
            });
        }
        let w = self.mask.weights(n)?;
        let (heads, e, ev) = (self.heads, self.qk_width(), self.value_width());
        let he = heads * e;
        // legs[p] = F(p) x̃_p: q1, k1, q2, k2, v at position p.
        let legs: Vec<DVector<T>> = (0..n)
            .map(|p| {
                let xp = pad(&x.row(p).transpose());
                self.leg_factors(p) * xp
            })
            .collect();
        let c: T = from_f64(self.score_scale);
        let mut z = DMatrix::zeros(heads * ev, n);
        for s in 0..n {
            for t in 0..n {
                let wst: T = from_f64(w[(s, t)]);
                if wst == T::zero() {
                    continue;
                }
                for h in 0..heads {
                    let dot = |ls: usize, lt: usize| {
                        legs[s]
                            .rows(ls * he + h * e, e)
                            .dot(&legs[t].rows(lt * he + h * e, e))
                    };
                    let score = wst * dot(0, 1) * dot(2, 3) / c;
                    let v = legs[t].rows(4 * he + h * ev, ev);
                    for c in 0..ev {
                        z[(h * ev + c, s)] += score * v[c];
                    }
                }
            }
        }
        let mut out = &self.o * z;
        if let Some(b) = &self.biases[5] {
            for mut col in out.column_iter_mut() {
                col += b;
            }
        }
        let mut y = out.transpose() * from_f64::<T>(self.scale);
        if self.skip != 0.0 {
            y += x * from_f64::<T>(self.skip);
        }
        Ok(y)
    }

    /// The block on `x.nrows() / n` sequences of `n` positions stacked
    /// (row `s·n + p` is position `p` of sequence `s`), as
    /// [`forward_rows`](Self::forward_rows) computes each: the five legs at
    /// position `p` of every sequence by one GEMM (`F(p)` against the
    /// gathered inputs), the scores and values per sequence, and the output
    /// projection by one GEMM over all rows.
    pub(super) fn forward_batch(&self, x: &DMatrix<T>, n: usize) -> Result<DMatrix<T>> {
        let (rows, d) = (x.nrows(), self.input_width());
        if x.ncols() != d || n == 0 || !rows.is_multiple_of(n) {
            return Err(Error::Shape {
                what: format!("attention input ({n} positions per sequence, one per row)"),
                expected: (n.max(1) * rows.div_ceil(n.max(1)).max(1), d),
                found: x.shape(),
            });
        }
        let count = rows / n;
        let w = self.mask.weights(n)?;
        let (heads, e, ev) = (self.heads, self.qk_width(), self.value_width());
        let he = heads * e;
        // legs[p]: column s holds F(p) x̃ at position p of sequence s.
        let mut gathered = DMatrix::zeros(d, count);
        let legs: Vec<DMatrix<T>> = (0..n)
            .map(|p| {
                for j in 0..d {
                    for s in 0..count {
                        gathered[(j, s)] = x[(s * n + p, j)];
                    }
                }
                let f = self.leg_factors(p);
                let mut l = crate::linalg::mul(&f.columns(1, d), &gathered);
                let bias = f.column(0);
                for mut column in l.column_iter_mut() {
                    column += &bias;
                }
                l
            })
            .collect();
        let c: T = from_f64(self.score_scale);
        let hv = heads * ev;
        let width = 4 * he + hv;
        let mut z = DMatrix::zeros(hv, rows);
        // Columns as slices: the legs of one position of one sequence, and
        // one row's values (column-major storage).
        fn column<T: Real>(l: &DMatrix<T>, s: usize, width: usize) -> &[T] {
            &l.as_slice()[s * width..(s + 1) * width]
        }
        let dot = |x: &[T], y: &[T]| x.iter().zip(y).fold(T::zero(), |acc, (&a, &b)| acc + a * b);
        for (row, zq) in z.as_mut_slice().chunks_exact_mut(hv).enumerate() {
            let (s, q) = (row / n, row % n);
            let lq = column(&legs[q], s, width);
            for (t, lt) in legs.iter().enumerate() {
                let wst: T = from_f64(w[(q, t)]);
                if wst == T::zero() {
                    continue;
                }
                let lt = column(lt, s, width);
                for h in 0..heads {
                    let leg = |l: usize| l * he + h * e..l * he + (h + 1) * e;
                    let score =
                        wst * dot(&lq[leg(0)], &lt[leg(1)]) * dot(&lq[leg(2)], &lt[leg(3)]) / c;
                    let v = &lt[4 * he + h * ev..4 * he + (h + 1) * ev];
                    for (zc, &vc) in zq[h * ev..(h + 1) * ev].iter_mut().zip(v) {
                        *zc += score * vc;
                    }
                }
            }
        }
        let mut y = crate::linalg::mul_tn(&z, &self.o.transpose());
        if let Some(b) = &self.biases[5] {
            crate::linalg::add_to_rows(&mut y, b);
        }
        y *= from_f64::<T>(self.scale);
        if self.skip != 0.0 {
            y += x * from_f64::<T>(self.skip);
        }
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use nalgebra::{DMatrix, DVector};

    use super::{Attention, Mask};
    use crate::block::TensorBlock;

    fn w(seed: usize, rows: usize, cols: usize) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            (((i * 7 + j * 5 + seed * 3) % 11) as f64 - 5.0) / 5.0
        })
    }

    /// Every mask, rotary, every bias, a skip: the batched forward pass of
    /// stacked sequences is each sequence's own.
    #[test]
    fn batched_sequences_are_each_sequences_forward_pass() {
        let (d, heads, e, ev, n) = (3, 2, 2, 3, 4);
        for (k, mask) in [
            Mask::Causal,
            Mask::None,
            Mask::Diagonal,
            Mask::Matrix(w(9, n, n)),
        ]
        .into_iter()
        .enumerate()
        {
            let b = |s: usize, len: usize| DVector::from_fn(len, |i, _| 0.1 * (i + s) as f64 - 0.2);
            let attention = Attention::builder(
                heads,
                w(k, heads * e, d),
                w(k + 1, heads * e, d),
                w(k + 2, heads * e, d),
                w(k + 3, heads * e, d),
                w(k + 4, heads * ev, d),
                w(k + 5, d, heads * ev),
            )
            .q1_bias(b(1, heads * e))
            .k2_bias(b(2, heads * e))
            .v_bias(b(3, heads * ev))
            .o_bias(b(4, d))
            .rotary(100.0)
            .mask(mask)
            .scale(0.7)
            .skip(1.0)
            .build()
            .unwrap();
            let x = w(k + 6, 5 * n, d);
            let batched = attention.forward_sequences(&x, n).unwrap();
            for s in 0..5 {
                let one = attention
                    .forward_sequence(&x.rows(s * n, n).into_owned())
                    .unwrap();
                let diff = (batched.rows(s * n, n) - &one).amax();
                assert!(
                    diff < 1e-12 * one.amax().max(1.0),
                    "mask {k}, sequence {s}: {diff:e}"
                );
            }
        }
        let attention = Attention::builder(
            1,
            w(0, 2, 2),
            w(1, 2, 2),
            w(2, 2, 2),
            w(3, 2, 2),
            w(4, 2, 2),
            w(5, 2, 2),
        )
        .build()
        .unwrap();
        assert!(attention.forward_sequences(&w(0, 5, 2), 2).is_err());
        assert!(attention.forward_sequences(&w(0, 4, 2), 0).is_err());
        assert!(attention.forward_sequences(&w(0, 4, 3), 2).is_err());
    }
}
