//! Gaussian functional similarity (SPEC §3): the cosine of two models'
//! functions in `L²(N(μ, Σ))`,
//!
//! ```text
//! ⟨f_A, f_B⟩ = E_{x∼N(μ,Σ)}[f_A(x) · f_B(x)],     sim = ⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩)
//! ```
//!
//! over the non-constant outputs, uncentred (default `μ = 0, Σ = I`).
//!
//! # Moment propagation
//!
//! The state after block `ℓ` is the joint first and second moments of the two
//! models' padded activations `ã`, `b̃`: the means `m_A, m_B` and the
//! covariance blocks `C_AA, C_AB, C_BB`. At the input `ã = b̃ = x̃ = (1, x)`,
//! so `m = (1, μ)` and `C = [[0, 0], [0, Σ]]` for all three blocks. A block
//! in padded CP form `ỹ = D̃ z`, `z = (U_1 ã) ∘ … ∘ (U_k ã)`, needs `E[z_A]`
//! and `Cov(z_A, z_B)` (and the same for `A, A` and `B, B`); then
//! `m' = D̃ E[z]` and `C'_AB = D̃_A Cov(z_A, z_B) D̃_Bᵀ`.
//!
//! Write `u_j = U_j ã` (`j = 1…k_A`) and `v_j = U_j b̃` (`j = 1…k_B`) for the
//! legs. If `(ã, b̃)` is jointly Gaussian, Isserlis' (Wick's) theorem for a
//! non-centred Gaussian gives `E[Π_j u_j[ρ] Π_j v_j[ρ']]` as the sum over all
//! partitions of the `k_A + k_B` legs into singletons (a mean, `U_j m`) and
//! pairs (a covariance, `U_i C U_jᵀ`): a pair of an A-leg and a B-leg is a
//! matrix over `(ρ, ρ')`, a pair within one side is that side's diagonal.
//! The sum is evaluated grouped by its set `M` of cross pairs (A-leg, B-leg):
//!
//! ```text
//! E[z_A z_Bᵀ] = Σ_M (∘_{(i,j)∈M} X_ij) ∘ (α_A(A∖M) ⊗ α_B(B∖M)),   X_ij = U^A_i C_AB (U^B_j)ᵀ
//! ```
//!
//! where `α_A(S)[ρ] = E[Π_{j∈S} u_j[ρ]]` sums the partitions of the A-legs in
//! `S` into singletons and A–A pairs (computed once per subset, by the
//! recursion `α(S) = μ_i ∘ α(S∖i) + Σ_{j∈S∖i} diag(U_i C U_jᵀ) ∘ α(S∖{i,j})`).
//! The empty `M` is `E[z_A] E[z_B]ᵀ`, so `Cov(z_A, z_B)` is the sum over the
//! non-empty `M` and needs no subtraction. The two blocks at one position may
//! have different orders and kinds. For `k_A = k_B = 2` the second-moment
//! form of SPEC §3 is used instead:
//! `Cov(z_A, z_B) = X̂_11∘X̂_22 + X̂_12∘X̂_21 − 2 (μ_a1∘μ_a2)(μ_b1∘μ_b2)ᵀ` with
//! `X̂_ij` built from the second moment `S_AB = C_AB + m_A m_Bᵀ` (the
//! `E[a_1a_2] ⊗ E[b_1b_2]` term of SPEC §3 cancels against `E[z_A]E[z_B]ᵀ`).
//!
//! A block's symmetry group plays no part: the metric compares functions,
//! and the function does not depend on the order of legs that read the same
//! input.
//!
//! # Exact or Gaussian closure
//!
//! Linear blocks propagate first and second moments exactly whatever the
//! distribution. A block of order `k ≥ 2` needs moments of order up to `2k`
//! of its input, and Isserlis gives them only for a Gaussian input. The
//! result is therefore **exact** (up to rounding) when every block of order
//! `≥ 2` in either model reads a jointly Gaussian `(ã, b̃)`: that is when all
//! such blocks of both models sit at **one position** `ℓ` (before it both
//! activations are affine images of the same Gaussian `x`; after it only
//! linear blocks follow). [`GaussianSimilarity::is_exact`] tests this.
//!
//! Otherwise the result is a **Gaussian closure**: at every block of order
//! `≥ 2` after the first such position, the joint law of `(ã, b̃)` is replaced
//! by the Gaussian with the same (tracked) mean and covariance, and the
//! block's output moments are those it would have under that Gaussian. What
//! is dropped is every joint cumulant of order `≥ 3` of the block's inputs
//! (their skewness and excess kurtosis, e.g. `E[q(x)·(vᵀx)(wᵀx)]` for a
//! quadratic `q` produced by an earlier bilinear block). The closure is an
//! approximation of `E[f_A f_B]` with no error bound; its measured error on
//! random two- and three-block models is in `docs/metrics.md`.
//!
//! # Normalisation
//!
//! A block's output moments are homogeneous in its input state when the
//! means count with degree 1 and the covariances with degree 2 (the constant
//! channel `ã_0` included), so each model's state is kept as
//! `ã = λ_A â` with `(m̂_A, Ĉ_AA)` divided by their largest entry (of `|m̂|`
//! and `√diag Ĉ`) after every block and `ln λ_A ← k_A ln λ_A + ln c_A`
//! carried apart, and `Ĉ_AB = C_AB / (λ_A λ_B)`. Inner products come back as
//! [`LogScaled`], and nothing overflows at any depth.

use nalgebra::{DMatrix, DVector};

use crate::block::{CpFactors, check_finite, check_shape};
use crate::error::{Error, Incomparable, Result, Side};
use crate::model::Model;
use crate::recursion::{RecursiveSimilarity, cosine};
use crate::scalar::{LogScaled, Real, from_f64, to_f64};

/// The highest block order the Wick expansion accepts: its cost grows like
/// `Σ_p C(k,p)² p!` (the partial matchings between the legs of the two blocks), about
/// 1.4 million Hadamard products of `r_A × r_B` matrices at `k = 8`.
pub const MAX_GAUSSIAN_ORDER: usize = 8;

/// The Gaussian functional similarity of SPEC §3:
/// `⟨f_A, f_B⟩ = E_{x∼N(μ,Σ)}[f_A(x)·f_B(x)]` by propagation of the joint
/// means and covariances of the two models' activations (see the
/// [module documentation](self) for the Isserlis/Wick expansion, what
/// "exact" and "closure" mean, and the normalisation).
///
/// The models need the same depth, input width and output width; their
/// hidden widths and block orders may differ position by position.
///
/// `E[f_A·f_B]` is bilinear in the functions, so the provided
/// [`difference_similarity`](RecursiveSimilarity::difference_similarity)
/// is exact when every pair it combines is exact. Closure values are not
/// bilinear in the models, so their combination is an approximation too. It
/// can fail with [`Error::ZeroNorm`] when a combined squared norm comes out
/// non-positive.
///
/// # Example
///
/// ```
/// use nalgebra::{dmatrix, dvector};
/// use tensor_similarity::{Bilinear, GaussianSimilarity, Model, RecursiveSimilarity};
///
/// // f(x) = x_1 · x_2 and g(x) = x_1²: uncorrelated under N(0, I).
/// let f = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![0.0, 1.0])?).build()?;
/// let g = Model::builder().block(Bilinear::new(dmatrix![1.0, 0.0], dmatrix![1.0, 0.0])?).build()?;
/// let metric = GaussianSimilarity::new();
/// assert!(metric.similarity(&f, &g)?.abs() < 1e-12);
/// // E[x_1⁴] = 3.
/// assert!((metric.squared_norm(&g)?.to_f64() - 3.0).abs() < 1e-12);
/// // With mean μ = (1, 1): E[x_1 x_2 · x_1²] = μ_2 E[x_1³] = 4, E[(x_1x_2)²] = 4, E[x_1⁴] = 10.
/// let shifted = GaussianSimilarity::new().with_mean(dvector![1.0, 1.0])?;
/// let report = shifted.report(&f, &g)?;
/// assert!(report.exact);
/// assert!((report.similarity - 4.0 / (4.0f64 * 10.0).sqrt()).abs() < 1e-12);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GaussianSimilarity<T: Real = f64> {
    mean: Option<DVector<T>>,
    covariance: Option<DMatrix<T>>,
}

/// A Gaussian similarity together with whether it is exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaussianReport {
    /// `⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩) ∈ [−1, 1]`.
    pub similarity: f64,
    /// `true` when every block of order `≥ 2` of either model sits at one
    /// position, so that Isserlis applies to a truly Gaussian input and the
    /// result is exact up to rounding; `false` when later blocks used the
    /// Gaussian closure (see the [module documentation](self)).
    pub exact: bool,
}

impl<T: Real> GaussianSimilarity<T> {
    /// The standard normal input `N(0, I)`.
    pub fn new() -> Self {
        Self {
            mean: None,
            covariance: None,
        }
    }

    /// The input mean `μ` (length `d`, checked against the models when they
    /// are compared); an error if it holds a NaN or infinity.
    pub fn with_mean(mut self, mean: DVector<T>) -> Result<Self> {
        check_finite("input mean", &mean)?;
        self.mean = Some(mean);
        Ok(self)
    }

    /// The input covariance `Σ` (`d × d`); an error unless it is square,
    /// finite, symmetric and positive semidefinite (a singular `Σ`, a
    /// Gaussian on a subspace, is allowed).
    pub fn with_covariance(mut self, covariance: DMatrix<T>) -> Result<Self> {
        covariance_factor(&covariance)?;
        self.covariance = Some(covariance);
        Ok(self)
    }

    /// `N(μ, Σ)` at once: [`with_mean`](Self::with_mean) then
    /// [`with_covariance`](Self::with_covariance), and an error if their
    /// sizes differ.
    pub fn with_input(self, mean: DVector<T>, covariance: DMatrix<T>) -> Result<Self> {
        let d = mean.len();
        check_shape("input covariance", &covariance, (d, d))?;
        self.with_mean(mean)?.with_covariance(covariance)
    }

    /// Whether [`similarity`](RecursiveSimilarity::similarity) and
    /// [`inner_product`](RecursiveSimilarity::inner_product) of `a` and `b`
    /// are exact (up to rounding): at most one position holds a block of
    /// order `≥ 2` in either model. Otherwise they use the Gaussian closure.
    ///
    /// Exactness of the two self products `⟨f_A,f_A⟩`, `⟨f_B,f_B⟩` alone
    /// needs only that each model has at most one such block; the cross
    /// product also needs the two to be at the same position.
    ///
    /// ```
    /// use nalgebra::DMatrix;
    /// use tensor_similarity::{Bilinear, GaussianSimilarity, Linear, Model};
    ///
    /// let lin = || Linear::new(DMatrix::<f64>::identity(2, 2), None).unwrap();
    /// let bil = || Bilinear::new(DMatrix::<f64>::identity(2, 2), DMatrix::identity(2, 2)).unwrap();
    /// let first = Model::builder().block(bil()).block(lin()).build()?;
    /// let second = Model::builder().block(lin()).block(bil()).build()?;
    /// let metric = GaussianSimilarity::<f64>::new();
    /// assert!(metric.is_exact(&first, &first));
    /// assert!(!metric.is_exact(&first, &second));
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    pub fn is_exact(&self, a: &Model<T>, b: &Model<T>) -> bool {
        let nonlinear = |m: &Model<T>, position: usize| {
            m.blocks().get(position).is_some_and(|x| x.order() >= 2)
        };
        (0..a.depth().max(b.depth()))
            .filter(|&p| nonlinear(a, p) || nonlinear(b, p))
            .count()
            <= 1
    }

    /// The similarity and whether it is exact.
    pub fn report(&self, a: &Model<T>, b: &Model<T>) -> Result<GaussianReport> {
        Ok(GaussianReport {
            similarity: self.similarity(a, b)?,
            exact: self.is_exact(a, b),
        })
    }

    /// The initial state `m = (1, μ)`, `C = [[0, 0], [0, Σ]]`, normalised.
    fn input_state(&self, d: usize) -> Result<Moments<T>> {
        let mut mean = DVector::zeros(d + 1);
        mean[0] = T::one();
        if let Some(mu) = &self.mean {
            check_len_for("input mean", mu.len(), d)?;
            mean.rows_mut(1, d).copy_from(mu);
        }
        let mut cov = DMatrix::zeros(d + 1, d + 1);
        match &self.covariance {
            Some(sigma) => {
                check_shape("input covariance", sigma, (d, d))?;
                cov.view_mut((1, 1), (d, d)).copy_from(sigma);
            }
            None => cov.view_mut((1, 1), (d, d)).fill_diagonal(T::one()),
        }
        let mut side = Activation {
            mean,
            cov,
            ln_scale: 0.0,
        };
        side.normalise(0)?;
        Ok(Moments {
            cross: side.cov.clone(),
            a: side.clone(),
            b: side,
        })
    }

    /// Propagates the joint moments through both models; with `same`, `b` is
    /// `a` and the B side and cross block are copies of the A side.
    fn propagate(&self, a: &Model<T>, b: &Model<T>, same: bool) -> Result<Moments<T>> {
        check_comparable(a, b)?;
        let mut state = self.input_state(a.input_width())?;
        for (position, (block_a, block_b)) in a.blocks().iter().zip(b.blocks()).enumerate() {
            let (fa, fb) = (block_a.cp_factors(), block_b.cp_factors());
            for (f, side) in [(fa, Side::A), (fb, Side::B)] {
                if f.order() > MAX_GAUSSIAN_ORDER {
                    return Err(Error::OrderTooHigh {
                        block: position,
                        side,
                        order: f.order(),
                        max: MAX_GAUSSIAN_ORDER,
                    });
                }
            }
            state = if same {
                state.step_same(fa, position)?
            } else {
                state.step(fa, fb, position)?
            };
        }
        Ok(state)
    }
}

impl<T: Real> RecursiveSimilarity<T> for GaussianSimilarity<T> {
    fn inner_product(&self, a: &Model<T>, b: &Model<T>) -> Result<LogScaled> {
        Ok(self.propagate(a, b, false)?.read_out())
    }

    /// One pass: the joint state already holds both sides' moments, so
    /// `⟨f_A,f_A⟩` and `⟨f_B,f_B⟩` come with `⟨f_A,f_B⟩`.
    fn similarity(&self, a: &Model<T>, b: &Model<T>) -> Result<f64> {
        let state = self.propagate(a, b, false)?;
        cosine(
            state.read_out(),
            state.a.read_out_self(),
            state.b.read_out_self(),
        )
    }

    fn squared_norm(&self, a: &Model<T>) -> Result<LogScaled> {
        Ok(self.propagate(a, a, true)?.read_out())
    }
}

/// Same depth, input width and output width: what the Gaussian metric needs
/// (block orders and hidden widths may differ).
fn check_comparable<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<()> {
    if a.depth() != b.depth() {
        return Err(Incomparable::Depth {
            a: a.depth(),
            b: b.depth(),
        }
        .into());
    }
    check_same_io(a, b)
}

/// Same input and output widths: what any function-space comparison needs.
pub(crate) fn check_same_io<T: Real>(a: &Model<T>, b: &Model<T>) -> Result<()> {
    if a.input_width() != b.input_width() {
        return Err(Incomparable::InputWidth {
            a: a.input_width(),
            b: b.input_width(),
        }
        .into());
    }
    if a.output_width() != b.output_width() {
        return Err(Incomparable::OutputWidth {
            a: a.output_width(),
            b: b.output_width(),
        }
        .into());
    }
    Ok(())
}

fn check_len_for(what: &str, found: usize, expected: usize) -> Result<()> {
    if found != expected {
        return Err(Error::Shape {
            what: what.to_owned(),
            expected: (expected, 1),
            found: (found, 1),
        });
    }
    Ok(())
}

/// A factor `F` with `F Fᵀ = Σ` (`F = V Λ^{1/2}` from the eigendecomposition,
/// so that a singular `Σ` works); an error unless `Σ` is square, finite,
/// symmetric and positive semidefinite up to rounding.
pub(crate) fn covariance_factor<T: Real>(covariance: &DMatrix<T>) -> Result<DMatrix<T>> {
    let what = "input covariance";
    let (r, c) = covariance.shape();
    if r != c || r == 0 {
        return Err(Error::InvalidOption {
            what,
            reason: format!("must be square and non-empty, found {r}×{c}"),
        });
    }
    check_finite(what, covariance)?;
    let scale = covariance.amax();
    let tolerance = scale * T::default_epsilon() * from_f64(64.0 * r as f64);
    for i in 0..r {
        for j in 0..i {
            if (covariance[(i, j)] - covariance[(j, i)]).abs() > tolerance {
                return Err(Error::InvalidOption {
                    what,
                    reason: format!(
                        "not symmetric at ({i}, {j}): {} vs {}",
                        to_f64(covariance[(i, j)]),
                        to_f64(covariance[(j, i)])
                    ),
                });
            }
        }
    }
    let symmetric = (covariance + covariance.transpose()) * from_f64::<T>(0.5);
    let eigen = symmetric.symmetric_eigen();
    let mut factor = eigen.eigenvectors;
    for (i, &lambda) in eigen.eigenvalues.iter().enumerate() {
        if lambda < -tolerance {
            return Err(Error::InvalidOption {
                what,
                reason: format!(
                    "not positive semidefinite: eigenvalue {:.6e}",
                    to_f64(lambda)
                ),
            });
        }
        let root = lambda.max(T::zero()).sqrt();
        factor.column_mut(i).scale_mut(root);
    }
    Ok(factor)
}

/// One model's normalised moments: the padded activation is `e^ln_scale · â`
/// with `E[â] = mean`, `Cov(â) = cov`.
#[derive(Clone, Debug)]
struct Activation<T: Real> {
    mean: DVector<T>,
    cov: DMatrix<T>,
    ln_scale: f64,
}

impl<T: Real> Activation<T> {
    /// `E[|f|²] = Σ_{o≥1} (Ĉ[o,o] + m̂[o]²)`, scaled back.
    fn read_out_self(&self) -> LogScaled {
        let n = self.mean.len() - 1;
        let mut value = T::zero();
        for o in 1..=n {
            value += self.cov[(o, o)] + self.mean[o] * self.mean[o];
        }
        LogScaled::from_scaled(to_f64(value), 2.0 * self.ln_scale)
    }

    /// Divides by `c = max(max |m̂|, √max diag Ĉ)`, adds `ln c` to the scale
    /// and returns `c` (1 for an all-zero state, which stays as it is).
    fn normalise(&mut self, block: usize) -> Result<T> {
        let largest_sd = self
            .cov
            .diagonal()
            .iter()
            .fold(T::zero(), |acc, &v| acc.max(v))
            .sqrt();
        let c = self.mean.amax().max(largest_sd);
        if !c.is_finite() || !self.ln_scale.is_finite() {
            return Err(Error::NumericalBreakdown {
                block,
                reason: format!(
                    "the activation moments overflowed (log scale {:.3e})",
                    self.ln_scale
                ),
            });
        }
        if c > T::zero() {
            self.mean /= c;
            self.cov /= c * c;
            self.ln_scale += to_f64(c).ln();
            Ok(c)
        } else {
            Ok(T::one())
        }
    }
}

/// The joint state: both sides and the cross covariance `Ĉ_AB`.
#[derive(Clone, Debug)]
struct Moments<T: Real> {
    a: Activation<T>,
    b: Activation<T>,
    cross: DMatrix<T>,
}

impl<T: Real> Moments<T> {
    /// `Σ_{o≥1} (Ĉ_AB[o,o] + m̂_A[o] m̂_B[o])`, scaled back.
    fn read_out(&self) -> LogScaled {
        let n = self.a.mean.len() - 1;
        let mut value = T::zero();
        for o in 1..=n {
            value += self.cross[(o, o)] + self.a.mean[o] * self.b.mean[o];
        }
        LogScaled::from_scaled(to_f64(value), self.a.ln_scale + self.b.ln_scale)
    }

    fn step(&self, fa: &CpFactors<T>, fb: &CpFactors<T>, block: usize) -> Result<Self> {
        let legs_a = Legs::new(fa, &self.a);
        let legs_b = Legs::new(fb, &self.b);
        let mut a = legs_a.output_side(fa, &self.a, block)?;
        let mut b = legs_b.output_side(fb, &self.b, block)?;
        let cross = through_outputs(
            fa,
            fb,
            covariance(
                fa,
                fb,
                &legs_a,
                &legs_b,
                &self.a.mean,
                &self.b.mean,
                &self.cross,
            ),
        );
        let ca = a.normalise(block)?;
        let cb = b.normalise(block)?;
        let next = Self {
            a,
            b,
            cross: cross / (ca * cb),
        };
        check_finite_state(&next, block)?;
        Ok(next)
    }

    fn step_same(&self, fa: &CpFactors<T>, block: usize) -> Result<Self> {
        let legs = Legs::new(fa, &self.a);
        let mut a = legs.output_side(fa, &self.a, block)?;
        a.normalise(block)?;
        let next = Self {
            cross: a.cov.clone(),
            b: a.clone(),
            a,
        };
        check_finite_state(&next, block)?;
        Ok(next)
    }
}

fn check_finite_state<T: Real>(state: &Moments<T>, block: usize) -> Result<()> {
    let finite = |m: &[T]| m.iter().all(|v| v.is_finite());
    if finite(state.a.mean.as_slice())
        && finite(state.b.mean.as_slice())
        && finite(state.a.cov.as_slice())
        && finite(state.b.cov.as_slice())
        && finite(state.cross.as_slice())
    {
        Ok(())
    } else {
        Err(Error::NumericalBreakdown {
            block,
            reason: "the activation moments became non-finite".into(),
        })
    }
}

/// What one block's legs need from its input: the leg means `μ_j = U_j m`
/// and the moments `α(S)[ρ] = E[Π_{j∈S} u_j[ρ]]` of every subset `S` of legs
/// (a bit mask), under the Gaussian with the side's mean and covariance.
struct Legs<T: Real> {
    order: usize,
    rank: usize,
    means: DVector<T>,
    subset_moments: Vec<DVector<T>>,
}

impl<T: Real> Legs<T> {
    fn new(f: &CpFactors<T>, side: &Activation<T>) -> Self {
        let (k, r) = (f.order(), f.rank());
        let u = f.stacked_inputs();
        let means = u * &side.mean;
        let uc = u * &side.cov;
        // diag(U_i C U_jᵀ) for i < j, the within-side pair covariances.
        let mut pair = vec![DVector::zeros(0); k * k];
        for i in 0..k {
            for j in i + 1..k {
                pair[i * k + j] =
                    DVector::from_fn(r, |rho, _| uc.row(i * r + rho).dot(&u.row(j * r + rho)));
            }
        }
        let mut subset_moments = vec![DVector::from_element(r, T::one()); 1 << k];
        for mask in 1..1usize << k {
            let i = mask.trailing_zeros() as usize;
            let rest = mask & !(1 << i);
            let mut alpha = means.rows(i * r, r).component_mul(&subset_moments[rest]);
            for j in (i + 1..k).filter(|j| rest & (1 << j) != 0) {
                alpha += pair[i * k + j].component_mul(&subset_moments[rest & !(1 << j)]);
            }
            subset_moments[mask] = alpha;
        }
        Self {
            order: k,
            rank: r,
            means,
            subset_moments,
        }
    }

    /// `E[z]` for `z = u_1 ∘ … ∘ u_k`.
    fn mean(&self) -> &DVector<T> {
        &self.subset_moments[(1 << self.order) - 1]
    }

    /// `μ_1 ∘ … ∘ μ_k`: `z` at the mean input.
    fn at_mean(&self) -> DVector<T> {
        let r = self.rank;
        (1..self.order).fold(self.means.rows(0, r).into_owned(), |acc, j| {
            acc.component_mul(&self.means.rows(j * r, r))
        })
    }

    /// The block's output moments for one side (unnormalised scale update).
    fn output_side(
        &self,
        f: &CpFactors<T>,
        side: &Activation<T>,
        block: usize,
    ) -> Result<Activation<T>> {
        let mean = match f.output() {
            Some(d) => d * self.mean(),
            None => self.mean().clone(),
        };
        let cov = through_outputs(
            f,
            f,
            covariance(f, f, self, self, &side.mean, &side.mean, &side.cov),
        );
        let ln_scale = side.ln_scale * f.order() as f64;
        if !ln_scale.is_finite() {
            return Err(Error::NumericalBreakdown {
                block,
                reason: format!("the log scale overflowed ({ln_scale:.3e})"),
            });
        }
        Ok(Activation {
            mean,
            cov,
            ln_scale,
        })
    }
}

/// `D̃_A H D̃_Bᵀ`.
fn through_outputs<T: Real>(fa: &CpFactors<T>, fb: &CpFactors<T>, h: DMatrix<T>) -> DMatrix<T> {
    let left = match fa.output() {
        Some(d) => d * h,
        None => h,
    };
    match fb.output() {
        Some(d) => left * d.transpose(),
        None => left,
    }
}

/// `Cov(z_A, z_B)` (`r_A × r_B`) for legs reading a jointly Gaussian
/// `(ã, b̃)` with means `m_a`, `m_b` and cross covariance `c_ab`: the
/// second-moment form when both orders are 2, the general Wick sum otherwise.
fn covariance<T: Real>(
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    legs_a: &Legs<T>,
    legs_b: &Legs<T>,
    m_a: &DVector<T>,
    m_b: &DVector<T>,
    c_ab: &DMatrix<T>,
) -> DMatrix<T> {
    if fa.order() == 2 && fb.order() == 2 {
        covariance_order2(fa, fb, legs_a, legs_b, m_a, m_b, c_ab)
    } else {
        covariance_wick(fa, fb, legs_a, legs_b, c_ab)
    }
}

/// `Σ_{M ≠ ∅} (∘_{(i,j)∈M} X_ij) ∘ (α_A(A∖M) ⊗ α_B(B∖M))` over the
/// non-empty partial matchings `M` of A-legs to B-legs, with
/// `X = [U^A_1; …] C_AB [U^B_1; …]ᵀ`.
fn covariance_wick<T: Real>(
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    legs_a: &Legs<T>,
    legs_b: &Legs<T>,
    c_ab: &DMatrix<T>,
) -> DMatrix<T> {
    let x = fa.stacked_inputs() * c_ab * fb.stacked_inputs().transpose();
    let matcher = Matcher {
        x: &x,
        a: legs_a,
        b: legs_b,
    };
    let mut h = DMatrix::zeros(legs_a.rank, legs_b.rank);
    matcher.visit(0, 0, 0, None, &mut h);
    h
}

/// Depth-first walk over the partial matchings of A-legs to B-legs, carrying
/// the Hadamard product of the matched `X_ij` so far.
struct Matcher<'a, T: Real> {
    x: &'a DMatrix<T>,
    a: &'a Legs<T>,
    b: &'a Legs<T>,
}

impl<T: Real> Matcher<'_, T> {
    fn visit(
        &self,
        leg: usize,
        matched_a: usize,
        used_b: usize,
        product: Option<&DMatrix<T>>,
        h: &mut DMatrix<T>,
    ) {
        let (ra, rb) = (self.a.rank, self.b.rank);
        if leg == self.a.order {
            if let Some(p) = product {
                let rest_a = ((1 << self.a.order) - 1) & !matched_a;
                let rest_b = ((1 << self.b.order) - 1) & !used_b;
                add_scaled(
                    h,
                    p,
                    &self.a.subset_moments[rest_a],
                    &self.b.subset_moments[rest_b],
                );
            }
            return;
        }
        self.visit(leg + 1, matched_a, used_b, product, h);
        for j in (0..self.b.order).filter(|j| used_b & (1 << j) == 0) {
            let block = self.x.view((leg * ra, j * rb), (ra, rb));
            let next = match product {
                Some(p) => p.component_mul(&block),
                None => block.into_owned(),
            };
            self.visit(
                leg + 1,
                matched_a | (1 << leg),
                used_b | (1 << j),
                Some(&next),
                h,
            );
        }
    }
}

/// `h += p ∘ (α ⊗ β)`.
fn add_scaled<T: Real>(h: &mut DMatrix<T>, p: &DMatrix<T>, alpha: &DVector<T>, beta: &DVector<T>) {
    let rows = h.nrows();
    for (c, (hc, pc)) in h
        .as_mut_slice()
        .chunks_exact_mut(rows)
        .zip(p.as_slice().chunks_exact(rows))
        .enumerate()
    {
        let b = beta[c];
        for ((hv, &pv), &a) in hc.iter_mut().zip(pc).zip(alpha.iter()) {
            *hv += pv * a * b;
        }
    }
}

/// SPEC §3's second-moment form for two order-2 blocks:
/// `E[z_A z_Bᵀ] = X̂_11∘X̂_22 + X̂_12∘X̂_21 + E[z_A]E[z_B]ᵀ − 2 π_A π_Bᵀ`,
/// `X̂ = U^A (C_AB + m_A m_Bᵀ) U^Bᵀ`, `π = μ_1 ∘ μ_2`; returned less
/// `E[z_A]E[z_B]ᵀ`.
fn covariance_order2<T: Real>(
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    legs_a: &Legs<T>,
    legs_b: &Legs<T>,
    m_a: &DVector<T>,
    m_b: &DVector<T>,
    c_ab: &DMatrix<T>,
) -> DMatrix<T> {
    let (ra, rb) = (legs_a.rank, legs_b.rank);
    let second = c_ab + m_a * m_b.transpose();
    let x = fa.stacked_inputs() * second * fb.stacked_inputs().transpose();
    let mut h = x
        .view((0, 0), (ra, rb))
        .component_mul(&x.view((ra, rb), (ra, rb)));
    h += x
        .view((0, rb), (ra, rb))
        .component_mul(&x.view((ra, 0), (ra, rb)));
    let two: T = from_f64(2.0);
    h.ger(-two, &legs_a.at_mean(), &legs_b.at_mean(), T::one());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn random(rows: usize, cols: usize, seed: &mut u64) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |_, _| lcg(seed))
    }

    fn random_side(width: usize, seed: &mut u64) -> Activation<f64> {
        let f = random(width, width, seed);
        let mut cov = &f * f.transpose();
        cov.row_mut(0).fill(0.0);
        cov.column_mut(0).fill(0.0);
        let mut mean = DVector::from_fn(width, |_, _| lcg(seed));
        mean[0] = 1.0;
        Activation {
            mean,
            cov,
            ln_scale: 0.0,
        }
    }

    /// The second-moment form for k = 2 equals the general Wick sum on
    /// random order-2 factors, random means and a valid joint covariance.
    #[test]
    fn order2_form_matches_general_wick_sum() {
        let mut seed = 7;
        for (ra, rb, w) in [(3, 4, 3), (5, 2, 4), (1, 1, 2)] {
            let fa = CpFactors::new(&[random(ra, w, &mut seed), random(ra, w, &mut seed)], None)
                .unwrap();
            let fb = CpFactors::new(&[random(rb, w, &mut seed), random(rb, w, &mut seed)], None)
                .unwrap();
            // Joint covariance of (ã, b̃) as F Fᵀ, split into blocks.
            let f = random(2 * w, 2 * w, &mut seed);
            let joint = &f * f.transpose();
            let mut side = |i: usize| Activation {
                mean: DVector::from_fn(w, |_, _| lcg(&mut seed)),
                cov: joint.view((i * w, i * w), (w, w)).into_owned(),
                ln_scale: 0.0,
            };
            let (sa, sb) = (side(0), side(1));
            let cross = joint.view((0, w), (w, w)).into_owned();
            let (la, lb) = (Legs::new(&fa, &sa), Legs::new(&fb, &sb));
            let fast = covariance_order2(&fa, &fb, &la, &lb, &sa.mean, &sb.mean, &cross);
            let general = covariance_wick(&fa, &fb, &la, &lb, &cross);
            let scale = general.amax().max(1.0);
            assert!(
                (&fast - &general).amax() < 1e-12 * scale,
                "{fast} vs {general}"
            );
        }
    }

    /// `α(S)` by the subset recursion against E[u_1 u_2 u_3] written out
    /// (Isserlis for three non-centred legs: μμμ + μ c + μ c + μ c).
    #[test]
    fn subset_moments_match_three_leg_isserlis() {
        let mut seed = 11;
        let (r, w) = (3usize, 4);
        let us: Vec<_> = (0..3).map(|_| random(r, w, &mut seed)).collect();
        let f = CpFactors::new(&us, None).unwrap();
        let side = random_side(w, &mut seed);
        let legs = Legs::new(&f, &side);
        let mu: Vec<_> = us.iter().map(|u| u * &side.mean).collect();
        let c = |i: usize, j: usize| &us[i] * &side.cov * us[j].transpose();
        let (c01, c02, c12) = (c(0, 1), c(0, 2), c(1, 2));
        for (rho, &got) in legs.mean().iter().enumerate() {
            let expected = mu[0][rho] * mu[1][rho] * mu[2][rho]
                + mu[0][rho] * c12[(rho, rho)]
                + mu[1][rho] * c02[(rho, rho)]
                + mu[2][rho] * c01[(rho, rho)];
            assert!((got - expected).abs() < 1e-12 * expected.abs().max(1.0));
        }
    }

    #[test]
    fn covariance_factor_accepts_singular_and_rejects_indefinite() {
        let singular = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0]);
        let f = covariance_factor(&singular).unwrap();
        assert!((&f * f.transpose() - &singular).amax() < 1e-12);
        let indefinite = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(matches!(
            covariance_factor(&indefinite),
            Err(Error::InvalidOption { .. })
        ));
        let asymmetric = DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.0, 1.0]);
        assert!(covariance_factor(&asymmetric).is_err());
    }
}
