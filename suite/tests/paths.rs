//! Path families (SPEC §9) against the dense oracle of `tests/seq_oracle`.
//!
//! The oracle builds each `T(U)` from its definition on its own plain data
//! (`restricted` below: every splitting block outside `U` reduced to its
//! skip term), takes their inner products by its dense per-block recursion,
//! and forms the families by inclusion–exclusion written out as a sum over
//! subsets. Tolerances as in `attention_oracle.rs`: inner products to
//! `1e-10 · √(⟨A,A⟩⟨B,B⟩)`, and cosines to that over the two families'
//! norms (a family's inner product is a signed sum of products of the size
//! of the whole models', so its rounding scales with theirs: a family that
//! carries a small share of the norm has a cosine good to fewer digits),
//! and at least `1e-10`.

mod common;
mod seq_library;
mod seq_oracle;

use common::{gaussian_matrix, rng};
use nalgebra::{DMatrix, DVector};
use proptest::prelude::*;
use seq_oracle::{AttnOptions, AttnParams, BilinearParams, Block, LinearParams, SeqNet};
use tensor_similarity::{Error, FamilySimilarity, RecursiveSimilarity, TensorSimilarity};

const TOL: f64 = 1e-10;

/// The chain indices of the blocks that split: attention, and bilinear
/// blocks with a skip term.
fn splitting(net: &SeqNet) -> Vec<usize> {
    (0..net.blocks.len())
        .filter(|&k| match &net.blocks[k] {
            Block::Attention(_) => true,
            Block::Bilinear(p) => p.s != 1.0,
            Block::Linear(_) => false,
        })
        .collect()
}

/// `T(U)`: the splitting blocks outside `keep` reduced to their skip terms.
fn restricted(net: &SeqNet, keep: &[usize]) -> SeqNet {
    let blocks = net
        .blocks
        .iter()
        .enumerate()
        .map(|(k, block)| match block {
            _ if keep.contains(&k) => block.clone(),
            Block::Attention(p) => {
                let mut p = p.clone();
                p.skip = Some(p.r());
                p.alpha = Some(0.0);
                Block::Attention(p)
            }
            Block::Bilinear(p) if p.s != 1.0 => {
                let mut p = p.clone();
                p.l.fill(0.0);
                p.r.fill(0.0);
                (p.bl, p.br, p.bd) = (None, None, None);
                Block::Bilinear(p)
            }
            _ => block.clone(),
        })
        .collect();
    SeqNet { blocks }
}

/// The subsets of `set`.
fn subsets(set: &[usize]) -> Vec<Vec<usize>> {
    (0..1usize << set.len())
        .map(|mask| {
            (0..set.len())
                .filter(|j| mask & 1 << j != 0)
                .map(|j| set[j])
                .collect()
        })
        .collect()
}

/// The oracle's inner products `⟨T_A(U), T_B(U')⟩` for every pair of
/// subsets of the splitting blocks, each computed once.
struct Restricted {
    values: std::collections::HashMap<(Vec<usize>, Vec<usize>), f64>,
}

impl Restricted {
    fn new(a: &SeqNet, b: &SeqNet, split: &[usize], n: usize) -> Self {
        let mut values = std::collections::HashMap::new();
        let tensors_a: Vec<_> = subsets(split)
            .into_iter()
            .map(|u| (u.clone(), seq_oracle::tensors(&restricted(a, &u), n)))
            .collect();
        let tensors_b: Vec<_> = subsets(split)
            .into_iter()
            .map(|u| (u.clone(), seq_oracle::tensors(&restricted(b, &u), n)))
            .collect();
        for (u, ta) in &tensors_a {
            for (v, tb) in &tensors_b {
                values.insert((u.clone(), v.clone()), seq_oracle::inner_of(ta, tb));
            }
        }
        Self { values }
    }

    /// `⟨T_A^S, T_B^S'⟩` for the families `s`, `s2`, by inclusion–exclusion.
    fn family(&self, s: &[usize], s2: &[usize]) -> f64 {
        let mut sum = 0.0;
        for u in subsets(s) {
            for v in subsets(s2) {
                let sign = if (s.len() - u.len() + s2.len() - v.len()).is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                };
                sum += sign * self.values[&(u.clone(), v)];
            }
        }
        sum
    }
}

fn check(a: &SeqNet, b: &SeqNet, n: usize, what: &str) {
    let metric = TensorSimilarity::new().with_context(n).unwrap();
    let found = metric
        .paths(&seq_library::model(a), &seq_library::model(b))
        .unwrap();
    let split = splitting(a);
    assert_eq!(found.blocks, split, "{what}");
    let families = subsets(&split);
    assert_eq!(found.families.len(), families.len());
    let (ab, aa, bb) = (
        Restricted::new(a, b, &split, n),
        Restricted::new(a, a, &split, n),
        Restricted::new(b, b, &split, n),
    );
    // ⟨A, A⟩ and ⟨B, B⟩: T(U) with every splitting block full is the model.
    let whole = (split.clone(), split.clone());
    let (norm_aa, norm_bb) = (aa.values[&whole], bb.values[&whole]);
    let scale = (norm_aa * norm_bb).sqrt();
    for (i, s) in found.families.iter().enumerate() {
        let norm_a = aa.family(s, s);
        let norm_b = bb.family(s, s);
        for (j, s2) in found.families.iter().enumerate() {
            let oracle = ab.family(s, s2);
            let inner = found.inner[(i, j)].to_f64();
            assert!(
                (inner - oracle).abs() <= TOL * scale,
                "{what}, n {n}, families {s:?} × {s2:?}: {inner}, oracle {oracle}"
            );
            let norm_b2 = bb.family(s2, s2);
            let cosine = found.cosine[(i, j)];
            let expected = oracle / (norm_a * norm_b2).sqrt();
            // The family sums cancel terms of the size of the whole
            // models': their error is `TOL · scale`, and the cosine's that
            // over the families' norms (1e-10 when they carry the norm).
            let bound = TOL * (scale / (norm_a * norm_b2).sqrt()).max(1.0);
            assert!(
                (cosine - expected).abs() <= bound,
                "{what}, n {n}, families {s:?} × {s2:?}: cosine {cosine}, oracle {expected}"
            );
        }
        let err = (found.norms_a[i].to_f64() - norm_a).abs() / norm_aa;
        assert!(err <= TOL, "{what}: ⟨A^S, A^S⟩ of {s:?}: {err:e}");
        let err = (found.norms_b[i].to_f64() - norm_b).abs() / norm_bb;
        assert!(err <= TOL, "{what}: ⟨B^S, B^S⟩ of {s:?}: {err:e}");
    }
    let total = ab.values[&whole];
    assert!(
        (found.total.to_f64() - total).abs() <= TOL * scale,
        "{what}"
    );
}

fn wrapped(r: &mut rand::rngs::StdRng, d: usize, middle: Vec<Block>) -> SeqNet {
    let mut blocks = vec![Block::Linear(LinearParams::random(r, d, 2, true, 1.0))];
    blocks.extend(middle);
    blocks.push(Block::Linear(LinearParams::random(r, 2, d, true, 1.0)));
    SeqNet { blocks }
}

fn attention(r: &mut rand::rngs::StdRng, d: usize, o: &AttnOptions) -> Block {
    Block::Attention(AttnParams::random(r, d, o))
}

#[test]
fn one_and_two_attention_layers() {
    for (layers, n) in [(1, 3), (2, 1), (2, 2)] {
        let mut r = rng(1000 + 10 * layers + n as u64);
        let o = AttnOptions {
            alpha: Some(0.6),
            skip: Some(1.0),
            ..AttnOptions::default()
        };
        let other = AttnOptions {
            heads: 1,
            alpha: Some(0.4),
            skip: None,
            rotary: None,
            ..AttnOptions::default()
        };
        let middle: Vec<Block> = (0..layers).map(|_| attention(&mut r, 3, &o)).collect();
        let a = wrapped(&mut r, 3, middle);
        let middle: Vec<Block> = (0..layers).map(|_| attention(&mut r, 2, &other)).collect();
        let b = wrapped(&mut r, 2, middle);
        check(&a, &b, n, &format!("{layers} attention layers"));
    }
}

#[test]
fn three_attention_layers() {
    // Eight families, 64 oracle products per model pair.
    let mut r = rng(1050);
    let o = AttnOptions {
        alpha: Some(0.5),
        skip: Some(1.0),
        e: 2,
        ev: 1,
        ..AttnOptions::default()
    };
    let other = AttnOptions {
        heads: 1,
        rotary: None,
        ..o.clone()
    };
    let middle: Vec<Block> = (0..3).map(|_| attention(&mut r, 2, &o)).collect();
    let a = wrapped(&mut r, 2, middle);
    let middle: Vec<Block> = (0..3).map(|_| attention(&mut r, 2, &other)).collect();
    let b = wrapped(&mut r, 2, middle);
    check(&a, &b, 2, "three attention layers");
}

#[test]
fn attention_and_residual_bilinear_blocks() {
    let n = 2;
    let mut r = rng(1100);
    let o = AttnOptions {
        alpha: Some(0.5),
        ..AttnOptions::default()
    };
    let layer = |r: &mut rand::rngs::StdRng| {
        vec![
            attention(r, 2, &o),
            Block::Bilinear(BilinearParams::random(r, 2, 3, true, 0.6, 1.0)),
        ]
    };
    let middle = layer(&mut r);
    let a = wrapped(&mut r, 2, middle);
    let middle = layer(&mut r);
    let b = wrapped(&mut r, 2, middle);
    check(&a, &b, n, "attention and an MLP");
}

#[test]
fn position_wise_residual_bilinear_blocks() {
    // Three residual MLPs, no attention: eight families.
    let mut r = rng(1200);
    let mlps = |r: &mut rand::rngs::StdRng| -> Vec<Block> {
        [0.3, 0.5, 0.8]
            .iter()
            .map(|&s| Block::Bilinear(BilinearParams::random(r, 3, 4, true, s, 1.0)))
            .collect()
    };
    let middle = mlps(&mut r);
    let a = wrapped(&mut r, 3, middle);
    let middle = mlps(&mut r);
    let b = wrapped(&mut r, 3, middle);
    check(&a, &b, 1, "three residual MLPs");
}

#[test]
fn a_twin_has_cosine_one_on_the_diagonal() {
    let mut r = rng(1300);
    let o = AttnOptions {
        heads: 2,
        alpha: Some(0.5),
        skip: Some(1.0),
        ..AttnOptions::default()
    };
    let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
    let net = wrapped(&mut r, 3, middle);
    let mut twin = net.clone();
    for i in [1, 2] {
        let p = twin.attention_mut(i);
        p.permute_heads(&[1, 0]);
        p.swap_score_factors(0);
        p.rescale_first_factor(1, -2.5);
        let ev = p.ev();
        let basis = gaussian_matrix(&mut r, ev, ev, 1.0) + DMatrix::identity(ev, ev) * 3.0;
        p.change_value_basis(0, &basis);
    }
    let basis = gaussian_matrix(&mut r, 3, 3, 1.0) + DMatrix::identity(3, 3) * 3.0;
    twin.change_stream_basis(&basis, &DVector::zeros(3));
    let metric = TensorSimilarity::new().with_context(2).unwrap();
    let found = metric
        .paths(&seq_library::model(&net), &seq_library::model(&twin))
        .unwrap();
    assert_eq!(found.families.len(), 4);
    for i in 0..4 {
        let c = found.cosine[(i, i)];
        assert!(
            (c - 1.0).abs() < 1e-9,
            "family {:?}: {c}",
            found.families[i]
        );
    }
    assert!((found.similarity - 1.0).abs() < 1e-9);
}

#[test]
fn models_without_a_splitting_block_are_refused() {
    let mut r = rng(1400);
    let a = wrapped(&mut r, 2, vec![]);
    let model = seq_library::model(&a);
    let err = TensorSimilarity::new()
        .with_context(1)
        .unwrap()
        .paths(&model, &model)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    assert!(err.to_string().contains("no block splits"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The family inner products sum to `⟨A, B⟩`.
    #[test]
    fn families_sum_to_the_inner_product(seed in any::<u64>(), n in 1usize..=3, layers in 1usize..=2) {
        let mut r = rng(seed);
        let o = AttnOptions {
            alpha: Some(0.5),
            skip: Some(1.0),
            ..AttnOptions::default()
        };
        let make = |r: &mut rand::rngs::StdRng| {
            let mut middle = Vec::new();
            for _ in 0..layers {
                middle.push(attention(r, 2, &o));
                middle.push(Block::Bilinear(BilinearParams::random(r, 2, 2, true, 0.5, 1.0)));
            }
            wrapped(r, 2, middle)
        };
        let (a, b) = (make(&mut r), make(&mut r));
        let (ma, mb) = (seq_library::model(&a), seq_library::model(&b));
        let metric = TensorSimilarity::new().with_context(n).unwrap();
        let found = metric.paths(&ma, &mb).unwrap();
        let sum: f64 = found.inner.iter().map(|x| x.to_f64()).sum();
        let total = tensor_similarity::RecursiveSimilarity::inner_product(&metric, &ma, &mb)
            .unwrap()
            .to_f64();
        let scale = found.inner.iter().map(|x| x.to_f64().abs()).sum::<f64>();
        prop_assert!((sum - total).abs() <= 1e-10 * scale, "sum {sum}, ⟨A,B⟩ {total}");
        prop_assert!((found.total.to_f64() - total).abs() <= 1e-12 * scale);
    }
}

#[test]
fn one_family_as_a_metric_is_the_families_diagonal() {
    let n = 2;
    let mut r = rng(1500);
    let o = AttnOptions {
        alpha: Some(0.5),
        skip: Some(1.0),
        ..AttnOptions::default()
    };
    let mut nets = Vec::new();
    for _ in 0..3 {
        let middle = vec![attention(&mut r, 3, &o), attention(&mut r, 3, &o)];
        nets.push(seq_library::model(&wrapped(&mut r, 3, middle)));
    }
    let metric = TensorSimilarity::new().with_context(n).unwrap();
    let all = metric.paths(&nets[0], &nets[1]).unwrap();
    for (i, family) in all.families.iter().enumerate() {
        let one = FamilySimilarity::new(metric.clone(), family.clone());
        let sim = one.similarity(&nets[0], &nets[1]).unwrap();
        assert!((sim - all.cosine[(i, i)]).abs() < TOL, "{family:?}: {sim}");
        let inner = one.inner_product(&nets[0], &nets[1]).unwrap().to_f64();
        let scale = (all.norms_a[i].to_f64() * all.norms_b[i].to_f64()).sqrt();
        assert!((inner - all.inner[(i, i)].to_f64()).abs() < TOL * scale);
        // Across a run: the matrix of one family.
        let m = tensor_similarity::matrix::similarity_matrix(&one, &nets, || {}).unwrap();
        assert!((m[(0, 1)] - sim).abs() < TOL);
        assert_eq!(m[(2, 2)], 1.0);
    }
    let err = FamilySimilarity::new(metric, vec![0])
        .similarity(&nets[0], &nets[1])
        .unwrap_err();
    assert!(err.to_string().contains("block 0 does not split"), "{err}");
}
