//! Block kinds given by padded CP factors: one trait, [`CpKind`], and
//! everything else of [`TensorBlock`] from the factors.

use nalgebra::{DMatrix, DVector};

use super::factors::CpFactors;
use super::kernel::cp_of;
use super::{Description, Parameter, TensorBlock, positionwise};
use crate::error::{Error, Result};
use crate::gaussian::cp as gaussian_cp;
use crate::gaussian::moments::{JointMoments, Moments};
use crate::padded::pad;
use crate::scalar::Real;
use crate::symmetry::{Full, SymmetryGroup};
use crate::validate::check_len;

/// A block kind given by its padded CP factors ([SPEC §1](crate::spec#1-blocks-and-models)),
/// applied at every position of a sequence with shared weights: implement
/// [`cp_factors`](Self::cp_factors), and the kind is a [`TensorBlock`] for
/// both metrics (the CP Gram kernel, the Wick moment step, its shape and its
/// description all come from the factors). Override the other methods to
/// name the kind ([`name`](Self::name), its [`TensorBlock::kind`]), narrow
/// its symmetry, give a faster or independent forward pass
/// ([`apply`](Self::apply), which [`check_block`](crate::check_block)
/// compares with the factors), or describe its parameters by role. (Their
/// names differ from [`TensorBlock`]'s, so that a call on a block with both
/// traits in scope is never ambiguous.)
///
/// # Example: a new block kind
///
/// ```
/// use nalgebra::DMatrix;
/// use tensor_similarity::{CpFactors, CpKind, TensorBlock};
///
/// /// Elementwise square `y_i = x_i²` on 2 inputs.
/// #[derive(Debug)]
/// struct Square(CpFactors<f64>);
///
/// impl CpKind<f64> for Square {
///     fn cp_factors(&self) -> &CpFactors<f64> { &self.0 }
/// }
///
/// // U_1 = U_2 = I_3 (the padded identity): (x̃ ∘ x̃) = (1, x_1², x_2²).
/// let u: DMatrix<f64> = DMatrix::identity(3, 3);
/// let square = Square(CpFactors::new(&[u.clone(), u], None)?);
/// assert_eq!(square.order(), 2);
/// let y = square.forward(&nalgebra::dvector![3.0, -2.0])?;
/// assert_eq!(y, nalgebra::dvector![9.0, 4.0]);
/// # Ok::<(), tensor_similarity::Error>(())
/// ```
pub trait CpKind<T: Real>: core::fmt::Debug + Send + Sync {
    /// The padded CP factors `U_1 … U_k`, `D̃` of the block at one position.
    fn cp_factors(&self) -> &CpFactors<T>;

    /// The block reduced to its skip term, as [`TensorBlock::skip_part`]
    /// says; the default is an error naming the kind (a kind has to say).
    fn skip_block(&self) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>> {
        Err(super::no_skip_part(CpKind::name(self)))
    }

    /// A short name of the kind; the default is `"cp"`.
    fn name(&self) -> &'static str {
        "cp"
    }

    /// The permutations of the input legs under which the block's function
    /// is invariant; the default, `S_k`, is right when every leg reads the
    /// same `x̃`.
    fn leg_symmetry(&self) -> &dyn SymmetryGroup {
        &Full
    }

    /// The block's function on an unpadded input; the default applies the
    /// factors.
    fn apply(&self, x: &DVector<T>) -> Result<DVector<T>> {
        let cp = self.cp_factors();
        check_len("block input", x, cp.input_width())?;
        let y = cp.apply_padded(&pad(x))?;
        Ok(y.rows(1, y.len() - 1).into_owned())
    }

    /// The block's function on each row of `x` (`rows × m` to `rows × n`):
    /// one position (or one sample) per row, as
    /// [`TensorBlock::forward_sequence`] calls it. The default applies
    /// [`apply`](Self::apply) row by row; the crate's kinds override it with
    /// a few GEMMs over all rows at once ([`Linear`](crate::Linear):
    /// `X Wᵀ + b`; [`Bilinear`](crate::Bilinear): its two projections, their
    /// product and the down projection; [`CpBlock`](crate::CpBlock): its
    /// factors), which is what batched forward passes (Monte Carlo, the
    /// empirical baselines) spend their time in. An override must compute
    /// what `apply` computes, up to rounding.
    ///
    /// ```
    /// use nalgebra::{dmatrix, DMatrix};
    /// use tensor_similarity::{CpKind, Linear};
    ///
    /// let layer = Linear::new(dmatrix![1.0, 2.0; 0.0, 1.0], None)?;
    /// let x = dmatrix![1.0, 1.0; 2.0, 0.0];
    /// assert_eq!(layer.apply_rows(&x)?, dmatrix![3.0, 1.0; 2.0, 0.0]);
    /// # Ok::<(), tensor_similarity::Error>(())
    /// ```
    fn apply_rows(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        let cp = self.cp_factors();
        if x.ncols() != cp.input_width() {
            return Err(Error::Shape {
                what: format!("{} block input (one position per row)", self.name()),
                expected: (x.nrows(), cp.input_width()),
                found: x.shape(),
            });
        }
        let mut y = DMatrix::zeros(x.nrows(), cp.output_width());
        for (p, row) in x.row_iter().enumerate() {
            y.row_mut(p)
                .copy_from(&self.apply(&row.transpose())?.transpose());
        }
        Ok(y)
    }

    /// The block's parameters by role and settings; the default lists the
    /// factors (`inputs`, the stacked `[U_1; …; U_k]`, and `output`, `D̃`).
    fn description(&self) -> Description<'_, T> {
        let cp = self.cp_factors();
        let mut parameters = vec![Parameter::matrix("inputs", cp.stacked_inputs())];
        if let Some(d) = cp.output() {
            parameters.push(Parameter::matrix("output", d));
        }
        Description {
            kind: self.name(),
            settings: Vec::new(),
            parameters,
        }
    }

    /// The parameters for weight-space baselines, absent ones as zeros;
    /// the default is [`description`](Self::description)'s.
    fn baseline_parameters(&self) -> Vec<Parameter<'_, T>> {
        self.description().parameters
    }

    /// Whether the kind checks the constant rule when it is built (see
    /// [`TensorBlock::keeps_constant_by_construction`]); default `false`.
    fn checks_constant_when_built(&self) -> bool {
        false
    }
}

impl<T: Real, B: CpKind<T> + 'static> TensorBlock<T> for B {
    fn kind(&self) -> &'static str {
        CpKind::name(self)
    }

    fn order(&self) -> usize {
        self.cp_factors().order()
    }

    fn input_width(&self) -> usize {
        self.cp_factors().input_width()
    }

    fn output_width(&self) -> usize {
        self.cp_factors().output_width()
    }

    fn mixes_positions(&self) -> bool {
        false
    }

    fn symmetry(&self) -> &dyn SymmetryGroup {
        CpKind::leg_symmetry(self)
    }

    fn describe(&self) -> Description<'_, T> {
        CpKind::description(self)
    }

    fn parameters(&self) -> Vec<Parameter<'_, T>> {
        CpKind::baseline_parameters(self)
    }

    fn forward(&self, x: &DVector<T>) -> Result<DVector<T>> {
        CpKind::apply(self, x)
    }

    fn skip_part(&self) -> Result<Option<std::sync::Arc<dyn TensorBlock<T>>>> {
        CpKind::skip_block(self)
    }

    /// [`forward`](TensorBlock::forward) at every position: the kind's
    /// [`apply_rows`](CpKind::apply_rows).
    fn forward_sequence(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        if x.ncols() != self.input_width() {
            return Err(Error::Shape {
                what: format!("{} block input (one position per row)", CpKind::name(self)),
                expected: (x.nrows(), self.input_width()),
                found: x.shape(),
            });
        }
        CpKind::apply_rows(self, x)
    }

    /// The CP step lifted to every pair of positions; `other` must have CP
    /// factors too.
    fn gram_step(
        &self,
        other: &dyn TensorBlock<T>,
        g: &DMatrix<T>,
        context: usize,
    ) -> Result<DMatrix<T>> {
        let a = (self.cp_factors(), CpKind::leg_symmetry(self));
        let b = (cp_of(other)?, other.symmetry());
        positionwise::step(a, Some(b), g, context)
    }

    /// The symmetric CP kernel ([`GramWorkspace::self_step`](super::GramWorkspace::self_step)),
    /// about half the work.
    fn self_gram_step(&self, g: &DMatrix<T>, context: usize) -> Result<DMatrix<T>> {
        let a = (self.cp_factors(), CpKind::leg_symmetry(self));
        positionwise::step(a, None, g, context)
    }

    /// The flattened output, and the CP kernel's factor-sized products (per
    /// pair of positions, reused).
    fn gram_step_scalars(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
        let output =
            crate::resources::flat_entries(context, self.output_width(), other.output_width());
        // Stacked input rank k·r and output rows of each side (an `other`
        // without factors is refused before it allocates; counted by width).
        let shape = |cp: Option<&CpFactors<T>>, input: usize, output: usize| {
            let (m, out) = (input as f64 + 1.0, output as f64 + 1.0);
            match cp {
                Some(f) => ((f.order() * f.rank()) as f64, m, out),
                None => (out, m, out),
            }
        };
        let (ka, ma, na) = shape(
            Some(self.cp_factors()),
            self.input_width(),
            self.output_width(),
        );
        let (kb, mb, nb) = shape(other.as_cp(), other.input_width(), other.output_width());
        // Y = U_A G and its mirror, Z = D̃_A H and its mirror, copies of
        // U_Bᵀ and D̃_Bᵀ, and the kernel's panels (2 MiB of f64 per thread).
        let kernel = 2.0 * (ka * mb + kb * ma + na * kb + nb * ka + kb * mb + nb * kb)
            + (rayon::current_num_threads() as f64) * (1 << 18) as f64;
        output + kernel
    }

    /// The CP kernel's products per pair of positions: `Y = U_A Ĝ[p,q]`,
    /// `X = Y U_Bᵀ`, the Hadamard sums, `D̃_A H` and `(D̃_A H) D̃_Bᵀ`; for an
    /// affine block, `B_A Ĝ[p,q] B_Bᵀ`.
    fn gram_step_work(&self, other: &dyn TensorBlock<T>, context: usize) -> f64 {
        let side = |cp: Option<&CpFactors<T>>, input: usize, output: usize| {
            let (m, out) = (input as f64 + 1.0, output as f64 + 1.0);
            match cp {
                Some(f) => ((f.order() * f.rank()) as f64, f.rank() as f64, m, out),
                None => (out, out, m, out),
            }
        };
        let (ka, ra, ma, na) = side(
            Some(self.cp_factors()),
            self.input_width(),
            self.output_width(),
        );
        let (kb, rb, mb, nb) = side(other.as_cp(), other.input_width(), other.output_width());
        let n = context as f64;
        if self.cp_factors().order() == 1 && !self.mixes_positions() {
            // An affine block is applied as its map B = D̃ U: B_A Ĝ B_Bᵀ.
            return n * n * (na * ma * mb + na * mb * nb);
        }
        n * n * (ka * ma * mb + ka * mb * kb + ka * kb + na * ra * rb + na * rb * nb)
    }

    /// The Wick step ([SPEC §3](crate::spec#3-gaussian-functional-similarity)), per position while the
    /// positions are independent, per pair of positions after a block that
    /// mixes them; `other` must have CP factors too.
    fn moment_step(
        &self,
        other: &dyn TensorBlock<T>,
        input: &JointMoments<T>,
    ) -> Result<JointMoments<T>> {
        let fb = other.as_cp().ok_or_else(|| {
            Error::InvalidBlock(format!(
                "the Gaussian metric compares a {} block with a {} block at the same position: \
                 a block with CP factors pairs only with another",
                CpKind::name(self),
                other.kind()
            ))
        })?;
        Ok(gaussian_cp::step(self.cp_factors(), fb, input))
    }

    fn self_moment_step(&self, input: &Moments<T>) -> Result<Moments<T>> {
        Ok(gaussian_cp::self_step(self.cp_factors(), input))
    }

    /// The step keeps per-position legs and per-pair blocks, within the
    /// moments the metric counts.
    fn moment_step_scalars(&self, _other: &dyn TensorBlock<T>, _context: usize) -> f64 {
        0.0
    }

    fn as_cp(&self) -> Option<&CpFactors<T>> {
        Some(self.cp_factors())
    }

    fn keeps_constant_by_construction(&self) -> bool {
        CpKind::checks_constant_when_built(self)
    }
}

#[cfg(test)]
mod tests {
    use nalgebra::{DMatrix, DVector};

    use super::CpKind;
    use crate::{Bilinear, CpBlock, Linear};

    fn w(seed: usize, rows: usize, cols: usize) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |i, j| {
            (((i * 7 + j * 5 + seed * 3) % 11) as f64 - 5.0) / 5.0
        })
    }

    /// A kind's batched rows against its own `apply`, row by row.
    fn rows_are_applied(kind: &dyn CpKind<f64>, x: &DMatrix<f64>) {
        let batched = kind.apply_rows(x).unwrap();
        for (i, row) in x.row_iter().enumerate() {
            let one = kind.apply(&row.transpose()).unwrap();
            let diff = (batched.row(i).transpose() - &one).amax();
            assert!(
                diff < 1e-12 * one.amax().max(1.0),
                "{kind:?} row {i}: {diff:e}"
            );
        }
        assert!(kind.apply_rows(&w(0, 2, x.ncols() + 1)).is_err());
    }

    #[test]
    fn batched_rows_are_each_rows_function() {
        let x = w(1, 7, 3);
        let v = |len: usize| DVector::from_fn(len, |i, _| 0.3 * i as f64 - 0.4);
        rows_are_applied(&Linear::new(w(2, 4, 3), Some(v(4))).unwrap(), &x);
        rows_are_applied(&Linear::new(w(2, 4, 3), None).unwrap(), &x);
        rows_are_applied(&Bilinear::new(w(3, 3, 3), w(4, 3, 3)).unwrap(), &x);
        let full = Bilinear::builder(w(3, 5, 3), w(4, 5, 3))
            .down(w(5, 3, 5))
            .left_bias(v(5))
            .right_bias(v(5))
            .down_bias(v(3));
        rows_are_applied(&full.clone().residual(0.6).build().unwrap(), &x);
        rows_are_applied(&full.clone().scale(0.5).skip(1.0).build().unwrap(), &x);
        rows_are_applied(&full.scale(0.5).build().unwrap(), &x);
        // An order-3 block from its factors (term 0 carries the constant).
        let mut u = w(6, 3, 4);
        u.row_mut(0)
            .copy_from(&nalgebra::RowDVector::from_row_slice(&[1.0, 0.0, 0.0, 0.0]));
        let mut d = w(7, 3, 3);
        d.row_mut(0)
            .copy_from(&nalgebra::RowDVector::from_row_slice(&[1.0, 0.0, 0.0]));
        d.column_mut(0).rows_mut(1, 2).fill(0.25);
        let cube = CpBlock::new(vec![u.clone(), u.clone(), u], d).unwrap();
        rows_are_applied(&cube, &x);
    }
}
