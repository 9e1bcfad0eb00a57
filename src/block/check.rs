//! What a block kind must guarantee, checked: the constant rule, and a
//! forward pass that agrees with what the metrics compute.
//!
//! The metrics use only a block's CP factors (or its own steps), never
//! its `forward`; a kind whose factors drop the constant, or whose factors
//! and `forward` disagree, gives similarities of another function without
//! any error. Two facts make both checkable without forming a tensor:
//!
//! * a symmetric tensor is determined by its polynomial, so output 0 of the
//!   symmetrised tensor is `e_0^{⊗k}` exactly when
//!   `p_0(x̃) = D̃[0,:] · Π_j (U_j x̃)` equals `x̃_0^k` for every `x̃`;
//! * the Gram step at the rank-one metric `G = x̃ x̃ᵀ` is `ỹ ỹᵀ` with
//!   `ỹ = (1, f(x))`, for any block kind, because every leg then reads `x̃`:
//!   `⟨P T[o], P T[o']⟩_{x̃x̃ᵀ} = T[o](x̃,…,x̃) T[o'](x̃,…,x̃)`.

use nalgebra::{DMatrix, DVector};

use super::TensorBlock;
use super::factors::CpFactors;
use crate::error::{Error, Result};
use crate::scalar::{Real, from_f64, to_f64};
use crate::symmetry::{SymmetryGroup, leg_pairings};

/// Checks what every block kind must guarantee, on seeded random inputs:
///
/// * its order and widths are positive;
/// * it **keeps the constant**: output 0 of its symmetrised padded tensor is
///   `e_0 ⊗ … ⊗ e_0`, so `ỹ_0 = 1` (for CP factors, exactly, under the
///   block's own symmetry group, in `O(k r² m)`);
/// * its [`forward`](TensorBlock::forward) agrees with its CP factors;
/// * its Gram step agrees with its forward pass: at the rank-one metric
///   `G = x̃ x̃ᵀ` the step must give `ỹ ỹᵀ`, `ỹ = (1, f(x))` (on sequences of
///   one and, for kinds that mix positions, two positions).
///
/// Block authors should run it in their tests; [`Model::new`](crate::Model::new)
/// runs the constant check on every block of a kind outside this crate.
/// An error names the kind and what disagreed, with the numbers.
///
/// # Example
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{CpFactors, CpKind, Error, check_block};
///
/// #[derive(Debug)]
/// struct Square(CpFactors<f64>);
/// impl CpKind<f64> for Square {
///     fn cp_factors(&self) -> &CpFactors<f64> { &self.0 }
/// }
///
/// let u = DMatrix::<f64>::identity(3, 3);
/// let good = Square(CpFactors::new(&[u.clone(), u.clone()], None)?);
/// check_block(&good)?;
/// // D̃[0,0] = 2: the same forward pass on the non-constant outputs, but
/// // ỹ_0 = 2. The metrics would compare another function.
/// let mut d = DMatrix::<f64>::identity(3, 3);
/// d[(0, 0)] = 2.0;
/// let bad = Square(CpFactors::new(&[u.clone(), u], Some(d))?);
/// assert!(matches!(check_block(&bad), Err(Error::BlockCheck { .. })));
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub fn check_block<T: Real>(block: &dyn TensorBlock<T>) -> Result<()> {
    let fail = |reason: String| Error::BlockCheck {
        kind: block.kind(),
        reason,
    };
    let (k, m, n) = (block.order(), block.input_width(), block.output_width());
    if k == 0 || m == 0 || n == 0 {
        return Err(fail(format!(
            "order {k} and widths {m} → {n}: a block reads at least one copy of a non-empty input and writes a non-empty output"
        )));
    }
    if let Some(cp) = block.as_cp() {
        exact_constant(cp, block.symmetry()).map_err(fail)?;
        for point in 0..3 {
            let x = random_vector::<T>(m, 17 + point);
            let y = block.forward(&x)?;
            let padded = cp.apply_padded(&crate::padded::pad(&x))?;
            let from_factors = padded.rows(1, n).into_owned();
            let err = relative_gap(&y, &from_factors);
            if err > tolerance::<T>() {
                return Err(fail(format!(
                    "forward disagrees with the CP factors at a random input (relative gap {err:.3e})"
                )));
            }
        }
    }
    let contexts: &[usize] = if block.mixes_positions() {
        &[1, 2]
    } else {
        &[1]
    };
    for &context in contexts {
        for point in 0..2 {
            step_agrees_with_forward(block, context, 31 + point).map_err(fail)?;
        }
    }
    Ok(())
}

/// The constant rule for a block of model position `position`, as
/// [`Model::new`](crate::Model::new) runs it: nothing for the crate's own
/// kinds (they keep the constant by construction), the polynomial test
/// `p_0(x̃) = x̃_0^k` at random points for CP factors, and the rank-one step
/// test for kinds with their own Gram step.
pub(crate) fn check_constant_at<T: Real>(
    position: usize,
    block: &dyn TensorBlock<T>,
) -> Result<()> {
    if block.keeps_constant_by_construction() {
        return Ok(());
    }
    let fail = |reason: String| Error::ConstantNotKept {
        block: position,
        kind: block.kind(),
        reason,
    };
    match block.as_cp() {
        Some(cp) => polynomial_constant(cp).map_err(fail),
        None => step_agrees_with_forward(block, 1, 7).map_err(fail),
    }
}

/// Relative tolerance of the checks: loose enough for rounding in long
/// sums, far below any real violation.
fn tolerance<T: Real>() -> f64 {
    to_f64(T::default_epsilon()).sqrt()
}

/// Seeded values in `[-1, 1)`: the checks need no random-number generator.
fn random_vector<T: Real>(len: usize, seed: u64) -> DVector<T> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    DVector::from_fn(len, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        from_f64((state >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
    })
}

fn relative_gap<T: Real>(a: &DVector<T>, b: &DVector<T>) -> f64 {
    let scale = to_f64(a.amax()).max(to_f64(b.amax())).max(1.0);
    to_f64((a - b).amax()) / scale
}

/// `p_0(x̃) = x̃_0^k` at random homogeneous points (`x̃_0` in `[0.5, 1.5)`).
fn polynomial_constant<T: Real>(cp: &CpFactors<T>) -> core::result::Result<(), String> {
    let k = cp.order();
    let width = cp.input_width() + 1;
    for point in 0..3 {
        let mut x = random_vector::<T>(width, 101 + point);
        x[0] = from_f64(1.0 + 0.5 * to_f64(x[0]));
        let all = cp.stacked_inputs() * &x;
        let r = cp.rank();
        let (mut value, mut scale) = (0.0, 0.0);
        for rho in 0..r {
            let d = match cp.output() {
                Some(out) => to_f64(out[(0, rho)]),
                None => f64::from(u8::from(rho == 0)),
            };
            let term: f64 = (0..k).map(|j| to_f64(all[j * r + rho])).product();
            value += d * term;
            scale += (d * term).abs();
        }
        let expected = to_f64(x[0]).powi(k as i32);
        let gap = (value - expected).abs();
        if gap.is_nan() || gap > tolerance::<T>() * (scale + expected) {
            return Err(format!(
                "the constant output is {value:.6} at a random input where it must be x̃_0^{k} = {expected:.6} \
                 (row 0 of the padded output factor must read only the constant unit)"
            ));
        }
    }
    Ok(())
}

/// `‖P p_0 − e_0^{⊗k}‖² ≈ 0` for the output row `p_0` symmetrised by the
/// block's group, in `O(k r² m)` without forming the tensor:
/// `‖P p_0‖² = Σ_π w_π Σ_{ρρ'} d_ρ d_ρ' Π_j (U_j U_{π(j)}ᵀ)[ρ,ρ']` and
/// `⟨p_0, e_0^{⊗k}⟩ = Σ_ρ d_ρ Π_j U_j[ρ,0]`.
pub(crate) fn exact_constant<T: Real>(
    cp: &CpFactors<T>,
    symmetry: &dyn SymmetryGroup,
) -> core::result::Result<(), String> {
    let k = cp.order();
    let r = cp.rank();
    let d: Vec<f64> = match cp.output() {
        Some(out) => out.row(0).iter().map(|&x| to_f64(x)).collect(),
        None => (0..r).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect(),
    };
    let gram = cp.stacked_inputs() * cp.stacked_inputs().transpose();
    let mut norm2 = 0.0;
    for (pi, w) in leg_pairings(symmetry, symmetry, k).map_err(|e| e.to_string())? {
        for a in 0..r {
            for b in 0..r {
                let prod: f64 = (0..k)
                    .map(|j| to_f64(gram[(j * r + a, pi.apply(j) * r + b)]))
                    .product();
                norm2 += w * d[a] * d[b] * prod;
            }
        }
    }
    let at_origin: f64 = (0..r)
        .map(|a| d[a] * (0..k).map(|j| to_f64(cp.input(j)[(a, 0)])).product::<f64>())
        .sum();
    let residual = norm2 - 2.0 * at_origin + 1.0;
    let tolerance = tolerance::<T>() * (norm2.abs() + 1.0);
    if residual.abs() > tolerance || !residual.is_finite() {
        return Err(format!(
            "the factors do not keep the constant: output 0 of the symmetrised tensor differs from e_0⊗…⊗e_0 \
             (squared distance {residual:.3e}, ⟨p_0, e_0⊗…⊗e_0⟩ = {at_origin:.6})"
        ));
    }
    Ok(())
}

/// The self step at `G = x̃ x̃ᵀ` (a random sequence of `context` positions)
/// against `ỹ ỹᵀ` from the forward pass.
fn step_agrees_with_forward<T: Real>(
    block: &dyn TensorBlock<T>,
    context: usize,
    seed: u64,
) -> core::result::Result<(), String> {
    let m = block.input_width();
    let x = random_vector::<T>(context * m, seed);
    let sequence = DMatrix::from_row_slice(context, m, x.as_slice());
    let y = block
        .forward_sequence(&sequence)
        .map_err(|e| format!("forward_sequence failed: {e}"))?;
    let padded = |v: &[T]| {
        DVector::from_iterator(
            v.len() + 1,
            core::iter::once(T::one()).chain(v.iter().copied()),
        )
    };
    let x_tilde = padded(x.as_slice());
    let y_rows: Vec<T> = y.transpose().as_slice().to_vec();
    let y_tilde = padded(&y_rows);
    let g = &x_tilde * x_tilde.transpose();
    let step = block
        .self_gram_step(&g, context)
        .map_err(|e| format!("the Gram step failed: {e}"))?;
    let expected = &y_tilde * y_tilde.transpose();
    if step.shape() != expected.shape() {
        return Err(format!(
            "the Gram step gives a {:?} matrix where the forward pass gives {} outputs",
            step.shape(),
            y_tilde.len()
        ));
    }
    let scale = to_f64(expected.amax()).max(1.0);
    let gap = to_f64((&step - &expected).amax()) / scale;
    if gap.is_nan() || gap > tolerance::<T>() {
        let constant = to_f64(step[(0, 0)]);
        return Err(format!(
            "at a random input on {context} position(s), the Gram step disagrees with ỹỹᵀ from the forward pass \
             (relative gap {gap:.3e}; its constant entry is {constant:.6}, where ỹ_0² = 1)"
        ));
    }
    Ok(())
}
