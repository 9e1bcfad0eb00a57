//! The backdoor study (`suite/examples/backdoor/`), a short run: its files
//! against each other, the library, a dense oracle and the command line.

use tensor_similarity::{RecursiveSimilarity, io, output_cosine, weight_cosine};

use crate::backdoor::{Settings, run};
use crate::cli;
use crate::studies::data::{self, CLASSES};
use crate::studies::{checks, files, metrics, oracle};

fn short() -> Settings {
    Settings {
        steps: 150,
        checkpoints: 4,
        progress: false,
        ..Settings::default()
    }
}

#[test]
fn a_short_run_writes_consistent_files_and_the_same_files_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = short();
    let study = run(&s, dir.path()).unwrap();
    let n = 8;
    assert_eq!(study.steps, [38, 75, 113, 150, 188, 225, 263, 300]);
    assert_eq!(study.poison_from, 151);

    let summary = checks::summary(dir.path());
    for key in [
        "steps",
        "poison_from",
        "clean_accuracy",
        "attack_success",
        "delta",
        "matrices",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    assert_eq!(summary["poison_from"], 151);
    assert_eq!(summary["steps"].as_array().unwrap().len(), n);
    let keys = [
        "tensor",
        "tensor_class_9",
        "output_clean",
        "output_triggered",
        "cka_clean",
        "weight",
    ];
    let extra: Vec<String> = (0..CLASSES).map(|c| format!("tensor_class_{c}")).collect();
    for key in keys.iter().copied().chain(extra.iter().map(String::as_str)) {
        assert!(summary["delta"][key].is_f64(), "delta.{key}");
        let (names, csv) = files::read_matrix(&dir.path().join(format!("{key}.csv"))).unwrap();
        assert_eq!(names, files::stems(&study.steps));
        assert_eq!(csv.shape(), (n, n), "{key}");
        checks::assert_similarity_matrix(key, &csv);
        checks::assert_json_close(&summary["matrices"][key], &csv, key);
        // The gap recomputed from the CSV, clean = the first four.
        let gap = metrics::phase_gap(&csv, &[0, 1, 2, 3], &[4, 5, 6, 7]);
        checks::assert_close(summary["delta"][key].as_f64().unwrap(), gap, key);
    }
    for file in ["curves.csv", "backdoor.png", "backdoor_classes.png"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }

    // Entries recomputed from the checkpoint files, as a user would.
    let path = |k: usize| {
        dir.path()
            .join(format!("checkpoints/step_{}.safetensors", study.steps[k]))
    };
    let (i, j) = (2, 6);
    let (a, b) = (io::load(path(i)).unwrap(), io::load(path(j)).unwrap());
    let csv = |key: &str| {
        files::read_matrix(&dir.path().join(format!("{key}.csv")))
            .unwrap()
            .1[(i, j)]
    };
    let close = |x: f64, y: f64, what: &str| assert!((x - y).abs() < 1e-12, "{what}: {x} vs {y}");
    close(
        csv("tensor"),
        tensor_similarity::similarity(&a, &b).unwrap(),
        "tensor",
    );
    close(
        csv("tensor_class_9"),
        metrics::class_slice(9).similarity(&a, &b).unwrap(),
        "class 9 slice",
    );
    close(csv("weight"), weight_cosine(&a, &b).unwrap(), "weight");
    let split = data::split(&data::load().unwrap(), data::SPLIT_SEED);
    close(
        csv("output_triggered"),
        output_cosine(&a, &b, &split.test.triggered().rows()).unwrap(),
        "output on triggered images",
    );
    // The dense tensor from the raw safetensors bytes: an oracle that
    // shares neither the library's reader nor its recursion. Rounding
    // in a sum of 40 960 products: far below 1e-9.
    let (ta, tb) = (
        oracle::dense_tensor(&path(i)),
        oracle::dense_tensor(&path(j)),
    );
    let all: Vec<usize> = (0..CLASSES).collect();
    assert!((csv("tensor") - oracle::cosine(&ta, &tb, &all)).abs() < 1e-9);
    assert!((csv("tensor_class_9") - oracle::cosine(&ta, &tb, &[9])).abs() < 1e-9);

    // Attack success from the library's forward pass of the files.
    let triggered = split.test.triggered();
    let last = io::load(path(n - 1)).unwrap();
    let logits = last.forward_rows(&triggered.rows()).unwrap();
    let (mut hits, mut total) = (0, 0);
    for (row, &y) in logits.row_iter().zip(&triggered.y) {
        if y != 9 {
            total += 1;
            hits += usize::from(row.transpose().argmax().0 == 9);
        }
    }
    let expected = hits as f64 / total as f64;
    checks::assert_close(
        summary["attack_success"][n - 1].as_f64().unwrap(),
        expected,
        "attack success",
    );
    // 150 poisoned steps teach the trigger.
    assert!(expected > 0.5, "attack success {expected}");
    assert!(study.clean_accuracy[3] > 0.8, "{:?}", study.clean_accuracy);

    // The command line, run in the study's directory on its checkpoints,
    // writes the same matrices byte for byte (the class slices with
    // --outputs-each), and `compare --outputs 9` gives the class-9 entry.
    let names = files::checkpoint_files(&study.steps);
    let elsewhere = tempfile::tempdir().unwrap();
    let written = |name: &str| std::fs::read(elsewhere.path().join(name)).unwrap();
    let ours = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    cli::matrix(
        dir.path(),
        &names,
        &elsewhere.path().join("tensor.csv"),
        &[],
    );
    assert!(written("tensor.csv") == ours("tensor.csv"), "tensor.csv");
    cli::matrix(
        dir.path(),
        &names,
        &elsewhere.path().join("tensor_class.csv"),
        &["--outputs-each"],
    );
    for c in 0..CLASSES {
        // `-o tensor_class.csv` writes `tensor_class_{c}.csv`, the study's name.
        let name = format!("tensor_class_{c}.csv");
        assert!(written(&name) == ours(&name), "{name}");
    }
    let (a, b) = (names[i].as_str(), names[j].as_str());
    close(
        cli::number(dir.path(), &["compare", a, b, "--outputs", "9"]),
        csv("tensor_class_9"),
        "compare --outputs 9",
    );
    close(
        cli::number(dir.path(), &["compare", a, b]),
        csv("tensor"),
        "compare",
    );

    // The same command writes the same files.
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
            checkpoints: 1,
            ..short()
        },
        Settings {
            target: 10,
            ..short()
        },
    ] {
        let err = run(&s, dir.path()).unwrap_err();
        assert!(err.to_string().contains("got"), "{err}");
    }
}
