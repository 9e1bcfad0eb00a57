//! The bilinear block `y = α·(D((Lx + b_L) ∘ (Rx + b_R)) + b_D) + r·x`.

use nalgebra::{DMatrix, DVector};

use super::factors::CpFactors;
use super::{CpKind, Description, Parameter, Setting};
use crate::error::{Error, Result};
use crate::scalar::{Real, from_f64};
use crate::validate::{check_finite, check_len, check_rows, check_shape};

/// A bilinear layer (a "bilinear MLP" or gated linear unit without
/// nonlinearity): `y = α·(D((Lx + b_L) ∘ (Rx + b_R)) + b_D) + r·x`,
/// with `L, R ∈ R^{h×m}`, an optional down projection `D ∈ R^{n×h}`
/// (absent: the identity, `n = h`), optional biases, an output scale `α`
/// and a skip weight `r` ([SPEC §1](crate::spec#1-blocks-and-models); default
/// `α = 1, r = 0`: no residual; `r ≠ 0` needs `n = m`). The usual additive
/// residual `x + D(Lx ∘ Rx)` is `α = 1, r = 1`
/// ([`skip`](BilinearBuilder::skip)); the research code's lerp
/// `lerp(x, D(Lx ∘ Rx), s)` is `α = s, r = 1 − s`
/// ([`residual`](BilinearBuilder::residual)).
///
/// Its padded CP form has rank `1 + h` (`+ m` when `r ≠ 0`):
///
/// ```text
/// U_1 = [e_0ᵀ; (b_L│L); (0│I_m)]     U_2 = [e_0ᵀ; (b_R│R); (1│0) × m]
/// D̃  = [(1; α·b_D) │ (0; α·D) │ (0; r·I_m)]
/// ```
///
/// Both legs read the same input, so the block is symmetric under `S_2`:
/// swapping `L_r ↔ R_r` (with their biases) for any unit `r` changes the
/// tensor but not the function, nor the tensor similarity.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{Bilinear, TensorBlock};
///
/// let layer = Bilinear::builder(dmatrix![1.0, 0.0; 0.0, 1.0], dmatrix![1.0, 1.0; 0.0, 2.0])
///     .down(dmatrix![1.0, -1.0])
///     .build()?;
/// // (x0 · (x0 + x1)) − (x1 · 2 x1) at x = (1, 2): 3 − 8
/// assert_eq!(layer.forward(&dvector![1.0, 2.0])?, dvector![-5.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Bilinear<T: Real = f64> {
    left: DMatrix<T>,
    right: DMatrix<T>,
    down: Option<DMatrix<T>>,
    left_bias: Option<DVector<T>>,
    right_bias: Option<DVector<T>>,
    down_bias: Option<DVector<T>>,
    scale: f64,
    skip: f64,
    cp: CpFactors<T>,
}

/// Collects the optional parts of a [`Bilinear`] block; [`build`](Self::build)
/// checks them.
#[derive(Clone, Debug)]
#[must_use = "call .build() to get the block"]
pub struct BilinearBuilder<T: Real = f64> {
    left: DMatrix<T>,
    right: DMatrix<T>,
    down: Option<DMatrix<T>>,
    left_bias: Option<DVector<T>>,
    right_bias: Option<DVector<T>>,
    down_bias: Option<DVector<T>>,
    scale: f64,
    skip: f64,
}

impl<T: Real> BilinearBuilder<T> {
    /// The down projection `D` (`n × h`); `None` keeps the identity.
    pub fn down(mut self, down: impl Into<Option<DMatrix<T>>>) -> Self {
        self.down = down.into();
        self
    }

    /// The bias `b_L` of the left factor (length `h`).
    pub fn left_bias(mut self, bias: impl Into<Option<DVector<T>>>) -> Self {
        self.left_bias = bias.into();
        self
    }

    /// The bias `b_R` of the right factor (length `h`).
    pub fn right_bias(mut self, bias: impl Into<Option<DVector<T>>>) -> Self {
        self.right_bias = bias.into();
        self
    }

    /// The output bias `b_D` (length `n`).
    pub fn down_bias(mut self, bias: impl Into<Option<DVector<T>>>) -> Self {
        self.down_bias = bias.into();
        self
    }

    /// The research code's lerp residual `s`: `α = s`, `r = 1 − s`
    /// (`s = 1`, the default, is no residual).
    pub fn residual(self, s: f64) -> Self {
        self.scale(s).skip(1.0 - s)
    }

    /// The output scale `α` (default 1), a setting in `f64` like
    /// attention's [`scale`](crate::AttentionBuilder::scale).
    pub fn scale(mut self, alpha: f64) -> Self {
        self.scale = alpha;
        self
    }

    /// The skip weight `r` of `r·x` (default 0: no residual; 1: the
    /// additive residual `x + α·D(…)`).
    pub fn skip(mut self, r: f64) -> Self {
        self.skip = r;
        self
    }

    /// The block; an error naming the first part with a wrong shape or a
    /// non-finite value, or a residual that does not fit the widths.
    pub fn build(self) -> Result<Bilinear<T>> {
        let (h, m) = self.left.shape();
        if h == 0 || m == 0 {
            return Err(Error::InvalidBlock(format!(
                "bilinear left factor has empty shape {:?}",
                (h, m)
            )));
        }
        check_shape("bilinear right factor", &self.right, (h, m))?;
        check_finite("bilinear left factor", &self.left)?;
        check_finite("bilinear right factor", &self.right)?;
        let n = match &self.down {
            Some(d) => {
                if d.ncols() != h || d.nrows() == 0 {
                    return Err(Error::Shape {
                        what: "bilinear down projection".into(),
                        expected: (d.nrows().max(1), h),
                        found: d.shape(),
                    });
                }
                check_finite("bilinear down projection", d)?;
                d.nrows()
            }
            None => h,
        };
        for (what, bias, len) in [
            ("bilinear left bias", &self.left_bias, h),
            ("bilinear right bias", &self.right_bias, h),
            ("bilinear down bias", &self.down_bias, n),
        ] {
            if let Some(b) = bias {
                check_len(what, b, len)?;
                check_finite(what, b)?;
            }
        }
        for (what, value) in [
            ("bilinear residual scale α", self.scale),
            ("bilinear residual skip r", self.skip),
        ] {
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: what.into(),
                    row: 0,
                    col: 0,
                    value,
                });
            }
        }
        let (s, r): (T, T) = (from_f64(self.scale), from_f64(self.skip));
        let skip = if self.skip == 0.0 { 0 } else { m };
        if skip > 0 && n != m {
            return Err(Error::Residual {
                scale: self.skip,
                input: m,
                output: n,
            });
        }

        let rank = 1 + h + skip;
        let one = T::one();
        // [U_1; U_2] in place, rows 0..rank and rank..2·rank.
        let mut u = DMatrix::zeros(2 * rank, m + 1);
        u[(0, 0)] = one;
        u[(rank, 0)] = one;
        u.view_mut((1, 1), (h, m)).copy_from(&self.left);
        u.view_mut((rank + 1, 1), (h, m)).copy_from(&self.right);
        if let Some(b) = &self.left_bias {
            u.view_mut((1, 0), (h, 1)).copy_from(b);
        }
        if let Some(b) = &self.right_bias {
            u.view_mut((rank + 1, 0), (h, 1)).copy_from(b);
        }
        let mut out = DMatrix::zeros(n + 1, rank);
        out[(0, 0)] = one;
        if let Some(b) = &self.down_bias {
            out.view_mut((1, 0), (n, 1)).zip_apply(b, |o, v| *o = v * s);
        }
        match &self.down {
            Some(d) => out.view_mut((1, 1), (n, h)).zip_apply(d, |o, v| *o = v * s),
            None => out.view_mut((1, 1), (n, h)).fill_diagonal(s),
        }
        for i in 0..skip {
            // Residual unit i: (x_i) ∘ (1), written back to output i with weight r.
            u[(1 + h + i, 1 + i)] = one;
            u[(rank + 1 + h + i, 0)] = one;
            out[(1 + i, 1 + h + i)] = r;
        }
        // A finite down projection times a finite s can still overflow.
        check_finite("bilinear down projection times the residual scale", &out)?;
        let cp = CpFactors {
            order: 2,
            stacked_inputs: u,
            output: Some(out),
        };
        Ok(Bilinear {
            left: self.left,
            right: self.right,
            down: self.down,
            left_bias: self.left_bias,
            right_bias: self.right_bias,
            down_bias: self.down_bias,
            scale: self.scale,
            skip: self.skip,
            cp,
        })
    }
}

impl<T: Real> Bilinear<T> {
    /// `D(Lx ∘ Rx)` without biases, down projection or residual
    /// (the identity down projection makes `n = h`).
    pub fn new(left: DMatrix<T>, right: DMatrix<T>) -> Result<Self> {
        Self::builder(left, right).build()
    }

    /// A builder starting from the factors `L`, `R` (`h × m` each).
    pub fn builder(left: DMatrix<T>, right: DMatrix<T>) -> BilinearBuilder<T> {
        BilinearBuilder {
            left,
            right,
            down: None,
            left_bias: None,
            right_bias: None,
            down_bias: None,
            scale: 1.0,
            skip: 0.0,
        }
    }

    /// A builder from a fused weight `[L; R]` (`2h × m`, as GLU-style PyTorch
    /// layers store it) and an optional fused bias `[b_L; b_R]`.
    ///
    /// ```
    /// use nalgebra::{dmatrix, dvector};
    /// use tensor_similarity::{Bilinear, TensorBlock};
    /// let fused = dmatrix![1.0, 0.0; 0.0, 1.0; 2.0, 0.0; 0.0, 3.0];
    /// let layer = Bilinear::from_fused(fused, None)?.build()?;
    /// assert_eq!(layer.forward(&dvector![1.0, 1.0])?, dvector![2.0, 3.0]);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn from_fused(
        fused: DMatrix<T>,
        fused_bias: Option<DVector<T>>,
    ) -> Result<BilinearBuilder<T>> {
        let (rows, m) = fused.shape();
        if rows == 0 || rows % 2 != 0 {
            return Err(Error::Shape {
                what: "fused bilinear weight (rows: L then R)".into(),
                expected: (2 * rows.div_ceil(2).max(1), m),
                found: (rows, m),
            });
        }
        let h = rows / 2;
        let builder = Self::builder(fused.rows(0, h).into_owned(), fused.rows(h, h).into_owned());
        Ok(match fused_bias {
            Some(b) => {
                check_len("fused bilinear bias", &b, rows)?;
                builder
                    .left_bias(b.rows(0, h).into_owned())
                    .right_bias(b.rows(h, h).into_owned())
            }
            None => builder,
        })
    }

    /// `L`, `h × m`.
    pub fn left(&self) -> &DMatrix<T> {
        &self.left
    }

    /// `R`, `h × m`.
    pub fn right(&self) -> &DMatrix<T> {
        &self.right
    }

    /// `D`, `n × h`, if not the identity.
    pub fn down(&self) -> Option<&DMatrix<T>> {
        self.down.as_ref()
    }

    /// `b_L`, if present.
    pub fn left_bias(&self) -> Option<&DVector<T>> {
        self.left_bias.as_ref()
    }

    /// `b_R`, if present.
    pub fn right_bias(&self) -> Option<&DVector<T>> {
        self.right_bias.as_ref()
    }

    /// `b_D`, if present.
    pub fn down_bias(&self) -> Option<&DVector<T>> {
        self.down_bias.as_ref()
    }

    /// The output scale `α`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The skip weight `r` (0: no residual).
    pub fn skip(&self) -> f64 {
        self.skip
    }

    /// The lerp residual `s` when the block is one (`α = s`, `r = 1 − s`,
    /// as [`BilinearBuilder::residual`] builds; `s = 1` is no residual);
    /// `None` for another `(α, r)`, such as the additive residual.
    pub fn residual(&self) -> Option<f64> {
        (self.skip == 1.0 - self.scale).then_some(self.scale)
    }

    /// Hidden width `h`.
    pub fn hidden_width(&self) -> usize {
        self.left.nrows()
    }

    /// A builder holding this block's parts, to change some of them.
    pub fn to_builder(&self) -> BilinearBuilder<T> {
        self.to_builder_with_factors(self.left.clone(), self.right.clone())
    }

    /// A builder holding this block's parts but with new factors `L`, `R`.
    pub fn to_builder_with_factors(
        &self,
        left: DMatrix<T>,
        right: DMatrix<T>,
    ) -> BilinearBuilder<T> {
        BilinearBuilder {
            left,
            right,
            down: self.down.clone(),
            left_bias: self.left_bias.clone(),
            right_bias: self.right_bias.clone(),
            down_bias: self.down_bias.clone(),
            scale: self.scale,
            skip: self.skip,
        }
    }
}

impl<T: Real> CpKind<T> for Bilinear<T> {
    fn cp_factors(&self) -> &CpFactors<T> {
        &self.cp
    }

    fn name(&self) -> &'static str {
        "bilinear"
    }

    /// `r·x` as a bilinear block with `α = 0` (one zero hidden unit: the
    /// rank is `2 + m` whatever `h`); none when `r = 0`.
    fn skip_block(&self) -> Result<Option<std::sync::Arc<dyn crate::TensorBlock<T>>>> {
        if self.skip == 0.0 {
            return Ok(None);
        }
        let m = self.left.ncols();
        let zero = DMatrix::zeros(1, m);
        let part = Bilinear::builder(zero.clone(), zero)
            .down(DMatrix::zeros(m, 1))
            .scale(0.0)
            .skip(self.skip)
            .build()?;
        Ok(Some(std::sync::Arc::new(part)))
    }

    /// `left`, `right`, their biases, `down` (absent: the identity) and its
    /// bias, and the settings `scale` (`α`) and `skip` (`r`).
    fn description(&self) -> Description<'_, T> {
        let mut parameters = vec![
            Parameter::matrix("left", &self.left),
            Parameter::matrix("right", &self.right),
        ];
        let optional = [
            ("left_bias", self.left_bias.as_ref()),
            ("right_bias", self.right_bias.as_ref()),
        ];
        parameters.extend(
            optional
                .into_iter()
                .filter_map(|(role, b)| b.map(|b| Parameter::vector(role, b))),
        );
        parameters.extend(self.down.as_ref().map(|d| Parameter::matrix("down", d)));
        parameters.extend(
            self.down_bias
                .as_ref()
                .map(|b| Parameter::vector("down_bias", b)),
        );
        Description {
            kind: "bilinear",
            settings: vec![
                ("hidden", Setting::Count(self.hidden_width())),
                ("scale", Setting::Real(self.scale)),
                ("skip", Setting::Real(self.skip)),
            ],
            parameters,
        }
    }

    /// [`Bilinear::new`] builds factors that keep it.
    fn checks_constant_when_built(&self) -> bool {
        true
    }

    fn baseline_parameters(&self) -> Vec<Parameter<'_, T>> {
        let h = self.hidden_width();
        let mut p = vec![
            Parameter::matrix("left", &self.left),
            Parameter::vector_or_zeros("left_bias", self.left_bias.as_ref(), h),
            Parameter::matrix("right", &self.right),
            Parameter::vector_or_zeros("right_bias", self.right_bias.as_ref(), h),
        ];
        if let Some(d) = &self.down {
            p.push(Parameter::matrix("down", d));
        }
        p.push(Parameter::vector_or_zeros(
            "down_bias",
            self.down_bias.as_ref(),
            self.cp.output_width(),
        ));
        p
    }

    /// `L`, `R` and `D` as one GEMM each over all rows.
    fn apply_rows(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        use crate::linalg::{add_to_rows, mul_nt};
        check_rows("bilinear input", x, self.left.ncols())?;
        let mut l = mul_nt(x, &self.left);
        let mut r = mul_nt(x, &self.right);
        if let Some(b) = &self.left_bias {
            add_to_rows(&mut l, b);
        }
        if let Some(b) = &self.right_bias {
            add_to_rows(&mut r, b);
        }
        l.component_mul_assign(&r);
        let mut y = match &self.down {
            Some(d) => mul_nt(&l, d),
            None => l,
        };
        if let Some(b) = &self.down_bias {
            add_to_rows(&mut y, b);
        }
        Ok(match (self.scale, self.skip) {
            (1.0, 0.0) => y,
            (alpha, 0.0) => y * from_f64::<T>(alpha),
            (alpha, r) => y * from_f64::<T>(alpha) + x * from_f64::<T>(r),
        })
    }

    fn apply(&self, x: &DVector<T>) -> Result<DVector<T>> {
        check_len("bilinear input", x, self.left.ncols())?;
        let mut l = &self.left * x;
        let mut r = &self.right * x;
        if let Some(b) = &self.left_bias {
            l += b;
        }
        if let Some(b) = &self.right_bias {
            r += b;
        }
        let z = l.component_mul(&r);
        let mut y = match &self.down {
            Some(d) => d * z,
            None => z,
        };
        if let Some(b) = &self.down_bias {
            y += b;
        }
        Ok(match (self.scale, self.skip) {
            (1.0, 0.0) => y,
            (alpha, 0.0) => y * from_f64::<T>(alpha),
            (alpha, r) => y * from_f64::<T>(alpha) + x * from_f64::<T>(r),
        })
    }
}
