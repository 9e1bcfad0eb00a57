//! The diffing study: the curriculum model A and the fine-tuned model B,
//! checkpointed, reloaded and scored by difference similarity.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nalgebra::DMatrix;
use plotters::prelude::SeriesLabelPosition;
use serde_json::{Value, json};

use crate::studies::curriculum::{self, ADD_9, READD_9, REMOVE_9};
use crate::studies::data::{self, CLASSES};
use crate::studies::metrics;
use crate::studies::model::Params;
use crate::studies::plot::{self, Curves, Figure, Series};
use crate::studies::train::{self, Config, Stage};
use crate::studies::{bands, files, load_all};

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Model A's model, batches, Adam and seed (the forgetting study's).
    pub cfg: Config,
    /// Optimiser steps of each curriculum stage of A.
    pub steps: usize,
    /// A's checkpoints in each stage (besides the initial weights).
    pub checkpoints: usize,
    /// B's seed (its initial weights and batches).
    pub b_seed: u64,
    /// B's steps on classes 0–8.
    pub base_steps: usize,
    /// B's steps fine-tuning on 0–9.
    pub finetune_steps: usize,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cfg: Config::default(),
            steps: 1000,
            checkpoints: 5,
            b_seed: 1,
            base_steps: 5000,
            finetune_steps: 1000,
            progress: true,
        }
    }
}

/// The scores of one direction of A against B's, by key.
pub const KEYS: [&str; 4] = ["tensor", "tensor_class_9", "output", "weight"];

/// One direction of A (from checkpoint `from` to `to`) against B's
/// fine-tuning direction, under each of [`KEYS`].
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    /// Index of the direction's start among A's checkpoints.
    pub from: usize,
    /// Index of its end.
    pub to: usize,
    /// The tensor difference similarity, all outputs.
    pub tensor: f64,
    /// The same on the class-9 logit alone.
    pub class_9: f64,
    /// The cosine of the two directions' logit changes on the test images.
    pub output: f64,
    /// The cosine of the two directions in weight space.
    pub weight: f64,
}

impl Scores {
    /// The values in the order of [`KEYS`].
    pub fn values(&self) -> [f64; 4] {
        [self.tensor, self.class_9, self.output, self.weight]
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Study {
    /// The step of each of A's checkpoints.
    pub steps: Vec<usize>,
    /// A's curriculum.
    pub stages: Vec<Stage>,
    /// B's steps of its two checkpoints: the end of training on 0–8 and
    /// the end of fine-tuning on 0–9.
    pub b_steps: [usize; 2],
    /// B's two checkpoint files.
    pub b_files: [PathBuf; 2],
    /// B's test accuracy on 0–8 and on 0–9, at each.
    pub b_accuracy: [[f64; 2]; 2],
    /// `A_t − A_0` for every checkpoint after the first.
    pub cumulative: Vec<Scores>,
    /// `A_t − A_{t−1}` for every checkpoint after the first.
    pub increments: Vec<Scores>,
    /// From the start to the end of each stage.
    pub by_stage: Vec<Scores>,
    /// Wall time of training both models (with writing the checkpoints).
    pub train_time: Duration,
    /// Wall time of the scores (with reading the checkpoints back).
    pub compare_time: Duration,
}

/// B's two stages: classes 0–8, then fine-tuning on 0–9.
pub fn b_stages(s: &Settings) -> Vec<Stage> {
    vec![
        Stage {
            name: "0-8".into(),
            classes: (0..9).collect(),
            steps: s.base_steps,
            poison: None,
        },
        Stage {
            name: "+9".into(),
            classes: (0..CLASSES).collect(),
            steps: s.finetune_steps,
            poison: None,
        },
    ]
}

/// The cosine of two vectors; `NaN` if either is zero.
fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(x, y)| x * y).sum::<f64>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// All weights of `to` minus those of `from`, concatenated.
fn weight_change(from: &Params, to: &Params) -> Vec<f64> {
    from.tensors()
        .into_iter()
        .zip(to.tensors())
        .flat_map(|(a, b)| (b - a).as_slice().to_vec())
        .collect()
}

/// Runs the study, writing everything under `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Study, Box<dyn Error>> {
    if s.steps == 0 || s.checkpoints == 0 || s.base_steps == 0 || s.finetune_steps == 0 {
        return Err(format!(
            "need steps in every stage and a checkpoint per stage; got {} steps, {} checkpoints, \
             {} base and {} fine-tuning steps",
            s.steps, s.checkpoints, s.base_steps, s.finetune_steps
        )
        .into());
    }
    let split = data::split(&data::load()?, data::SPLIT_SEED);
    let start = Instant::now();
    let (stages, a) = curriculum::run(
        &s.cfg,
        &split.train,
        s.steps,
        s.checkpoints,
        &out.join("checkpoints"),
        s.progress,
    )?;
    let b_cfg = Config {
        seed: s.b_seed,
        ..s.cfg.clone()
    };
    let bs = b_stages(s);
    let b = train::run_with_checkpoints(
        &b_cfg,
        &split.train,
        &bs,
        &train::schedule(&bs, 1, false),
        &out.join("b").join("checkpoints"),
        "model B",
        s.progress,
    )?;
    let train_time = start.elapsed();

    let start = Instant::now();
    let models = load_all(&a)?;
    let b_models = load_all(&b)?;
    let (b0, b1) = (&b_models[0], &b_models[1]);
    let test = &split.test;
    let seen = test.only(&bs[0].classes);
    let b_accuracy = [0, 1].map(|k| {
        [
            b[k].params.evaluate(&seen.x, &seen.y).accuracy,
            b[k].params.evaluate(&test.x, &test.y).accuracy,
        ]
    });
    // Output and weight changes of B, once.
    let rows = test.rows();
    let b_output: DMatrix<f64> = b1.forward_rows(&rows)? - b0.forward_rows(&rows)?;
    let b_weight = weight_change(&b[0].params, &b[1].params);
    let outputs = models
        .iter()
        .map(|m| m.forward_rows(&rows))
        .collect::<Result<Vec<_>, _>>()?;
    let (tensor, class_9) = (metrics::tensor(), metrics::class_slice(9));
    let score = |from: usize, to: usize| -> Result<Scores, Box<dyn Error>> {
        let (a0, a1) = (&models[from], &models[to]);
        let a_output = &outputs[to] - &outputs[from];
        Ok(Scores {
            from,
            to,
            tensor: metrics::difference(&tensor, a0, a1, b0, b1)?,
            class_9: metrics::difference(&class_9, a0, a1, b0, b1)?,
            output: cosine(a_output.as_slice(), b_output.as_slice()),
            weight: cosine(&weight_change(&a[from].params, &a[to].params), &b_weight),
        })
    };
    let n = a.len();
    let bar = crate::studies::progress::bar(2 * (n - 1) + stages.len(), "difference", s.progress);
    let mut cumulative = Vec::new();
    let mut increments = Vec::new();
    for t in 1..n {
        cumulative.push(score(0, t)?);
        bar.inc(1);
        increments.push(score(t - 1, t)?);
        bar.inc(1);
    }
    let steps: Vec<usize> = a.iter().map(|c| c.step).collect();
    let bounds = train::bounds(&stages);
    let index = |step: usize| {
        steps
            .iter()
            .position(|&x| x == step)
            .ok_or("a stage bound without checkpoint")
    };
    let mut by_stage = Vec::new();
    for k in 0..stages.len() {
        by_stage.push(score(index(bounds[k])?, index(bounds[k + 1])?)?);
        bar.inc(1);
    }
    bar.finish();
    let compare_time = start.elapsed();

    let study = Study {
        steps,
        stages,
        b_steps: [b[0].step, b[1].step],
        b_files: [b[0].path.clone(), b[1].path.clone()],
        b_accuracy,
        cumulative,
        increments,
        by_stage,
        train_time,
        compare_time,
    };
    write(&study, s, out)?;
    Ok(study)
}

/// The CSVs, `summary.json` and the figure.
fn write(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    let later = &study.steps[1..];
    let mut header = vec!["step".to_owned(), "stage".to_owned()];
    let mut columns = vec![
        later.iter().map(|&x| x as f64).collect(),
        later
            .iter()
            .map(|&x| train::stage_of(&study.stages, x) as f64)
            .collect(),
    ];
    for (name, scores) in [("", &study.cumulative), ("_increment", &study.increments)] {
        for (k, key) in KEYS.iter().enumerate() {
            header.push(format!("{key}{name}"));
            columns.push(scores.iter().map(|x| x.values()[k]).collect());
        }
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    files::write_table(&out.join("difference.csv"), &header, &columns)?;
    let mut header = vec!["stage", "from_step", "to_step"];
    header.extend(KEYS);
    let mut columns = vec![
        (0..study.stages.len()).map(|k| k as f64).collect(),
        study
            .by_stage
            .iter()
            .map(|x| study.steps[x.from] as f64)
            .collect(),
        study
            .by_stage
            .iter()
            .map(|x| study.steps[x.to] as f64)
            .collect(),
    ];
    for k in 0..KEYS.len() {
        columns.push(study.by_stage.iter().map(|x| x.values()[k]).collect());
    }
    files::write_table(&out.join("difference_by_stage.csv"), &header, &columns)?;

    let series = |scores: &[Scores]| -> Value {
        KEYS.iter()
            .enumerate()
            .map(|(k, key)| {
                (
                    key.to_string(),
                    Value::from(scores.iter().map(|x| x.values()[k]).collect::<Vec<_>>()),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let stages: Vec<Value> = study
        .stages
        .iter()
        .zip(&study.by_stage)
        .map(|(st, x)| {
            json!({
                "name": st.name,
                "classes": st.classes,
                "from_step": study.steps[x.from],
                "to_step": study.steps[x.to],
                "tensor": x.tensor,
                "tensor_class_9": x.class_9,
                "output": x.output,
                "weight": x.weight,
            })
        })
        .collect();
    let relative = |p: &PathBuf| {
        p.strip_prefix(out)
            .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
    };
    let summary = json!({
        "study": "diffing",
        "data": "scikit-learn digits (UCI, CC BY 4.0), 1437 train / 360 test, pixels / 16",
        "settings": {
            "hidden": s.cfg.hidden,
            "batch": s.cfg.batch,
            "learning_rate": s.cfg.adam.learning_rate,
            "seed": s.cfg.seed,
            "steps_per_stage": s.steps,
            "checkpoints_per_stage": s.checkpoints,
            "b_seed": s.b_seed,
            "b_base_steps": s.base_steps,
            "b_finetune_steps": s.finetune_steps,
        },
        "definition": "difference similarity <A_t - A_from, B_ft - B_base> / (|A_t - A_from| |B_ft - B_base|): \
                       tensor (all logits), tensor_class_9 (logit 9), output (logit changes on the 360 test images), \
                       weight (parameter changes)",
        "b": {
            "base": {"step": study.b_steps[0], "file": relative(&study.b_files[0]),
                     "accuracy_0_8": study.b_accuracy[0][0], "accuracy_0_9": study.b_accuracy[0][1]},
            "finetuned": {"step": study.b_steps[1], "file": relative(&study.b_files[1]),
                          "accuracy_0_8": study.b_accuracy[1][0], "accuracy_0_9": study.b_accuracy[1][1]},
        },
        "steps": study.steps,
        "checkpoints": files::checkpoint_files(&study.steps),
        "cumulative_steps": later,
        "cumulative": series(&study.cumulative),
        "increments": series(&study.increments),
        "stages": stages,
    });
    files::write_json(&out.join("summary.json"), &summary)?;
    draw(study, s, out)
}

fn draw(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    let bands = bands(&study.stages);
    // The curves start at the first checkpoint after the initial weights;
    // the figure's x values are every checkpoint, so pad the first.
    let padded = |scores: &[Scores], k: usize| {
        std::iter::once(f64::NAN)
            .chain(scores.iter().map(|x| x.values()[k]))
            .collect::<Vec<_>>()
    };
    let panel = |caption: String, scores: &[Scores]| {
        let mut c = Curves::fitted(
            caption,
            KEYS.iter()
                .enumerate()
                .map(|(k, &key)| Series::new(key, padded(scores, k), k))
                .collect(),
        );
        c.y_range.0 = c.y_range.0.min(-0.2);
        c.legend(SeriesLabelPosition::UpperLeft)
    };
    plot::draw(
        &Figure {
            title: format!(
                "Diffing on digits: the curriculum model A against B's fine-tuning on 9 \
                 (B: 0-8 for {} steps, then 0-9 for {}); seed {} / {}",
                s.base_steps, s.finetune_steps, s.cfg.seed, s.b_seed
            ),
            steps: &study.steps,
            bands: &bands,
            curves: vec![
                panel("A_t − A_0 against B_ft − B_base".into(), &study.cumulative),
                panel(
                    "A_t − A_t−1 (each interval) against B_ft − B_base".into(),
                    &study.increments,
                ),
            ],
            heatmaps: Vec::new(),
            heatmap_columns: 1,
        },
        &out.join("diffing.png"),
    )
}

/// The stages the report singles out: where 9 is added, removed and
/// added again.
pub const MARKED: [usize; 3] = [ADD_9, REMOVE_9, READD_9];
