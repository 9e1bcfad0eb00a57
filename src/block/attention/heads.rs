//! The head paths of one attention Gram step ([SPEC §9](crate::spec#9-where-two-models-differ-heads-and-paths)).
//!
//! Head `h`'s path keeps, at this block, only the attention term of head
//! `h`: no skip (`r = 0`), no `o` bias (it belongs to no head), `O`'s other
//! heads' columns zero. Its order-5 tensor is then `T1_h + T3` with
//! `β = (1, 0)`, and the step's output for heads `h` of `A` and `h'` of `B`
//! is, from what the full step computes anyway,
//!
//! ```text
//! G'_{hh'}[0, 0]                = Ĝ_00⁵
//! G'_{hh'}[(p, o), 0]           = (α_A/c_A) (O_A,h z_A,h[p])_o
//! G'_{hh'}[0, (q, o')]          = (α_B/c_B) (O_B,h' z_B,h'[q])_o'
//! G'_{hh'}[(p, o), (q, o')]     = α_A α_B / (120 c_A c_B) · (O_A,h Z_{hh'}(p, q) O_B,h'ᵀ)_{o o'}
//! ```
//!
//! with `z_h[s] = Σ_t W[s,t] (q1·k1)(q2·k2) v` on the mean legs (head `h`'s
//! rows of the step's `φ` before `O`) and `Z_{hh'}(p, q)` the head pair's
//! block of the pair sums. The terms `T1 × T2`, `T2 × T1`, `T2 × T2`, and
//! those with `b_o`, are absent from a head path. Summed over `h, h'`, the
//! attention terms are the step's own.

use nalgebra::DMatrix;
use rayon::prelude::*;

use crate::error::Result;
use crate::linalg::{gemm_nt, mul};
use crate::resources::{flat_width, zeros};
use crate::scalar::Real;

/// What the head paths of one step read, kept by the step.
pub(crate) struct HeadTerms<T: Real> {
    /// The context.
    pub(super) n: usize,
    /// `Z(p, q)` at `p·n + q`, `(H_A e_v^A) × (H_B e_v^B)`, both orders in a
    /// self product.
    pub(super) z: Vec<DMatrix<T>>,
    /// Each side's `z[s]` as columns, `H e_v × n`.
    pub(super) values: [DMatrix<T>; 2],
    /// Each side's `O`.
    pub(super) o: [DMatrix<T>; 2],
    /// Each side's `α/c`.
    pub(super) scales: [T; 2],
    /// `α_A α_B / (120 c_A c_B)`.
    pub(super) pair_scale: T,
    /// Each side's `e_v`.
    pub(super) widths: [usize; 2],
    /// `Ĝ_00⁵`.
    pub(super) constant: T,
    /// A self product: its head pair `(h, h)` is symmetrised as the step's
    /// output is.
    pub(super) same: bool,
}

impl<T: Real> HeadTerms<T> {
    /// The head counts `(H_A, H_B)`.
    pub(crate) fn heads(&self) -> (usize, usize) {
        (
            self.o[0].ncols() / self.widths[0],
            self.o[1].ncols() / self.widths[1],
        )
    }

    /// `G'` of the path of head `h` of `A` with that of head `h2` of `B`,
    /// in the scale of the step's own output.
    pub(crate) fn gram(&self, h: usize, h2: usize) -> Result<DMatrix<T>> {
        let n = self.n;
        let [eva, evb] = self.widths;
        let o_a = self.o[0].columns(h * eva, eva);
        let o_b = self.o[1].columns(h2 * evb, evb);
        let (oa, ob) = (o_a.nrows(), o_b.nrows());
        let mut out = zeros::<T>(flat_width(n, oa)?, flat_width(n, ob)?)?;
        out[(0, 0)] = self.constant;
        let phi_a = mul(&o_a, &self.values[0].rows(h * eva, eva)) * self.scales[0];
        let phi_b = mul(&o_b, &self.values[1].rows(h2 * evb, evb)) * self.scales[1];
        for p in 0..n {
            for o in 0..oa {
                out[(1 + p * oa + o, 0)] = phi_a[(o, p)];
            }
            for o in 0..ob {
                out[(0, 1 + p * ob + o)] = phi_b[(o, p)];
            }
        }
        let blocks: Vec<DMatrix<T>> = (0..n * n)
            .into_par_iter()
            .map(|pq| {
                let z = self.z[pq].view((h * eva, h2 * evb), (eva, evb));
                let mut ozo = DMatrix::zeros(oa, ob);
                gemm_nt(self.pair_scale, &mul(&o_a, &z), &o_b, T::zero(), &mut ozo);
                ozo
            })
            .collect();
        for (pq, ozo) in blocks.iter().enumerate() {
            let (p, q) = (pq / n, pq % n);
            out.view_mut((1 + p * oa, 1 + q * ob), (oa, ob))
                .copy_from(ozo);
        }
        if self.same && h == h2 {
            let half: T = crate::scalar::from_f64(0.5);
            for j in 0..out.ncols() {
                for i in 0..j {
                    let v = (out[(i, j)] + out[(j, i)]) * half;
                    out[(i, j)] = v;
                    out[(j, i)] = v;
                }
            }
        }
        Ok(out)
    }
}
