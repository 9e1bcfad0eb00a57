//! The padded, flattened stream ([SPEC §1](crate::spec#1-blocks-and-models), [§7](crate::spec#7-sequences-and-bilinear-attention)):
//! `x̃ = (1, X[0], …, X[n−1])`, one shared constant ahead of the positions.
//! Helpers to pad a vector and to cut the padded block of one pair of
//! positions out of a flattened matrix, for the recursion, the Gaussian
//! metric and the blocks.

use nalgebra::{DMatrix, DVector};

use crate::scalar::Real;

/// `x̃ = (1, x)`.
pub fn pad<T: Real>(x: &DVector<T>) -> DVector<T> {
    DVector::from_iterator(
        x.len() + 1,
        core::iter::once(T::one()).chain(x.iter().copied()),
    )
}

/// `Ĝ[p,q]`: rows `{0} ∪ (1 + p·m_A …)`, columns `{0} ∪ (1 + q·m_B …)` of
/// the flattened `g`, into `out` (`(m_A+1) × (m_B+1)`).
pub fn padded_block<T: Real>(
    g: &DMatrix<T>,
    p: usize,
    q: usize,
    ma: usize,
    mb: usize,
    out: &mut DMatrix<T>,
) {
    let (r0, c0) = (1 + p * ma, 1 + q * mb);
    out[(0, 0)] = g[(0, 0)];
    out.view_mut((0, 1), (1, mb))
        .copy_from(&g.view((0, c0), (1, mb)));
    out.view_mut((1, 0), (ma, 1))
        .copy_from(&g.view((r0, 0), (ma, 1)));
    out.view_mut((1, 1), (ma, mb))
        .copy_from(&g.view((r0, c0), (ma, mb)));
}
