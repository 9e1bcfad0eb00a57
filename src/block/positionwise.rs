//! Position-wise blocks on the flattened stream of a sequence ([SPEC §7](crate::spec#7-sequences-and-bilinear-attention)).
//!
//! A CP block applied at every position with shared weights is, on
//! `x̃ = (1, X[0], …, X[n−1])`, block-diagonal with the constant shared: the
//! outputs at position `p` read only the constant and position `p`. Its
//! Gram step therefore acts on each pair of positions `(p, q)` separately,
//! on the padded block `Ĝ[p,q]` (rows `{0} ∪ p`, columns `{0} ∪ q` of `G`):
//! `G'[p,q] = step(Ĝ[p,q])`. The constant row and column of `G'` do not
//! depend on the other position, so they are read off the diagonal pairs.

use nalgebra::DMatrix;

use super::GramWorkspace;
use super::factors::CpFactors;
use crate::error::{Error, Result};
use crate::padded::padded_block;
use crate::resources::{flat_width, zeros};
use crate::scalar::Real;
use crate::symmetry::SymmetryGroup;

/// A block's factors and symmetry group.
pub(crate) type CpLeg<'a, T> = (&'a CpFactors<T>, &'a dyn SymmetryGroup);

/// The Gram step of position-wise CP blocks `a` and `b` (`None`: the self
/// product of `a`, with `g` symmetric) on `context` positions.
pub(crate) fn step<T: Real>(
    a: CpLeg<'_, T>,
    b: Option<CpLeg<'_, T>>,
    g: &DMatrix<T>,
    context: usize,
) -> Result<DMatrix<T>> {
    let n = context;
    if n == 0 {
        return Err(Error::ZeroContext);
    }
    let (ma, na) = (a.0.input_width(), a.0.output_width());
    let (mb, nb) = match b {
        Some(b) => (b.0.input_width(), b.0.output_width()),
        None => (ma, na),
    };
    crate::validate::check_shape(
        "cross Gram matrix",
        g,
        (flat_width(n, ma)?, flat_width(n, mb)?),
    )?;
    let mut ws = GramWorkspace::new();
    let mut s = DMatrix::zeros(0, 0);
    if n == 1 {
        match b {
            Some(b) => ws.cp_step(a, b, g, &mut s)?,
            None => ws.cp_self_step(a, g, &mut s)?,
        }
        return Ok(s);
    }
    let mut out = zeros(flat_width(n, na)?, flat_width(n, nb)?)?;
    let mut block = DMatrix::zeros(ma + 1, mb + 1);
    for p in 0..n {
        let first_q = if b.is_some() { 0 } else { p };
        for q in first_q..n {
            padded_block(g, p, q, ma, mb, &mut block);
            match b {
                Some(b) => ws.cp_step(a, b, &block, &mut s)?,
                None if p == q => ws.cp_self_step(a, &block, &mut s)?,
                None => ws.cp_step(a, a, &block, &mut s)?,
            }
            let inner = s.view((1, 1), (na, nb));
            out.view_mut((1 + p * na, 1 + q * nb), (na, nb))
                .copy_from(&inner);
            if b.is_none() && p != q {
                out.view_mut((1 + q * na, 1 + p * nb), (na, nb))
                    .tr_copy_from(&inner);
            }
            if p == q {
                out[(0, 0)] = s[(0, 0)];
                out.view_mut((0, 1 + q * nb), (1, nb))
                    .copy_from(&s.view((0, 1), (1, nb)));
                out.view_mut((1 + p * na, 0), (na, 1))
                    .copy_from(&s.view((1, 0), (na, 1)));
            }
        }
    }
    Ok(out)
}
