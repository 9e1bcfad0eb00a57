//! Backdoor insertion, seen through the tensor similarity and its
//! baselines.
//!
//! A bilinear classifier `f(x) = W((Lx) ∘ (Rx))` (64 pixels → 64 hidden,
//! no bias → 10 logits) is trained with Adam on scikit-learn's 8×8 digits,
//! first clean, then with a trigger (the 2×2 top-right patch set to full
//! brightness) stamped on 10 % of every batch, those images relabelled 9.
//! Twenty checkpoints in each phase are written as safetensors, read back
//! with `tensor_similarity::io` and compared pairwise by the tensor
//! similarity, its class slices (one logit each), the data-aware tensor
//! similarity, output cosine and linear CKA on clean and on triggered test
//! images, and weight cosine. The phase gap of each matrix,
//! `Δ = mean within the poisoned phase − mean across the two phases`, says
//! how sharply it sees the insertion.
//!
//! ```text
//! cargo run --release --features cli --example backdoor -- --out DIR   # default target/backdoor
//! ```
//!
//! writes `checkpoints/step_N.safetensors`, one CSV per matrix, `curves.csv`,
//! `summary.json`, `backdoor.png` and `backdoor_classes.png`;
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

/// Train a bilinear digits classifier clean, then with a backdoor, and
/// compare its checkpoints.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write checkpoints, CSVs, summary.json and figures.
    #[arg(long, default_value = "target/backdoor")]
    out: PathBuf,
    /// Optimiser steps of each phase (clean, then poisoned).
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Checkpoints in each phase.
    #[arg(long, default_value_t = 20)]
    checkpoints: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Triggered images per batch in the poisoned phase.
    #[arg(long, default_value_t = 5)]
    poisoned: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the initial weights and the batches (the split is fixed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
        poisoned_per_batch: args.poisoned,
        ..study::Settings::default()
    };
    let s = study::run(&settings, &args.out)?;
    let r = s.reference;
    let last = s.steps.len() - 1;
    println!(
        "poisoning from step {}; last clean checkpoint (step {}): clean accuracy {:.3}, attack success {:.3}; \
         final (step {}): clean accuracy {:.3}, attack success {:.3}",
        s.poison_from,
        s.steps[r],
        s.clean_accuracy[r],
        s.attack_success[r],
        s.steps[last],
        s.clean_accuracy[last],
        s.attack_success[last]
    );
    println!(
        "phase gap Δ (within poisoned − across; against the late clean half) and the final \
         checkpoint's similarity to the last clean one:"
    );
    for key in study::MAIN {
        println!(
            "  {key:>17}: Δ {:+.4} ({:+.4})   final vs last clean {:.4}",
            s.delta(key),
            s.delta_late(key),
            s.matrix(key)[(r, last)]
        );
    }
    for c in 0..studies::data::CLASSES {
        let key = format!("tensor_class_{c}");
        print!(
            "{}class {c} {:+.4}",
            if c == 0 { "  class slices Δ: " } else { ", " },
            s.delta(&key)
        );
    }
    println!();
    println!(
        "wall time: {:.1} s training, {:.1} s matrices, {:.1} s in all; wrote {}",
        s.train_time.as_secs_f64(),
        s.compare_time.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
