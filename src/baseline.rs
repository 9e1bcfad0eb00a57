//! Baselines the tensor similarity is compared against ([SPEC §4](crate::spec#4-baselines-what-the-paper-compares-against)).
//!
//! | baseline | compares | blind to |
//! |---|---|---|
//! | [`weight_cosine`] | parameters | nothing it should be blind to: fails every symmetry of [SPEC §2](crate::spec#2-tensor-similarity-the-default-metric) |
//! | [`output_cosine`] | outputs on given inputs, pooled | the function away from the samples; noisy (Monte Carlo) |
//! | [`mean_sample_cosine`] | output directions per sample | output magnitudes; the sign only, for one output |
//! | [`linear_cka`] | centred output Gram matrices | rotations and scalings of the outputs, constant offsets |
//!
//! [`sample_gaussian`] draws the `N(μ, Σ)` inputs for the empirical ones;
//! on such inputs [`output_cosine`] is a Monte Carlo estimate of the
//! Gaussian similarity ([`GaussianSimilarity`](crate::GaussianSimilarity)).

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use crate::error::{Error, Incomparable, Result, Side};
use crate::linalg::covariance_factor;
use crate::model::Model;
use crate::scalar::{Real, from_f64, to_f64};
use crate::validate::check_finite;

/// The cosine of all parameters concatenated in block order (a missing bias
/// counting as zeros of its shape): the naive weight-space similarity.
///
/// It sees every parameter but none of the symmetries: permuting hidden
/// units, rescaling `L_r`, `R_r` against `D_{:,r}`, or swapping `L_r ↔ R_r`
/// changes it although the function is unchanged. An error unless both
/// models have parameters of the same shapes in the same order, or if one
/// model's parameters are all zero.
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{weight_cosine, Linear, Model};
/// let a = Model::builder().block(Linear::new(dmatrix![1.0, 0.0], None)?).build()?;
/// let b = Model::builder().block(Linear::new(dmatrix![1.0, 1.0], None)?).build()?;
/// assert!((weight_cosine(&a, &b)? - 0.5f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn weight_cosine<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<f64> {
    if a.depth() != b.depth() {
        return Err(Incomparable::Depth {
            a: a.depth(),
            b: b.depth(),
        }
        .into());
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (block, (x, y)) in a.blocks().iter().zip(b.blocks()).enumerate() {
        let (px, py) = (x.parameters(), y.parameters());
        if px.len() != py.len() {
            let role = if px.len() > py.len() {
                px[py.len()].role
            } else {
                py[px.len()].role
            };
            let index = px.len().min(py.len());
            let shape = |p: Option<&crate::Parameter<'_, T>>| p.map_or((0, 0), |p| p.shape);
            return Err(Incomparable::ParameterShape {
                block,
                index,
                role,
                a: shape(px.get(index)),
                b: shape(py.get(index)),
            }
            .into());
        }
        for (index, (p, q)) in px.iter().zip(&py).enumerate() {
            if p.shape != q.shape || p.role != q.role {
                return Err(Incomparable::ParameterShape {
                    block,
                    index,
                    role: p.role,
                    a: p.shape,
                    b: q.shape,
                }
                .into());
            }
            for (&u, &v) in p.values.iter().zip(q.values.iter()) {
                let (u, v) = (to_f64(u), to_f64(v));
                ab += u * v;
                aa += u * u;
                bb += v * v;
            }
        }
    }
    for (norm, side) in [(aa, Side::A), (bb, Side::B)] {
        if norm == 0.0 {
            return Err(Error::ZeroNorm(side));
        }
    }
    Ok((ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0))
}

/// The global empirical output cosine on the inputs `X` (one sample per
/// row, `samples × d`):
///
/// ```text
/// Σ_x f_A(x)·f_B(x) / √(Σ_x |f_A(x)|² · Σ_x |f_B(x)|²)
/// ```
///
/// On `X ∼ N(μ, Σ)` ([`sample_gaussian`]) this is a Monte Carlo estimate of
/// the Gaussian similarity, with an error of order `1/√samples` that grows
/// with the degree of the models (their outputs are heavy-tailed
/// polynomials of `x`).
///
/// It compares functions, so it has every symmetry of [SPEC §2](crate::spec#2-tensor-similarity-the-default-metric), but it only
/// sees the function on the samples given, and samples with large outputs
/// dominate it. An error unless both models read `d` inputs and write the
/// same number of outputs, if `X` has no rows or a non-finite entry, or if
/// one model's outputs are all zero.
///
/// # Example
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{baseline::output_cosine, Linear, Model};
///
/// let a = Model::builder().block(Linear::new(dmatrix![1.0, 0.0], None)?).build()?;
/// let b = Model::builder().block(Linear::new(dmatrix![1.0, 1.0], None)?).build()?;
/// // Outputs on the two samples: a → (1, 0), b → (1, 1).
/// let x = dmatrix![1.0, 0.0; 0.0, 1.0];
/// assert!((output_cosine(&a, &b, &x)? - 0.5f64.sqrt()).abs() < 1e-15);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn output_cosine<T: Real>(a: &Model<T>, b: &Model<T>, inputs: &DMatrix<T>) -> Result<f64> {
    let (ya, yb) = outputs(a, b, inputs, "output cosine", 1)?;
    let (ab, aa, bb) = (ya.dot(&yb), ya.norm_squared(), yb.norm_squared());
    for (norm, side) in [(aa, Side::A), (bb, Side::B)] {
        if norm == 0.0 {
            return Err(Error::ZeroNorm(side));
        }
    }
    Ok((ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0))
}

/// The mean over samples (rows of `X`) of the cosine between the two output
/// vectors, `(1/N) Σ_x f_A(x)·f_B(x) / (|f_A(x)| |f_B(x)|)`.
///
/// It ignores how large the outputs are: `f_B = c(x) f_A` scores 1 for any
/// positive `c(x)`, and with a single output it only counts sign agreements.
/// Samples where an output is nearly zero weigh as much as any other,
/// although their direction is mostly noise. An error as for
/// [`output_cosine`], and [`Error::ZeroOutput`] if either model outputs the
/// zero vector on some sample.
///
/// # Example
///
/// ```
/// use nalgebra::dmatrix;
/// use tensor_similarity::{baseline::mean_sample_cosine, Linear, Model};
///
/// let a = Model::builder().block(Linear::new(dmatrix![1.0, 0.0; 0.0, 1.0], None)?).build()?;
/// let b = Model::builder().block(Linear::new(dmatrix![3.0, 0.0; 0.0, 1.0], None)?).build()?;
/// // Sample 1: (1, 0) vs (3, 0), cosine 1; sample 2: (1, 1) vs (3, 1), cosine 4/√20.
/// let x = dmatrix![1.0, 0.0; 1.0, 1.0];
/// let expected = (1.0 + 4.0 / 20f64.sqrt()) / 2.0;
/// assert!((mean_sample_cosine(&a, &b, &x)? - expected).abs() < 1e-15);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn mean_sample_cosine<T: Real>(a: &Model<T>, b: &Model<T>, inputs: &DMatrix<T>) -> Result<f64> {
    let (ya, yb) = outputs(a, b, inputs, "mean per-sample cosine", 1)?;
    let mut total = 0.0;
    for (sample, (ra, rb)) in ya.row_iter().zip(yb.row_iter()).enumerate() {
        let (na, nb) = (ra.norm(), rb.norm());
        for (norm, side) in [(na, Side::A), (nb, Side::B)] {
            if norm == 0.0 {
                return Err(Error::ZeroOutput { side, sample });
            }
        }
        total += (ra.dot(&rb) / (na * nb)).clamp(-1.0, 1.0);
    }
    Ok(total / ya.nrows() as f64)
}

/// Linear CKA of the two models' outputs on the inputs `X` (one sample per
/// row): [`linear_cka_of`] applied to `f_A(X)` and `f_B(X)`. The models may
/// have different numbers of outputs.
///
/// It compares the geometry of the samples in output space, not the
/// functions: it is invariant to any rotation and any isotropic scaling of
/// either model's outputs and blind to constant output offsets (the outputs
/// are centred), so `f_B = Q f_A + c` scores 1 for any orthogonal `Q` and
/// constant `c` although the outputs differ. It is not invariant to
/// general invertible linear maps of the outputs, and is biased upwards
/// when the number of samples is not large against the output width.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{baseline::linear_cka, Linear, Model};
///
/// let a = Model::builder().block(Linear::new(dmatrix![1.0, 0.0; 0.0, 1.0], None)?).build()?;
/// // A rotation of a's outputs plus an offset: linear CKA cannot tell them apart.
/// let b = Model::builder()
///     .block(Linear::new(dmatrix![0.0, -1.0; 1.0, 0.0], Some(dvector![5.0, 5.0]))?)
///     .build()?;
/// let x = dmatrix![1.0, 2.0; -1.0, 0.5; 0.3, -2.0];
/// assert!((linear_cka(&a, &b, &x)? - 1.0).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn linear_cka<T: Real>(a: &Model<T>, b: &Model<T>, inputs: &DMatrix<T>) -> Result<f64> {
    if a.input_width() != b.input_width() {
        return Err(Incomparable::InputWidth {
            a: a.input_width(),
            b: b.input_width(),
        }
        .into());
    }
    check_inputs(a, inputs, "linear CKA", 2)?;
    linear_cka_of(&a.forward_rows(inputs)?, &b.forward_rows(inputs)?)
}

/// Linear CKA of two representations of the same `N` samples (rows),
/// `Y_A` (`N × p`) and `Y_B` (`N × q`): with column-centred `Ȳ`,
///
/// ```text
/// CKA = ‖Ȳ_Bᵀ Ȳ_A‖²_F / (‖Ȳ_Aᵀ Ȳ_A‖_F ‖Ȳ_Bᵀ Ȳ_B‖_F)  ∈ [0, 1]
/// ```
///
/// semantically the same as `HSIC(K,L) / √(HSIC(K,K) HSIC(L,L))` with
/// `K = Y_A Y_Aᵀ`, `L = Y_B Y_Bᵀ` and `HSIC(K,L) = tr(K H L H)`,
/// `H = I − 11ᵀ/N`, but in `O(N p q)` instead of `O(N²)`.
///
/// An error unless both have the same number of rows, at least 2, and
/// finite entries, or if either is constant over the samples.
pub fn linear_cka_of<T: Real>(ya: &DMatrix<T>, yb: &DMatrix<T>) -> Result<f64> {
    if ya.nrows() != yb.nrows() {
        return Err(Error::Shape {
            what: "second representation for linear CKA (same samples as the first)".into(),
            expected: (ya.nrows(), yb.ncols()),
            found: yb.shape(),
        });
    }
    if ya.nrows() < 2 {
        return Err(Error::TooFewSamples {
            what: "linear CKA",
            needed: 2,
            found: ya.nrows(),
        });
    }
    check_finite("first representation for linear CKA", ya)?;
    check_finite("second representation for linear CKA", yb)?;
    let (ya, yb) = (centred(ya), centred(yb));
    let cross = (yb.transpose() * &ya).norm_squared();
    let self_a = (ya.transpose() * &ya).norm();
    let self_b = (yb.transpose() * &yb).norm();
    for (norm, side) in [(self_a, Side::A), (self_b, Side::B)] {
        if norm == 0.0 {
            return Err(Error::ZeroNorm(side));
        }
    }
    Ok((cross / (self_a * self_b)).clamp(0.0, 1.0))
}

/// `samples` rows drawn from `N(μ, Σ)` (`samples × d`), as `μ + F z` with
/// `z ∼ N(0, I)` by the Box–Muller transform and `F = V Λ^{1/2}` from the
/// eigendecomposition of `Σ`, so that a singular `Σ` (a Gaussian on a
/// subspace) works.
///
/// An error unless `Σ` is `d × d`, finite, symmetric and positive
/// semidefinite and `μ` is finite.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use rand::{SeedableRng, rngs::StdRng};
/// use tensor_similarity::baseline::sample_gaussian;
///
/// let mut rng = StdRng::seed_from_u64(1);
/// // Σ of rank 1: every sample lies on the line x_2 = x_1 through μ.
/// let x = sample_gaussian(&mut rng, &dvector![1.0f64, 2.0], &dmatrix![1.0, 1.0; 1.0, 1.0], 100)?;
/// assert_eq!(x.shape(), (100, 2));
/// assert!(x.row_iter().all(|r| (r[1] - r[0] - 1.0).abs() < 1e-12));
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn sample_gaussian<T: Real>(
    rng: &mut impl Rng,
    mean: &DVector<T>,
    covariance: &DMatrix<T>,
    samples: usize,
) -> Result<DMatrix<T>> {
    let d = mean.len();
    crate::validate::check_shape("input covariance", covariance, (d, d))?;
    check_finite("input mean", mean)?;
    let factor = covariance_factor(covariance)?;
    let mut z = DMatrix::<T>::zeros(d, samples);
    let mut spare = None;
    for v in z.iter_mut() {
        let normal = match spare.take() {
            Some(s) => s,
            None => {
                // u1 ∈ (0, 1], so the logarithm is finite.
                let u1 = 1.0 - rng.random::<f64>();
                let u2: f64 = rng.random();
                let radius = (-2.0 * u1.ln()).sqrt();
                let angle = core::f64::consts::TAU * u2;
                spare = Some(radius * angle.sin());
                radius * angle.cos()
            }
        };
        *v = from_f64(normal);
    }
    let mut x = (factor * z).transpose();
    for mut row in x.row_iter_mut() {
        row += mean.transpose();
    }
    Ok(x)
}

/// An error unless `inputs` has at least `needed` rows, `model`'s input
/// width as its column count, and finite entries.
fn check_inputs<T: Real>(
    model: &Model<T>,
    inputs: &DMatrix<T>,
    what: &'static str,
    needed: usize,
) -> Result<()> {
    if inputs.nrows() < needed {
        return Err(Error::TooFewSamples {
            what,
            needed,
            found: inputs.nrows(),
        });
    }
    if inputs.ncols() != model.input_width() {
        return Err(Error::Shape {
            what: format!("inputs for the {what} (one sample per row)"),
            expected: (inputs.nrows(), model.input_width()),
            found: inputs.shape(),
        });
    }
    check_finite("inputs", inputs)
}

/// Both models' outputs on `inputs` in `f64`, each divided by its largest
/// entry (the cosines are scale-invariant, and this keeps sums of squares of
/// large outputs from overflowing).
fn outputs<T: Real>(
    a: &Model<T>,
    b: &Model<T>,
    inputs: &DMatrix<T>,
    what: &'static str,
    needed: usize,
) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
    a.check_same_io(b)?;
    check_inputs(a, inputs, what, needed)?;
    let scaled = |m: &Model<T>, side: Side| -> Result<DMatrix<f64>> {
        let y = m.forward_rows(inputs)?.map(to_f64);
        check_finite(&format!("outputs of model {side}"), &y)?;
        let largest = y.amax();
        Ok(if largest > 0.0 { y / largest } else { y })
    };
    Ok((scaled(a, Side::A)?, scaled(b, Side::B)?))
}

/// `Y` in `f64` with each column's mean removed, divided by its largest
/// entry (CKA is scale-invariant).
fn centred<T: Real>(y: &DMatrix<T>) -> DMatrix<f64> {
    let mut y = y.map(to_f64);
    let n = y.nrows() as f64;
    for mut col in y.column_iter_mut() {
        let mean = col.sum() / n;
        col.add_scalar_mut(-mean);
    }
    let largest = y.amax();
    if largest > 0.0 { y / largest } else { y }
}
