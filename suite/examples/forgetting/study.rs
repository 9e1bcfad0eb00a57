//! The forgetting study: train the curriculum, checkpoint, reload, compare,
//! write.

use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use nalgebra::DMatrix;
use plotters::prelude::SeriesLabelPosition;
use serde_json::{Map, Value, json};

use crate::studies::curriculum::{self, ADD_9, READD_9, REMOVE_9};
use crate::studies::data::{self, CLASSES};
use crate::studies::metrics::{self, Named};
use crate::studies::plot::{self, Curves, Figure, Series};
use crate::studies::train::{self, Config, Stage};
use crate::studies::{bands, files, load_all};

/// Everything that defines a run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Model, batches, Adam, seed.
    pub cfg: Config,
    /// Optimiser steps of each stage.
    pub steps: usize,
    /// Checkpoints in each stage (besides the initial weights).
    pub checkpoints: usize,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cfg: Config::default(),
            steps: 1000,
            checkpoints: 5,
            progress: true,
        }
    }
}

/// The keys of the matrices the figure and the report show, in order.
pub const MAIN: [&str; 5] = ["tensor", "tensor_class_9", "output", "cka", "weight"];

/// What a run produced.
#[derive(Debug)]
pub struct Study {
    /// The step of each checkpoint.
    pub steps: Vec<usize>,
    /// The stage of each checkpoint (the initial weights count to the first).
    pub stage_of: Vec<usize>,
    /// The curriculum.
    pub stages: Vec<Stage>,
    /// Test accuracy over all ten classes, per checkpoint.
    pub accuracy: Vec<f64>,
    /// Test accuracy over the classes the checkpoint's stage trains.
    pub accuracy_seen: Vec<f64>,
    /// Test accuracy per class (`[checkpoint][class]`).
    pub class_accuracy: Vec<Vec<f64>>,
    /// Every matrix, by key.
    pub matrices: Vec<Named>,
    /// The index of each stage's last checkpoint.
    pub stage_ends: Vec<usize>,
    /// Wall time of training (with writing the checkpoints).
    pub train_time: Duration,
    /// Wall time of the matrices (with reading the checkpoints back).
    pub compare_time: Duration,
}

impl Study {
    /// The matrix of `key`.
    pub fn matrix(&self, key: &str) -> &DMatrix<f64> {
        &self
            .matrices
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no matrix {key}"))
            .1
    }

    /// The checkpoints of stage `k`.
    pub fn in_stage(&self, k: usize) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.stage_of[i] == k && self.steps[i] > 0)
            .collect()
    }

    /// The phase gap of `key` between stages `earlier` and `later`.
    pub fn gap(&self, key: &str, earlier: usize, later: usize) -> f64 {
        metrics::phase_gap(
            self.matrix(key),
            &self.in_stage(earlier),
            &self.in_stage(later),
        )
    }

    /// The similarity under `key` of the ends of stages `a` and `b`.
    pub fn between_ends(&self, key: &str, a: usize, b: usize) -> f64 {
        self.matrix(key)[(self.stage_ends[a], self.stage_ends[b])]
    }
}

/// Runs the study, writing everything under `out`.
pub fn run(s: &Settings, out: &Path) -> Result<Study, Box<dyn Error>> {
    if s.steps == 0 || s.checkpoints == 0 {
        return Err(format!(
            "need at least one step and one checkpoint per stage; got {} steps, {} checkpoints",
            s.steps, s.checkpoints
        )
        .into());
    }
    let split = data::split(&data::load()?, data::SPLIT_SEED);
    let start = Instant::now();
    let (stages, checkpoints) = curriculum::run(
        &s.cfg,
        &split.train,
        s.steps,
        s.checkpoints,
        &out.join("checkpoints"),
        s.progress,
    )?;
    let train_time = start.elapsed();

    let start = Instant::now();
    let test = &split.test;
    let class_accuracy: Vec<Vec<f64>> = checkpoints
        .iter()
        .map(|c| c.params.class_accuracy(&test.x, &test.y))
        .collect();
    let accuracy = checkpoints
        .iter()
        .map(|c| c.params.evaluate(&test.x, &test.y).accuracy)
        .collect();
    let accuracy_seen = checkpoints
        .iter()
        .map(|c| {
            let seen = test.only(&stages[c.stage].classes);
            c.params.evaluate(&seen.x, &seen.y).accuracy
        })
        .collect();
    let models = load_all(&checkpoints)?;
    let mut matrices =
        metrics::tensor_matrices(&models, &metrics::tensor_and_class_metrics(), s.progress)?;
    let rows = test.rows();
    matrices.push(("output".into(), metrics::output_matrix(&models, &rows)?));
    matrices.push(("cka".into(), metrics::cka_matrix(&models, &rows)?));
    matrices.push(("weight".into(), metrics::weight_matrix(&models)?));
    let steps: Vec<usize> = checkpoints.iter().map(|c| c.step).collect();
    let stage_of: Vec<usize> = checkpoints.iter().map(|c| c.stage).collect();
    let ends = train::bounds(&stages);
    let stage_ends = ends[1..]
        .iter()
        .map(|e| {
            steps
                .iter()
                .position(|s| s == e)
                .ok_or("a stage end without checkpoint")
        })
        .collect::<Result<_, _>>()?;
    let compare_time = start.elapsed();

    let study = Study {
        steps,
        stage_of,
        stages,
        accuracy,
        accuracy_seen,
        class_accuracy,
        matrices,
        stage_ends,
        train_time,
        compare_time,
    };
    write(&study, s, out)?;
    Ok(study)
}

/// The CSVs, `summary.json` and the figures.
fn write(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    for (key, m) in &study.matrices {
        files::write_matrix(&out.join(format!("{key}.csv")), key, &study.steps, m)?;
    }
    // Accuracies per checkpoint.
    let mut header = vec![
        "step".to_owned(),
        "stage".to_owned(),
        "accuracy".to_owned(),
        "accuracy_seen".to_owned(),
    ];
    let mut columns = vec![
        study.steps.iter().map(|&x| x as f64).collect(),
        study.stage_of.iter().map(|&x| x as f64).collect(),
        study.accuracy.clone(),
        study.accuracy_seen.clone(),
    ];
    for c in 0..CLASSES {
        header.push(format!("accuracy_class_{c}"));
        columns.push(study.class_accuracy.iter().map(|a| a[c]).collect());
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    files::write_table(&out.join("accuracy.csv"), &header, &columns)?;
    // Every matrix's row of each stage end: similarity to the end of each stage.
    let mut header = vec!["step".to_owned()];
    let mut columns = vec![study.steps.iter().map(|&x| x as f64).collect()];
    let mut to_ends = Map::new();
    for (key, m) in &study.matrices {
        let mut per_stage = Map::new();
        for (k, &e) in study.stage_ends.iter().enumerate() {
            header.push(format!("{key}_to_end_of_stage_{k}"));
            let row = metrics::to_reference(m, e);
            columns.push(row.clone());
            per_stage.insert(study.stages[k].name.clone(), row.into());
        }
        to_ends.insert(key.clone(), Value::Object(per_stage));
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    files::write_table(&out.join("to_stage_ends.csv"), &header, &columns)?;

    let b = train::bounds(&study.stages);
    let stages: Vec<Value> = study
        .stages
        .iter()
        .enumerate()
        .map(|(k, st)| {
            let e = study.stage_ends[k];
            json!({
                "name": st.name,
                "classes": st.classes,
                "first_step": b[k] + 1,
                "last_step": b[k + 1],
                "accuracy_at_end": study.accuracy[e],
                "accuracy_seen_at_end": study.accuracy_seen[e],
                "class_accuracy_at_end": study.class_accuracy[e],
            })
        })
        .collect();
    let mut matrices = Map::new();
    let mut remove = Map::new();
    let mut readd = Map::new();
    let mut ends = Map::new();
    for (key, m) in &study.matrices {
        matrices.insert(key.clone(), files::matrix_json(m));
        remove.insert(key.clone(), study.gap(key, ADD_9, REMOVE_9).into());
        readd.insert(key.clone(), study.gap(key, REMOVE_9, READD_9).into());
        ends.insert(
            key.clone(),
            json!({
                "remove_9_vs_add_8": study.between_ends(key, REMOVE_9, ADD_9 - 1),
                "remove_9_vs_add_9": study.between_ends(key, REMOVE_9, ADD_9),
                "readd_9_vs_add_9": study.between_ends(key, READD_9, ADD_9),
            }),
        );
    }
    let summary = json!({
        "study": "forgetting",
        "data": "scikit-learn digits (UCI, CC BY 4.0), 1437 train / 360 test, pixels / 16",
        "settings": {
            "hidden": s.cfg.hidden,
            "batch": s.cfg.batch,
            "learning_rate": s.cfg.adam.learning_rate,
            "seed": s.cfg.seed,
            "steps_per_stage": s.steps,
            "checkpoints_per_stage": s.checkpoints,
        },
        "stages": stages,
        "steps": study.steps,
        "stage_of_checkpoint": study.stage_of,
        "checkpoints": files::checkpoint_files(&study.steps),
        "accuracy": study.accuracy,
        "accuracy_seen": study.accuracy_seen,
        "class_accuracy": study.class_accuracy,
        "matrices": Value::Object(matrices),
        "to_stage_ends": Value::Object(to_ends),
        "delta_remove_9": Value::Object(remove),
        "delta_readd_9": Value::Object(readd),
        "delta_definition": "mean over pairs of distinct checkpoints of the later stage minus mean over (earlier, later) pairs; remove_9: stage '+9' then '-9', readd_9: '-9' then '+9 again'",
        "stage_ends": Value::Object(ends),
    });
    files::write_json(&out.join("summary.json"), &summary)?;
    draw(study, s, out)
}

fn draw(study: &Study, s: &Settings, out: &Path) -> Result<(), Box<dyn Error>> {
    let bands = bands(&study.stages);
    let nine: Vec<f64> = study.class_accuracy.iter().map(|a| a[9]).collect();
    let end_of =
        |key: &str, k: usize| metrics::to_reference(study.matrix(key), study.stage_ends[k]);
    let add_9 = study.steps[study.stage_ends[ADD_9]];
    let title = format!(
        "Forgetting on digits: curriculum 0-4, +5 … +9, -9, +9 again, {} steps a stage; bilinear {} hidden, seed {}",
        s.steps, s.cfg.hidden, s.cfg.seed
    );
    let curves = vec![
        Curves {
            caption: "test accuracy".into(),
            y_range: (0.0, 1.0),
            series: vec![
                Series::new("classes of the stage", study.accuracy_seen.clone(), 0),
                Series::new("all ten classes", study.accuracy.clone(), 2),
                Series::new("class 9", nine, 1),
            ],
            legend: SeriesLabelPosition::LowerRight,
        },
        Curves::fitted(
            "tensor similarity to the end of each stage",
            (0..study.stages.len())
                .map(|k| {
                    Series::new(
                        format!("end of {}", study.stages[k].name),
                        end_of("tensor", k),
                        k,
                    )
                    .thin()
                })
                .collect(),
        )
        .legend(SeriesLabelPosition::LowerRight),
        Curves::fitted(
            format!("similarity to the end of stage +9 (step {add_9})"),
            MAIN.iter()
                .enumerate()
                .map(|(c, &k)| Series::new(k, end_of(k, ADD_9), c))
                .collect(),
        )
        .legend(SeriesLabelPosition::LowerRight),
    ];
    plot::draw(
        &Figure {
            title: title.clone(),
            steps: &study.steps,
            bands: &bands,
            curves,
            heatmaps: MAIN
                .iter()
                .map(|&k| (k.to_owned(), study.matrix(k)))
                .collect(),
            heatmap_columns: 5,
        },
        &out.join("forgetting.png"),
    )?;
    plot::draw(
        &Figure {
            title: format!("{title}: class slices"),
            steps: &study.steps,
            bands: &bands,
            curves: Vec::new(),
            heatmaps: (0..CLASSES)
                .map(|c| {
                    (
                        format!("class {c}"),
                        study.matrix(&format!("tensor_class_{c}")),
                    )
                })
                .collect(),
            heatmap_columns: 5,
        },
        &out.join("forgetting_classes.png"),
    )
}
