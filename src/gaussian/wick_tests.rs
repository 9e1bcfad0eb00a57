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
        let fa =
            CpFactors::new(&[random(ra, w, &mut seed), random(ra, w, &mut seed)], None).unwrap();
        let fb =
            CpFactors::new(&[random(rb, w, &mut seed), random(rb, w, &mut seed)], None).unwrap();
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
