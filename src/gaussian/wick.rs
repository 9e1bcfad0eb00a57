//! The moment step: one pair of blocks maps the joint means and covariances
//! of the two models' padded activations to those of their outputs, by
//! Isserlis/Wick (see the [parent module](super) for the math).

use nalgebra::{DMatrix, DVector};

use super::moments::Moments;
use crate::block::factors::CpFactors;
use crate::linalg::{mul, mul_nt};
use crate::scalar::{Real, from_f64};

/// What one block's legs need from its input: the leg means `μ_j = U_j m`
/// and the moments `α(S)[ρ] = E[Π_{j∈S} u_j[ρ]]` of every subset `S` of legs
/// (a bit mask), under the Gaussian with the side's mean and covariance.
pub(crate) struct Legs<T: Real> {
    order: usize,
    rank: usize,
    means: DVector<T>,
    subset_moments: Vec<DVector<T>>,
}

impl<T: Real> Legs<T> {
    pub(crate) fn new(f: &CpFactors<T>, side: &Moments<T>) -> Self {
        let (k, r) = (f.order(), f.rank());
        let u = f.stacked_inputs();
        let means = u * &side.mean;
        // diag(U_i C U_jᵀ) for i < j, the within-side pair covariances
        // (none for a linear block, whose input may be wide: an embedding).
        let mut pair = vec![DVector::zeros(0); k * k];
        let uc = if k > 1 {
            mul(u, &side.cov)
        } else {
            DMatrix::zeros(0, 0)
        };
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
    pub(crate) fn mean(&self) -> &DVector<T> {
        &self.subset_moments[(1 << self.order) - 1]
    }

    /// `μ_1 ∘ … ∘ μ_k`: `z` at the mean input.
    fn at_mean(&self) -> DVector<T> {
        let r = self.rank;
        (1..self.order).fold(self.means.rows(0, r).into_owned(), |acc, j| {
            acc.component_mul(&self.means.rows(j * r, r))
        })
    }

    /// The block's output moments for one position of one side, in the
    /// input's scale (the metric multiplies the log scale by the order).
    pub(crate) fn output_side(&self, f: &CpFactors<T>, side: &Moments<T>) -> Moments<T> {
        let mean = match f.output() {
            Some(d) => d * self.mean(),
            None => self.mean().clone(),
        };
        let cov = through_outputs(
            f,
            f,
            covariance(f, f, self, self, &side.mean, &side.mean, &side.cov),
        );
        Moments::independent(mean, cov, side.context)
    }
}

/// `D̃_A H D̃_Bᵀ`.
pub(crate) fn through_outputs<T: Real>(
    fa: &CpFactors<T>,
    fb: &CpFactors<T>,
    h: DMatrix<T>,
) -> DMatrix<T> {
    let left = match fa.output() {
        Some(d) => mul(d, &h),
        None => h,
    };
    match fb.output() {
        Some(d) => mul_nt(&left, d),
        None => left,
    }
}

/// `Cov(z_A, z_B)` (`r_A × r_B`) for legs reading a jointly Gaussian
/// `(ã, b̃)` with means `m_a`, `m_b` and cross covariance `c_ab`: the
/// second-moment form when both orders are 2, the general Wick sum otherwise.
pub(crate) fn covariance<T: Real>(
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
    let x = mul_nt(&mul(fa.stacked_inputs(), c_ab), fb.stacked_inputs());
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

/// [SPEC §3](crate::spec#3-gaussian-functional-similarity)'s second-moment form for two order-2 blocks:
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
    let x = mul_nt(&mul(fa.stacked_inputs(), &second), fb.stacked_inputs());
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

    fn random_side(width: usize, seed: &mut u64) -> Moments<f64> {
        let f = random(width, width, seed);
        let mut cov = &f * f.transpose();
        cov.row_mut(0).fill(0.0);
        cov.column_mut(0).fill(0.0);
        let mut mean = DVector::from_fn(width, |_, _| lcg(seed));
        mean[0] = 1.0;
        Moments::independent(mean, cov, 1)
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
            let mut side = |i: usize| {
                Moments::independent(
                    DVector::from_fn(w, |_, _| lcg(&mut seed)),
                    joint.view((i * w, i * w), (w, w)).into_owned(),
                    1,
                )
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
}
