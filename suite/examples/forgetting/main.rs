//! Forgetting along a class curriculum, seen through the tensor similarity,
//! its class slices and the baselines.
//!
//! The bilinear digits classifier `f(x) = W((Lx) ∘ (Rx))` (64 → 64 → 10) is
//! trained with Adam through eight stages of equal length: classes 0–4,
//! then 5, 6, 7, 8 and 9 added one at a time, then 9 removed (trained on
//! 0–8 only), then 9 added again. Its checkpoints (the initial weights and
//! five a stage) are read back with `tensor_similarity::io` and compared by
//! the tensor similarity, its ten class slices (one logit each), output
//! cosine and linear CKA on the test images, and weight cosine: the
//! similarity of every checkpoint to the end of each stage, and the class-9
//! slice through the removal and the re-addition.
//!
//! ```text
//! cargo run --release --features cli --example forgetting -- --out DIR   # default target/forgetting
//! ```
//!
//! writes `checkpoints/step_N.safetensors`, one CSV per matrix,
//! `accuracy.csv`, `to_stage_ends.csv`, `summary.json`, `forgetting.png`
//! and `forgetting_classes.png`; `docs/studies.md` reads them.

#[allow(dead_code)] // Shared by three studies; each uses part of it.
#[path = "../studies/mod.rs"]
mod studies;
mod study;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use studies::curriculum::{ADD_9, READD_9, REMOVE_9};
use studies::model::AdamConfig;
use studies::train::Config;

/// Train a bilinear digits classifier through a class curriculum and
/// compare its checkpoints.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write checkpoints, CSVs, summary.json and figures.
    #[arg(long, default_value = "target/forgetting")]
    out: PathBuf,
    /// Optimiser steps of each stage.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Checkpoints in each stage (besides the initial weights).
    #[arg(long, default_value_t = 5)]
    checkpoints: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    batch: usize,
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
        progress: true,
    };
    let s = study::run(&settings, &args.out)?;
    println!(
        "test accuracy at the end of each stage (all classes / the stage's classes / class 9):"
    );
    for (k, stage) in s.stages.iter().enumerate() {
        let e = s.stage_ends[k];
        println!(
            "  {:>8} (step {:>5}): {:.3} / {:.3} / {:.3}",
            stage.name, s.steps[e], s.accuracy[e], s.accuracy_seen[e], s.class_accuracy[e][9]
        );
    }
    println!(
        "similarity of stage ends, and the phase gap Δ of removing 9 (stage +9 → -9) and re-adding it (-9 → +9 again):"
    );
    println!(
        "  {:>17}  {:>12} {:>12} {:>14} {:>9} {:>9}",
        "", "-9 vs +8", "-9 vs +9", "+9 again vs +9", "Δ remove", "Δ re-add"
    );
    for key in study::MAIN {
        println!(
            "  {key:>17}  {:>12.4} {:>12.4} {:>14.4} {:>+9.4} {:>+9.4}",
            s.between_ends(key, REMOVE_9, ADD_9 - 1),
            s.between_ends(key, REMOVE_9, ADD_9),
            s.between_ends(key, READD_9, ADD_9),
            s.gap(key, ADD_9, REMOVE_9),
            s.gap(key, REMOVE_9, READD_9),
        );
    }
    println!(
        "wall time: {:.1} s training, {:.1} s matrices, {:.1} s in all; wrote {}",
        s.train_time.as_secs_f64(),
        s.compare_time.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
