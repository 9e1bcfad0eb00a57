//! Where two checkpoints of a training run differ (SPEC §9): head by head
//! and path family by path family.
//!
//! The run is the repository's `tests/files/torch/runs/tiny_lm`: a
//! two-layer bilinear-attention language model (vocabulary 11, stream 8, 2
//! heads per layer, rotary, causal mask, additive residual), trained by
//! PyTorch and saved at steps 20 and 100. At context 4 the example prints
//!
//! * for each attention block, the tensor similarities of the step-20
//!   model's head paths with the step-100 model's (rows: step 20), and for
//!   each head of step 20 the head of step 100 it became (the best match);
//! * the path families: the direct path `∅` (embedding to unembedding
//!   through both skips), each layer alone, and both layers in series, with
//!   each family's share of `⟨A, B⟩` and its cosine.
//!
//! Run with `cargo run --release -p tensor-similarity-suite --example heads`.

use std::path::Path;

use tensor_similarity::{RecursiveSimilarity, TensorSimilarity, io};

const CONTEXT: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/files/torch/runs/tiny_lm");
    let early = io::load(run.join("checkpoints/step_20.pt"))?;
    let late = io::load(run.join("checkpoints/step_100.pt"))?;
    let metric = TensorSimilarity::new().with_context(CONTEXT)?;
    println!(
        "tiny_lm, step 20 against step 100, context {CONTEXT}: tensor similarity {:.6}\n",
        metric.similarity(&early, &late)?
    );

    for block in metric.heads(&early, &late)? {
        println!(
            "attention block {}: head paths (rows: step 20, columns: step 100)",
            block.block
        );
        let (ha, hb) = block.cosine.shape();
        print!("        ");
        for h2 in 0..hb {
            print!("  step100 h{h2}");
        }
        println!();
        for h in 0..ha {
            print!("step20 h{h}");
            for h2 in 0..hb {
                print!("  {:>11.6}", block.cosine[(h, h2)]);
            }
            let best = (0..hb)
                .max_by(|&x, &y| block.cosine[(h, x)].total_cmp(&block.cosine[(h, y)]))
                .expect("a head");
            println!("   became h{best}");
        }
        println!();
    }

    let paths = metric.paths(&early, &late)?;
    let total = paths.total.to_f64();
    println!(
        "path families over the splitting blocks {:?} (⟨A, B⟩ = {total:.6e})",
        paths.blocks
    );
    println!("family    share of ⟨A,B⟩   cosine with the same family");
    for (i, family) in paths.families.iter().enumerate() {
        let name = if family.is_empty() {
            "∅".to_owned()
        } else {
            format!("{family:?}")
        };
        println!(
            "{name:<8}  {:>14.6}   {:>10.6}",
            paths.inner[(i, i)].to_f64() / total,
            paths.cosine[(i, i)]
        );
    }
    let off: f64 = (0..paths.families.len())
        .flat_map(|i| (0..paths.families.len()).map(move |j| (i, j)))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| paths.inner[(i, j)].to_f64())
        .sum();
    println!("between different families: {:.6} of ⟨A,B⟩", off / total);
    Ok(())
}
