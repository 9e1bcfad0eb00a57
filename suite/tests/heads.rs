//! Head paths (SPEC §9) against the dense oracle of `tests/seq_oracle`.
//!
//! Each head path is built from its definition on the oracle's plain data
//! (`head_path` below: the blocks before the head's unchanged, the head's
//! block with the other heads' `O` columns zero, no `o` bias and `r = 0`,
//! later blocks reduced to their skip terms, the last block unchanged), and
//! its inner products are the oracle's dense per-block recursion. Nothing
//! is shared with the library, whose head paths come out of its one
//! attention step per block.
//!
//! Tolerances as in `attention_oracle.rs`: cosines to `1e-10`, raw inner
//! products to `1e-10 · √(⟨A_h,A_h⟩⟨B_h',B_h'⟩)`.

mod common;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, random_cycle_from_shuffle, rng};
use nalgebra::{DMatrix, DVector};
use rand::Rng;
use seq_oracle::{AttnOptions, AttnParams, BilinearParams, Block, LinearParams, SeqNet};
use std::cmp::Ordering;
use tensor_similarity::{
    GaussianMonteCarlo, GaussianSimilarity, HeadPathSimilarity, RecursiveSimilarity,
    TensorSimilarity,
};

const TOL: f64 = 1e-10;

/// The path of head `h` of the attention block at `i`, by SPEC §9's words.
fn head_path(net: &SeqNet, i: usize, h: usize) -> SeqNet {
    let last = net.blocks.len() - 1;
    let blocks = net
        .blocks
        .iter()
        .enumerate()
        .map(|(j, block)| match (j.cmp(&i), block) {
            (Ordering::Less, _) => block.clone(),
            (Ordering::Equal, Block::Attention(p)) => {
                let mut p = p.clone();
                let ev = p.ev();
                for c in 0..p.o.ncols() {
                    if c / ev != h {
                        p.o.column_mut(c).fill(0.0);
                    }
                }
                p.bo = None;
                p.skip = Some(0.0);
                Block::Attention(p)
            }
            (Ordering::Greater, _) if j == last => block.clone(),
            (Ordering::Greater, Block::Attention(p)) => {
                let mut p = p.clone();
                p.skip = Some(p.r());
                p.alpha = Some(0.0);
                Block::Attention(p)
            }
            (Ordering::Greater, Block::Bilinear(p)) => {
                // (1 − s)·x: the factors and every bias gone.
                let mut p = p.clone();
                p.l.fill(0.0);
                p.r.fill(0.0);
                (p.bl, p.br, p.bd) = (None, None, None);
                Block::Bilinear(p)
            }
            (_, other) => panic!("block {j} has no head or skip term here: {other:?}"),
        })
        .collect();
    SeqNet { blocks }
}

fn heads_of(net: &SeqNet, i: usize) -> usize {
    match &net.blocks[i] {
        Block::Attention(p) => p.heads,
        _ => panic!("block {i} is not attention"),
    }
}

/// The library's head paths of `a` and `b` against the oracle's, every
/// entry of every attention block.
fn check(a: &SeqNet, b: &SeqNet, n: usize, what: &str) {
    let metric = TensorSimilarity::new().with_context(n).unwrap();
    let found = metric
        .heads(&seq_library::model(a), &seq_library::model(b))
        .unwrap();
    let blocks: Vec<usize> = (0..a.blocks.len())
        .filter(|&i| matches!(a.blocks[i], Block::Attention(_)))
        .collect();
    assert_eq!(found.len(), blocks.len(), "{what}");
    for (paths, &i) in found.iter().zip(&blocks) {
        assert_eq!(paths.block, i, "{what}");
        let (ha, hb) = (heads_of(a, i), heads_of(b, i));
        assert_eq!(paths.inner.shape(), (ha, hb), "{what}, block {i}");
        let ta: Vec<_> = (0..ha)
            .map(|h| seq_oracle::tensors(&head_path(a, i, h), n))
            .collect();
        let tb: Vec<_> = (0..hb)
            .map(|h| seq_oracle::tensors(&head_path(b, i, h), n))
            .collect();
        let aa: Vec<f64> = ta.iter().map(|t| seq_oracle::inner_of(t, t)).collect();
        let bb: Vec<f64> = tb.iter().map(|t| seq_oracle::inner_of(t, t)).collect();
        for (side, found, oracle) in [("A", &paths.norms_a, &aa), ("B", &paths.norms_b, &bb)] {
            for (h, (found, oracle)) in found.iter().zip(oracle).enumerate() {
                let err = (found.to_f64() - oracle).abs() / oracle;
                assert!(
                    err < TOL,
                    "{what}, block {i}, ⟨{side}_{h},{side}_{h}⟩: {err:e}"
                );
            }
        }
        for h in 0..ha {
            for h2 in 0..hb {
                let ab = seq_oracle::inner_of(&ta[h], &tb[h2]);
                let scale = (aa[h] * bb[h2]).sqrt();
                let inner = paths.inner[(h, h2)].to_f64();
                let cosine = paths.cosine[(h, h2)];
                assert!(
                    (inner - ab).abs() <= TOL * scale,
                    "{what}, n {n}, block {i}, heads ({h}, {h2}): inner {inner}, oracle {ab}"
                );
                assert!(
                    (cosine - ab / scale).abs() <= TOL,
                    "{what}, n {n}, block {i}, heads ({h}, {h2}): cosine {cosine}, oracle {}",
                    ab / scale
                );
            }
        }
    }
}

/// `embed (d_in → d)`, the given blocks, `head (d → d_out)`.
fn wrapped(r: &mut rand::rngs::StdRng, d_in: usize, d: usize, middle: Vec<Block>) -> SeqNet {
    let mut blocks = vec![Block::Linear(LinearParams::random(r, d, d_in, true, 1.0))];
    blocks.extend(middle);
    blocks.push(Block::Linear(LinearParams::random(r, 2, d, true, 1.0)));
    SeqNet { blocks }
}

fn attention(r: &mut rand::rngs::StdRng, d: usize, o: &AttnOptions) -> Block {
    Block::Attention(AttnParams::random(r, d, o))
}

#[test]
fn one_layer_with_biases_rotary_and_different_head_counts() {
    for n in 1..=3 {
        let mut r = rng(900 + n as u64);
        let o = AttnOptions {
            alpha: Some(0.6),
            skip: Some(1.0),
            ..AttnOptions::default()
        };
        let middle = vec![attention(&mut r, 3, &o)];
        let a = wrapped(&mut r, 2, 3, middle);
        let other = AttnOptions {
            heads: 3,
            ev: 1,
            rotary: Some(500.0),
            ..o.clone()
        };
        let middle = vec![attention(&mut r, 4, &other)];
        let b = wrapped(&mut r, 2, 4, middle);
        check(&a, &b, n, "one layer");
    }
}

#[test]
fn two_layers_every_head_of_both() {
    for n in 1..=2 {
        let mut r = rng(910 + n as u64);
        let o1 = AttnOptions {
            alpha: Some(0.5),
            ..AttnOptions::default()
        };
        let o2 = AttnOptions {
            alpha: Some(0.3),
            skip: Some(1.0),
            rotary: None,
            heads: 3,
            e: 1,
            ..AttnOptions::default()
        };
        let middle = vec![attention(&mut r, 3, &o1), attention(&mut r, 3, &o2)];
        let a = wrapped(&mut r, 2, 3, middle);
        let one_head = AttnOptions {
            heads: 1,
            ..o2.clone()
        };
        let middle = vec![attention(&mut r, 2, &one_head), attention(&mut r, 2, &o1)];
        let b = wrapped(&mut r, 2, 2, middle);
        check(&a, &b, n, "two layers");
    }
}

#[test]
fn three_layers_with_a_residual_bilinear_between() {
    let n = 2;
    let mut r = rng(920);
    let o = AttnOptions {
        alpha: Some(0.4),
        e: 2,
        ev: 1,
        ..AttnOptions::default()
    };
    let mlp = |r: &mut rand::rngs::StdRng| {
        Block::Bilinear(BilinearParams::random(r, 2, 2, true, 0.7, 1.0))
    };
    let layers = |r: &mut rand::rngs::StdRng| {
        let first = attention(r, 2, &o);
        let between = mlp(r);
        let second = attention(
            r,
            2,
            &AttnOptions {
                heads: 1,
                ..o.clone()
            },
        );
        let third = attention(
            r,
            2,
            &AttnOptions {
                skip: Some(1.0),
                ..o.clone()
            },
        );
        vec![first, between, second, third]
    };
    let middle = layers(&mut r);
    let a = wrapped(&mut r, 2, 2, middle);
    let middle = layers(&mut r);
    let b = wrapped(&mut r, 2, 2, middle);
    check(&a, &b, n, "three layers and an MLP");
}

#[test]
fn a_block_without_a_skip_term_makes_the_earlier_paths_zero() {
    let mut r = rng(930);
    let o = AttnOptions::default();
    let middle = |r: &mut rand::rngs::StdRng| {
        vec![
            attention(r, 3, &o),
            Block::Linear(LinearParams::random(r, 3, 3, true, 1.0)),
            attention(r, 3, &o),
        ]
    };
    let m = middle(&mut r);
    let a = wrapped(&mut r, 2, 3, m);
    let m = middle(&mut r);
    let b = wrapped(&mut r, 2, 3, m);
    let metric = TensorSimilarity::new().with_context(2).unwrap();
    let found = metric
        .heads(&seq_library::model(&a), &seq_library::model(&b))
        .unwrap();
    assert_eq!(found.len(), 2);
    // The linear block after the first attention block has no skip term.
    assert!(found[0].inner.iter().all(|v| v.to_f64() == 0.0));
    assert!(found[0].cosine.iter().all(|c| c.is_nan()));
    assert!(found[1].cosine.iter().all(|c| c.is_finite()));
}

#[test]
fn a_twin_through_every_symmetry_recovers_the_head_permutation() {
    for seed in 0..4u64 {
        let mut r = rng(940 + seed);
        let n = 1 + seed as usize % 3;
        let o = AttnOptions {
            heads: 3,
            e: 2,
            ev: 2,
            alpha: Some(0.7),
            skip: Some(1.0),
            ..AttnOptions::default()
        };
        let d = 3;
        let middle = vec![attention(&mut r, d, &o), attention(&mut r, d, &o)];
        let net = wrapped(&mut r, 2, d, middle);
        let mut twin = net.clone();
        let mut perms = Vec::new();
        for i in [1, 2] {
            let p = twin.attention_mut(i);
            let perm = random_cycle_from_shuffle(&mut r, p.heads);
            for h in 0..p.heads {
                p.swap_score_factors(h);
                p.rescale_first_factor(h, r.random_range(2.0..4.0));
                let ev = p.ev();
                let basis = gaussian_matrix(&mut r, ev, ev, 1.0) + DMatrix::identity(ev, ev) * 3.0;
                p.change_value_basis(h, &basis);
                p.rotate_first_plane(h, 0, r.random_range(0.5..2.5));
            }
            p.permute_heads(&perm);
            perms.push(perm);
        }
        // A change of basis of the stream (without a shift: a shift moves
        // into the `o` bias, which belongs to no head).
        let basis = gaussian_matrix(&mut r, d, d, 1.0) + DMatrix::identity(d, d) * 3.0;
        twin.change_stream_basis(&basis, &DVector::zeros(d));
        let metric = TensorSimilarity::new().with_context(n).unwrap();
        let found = metric
            .heads(&seq_library::model(&net), &seq_library::model(&twin))
            .unwrap();
        for (paths, perm) in found.iter().zip(&perms) {
            let (matching, mean) = paths.best_matching();
            let expected: Vec<Option<usize>> = perm.iter().map(|&to| Some(to)).collect();
            assert_eq!(matching, expected, "seed {seed}");
            assert!((mean - 1.0).abs() < 1e-9, "seed {seed}: {mean}");
            for (h, &to) in perm.iter().enumerate() {
                for h2 in 0..perm.len() {
                    let c = paths.cosine[(h, h2)];
                    if h2 == to {
                        assert!((c - 1.0).abs() < 1e-9, "seed {seed}: ({h}, {h2}) {c}");
                    } else {
                        assert!(c < 1.0 - 1e-6, "seed {seed}: ({h}, {h2}) {c}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_head_path_models_agree_with_the_step() {
    // Model::head_path and the ordinary recursion against the heads of one
    // step: two computations of the same definition that share only the
    // recursion's blocks.
    let n = 2;
    let mut r = rng(950);
    let o = AttnOptions {
        alpha: Some(0.5),
        skip: Some(1.0),
        ..AttnOptions::default()
    };
    let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
    let a = seq_library::model(&wrapped(&mut r, 2, 3, middle));
    let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
    let b = seq_library::model(&wrapped(&mut r, 2, 3, middle));
    let metric = TensorSimilarity::new().with_context(n).unwrap();
    for paths in metric.heads(&a, &b).unwrap() {
        for h in 0..2 {
            for h2 in 0..2 {
                let (pa, pb) = (
                    a.head_path(paths.block, h).unwrap(),
                    b.head_path(paths.block, h2).unwrap(),
                );
                let sim = metric.similarity(&pa, &pb).unwrap();
                assert!((sim - paths.cosine[(h, h2)]).abs() < TOL, "{sim}");
            }
            let one = HeadPathSimilarity::new(metric.clone(), paths.block, h);
            let sim = one.similarity(&a, &b).unwrap();
            assert!((sim - paths.cosine[(h, h)]).abs() < TOL);
        }
    }
    // A head that does not exist, a block that is not attention.
    assert!(
        a.head_path(1, 2)
            .unwrap_err()
            .to_string()
            .contains("head 2 does not exist")
    );
    assert!(
        a.head_path(0, 0)
            .unwrap_err()
            .to_string()
            .contains("not attention")
    );
}

#[test]
fn gaussian_head_paths_are_exact_at_the_first_attention_block() {
    // The Gaussian inner products of the first block's head paths against
    // Monte Carlo on the head paths built here by SPEC §9's words: within 5
    // standard errors (the estimate is unbiased; its error is estimated from
    // its batch means). The second block's are a closure, and say so.
    let n = 2;
    let mut r = rng(960);
    let o = AttnOptions {
        alpha: Some(0.6),
        skip: Some(1.0),
        ..AttnOptions::default()
    };
    let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
    let a = wrapped(&mut r, 2, 3, middle);
    let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
    let b = wrapped(&mut r, 2, 3, middle);
    let gaussian = GaussianSimilarity::new().with_context(n).unwrap();
    let found = gaussian
        .heads(&seq_library::model(&a), &seq_library::model(&b))
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found[0].exact && !found[1].exact);
    let mc = GaussianMonteCarlo::new(200_000, 7)
        .unwrap()
        .with_context(n)
        .unwrap();
    for h in 0..2 {
        for h2 in 0..2 {
            let (pa, pb) = (
                seq_library::model(&head_path(&a, 1, h)),
                seq_library::model(&head_path(&b, 1, h2)),
            );
            let e = mc.estimate(&pa, &pb).unwrap();
            let exact = found[0].inner[(h, h2)].to_f64();
            let se = e.product_standard_errors[0];
            assert!(
                (e.inner_product - exact).abs() < 5.0 * se,
                "heads ({h}, {h2}): exact {exact}, Monte Carlo {} ± {se}",
                e.inner_product
            );
        }
    }
}

#[test]
fn a_memory_limit_is_checked_before_any_step() {
    let mut r = rng(970);
    let o = AttnOptions::default();
    let middle = vec![attention(&mut r, 3, &o)];
    let a = seq_library::model(&wrapped(&mut r, 2, 3, middle));
    let tight = TensorSimilarity::new()
        .with_context(3)
        .unwrap()
        .with_max_memory(tensor_similarity::MemoryLimit::Bytes(1000));
    let err = tight.heads(&a, &a).unwrap_err();
    assert!(
        matches!(err, tensor_similarity::Error::MemoryLimit { .. }),
        "{err}"
    );
}
