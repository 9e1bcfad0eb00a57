//! Numerical stability: deep models whose raw inner products overflow f64,
//! combinations of inner products, and f32 against f64.

mod common;

use approx::assert_abs_diff_eq;

use common::{Layer, LinearParams, Net, Options, random_cycle, rng};
use nalgebra::DMatrix;
use rand::Rng;
use tensor_similarity::{RecursiveSimilarity, TensorSimilarity, inner_product, similarity};

/// Eight bilinear blocks with weights of scale 25.
fn deep_net(seed: u64) -> Net {
    let o = Options {
        biases: true,
        down: true,
        residual: 1.0,
        fused: false,
        scale: 25.0,
    };
    Net::random(&mut rng(seed), 3, 3, &[4; 8], 2, o)
}

/// The same function through every symmetry at once.
fn twin(net: &Net, seed: u64) -> Net {
    let mut r = rng(seed);
    let mut t = net.clone();
    for i in 1..net.layers.len() - 1 {
        let perm = random_cycle(&mut r, 4);
        t.permute_hidden(i, &perm);
        let alpha: Vec<f64> = (0..4).map(|_| r.random_range(0.25..4.0)).collect();
        let beta: Vec<f64> = (0..4).map(|_| r.random_range(0.25..4.0)).collect();
        t.rescale_hidden(i, &alpha, &beta);
        t.swap_factors(i, &[0, 2]);
    }
    t
}

#[test]
fn eight_blocks_of_scale_25_match_their_twin_without_overflow() {
    let a = deep_net(1);
    let b = twin(&a, 2);
    let (ma, mb) = (a.model::<f64>(), b.model::<f64>());
    let ip = inner_product(&ma, &mb).unwrap();
    // The raw value is far beyond f64: e^709 is the largest finite exponent.
    assert!(ip.ln_abs() > 1000.0, "ln ⟨A,B⟩ = {}", ip.ln_abs());
    assert_eq!(ip.to_f64(), f64::INFINITY);
    let sim = similarity(&ma, &mb).unwrap();
    assert_abs_diff_eq!(sim, 1.0, epsilon = 1e-8);
    // An unrelated deep model is still comparable.
    let c = deep_net(3).model::<f64>();
    let other = similarity(&ma, &c).unwrap();
    assert!(other.abs() < 0.999 && other.is_finite());
}

#[test]
fn f32_agrees_with_f64() {
    for seed in 0..8 {
        let mut r = rng(100 + seed);
        let o = Options {
            biases: seed % 2 == 0,
            residual: if seed % 3 == 0 { 0.7 } else { 1.0 },
            ..Options::default()
        };
        let a = Net::random(&mut r, 3, 4, &[5, 3], 2, o);
        let b = Net::random(&mut r, 3, 3, &[4, 6], 2, o);
        let s64 = similarity(&a.model::<f64>(), &b.model::<f64>()).unwrap();
        let s32 = similarity(&a.model::<f32>(), &b.model::<f32>()).unwrap();
        assert!(
            (s64 - s32).abs() < 1e-4,
            "seed {seed}: f64 {s64}, f32 {s32}"
        );
    }
    // And on the deep twin, where f32 must not overflow either.
    let a = deep_net(1);
    let b = twin(&a, 2);
    let s32 = similarity(&a.model::<f32>(), &b.model::<f32>()).unwrap();
    assert_abs_diff_eq!(s32, 1.0, epsilon = 1e-4);
}

/// The bilinear block of `[L_1; L_0]`, `[R_1; R_0]`, `[D_1, −D_0]`,
/// `b_D1 − b_D0`: its function is `f_1 − f_0`, so it is the difference model.
fn difference(one: &Net, zero: &Net) -> Net {
    let (Layer::Bilinear(p1), Layer::Bilinear(p0)) = (&one.layers[0], &zero.layers[0]) else {
        unreachable!()
    };
    let stack = |a: &DMatrix<f64>, b: &DMatrix<f64>| {
        let mut m = DMatrix::zeros(a.nrows() + b.nrows(), a.ncols());
        m.rows_mut(0, a.nrows()).copy_from(a);
        m.rows_mut(a.nrows(), b.nrows()).copy_from(b);
        m
    };
    let stack_v = |a: &nalgebra::DVector<f64>, b: &nalgebra::DVector<f64>| {
        nalgebra::DVector::from_iterator(a.len() + b.len(), a.iter().chain(b.iter()).copied())
    };
    let (d1, d0) = (p1.d.clone().unwrap(), p0.d.clone().unwrap());
    let mut d = DMatrix::zeros(d1.nrows(), d1.ncols() + d0.ncols());
    d.columns_mut(0, d1.ncols()).copy_from(&d1);
    d.columns_mut(d1.ncols(), d0.ncols()).copy_from(&(-d0));
    let mut p = p1.clone();
    p.l = stack(&p1.l, &p0.l);
    p.r = stack(&p1.r, &p0.r);
    p.d = Some(d);
    p.bl = Some(stack_v(p1.bl.as_ref().unwrap(), p0.bl.as_ref().unwrap()));
    p.br = Some(stack_v(p1.br.as_ref().unwrap(), p0.br.as_ref().unwrap()));
    p.bd = Some(p1.bd.as_ref().unwrap() - p0.bd.as_ref().unwrap());
    Net {
        layers: vec![Layer::Bilinear(p)],
    }
}

/// `TensorSimilarity::difference_similarity` of `[A0, A1, B0, B1]`.
fn difference_similarity(nets: [&Net; 4]) -> f64 {
    let [a0, a1, b0, b1] = nets.map(|n| n.model::<f64>());
    TensorSimilarity::new()
        .difference_similarity(&a0, &a1, &b0, &b1)
        .unwrap()
}

#[test]
fn difference_similarity_matches_the_difference_models() {
    let o = Options::default();
    let single = |seed| Net {
        layers: vec![Layer::Bilinear(common::BilinearParams::random(
            &mut rng(seed),
            3,
            4,
            2,
            o,
        ))],
    };
    let (a0, a1, b0, b1) = (single(10), single(11), single(12), single(13));
    let expected = similarity(
        &difference(&a1, &a0).model::<f64>(),
        &difference(&b1, &b0).model::<f64>(),
    )
    .unwrap();
    let found = difference_similarity([&a0, &a1, &b0, &b1]);
    assert_abs_diff_eq!(found, expected, epsilon = 1e-10);
}

#[test]
fn difference_similarity_survives_raw_products_beyond_f64() {
    // Fine-tuning only the head of a deep scale-25 model: the difference of two
    // such models is the same body with the head W_1 − W_0, a model of its own.
    let base_a = deep_net(20);
    let base_b = twin(&base_a, 21);
    let head = |net: &Net, seed| {
        let mut n = net.clone();
        let last = n.layers.len() - 1;
        n.layers[last] = Layer::Linear(LinearParams::random(&mut rng(seed), 2, 3, false, 1.0));
        n
    };
    let (a0, a1, b0, b1) = (
        head(&base_a, 30),
        head(&base_a, 31),
        head(&base_b, 32),
        head(&base_b, 33),
    );
    let delta = |one: &Net, zero: &Net| {
        let mut n = one.clone();
        let last = n.layers.len() - 1;
        let (Layer::Linear(w1), Layer::Linear(w0)) = (&one.layers[last], &zero.layers[last]) else {
            unreachable!()
        };
        n.layers[last] = Layer::Linear(LinearParams {
            w: &w1.w - &w0.w,
            b: None,
        });
        n
    };
    let expected = similarity(
        &delta(&a1, &a0).model::<f64>(),
        &delta(&b1, &b0).model::<f64>(),
    )
    .unwrap();
    let metric = TensorSimilarity::new();
    assert!(
        metric
            .inner_product(&a1.model::<f64>(), &b1.model::<f64>())
            .unwrap()
            .ln_abs()
            > 1000.0
    );
    let found = difference_similarity([&a0, &a1, &b0, &b1]);
    assert_abs_diff_eq!(found, expected, epsilon = 1e-10);
}

/// `depth` copies of one contractive linear block without bias (as a
/// metadata file that names one tensor for every block reads).
fn contractive_stack(depth: usize) -> tensor_similarity::Model<f64> {
    use tensor_similarity::{Linear, Model};
    let w = nalgebra::DMatrix::from_fn(4, 4, |i, j| {
        0.3 * (((i * 7 + j * 3) % 5) as f64 - 2.0) / 2.0
    });
    let block: std::sync::Arc<dyn tensor_similarity::TensorBlock<f64>> =
        std::sync::Arc::new(Linear::new(w, None).unwrap());
    (0..depth)
        .fold(Model::builder(), |m, _| m.shared_block(block.clone()))
        .build()
        .unwrap()
}

#[test]
fn a_map_shrunk_beyond_one_scale_is_not_called_zero() {
    use tensor_similarity::{Error, GaussianSimilarity, RecursiveSimilarity, TensorSimilarity};
    // 200 blocks: the map is 1e-110 of the constant, still resolved.
    let m = contractive_stack(200);
    assert!((TensorSimilarity::new().similarity(&m, &m).unwrap() - 1.0).abs() < 1e-12);
    assert!((GaussianSimilarity::new().similarity(&m, &m).unwrap() - 1.0).abs() < 1e-12);
    // 1000 blocks: below 1e-292 of the constant. Both metrics used to read
    // an exact zero there and call the norm zero.
    let m = contractive_stack(1000);
    for result in [
        TensorSimilarity::new().similarity(&m, &m),
        GaussianSimilarity::new().similarity(&m, &m),
    ] {
        match result {
            Err(Error::NumericalBreakdown { block, reason }) => {
                assert!((200..1000).contains(&block), "{block}");
                assert!(reason.contains("not zero"), "{reason}");
            }
            other => panic!("expected a numerical breakdown, got {other:?}"),
        }
    }
}
