//! Sizes from user input never wrap and never allocate without bound
//! (issue 26): a context, width or head count near `usize`'s limits is a
//! typed error or a value, never a panic or a corrupted buffer; a
//! comparison whose estimated peak memory exceeds its limit is refused
//! before it starts, naming the largest context that fits.

mod common;

use nalgebra::DMatrix;
use proptest::prelude::*;
use tensor_similarity::{
    Attention, Error, GaussianSimilarity, Linear, Mask, MemoryLimit, Model, RecursiveSimilarity,
    TensorBlock, TensorSimilarity,
};

/// A small two-layer bilinear-attention model (d = 4, 2 heads) in `T`.
fn attention_model<T: tensor_similarity::Real>(seed: u64, rotary: bool) -> Model<T> {
    let mut rng = common::rng(seed);
    let mut w =
        |r: usize, c: usize| common::gaussian_matrix(&mut rng, r, c, 0.5).map(T::from_f64_lossy);
    let mut block = || {
        let b = Attention::builder(2, w(4, 4), w(4, 4), w(4, 4), w(4, 4), w(4, 4), w(4, 4));
        let b = if rotary { b.rotary(100.0) } else { b };
        b.skip(1.0).build().unwrap()
    };
    // Attention is a block for f32 and f64; `into_shared` serves generic code.
    Model::builder()
        .shared_block(block().into_shared().unwrap())
        .shared_block(block().into_shared().unwrap())
        .build()
        .unwrap()
}

const HUGE: [usize; 5] = [1 << 60, (1 << 63) - 1, usize::MAX, 1_000_000_000, 100_000];

#[test]
fn huge_contexts_are_refused_before_anything_is_allocated() {
    let (a, b) = (
        attention_model::<f64>(1, true),
        attention_model::<f64>(2, true),
    );
    for n in HUGE {
        let tensor = TensorSimilarity::new().with_context(n).unwrap();
        for result in [
            tensor.similarity(&a, &b),
            RecursiveSimilarity::<f64>::inner_product(&tensor, &a, &b).map(|v| v.to_f64()),
            RecursiveSimilarity::<f64>::squared_norm(&tensor, &a).map(|v| v.to_f64()),
            tensor.cross_grams(&a, &b).map(|g| g.len() as f64),
            GaussianSimilarity::new()
                .with_context(n)
                .unwrap()
                .similarity(&a, &b),
        ] {
            match result {
                Err(Error::MemoryLimit {
                    context,
                    largest_context: Some(fits),
                    ..
                }) => {
                    assert_eq!(context, n);
                    // The attention step's memory grows as n² (its
                    // per-position-pair products), so a model of width 4
                    // fits a few thousand positions on a machine of tens of
                    // gigabytes, never a hundred thousand.
                    assert!(
                        fits < 20_000,
                        "{fits} positions of a tiny model fit in memory?"
                    );
                }
                other => panic!("context {n}: expected a memory limit error, got {other:?}"),
            }
        }
    }
    // In f32 too.
    let a32 = attention_model::<f32>(1, false);
    let e = TensorSimilarity::new()
        .with_context(1 << 60)
        .unwrap()
        .similarity(&a32, &a32);
    assert!(matches!(e, Err(Error::MemoryLimit { .. })), "{e:?}");
}

#[test]
fn the_largest_context_that_fits_does_fit() {
    let (a, b) = (
        attention_model::<f64>(3, true),
        attention_model::<f64>(4, true),
    );
    // The check adds 16 MiB for the process: 2 MiB are left for the step,
    // whose memory grows as n² (a few kB a position pair here).
    let limit = MemoryLimit::Bytes(18 << 20);
    let metric = TensorSimilarity::new()
        .with_context(64)
        .unwrap()
        .with_max_memory(limit);
    let Err(Error::MemoryLimit {
        largest_context: Some(fits),
        estimate,
        ..
    }) = metric.similarity(&a, &b)
    else {
        panic!("64 positions should not fit in 18 MiB");
    };
    assert!(estimate.starts_with("about "), "{estimate}");
    assert!((2..64).contains(&fits), "{fits}");
    let at = |n: usize| {
        TensorSimilarity::new()
            .with_context(n)
            .unwrap()
            .with_max_memory(limit)
    };
    let sim = at(fits).similarity(&a, &b).unwrap();
    assert!(sim.is_finite() && sim.abs() <= 1.0 + 1e-12);
    assert!(matches!(
        at(fits + 1).similarity(&a, &b),
        Err(Error::MemoryLimit { .. })
    ));
    // The estimate grows with the context, as the bisection assumes.
    let estimate = |n| at(n).memory_estimate(&a, &b).unwrap();
    assert!((1..40).all(|n| estimate(n) < estimate(n + 1)));
}

#[test]
fn the_error_names_the_estimate_the_limit_and_what_fits() {
    let a = attention_model::<f64>(5, false);
    let metric = TensorSimilarity::new()
        .with_context(1000)
        .unwrap()
        .with_max_memory(MemoryLimit::Bytes(1 << 30));
    let message = metric.similarity(&a, &a).unwrap_err().to_string();
    assert!(message.contains("context 1000"), "{message}");
    assert!(
        message.contains("TB") || message.contains("GB"),
        "{message}"
    );
    assert!(message.contains("the limit of 1.1 GB"), "{message}");
    assert!(
        message.contains("the largest context that fits is"),
        "{message}"
    );
    assert!(!message.contains('\n') && message.len() < 300, "{message}");
}

#[test]
fn vector_models_are_checked_too() {
    // A linear model's Gram matrices are tiny: any limit above the process
    // overhead passes, and one below it is refused with nothing that fits.
    let w = DMatrix::from_fn(3, 2, |i, j| (i + j) as f64);
    let m = Model::builder()
        .block(Linear::new(w, None).unwrap())
        .build()
        .unwrap();
    assert!(TensorSimilarity::new().similarity(&m, &m).is_ok());
    let tiny = TensorSimilarity::new().with_max_memory(MemoryLimit::Bytes(1000));
    assert!(matches!(
        tiny.similarity(&m, &m),
        Err(Error::MemoryLimit {
            largest_context: None,
            ..
        })
    ));
}

#[test]
fn a_direct_gram_step_at_a_huge_context_is_an_error() {
    let a = attention_model::<f64>(6, true);
    let block = &a.blocks()[0];
    let g = DMatrix::<f64>::identity(9, 9);
    for n in HUGE {
        let e = block.self_gram_step(&g, n).unwrap_err();
        assert!(
            matches!(e, Error::SizeOverflow { .. } | Error::Shape { .. }),
            "{n}: {e:?}"
        );
        let e = block.gram_step(&**block, &g, n).unwrap_err();
        assert!(
            matches!(e, Error::SizeOverflow { .. } | Error::Shape { .. }),
            "{n}: {e:?}"
        );
    }
    let w = DMatrix::from_fn(4, 4, |i, j| (i * j) as f64);
    let linear = Linear::new(w, None).unwrap();
    let g = DMatrix::<f64>::identity(5, 5);
    for n in HUGE {
        let e = linear.gram_step(&linear, &g, n).unwrap_err();
        assert!(
            matches!(e, Error::SizeOverflow { .. } | Error::Shape { .. }),
            "{n}: {e:?}"
        );
    }
}

#[test]
fn masks_too_large_to_exist_are_errors() {
    for mask in [Mask::Causal, Mask::None, Mask::Diagonal] {
        assert!(matches!(
            mask.weights(1 << 32),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            mask.weights(usize::MAX),
            Err(Error::SizeOverflow { .. })
        ));
        assert_eq!(mask.weights(3).unwrap().shape(), (3, 3));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Contexts anywhere up to usize::MAX, heads and widths near usize's
    /// limits (as matrices with an empty side, which exist whatever the
    /// other side claims): a typed error or a finite value, never a panic.
    #[test]
    fn sizes_near_usize_limits_give_an_error_or_a_value(
        log_n in 0u32..64,
        low in 0usize..4,
        heads_near_max in any::<bool>(),
        wide in prop::sample::select(vec![0usize, 1, 2, 3, 1 << 31, 1 << 62, usize::MAX - 1, usize::MAX]),
        gaussian in any::<bool>(),
    ) {
        let n = ((1usize << log_n) - 1).max(1) + low;
        let a = attention_model::<f64>(7, true);
        let value = if gaussian {
            GaussianSimilarity::new().with_context(n).unwrap().with_max_memory(MemoryLimit::Bytes(18 << 20)).similarity(&a, &a)
        } else {
            // 2 MiB beside the 16 MiB the check keeps for the process: the
            // contexts that fit stay small enough to run.
            TensorSimilarity::new().with_context(n).unwrap().with_max_memory(MemoryLimit::Bytes(18 << 20)).similarity(&a, &a)
        };
        match value {
            Ok(s) => prop_assert!((s - 1.0).abs() < 1e-9, "{s}"),
            Err(e) => prop_assert!(matches!(e, Error::MemoryLimit { .. }), "{e:?}"),
        }
        // Heads that cannot divide, or that divide an empty width.
        let heads = if heads_near_max { usize::MAX - low } else { wide.max(1) };
        let q = DMatrix::<f64>::zeros(0, 4);
        let built = Attention::builder(heads, q.clone(), q.clone(), q.clone(), q.clone(), q.clone(), DMatrix::zeros(4, 0)).build();
        if let Ok(att) = built {
            let g = DMatrix::<f64>::identity(5, 5);
            let _ = att.self_gram_step(&g, n);
        }
        // Linear maps from or to a width that an empty matrix claims.
        for (rows, cols) in [(0, wide), (wide, 0)] {
            if let Ok(l) = Linear::new(DMatrix::<f64>::zeros(rows, cols), None)
                && let Ok(m) = Model::builder().block(l).build()
            {
                let r = TensorSimilarity::new().with_max_memory(MemoryLimit::Bytes(64 << 20)).similarity(&m, &m);
                prop_assert!(r.is_err() || r.as_ref().is_ok_and(|s| s.is_finite()), "{r:?}");
            }
        }
    }
}

#[test]
fn a_matrix_counts_one_pair_per_thread() {
    use tensor_similarity::matrix::similarity_matrix;
    let models: Vec<Model<f64>> = (0..3).map(|s| attention_model(10 + s, true)).collect();
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    let at = |limit: MemoryLimit| {
        TensorSimilarity::new()
            .with_context(16)
            .unwrap()
            .with_max_memory(limit)
    };
    // One product's estimate (on one thread, `similarity` runs one at a time).
    let one = pool(1)
        .install(|| at(MemoryLimit::Machine).memory_estimate(&models[0], &models[1]))
        .unwrap();
    // Room for two products at once (with the check's 10 % and 16 MiB), not three.
    let limit = MemoryLimit::Bytes((2.2 * one) as u64 + (16 << 20) + 1024);
    let metric = at(limit);
    let two = pool(2).install(|| similarity_matrix(&metric, &models, || {}));
    assert!(two.is_ok(), "{two:?}");
    let three = pool(4).install(|| similarity_matrix(&metric, &models, || {}));
    assert!(matches!(three, Err(Error::MemoryLimit { .. })), "{three:?}");
    // A single pair fits on any pool: the check counts what runs at once.
    let pair = pool(4)
        .install(|| RecursiveSimilarity::<f64>::inner_product(&metric, &models[0], &models[1]));
    assert!(pair.is_ok(), "{pair:?}");
}

/// The work limit: a comparison whose estimated multiply–adds exceed it is
/// refused before it starts, naming the estimate and the largest context
/// within it, and that context runs.
#[test]
fn a_work_limit_refuses_by_name_and_the_context_within_it_runs() {
    let a = attention_model::<f64>(8, true);
    let b = attention_model::<f64>(9, true);
    let at = |n: usize| TensorSimilarity::new().with_context(n).unwrap();
    let estimate = |n: usize| at(n).work_estimate(&a, &b).unwrap();
    // No limit by default: the check passes whatever the estimate.
    assert_eq!(at(6).max_work(), None);
    assert!(at(6).similarity(&a, &b).is_ok());
    let limit = estimate(5) * 1.01;
    let metric = at(12).with_max_work(limit);
    assert_eq!(metric.max_work(), Some(limit));
    let Err(Error::WorkLimit {
        context,
        estimate: e,
        limit: l,
        largest_context: Some(fits),
    }) = metric.similarity(&a, &b)
    else {
        panic!("a limit below the estimate is refused");
    };
    assert_eq!((context, fits, l), (12, 5, limit));
    assert_eq!(e, estimate(12));
    assert!(at(fits).with_max_work(limit).similarity(&a, &b).is_ok());
    // One product alone is checked against its own estimate.
    assert!(at(5).with_max_work(limit).inner_product(&a, &b).is_ok());
    // The message names what to raise, in the library's spelling.
    let message = metric.similarity(&a, &b).unwrap_err().to_string();
    assert!(message.contains("context 12"), "{message}");
    assert!(
        message.contains("the largest context within it is 5"),
        "{message}"
    );
    assert!(
        message.contains("TensorSimilarity::with_max_work"),
        "{message}"
    );
    // NaN or a limit below one position's work refuses everything.
    for limit in [f64::NAN, -1.0, 0.0] {
        assert!(matches!(
            at(1).with_max_work(limit).similarity(&a, &b),
            Err(Error::WorkLimit {
                largest_context: None,
                ..
            })
        ));
    }
}

/// The estimate follows the attention step's cost model: its pair
/// contraction grows as `n⁴`, so doubling a long context multiplies the
/// work by close to 16, a short one by less (the `n²` per-leg GEMMs).
#[test]
fn the_work_estimate_grows_as_the_cost_model() {
    let a = attention_model::<f64>(10, false);
    let work = |n: usize| {
        TensorSimilarity::new()
            .with_context(n)
            .unwrap()
            .work_estimate(&a, &a)
            .unwrap()
    };
    assert!((1..40).all(|n| work(n) < work(n + 1)));
    let long = work(512) / work(256);
    assert!((15.0..16.0).contains(&long), "{long}");
    let short = work(2) / work(1);
    assert!((4.0..12.0).contains(&short), "{short}");
    // A block's own estimate, as the trait reports it, at one position.
    let block = &a.blocks()[0];
    assert!(block.gram_step_work(&**block, 1) > 0.0);
}
