//! The `tensor-similarity` binary, run as a user would: values on stdout,
//! errors as one line on stderr with a non-zero exit code.
//!
//! The binary under test is the crate's `src/bin/tensor-similarity`, built
//! from the same source as this package's `tensor-similarity-repo` (so that
//! these tests and their fixtures stay out of the published `.crate`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::files::*;
use common::*;
use nalgebra::DVector;
use tensor_similarity::io::{self, Dtype, Layout};
use tensor_similarity::{
    GaussianSimilarity, Model, RecursiveSimilarity, similarity, weight_cosine,
};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tensor-similarity-repo"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// `n` related models (one base, perturbed), saved in varied layouts and dtypes.
fn models(dir: &Path, n: usize) -> Vec<(PathBuf, Model<f64>)> {
    (0..n)
        .map(|i| {
            let model = embed_body_head(100 + i as u64, 1, 1.0);
            let path = dir.join(format!("model-{i}.safetensors"));
            let (layout, dtype) = [
                (Layout::Described, Dtype::F64),
                (Layout::EmbedBodyHead, Dtype::F64),
                (Layout::Described, Dtype::F64),
            ][i % 3];
            io::save_with_dtype(&model, &path, layout, dtype).unwrap();
            (path, model)
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn compare_prints_the_similarity_alone() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let out = run(&["compare", s(&m[0].0), s(&m[1].0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1);
    let value: f64 = text.trim().parse().unwrap();
    // Shortest round-trip printing: the exact f64 the library computes.
    assert_eq!(value, similarity(&m[0].1, &m[1].1).unwrap());

    let out = run(&["compare", s(&m[0].0), s(&m[1].0), "--metric", "weight"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: f64 = stdout(&out).trim().parse().unwrap();
    assert_eq!(value, weight_cosine(&m[0].1, &m[1].1).unwrap());
}

#[test]
fn compare_gaussian_says_whether_it_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let metric = GaussianSimilarity::new();
    let out = run(&["compare", s(&m[0].0), s(&m[1].0), "--metric", "gaussian"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: f64 = stdout(&out).trim().parse().unwrap();
    assert_eq!(value, metric.similarity(&m[0].1, &m[1].1).unwrap());
    let out = run(&[
        "compare",
        s(&m[0].0),
        s(&m[1].0),
        "--metric",
        "gaussian",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["metric"], "gaussian");
    assert_eq!(v["exact"], metric.is_exact(&m[0].1, &m[1].1));
    // The tensor metric is always exact and says nothing.
    let out = run(&["compare", s(&m[0].0), s(&m[1].0), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v.get("exact").is_none());
}

#[test]
fn compare_json() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let out = run(&["compare", s(&m[0].0), s(&m[1].0), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["metric"], "tensor");
    assert_eq!(v["a"], s(&m[0].0));
    assert_eq!(
        v["similarity"].as_f64().unwrap(),
        similarity(&m[0].1, &m[1].1).unwrap()
    );
}

#[test]
fn compare_residual_scale_applies_to_files_without_metadata() {
    let dir = tempfile::tempdir().unwrap();
    // A bi_linear/projection file written without metadata, h = m = 2.
    let tensors = [
        raw(
            "bi_linear.weight",
            &[4, 2],
            vec![1.0, 0.5, -1.0, 2.0, 0.25, 1.0, 3.0, -0.5],
        ),
        raw("projection.weight", &[1, 2], vec![1.0, -1.0]),
    ];
    let path = dir.path().join("plain.safetensors");
    write_file(&path, &tensors, safetensors::Dtype::F32, None);
    let plain = io::load(&path).unwrap();
    let mixed = io::load_with(
        &path,
        &io::LoadOptions {
            residual_scale: Some(0.5),
            ..Default::default()
        },
    )
    .unwrap();
    // The same s = 1 model with metadata, which ignores the option.
    let described = dir.path().join("described.safetensors");
    io::save(&plain, &described, Layout::Described).unwrap();
    let expected = similarity(&mixed, &plain).unwrap();
    assert!(
        expected < 0.999,
        "the residual changes the model: {expected}"
    );
    let out = run(&[
        "compare",
        s(&path),
        s(&described),
        "--residual-scale",
        "0.5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim().parse::<f64>().unwrap(), expected);
    let out = run(&["compare", s(&path), s(&described)]);
    assert_eq!(stdout(&out).trim().parse::<f64>().unwrap(), 1.0);
}

#[test]
fn compare_errors_are_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 1);
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a model at all").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["compare", s(&m[0].0), s(&bad)], "bad.safetensors"),
        (
            vec!["compare", s(&m[0].0), "/nonexistent/x.safetensors"],
            "x.safetensors",
        ),
    ];
    for (args, needle) in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stdout(&out).is_empty());
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    }
    // Incomparable models: different output widths.
    let other = dir.path().join("other.safetensors");
    io::save(&bilinear_projection(1, 1.0), &other, Layout::Described).unwrap();
    let out = run(&["compare", s(&m[0].0), s(&other)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not comparable"), "{}", stderr(&out));
    // A usage error is clap's (exit 2).
    let out = run(&["compare", s(&m[0].0)]);
    assert_eq!(out.status.code(), Some(2));
}

/// The CSV's header (after its corner cell), row labels and rows.
fn parse_csv(text: &str) -> (Vec<String>, Vec<String>, Vec<Vec<f64>>) {
    let mut lines = text.lines();
    let mut header = lines.next().unwrap().split(',').map(str::to_owned);
    assert_eq!(header.next().as_deref(), Some("model"));
    let (mut labels, mut rows) = (Vec::new(), Vec::new());
    for line in lines {
        let mut fields = line.split(',');
        labels.push(fields.next().unwrap().to_owned());
        rows.push(fields.map(|v| v.parse().unwrap()).collect());
    }
    (header.collect(), labels, rows)
}

#[test]
fn matrix_writes_a_symmetric_csv_with_unit_diagonal_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 4);
    let csv = dir.path().join("out.csv");
    let png = dir.path().join("out.png");
    let mut args = vec!["matrix"];
    args.extend(m.iter().map(|(p, _)| s(p)));
    args.extend(["-o", s(&csv), "--plot", s(&png)]);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let (header, labels, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(header, ["model-0", "model-1", "model-2", "model-3"]);
    let paths: Vec<&str> = m.iter().map(|(p, _)| s(p)).collect();
    assert_eq!(labels, paths);
    assert_eq!(rows.len(), 4);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 4);
        assert_eq!(row[i], 1.0);
        for (j, &v) in row.iter().enumerate() {
            assert_eq!(v, rows[j][i], "symmetric");
            if i != j {
                let direct = similarity(&m[i].1, &m[j].1).unwrap();
                assert!((v - direct).abs() < 1e-12, "{v} vs {direct}");
            }
        }
    }
    let png = std::fs::read(&png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(png.len() > 1000);

    // Without -o the CSV goes to stdout; weight metric too.
    let mut args = vec!["matrix", "--metric", "weight"];
    args.extend(m.iter().map(|(p, _)| s(p)));
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, _, rows) = parse_csv(&stdout(&out));
    let direct = weight_cosine(&m[1].1, &m[3].1).unwrap();
    assert!((rows[1][3] - direct).abs() < 1e-12);
}

#[test]
fn matrix_fails_cleanly_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let bad = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(&m[0].0).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&["matrix", s(&m[0].0), s(&m[1].0), s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cut.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    // A heatmap of one model is refused; an unwritable CSV path is an error.
    let png = dir.path().join("one.png");
    let out = run(&["matrix", s(&m[0].0), "--plot", s(&png)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("at least two models"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "matrix",
        s(&m[0].0),
        s(&m[1].0),
        "-o",
        "/nonexistent/dir/x.csv",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("x.csv"), "{}", stderr(&out));
}

#[test]
fn inspect_describes_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ebh.safetensors");
    io::save_with_dtype(
        &embed_body_head(5, 2, 0.5),
        &path,
        Layout::EmbedBodyHead,
        Dtype::BF16,
    )
    .unwrap();
    let out = run(&["inspect", s(&path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("layout:     tensor_similarity metadata"),
        "{text}"
    );
    assert!(
        text.contains("4 blocks, input width 5, output width 3, degree 4"),
        "{text}"
    );
    assert!(
        text.contains("body.1.d.weight") && text.contains("BF16"),
        "{text}"
    );
    // A bilinear row: kind, widths 4 → 4, order 2, hidden 6, the lerp
    // residual 0.5 as α = 0.5 and r = 0.5, 2·6·4 + 4·6 + 6 + 6 + 4 = 88
    // parameters.
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        fields[..10],
        [
            "1", "bilinear", "4", "4", "2", "6", "0.5", "0.5", "88", "BF16"
        ]
    );

    let out = run(&["inspect", s(&path), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["blocks"].as_array().unwrap().len(), 4);
    assert_eq!(v["blocks"][0]["kind"], "linear");
    assert_eq!(v["blocks"][0]["parameters"], 5 * 4 + 4);

    let out = run(&["inspect", "/nonexistent.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
}

/// A small attention language model (embedding, one bilinear attention
/// layer with an additive residual, unembedding), perturbed by `seed`.
fn attention_lm(seed: u64) -> Model<f64> {
    use tensor_similarity::{Attention, Linear};
    let (vocab, d, heads) = (5, 4, 2);
    let w = |k: u64, r: usize, c: usize| {
        nalgebra::DMatrix::from_fn(r, c, |i, j| {
            ((((i * 7 + j * 3) as u64 + k * 5 + seed) % 13) as f64 - 6.0) / 6.0
        })
    };
    Model::builder()
        .block(Linear::new(w(0, d, vocab), None).unwrap())
        .block(
            Attention::builder(
                heads,
                w(1, d, d),
                w(2, d, d),
                w(3, d, d),
                w(4, d, d),
                w(5, d, d),
                w(6, d, d),
            )
            .rotary(500.0)
            .skip(1.0)
            .scale(0.35)
            .build()
            .unwrap(),
        )
        .block(Linear::new(w(7, vocab, d), None).unwrap())
        .build()
        .unwrap()
}

#[test]
fn sequence_models_need_a_context() {
    use tensor_similarity::TensorSimilarity;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let (ma, mb) = (attention_lm(1), attention_lm(2));
    io::save(&ma, &a, Layout::Described).unwrap();
    io::save(&mb, &b, Layout::Described).unwrap();
    let out = run(&["compare", s(&a), s(&b)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--context"), "{}", stderr(&out));
    assert!(stderr(&out).contains("a.safetensors"), "{}", stderr(&out));
    let out = run(&["compare", s(&a), s(&b), "--context", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--context 0"), "{}", stderr(&out));
    let out = run(&["compare", s(&a), s(&b), "--context", "3", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let expected = TensorSimilarity::new()
        .with_context(3)
        .unwrap()
        .similarity(&ma, &mb)
        .unwrap();
    assert_eq!(v["similarity"].as_f64().unwrap(), expected);
    assert_eq!(v["context"], 3);
    // The Gaussian metric on sequences, with whether it is exact.
    let out = run(&[
        "compare",
        s(&a),
        s(&b),
        "--context",
        "3",
        "--metric",
        "gaussian",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let g = GaussianSimilarity::new().with_context(3).unwrap();
    assert_eq!(
        v["similarity"].as_f64().unwrap(),
        g.similarity(&ma, &mb).unwrap()
    );
    assert_eq!(v["exact"], g.is_exact(&ma, &mb));
    // On vector models the option would change nothing: refused.
    let m = models(dir.path(), 2);
    let out = run(&["compare", s(&m[0].0), s(&m[1].0), "--context", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("none of the models"),
        "{}",
        stderr(&out)
    );
    // So is a loading option that no file reads.
    let out = run(&["compare", s(&a), s(&b), "--context", "3", "--heads", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--heads applies to none"),
        "{}",
        stderr(&out)
    );

    // inspect says what the attention block is and what a comparison needs.
    let out = run(&["inspect", s(&a)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("sequence model: compare with --context N"),
        "{text}"
    );
    assert!(
        text.contains("attention: heads 2, e 2, e_v 2, mask causal, rotary base 500, α 0.35, skip r 1, score scale c 4"),
        "{text}"
    );
    let out = run(&["inspect", s(&a), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["sequence"], true);
    assert_eq!(v["blocks"][1]["attention"]["heads"], 2);
    assert_eq!(v["blocks"][1]["attention"]["rotary_base"], 500.0);
    assert!(v["blocks"][0]["attention"].is_null());
}

#[test]
fn matrix_reads_a_run_in_natural_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, step) in [1000, 20, 500].into_iter().enumerate() {
        let run = dir.path().join(["run_a", "run_b", "run_a"][i]);
        std::fs::create_dir_all(&run).unwrap();
        let path = run.join(format!("step_{step}.safetensors"));
        io::save(&attention_lm(step), &path, Layout::Described).unwrap();
        paths.push(path);
    }
    // The same stem in two runs stays distinguishable by its row label.
    let twin = dir.path().join("run_b/step_500.safetensors");
    io::save(&attention_lm(7), &twin, Layout::Described).unwrap();
    paths.push(twin);
    let mut args = vec!["matrix", "--context", "2"];
    args.extend(paths.iter().map(|p| s(p)));
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let (header, labels, rows) = parse_csv(&stdout(&out));
    assert_eq!(header, ["step_500", "step_1000", "step_20", "step_500"]);
    let want: Vec<String> = [
        "run_a/step_500.safetensors",
        "run_a/step_1000.safetensors",
        "run_b/step_20.safetensors",
        "run_b/step_500.safetensors",
    ]
    .iter()
    .map(|p| s(&dir.path().join(p)).to_owned())
    .collect();
    assert_eq!(labels, want);
    assert_eq!(rows[3][3], 1.0);
    // --keep-order keeps the order given.
    args.insert(1, "--keep-order");
    let out = run(&args);
    let (_, labels, _) = parse_csv(&stdout(&out));
    let given: Vec<&str> = paths.iter().map(|p| s(p)).collect();
    assert_eq!(labels, given);
}

#[test]
fn matrix_checks_its_outputs_before_computing() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let bad = dir.path().join("cut.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    // An output in a missing folder is reported, not the bad model that
    // the computation would have met first.
    let missing = dir.path().join("no/such/dir/x.csv");
    let out = run(&["matrix", s(&m[0].0), s(&bad), "-o", s(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("x.csv") && err.contains("cannot write"),
        "{err}"
    );
    let png = dir.path().join("no/such/dir/x.png");
    let out = run(&["matrix", s(&m[0].0), s(&m[1].0), "--plot", s(&png)]);
    assert!(stderr(&out).contains("x.png"), "{}", stderr(&out));
    // A failed computation leaves no empty output behind.
    let csv = dir.path().join("out.csv");
    let out = run(&["matrix", s(&m[0].0), s(&bad), "-o", s(&csv)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!csv.exists());
}

/// A fixture written by PyTorch (`tests/files/torch/make_fixtures.py`).
fn torch_fixture(name: &str) -> PathBuf {
    fixtures().join("torch").join(name)
}

#[test]
fn pytorch_files_compare_inspect_and_mix_with_safetensors() {
    let pt = torch_fixture("ebh_wrapped.pt");
    let st = torch_fixture("ebh_f32.safetensors");
    // The same weights, one wrapped in a training checkpoint.
    let out = run(&["compare", s(&pt), s(&st)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!((stdout(&out).trim().parse::<f64>().unwrap() - 1.0).abs() < 1e-12);
    let out = run(&["inspect", s(&pt)]);
    let text = stdout(&out);
    assert!(
        text.contains("weights:    the state_dict under \"model_state_dict\", step 1200"),
        "{text}"
    );
    let out = run(&["inspect", s(&pt), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["checkpoint"]["key"], "model_state_dict");
    assert_eq!(v["checkpoint"]["step"], 1200);
    // A matrix over both kinds, mixed.
    let f16 = torch_fixture("ebh_f16.pt");
    let out = run(&["matrix", s(&pt), s(&st), s(&f16)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, labels, rows) = parse_csv(&stdout(&out));
    assert_eq!(labels.len(), 3);
    let i = |name: &str| labels.iter().position(|l| l.ends_with(name)).unwrap();
    assert!((rows[i("ebh_wrapped.pt")][i("ebh_f32.safetensors")] - 1.0).abs() < 1e-12);
    // F16 rounding moves the model a little, not much.
    let f = rows[i("ebh_f16.pt")][i("ebh_f32.safetensors")];
    assert!(f < 1.0 && f > 0.999, "{f}");
}

#[test]
fn a_training_run_compares_at_a_context() {
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    let out = run(&["compare", s(&early), s(&late)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--context"), "{}", stderr(&out));
    let out = run(&["compare", s(&early), s(&late), "--context", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sim: f64 = stdout(&out).trim().parse().unwrap();
    let (a, b) = (io::load(&early).unwrap(), io::load(&late).unwrap());
    use tensor_similarity::TensorSimilarity;
    let want = TensorSimilarity::new()
        .with_context(4)
        .unwrap()
        .similarity(&a, &b)
        .unwrap();
    assert_eq!(sim, want);
    // Two attention layers: the Gaussian metric is a closure and says so.
    let out = run(&[
        "compare",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--metric",
        "gaussian",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let g = GaussianSimilarity::new().with_context(4).unwrap();
    assert_eq!(
        v["similarity"].as_f64().unwrap(),
        g.similarity(&a, &b).unwrap()
    );
    assert_eq!(v["exact"], a.depth() <= 3);
    // The config's attn_scale is 0.35: another on the command line disagrees.
    let out = run(&[
        "compare",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--attn-scale",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("attn_scale") && err.contains("--attn-scale"),
        "{err}"
    );
    // Natural order puts step_20 before step_100.
    let out = run(&["matrix", s(&late), s(&early), "--context", "2"]);
    let (header, _, _) = parse_csv(&stdout(&out));
    assert_eq!(header, ["step_20", "step_100"]);
}

#[test]
fn unreadable_pytorch_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(torch_fixture("ebh_f32.pt")).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (path, needle) in [
        (cut, "cut.pt"),
        (torch_fixture("whole_module.pt"), "__main__"),
        (torch_fixture("legacy.pt"), "1.6"),
    ] {
        let out = run(&["inspect", s(&path)]);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn precision_f32_computes_in_f32() {
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    let value = |precision: &str| {
        let out = run(&[
            "compare",
            s(&early),
            s(&late),
            "--context",
            "3",
            "--precision",
            precision,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let (f64_json, f32_json) = (value("f64"), value("f32"));
    assert!(f64_json.get("precision").is_none());
    assert_eq!(f32_json["precision"], "f32");
    let (x, y) = (
        f64_json["similarity"].as_f64().unwrap(),
        f32_json["similarity"].as_f64().unwrap(),
    );
    // The library's f32 path on the same files, and an f32-sized gap from f64.
    use tensor_similarity::{RecursiveSimilarity, TensorSimilarity};
    let (a, b) = (
        io::load_as::<f32>(&early, &Default::default()).unwrap(),
        io::load_as::<f32>(&late, &Default::default()).unwrap(),
    );
    let s3 = TensorSimilarity::new().with_context(3).unwrap();
    assert_eq!(y, s3.similarity(&a, &b).unwrap());
    assert!(x != y && (x - y).abs() < 1e-5, "f64 {x}, f32 {y}");
    // The matrix too.
    let out = run(&[
        "matrix",
        s(&early),
        s(&late),
        "--context",
        "3",
        "--precision",
        "f32",
    ]);
    let (_, _, rows) = parse_csv(&stdout(&out));
    assert_eq!(rows[0][1], y);
}

/// The last line of stderr (warnings may precede an error).
fn last_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_owned()
}

#[test]
fn huge_contexts_are_refused_at_once_with_what_fits() {
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    for n in [
        "1152921504606846976",  // 2⁶⁰: wrapped n·r + 1 and corrupted the heap
        "9223372036854775807",  // 2⁶³ − 1
        "18446744073709551615", // 2⁶⁴ − 1
        "1000000000",           // a capacity overflow panic
        "100000",               // an allocation abort
        "10000", // grew to any memory limit (1000 did, when the step's memory grew as n⁴)
    ] {
        for extra in [&[][..], &["--precision", "f32"], &["--metric", "gaussian"]] {
            let mut args = vec!["compare", s(&early), s(&late), "--context", n];
            args.extend(extra);
            let out = run(&args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{n} {extra:?}: {}",
                stderr(&out)
            );
            let line = last_line(&out);
            assert!(line.starts_with("error: comparing at context "), "{line}");
            assert!(line.contains("the largest context that fits is"), "{line}");
        }
        let out = run(&["matrix", s(&early), s(&late), "--context", n]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(last_line(&out).contains("the largest context that fits is"));
    }
    // --max-memory: the same check against the user's limit, with the
    // context that fits, which then runs. (The estimate is about 26 MB up
    // to context 8, the process's share, and grows as n² beyond.)
    let out = run(&[
        "compare",
        s(&early),
        s(&late),
        "--context",
        "32",
        "--max-memory",
        "30M",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(line.contains("more than the limit of 30.0 MB"), "{line}");
    let fits: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((8..32).contains(&fits), "{line}");
    let out = run(&[
        "compare",
        s(&early),
        s(&late),
        "--context",
        &fits.to_string(),
        "--max-memory",
        "30M",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&[
        "compare",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--max-memory",
        "lots",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap rejects the value");
}

#[test]
fn a_context_beyond_the_native_one_is_a_warning() {
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    let out = run(&["compare", s(&early), s(&late), "--context", "17"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("warning: --context 17 is beyond the native context of"),
        "{err}"
    );
    assert!(err.contains("and 1 other files (n_ctx = 16"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line for the run: {err}");
    let out = run(&["compare", s(&early), s(&late), "--context", "16"]);
    assert!(
        out.status.success() && stderr(&out).is_empty(),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_heatmap_of_a_model_and_its_f32_copy_is_drawn() {
    // Every off-diagonal value within f32 rounding of 1: the colour scale
    // used to collapse to a point and the colour map to panic.
    let dir = tempfile::tempdir().unwrap();
    let model = embed_body_head(7, 1, 1.0);
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    io::save_with_dtype(&model, &a, Layout::Described, Dtype::F64).unwrap();
    io::save_with_dtype(&model, &b, Layout::Described, Dtype::F32).unwrap();
    let (csv, png) = (dir.path().join("m.csv"), dir.path().join("m.png"));
    let out = run(&["matrix", s(&a), s(&b), "-o", s(&csv), "--plot", s(&png)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, _, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    assert!(rows[0][1] > 1.0 - 1e-6, "{}", rows[0][1]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
    // Nothing but the two outputs and the two models is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[cfg(unix)]
#[test]
fn failed_writes_to_stdout_are_clean() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let (a, b) = (s(&m[0].0), s(&m[1].0));
    let commands: [&[&str]; 5] = [
        &["compare", a, b],
        &["compare", a, b, "--json"],
        &["inspect", a],
        &["inspect", a, "--json"],
        &["matrix", a, b],
    ];
    let binary = env!("CARGO_BIN_EXE_tensor-similarity-repo");
    for args in commands {
        // A full disk: exit 1 with one line, no panic.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = Command::new(binary)
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("error: cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // A reader that closed the pipe (before the binary starts, so that
        // no write can land in its buffer): 141, silently, as command-line
        // tools do.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(binary)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    }
}

/// Runs the binary, failing (and killing it) if it takes over `secs`.
#[cfg(unix)]
fn run_within(args: &[&str], secs: u64) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tensor-similarity-repo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed().as_secs() >= secs {
            child.kill().unwrap();
            panic!("{args:?} hung for {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
#[test]
fn fifos_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 1);
    let fifo = dir.path().join("f.pt");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let run_checkpoint = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    for args in [
        vec!["inspect", s(&fifo)],
        vec!["compare", s(&m[0].0), s(&fifo)],
        vec!["matrix", s(&m[0].0), s(&fifo)],
        vec!["inspect", s(&run_checkpoint), "--config", s(&fifo)],
    ] {
        let out = run_within(&args, 20);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = last_line(&out);
        assert!(
            line.contains("f.pt") && line.contains("FIFO"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn outputs_never_overwrite_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let (a, b) = (&m[0].0, &m[1].0);
    let before = std::fs::read(a).unwrap();
    let dotted = dir.path().join(".").join(a.file_name().unwrap());
    let mut cases = vec![
        vec!["matrix", s(a), s(b), "-o", s(a)],
        vec!["matrix", s(a), s(b), "--plot", s(b)],
        vec!["matrix", s(a), s(b), "-o", s(&dotted)],
    ];
    #[cfg(unix)]
    let link = dir.path().join("link.csv");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(a, &link).unwrap();
        cases.push(vec!["matrix", s(a), s(b), "-o", s(&link)]);
    }
    for args in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            last_line(&out).contains("would overwrite the input"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read(a).unwrap(),
            before,
            "{args:?} changed the input"
        );
    }
    let same = dir.path().join("out.csv");
    let out = run(&["matrix", s(a), s(b), "-o", s(&same), "--plot", s(&same)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(last_line(&out).contains("same file"), "{}", stderr(&out));
}

#[test]
fn a_failed_run_leaves_an_existing_output_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let bad = dir.path().join("cut.safetensors");
    std::fs::write(&bad, b"not a model").unwrap();
    let (csv, png) = (dir.path().join("out.csv"), dir.path().join("out.png"));
    std::fs::write(&csv, "the previous matrix").unwrap();
    std::fs::write(&png, "the previous plot").unwrap();
    let out = run(&[
        "matrix",
        s(&m[0].0),
        s(&bad),
        "-o",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "the previous matrix"
    );
    assert_eq!(std::fs::read_to_string(&png).unwrap(), "the previous plot");
    // No temporary file is left beside them.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    // A successful run replaces both.
    let out = run(&[
        "matrix",
        s(&m[0].0),
        s(&m[1].0),
        "-o",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("model,"));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn error_lines_are_cut_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir
        .path()
        .join("x".repeat(200))
        .join("y".repeat(200))
        .join("z".repeat(200));
    let out = run(&["inspect", s(&long)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.chars().count() < 480, "{}", err.len());
    assert!(err.trim_end().ends_with("more characters)"), "{err}");
}

#[test]
fn a_config_reads_numbers_as_pyyaml_does() {
    // The training code's PyYAML reads `01750` as the octal 1000; so must
    // `inspect`, not as 1750.
    let dir = tempfile::tempdir().unwrap();
    let run_dir = torch_fixture("runs/tiny_lm");
    let config = std::fs::read_to_string(run_dir.join("config.yaml")).unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        config.replace("rope_base: 500.0", "rope_base: 01750"),
    )
    .unwrap();
    let checkpoint = dir.path().join("step_20.pt");
    std::fs::copy(run_dir.join("checkpoints/step_20.pt"), &checkpoint).unwrap();
    let out = run(&["inspect", s(&checkpoint), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("\"rotary_base\":1000.0"), "{text}");
    // `1e3` is a string to PyYAML: an error that says so, not 1000.
    std::fs::write(
        dir.path().join("config.yaml"),
        config.replace("n_head: 2", "n_head: 1e3"),
    )
    .unwrap();
    let out = run(&["inspect", s(&checkpoint)]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(
        line.contains("n_head") && line.contains("\"1e3\""),
        "{line}"
    );
}

#[test]
fn a_deep_contractive_metadata_model_is_not_called_zero() {
    // 1 000 linear blocks that name one shared tensor, without biases: the
    // map shrinks below what one scale resolves beside the constant. The
    // self-comparison used to fail with a false "zero norm".
    use safetensors::tensor::{Dtype as St, TensorView};
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<f64> = (0..16)
        .map(|k| 0.3 * (((k / 4) * 7 + (k % 4) * 3) % 5) as f64 / 2.0 - 0.3)
        .collect();
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let blocks: Vec<serde_json::Value> = (0..1000)
        .map(|_| serde_json::json!({"kind": "linear", "weight": "w"}))
        .collect();
    let layout = serde_json::json!({"version": 1, "blocks": blocks}).to_string();
    let metadata = std::collections::HashMap::from([("tensor_similarity".to_string(), layout)]);
    let view = TensorView::new(St::F64, vec![4, 4], &bytes).unwrap();
    let path = dir.path().join("deep.safetensors");
    safetensors::serialize_to_file([("w", view)], Some(metadata), &path).unwrap();
    for metric in ["tensor", "gaussian"] {
        let out = run(&["compare", s(&path), s(&path), "--metric", metric]);
        assert_eq!(out.status.code(), Some(1), "{metric}: {}", stdout(&out));
        let line = last_line(&out);
        assert!(
            line.contains("numerical breakdown") && line.contains("not zero"),
            "{line}"
        );
    }
}

/// Issue 27: the additive-residual MLP (written by PyTorch). Without
/// `--skip`, `inspect` states that it read no residual and how to give one;
/// with `--skip 1` the bilinear rows show `α 1, r 1` and the assumption is
/// gone.
#[test]
fn inspect_states_the_residual_it_assumed_and_skip_sets_it() {
    let path = common::files::fixtures().join("torch/ebh_additive_1.pt");
    let out = run(&["inspect", s(&path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let assumed = text
        .lines()
        .find(|l| l.starts_with("assumed:") && l.contains("residual absent"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(assumed.contains("--skip 1"), "{assumed}");
    let row = |text: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row(&text)[1..8], ["bilinear", "4", "4", "2", "5", "1", "0"]);

    let out = run(&["inspect", s(&path), "--skip", "1"]);
    let text = stdout(&out);
    assert!(!text.contains("residual absent"), "{text}");
    assert_eq!(row(&text)[1..8], ["bilinear", "4", "4", "2", "5", "1", "1"]);
    let out = run(&["inspect", s(&path), "--skip", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["blocks"][1]["scale"], 1.0);
    assert_eq!(v["blocks"][1]["skip"], 1.0);
    assert_eq!(v["blocks"][1]["residual"], serde_json::Value::Null);

    // compare takes --skip too.
    let out = run(&["compare", s(&path), s(&path), "--skip", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Issue 27, Python and the command line: `inspect` counts the values a
/// file stores, so a model without biases has no bias among its
/// parameters; the library's two counts say the same.
#[test]
fn inspect_counts_no_absent_bias() {
    use tensor_similarity::{Bilinear, Linear};
    let dir = tempfile::tempdir().unwrap();
    let mut r = rng(27);
    let model = Model::builder()
        .block(Linear::new(matrix(&mut r, 4, 3), None).unwrap())
        .block(
            Bilinear::builder(matrix(&mut r, 5, 4), matrix(&mut r, 5, 4))
                .down(matrix(&mut r, 4, 5))
                .build()
                .unwrap(),
        )
        .block(Linear::new(matrix(&mut r, 2, 4), None).unwrap())
        .build()
        .unwrap();
    // By hand: 4·3 + (5·4 + 5·4 + 4·5) + 2·4, and no bias.
    let by_hand = 12 + 60 + 8;
    assert_eq!(model.parameter_count(), by_hand);
    let path = dir.path().join("no_bias.safetensors");
    io::save_with_dtype(&model, &path, Layout::EmbedBodyHead, Dtype::F32).unwrap();
    assert_eq!(
        io::open(&path, &Default::default())
            .unwrap()
            .parameter_count(),
        by_hand
    );
    let out = run(&["inspect", s(&path), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["parameters"], by_hand);
    let blocks: Vec<u64> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["parameters"].as_u64().unwrap())
        .collect();
    assert_eq!(blocks, [12, 60, 8]);
    let text = stdout(&run(&["inspect", s(&path)]));
    assert!(text.contains(&format!("{by_hand} parameters")), "{text}");
}

/// Issue 27, Python and the command line: `matrix` with no models (a
/// shell pattern that expanded to nothing) is a usage error saying so, and
/// a pattern the shell passed on unmatched is named as one, as Python's
/// `matrix` refuses an empty list.
#[test]
fn no_models_and_unmatched_patterns_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["matrix"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no models given"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());

    let m = models(dir.path(), 2);
    let pattern = dir.path().join("step_*.pt");
    for args in [
        vec!["matrix", s(&pattern)],
        vec!["matrix", s(&m[0].0), s(&pattern)],
        vec!["compare", s(&m[0].0), s(&pattern)],
        vec!["inspect", s(&pattern)],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(
            err.trim_end(),
            format!(
                "error: {}: the pattern matched no file (the shell passed it on unexpanded)",
                s(&pattern)
            ),
            "{args:?}"
        );
        assert!(stdout(&out).is_empty());
    }
    // A file whose name holds a pattern's characters is read as a file.
    let odd = dir.path().join("odd[1].safetensors");
    std::fs::copy(&m[1].0, &odd).unwrap();
    let out = run(&["compare", s(&m[1].0), s(&odd)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1");
}

/// Issue 27: the heatmap of models whose similarities are negative, near
/// zero and positive is drawn on the fixed scale (its colours and title are
/// the unit tests of `plot`).
#[test]
fn the_heatmap_of_signed_similarities_is_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    // The negated head: similarity −1 with the original.
    let negated = {
        let blocks = m[0].1.blocks();
        let last = blocks.len() - 1;
        let d = blocks[last].describe();
        let w = d.parameter("weight").unwrap().to_matrix();
        let b = d
            .parameter("bias")
            .map(|p| -nalgebra::DVector::from_column_slice(&p.values));
        let mut builder = Model::builder();
        for block in &blocks[..last] {
            builder = builder.shared_block(block.clone());
        }
        builder
            .block(tensor_similarity::Linear::new(-w, b).unwrap())
            .build()
            .unwrap()
    };
    let neg = dir.path().join("negated.safetensors");
    io::save_with_dtype(&negated, &neg, Layout::Described, Dtype::F64).unwrap();
    let (csv, png) = (dir.path().join("m.csv"), dir.path().join("m.png"));
    let out = run(&[
        "matrix",
        s(&m[0].0),
        s(&m[1].0),
        s(&neg),
        "--keep-order",
        "-o",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, _, rows) = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    assert!((rows[0][2] + 1.0).abs() < 1e-12, "{}", rows[0][2]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000);
}

/// The fixture run `tiny_lm` copied into `dir` (`config.yaml` beside
/// `step_20.pt` and `step_100.pt`), its config's text passed through
/// `edit`: the two checkpoints' paths.
fn tiny_lm_run(dir: &Path, edit: impl Fn(String) -> String) -> (PathBuf, PathBuf) {
    let run_dir = torch_fixture("runs/tiny_lm");
    let config = std::fs::read_to_string(run_dir.join("config.yaml")).unwrap();
    std::fs::write(dir.join("config.yaml"), edit(config)).unwrap();
    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::copy(run_dir.join("checkpoints").join(name), &to).unwrap();
        to
    };
    (copy("step_20.pt"), copy("step_100.pt"))
}

/// `compare A B --context 3` with `extra` arguments: the similarity.
fn compare_at_3(a: &Path, b: &Path, extra: &[&str]) -> f64 {
    let mut args = vec!["compare", s(a), s(b), "--context", "3"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().parse().unwrap()
}

/// Issue 27, config keys: `dropout`, `init_std`, optimiser and run keys
/// under `model` change nothing (the same similarity, to the bit) and
/// `inspect` lists each as ignored, with its value, in text and JSON.
#[test]
fn function_free_config_keys_are_listed_by_inspect_and_change_nothing() {
    let plain = tempfile::tempdir().unwrap();
    let (a, b) = tiny_lm_run(plain.path(), |c| c);
    let with = tempfile::tempdir().unwrap();
    let (wa, wb) = tiny_lm_run(with.path(), |c| {
        c.replace(
            "  n_ctx: 16\n",
            "  n_ctx: 16\n  dropout: 0.1\n  init_std: 0.02\n  lr: 0.001\n  seed: 3\n  \
             device: cuda\n  optimizer: {name: adamw, eps: 1.0e-8}\n",
        )
    });
    assert_eq!(compare_at_3(&a, &b, &[]), compare_at_3(&wa, &wb, &[]));
    let out = run(&["inspect", s(&wb)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let ignored: Vec<&str> = text.lines().filter(|l| l.starts_with("ignored:")).collect();
    assert_eq!(ignored.len(), 6, "{text}");
    assert!(
        ignored.contains(&"ignored:    model.dropout = 0.1 (dropout: the identity at eval)"),
        "{text}"
    );
    assert!(
        ignored
            .iter()
            .any(|l| l
                .starts_with("ignored:    model.optimizer = {\"eps\":1e-8,\"name\":\"adamw\"}")),
        "{text}"
    );
    let out = run(&["inspect", s(&wb), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let keys = v["ignored_config_keys"].as_array().unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["device", "dropout", "init_std", "lr", "optimizer", "seed"]
    );
    assert_eq!(keys[2]["value"], 0.02);
    assert!(
        keys[2]["why"]
            .as_str()
            .unwrap()
            .starts_with("initialisation")
    );
    // Without such keys the list is empty.
    let out = run(&["inspect", s(&b), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ignored_config_keys"], serde_json::json!([]));
    // A key that may change the function is refused, and the advice is one a
    // .pt file can follow: an edited copy with --config.
    let bad = tempfile::tempdir().unwrap();
    let (_, bb) = tiny_lm_run(bad.path(), |c| {
        c.replace("  n_ctx: 16\n", "  n_ctx: 16\n  norm_eps: 1.0e-5\n")
    });
    let out = run(&["inspect", s(&bb)]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(
        line.contains("unknown model key \"norm_eps\"")
            && line.contains("without it with --config FILE")
            && line.contains("safetensors with tensor_similarity metadata"),
        "{line}"
    );
    assert!(
        !line.contains("LoadOptions") && !line.contains("config="),
        "{line}"
    );
}

/// Issue 27: `--rope-base` stands in where the config gives no
/// `rope_base` (the same similarity as the config's 500), disagrees with a
/// config that says otherwise (naming the flag), and applies to none of
/// the vector layouts.
#[test]
fn rope_base_stands_in_for_the_config_and_must_agree_with_it() {
    let with = tempfile::tempdir().unwrap();
    let (a, b) = tiny_lm_run(with.path(), |c| c);
    let without = tempfile::tempdir().unwrap();
    let (na, nb) = tiny_lm_run(without.path(), |c| c.replace("  rope_base: 500.0\n", ""));
    let want = compare_at_3(&a, &b, &[]);
    assert_eq!(compare_at_3(&na, &nb, &["--rope-base", "500"]), want);
    assert_ne!(compare_at_3(&na, &nb, &[]), want);
    assert_eq!(compare_at_3(&a, &b, &["--rope-base", "500"]), want);
    let out = run(&["inspect", s(&nb), "--rope-base", "500", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["blocks"][1]["attention"]["rotary_base"], 500.0);
    // The fixture's one assumption: its final norm has no counter.
    let assumptions = v["assumptions"].as_array().unwrap();
    assert_eq!(assumptions.len(), 1, "{assumptions:?}");
    assert!(
        assumptions[0]
            .as_str()
            .unwrap()
            .starts_with("final_norm.num_batches_tracked absent")
    );
    // The config says 500.
    let out = run(&[
        "compare",
        s(&a),
        s(&b),
        "--context",
        "3",
        "--rope-base",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(
        line.ends_with("model.rope_base is 500, but --rope-base says 1000"),
        "{line}"
    );
    let out = run(&["inspect", s(&nb), "--rope-base=-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(last_line(&out).contains("--rope-base: a rotary base must be a positive"));
    let vector = torch_fixture("ebh_f64.safetensors");
    let out = run(&["inspect", s(&vector), "--rope-base", "500"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        last_line(&out).contains("--rope-base applies to none of the files"),
        "{}",
        stderr(&out)
    );
}

/// Issue 21: the research `Transformer` (written by PyTorch,
/// `make_transformer.py`) is read with its fixed rotary: `inspect` says so
/// and assumes nothing about it, and `--rope-base` applies to it not at all.
#[test]
fn inspect_states_the_transformer_s_fixed_rotary() {
    let path = torch_fixture("transformer.pt");
    let out = run(&[
        "inspect",
        s(&path),
        "--heads",
        "2",
        "--residual-scale",
        "0.7",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("no rotary"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("rotary:")
            && l.contains("base 10000")
            && l.contains("the research Transformer's fixed base")),
        "{text}"
    );
    let out = run(&["inspect", s(&path), "--heads", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["blocks"][1]["attention"]["rotary_base"], 10000.0);
    assert_eq!(
        v["assumptions"],
        serde_json::json!([
            "α (scale / --residual-scale) absent: 1, no residual",
            "mask absent: causal"
        ])
    );
    let out = run(&["inspect", s(&path), "--heads", "2", "--rope-base", "500"]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(
        line.contains("--rope-base applies to none of the files")
            && line.contains("rotary base is fixed at 10000"),
        "{line}"
    );
}

/// Issue 27: errors name options as flags on the command line (the library
/// spells them as `LoadOptions` fields, Python as keywords).
#[test]
fn errors_name_options_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = tiny_lm_run(dir.path(), |c| c.replace("  n_head: 2\n", ""));
    let out = run(&["inspect", s(&a)]);
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out);
    assert!(line.ends_with("--config FILE, or --heads"), "{line}");
    let out = run(&["inspect", s(&a), "--heads", "2", "--attn-scale", "0.2"]);
    let line = last_line(&out);
    assert!(
        line.ends_with("model.attn_scale is 0.35, but --attn-scale says 0.2"),
        "{line}"
    );
    for line in [line, last_line(&run(&["inspect", s(&a)]))] {
        assert!(
            !line.contains("LoadOptions") && !line.contains("heads="),
            "{line}"
        );
    }
}

/// A normalised research LM's run (`tests/files/torch/norms/<case>`).
fn norms_case(case: &str, step: usize) -> String {
    fixtures()
        .join(format!("torch/norms/{case}/step_{step}.pt"))
        .display()
        .to_string()
}

#[test]
fn inspect_shows_each_folded_norm_and_the_untracked_assumption() {
    let out = run(&["inspect", &norms_case("batchnorm_post_embed_pre_layer", 1)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for place in ["post_embed", "pre_layer 0", "pre_layer 1", "pre_unembed"] {
        let line = format!("norm:       batchnorm at {place} (eps 1e-5): folded, scale ");
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(text.contains(", shift "), "{text}");
    let out = run(&["inspect", &norms_case("tok0_untracked", 1)]);
    let text = stdout(&out);
    assert!(
        text.contains(
            "assumed:    final_norm.num_batches_tracked = 0: saved before its first training batch"
        ),
        "{text}"
    );
    let out = run(&["inspect", "--json", &norms_case("tok0_eps", 1)]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["norms"].as_array().unwrap().len(), 3);
    assert_eq!(v["norms"][0]["kind"], "tok0_batch");
    assert_eq!(v["norms"][0]["place"], "post_embed");
    assert_eq!(v["norms"][0]["eps"], 0.5);
    assert_eq!(v["norms_removed"], false);
}

#[test]
fn input_dependent_norms_are_refused_in_one_line_and_ignore_norms_says_what_it_did() {
    let (a, b) = (norms_case("rmsnorm", 1), norms_case("rmsnorm", 2));
    for args in [
        vec!["compare", &a, &b, "--context", "2"],
        vec!["inspect", &a],
        vec!["matrix", &a, &b, "--context", "2"],
    ] {
        let out = run(&args);
        assert!(!out.status.success());
        assert!(stdout(&out).is_empty(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("model.norm_type is \"rmsnorm\": it divides each position by its own RMS")
                && err.contains("--ignore-norms reads the model without its norms"),
            "{err}"
        );
    }
    // Every input-dependent norm, by name, from the run config.
    let dir = tempfile::tempdir().unwrap();
    let case = norms_case("tok0_post_embed_pre_unembed", 1);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures().join("torch/norms/tok0_post_embed_pre_unembed/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let refusals = [
        ("rmsnorm", None, "model.norm_type is \"rmsnorm\""),
        ("layernorm", None, "model.norm_type is \"layernorm\""),
        ("maxrmsnorm", None, "model.norm_type is \"maxrmsnorm\""),
        (
            "causal_maxrmsnorm",
            None,
            "model.norm_type is \"causal_maxrmsnorm\"",
        ),
        ("tok0", None, "model.norm_type is \"tok0\""),
        (
            "tok0_batch",
            Some(serde_json::json!({"use_running_stats": false})),
            "model.norm_kwargs.use_running_stats is false",
        ),
    ];
    for (kind, kwargs, said) in refusals {
        let mut c = config.clone();
        c["model"]["norm_type"] = kind.into();
        if let Some(kwargs) = kwargs {
            c["model"]["norm_kwargs"] = kwargs;
        }
        let path = dir.path().join(format!("{kind}.json"));
        std::fs::write(&path, c.to_string()).unwrap();
        let out = run(&["inspect", &case, "--config", s(&path)]);
        assert!(!out.status.success() && stdout(&out).is_empty(), "{kind}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(said) && err.contains("--ignore-norms"),
            "{err}"
        );
    }
    // With the opt-in: a number, and the notice on stderr.
    let out = run(&["compare", &a, &b, "--context", "2", "--ignore-norms"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sim: f64 = stdout(&out).trim().parse().unwrap();
    assert!(sim > 0.0 && sim < 1.0, "{sim}");
    assert!(
        stderr(&out).contains("note: --ignore-norms: 2 of 2 models read without their norms"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "compare",
        &a,
        &b,
        "--context",
        "2",
        "--ignore-norms",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["norms_removed"], true);
    assert_eq!(v["similarity"].as_f64(), Some(sim));
    let out = run(&["matrix", &a, &b, "--context", "2", "--ignore-norms"]);
    assert!(
        stdout(&out).starts_with("model (without norms: --ignore-norms),step_1,step_2\n"),
        "{}",
        stdout(&out)
    );
    // Without a removed norm, no notice and no field.
    let (c, d) = (norms_case("tok0_eps", 1), norms_case("tok0_eps", 2));
    let out = run(&["compare", &c, &d, "--context", "2", "--json"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v.get("norms_removed").is_none());
    // A model with no norms to remove refuses the flag, saying why.
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 1);
    let out = run(&["inspect", s(&m[0].0), "--ignore-norms"]);
    assert!(!out.status.success() && stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("--ignore-norms applies to none of the files")
            && stderr(&out).contains("only the attention-only LM's layout has norms to remove"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// Output slices (`--outputs`, `--outputs-each`) and `difference` (issue 24)

/// A ten-class vector model as plain data (embed 3 → 4, one bilinear block
/// of hidden width 5 with every bias, head 4 → 10: degree 2), saved with
/// metadata at `dir/name.safetensors` (F64: the file holds the same numbers).
fn ten_class(dir: &Path, name: &str, seed: u64) -> (PathBuf, Net) {
    let net = Net::random(&mut rng(seed), 3, 4, &[5], 10, Options::default());
    (saved(dir, name, &net), net)
}

/// `net` saved with metadata at `dir/name.safetensors`.
fn saved(dir: &Path, name: &str, net: &Net) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    io::save(&net.model::<f64>(), &path, Layout::Described).unwrap();
    path
}

/// `net` with `scale·N(0, 1)` added to every weight matrix: a nearby model
/// (another fine-tune of the same base).
fn nudged(net: &Net, seed: u64, scale: f64) -> Net {
    let mut r = rng(seed);
    let mut net = net.clone();
    let mut nudge = |m: &mut nalgebra::DMatrix<f64>| {
        *m += gaussian_matrix(&mut r, m.nrows(), m.ncols(), scale);
    };
    for layer in &mut net.layers {
        match layer {
            Layer::Linear(p) => nudge(&mut p.w),
            Layer::Bilinear(p) => {
                nudge(&mut p.l);
                nudge(&mut p.r);
            }
        }
    }
    net
}

/// The outputs `outputs` of `y`.
fn select(y: DVector<f64>, outputs: &[usize]) -> DVector<f64> {
    DVector::from_iterator(outputs.len(), outputs.iter().map(|&o| y[o]))
}

/// An inner product of two degree-2 maps read from their forward passes:
/// `common::dense_quadratic_inner` (SPEC §2) or `gaussian_quadratic_inner`
/// (SPEC §3, Isserlis in closed form). Neither shares code with the library.
type Inner = fn(
    &dyn Fn(&DVector<f64>) -> DVector<f64>,
    &dyn Fn(&DVector<f64>) -> DVector<f64>,
    usize,
) -> f64;

/// The oracle's cosine of two maps of `R³`.
fn oracle_cosine(
    inner: Inner,
    a: &dyn Fn(&DVector<f64>) -> DVector<f64>,
    b: &dyn Fn(&DVector<f64>) -> DVector<f64>,
) -> f64 {
    inner(a, b, 3) / (inner(a, a, 3) * inner(b, b, 3)).sqrt()
}

/// The oracles' values are sums of a few hundred products of O(1)
/// numbers, the binary's of the same size: both are within a few hundred
/// ulps of the truth, far inside this bound (the issue's).
const ORACLE_TOLERANCE: f64 = 1e-10;

fn value(out: &Output) -> f64 {
    assert!(out.status.success(), "{}", stderr(out));
    stdout(out).trim().parse().unwrap()
}

/// The CSV's corner cell and its matrix.
fn csv_matrix(text: &str) -> (String, Vec<Vec<f64>>) {
    let mut lines = text.lines();
    let corner = lines.next().unwrap().split(',').next().unwrap().to_owned();
    let rows = lines
        .map(|l| l.split(',').skip(1).map(|v| v.parse().unwrap()).collect())
        .collect();
    (corner, rows)
}

#[test]
fn output_slices_are_the_library_s_and_the_dense_oracle_s() {
    use tensor_similarity::TensorSimilarity;
    let dir = tempfile::tempdir().unwrap();
    let (a, na) = ten_class(dir.path(), "a", 2401);
    let (b, nb) = ten_class(dir.path(), "b", 2402);
    let (ma, mb) = (na.model::<f64>(), nb.model::<f64>());
    for (list, outputs) in [
        ("9", vec![9]),
        ("3,9", vec![3, 9]),
        ("0-2,7", vec![0, 1, 2, 7]),
    ] {
        let fa = |x: &DVector<f64>| select(na.forward(x), &outputs);
        let fb = |x: &DVector<f64>| select(nb.forward(x), &outputs);
        // Tensor: the library's output selection, bit for bit; the dense
        // tensor of the selected outputs.
        let found = value(&run(&["compare", s(&a), s(&b), "--outputs", list]));
        let library = TensorSimilarity::new()
            .with_output_selection(outputs.clone())
            .similarity(&ma, &mb)
            .unwrap();
        assert_eq!(found, library, "--outputs {list}");
        let oracle = oracle_cosine(dense_quadratic_inner, &fa, &fb);
        assert!(
            (found - oracle).abs() < ORACLE_TOLERANCE,
            "--outputs {list}: {found} vs {oracle}"
        );
        // Gaussian: E[Σ_{o∈Q} f_A,o f_B,o] in closed form; bit for bit the
        // library's on the models whose head keeps only those rows.
        let found = value(&run(&[
            "compare",
            s(&a),
            s(&b),
            "--outputs",
            list,
            "--metric",
            "gaussian",
        ]));
        let oracle = oracle_cosine(gaussian_quadratic_inner, &fa, &fb);
        assert!(
            (found - oracle).abs() < ORACLE_TOLERANCE,
            "gaussian --outputs {list}: {found} vs {oracle}"
        );
        let headed = |net: &Net| {
            let mut net = net.clone();
            let Some(Layer::Linear(head)) = net.layers.last_mut() else {
                unreachable!("a head")
            };
            head.w = head.w.select_rows(&outputs);
            head.b = head.b.as_ref().map(|b| select(b.clone(), &outputs));
            net.model::<f64>()
        };
        let library = GaussianSimilarity::new()
            .similarity(&headed(&na), &headed(&nb))
            .unwrap();
        assert_eq!(found, library, "gaussian --outputs {list}");
        // --json names them.
        let out = run(&["compare", s(&a), s(&b), "--outputs", list, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["outputs"], serde_json::json!(outputs));
        assert_eq!(
            v["similarity"].as_f64(),
            Some(library_tensor(&ma, &mb, &outputs))
        );
    }
    // Without --outputs, no field; every output listed is every output.
    let out = run(&["compare", s(&a), s(&b), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v.get("outputs").is_none());
    let all = value(&run(&["compare", s(&a), s(&b), "--outputs", "0-9"]));
    assert!((all - similarity(&ma, &mb).unwrap()).abs() < 1e-13);

    // matrix --outputs: the same values, the selection in the corner cell.
    let (c, _) = ten_class(dir.path(), "c", 2403);
    let out = run(&["matrix", s(&a), s(&b), s(&c), "--outputs", "3,9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (corner, rows) = csv_matrix(&stdout(&out));
    assert_eq!(corner, "model (outputs 3 9)");
    let pair = value(&run(&["compare", s(&b), s(&c), "--outputs", "3,9"]));
    assert!(
        (rows[1][2] - pair).abs() < 1e-13,
        "{} vs {pair}",
        rows[1][2]
    );
    assert_eq!(rows[0][0], 1.0);
}

fn library_tensor(a: &Model<f64>, b: &Model<f64>, outputs: &[usize]) -> f64 {
    tensor_similarity::TensorSimilarity::new()
        .with_output_selection(outputs.to_vec())
        .similarity(a, b)
        .unwrap()
}

#[test]
fn difference_is_the_library_s_and_the_dense_oracle_s() {
    use tensor_similarity::TensorSimilarity;
    let dir = tempfile::tempdir().unwrap();
    let (a1, n_a1) = ten_class(dir.path(), "a1", 2411);
    let (a0, n_a0) = ten_class(dir.path(), "a0", 2412);
    // B's directions near A's, so that their cosine is far from 0 and the
    // order of the four shows in its sign.
    let (n_b1, n_b0) = (nudged(&n_a1, 2413, 0.3), nudged(&n_a0, 2414, 0.3));
    let (b1, b0) = (
        saved(dir.path(), "b1", &n_b1),
        saved(dir.path(), "b0", &n_b0),
    );
    let m = |n: &Net| n.model::<f64>();
    for outputs in [None, Some(vec![9]), Some(vec![3, 9])] {
        let list = outputs.as_ref().map(|o| {
            o.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut args = vec!["difference", s(&a1), s(&a0), s(&b1), s(&b0)];
        if let Some(list) = &list {
            args.extend(["--outputs", list]);
        }
        let keep = |y: DVector<f64>| match &outputs {
            Some(o) => select(y, o),
            None => y,
        };
        // The directions as maps: their forward passes' differences.
        let da = |x: &DVector<f64>| keep(n_a1.forward(x) - n_a0.forward(x));
        let db = |x: &DVector<f64>| keep(n_b1.forward(x) - n_b0.forward(x));
        // Tensor: the library's difference_similarity (a0, a1, b0, b1), bit for bit.
        let found = value(&run(&args));
        let mut metric = TensorSimilarity::new();
        if let Some(o) = &outputs {
            metric = metric.with_output_selection(o.clone());
        }
        let library = metric
            .difference_similarity(&m(&n_a0), &m(&n_a1), &m(&n_b0), &m(&n_b1))
            .unwrap();
        assert_eq!(found, library, "{args:?}");
        let oracle = oracle_cosine(dense_quadratic_inner, &da, &db);
        assert!(
            (found - oracle).abs() < ORACLE_TOLERANCE,
            "{args:?}: {found} vs {oracle}"
        );
        assert!(
            oracle.abs() > 0.05,
            "a case where the order shows: {oracle}"
        );
        // The order matters: A0 A1 B1 B0 is the opposite direction.
        let swapped = value(&run(&["difference", s(&a0), s(&a1), s(&b1), s(&b0)]));
        if outputs.is_none() {
            // (The four products are summed in another order: equal up to rounding.)
            assert!((swapped + found).abs() < 1e-13, "{swapped} vs {found}");
        }
        // Gaussian.
        args.extend(["--metric", "gaussian"]);
        let found = value(&run(&args));
        let oracle = oracle_cosine(gaussian_quadratic_inner, &da, &db);
        assert!(
            (found - oracle).abs() < ORACLE_TOLERANCE,
            "{args:?}: {found} vs {oracle}"
        );
        if outputs.is_none() {
            let library = GaussianSimilarity::new()
                .difference_similarity(&m(&n_a0), &m(&n_a1), &m(&n_b0), &m(&n_b1))
                .unwrap();
            assert_eq!(found, library);
        }
        args.push("--json");
        let v: serde_json::Value = serde_json::from_str(&stdout(&run(&args))).unwrap();
        assert_eq!(
            (
                v["a1"].as_str(),
                v["a0"].as_str(),
                v["b1"].as_str(),
                v["b0"].as_str()
            ),
            (Some(s(&a1)), Some(s(&a0)), Some(s(&b1)), Some(s(&b0)))
        );
        assert_eq!(v["metric"], "gaussian");
        assert_eq!(v["exact"], true);
        assert_eq!(v["similarity"].as_f64(), Some(found));
        match &outputs {
            Some(o) => assert_eq!(v["outputs"], serde_json::json!(o)),
            None => assert!(v.get("outputs").is_none()),
        }
    }
}

#[test]
fn outputs_each_writes_one_matrix_per_output() {
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 3);
    let paths: Vec<&str> = m.iter().map(|(p, _)| s(p)).collect();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let (csv, png) = (out_dir.join("sims.csv"), out_dir.join("sims.png"));
    let mut args = vec!["matrix", "--outputs-each", "-o", s(&csv), "--plot", s(&png)];
    args.extend(&paths);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    // The models have three outputs: three CSVs and three plots, suffixed.
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "sims_0.csv",
            "sims_0.png",
            "sims_1.csv",
            "sims_1.png",
            "sims_2.csv",
            "sims_2.png"
        ]
    );
    for i in 0..3 {
        let (corner, each) =
            csv_matrix(&std::fs::read_to_string(out_dir.join(format!("sims_{i}.csv"))).unwrap());
        assert_eq!(corner, format!("model (output {i})"));
        let mut args = vec!["matrix", "--outputs"];
        let index = i.to_string();
        args.push(&index);
        args.extend(&paths);
        let (_, alone) = csv_matrix(&stdout(&run(&args)));
        assert_eq!(each, alone, "output {i}: the same matrix, bit for bit");
        assert!(
            std::fs::read(out_dir.join(format!("sims_{i}.png")))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
    }
    // With --outputs, only those; with the Gaussian metric too.
    let only = dir.path().join("only.csv");
    let mut args = vec![
        "matrix",
        "--outputs-each",
        "--outputs",
        "2,0",
        "--metric",
        "gaussian",
        "-o",
        s(&only),
    ];
    args.extend(&paths);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("only_0.csv").exists() && dir.path().join("only_2.csv").exists());
    assert!(!dir.path().join("only_1.csv").exists() && !only.exists());
    let (_, each) = csv_matrix(&std::fs::read_to_string(dir.path().join("only_2.csv")).unwrap());
    let pair = value(&run(&[
        "compare",
        paths[0],
        paths[2],
        "--metric",
        "gaussian",
        "--outputs",
        "2",
    ]));
    assert_eq!(each[0][2], pair);
    // Outputs never overwrite inputs: run_0.safetensors is output 0's name here.
    let input = dir.path().join("run_0.safetensors");
    std::fs::copy(&m[0].0, &input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let base = dir.path().join("run.safetensors");
    let out = run(&[
        "matrix",
        "--outputs-each",
        "-o",
        s(&base),
        s(&input),
        paths[1],
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        last_line(&out).contains("would overwrite the input"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&input).unwrap(), before);
    assert!(!dir.path().join("run_1.safetensors").exists());
}

#[test]
fn slice_and_difference_errors_are_one_line_with_nothing_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = ten_class(dir.path(), "a", 2421);
    let (b, _) = ten_class(dir.path(), "b", 2422);
    let (c, _) = ten_class(dir.path(), "c", 2423);
    let (a, b, c) = (s(&a), s(&b), s(&c));
    let csv = dir.path().join("x.csv");
    let cases: Vec<(Vec<&str>, i32, &[&str])> = vec![
        // An index beyond the width: named, with the width.
        (
            vec!["compare", a, b, "--outputs", "10"],
            1,
            &["output 10", "10 outputs", "--outputs"],
        ),
        (
            vec![
                "compare",
                a,
                b,
                "--outputs",
                "3,8-12",
                "--metric",
                "gaussian",
            ],
            1,
            &["output 10", "8-12", "10 outputs"],
        ),
        (
            vec!["matrix", a, b, "--outputs", "12"],
            1,
            &["output 12", "10 outputs"],
        ),
        (
            vec![
                "matrix",
                a,
                b,
                "--outputs-each",
                "--outputs",
                "10",
                "-o",
                s(&csv),
            ],
            1,
            &["output 10"],
        ),
        (
            vec!["difference", a, b, c, a, "--outputs", "99"],
            1,
            &["output 99"],
        ),
        // Metrics that compare no outputs.
        (
            vec!["compare", a, b, "--outputs", "1", "--metric", "weight"],
            2,
            &["--outputs with --metric weight: the weight metric compares parameters"],
        ),
        (
            vec!["matrix", a, b, "--outputs", "1", "--metric", "weight"],
            2,
            &["--outputs with --metric weight: the weight metric compares parameters"],
        ),
        (
            vec![
                "matrix",
                a,
                b,
                "--outputs-each",
                "--metric",
                "weight",
                "-o",
                s(&csv),
            ],
            2,
            &["--outputs-each with --metric weight: the weight metric"],
        ),
        // --outputs-each writes files.
        (vec!["matrix", a, b, "--outputs-each"], 2, &["-o"]),
        // difference takes four models.
        (
            vec!["difference", a, b, c],
            2,
            &["four models", "A1 A0 B1 B0", "3 given"],
        ),
        (vec!["difference", a, b, c, a, b], 2, &["5 given"]),
        (vec!["difference"], 2, &["0 given"]),
        // A zero direction says which.
        (
            vec!["difference", a, a, b, c],
            1,
            &["A1 − A0 is zero", "a.safetensors"],
        ),
        (
            vec![
                "difference",
                a,
                b,
                c,
                c,
                "--metric",
                "gaussian",
                "--outputs",
                "4",
            ],
            1,
            &["B1 − B0 is zero"],
        ),
    ];
    for (args, code, needles) in cases {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} in {err}");
        }
    }
    assert!(
        !csv.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 3,
        "no output left behind"
    );
    // A list that is not one is clap's usage error; so is a metric without
    // an inner product for difference.
    for args in [
        vec!["compare", a, b, "--outputs", "3,x"],
        vec!["compare", a, b, "--outputs", "3,3"],
        vec!["compare", a, b, "--outputs", "5-2"],
        vec!["difference", a, b, c, a, "--metric", "weight"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stdout(&out).is_empty() && stderr(&out).starts_with("error: "),
            "{args:?}"
        );
    }
}

#[test]
fn sequence_models_take_slices_and_differences_at_a_context() {
    use tensor_similarity::{Linear, TensorSimilarity};
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = (1..=3)
        .map(|seed| {
            let path = dir.path().join(format!("lm{seed}.safetensors"));
            io::save(&attention_lm(seed), &path, Layout::Described).unwrap();
            path
        })
        .collect();
    let (a, b, c) = (s(&paths[0]), s(&paths[1]), s(&paths[2]));
    let (ma, mb, mc) = (attention_lm(1), attention_lm(2), attention_lm(3));
    let out = run(&["difference", a, b, c, b, "--outputs", "4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--context"), "{}", stderr(&out));
    let tensor = TensorSimilarity::new()
        .with_context(3)
        .unwrap()
        .with_output_selection(vec![1, 4]);
    let found = value(&run(&[
        "compare",
        a,
        b,
        "--context",
        "3",
        "--outputs",
        "1,4",
    ]));
    assert_eq!(found, tensor.similarity(&ma, &mb).unwrap());
    let found = value(&run(&[
        "difference",
        a,
        b,
        c,
        b,
        "--context",
        "3",
        "--outputs",
        "1,4",
    ]));
    assert_eq!(
        found,
        tensor.difference_similarity(&mb, &ma, &mb, &mc).unwrap()
    );
    // The Gaussian metric on the models whose unembedding keeps rows 1 and 4.
    let restricted = |m: &Model<f64>| {
        let blocks = m.blocks();
        let head = blocks[2]
            .as_cp()
            .unwrap()
            .input(0)
            .into_owned()
            .select_rows(&[2, 5]); // padded: row 0 is the constant
        let w = head.view((0, 1), (2, head.ncols() - 1)).into_owned();
        Model::builder()
            .shared_block(blocks[0].clone())
            .shared_block(blocks[1].clone())
            .block(Linear::new(w, None).unwrap())
            .build()
            .unwrap()
    };
    let gaussian = GaussianSimilarity::new().with_context(3).unwrap();
    let found = value(&run(&[
        "compare",
        a,
        b,
        "--context",
        "3",
        "--outputs",
        "1,4",
        "--metric",
        "gaussian",
    ]));
    let library = gaussian
        .similarity(&restricted(&ma), &restricted(&mb))
        .unwrap();
    assert!((found - library).abs() < 1e-13, "{found} vs {library}");
}

/// The line the command line writes on stderr whenever a Gaussian value is
/// a closure (and `matrix` in its CSV's corner cell).
const CLOSURE_NOTE: &str =
    "Gaussian closure (approximate); --metric gaussian-mc for an unbiased estimate";

/// `run` with the environment variable `RAYON_NUM_THREADS` set.
fn run_threads(args: &[&str], threads: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tensor-similarity-repo"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("the binary runs")
}

#[test]
fn gaussian_mc_prints_the_estimate_with_its_standard_error() {
    use tensor_similarity::GaussianMonteCarlo;
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 2);
    let (a, b) = (s(&m[0].0), s(&m[1].0));
    // The models as the command line reads them (one file is in a layout
    // that rebuilds the blocks, equal in function up to rounding).
    let loaded: Vec<Model> = m.iter().map(|(p, _)| io::load(p).unwrap()).collect();
    let library = GaussianMonteCarlo::new(2_000, 3)
        .unwrap()
        .estimate(&loaded[0], &loaded[1])
        .unwrap();
    let args = [
        "compare",
        a,
        b,
        "--metric",
        "gaussian-mc",
        "--samples",
        "2000",
        "--seed",
        "3",
        "--json",
    ];
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["metric"], "gaussian-mc");
    // serde_json reads floats to within an ulp (its default, not
    // round-trip, parsing); the plain output below is compared bit for bit.
    let ulps = |x: f64, y: f64| (x - y).abs() <= 2.0 * f64::EPSILON * y.abs();
    assert!(ulps(v["similarity"].as_f64().unwrap(), library.similarity));
    assert!(ulps(
        v["standard_error"].as_f64().unwrap(),
        library.standard_error
    ));
    assert!(library.standard_error > 0.0);
    assert_eq!(
        (v["samples"].as_u64(), v["seed"].as_u64()),
        (Some(2000), Some(3))
    );
    // An estimate, not a closure: nothing about exactness.
    assert!(v.get("exact").is_none());
    assert!(!stderr(&out).contains(CLOSURE_NOTE));
    // The same bits on one thread.
    assert_eq!(stdout(&run_threads(&args, 1)), stdout(&out));
    // Plain: `similarity ± standard error`, each a shortest round-trip float.
    let out = run(&args[..args.len() - 1]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{} ± {}\n", library.similarity, library.standard_error)
    );
    // The defaults: 10 000 samples, seed 0.
    let out = run(&["compare", a, b, "--metric", "gaussian-mc", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let default = GaussianMonteCarlo::new(10_000, 0)
        .unwrap()
        .estimate(&loaded[0], &loaded[1])
        .unwrap();
    assert!(ulps(v["similarity"].as_f64().unwrap(), default.similarity));
    assert_eq!(
        (v["samples"].as_u64(), v["seed"].as_u64()),
        (Some(10_000), Some(0))
    );
    // The Monte Carlo options with another metric change nothing: refused
    // as a usage error, as are too few samples.
    for extra in [
        &["--samples", "100"][..],
        &["--seed", "1"],
        &["--metric", "gaussian", "--seed", "1"],
    ] {
        let out = run(&[&["compare", a, b][..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            stderr(&out).contains("gaussian-mc only"),
            "{}",
            stderr(&out)
        );
    }
    let out = run(&["compare", a, b, "--metric", "gaussian-mc", "--samples", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("at least 4"), "{}", stderr(&out));
    // The difference of directions, from one set of draws.
    let out = run(&[
        "difference",
        a,
        b,
        b,
        a,
        "--metric",
        "gaussian-mc",
        "--samples",
        "1000",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let e = GaussianMonteCarlo::new(1_000, 0)
        .unwrap()
        .difference(&loaded[1], &loaded[0], &loaded[0], &loaded[1])
        .unwrap();
    assert!(ulps(v["similarity"].as_f64().unwrap(), e.similarity));
    assert!(ulps(
        v["standard_error"].as_f64().unwrap(),
        e.standard_error
    ));
}

#[test]
fn a_gaussian_closure_says_so_on_one_stderr_line() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, m: &Model<f64>| {
        let path = dir.path().join(name);
        io::save(m, &path, Layout::Described).unwrap();
        path
    };
    // Two attention layers: a closure. One: exact.
    let deep = [
        save(
            "deep-1.safetensors",
            &embed_attention_layers(1, (3, 4, 3), 2, 2),
        ),
        save(
            "deep-2.safetensors",
            &embed_attention_layers(2, (3, 4, 3), 1, 2),
        ),
    ];
    let shallow = [
        save(
            "shallow-1.safetensors",
            &embed_attention_head(3, (3, 4, 3), 2),
        ),
        save(
            "shallow-2.safetensors",
            &embed_attention_head(4, (3, 4, 3), 1),
        ),
    ];
    let lines = |o: &Output| stderr(o).lines().filter(|l| *l == CLOSURE_NOTE).count();
    for metric in ["gaussian", "gaussian-closure"] {
        let out = run(&[
            "compare",
            s(&deep[0]),
            s(&deep[1]),
            "--context",
            "3",
            "--metric",
            metric,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(lines(&out), 1, "{metric}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(v["exact"], false);
        let out = run(&[
            "compare",
            s(&shallow[0]),
            s(&shallow[1]),
            "--context",
            "3",
            "--metric",
            metric,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(lines(&out), 0, "{metric}: {}", stderr(&out));
        // A difference combining closures says so once too.
        let out = run(&[
            "difference",
            s(&deep[0]),
            s(&deep[1]),
            s(&deep[1]),
            s(&deep[0]),
            "--context",
            "3",
            "--metric",
            metric,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(lines(&out), 1, "{metric}: {}", stderr(&out));
    }
    // The closure by name is the library's closure.
    let out = run(&[
        "compare",
        s(&deep[0]),
        s(&deep[1]),
        "--context",
        "3",
        "--metric",
        "gaussian-closure",
    ]);
    let found: f64 = stdout(&out).trim().parse().unwrap();
    let closure = GaussianSimilarity::closure().with_context(3).unwrap();
    let (ma, mb) = (
        embed_attention_layers(1, (3, 4, 3), 2, 2),
        embed_attention_layers(2, (3, 4, 3), 1, 2),
    );
    assert_eq!(found, closure.similarity(&ma, &mb).unwrap());
    // A matrix writes the note in its corner cell, and the line once.
    let csv = dir.path().join("m.csv");
    let third = save(
        "deep-3.safetensors",
        &embed_attention_layers(5, (3, 4, 3), 2, 2),
    );
    let out = run(&[
        "matrix",
        s(&deep[0]),
        s(&deep[1]),
        s(&third),
        "--context",
        "3",
        "--metric",
        "gaussian",
        "-o",
        s(&csv),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out), 1, "{}", stderr(&out));
    let text = std::fs::read_to_string(&csv).unwrap();
    let corner = text.lines().next().unwrap().split(',').next().unwrap();
    assert_eq!(corner, format!("model ({CLOSURE_NOTE})"));
    // Exact pairs only: no note.
    let out = run(&[
        "matrix",
        s(&shallow[0]),
        s(&shallow[1]),
        "--context",
        "3",
        "--metric",
        "gaussian",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("model,"), "{}", stdout(&out));
}

#[test]
fn a_gaussian_mc_matrix_writes_its_standard_errors_beside_it() {
    use tensor_similarity::GaussianMonteCarlo;
    let dir = tempfile::tempdir().unwrap();
    let m = models(dir.path(), 3);
    let csv = dir.path().join("mc.csv");
    let paths: Vec<&str> = m.iter().map(|(p, _)| s(p)).collect();
    let out = run(&[
        &["matrix"][..],
        &paths,
        &[
            "--metric",
            "gaussian-mc",
            "--samples",
            "1500",
            "--seed",
            "2",
            "-o",
            s(&csv),
        ],
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let models: Vec<Model> = m.iter().map(|(p, _)| io::load(p).unwrap()).collect();
    let library = GaussianMonteCarlo::new(1_500, 2)
        .unwrap()
        .matrix(&models)
        .unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let corner = text.lines().next().unwrap().split(',').next().unwrap();
    assert_eq!(
        corner,
        format!(
            "model (Monte Carlo estimate: 1500 samples seed 2 largest standard error {})",
            library.standard_error.max()
        )
    );
    let body = text.replacen(corner, "model", 1);
    let (_, _, rows) = parse_csv(&body);
    let se_text = std::fs::read_to_string(dir.path().join("mc-se.csv")).unwrap();
    let se_corner = se_text.lines().next().unwrap().split(',').next().unwrap();
    assert_eq!(
        se_corner,
        "model (standard errors of the Monte Carlo similarities in mc.csv: 1500 samples seed 2)"
    );
    let (_, _, se_rows) = parse_csv(&se_text.replacen(se_corner, "model", 1));
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(rows[i][j], library.similarity[(i, j)]);
            assert_eq!(se_rows[i][j], library.standard_error[(i, j)]);
        }
    }
    assert!(!stderr(&out).contains(CLOSURE_NOTE));
}

/// `--max-work`: a comparison whose estimated multiply–adds exceed the
/// limit is refused before it starts with the estimate, the largest context
/// within it, and the flag to raise it; that context runs. The default
/// (10¹⁵) lets the fixtures' contexts through.
#[test]
fn a_work_limit_is_refused_by_name() {
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    let compare = |n: &str, limit: Option<&str>| {
        let mut args = vec!["compare", s(&early), s(&late), "--context", n];
        if let Some(limit) = limit {
            args.extend(["--max-work", limit]);
        }
        run(&args)
    };
    let out = compare("4", None);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = compare("12", Some("1e8"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.starts_with("error: comparing at context 12 takes about "),
        "{line}"
    );
    assert!(line.contains("more than the limit of 1.0e8"), "{line}");
    assert!(line.contains("(--max-work N raises the limit)"), "{line}");
    let fits: usize = line
        .split("the largest context within it is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((1..12).contains(&fits), "{line}");
    let out = compare(&fits.to_string(), Some("1e8"));
    assert!(out.status.success(), "{}", stderr(&out));
    // The same check for every pair of a matrix.
    let out = run(&[
        "matrix",
        s(&early),
        s(&late),
        "--context",
        "12",
        "--max-work",
        "1e8",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(last_line(&out).contains("the largest context within it is"));
    for bad in ["0", "-5", "lots", "inf"] {
        let out = compare("4", Some(bad));
        assert_eq!(out.status.code(), Some(2), "clap rejects {bad}");
    }
}

#[test]
fn heads_and_paths_of_a_training_run() {
    use tensor_similarity::TensorSimilarity;
    let early = torch_fixture("runs/tiny_lm/checkpoints/step_20.pt");
    let late = torch_fixture("runs/tiny_lm/checkpoints/step_100.pt");
    let (a, b) = (io::load(&early).unwrap(), io::load(&late).unwrap());
    let metric = TensorSimilarity::new().with_context(4).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // heads --json: one entry per attention block, the library's values.
    let png = dir.path().join("heads.png");
    let out = run(&[
        "heads",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--json",
        "--plot",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let want = metric.heads(&a, &b).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), want.len());
    // The binary prints the shortest decimal that reads back exactly;
    // serde_json reads it back to within one ulp (without its
    // `float_roundtrip` feature), so the values agree to one ulp.
    let same = |json: &serde_json::Value, x: f64| {
        let y = json.as_f64().unwrap();
        assert!((y - x).abs() <= f64::EPSILON * x.abs(), "{y} {x}");
    };
    for (layer, want) in layers.iter().zip(&want) {
        assert_eq!(layer["block"], want.block);
        for h in 0..want.cosine.nrows() {
            for h2 in 0..want.cosine.ncols() {
                same(&layer["cosine"][h][h2], want.cosine[(h, h2)]);
                same(&layer["inner"][h][h2], want.inner[(h, h2)].to_f64());
            }
        }
    }
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    // Plain: a table per block.
    let out = run(&["heads", s(&early), s(&late), "--context", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("block 1: head paths, cosine"),
        "{}",
        stdout(&out)
    );

    // paths --json: the families of the two attention blocks, summing to ⟨A,B⟩.
    let out = run(&["paths", s(&early), s(&late), "--context", "4", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["blocks"], serde_json::json!([1, 2]));
    assert_eq!(v["families"], serde_json::json!([[], [1], [2], [1, 2]]));
    let want = metric.paths(&a, &b).unwrap();
    let sum: f64 = v["inner"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .sum();
    let total = v["total"].as_f64().unwrap();
    same(&v["total"], want.total.to_f64());
    assert!((sum - total).abs() < 1e-10 * total.abs(), "{sum} {total}");
    same(&v["similarity"], metric.similarity(&a, &b).unwrap());

    // One head or one family across a run: matrix --head / --family.
    let csv = dir.path().join("head.csv");
    let png = dir.path().join("head.png");
    let out = run(&[
        "matrix",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--head",
        "2:1",
        "-o",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The corner cell names the part compared.
    let noted = |text: &str, note: &str| {
        let (corner, rest) = text.split_once(',').unwrap();
        assert_eq!(corner, format!("model ({note})"));
        parse_csv(&format!("model,{rest}")).2
    };
    let rows = noted(&std::fs::read_to_string(&csv).unwrap(), "head path 2:1");
    let heads = metric.heads(&a, &b).unwrap();
    assert!((rows[0][1] - heads[1].cosine[(1, 1)]).abs() < 1e-12);
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let out = run(&[
        "matrix",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--family",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = noted(&stdout(&out), "family {1}");
    assert!((rows[0][1] - want.cosine[(1, 1)]).abs() < 1e-10);
    for (args, says) in [
        (vec!["--family", "0"], "block 0 does not split"),
        (vec!["--head", "1:7"], "head 7 does not exist"),
        (
            vec!["--head", "1:0", "--metric", "gaussian"],
            "tensor metric",
        ),
    ] {
        let mut all = vec!["matrix", s(&early), s(&late), "--context", "4"];
        all.extend(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let out = run(&["matrix", s(&early), "--head", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Which head became which: matrix --head-matching, one CSV of mean
    // cosines and one of matchings per attention block.
    let csv = dir.path().join("match.csv");
    let png = dir.path().join("match.png");
    let out = run(&[
        "matrix",
        s(&early),
        s(&late),
        "--context",
        "4",
        "--head-matching",
        "-o",
        s(&csv),
        "--plot",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (k, heads) in heads.iter().enumerate() {
        let block = heads.block;
        let mean =
            std::fs::read_to_string(dir.path().join(format!("match_block{block}.csv"))).unwrap();
        let rows = noted(
            &mean,
            &format!("head matching at block {block}: mean cosine of the best head matching"),
        );
        let (matching, want) = heads.best_matching();
        assert!((rows[0][1] - want).abs() < 1e-12, "block {k}");
        assert_eq!(rows[1][1], 1.0);
        let text =
            std::fs::read_to_string(dir.path().join(format!("match_block{block}_matching.csv")))
                .unwrap();
        let cell = text.lines().nth(1).unwrap().split(',').nth(2).unwrap();
        let expected: Vec<String> = matching.iter().map(|h| h.unwrap().to_string()).collect();
        assert_eq!(cell, expected.join(" "));
        let plot = std::fs::read(dir.path().join(format!("match_block{block}.png"))).unwrap();
        assert_eq!(&plot[1..4], b"PNG");
    }

    // Errors: no context for a sequence model; no attention block.
    let out = run(&["heads", s(&early), s(&late)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--context"), "{}", stderr(&out));
    let m = models(dir.path(), 2);
    let out = run(&["heads", s(&m[0].0), s(&m[1].0)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no attention block"),
        "{}",
        stderr(&out)
    );
}
