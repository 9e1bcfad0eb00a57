//! Bad input gives a typed error that names what is wrong, never a panic or NaN.

use nalgebra::{DMatrix, DVector, dmatrix, dvector};
use std::sync::Arc;
use tensor_similarity::{
    Bilinear, CpBlock, Error, Incomparable, Linear, Model, Permutation, PermutationGroup,
    RecursiveSimilarity, Side, TensorBlock, TensorSimilarity, cp_gram_step, similarity,
    weight_cosine,
};

fn linear(n: usize, m: usize) -> Linear {
    Linear::new(
        DMatrix::from_fn(n, m, |i, j| 1.0 + (i * m + j) as f64),
        None,
    )
    .unwrap()
}

fn bilinear(h: usize, m: usize) -> Bilinear {
    Bilinear::new(
        DMatrix::from_fn(h, m, |i, j| (i + j) as f64 - 1.0),
        DMatrix::from_fn(h, m, |i, j| (i * j) as f64 + 0.5),
    )
    .unwrap()
}

#[test]
fn shape_mismatches_name_the_part() {
    let err = Linear::new(DMatrix::zeros(2, 3), Some(dvector![1.0, 2.0, 3.0])).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, expected: (2, 1), found: (3, 1) } if what.contains("linear bias")),
        "{err}"
    );
    let err = Bilinear::<f64>::new(DMatrix::zeros(2, 3), DMatrix::zeros(3, 3)).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, .. } if what.contains("right")),
        "{err}"
    );
    let err = Bilinear::<f64>::builder(DMatrix::zeros(2, 3), DMatrix::zeros(2, 3))
        .down(DMatrix::zeros(4, 5))
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, found: (4, 5), .. } if what.contains("down")),
        "{err}"
    );
    let err = Bilinear::<f64>::builder(DMatrix::zeros(2, 3), DMatrix::zeros(2, 3))
        .left_bias(dvector![1.0])
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, .. } if what.contains("left bias")),
        "{err}"
    );
    let err = Bilinear::<f64>::from_fused(DMatrix::zeros(3, 2), None).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, .. } if what.contains("fused")),
        "{err}"
    );
    assert!(matches!(
        Linear::new(DMatrix::<f64>::zeros(0, 3), None),
        Err(Error::InvalidBlock(_))
    ));
}

#[test]
fn non_finite_values_are_located() {
    let mut w = DMatrix::from_element(2, 3, 1.0);
    w[(1, 2)] = f64::NAN;
    let err = Linear::new(w, None).unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { row: 1, col: 2, .. }),
        "{err}"
    );
    let err = Bilinear::<f64>::builder(DMatrix::zeros(2, 2), DMatrix::zeros(2, 2))
        .right_bias(dvector![0.0, f64::INFINITY])
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, row: 1, .. } if what.contains("right bias")),
        "{err}"
    );
    let err = Bilinear::<f64>::builder(DMatrix::zeros(2, 2), DMatrix::zeros(2, 2))
        .residual(f64::NAN)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { what, .. } if what.contains("residual")),
        "{err}"
    );
}

#[test]
fn residual_needs_equal_widths() {
    let err = Bilinear::<f64>::builder(DMatrix::zeros(4, 3), DMatrix::zeros(4, 3))
        .residual(0.5)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Residual {
                input: 3,
                output: 4,
                ..
            }
        ),
        "{err}"
    );
    // With a down projection back to the input width it is fine.
    Bilinear::<f64>::builder(DMatrix::zeros(4, 3), DMatrix::zeros(4, 3))
        .down(DMatrix::zeros(3, 4))
        .residual(0.5)
        .build()
        .unwrap();
}

#[test]
fn models_check_their_chain() {
    assert!(matches!(
        Model::<f64>::builder().build(),
        Err(Error::EmptyModel)
    ));
    let err = Model::builder()
        .block(linear(3, 2))
        .block(bilinear(4, 5))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WidthMismatch {
                block: 1,
                expected: 3,
                found: 5
            }
        ),
        "{err}"
    );
    let model = Model::builder().block(linear(3, 2)).build().unwrap();
    assert!(matches!(
        model.forward(&dvector![1.0]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        model.forward_rows(&DMatrix::zeros(4, 3)),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn incomparable_models_say_why() {
    let a = Model::builder()
        .block(linear(3, 2))
        .block(bilinear(4, 3))
        .build()
        .unwrap();
    let deeper = Model::builder()
        .block(linear(3, 2))
        .block(bilinear(4, 3))
        .block(linear(4, 4))
        .build()
        .unwrap();
    let orders = Model::builder()
        .block(bilinear(3, 2))
        .block(linear(4, 3))
        .build()
        .unwrap();
    let wider_in = Model::builder()
        .block(linear(3, 5))
        .block(bilinear(4, 3))
        .build()
        .unwrap();
    let wider_out = Model::builder()
        .block(linear(3, 2))
        .block(bilinear(6, 3))
        .build()
        .unwrap();
    let err = |b: &Model| similarity(&a, b).unwrap_err();
    assert!(matches!(
        err(&deeper),
        Error::Incomparable(Incomparable::Depth { a: 2, b: 3 })
    ));
    assert!(matches!(
        err(&orders),
        Error::Incomparable(Incomparable::Order {
            block: 0,
            a: 1,
            b: 2
        })
    ));
    assert!(matches!(
        err(&wider_in),
        Error::Incomparable(Incomparable::InputWidth { a: 2, b: 5 })
    ));
    assert!(matches!(
        err(&wider_out),
        Error::Incomparable(Incomparable::OutputWidth { a: 4, b: 6 })
    ));
    assert!(matches!(
        weight_cosine(&a, &wider_out),
        Err(Error::Incomparable(Incomparable::ParameterShape {
            block: 1,
            ..
        }))
    ));
    let msg = err(&orders).to_string();
    assert!(
        msg.contains("block 0") && msg.contains("order 1") && msg.contains("order 2"),
        "{msg}"
    );
}

#[test]
fn zero_norm_is_an_error_not_nan() {
    let zero = Model::builder()
        .block(Linear::new(DMatrix::zeros(2, 2), None).unwrap())
        .build()
        .unwrap();
    let one = Model::builder().block(linear(2, 2)).build().unwrap();
    assert!(matches!(
        similarity(&zero, &one),
        Err(Error::ZeroNorm(Side::A))
    ));
    assert!(matches!(
        similarity(&one, &zero),
        Err(Error::ZeroNorm(Side::B))
    ));
    assert!(matches!(
        weight_cosine(&one, &zero),
        Err(Error::ZeroNorm(Side::B))
    ));
    // A bilinear layer whose factors are orthogonal to every input is the zero function.
    let dead = Model::builder()
        .block(Bilinear::new(DMatrix::zeros(2, 2), DMatrix::from_element(2, 2, 1.0)).unwrap())
        .build()
        .unwrap();
    let live = Model::builder().block(bilinear(2, 2)).build().unwrap();
    assert!(matches!(
        similarity(&dead, &live),
        Err(Error::ZeroNorm(Side::A))
    ));
    // The inner product itself is a plain zero.
    assert!(
        TensorSimilarity::new()
            .inner_product(&dead, &live)
            .unwrap()
            .is_zero()
    );
}

#[test]
fn options_are_checked() {
    let model = Model::builder().block(linear(2, 3)).build().unwrap();
    let err = TensorSimilarity::new()
        .with_input_metric(dmatrix![1.0, 2.0; 0.0, 1.0])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                what: "input metric",
                ..
            }
        ),
        "{err}"
    );
    let err = TensorSimilarity::new()
        .with_input_metric(DMatrix::identity(3, 3))
        .unwrap()
        .similarity(&model, &model)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, expected: (4, 4), .. } if what.contains("input metric")),
        "{err}"
    );
    let err = TensorSimilarity::new()
        .with_output_selection(vec![2])
        .similarity(&model, &model)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                what: "output selection",
                ..
            }
        ),
        "{err}"
    );
    let err = TensorSimilarity::new()
        .with_output_weights(DMatrix::identity(3, 3))
        .unwrap()
        .similarity(&model, &model)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let err = TensorSimilarity::new()
        .with_input_gaussian(&dvector![0.0, 0.0], &DMatrix::identity(3, 3))
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
}

#[test]
fn cp_blocks_must_keep_the_constant() {
    let u = dmatrix![1.0, 0.0, 0.0; 0.0, 1.0, 2.0];
    // Output 0 reads the cubic term as well as the constant.
    let err = CpBlock::new(
        vec![u.clone(), u.clone(), u.clone()],
        dmatrix![1.0, 0.5; 0.0, 1.0],
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBlock(msg) if msg.contains("constant")),
        "{err}"
    );
    let err = CpBlock::new(
        vec![u.clone(), DMatrix::zeros(2, 4)],
        DMatrix::identity(2, 2),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Shape { what, .. } if what.contains("input factor 2")),
        "{err}"
    );
    let group =
        Arc::new(PermutationGroup::generated_by(&[Permutation::new(vec![1, 0]).unwrap()]).unwrap());
    let err = CpBlock::with_symmetry(
        vec![u.clone(), u.clone(), u],
        DMatrix::identity(2, 2),
        group,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Symmetry(_)), "{err}");
}

#[test]
fn gram_step_checks_its_input() {
    let (a, b) = (linear(2, 3), bilinear(2, 3));
    assert!(matches!(
        cp_gram_step(&a, &b, &DMatrix::identity(4, 4)),
        Err(Error::Incomparable(Incomparable::StepOrders { a: 1, b: 2 }))
    ));
    assert!(matches!(
        cp_gram_step(&a, &a, &DMatrix::identity(3, 3)),
        Err(Error::Shape { .. })
    ));
    assert!(a.forward(&DVector::zeros(2)).is_err());
}

#[test]
fn overflowing_weights_are_a_numerical_breakdown_not_nan() {
    // 1e200² overflows f64 inside the first step, before normalisation can help.
    let huge = Model::builder()
        .block(Linear::new(DMatrix::from_element(2, 2, 1e200), None).unwrap())
        .build()
        .unwrap();
    let err = similarity(&huge, &huge).unwrap_err();
    assert!(
        matches!(err, Error::NumericalBreakdown { block: 0, .. }),
        "{err}"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Model>();
    check::<Model<f32>>();
    check::<Linear>();
    check::<Bilinear>();
    check::<CpBlock>();
    check::<TensorSimilarity>();
    check::<tensor_similarity::LogScaled>();
    check::<PermutationGroup>();
    check::<Error>();
    check::<Arc<dyn TensorBlock<f64>>>();
}
