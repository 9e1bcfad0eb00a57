//! The Gaussian metric at depth (SPEC §3): vector chains of linear and
//! bilinear blocks up to degree 8 are computed exactly, by the Wick sum over
//! the legs of both models' trees. Checked against the end-to-end
//! polynomial expanded by brute force (`gaussian_oracle::polynomial`), with
//! biases, residuals, different widths and depths, a mean and a
//! covariance; against the closure, which it must differ from at depth;
//! and under the symmetries of SPEC §2.

mod common;
mod gaussian_oracle;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, gaussian_vector, rng};
use gaussian_oracle::polynomial;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use seq_library::vector_model;
use seq_oracle::{BilinearParams, Block, LinearParams, SeqNet};
use tensor_similarity::{GaussianSimilarity, RecursiveSimilarity};

/// A residual bilinear block `m → m` (lerp residual `s`, all biases).
fn residual(rng: &mut StdRng, m: usize, h: usize, s: f64) -> Block {
    Block::Bilinear(BilinearParams::random(rng, m, h, true, s, 1.0))
}

/// A bilinear block `m → n` without residual, all biases.
fn bilinear(rng: &mut StdRng, m: usize, h: usize, n: usize) -> Block {
    let mut p = BilinearParams::random(rng, m, h, true, 1.0, 1.0);
    p.d = Some(gaussian_matrix(rng, n, h, 1.0 / (h as f64).sqrt()));
    p.bd = Some(gaussian_vector(rng, n, 0.5));
    Block::Bilinear(p)
}

fn linear(rng: &mut StdRng, m: usize, n: usize) -> Block {
    Block::Linear(LinearParams::random(rng, n, m, true, 1.0))
}

/// A non-standard input law on `d` coordinates: `μ` and a factor `L`.
fn law(rng: &mut StdRng, d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let mu = gaussian_vector(rng, d, 0.5);
    let l = gaussian_matrix(rng, d, d, 0.5) + DMatrix::identity(d, d);
    (mu, l)
}

fn metric(mu: &DVector<f64>, l: &DMatrix<f64>) -> GaussianSimilarity {
    GaussianSimilarity::new()
        .with_input(mu.clone(), l * l.transpose())
        .unwrap()
}

/// The library's three inner products.
fn products(m: &GaussianSimilarity, a: &SeqNet, b: &SeqNet) -> [f64; 3] {
    let (ma, mb) = (vector_model(a), vector_model(b));
    [
        m.inner_product(&ma, &mb).unwrap().to_f64(),
        m.squared_norm(&ma).unwrap().to_f64(),
        m.squared_norm(&mb).unwrap().to_f64(),
    ]
}

/// Rounding of sums of up to a few thousand terms of mixed sign in `f64`:
/// 1e-10 relative to the largest of the three (the oracle's own error is far below).
fn assert_close(got: [f64; 3], want: [f64; 3], what: &str) {
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-10 * scale,
            "{what}: got {got:?}, the polynomial gives {want:?}"
        );
    }
}

#[test]
fn depth_two_matches_the_polynomial() {
    let mut rng = rng(2501);
    for case in 0..4 {
        let d = 2 + case % 2;
        let (mu, l) = law(&mut rng, d);
        let a = SeqNet {
            blocks: vec![residual(&mut rng, d, 3, 0.7), bilinear(&mut rng, d, 2, 2)],
        };
        // B: other widths, a linear map in between, another depth of linears.
        let b = SeqNet {
            blocks: vec![
                bilinear(&mut rng, d, 2, 3),
                linear(&mut rng, 3, 2),
                residual(&mut rng, 2, 3, 0.4),
            ],
        };
        let want = polynomial::exact(&a, &b, &mu, &l);
        let m = metric(&mu, &l);
        assert!(m.is_exact(&vector_model(&a), &vector_model(&b)));
        assert_close(products(&m, &a, &b), want, &format!("case {case}"));
        let r = m.report(&vector_model(&a), &vector_model(&b)).unwrap();
        assert!(r.exact);
        assert!((r.similarity - want[0] / (want[1] * want[2]).sqrt()).abs() < 1e-10);
    }
}

#[test]
fn depth_three_matches_the_polynomial() {
    let mut rng = rng(2502);
    for case in 0..2 {
        let d = 2;
        let (mu, l) = if case == 0 {
            (DVector::zeros(d), DMatrix::identity(d, d))
        } else {
            law(&mut rng, d)
        };
        let a = SeqNet {
            blocks: vec![
                residual(&mut rng, d, 2, 0.6),
                bilinear(&mut rng, d, 2, 3),
                linear(&mut rng, 3, 2),
                residual(&mut rng, 2, 2, 0.5),
            ],
        };
        let b = SeqNet {
            blocks: vec![
                bilinear(&mut rng, d, 3, 2),
                residual(&mut rng, 2, 2, 0.8),
                bilinear(&mut rng, 2, 2, 2),
            ],
        };
        let want = polynomial::exact(&a, &b, &mu, &l);
        let m = metric(&mu, &l);
        assert_close(products(&m, &a, &b), want, &format!("case {case}"));
    }
}

// ------------------------------------------------- closure and exact

/// One bilinear block: the closure is exact and equals the polynomial; two
/// and three: the exact value does and the closure does not (asserted).
#[test]
fn the_closure_is_exact_at_one_block_only() {
    let mut rng = rng(2503);
    let d = 2;
    let (mu, l) = law(&mut rng, d);
    let closure = GaussianSimilarity::closure()
        .with_input(mu.clone(), &l * l.transpose())
        .unwrap();
    let exact = metric(&mu, &l);
    let one = |rng: &mut StdRng| SeqNet {
        blocks: vec![bilinear(rng, d, 3, 2), linear(rng, 2, 2)],
    };
    let (a, b) = (one(&mut rng), one(&mut rng));
    let want = polynomial::exact(&a, &b, &mu, &l);
    assert_close(products(&closure, &a, &b), want, "closure, one block");
    assert_close(products(&exact, &a, &b), want, "exact, one block");
    for depth in [2, 3] {
        let deep = |rng: &mut StdRng| SeqNet {
            blocks: (0..depth).map(|_| residual(rng, d, 2, 0.7)).collect(),
        };
        let (a, b) = (deep(&mut rng), deep(&mut rng));
        let want = polynomial::exact(&a, &b, &mu, &l);
        assert_close(products(&exact, &a, &b), want, "exact at depth");
        let got = products(&closure, &a, &b);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(
            got.iter()
                .zip(&want)
                .any(|(g, w)| (g - w).abs() > 1e-3 * scale),
            "depth {depth}: the closure {got:?} should not be exact ({want:?})"
        );
        assert!(!closure.is_exact(&vector_model(&a), &vector_model(&b)));
    }
}

// ------------------------------------------------- invariances (SPEC §2)

/// Hidden units permuted, rescaled (`L` row by `c`, `R` row by `c'`, `D`
/// column by `1/(c c')`), one unit's `L` and `R` swapped.
fn hidden_twin(
    p: &BilinearParams,
    perm: &[usize],
    scales: &[(f64, f64)],
    swap: usize,
) -> BilinearParams {
    let h = p.hidden();
    let mut q = p.clone();
    for (new, &old) in perm.iter().enumerate() {
        let (c, c2) = scales[new];
        let (lrow, rrow) = if old == swap {
            (&p.r, &p.l)
        } else {
            (&p.l, &p.r)
        };
        let (bl, br) = if old == swap {
            (&p.br, &p.bl)
        } else {
            (&p.bl, &p.br)
        };
        q.l.row_mut(new).copy_from(&(lrow.row(old) * c));
        q.r.row_mut(new).copy_from(&(rrow.row(old) * c2));
        if let (Some(qb), Some(b)) = (q.bl.as_mut(), bl) {
            qb[new] = b[old] * c;
        }
        if let (Some(qb), Some(b)) = (q.br.as_mut(), br) {
            qb[new] = b[old] * c2;
        }
        let down = p.d.clone().unwrap_or_else(|| DMatrix::identity(h, h));
        q.d.get_or_insert_with(|| DMatrix::identity(h, h))
            .column_mut(new)
            .copy_from(&(down.column(old) / (c * c2)));
    }
    q
}

/// A random twin of a chain through every symmetry of SPEC §2: each block's
/// hidden units, and an invertible change of basis between two blocks
/// without residual.
fn twin(rng: &mut StdRng, net: &SeqNet) -> SeqNet {
    use rand::Rng;
    use rand::seq::SliceRandom;
    let mut blocks: Vec<Block> = net
        .blocks
        .iter()
        .map(|b| match b {
            Block::Bilinear(p) => {
                let h = p.hidden();
                let mut perm: Vec<usize> = (0..h).collect();
                perm.shuffle(rng);
                let scales: Vec<(f64, f64)> = (0..h)
                    .map(|_| (rng.random_range(0.5..2.0), -rng.random_range(0.5..2.0)))
                    .collect();
                Block::Bilinear(hidden_twin(p, &perm, &scales, rng.random_range(0..h)))
            }
            other => other.clone(),
        })
        .collect();
    for i in 0..blocks.len() - 1 {
        let (left, right) = blocks.split_at_mut(i + 1);
        if let (Block::Bilinear(p), Block::Bilinear(q)) = (&mut left[i], &mut right[0])
            && p.s == 1.0
            && q.s == 1.0
        {
            let n = p.output_width();
            let m = gaussian_matrix(rng, n, n, 0.4) + DMatrix::identity(n, n);
            let inv = m.clone().try_inverse().unwrap();
            p.d = Some(&m * p.d.as_ref().unwrap());
            p.bd = p.bd.as_ref().map(|b| &m * b);
            q.l = &q.l * &inv;
            q.r = &q.r * &inv;
        }
    }
    SeqNet { blocks }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// A twin through every symmetry is at similarity 1 (to 1e-9), at
    /// depth 2 and 3, under a shifted, correlated input.
    #[test]
    fn a_twin_is_at_similarity_one(seed in 0u64..1_000_000, depth in 2usize..=3) {
        let mut rng = rng(seed);
        let d = 2;
        let (mu, l) = law(&mut rng, d);
        let mut blocks = vec![bilinear(&mut rng, d, 2, 3), bilinear(&mut rng, 3, 2, 2)];
        if depth == 3 {
            blocks.push(residual(&mut rng, 2, 2, 0.6));
        }
        let a = SeqNet { blocks };
        let b = twin(&mut rng, &a);
        let m = metric(&mu, &l);
        let (ma, mb) = (vector_model(&a), vector_model(&b));
        let s = m.similarity(&ma, &mb).unwrap();
        proptest::prop_assert!((s - 1.0).abs() < 1e-9, "similarity {s}");
        proptest::prop_assert!(m.is_exact(&ma, &mb));
        // Not vacuous: another random chain is not at 1.
        let c = SeqNet { blocks: a.blocks.iter().map(|_| bilinear(&mut rng, 2, 2, 2)).collect() };
        let c = SeqNet { blocks: { let mut b = c.blocks; b[0] = bilinear(&mut rng, d, 2, 3); b[1] = bilinear(&mut rng, 3, 2, 2); b } };
        let other = m.similarity(&ma, &vector_model(&c)).unwrap();
        proptest::prop_assert!(other < 1.0 - 1e-6, "an unrelated chain at {other}");
    }
}

/// A cubic CP block after a bilinear one (degree 6) against a linear model
/// (degree 1) and a chain of two bilinear blocks: orders other than two,
/// and a tree of one leaf.
#[test]
fn other_orders_match_the_polynomial() {
    use std::sync::Arc;
    use tensor_similarity::{CpBlock, Model, TensorBlock};
    let mut rng = rng(2504);
    let d = 2;
    let (mu, l) = law(&mut rng, d);
    let first = SeqNet {
        blocks: vec![bilinear(&mut rng, d, 2, 2)],
    };
    // The cubic block: term 0 keeps the constant, terms 1..=2 are random.
    let u: Vec<DMatrix<f64>> = (0..3)
        .map(|_| {
            let mut u = gaussian_matrix(&mut rng, 3, 3, 0.7);
            u.row_mut(0).fill(0.0);
            u[(0, 0)] = 1.0;
            u
        })
        .collect();
    let mut down = gaussian_matrix(&mut rng, 3, 3, 0.7);
    down.row_mut(0).fill(0.0);
    down[(0, 0)] = 1.0;
    let cubic = CpBlock::new(u.clone(), down.clone()).unwrap();
    let mut blocks: Vec<Arc<dyn TensorBlock<f64>>> = vector_model(&first).blocks().to_vec();
    blocks.push(Arc::new(cubic));
    let a = Model::new(blocks).unwrap();
    let pa = polynomial::cp_step(&polynomial::expand(&first, &mu, &l), &u, &down, d);

    let lin = SeqNet {
        blocks: vec![linear(&mut rng, d, 2)],
    };
    let deep = SeqNet {
        blocks: vec![bilinear(&mut rng, d, 2, 2), residual(&mut rng, 2, 3, 0.5)],
    };
    let m = metric(&mu, &l);
    for b in [&lin, &deep] {
        let pb = polynomial::expand(b, &mu, &l);
        let want = [
            polynomial::expectation(&pa, &pb),
            polynomial::expectation(&pa, &pa),
            polynomial::expectation(&pb, &pb),
        ];
        let mb = vector_model(b);
        assert!(m.is_exact(&a, &mb));
        let got = [
            m.inner_product(&a, &mb).unwrap().to_f64(),
            m.squared_norm(&a).unwrap().to_f64(),
            m.squared_norm(&mb).unwrap().to_f64(),
        ];
        assert_close(got, want, "cubic after bilinear");
    }
}

// ------------------------------------------------- limits

/// Beyond its work limit the exact sum gives way to the closure, and says
/// so; beyond the memory limit it is refused with an error naming the
/// closure and Monte Carlo.
#[test]
fn limits_are_stated() {
    use tensor_similarity::{Error, MemoryLimit, Spelling};
    let mut rng = rng(2505);
    let d = 2;
    let deep = |rng: &mut StdRng| SeqNet {
        blocks: vec![residual(rng, d, 3, 0.7), residual(rng, d, 3, 0.4)],
    };
    let (a, b) = (vector_model(&deep(&mut rng)), vector_model(&deep(&mut rng)));
    let exact = GaussianSimilarity::new();
    let capped = GaussianSimilarity::new().with_exact_work(0.0);
    let closure = GaussianSimilarity::closure();
    assert!(exact.is_exact(&a, &b));
    assert!(!capped.is_exact(&a, &b));
    let report = capped.report(&a, &b).unwrap();
    assert!(!report.exact);
    assert_eq!(report.similarity, closure.similarity(&a, &b).unwrap());
    assert_ne!(report.similarity, exact.similarity(&a, &b).unwrap());

    let tight = GaussianSimilarity::new().with_max_memory(MemoryLimit::Bytes(1000));
    let err = tight.similarity(&a, &b).unwrap_err();
    assert!(matches!(err, Error::ExactGaussianMemory { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("GaussianSimilarity::closure()") && text.contains("GaussianMonteCarlo"),
        "{text}"
    );
    let cli = err.spelled(Spelling::CommandLine).to_string();
    assert!(
        cli.contains("--metric gaussian-closure") && cli.contains("--metric gaussian-mc"),
        "{cli}"
    );
    assert!(matches!(
        tight.squared_norm(&a),
        Err(Error::ExactGaussianMemory { .. })
    ));
}
