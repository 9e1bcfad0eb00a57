//! Sequence models and attention: the API's errors and identities that
//! need no oracle (the dense oracle is `tests/attention_oracle.rs`).

mod common;

use nalgebra::{DMatrix, DVector};
use rand::{Rng, rngs::StdRng};
use tensor_similarity::{
    Attention, Bilinear, Error, GaussianSimilarity, Incomparable, Linear, Mask, Model,
    RecursiveSimilarity, Side, TensorSimilarity,
};

fn random(rng: &mut StdRng, r: usize, c: usize, scale: f64) -> DMatrix<f64> {
    DMatrix::from_fn(r, c, |_, _| rng.random_range(-scale..scale))
}

fn attention(rng: &mut StdRng, d: usize, heads: usize, e: usize) -> Attention<f64> {
    Attention::builder(
        heads,
        random(rng, heads * e, d, 0.8),
        random(rng, heads * e, d, 0.8),
        random(rng, heads * e, d, 0.8),
        random(rng, heads * e, d, 0.8),
        random(rng, heads * e, d, 0.8),
        random(rng, d, heads * e, 0.8),
    )
    .q1_bias(DVector::from_fn(heads * e, |i, _| 0.1 * i as f64))
    .rotary(50.0)
    .skip(1.0)
    .scale(0.5)
    .build()
    .unwrap()
}

fn lm(seed: u64, vocab: usize, d: usize, heads: usize, e: usize, layers: usize) -> Model {
    let mut rng = common::rng(seed);
    let mut b = Model::builder().block(Linear::new(random(&mut rng, d, vocab, 1.0), None).unwrap());
    for _ in 0..layers {
        b = b.block(attention(&mut rng, d, heads, e));
    }
    b.block(Linear::new(random(&mut rng, vocab, d, 1.0), None).unwrap())
        .build()
        .unwrap()
}

fn ctx(n: usize) -> TensorSimilarity {
    TensorSimilarity::new().with_context(n).unwrap()
}

#[test]
fn a_sequence_model_needs_a_context_length() {
    let a = lm(1, 3, 2, 1, 2, 1);
    let v: Model = Model::builder()
        .block(Linear::new(DMatrix::identity(3, 3), None).unwrap())
        .build()
        .unwrap();
    assert!(a.is_sequence() && !v.is_sequence());
    assert!(matches!(
        TensorSimilarity::new().similarity(&a, &a),
        Err(Error::MissingContext(Side::A))
    ));
    let marked = Model::builder()
        .sequence()
        .block(Linear::new(DMatrix::identity(3, 3), None).unwrap())
        .build()
        .unwrap();
    assert!(marked.is_sequence() && !marked.mixes_positions());
    assert!(matches!(
        TensorSimilarity::new().similarity(&v, &marked),
        Err(Error::MissingContext(Side::B))
    ));
    assert!(matches!(
        TensorSimilarity::new().with_context(0),
        Err(Error::ZeroContext)
    ));
    assert!(ctx(2).similarity(&a, &a).is_ok());
    let msg = TensorSimilarity::new()
        .similarity(&a, &a)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("context"), "{msg}");
}

#[test]
fn attention_options_are_checked() {
    let m = |r: usize, c: usize| DMatrix::from_element(r, c, 0.5);
    let build = |heads: usize, qk: usize, v: usize| {
        Attention::builder(
            heads,
            m(qk, 4),
            m(qk, 4),
            m(qk, 4),
            m(qk, 4),
            m(v, 4),
            m(4, v),
        )
    };
    assert!(matches!(
        build(3, 4, 3).build(),
        Err(Error::Heads {
            what: "q1",
            rows: 4,
            heads: 3
        })
    ));
    assert!(matches!(
        build(2, 4, 3).build(),
        Err(Error::Heads {
            what: "v",
            rows: 3,
            heads: 2
        })
    ));
    assert!(matches!(
        build(0, 4, 4).build(),
        Err(Error::Heads { heads: 0, .. })
    ));
    // e = 3 per head is odd: rotary pairs dimensions.
    assert!(matches!(
        build(2, 6, 4).rotary(10_000.0).build(),
        Err(Error::OddRotaryWidth { width: 3 })
    ));
    assert!(build(2, 6, 4).build().is_ok());
    // q2 of another shape, a bias of the wrong length, a NaN.
    let bad = Attention::builder(2, m(4, 4), m(4, 4), m(2, 4), m(4, 4), m(4, 4), m(4, 4)).build();
    assert!(
        matches!(bad, Err(Error::Shape { ref what, .. }) if what == "q2"),
        "{bad:?}"
    );
    let bias = build(2, 4, 4).k1_bias(DVector::zeros(3)).build();
    assert!(matches!(bias, Err(Error::Shape { ref what, .. }) if what == "k1_bias"));
    let mut nan = m(4, 4);
    nan[(1, 2)] = f64::NAN;
    let nan = Attention::builder(2, m(4, 4), nan, m(4, 4), m(4, 4), m(4, 4), m(4, 4)).build();
    assert!(matches!(nan, Err(Error::NonFinite { ref what, row: 1, col: 2, .. }) if what == "k1"));
    // A skip needs d_out = d; without it the output may be narrower.
    let narrow = |skip: f64| {
        Attention::builder(1, m(2, 4), m(2, 4), m(2, 4), m(2, 4), m(2, 4), m(3, 2))
            .skip(skip)
            .build()
    };
    assert!(matches!(narrow(1.0), Err(Error::Residual { .. })));
    assert!(narrow(0.0).is_ok());
    assert!(build(1, 2, 2).score_scale(0.0).build().is_err());
}

#[test]
fn incomparable_sequence_models_are_typed_errors() {
    let a = lm(1, 3, 2, 1, 2, 1);
    let deeper = lm(2, 3, 2, 1, 2, 2);
    assert!(matches!(
        ctx(2).similarity(&a, &deeper),
        Err(Error::Incomparable(Incomparable::Depth { a: 3, b: 4 }))
    ));
    // Attention (order 5) against a bilinear MLP (order 2) at block 1.
    let mut rng = common::rng(3);
    let mlp = Model::builder()
        .block(Linear::new(random(&mut rng, 2, 3, 1.0), None).unwrap())
        .block(Bilinear::new(random(&mut rng, 4, 2, 1.0), random(&mut rng, 4, 2, 1.0)).unwrap())
        .block(Linear::new(random(&mut rng, 3, 4, 1.0), None).unwrap())
        .sequence()
        .build()
        .unwrap();
    assert!(matches!(
        ctx(2).similarity(&a, &mlp),
        Err(Error::Incomparable(Incomparable::Order {
            block: 1,
            a: 5,
            b: 2
        }))
    ));
    let four_out = {
        let mut rng = common::rng(5);
        Model::builder()
            .block(Linear::new(random(&mut rng, 2, 3, 1.0), None).unwrap())
            .block(attention(&mut rng, 2, 1, 2))
            .block(Linear::new(random(&mut rng, 4, 2, 1.0), None).unwrap())
            .build()
            .unwrap()
    };
    assert!(matches!(
        ctx(2).similarity(&a, &four_out),
        Err(Error::Incomparable(Incomparable::OutputWidth {
            a: 3,
            b: 4
        }))
    ));
    // The Gaussian metric on a sequence model needs the context length too.
    assert!(matches!(
        GaussianSimilarity::new().similarity(&a, &a),
        Err(Error::MissingContext(_))
    ));
    let g = GaussianSimilarity::new().with_context(2).unwrap();
    assert!((g.similarity(&a, &a).unwrap() - 1.0).abs() < 1e-12);
}

#[test]
fn models_may_differ_in_width_heads_and_e() {
    let a = lm(7, 5, 4, 2, 2, 2);
    let b = lm(8, 5, 6, 3, 2, 2);
    let c = lm(9, 5, 2, 1, 4, 2);
    for n in 1..=3 {
        let sim = ctx(n);
        for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
            let s = sim.similarity(x, y).unwrap();
            let t = sim.similarity(y, x).unwrap();
            assert!(s.abs() <= 1.0 && (s - t).abs() < 1e-12, "{s} {t}");
        }
        assert!((sim.similarity(&b, &b).unwrap() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn position_selection_splits_the_inner_product() {
    let (a, b) = (lm(11, 4, 4, 2, 2, 1), lm(12, 4, 4, 2, 2, 1));
    let n = 3;
    let full = ctx(n).inner_product(&a, &b).unwrap().to_f64();
    let parts: f64 = (0..n)
        .map(|p| {
            ctx(n)
                .with_position_selection(vec![p])
                .inner_product(&a, &b)
                .unwrap()
                .to_f64()
        })
        .sum();
    assert!(
        (full - parts).abs() < 1e-10 * full.abs(),
        "{full} vs {parts}"
    );
    // Per-position weights Q = I equal the trace; a flattened Q = I too.
    let q = ctx(n).with_output_weights(DMatrix::identity(4, 4)).unwrap();
    let flat = ctx(n)
        .with_output_weights(DMatrix::identity(n * 4, n * 4))
        .unwrap();
    for sim in [q, flat] {
        let v = sim.inner_product(&a, &b).unwrap().to_f64();
        assert!((v - full).abs() < 1e-10 * full.abs());
    }
    assert!(
        ctx(n)
            .with_position_selection(vec![3])
            .inner_product(&a, &b)
            .is_err()
    );
    assert!(
        ctx(n)
            .with_output_selection(vec![4])
            .inner_product(&a, &b)
            .is_err()
    );
}

#[test]
fn a_per_position_metric_lifts_to_the_stream() {
    let (a, b) = (lm(13, 3, 2, 1, 2, 1), lm(14, 3, 2, 1, 2, 1));
    let n = 2;
    let mean = DVector::from_vec(vec![0.3, -0.2, 0.1]);
    let cov = DMatrix::from_fn(3, 3, |i, j| if i == j { 1.0 + i as f64 * 0.2 } else { 0.1 });
    let lifted = ctx(n).with_input_gaussian(&mean, &cov).unwrap();
    // The same metric written out over the flattened stream (i.i.d. rows).
    let d = 3;
    let mut flat = DMatrix::zeros(n * d + 1, n * d + 1);
    flat[(0, 0)] = 1.0;
    for p in 0..n {
        for i in 0..d {
            flat[(0, 1 + p * d + i)] = mean[i];
            flat[(1 + p * d + i, 0)] = mean[i];
            for q in 0..n {
                for j in 0..d {
                    let v = mean[i] * mean[j] + if p == q { cov[(i, j)] } else { 0.0 };
                    flat[(1 + p * d + i, 1 + q * d + j)] = v;
                }
            }
        }
    }
    let explicit = ctx(n).with_input_metric(flat).unwrap();
    for (x, y) in [(&a, &b), (&a, &a)] {
        let (u, v) = (
            lifted.inner_product(x, y).unwrap().to_f64(),
            explicit.inner_product(x, y).unwrap().to_f64(),
        );
        assert!((u - v).abs() < 1e-12 * u.abs(), "{u} vs {v}");
    }
    // A metric of neither shape is an error naming both.
    assert!(
        ctx(n)
            .with_input_metric(DMatrix::identity(5, 5))
            .unwrap()
            .similarity(&a, &b)
            .is_err()
    );
}

#[test]
fn difference_similarity_on_sequence_models() {
    let (a0, a1) = (lm(21, 3, 2, 1, 2, 2), lm(22, 3, 2, 1, 2, 2));
    let sim = ctx(3);
    assert!((sim.difference_similarity(&a0, &a1, &a0, &a1).unwrap() - 1.0).abs() < 1e-9);
    assert!((sim.difference_similarity(&a0, &a1, &a1, &a0).unwrap() + 1.0).abs() < 1e-9);
    let (b0, b1) = (lm(23, 3, 2, 1, 2, 2), lm(24, 3, 2, 1, 2, 2));
    let d = sim.difference_similarity(&a0, &a1, &b0, &b1).unwrap();
    assert!(d.abs() <= 1.0);
    assert!(matches!(
        TensorSimilarity::new().difference_similarity(&a0, &a1, &b0, &b1),
        Err(Error::MissingContext(_))
    ));
}

#[test]
fn forward_of_one_position_is_the_sequence_forward() {
    let model = lm(31, 3, 4, 2, 2, 2);
    let x = DMatrix::from_row_slice(1, 3, &[0.2, -0.5, 1.0]);
    let seq = model.forward_sequence(&x).unwrap();
    let one = model
        .forward(&DVector::from_vec(vec![0.2, -0.5, 1.0]))
        .unwrap();
    assert!((seq.row(0).transpose() - one).amax() < 1e-14);
    assert!(model.forward_sequence(&DMatrix::zeros(2, 4)).is_err());
    // A given mask must match the sequence length.
    let mut rng = common::rng(1);
    let masked = Model::builder()
        .block(
            attention(&mut rng, 3, 1, 2)
                .to_builder()
                .mask(Mask::Matrix(DMatrix::from_element(2, 2, 1.0)))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(masked.forward_sequence(&DMatrix::zeros(2, 3)).is_ok());
    assert!(matches!(
        masked.forward_sequence(&DMatrix::zeros(3, 3)),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        ctx(3).similarity(&masked, &masked),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn sequence_models_are_saved_as_sequence_models() {
    use tensor_similarity::io::{self, Layout};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seq.safetensors");
    let marked = Model::builder()
        .sequence()
        .block(Linear::new(DMatrix::identity(3, 3), None).unwrap())
        .build()
        .unwrap();
    io::save(&marked, &path, Layout::Described).unwrap();
    assert!(io::load(&path).unwrap().is_sequence());
    // Research layouts cannot mark one, so they refuse rather than drop it.
    let err = io::save(&marked, &path, Layout::EmbedBodyHead).unwrap_err();
    assert!(err.to_string().contains("sequence model"), "{err}");
    let model = lm(1, 3, 2, 1, 2, 1);
    io::save(&model, &path, Layout::Described).unwrap();
    let back = io::load(&path).unwrap();
    let sim = TensorSimilarity::new().with_context(2).unwrap();
    assert!((sim.similarity(&model, &back).unwrap() - 1.0).abs() < 1e-12);
}
