//! Model diffing by difference similarity: does a training run learn what
//! a fine-tune learns?
//!
//! Model A is the forgetting study's curriculum model (the same training,
//! the same seed: classes 0–4, then 5 … 9 added one at a time, then 9
//! removed and added again). Model B, from another seed, is trained on
//! classes 0–8 and then fine-tuned on 0–9; its direction `B_ft − B_base`
//! is "what learning 9 changed". Every checkpoint of A is scored against it
//! by the library's difference similarity,
//! `⟨A_t − A_0, B_ft − B_base⟩ / (‖A_t − A_0‖ ‖B_ft − B_base‖)` on the
//! end-to-end tensors (all logits, and the class-9 logit alone), and so is
//! each interval `A_t − A_{t−1}` and each stage; beside them, the same
//! cosine of the logit changes on the test images and of the weight
//! changes.
//!
//! ```text
//! cargo run --release --features cli --example diffing -- --out DIR   # default target/diffing
//! ```
//!
//! writes A's `checkpoints/step_N.safetensors`, B's
//! `b/checkpoints/step_N.safetensors`, `difference.csv`,
//! `difference_by_stage.csv`, `summary.json` and `diffing.png`;
//! `docs/studies.md` reads them.

#[allow(dead_code)] // Shared by three studies; each uses part of it.
#[path = "../studies/mod.rs"]
mod studies;
mod study;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use studies::model::AdamConfig;
use studies::train::Config;

/// Score the curriculum model's checkpoints against a fine-tuning
/// direction by difference similarity.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write checkpoints, CSVs, summary.json and the figure.
    #[arg(long, default_value = "target/diffing")]
    out: PathBuf,
    /// Optimiser steps of each curriculum stage of A.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// A's checkpoints in each stage (besides the initial weights).
    #[arg(long, default_value_t = 5)]
    checkpoints: usize,
    /// B's steps on classes 0–8.
    #[arg(long, default_value_t = 5000)]
    base_steps: usize,
    /// B's steps fine-tuning on 0–9.
    #[arg(long, default_value_t = 1000)]
    finetune_steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of A (its initial weights and batches; the split is fixed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Seed of B.
    #[arg(long, default_value_t = 1)]
    b_seed: u64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let start = Instant::now();
    let settings = study::Settings {
        cfg: Config {
            batch: args.batch,
            adam: AdamConfig {
                learning_rate: args.lr,
                ..AdamConfig::default()
            },
            seed: args.seed,
            ..Config::default()
        },
        steps: args.steps,
        checkpoints: args.checkpoints,
        b_seed: args.b_seed,
        base_steps: args.base_steps,
        finetune_steps: args.finetune_steps,
        progress: true,
    };
    let s = study::run(&settings, &args.out)?;
    println!(
        "B: test accuracy on 0-8 / 0-9 {:.3} / {:.3} after 0-8 (step {}), {:.3} / {:.3} fine-tuned (step {})",
        s.b_accuracy[0][0],
        s.b_accuracy[0][1],
        s.b_steps[0],
        s.b_accuracy[1][0],
        s.b_accuracy[1][1],
        s.b_steps[1]
    );
    println!("each stage of A against B_ft − B_base (tensor / class-9 slice / output / weight):");
    for (k, (stage, x)) in s.stages.iter().zip(&s.by_stage).enumerate() {
        let mark = if study::MARKED.contains(&k) { "*" } else { " " };
        println!(
            " {mark}{:>8} (steps {:>5} → {:>5}): {:+.3} / {:+.3} / {:+.3} / {:+.3}",
            stage.name, s.steps[x.from], s.steps[x.to], x.tensor, x.class_9, x.output, x.weight
        );
    }
    let last = &s.cumulative[s.cumulative.len() - 1];
    println!(
        "A_final − A_0 against it: {:+.3} / {:+.3} / {:+.3} / {:+.3}",
        last.tensor, last.class_9, last.output, last.weight
    );
    println!(
        "wall time: {:.1} s training, {:.1} s scores, {:.1} s in all; wrote {}",
        s.train_time.as_secs_f64(),
        s.compare_time.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
