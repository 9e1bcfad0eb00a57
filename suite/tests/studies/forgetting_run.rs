//! The forgetting study (`suite/examples/forgetting/`), a short run: its
//! files against each other, the library, a dense oracle and the command
//! line.

use tensor_similarity::{RecursiveSimilarity, io, linear_cka, weight_cosine};

use crate::cli;
use crate::forgetting::{Settings, run};
use crate::studies::curriculum::{ADD_9, REMOVE_9};
use crate::studies::data::{self, CLASSES};
use crate::studies::{checks, files, metrics, oracle};

fn short() -> Settings {
    Settings {
        steps: 60,
        checkpoints: 2,
        progress: false,
        ..Settings::default()
    }
}

#[test]
fn a_short_run_writes_consistent_files_and_the_same_files_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = short();
    let study = run(&s, dir.path()).unwrap();
    let n = 1 + 8 * 2;
    assert_eq!(study.steps.len(), n);
    assert_eq!(study.steps[..3], [0, 30, 60]);
    assert_eq!(study.stage_ends, (1..=8).map(|k| 2 * k).collect::<Vec<_>>());

    let summary = checks::summary(dir.path());
    for key in [
        "stages",
        "steps",
        "accuracy",
        "accuracy_seen",
        "class_accuracy",
        "matrices",
        "to_stage_ends",
        "delta_remove_9",
        "delta_readd_9",
        "stage_ends",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 8);
    assert_eq!(stages[REMOVE_9]["name"], "-9");
    assert_eq!(stages[REMOVE_9]["first_step"], 6 * 60 + 1);
    assert_eq!(stages[REMOVE_9]["classes"].as_array().unwrap().len(), 9);
    let keys: Vec<String> = ["tensor", "output", "cka", "weight"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..CLASSES).map(|c| format!("tensor_class_{c}")))
        .collect();
    let read = files::read_matrix;
    for key in &keys {
        let (names, csv) = read(&dir.path().join(format!("{key}.csv"))).unwrap();
        assert_eq!(names, files::stems(&study.steps));
        checks::assert_similarity_matrix(key, &csv);
        checks::assert_json_close(&summary["matrices"][key], &csv, key);
        // The curve to the end of "-9" is that checkpoint's row.
        let row: Vec<f64> = summary["to_stage_ends"][key]["-9"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (i, v) in row.iter().enumerate() {
            checks::assert_close(*v, csv[(study.stage_ends[REMOVE_9], i)], key);
        }
        assert!(summary["delta_remove_9"][key].is_f64(), "{key}");
    }
    for file in [
        "accuracy.csv",
        "to_stage_ends.csv",
        "forgetting.png",
        "forgetting_classes.png",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }

    // Entries recomputed from the checkpoint files: the end of "+9"
    // against the end of "-9".
    let (i, j) = (study.stage_ends[ADD_9], study.stage_ends[REMOVE_9]);
    let path = |k: usize| {
        dir.path()
            .join(format!("checkpoints/step_{}.safetensors", study.steps[k]))
    };
    let (a, b) = (io::load(path(i)).unwrap(), io::load(path(j)).unwrap());
    let csv = |key: &str| read(&dir.path().join(format!("{key}.csv"))).unwrap().1[(i, j)];
    let close = |x: f64, y: f64, what: &str| assert!((x - y).abs() < 1e-12, "{what}: {x} vs {y}");
    close(
        csv("tensor"),
        tensor_similarity::similarity(&a, &b).unwrap(),
        "tensor",
    );
    for c in [0, 9] {
        close(
            csv(&format!("tensor_class_{c}")),
            metrics::class_slice(c).similarity(&a, &b).unwrap(),
            "class slice",
        );
    }
    let split = data::split(&data::load().unwrap(), data::SPLIT_SEED);
    close(
        csv("cka"),
        linear_cka(&a, &b, &split.test.rows()).unwrap(),
        "cka",
    );
    close(csv("weight"), weight_cosine(&a, &b).unwrap(), "weight");
    let (ta, tb) = (
        oracle::dense_tensor(&path(i)),
        oracle::dense_tensor(&path(j)),
    );
    assert!((csv("tensor_class_9") - oracle::cosine(&ta, &tb, &[9])).abs() < 1e-9);

    // Per-class accuracy from the library's forward pass of a file.
    let logits = b.forward_rows(&split.test.rows()).unwrap();
    let nines: Vec<bool> = logits
        .row_iter()
        .zip(&split.test.y)
        .filter(|(_, y)| **y == 9)
        .map(|(row, _)| row.transpose().argmax().0 == 9)
        .collect();
    let expected = nines.iter().filter(|&&r| r).count() as f64 / nines.len() as f64;
    checks::assert_close(study.class_accuracy[j][9], expected, "class 9 accuracy");
    // Before 9 is ever trained, no image is called 9.
    assert_eq!(study.class_accuracy[study.stage_ends[ADD_9 - 1]][9], 0.0);

    // The command line on the checkpoints: the same tensor.csv, byte for
    // byte, and the class-9 entry by `compare --outputs 9`.
    let names = files::checkpoint_files(&study.steps);
    let elsewhere = tempfile::tempdir().unwrap();
    let cli_csv = elsewhere.path().join("tensor.csv");
    cli::matrix(dir.path(), &names, &cli_csv, &[]);
    assert!(
        std::fs::read(&cli_csv).unwrap() == std::fs::read(dir.path().join("tensor.csv")).unwrap()
    );
    close(
        cli::number(
            dir.path(),
            &["compare", &names[i], &names[j], "--outputs", "9"],
        ),
        csv("tensor_class_9"),
        "compare --outputs 9",
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
            checkpoints: 0,
            ..short()
        },
    ] {
        let err = run(&s, dir.path()).unwrap_err();
        assert!(err.to_string().contains("got"), "{err}");
    }
}
