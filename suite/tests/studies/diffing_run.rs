//! The diffing study (`suite/examples/diffing/`), a short run: its files
//! against each other, the library, a dense oracle and the command line.

use std::path::{Path, PathBuf};

use tensor_similarity::{RecursiveSimilarity, io};

use crate::cli;
use crate::diffing::{KEYS, Settings, run};
use crate::studies::curriculum::ADD_9;
use crate::studies::data::{self, CLASSES};
use crate::studies::{checks, metrics, oracle};

fn short() -> Settings {
    Settings {
        steps: 40,
        checkpoints: 1,
        base_steps: 100,
        finetune_steps: 40,
        progress: false,
        ..Settings::default()
    }
}

/// Column `name` of a CSV table.
fn column(path: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let k = lines
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    lines
        .map(|l| l.split(',').nth(k).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_short_run_writes_consistent_files_and_the_same_files_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = short();
    let study = run(&s, dir.path()).unwrap();
    assert_eq!(study.steps, (0..=8).map(|k| 40 * k).collect::<Vec<_>>());
    assert_eq!(study.b_steps, [100, 140]);
    assert_eq!(study.cumulative.len(), 8);

    let summary = checks::summary(dir.path());
    for key in [
        "steps",
        "b",
        "cumulative",
        "increments",
        "stages",
        "checkpoints",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    for key in KEYS {
        assert_eq!(
            summary["cumulative"][key].as_array().unwrap().len(),
            8,
            "{key}"
        );
    }
    assert_eq!(
        summary["b"]["finetuned"]["file"],
        "b/checkpoints/step_140.safetensors"
    );
    for file in ["difference.csv", "difference_by_stage.csv", "diffing.png"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }

    // ⟨A_t − A_0, B_ft − B_base⟩ at the end of "+9" (t = 6), from the
    // files: by the library (its argument order: the start of each
    // direction first) and by the dense oracle.
    let a_path = |t: usize| {
        dir.path()
            .join(format!("checkpoints/step_{}.safetensors", 40 * t))
    };
    let b_path = |step: usize| {
        dir.path()
            .join(format!("b/checkpoints/step_{step}.safetensors"))
    };
    let load = |p: PathBuf| io::load(p).unwrap();
    let (a0, a6, b0, b1) = (
        load(a_path(0)),
        load(a_path(6)),
        load(b_path(100)),
        load(b_path(140)),
    );
    let csv = dir.path().join("difference.csv");
    let steps = column(&csv, "step");
    let row = steps.iter().position(|&x| x == 240.0).unwrap();
    let close = |x: f64, y: f64, what: &str| assert!((x - y).abs() < 1e-12, "{what}: {x} vs {y}");
    let tensor = column(&csv, "tensor")[row];
    let class_9 = column(&csv, "tensor_class_9")[row];
    close(
        tensor,
        metrics::tensor()
            .difference_similarity(&a0, &a6, &b0, &b1)
            .unwrap(),
        "tensor",
    );
    close(
        class_9,
        metrics::class_slice(9)
            .difference_similarity(&a0, &a6, &b0, &b1)
            .unwrap(),
        "class 9",
    );
    let dense = |p: PathBuf| oracle::dense_tensor(&p);
    let da = oracle::minus(&dense(a_path(6)), &dense(a_path(0)));
    let db = oracle::minus(&dense(b_path(140)), &dense(b_path(100)));
    let all: Vec<usize> = (0..CLASSES).collect();
    // Differences of nearby tensors lose digits (the library's
    // difference similarity warns of ε‖A‖²/‖A1−A0‖²); 1e-9 is far above.
    assert!((tensor - oracle::cosine(&da, &db, &all)).abs() < 1e-9);
    assert!((class_9 - oracle::cosine(&da, &db, &[9])).abs() < 1e-9);
    // The reversed direction scores the opposite.
    close(
        -tensor,
        metrics::tensor()
            .difference_similarity(&a6, &a0, &b0, &b1)
            .unwrap(),
        "reversed",
    );

    // An interval, A_6 − A_5, and the output baseline from the library's
    // forward passes.
    let a5 = load(a_path(5));
    close(
        column(&csv, "tensor_class_9_increment")[row],
        metrics::class_slice(9)
            .difference_similarity(&a5, &a6, &b0, &b1)
            .unwrap(),
        "increment",
    );
    let split = data::split(&data::load().unwrap(), data::SPLIT_SEED);
    let x = split.test.rows();
    let fa = a6.forward_rows(&x).unwrap() - a0.forward_rows(&x).unwrap();
    let fb = b1.forward_rows(&x).unwrap() - b0.forward_rows(&x).unwrap();
    close(
        column(&csv, "output")[row],
        fa.dot(&fb) / (fa.norm() * fb.norm()),
        "output",
    );
    // A stage's score is its first-to-last direction.
    let by_stage = dir.path().join("difference_by_stage.csv");
    close(
        column(&by_stage, "tensor_class_9")[ADD_9],
        metrics::class_slice(9)
            .difference_similarity(&a5, &a6, &b0, &b1)
            .unwrap(),
        "stage +9",
    );

    // `difference A1 A0 B1 B0` on the command line (each direction's end
    // first, unlike the library's start-first arguments).
    let names = [
        "checkpoints/step_240.safetensors",
        "checkpoints/step_0.safetensors",
        "b/checkpoints/step_140.safetensors",
        "b/checkpoints/step_100.safetensors",
    ];
    let mut args = vec!["difference"];
    args.extend(names);
    close(cli::number(dir.path(), &args), tensor, "difference");
    args.extend(["--outputs", "9"]);
    close(
        cli::number(dir.path(), &args),
        class_9,
        "difference --outputs 9",
    );

    let again = tempfile::tempdir().unwrap();
    run(&s, again.path()).unwrap();
    checks::assert_same_files(dir.path(), again.path());
}

#[test]
fn bad_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for s in [
        Settings {
            steps: 0,
            ..short()
        },
        Settings {
            base_steps: 0,
            ..short()
        },
        Settings {
            finetune_steps: 0,
            ..short()
        },
    ] {
        let err = run(&s, dir.path()).unwrap_err();
        assert!(err.to_string().contains("got"), "{err}");
    }
}
