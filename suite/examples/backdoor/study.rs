//! The backdoor study: train, checkpoint, reload, compare, write.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use plotters::prelude::SeriesLabelPosition;
use serde_json::{Map, Value, json};

use crate::studies::data::{self, CLASSES, Images};
use crate::studies::metrics::{self, Named};
use crate::studies::model::Params;
use crate::studies::plot::{self, Curves, Figure, Series};
use crate::studies::train::{self, Checkpoint, Config, Poison, Stage};
use crate::studies::{bands, files, load_all};

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Model, batches, Adam, seed.
    pub cfg: Config,
    /// Optimiser steps of each phase (clean, then poisoned).
    pub steps: usize,
    /// Checkpoints in each phase, evenly spaced, the last at its end.
    pub checkpoints: usize,
    /// Triggered images per batch in the poisoned phase.
    pub poisoned_per_batch: usize,
    /// The label they are given.
    pub target: usize,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cfg: Config::default(),
            steps: 3000,
            checkpoints: 20,
            // 10 % of a batch of 50.
            poisoned_per_batch: 5,
            target: 9,
            progress: true,
        }
    }
}

/// The keys of the matrices whose phase gap the summary reports, in the
/// order the figure and the report show them.
pub const MAIN: [&str; 8] = [
    "tensor",
    "tensor_class_9",
    "tensor_data",
    "output_clean",
    "output_triggered",
    "cka_clean",
    "cka_triggered",
    "weight",
];

/// What a run produced.
#[derive(Debug)]
pub struct Study {
    /// The step of each checkpoint.
    pub steps: Vec<usize>,
    /// The first step whose batch carried the trigger.
    pub poison_from: usize,
    /// The stages (clean, poisoned).
    pub stages: Vec<Stage>,
    /// Accuracy on the clean test images, per checkpoint.
    pub clean_accuracy: Vec<f64>,
    /// Share of triggered test images of true class ≠ target classified as
    /// the target, per checkpoint.
    pub attack_success: Vec<f64>,
    /// Every matrix, by key (CSV stem and summary key).
    pub matrices: Vec<Named>,
    /// The phase gap of each matrix, by key.
    pub delta: Vec<(String, f64)>,
    /// The phase gap against the second half of the clean phase only
    /// (trained networks, not the first steps from the initial weights).
    pub delta_late: Vec<(String, f64)>,
    /// The index of the last clean checkpoint, the curves' reference.
    pub reference: usize,
    /// Wall time of training (with writing the checkpoints).
    pub train_time: Duration,
    /// Wall time of the matrices (with reading the checkpoints back).
    pub compare_time: Duration,
}

impl Study {
    /// The matrix of `key`.
    pub fn matrix(&self, key: &str) -> &nalgebra::DMatrix<f64> {
        &self
            .matrices
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no matrix {key}"))
            .1
    }

    /// The phase gap of `key`.
    pub fn delta(&self, key: &str) -> f64 {
        find(&self.delta, key)
    }

    /// The phase gap of `key` against the second half of the clean phase.
    pub fn delta_late(&self, key: &str) -> f64 {
        find(&self.delta_late, key)
    }
}

fn find(values: &[(String, f64)], key: &str) -> f64 {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map_or(f64::NAN, |d| d.1)
}

/// The two phases: clean training on every class, then the same with the
/// trigger stamped on `poisoned_per_batch` images of every batch.
pub fn stages(s: &Settings) -> Vec<Stage> {
    let all: Vec<usize> = (0..CLASSES).collect();
    vec![
        Stage {
            name: "clean".into(),
            classes: all.clone(),
            steps: s.steps,
            poison: None,
        },
        Stage {
            name: "poisoned".into(),
            classes: all,
            steps: s.steps,
            poison: Some(Poison {
                count: s.poisoned_per_batch,
                target: s.target,
            }),
        },
    ]
}

/// Share of the images of true class ≠ `target`, stamped with the trigger,
/// that `params` classifies as `target`.
pub fn attack_success(params: &Params, triggered: &Images, target: usize) -> f64 {
    let predicted = params.predict(&triggered.x);
    let (hits, total) = predicted
        .iter()
        .zip(&triggered.y)
        .filter(|&(_, &y)| y != target)
        .fold((0, 0), |(h, t), (&p, _)| {
            (h + usize::from(p == target), t + 1)
        });
    hits as f64 / total.max(1) as f64
}

/// Runs the study, writing everything under `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Study, Box<dyn Error>> {
    if s.steps == 0 || s.checkpoints < 2 || s.target >= CLASSES {
        return Err(format!(
            "need at least one step and two checkpoints per phase and a target class below {CLASSES}; \
             got {} steps, {} checkpoints, target {}",
            s.steps, s.checkpoints, s.target
        )
        .into());
    }
    let split = data::split(&data::load()?, data::SPLIT_SEED);
    let stages = stages(s);
    let steps = train::schedule(&stages, s.checkpoints, false);

    let start = Instant::now();
    let checkpoints = train::run_with_checkpoints(
        &s.cfg,
        &split.train,
        &stages,
        &steps,
        &out.join("checkpoints"),
        "train",
        s.progress,
    )?;
    let train_time = start.elapsed();

    let start = Instant::now();
    let triggered = split.test.triggered();
    let clean_accuracy: Vec<f64> = checkpoints
        .iter()
        .map(|c| c.params.evaluate(&split.test.x, &split.test.y).accuracy)
        .collect();
    let attack: Vec<f64> = checkpoints
        .iter()
        .map(|c| attack_success(&c.params, &triggered, s.target))
        .collect();
    let matrices = compare(&checkpoints, &split, &triggered, s.progress)?;
    let poison_from = stages[0].steps + 1;
    let clean: Vec<usize> = (0..steps.len())
        .filter(|&k| steps[k] < poison_from)
        .collect();
    let poisoned: Vec<usize> = (0..steps.len())
        .filter(|&k| steps[k] >= poison_from)
        .collect();
    let late: Vec<usize> = clean
        .iter()
        .copied()
        .filter(|&k| 2 * steps[k] > stages[0].steps)
        .collect();
    let gaps = |earlier: &[usize]| {
        matrices
            .iter()
            .map(|(k, m)| (k.clone(), metrics::phase_gap(m, earlier, &poisoned)))
            .collect()
    };
    let (delta, delta_late) = (gaps(&clean), gaps(&late));
    let compare_time = start.elapsed();

    let study = Study {
        reference: clean[clean.len() - 1],
        steps,
        poison_from,
        stages,
        clean_accuracy,
        attack_success: attack,
        matrices,
        delta,
        delta_late,
        train_time,
        compare_time,
    };
    write(&study, s, out)?;
    Ok(study)
}

/// Every matrix over the checkpoints, read back from their files.
fn compare(
    checkpoints: &[Checkpoint],
    split: &data::Split,
    triggered: &Images,
    show: bool,
) -> Result<Vec<Named>, Box<dyn Error>> {
    let models = load_all(checkpoints)?;
    let mut tensor_metrics = metrics::tensor_and_class_metrics();
    tensor_metrics.push((
        "tensor_data".to_owned(),
        metrics::tensor().with_input_metric(metrics::data_metric(&split.train))?,
    ));
    let mut out = metrics::tensor_matrices(&models, &tensor_metrics, show)?;
    let (clean, trig) = (split.test.rows(), triggered.rows());
    out.push((
        "output_clean".into(),
        metrics::output_matrix(&models, &clean)?,
    ));
    out.push((
        "output_triggered".into(),
        metrics::output_matrix(&models, &trig)?,
    ));
    out.push(("cka_clean".into(), metrics::cka_matrix(&models, &clean)?));
    out.push(("cka_triggered".into(), metrics::cka_matrix(&models, &trig)?));
    out.push(("weight".into(), metrics::weight_matrix(&models)?));
    Ok(out)
}

/// The CSVs, `summary.json` and the figures.
fn write(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    for (key, m) in &study.matrices {
        files::write_matrix(&out.join(format!("{key}.csv")), key, &study.steps, m)?;
    }
    let to_ref = |key: &str| metrics::to_reference(study.matrix(key), study.reference);
    let mut header = vec!["step", "clean_accuracy", "attack_success"];
    let mut columns = vec![
        study.steps.iter().map(|&x| x as f64).collect(),
        study.clean_accuracy.clone(),
        study.attack_success.clone(),
    ];
    let names: Vec<String> = MAIN.iter().map(|k| format!("{k}_to_reference")).collect();
    for (key, name) in MAIN.iter().zip(&names) {
        header.push(name);
        columns.push(to_ref(key));
    }
    files::write_table(&out.join("curves.csv"), &header, &columns)?;

    let mut delta = Map::new();
    let mut delta_late = Map::new();
    let mut matrices = Map::new();
    let mut reference = Map::new();
    for (key, m) in &study.matrices {
        delta.insert(key.clone(), study.delta(key).into());
        delta_late.insert(key.clone(), study.delta_late(key).into());
        matrices.insert(key.clone(), files::matrix_json(m));
        reference.insert(key.clone(), to_ref(key).into());
    }
    let summary = json!({
        "study": "backdoor",
        "data": "scikit-learn digits (UCI, CC BY 4.0), 1437 train / 360 test, pixels / 16",
        "settings": settings_json(s),
        "steps": study.steps,
        "checkpoints": files::checkpoint_files(&study.steps),
        "poison_from": study.poison_from,
        "reference_step": study.steps[study.reference],
        "clean_accuracy": study.clean_accuracy,
        "attack_success": study.attack_success,
        "delta": Value::Object(delta),
        "delta_definition": "mean over pairs of distinct poisoned checkpoints minus mean over (clean, poisoned) pairs",
        "delta_late_clean": Value::Object(delta_late),
        "delta_late_clean_definition": "delta with the clean checkpoints of the second half of the clean phase only",
        "matrices": Value::Object(matrices),
        "to_reference": Value::Object(reference),
    });
    files::write_json(&out.join("summary.json"), &summary)?;
    draw(study, s, out)
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "hidden": s.cfg.hidden,
        "batch": s.cfg.batch,
        "learning_rate": s.cfg.adam.learning_rate,
        "seed": s.cfg.seed,
        "steps_per_phase": s.steps,
        "checkpoints_per_phase": s.checkpoints,
        "poisoned_per_batch": s.poisoned_per_batch,
        "target": s.target,
        "trigger_pixels": data::TRIGGER,
    })
}

fn draw(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    let bands = bands(&study.stages);
    let to_ref = |key: &str| metrics::to_reference(study.matrix(key), study.reference);
    let title = format!(
        "Backdoor on digits: bilinear {} hidden, trigger on {} of {} per batch relabelled {}, seed {}",
        s.cfg.hidden, s.poisoned_per_batch, s.cfg.batch, s.target, s.cfg.seed
    );
    let curves = vec![
        Curves {
            caption: "accuracy on clean test images, attack success".into(),
            y_range: (0.0, 1.0),
            series: vec![
                Series::new("clean accuracy", study.clean_accuracy.clone(), 0),
                Series::new("attack success", study.attack_success.clone(), 1),
            ],
            legend: SeriesLabelPosition::MiddleLeft,
        },
        Curves::fitted(
            format!(
                "similarity to the last clean checkpoint (step {})",
                study.steps[study.reference]
            ),
            MAIN.iter()
                .enumerate()
                .map(|(c, &k)| Series::new(k, to_ref(k), c))
                .collect(),
        )
        .legend(SeriesLabelPosition::LowerRight),
    ];
    let shown = [
        "tensor",
        "tensor_class_9",
        "output_clean",
        "output_triggered",
        "cka_clean",
        "weight",
    ];
    plot::draw(
        &Figure {
            title: title.clone(),
            steps: &study.steps,
            bands: &bands,
            curves,
            heatmaps: shown
                .iter()
                .map(|&k| (format!("{k}  (Δ = {:.3})", study.delta(k)), study.matrix(k)))
                .collect(),
            heatmap_columns: 3,
        },
        &out.join("backdoor.png"),
    )?;
    plot::draw(
        &Figure {
            title: format!("{title}: class slices"),
            steps: &study.steps,
            bands: &bands,
            curves: Vec::new(),
            heatmaps: (0..CLASSES)
                .map(|c| {
                    let k = format!("tensor_class_{c}");
                    (
                        format!("class {c}  (Δ = {:.3})", study.delta(&k)),
                        study.matrix(&k),
                    )
                })
                .collect(),
            heatmap_columns: 5,
        },
        &out.join("backdoor_classes.png"),
    )
}
