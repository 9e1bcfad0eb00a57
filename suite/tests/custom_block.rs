//! A block kind written as a downstream crate would: public API only.
//!
//! A trilinear block `y = D((Ax) ∘ (Bx) ∘ (Cx))` through `TensorBlock`; its
//! twin through the block's symmetries (hidden permutation, rescaling, legs
//! swapped per unit) compares to 1; a dense reference built from its own
//! forward pass (not from the factors) agrees with the recursion; a block
//! that drops the constant is rejected where the model is built; a block
//! whose `forward` disagrees with its factors is caught by `check_block`;
//! and the crate's own kinds pass `check_block`.

mod common;

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand::rngs::StdRng;
use tensor_similarity::{
    Attention, Bilinear, CpBlock, CpFactors, CpKind, Description, Error, GaussianSimilarity,
    JointMoments, Linear, Mask, Model, Moments, Parameter, RecursiveSimilarity, Setting,
    SymmetryGroup, TensorBlock, TensorSimilarity, Trivial, check_block,
};

/// `y = D((Ax) ∘ (Bx) ∘ (Cx))`, `A, B, C ∈ R^{h×m}`, `D ∈ R^{n×h}`.
#[derive(Debug)]
struct Trilinear {
    cp: CpFactors<f64>,
    weights: [DMatrix<f64>; 4],
}

impl Trilinear {
    fn new(a: DMatrix<f64>, b: DMatrix<f64>, c: DMatrix<f64>, d: DMatrix<f64>) -> Self {
        // Padded factors: unit 0 carries the constant (row e_0 on every leg,
        // column e_0 of D̃), units 1..=h read x through A, B, C.
        let (h, m) = a.shape();
        let leg = |w: &DMatrix<f64>| {
            let mut u = DMatrix::zeros(h + 1, m + 1);
            u[(0, 0)] = 1.0;
            u.view_mut((1, 1), (h, m)).copy_from(w);
            u
        };
        let n = d.nrows();
        let mut out = DMatrix::zeros(n + 1, h + 1);
        out[(0, 0)] = 1.0;
        out.view_mut((1, 1), (n, h)).copy_from(&d);
        let cp = CpFactors::new(&[leg(&a), leg(&b), leg(&c)], Some(out)).unwrap();
        Self {
            cp,
            weights: [a, b, c, d],
        }
    }
}

impl CpKind<f64> for Trilinear {
    fn cp_factors(&self) -> &CpFactors<f64> {
        &self.cp
    }

    fn name(&self) -> &'static str {
        "trilinear"
    }

    fn apply(&self, x: &DVector<f64>) -> tensor_similarity::Result<DVector<f64>> {
        let [a, b, c, d] = &self.weights;
        Ok(d * (a * x).component_mul(&(b * x)).component_mul(&(c * x)))
    }
}

fn random(rng: &mut StdRng, r: usize, c: usize) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| rng.random_range(-1.0..1.0))
}

fn weights(seed: u64, m: usize, h: usize, n: usize) -> [DMatrix<f64>; 4] {
    let mut rng = common::rng(seed);
    [
        random(&mut rng, h, m),
        random(&mut rng, h, m),
        random(&mut rng, h, m),
        random(&mut rng, n, h),
    ]
}

fn model(w: &[DMatrix<f64>; 4]) -> Model {
    let [a, b, c, d] = w.clone();
    Model::builder()
        .block(Trilinear::new(a, b, c, d))
        .build()
        .unwrap()
}

/// The same function: units permuted, rescaled (`a b c · d = 1`), and the
/// three legs of every unit rotated.
fn twin(w: &[DMatrix<f64>; 4], seed: u64) -> [DMatrix<f64>; 4] {
    let mut rng = common::rng(seed);
    let h = w[0].nrows();
    let mut out = w.clone();
    let order: Vec<usize> = (0..h).rev().collect();
    for (new, &old) in order.iter().enumerate() {
        let scales = [
            rng.random_range(0.5..2.0),
            rng.random_range(0.5..2.0),
            rng.random_range(0.5..2.0),
        ];
        let legs = match new % 3 {
            0 => [0, 1, 2],
            1 => [1, 2, 0],
            _ => [2, 0, 1],
        };
        for (to, &from) in legs.iter().enumerate() {
            out[to].set_row(new, &(w[from].row(old) * scales[to]));
        }
        let product: f64 = scales.iter().product();
        out[3].set_column(new, &(w[3].column(old) / product));
    }
    out
}

/// `⟨A, B⟩` of two single trilinear blocks, by brute force: each block's
/// symmetric padded tensor read off its forward pass (`f(x) = T(x̃,x̃,x̃)`
/// on `x̃ = (1, x)`, homogeneous of degree 3 with no lower terms here, so
/// `T[o]` is the symmetric cubic form of `f_o`, recovered by polarisation
/// `T(u,v,w) = (1/48) Σ_ε ε_1 ε_2 ε_3 f(ε_1 u + ε_2 v + ε_3 w)`), then the Frobenius product.
fn dense_inner(a: &Trilinear, b: &Trilinear) -> f64 {
    let m = a.input_width();
    let n = a.output_width();
    let e = |i: usize| {
        let mut v = DVector::zeros(m);
        v[i] = 1.0;
        v
    };
    let tensor = |block: &Trilinear| {
        let mut t = vec![0.0; n * m * m * m];
        for i in 0..m {
            for j in 0..m {
                for k in 0..m {
                    let mut value = DVector::zeros(n);
                    for (su, sv, sw) in (0..8).map(|s| {
                        let sign = |bit: usize| if s >> bit & 1 == 0 { 1.0 } else { -1.0 };
                        (sign(0), sign(1), sign(2))
                    }) {
                        let x = e(i) * su + e(j) * sv + e(k) * sw;
                        value += block.forward(&x).unwrap() * (su * sv * sw);
                    }
                    for o in 0..n {
                        t[((o * m + i) * m + j) * m + k] = value[o] / 48.0;
                    }
                }
            }
        }
        t
    };
    let (ta, tb) = (tensor(a), tensor(b));
    ta.iter().zip(&tb).map(|(x, y)| x * y).sum()
}

#[test]
fn a_trilinear_block_and_its_twin() {
    let w = weights(1, 4, 5, 3);
    let a = model(&w);
    let b = model(&twin(&w, 2));
    let sim = TensorSimilarity::new();
    let s = sim.similarity(&a, &b).unwrap();
    assert!((s - 1.0).abs() < 1e-12, "{s}");
    // The same function, computed.
    let x = DVector::from_vec(vec![0.3, -1.2, 0.7, 0.1]);
    assert!((a.forward(&x).unwrap() - b.forward(&x).unwrap()).amax() < 1e-12);
    // An unrelated trilinear block is far from it.
    let c = model(&weights(3, 4, 5, 3));
    assert!(sim.similarity(&a, &c).unwrap().abs() < 0.9);
}

#[test]
fn the_recursion_matches_a_dense_reference_built_from_forward() {
    let (wa, wb) = (weights(4, 3, 4, 2), weights(5, 3, 6, 2));
    let [a0, a1, a2, a3] = wa.clone();
    let [b0, b1, b2, b3] = wb.clone();
    let (ba, bb) = (
        Trilinear::new(a0, a1, a2, a3),
        Trilinear::new(b0, b1, b2, b3),
    );
    let dense = dense_inner(&ba, &bb);
    let recursion = TensorSimilarity::new()
        .inner_product(&model(&wa), &model(&wb))
        .unwrap()
        .to_f64();
    assert!(
        (dense - recursion).abs() < 1e-12 * dense.abs().max(1.0),
        "{dense} vs {recursion}"
    );
}

/// A block of `y = x ∘ x` whose padded output factor has `D̃[0,0] = 2`: the
/// same forward pass on the outputs, a broken constant.
#[derive(Debug)]
struct Doubled(CpFactors<f64>);

impl CpKind<f64> for Doubled {
    fn cp_factors(&self) -> &CpFactors<f64> {
        &self.0
    }
    fn name(&self) -> &'static str {
        "doubled square"
    }
}

#[test]
fn a_block_without_the_constant_is_rejected_where_the_model_is_built() {
    let u = DMatrix::<f64>::identity(3, 3);
    let mut d = DMatrix::<f64>::identity(3, 3);
    d[(0, 0)] = 2.0;
    let bad = Doubled(CpFactors::new(&[u.clone(), u.clone()], Some(d)).unwrap());
    // Its forward pass is that of the good square: nothing else would notice.
    let x = DVector::from_vec(vec![3.0, -2.0]);
    assert_eq!(bad.forward(&x).unwrap(), DVector::from_vec(vec![9.0, 4.0]));
    let err = Model::builder()
        .block(Linear::new(DMatrix::identity(2, 2), None).unwrap())
        .block(bad)
        .build()
        .unwrap_err();
    match &err {
        Error::ConstantNotKept { block: 1, kind, .. } => assert_eq!(*kind, "doubled square"),
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("block 1 (0-based)"), "{err}");
    let good = Doubled(CpFactors::new(&[u.clone(), u], None).unwrap());
    assert!(Model::builder().block(good).build().is_ok());
}

/// A trilinear block whose `forward` forgets the down projection.
#[derive(Debug)]
struct Forgetful(Trilinear);

impl CpKind<f64> for Forgetful {
    fn cp_factors(&self) -> &CpFactors<f64> {
        self.0.cp_factors()
    }
    fn name(&self) -> &'static str {
        "forgetful"
    }
    fn apply(&self, x: &DVector<f64>) -> tensor_similarity::Result<DVector<f64>> {
        let [a, b, c, _] = &self.0.weights;
        Ok((a * x)
            .component_mul(&(b * x))
            .component_mul(&(c * x))
            .rows(0, 3)
            .into_owned())
    }
}

#[test]
fn check_block_catches_a_forward_that_disagrees_with_the_factors() {
    let [a, b, c, d] = weights(6, 4, 5, 3);
    let good = Trilinear::new(a.clone(), b.clone(), c.clone(), d.clone());
    check_block(&good).unwrap();
    let bad = Forgetful(Trilinear::new(a, b, c, d));
    match check_block(&bad) {
        Err(Error::BlockCheck {
            kind: "forgetful",
            reason,
        }) => {
            assert!(reason.contains("forward"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The model builds (its constant is fine), so the check is the author's.
    assert!(Model::builder().block(bad).build().is_ok());
}

#[test]
fn the_crates_own_kinds_pass_check_block() {
    let mut rng = common::rng(9);
    let mut v = |n: usize| DVector::from_fn(n, |_, _| rng.random_range(-0.5..0.5));
    let [l, r, _, d] = weights(7, 4, 5, 4);
    let blocks: Vec<Box<dyn TensorBlock<f64>>> = vec![
        Box::new(Linear::new(d.clone(), Some(v(4))).unwrap()),
        Box::new(Bilinear::new(l.clone(), r.clone()).unwrap()),
        Box::new(
            Bilinear::builder(l.clone(), r.clone())
                .down(d.clone())
                .left_bias(v(5))
                .right_bias(v(5))
                .down_bias(v(4))
                .residual(0.3)
                .build()
                .unwrap(),
        ),
        Box::new(
            CpBlock::new(
                vec![
                    DMatrix::identity(5, 5),
                    DMatrix::identity(5, 5),
                    DMatrix::identity(5, 5),
                ],
                DMatrix::identity(5, 5),
            )
            .unwrap(),
        ),
        Box::new(
            Attention::builder(
                2,
                l.rows(0, 4).into_owned(),
                r.rows(0, 4).into_owned(),
                l.rows(1, 4).into_owned(),
                r.rows(1, 4).into_owned(),
                l.rows(0, 2).into_owned(),
                d.columns(0, 2).into_owned(),
            )
            .q1_bias(v(4))
            .k2_bias(v(4))
            .v_bias(v(2))
            .o_bias(v(4))
            .rotary(100.0)
            .mask(Mask::None)
            .scale(0.7)
            .build()
            .unwrap(),
        ),
    ];
    for block in &blocks {
        check_block(&**block).unwrap_or_else(|e| panic!("{}: {e}", block.kind()));
    }
}

// ---------------------------------------------------------------------------
// A kind without CP factors, with its own steps for both metrics.

/// A linear map that mixes positions, `Y[s] = Σ_t M[s,t] W X[t] + b` with
/// the causal convolution `M[s,t] = k[s−t]` for `0 ≤ s−t < K`: a
/// token-mixing layer, defined at every context length. On the
/// flattened padded stream it is one matrix `Ã`, so its Gram step is
/// `Ã_A G Ã_Bᵀ` and its moment step maps means by `Ã` and covariances by
/// `Ã · Ãᵀ`, both exact.
#[derive(Debug)]
struct TokenMix {
    kernel: DVector<f64>,
    weight: DMatrix<f64>,
    bias: DVector<f64>,
}

impl TokenMix {
    /// `M` on `n` positions.
    fn mix(&self, n: usize) -> DMatrix<f64> {
        DMatrix::from_fn(n, n, |s, t| match s.checked_sub(t) {
            Some(lag) if lag < self.kernel.len() => self.kernel[lag],
            _ => 0.0,
        })
    }

    /// `Ã`, `(n·out + 1) × (n·in + 1)`.
    fn padded(&self, n: usize) -> tensor_similarity::Result<DMatrix<f64>> {
        let mix = self.mix(n);
        let (o, i) = self.weight.shape();
        let mut a = DMatrix::zeros(n * o + 1, n * i + 1);
        a[(0, 0)] = 1.0;
        for s in 0..n {
            a.view_mut((1 + s * o, 0), (o, 1)).copy_from(&self.bias);
            for t in 0..n {
                a.view_mut((1 + s * o, 1 + t * i), (o, i))
                    .copy_from(&(&self.weight * mix[(s, t)]));
            }
        }
        Ok(a)
    }

    /// The token mix at the other model's position.
    fn same_kind(other: &dyn TensorBlock<f64>) -> tensor_similarity::Result<&TokenMix> {
        let any: &dyn std::any::Any = other;
        any.downcast_ref::<TokenMix>().ok_or_else(|| {
            Error::InvalidBlock(format!("a token mix paired with a {} block", other.kind()))
        })
    }
}

impl TensorBlock<f64> for TokenMix {
    fn kind(&self) -> &'static str {
        "token mix"
    }
    fn order(&self) -> usize {
        1
    }
    fn input_width(&self) -> usize {
        self.weight.ncols()
    }
    fn output_width(&self) -> usize {
        self.weight.nrows()
    }
    fn mixes_positions(&self) -> bool {
        true
    }
    fn symmetry(&self) -> &dyn SymmetryGroup {
        &Trivial
    }
    fn describe(&self) -> Description<'_, f64> {
        Description {
            kind: "token mix",
            settings: vec![("lags", Setting::Count(self.kernel.len()))],
            parameters: vec![
                Parameter::vector("kernel", &self.kernel),
                Parameter::matrix("weight", &self.weight),
                Parameter::vector("bias", &self.bias),
            ],
        }
    }
    fn forward_sequence(&self, x: &DMatrix<f64>) -> tensor_similarity::Result<DMatrix<f64>> {
        if x.ncols() != self.input_width() {
            return Err(Error::InvalidBlock(format!(
                "token mix input {:?}",
                x.shape()
            )));
        }
        let mut y = self.mix(x.nrows()) * x * self.weight.transpose();
        for mut row in y.row_iter_mut() {
            row += self.bias.transpose();
        }
        Ok(y)
    }
    fn gram_step(
        &self,
        other: &dyn TensorBlock<f64>,
        g: &DMatrix<f64>,
        context: usize,
    ) -> tensor_similarity::Result<DMatrix<f64>> {
        let (a, b) = (
            self.padded(context)?,
            Self::same_kind(other)?.padded(context)?,
        );
        if g.shape() != (a.ncols(), b.ncols()) {
            return Err(Error::InvalidBlock(format!("Gram matrix {:?}", g.shape())));
        }
        Ok(&a * g * b.transpose())
    }
    fn self_gram_step(
        &self,
        g: &DMatrix<f64>,
        context: usize,
    ) -> tensor_similarity::Result<DMatrix<f64>> {
        self.gram_step(self, g, context)
    }
    fn gram_step_scalars(&self, other: &dyn TensorBlock<f64>, context: usize) -> f64 {
        let n = context as f64;
        let side = |b: &dyn TensorBlock<f64>| {
            (n * b.output_width() as f64 + 1.0) * (n * b.input_width() as f64 + 1.0)
        };
        side(self) + side(other) + (n * self.output_width() as f64 + 1.0).powi(2) * 2.0
    }
    fn gram_step_work(&self, other: &dyn TensorBlock<f64>, context: usize) -> f64 {
        // Two dense products of the flattened padded maps with G.
        let n = context as f64;
        let (oa, ob) = (
            n * self.output_width() as f64 + 1.0,
            n * other.output_width() as f64 + 1.0,
        );
        let (ia, ib) = (
            n * self.input_width() as f64 + 1.0,
            n * other.input_width() as f64 + 1.0,
        );
        oa * ia * ib + oa * ib * ob
    }
    fn moment_step(
        &self,
        other: &dyn TensorBlock<f64>,
        input: &JointMoments<f64>,
    ) -> tensor_similarity::Result<JointMoments<f64>> {
        let n = input.context();
        let input = input.joint();
        let (a, b) = (self.padded(n)?, Self::same_kind(other)?.padded(n)?);
        let side = |m: &DMatrix<f64>, x: &Moments<f64>| {
            Moments::new(m * x.mean(), m * x.covariance() * m.transpose(), n)
        };
        JointMoments::new(
            side(&a, input.a())?,
            side(&b, input.b())?,
            &a * input.cross() * b.transpose(),
        )
    }
    fn self_moment_step(&self, input: &Moments<f64>) -> tensor_similarity::Result<Moments<f64>> {
        let n = input.context();
        let a = self.padded(n)?;
        let input = input.joint();
        Moments::new(
            &a * input.mean(),
            &a * input.covariance() * a.transpose(),
            n,
        )
    }
    fn moment_step_scalars(&self, other: &dyn TensorBlock<f64>, context: usize) -> f64 {
        self.gram_step_scalars(other, context)
    }
}

const CONTEXT: usize = 3;

/// `TokenMix(d → h) · Bilinear(h → h2) · Linear(h2 → o)` on 3 positions.
fn mixed_model(seed: u64, (d, h, h2, o): (usize, usize, usize, usize)) -> Model {
    let mut rng = common::rng(seed);
    let mut w = |r: usize, c: usize| common::gaussian_matrix(&mut rng, r, c, 0.6);
    let mix = TokenMix {
        kernel: w(2, 1).column(0).into_owned(),
        weight: w(h, d),
        bias: w(h, 1).column(0).into_owned(),
    };
    let bilinear = Bilinear::builder(w(h2, h), w(h2, h))
        .left_bias(w(h2, 1).column(0).into_owned())
        .right_bias(w(h2, 1).column(0).into_owned())
        .build()
        .unwrap();
    let head = Linear::new(w(o, h2), Some(w(o, 1).column(0).into_owned())).unwrap();
    Model::builder()
        .block(mix)
        .block(bilinear)
        .block(head)
        .build()
        .unwrap()
}

/// The model's function on the flattened input `x` (`n·d`), flattened.
fn flat_forward(model: &Model, x: &DVector<f64>) -> DVector<f64> {
    let d = model.input_width();
    let rows = DMatrix::from_row_slice(CONTEXT, d, x.as_slice());
    let y = model.forward_sequence(&rows).unwrap();
    DVector::from_row_slice(y.transpose().as_slice())
}

/// SPEC §2's `⟨A, B⟩` from forward passes alone (`common::dense_quadratic_inner`).
fn dense_tensor_inner(a: &Model, b: &Model) -> f64 {
    let n_in = CONTEXT * a.input_width();
    common::dense_quadratic_inner(&|x| flat_forward(a, x), &|x| flat_forward(b, x), n_in)
}

/// `E[f_A f_B]` under `N(0, I)` in closed form (`common::gaussian_quadratic_inner`).
fn gaussian_inner(a: &Model, b: &Model) -> f64 {
    let n_in = CONTEXT * a.input_width();
    common::gaussian_quadratic_inner(&|x| flat_forward(a, x), &|x| flat_forward(b, x), n_in)
}

#[test]
fn a_kind_with_its_own_steps_matches_a_dense_oracle_in_the_tensor_metric() {
    let a = mixed_model(21, (3, 4, 3, 2));
    let b = mixed_model(22, (3, 5, 4, 2));
    assert!(a.is_sequence());
    let metric = TensorSimilarity::new().with_context(CONTEXT).unwrap();
    for (x, y) in [(&a, &b), (&a, &a), (&b, &b)] {
        let dense = dense_tensor_inner(x, y);
        let recursion = metric.inner_product(x, y).unwrap().to_f64();
        assert!(
            (dense - recursion).abs() < 1e-10 * dense.abs().max(1.0),
            "{dense} vs {recursion}"
        );
    }
    // Paired with a kind it does not know, its step or the other's is an
    // error, not a panic, in both metrics.
    let mut rng = common::rng(26);
    let mut w = |r: usize, c: usize| common::gaussian_matrix(&mut rng, r, c, 1.0);
    let linear_first = Model::builder()
        .block(Linear::new(w(4, 3), None).unwrap())
        .block(Bilinear::new(w(3, 4), w(3, 4)).unwrap())
        .block(Linear::new(w(2, 3), None).unwrap())
        .sequence()
        .build()
        .unwrap();
    let gaussian = GaussianSimilarity::new().with_context(CONTEXT).unwrap();
    for (x, y) in [(&a, &linear_first), (&linear_first, &a)] {
        assert!(matches!(
            metric.similarity(x, y),
            Err(Error::InvalidBlock(_))
        ));
        assert!(matches!(
            gaussian.similarity(x, y),
            Err(Error::InvalidBlock(_))
        ));
    }
}

#[test]
fn a_kind_with_its_own_steps_matches_isserlis_and_monte_carlo_in_the_gaussian_metric() {
    let a = mixed_model(23, (3, 4, 3, 2));
    let b = mixed_model(24, (3, 5, 4, 2));
    let metric = GaussianSimilarity::new().with_context(CONTEXT).unwrap();
    let report = metric.report(&a, &b).unwrap();
    assert!(report.exact);
    let closed = gaussian_inner(&a, &b);
    let propagated = metric.inner_product(&a, &b).unwrap().to_f64();
    assert!(
        (closed - propagated).abs() < 1e-10 * closed.abs().max(1.0),
        "{closed} vs {propagated}"
    );
    let expected_similarity = closed / (gaussian_inner(&a, &a) * gaussian_inner(&b, &b)).sqrt();
    assert!((report.similarity - expected_similarity).abs() < 1e-10);
    // Monte Carlo: the mean of f_A·f_B over samples, within 5 standard errors.
    let mut rng = common::rng(25);
    let samples = 20_000;
    let n_in = CONTEXT * a.input_width();
    let values: Vec<f64> = (0..samples)
        .map(|_| {
            let x = common::gaussian_vector(&mut rng, n_in, 1.0);
            flat_forward(&a, &x).dot(&flat_forward(&b, &x))
        })
        .collect();
    let mean = values.iter().sum::<f64>() / samples as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples - 1) as f64;
    let se = (var / samples as f64).sqrt();
    assert!(
        (mean - propagated).abs() < 5.0 * se,
        "Monte Carlo {mean} ± {se} vs {propagated}"
    );
}
