//! Grokking, end to end: train the classic bilinear model on modular
//! addition, checkpoint it, and watch the training dynamics through three
//! similarity matrices.
//!
//! The task is `(a + b) mod P` with `P = 113`. The input is the two one-hot
//! tokens concatenated, `x = e_a ⊕ e_b ∈ R^{2P}`; the model is one bilinear
//! layer of width 64 without down projection followed by a linear
//! projection to `P` logits, `f(x) = W((Lx) ∘ (Rx))`. It is trained with
//! full-batch AdamW on a seeded 30% of the `P²` pairs, with hand-derived
//! gradients ([`train`]). The network first memorises the training pairs,
//! sits on a plateau with held-out accuracy at chance, and then, driven by
//! weight decay, generalises ("groks").
//!
//! About 100 checkpoints, log-spaced in steps, are written as safetensors
//! files in the `bi_linear`/`projection` layout, loaded back with
//! `tensor_similarity::io`, and compared pairwise by
//!
//! * the tensor similarity (SPEC §2), from the weights alone;
//! * the weight cosine (SPEC §4);
//! * the global cosine of the logits over all `P²` inputs (SPEC §4).
//!
//! ```text
//! cargo run --release --features cli --example grokking [OUT_DIR]   # default target/grokking
//! ```
//!
//! writes `checkpoints/`, `curves.csv`, `tensor_similarity.csv`,
//! `weight_cosine.csv`, `output_cosine.csv` and `grokking.png` (curves
//! above, the three matrices below, phases marked on both). `docs/grokking.md`
//! reads the figure.

mod compare;
mod phases;
mod plot;
mod study;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use phases::Phases;
use train::Config;

/// Train a bilinear network on modular addition until it groks, and
/// compare its checkpoints by tensor similarity, weight cosine and output
/// cosine.
#[derive(Debug, Parser)]
struct Args {
    /// Where to write checkpoints, CSVs and the figure.
    #[arg(default_value = "target/grokking")]
    out: PathBuf,
    /// The modulus P.
    #[arg(long, default_value_t = 113)]
    modulus: usize,
    /// Full-batch AdamW steps.
    #[arg(long, default_value_t = 10_000)]
    steps: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Number of checkpoints (log-spaced).
    #[arg(long, default_value_t = 100)]
    checkpoints: usize,
    /// Seed of the split and the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Redraw the figure from the CSVs of an earlier run in OUT; no training.
    #[arg(long)]
    plot_only: bool,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let start = Instant::now();
    let cfg = Config {
        p: args.modulus,
        steps: args.steps,
        learning_rate: args.lr,
        weight_decay: args.weight_decay,
        seed: args.seed,
        ..Config::default()
    };
    let opts = study::Options {
        checkpoints: args.checkpoints,
        curve_points: 400,
        progress: true,
    };
    let study = if args.plot_only {
        study::read_back(&args.out)?
    } else {
        study::run(&cfg, &opts, &args.out)?
    };
    let figure = args.out.join("grokking.png");
    plot::draw(
        &plot::Figure {
            title: format!(
                "Grokking (a + b) mod {}: bilinear width {}, {:.0}% train, AdamW lr {}, wd {}",
                cfg.p,
                cfg.hidden,
                cfg.train_fraction * 100.0,
                cfg.learning_rate,
                cfg.weight_decay
            ),
            curves: &study.curves,
            phases: &study.phases,
            steps: &study.steps,
            matrices: [
                ("tensor similarity", &study.tensor),
                ("weight cosine", &study.weight),
                ("output cosine (all P² inputs)", &study.output),
            ],
        },
        &figure,
    )?;
    report(&study, start.elapsed().as_secs_f64());
    if args.plot_only {
        println!("redrew {}", figure.display());
        return Ok(());
    }
    println!(
        "wrote {}, CSVs and {} checkpoints in {}",
        figure.display(),
        study.files.len(),
        args.out.display()
    );
    Ok(())
}

/// Prints the phases and what each metric says about them.
fn report(study: &study::Study, total: f64) {
    let Phases {
        memorised,
        onset,
        grokked,
    } = study.phases;
    let show = |s: Option<usize>| s.map_or("never".to_owned(), |s| s.to_string());
    println!(
        "phases: memorised (train ≥ 99%) at step {}, held-out ≥ 10% at {}, ≥ 95% at {}",
        show(memorised),
        show(onset),
        show(grokked)
    );
    let last = study.curves.last();
    if let Some(c) = last {
        println!(
            "final (step {}): train loss {:.2e} acc {:.3}, held-out loss {:.2e} acc {:.3}",
            c.step, c.train.loss, c.train.accuracy, c.test.loss, c.test.accuracy
        );
    }
    let n = study.steps.len();
    let index = |s: usize| study.steps.iter().position(|&t| t >= s).unwrap_or(n - 1);
    println!(
        "similarity to the final checkpoint (tensor / weight / output / output on train inputs):"
    );
    let mut marks = vec![("init", 0)];
    for (name, s) in [
        ("memorised", memorised),
        ("held-out ≥ 10%", onset),
        ("grokked", grokked),
    ] {
        if let Some(s) = s {
            marks.push((name, index(s)));
        }
    }
    for (name, k) in marks {
        println!(
            "  {name:>15} (step {:>6}): {:.3} / {:.3} / {:.3} / {:.3}",
            study.steps[k],
            study.tensor[(k, n - 1)],
            study.weight[(k, n - 1)],
            study.output[(k, n - 1)],
            study.output_train[(k, n - 1)]
        );
    }
    let mean_gap = |m: &nalgebra::DMatrix<f64>| (m - &study.tensor).abs().mean();
    println!(
        "mean |difference| from the tensor similarity: weight {:.3}, output {:.3}, output on train inputs {:.3}",
        mean_gap(&study.weight),
        mean_gap(&study.output),
        mean_gap(&study.output_train)
    );
    if !study.parts.is_empty() {
        println!(
            "the tensor by entry groups: share of ‖T‖² and cosine to the final checkpoint \
             (cross (a, P+b) / diagonal / unread same-slot; all)"
        );
    }
    for p in &study.parts {
        let (s, c) = (p.share, p.cosine);
        println!(
            "  step {:>6}: share {:.3} / {:.3} / {:.3}; cosine {:.3} / {:.3} / {:.3}; {:.3}",
            p.step, s.cross, s.diagonal, s.unread, c.cross, c.diagonal, c.unread, p.total_cosine
        );
    }
    println!(
        "wall time: {:.1} s training, {:.1} s matrices, {total:.1} s in all",
        study.train_time.as_secs_f64(),
        study.compare_time.as_secs_f64()
    );
}
