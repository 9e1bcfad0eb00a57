//! Numerical stability of sequence models: six attention layers of large
//! weights, whose raw inner products are far beyond f64 (each layer has
//! degree 5, so the end-to-end degree is 5⁶ = 15 625), against a twin
//! through the symmetries of SPEC §7.

mod common;
mod seq_library;
mod seq_oracle;

use common::{gaussian_vector, random_cycle_from_shuffle, random_invertible_signed, rng};
use rand::Rng;
use seq_oracle::{AttnOptions, AttnParams, Block, LinearParams, MaskKind, SeqNet};
use tensor_similarity::{RecursiveSimilarity, TensorSimilarity};

/// embed `2 → 3`, six attention layers of weight scale `scale`, head `3 → 2`.
fn deep(seed: u64, scale: f64, skip: Option<f64>) -> SeqNet {
    let mut r = rng(seed);
    let mut blocks = vec![Block::Linear(LinearParams::random(
        &mut r, 3, 2, true, scale,
    ))];
    for layer in 0..6 {
        let o = AttnOptions {
            heads: 2,
            e: 2,
            ev: 2,
            rotary: Some(10_000.0),
            mask: Some([MaskKind::Causal, MaskKind::Full][layer % 2].clone()),
            alpha: Some(0.35),
            skip,
            scale,
            ..AttnOptions::default()
        };
        blocks.push(Block::Attention(AttnParams::random(&mut r, 3, &o)));
    }
    blocks.push(Block::Linear(LinearParams::random(
        &mut r, 2, 3, true, scale,
    )));
    SeqNet { blocks }
}

/// The same function through every attention symmetry and a change of
/// basis of the residual stream.
fn twin(net: &SeqNet, seed: u64) -> SeqNet {
    let mut r = rng(seed);
    let mut t = net.clone();
    for b in &mut t.blocks {
        if let Block::Attention(p) = b {
            p.permute_heads(&random_cycle_from_shuffle(&mut r, p.heads));
            p.swap_score_factors(0);
            for h in 0..p.heads {
                p.change_value_basis(h, &random_invertible_signed(&mut r, p.ev()));
                p.rescale_first_factor(h, r.random_range(0.3..3.0));
                p.rotate_first_plane(h, 0, r.random_range(0.0..6.0));
            }
        }
    }
    t.change_stream_basis(
        &random_invertible_signed(&mut r, 3),
        &gaussian_vector(&mut r, 3, 1.0),
    );
    t
}

#[test]
fn six_attention_layers_of_large_weights_match_their_twin_without_overflow() {
    for (skip, what) in [(None, "lerp"), (Some(1.0), "additive")] {
        for (n, scale) in [(2, 4.0), (3, 4.0), (3, 2.0), (2, 1.5)] {
            let a = deep(1, scale, skip);
            let b = twin(&a, 2);
            let (ma, mb) = (seq_library::model(&a), seq_library::model(&b));
            let m = TensorSimilarity::new().with_context(n).unwrap();
            let ip = m.inner_product(&ma, &mb).unwrap();
            // e^709.8 is the largest finite f64.
            assert!(
                ip.ln_abs() > 2000.0,
                "{what}, n {n}: ln ⟨A,B⟩ = {}",
                ip.ln_abs()
            );
            assert_eq!(ip.to_f64(), f64::INFINITY, "{what}, n {n}");
            // The log scale is bookkept exactly: scaling the head (weight
            // and bias) by λ scales the tensor, so ⟨A,B⟩, by λ.
            let lambda: f64 = 1e-30;
            let mut scaled = a.clone();
            if let Some(Block::Linear(head)) = scaled.blocks.last_mut() {
                head.w *= lambda;
                head.b = head.b.as_ref().map(|b| b * lambda);
            }
            let ip_scaled = m.inner_product(&seq_library::model(&scaled), &mb).unwrap();
            let shift = ip_scaled.ln_abs() - ip.ln_abs();
            assert!(
                (shift - lambda.ln()).abs() < 1e-6 && ip_scaled.signum() == ip.signum(),
                "{what}, n {n}: ln ⟨λA,B⟩ − ln ⟨A,B⟩ = {shift}, ln λ = {}",
                lambda.ln()
            );
            let sim = m.similarity(&ma, &mb).unwrap();
            assert!((sim - 1.0).abs() < 1e-8, "{what}, n {n}: similarity {sim}");
            // An unrelated deep model stays comparable, and is not similar.
            let c = seq_library::model(&deep(3, scale, skip));
            let other = m.similarity(&ma, &c).unwrap();
            assert!(
                other.is_finite() && other.abs() < 0.999,
                "{what}, n {n}: unrelated {other}"
            );
            eprintln!(
                "{what}, n {n}, scale {scale}: ln ⟨A,B⟩ = {:.1}, |sim − 1| = {:.1e}, unrelated {other:e}",
                ip.ln_abs(),
                (sim - 1.0).abs()
            );
        }
    }
}
