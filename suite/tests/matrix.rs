//! `similarity_matrix`: each norm once, each pair once, the same values as
//! pair-by-pair similarities; tiles of it, assembled, are the same matrix.

// The file fixtures are shared with the command-line test of the published
// crate, which keeps them.
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tensor_similarity::matrix::{
    pairwise_matrix, pairwise_tile, similarity_matrix, similarity_tile, squared_norms,
};
use tensor_similarity::{
    Error, LogScaled, Model, RecursiveSimilarity, Result, TensorSimilarity, weight_cosine,
};

/// The tensor similarity, counting the recursions it runs.
#[derive(Default)]
struct Counting {
    norms: AtomicUsize,
    products: AtomicUsize,
}

impl RecursiveSimilarity<f64> for Counting {
    fn inner_product(&self, a: &Model<f64>, b: &Model<f64>) -> Result<LogScaled> {
        self.products.fetch_add(1, Ordering::Relaxed);
        TensorSimilarity::new().inner_product(a, b)
    }
    fn squared_norm(&self, a: &Model<f64>) -> Result<LogScaled> {
        self.norms.fetch_add(1, Ordering::Relaxed);
        TensorSimilarity::new().inner_product(a, a)
    }
}

#[test]
fn each_norm_once_each_pair_once_and_the_same_values() {
    let models: Vec<Model<f64>> = (0..7).map(|i| embed_body_head(i, 1, 1.0)).collect();
    let metric = Counting::default();
    let calls = AtomicUsize::new(0);
    let m = similarity_matrix(&metric, &models, || {
        calls.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let n = models.len();
    assert_eq!(metric.norms.load(Ordering::Relaxed), n);
    assert_eq!(metric.products.load(Ordering::Relaxed), n * (n - 1) / 2);
    assert_eq!(calls.load(Ordering::Relaxed), n * (n - 1) / 2);
    for i in 0..n {
        assert_eq!(m[(i, i)], 1.0);
        for j in 0..n {
            assert_eq!(m[(i, j)], m[(j, i)]);
            if i != j {
                let direct = TensorSimilarity::new()
                    .similarity(&models[i], &models[j])
                    .unwrap();
                assert!((m[(i, j)] - direct).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn pairwise_matrix_matches_the_weight_cosine() {
    let models: Vec<Model<f64>> = (0..4).map(|i| bilinear_projection(i, 1.0)).collect();
    let m = pairwise_matrix(&models, || {}, |i, j| weight_cosine(&models[i], &models[j])).unwrap();
    for i in 0..4 {
        for j in 0..4 {
            let expected = if i == j {
                1.0
            } else {
                weight_cosine(&models[i], &models[j]).unwrap()
            };
            assert_eq!(m[(i, j)], expected);
        }
    }
}

#[test]
fn errors_come_back_and_small_inputs_work() {
    let models = vec![embed_body_head(1, 1, 1.0), bilinear_projection(2, 1.0)];
    let e = similarity_matrix(&TensorSimilarity::new(), &models, || {}).unwrap_err();
    assert!(matches!(e, Error::Incomparable(_)), "{e}");
    let one = similarity_matrix(&TensorSimilarity::new(), &models[..1], || {}).unwrap();
    assert_eq!(one.shape(), (1, 1));
    assert_eq!(one[(0, 0)], 1.0);
    let none = similarity_matrix(&TensorSimilarity::new(), &[] as &[Model<f64>], || {}).unwrap();
    assert_eq!(none.shape(), (0, 0));
}

/// Tiles of 0..3, 3..5, 5..7 on and above the diagonal, mirrored: the
/// matrix bit for bit, with each norm computed once and each pair once.
#[test]
fn tiles_assemble_into_the_matrix_with_each_norm_once() {
    let models: Vec<Model<f64>> = (0..7).map(|i| embed_body_head(20 + i, 1, 1.0)).collect();
    let full = similarity_matrix(&Counting::default(), &models, || {}).unwrap();
    let metric = Counting::default();
    let norms = squared_norms(&metric, &models).unwrap();
    let groups = [0..3, 3..5, 5..7];
    let mut out = nalgebra::DMatrix::from_element(7, 7, f64::NAN);
    let pairs = AtomicUsize::new(0);
    let tick = || {
        pairs.fetch_add(1, Ordering::Relaxed);
    };
    for (g, rows) in groups.iter().enumerate() {
        for cols in &groups[g..] {
            let (r, rn) = (&models[rows.clone()], &norms[rows.clone()]);
            let cols_given = (cols != rows).then(|| (&models[cols.clone()], &norms[cols.clone()]));
            let tile = similarity_tile(&metric, r, rn, cols_given, tick).unwrap();
            assert_eq!(tile.shape(), (rows.len(), cols.len()));
            for (i, gi) in rows.clone().enumerate() {
                for (j, gj) in cols.clone().enumerate() {
                    out[(gi, gj)] = tile[(i, j)];
                    out[(gj, gi)] = tile[(i, j)];
                }
            }
        }
    }
    assert_eq!(out, full);
    assert_eq!(metric.norms.load(Ordering::Relaxed), 7);
    assert_eq!(metric.products.load(Ordering::Relaxed), 7 * 6 / 2);
    assert_eq!(pairs.load(Ordering::Relaxed), 7 * 6 / 2);
}

#[test]
fn tiles_check_their_norms_and_pass_errors_on() {
    let models: Vec<Model<f64>> = (0..3).map(|i| embed_body_head(30 + i, 1, 1.0)).collect();
    let metric = TensorSimilarity::new();
    let norms = squared_norms(&metric, &models).unwrap();
    let e = similarity_tile(&metric, &models, &norms[..2], None, || {}).unwrap_err();
    assert!(e.to_string().contains("2 norms given for 3 models"), "{e}");
    let cols = Some((&models[..1], &norms[..0]));
    let e = similarity_tile(&metric, &models, &norms, cols, || {}).unwrap_err();
    assert!(e.to_string().contains("column norms"), "{e}");
    let zero = [LogScaled::ZERO; 3];
    let e = similarity_tile(&metric, &models, &zero, None, || {}).unwrap_err();
    assert!(matches!(e, Error::ZeroNorm(_)), "{e}");
    // The first error by pair order (row-major).
    let e = pairwise_tile(
        2,
        Some(2),
        || {},
        |i, j| {
            Err(Error::InvalidOption {
                what: "pair",
                reason: format!("{i},{j}"),
            })
        },
    )
    .unwrap_err();
    assert!(e.to_string().ends_with("0,0"), "{e}");
}
