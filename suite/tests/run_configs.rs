//! Run configs are read as the runs' own PyYAML reads them (YAML 1.1), only
//! regular files are read as models or configs (a FIFO never blocks the
//! reader), and a config's errors are one line of bounded length. Keys that
//! cannot change the function at eval are listed, not refused; the rotary
//! base may be given as an option; a config may be given as content; and
//! errors name each option as the caller spells it.
//!
//! The run is the PyTorch fixture `tests/files/torch/runs/tiny_lm`, copied
//! into a temporary folder and its `config.yaml` edited.

mod common;

use std::path::{Path, PathBuf};

use tensor_similarity::block::Attention;
use tensor_similarity::io::{
    self, ConfigHint, ConfigSource, FileError, LoadOption, LoadOptions, ModelFile,
};
use tensor_similarity::{Error, Model, Spelling};

/// The fixture run, copied: `(root, checkpoint, config.yaml)` with the
/// checkpoint at `root/checkpoints/step_100.pt` and the config at
/// `root/config.yaml`.
fn tiny_lm(dir: &Path) -> (PathBuf, PathBuf) {
    let fixture = common::files::fixtures().join("torch/runs/tiny_lm");
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    let ckpt = dir.join("checkpoints/step_100.pt");
    std::fs::copy(fixture.join("checkpoints/step_100.pt"), &ckpt).unwrap();
    let config = dir.join("config.yaml");
    std::fs::copy(fixture.join("config.yaml"), &config).unwrap();
    (ckpt, config)
}

/// The fixture's config text.
fn fixture_config() -> String {
    std::fs::read_to_string(common::files::fixtures().join("torch/runs/tiny_lm/config.yaml"))
        .unwrap()
}

/// `f()` on another thread; the test fails if it has not returned within
/// `secs` seconds (so that a reader that blocks fails the test instead of
/// hanging it).
#[cfg(unix)]
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::mpsc;
    use std::time::Duration;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: no answer after {secs} s (the reader blocks)"))
}

/// Opening `path` with `options`, bounded in time.
#[cfg(unix)]
fn open_within(path: &Path, options: LoadOptions) -> Result<ModelFile, Error> {
    let path = path.to_owned();
    let what = path.display().to_string();
    within(20, &what, move || io::open(&path, &options))
}

/// The [`FileError`] of a load that must fail.
fn file_error(result: Result<ModelFile, Error>) -> FileError {
    match result {
        Err(Error::File { source, .. }) => source,
        Err(other) => panic!("not a file error: {other}"),
        Ok(_) => panic!("loaded"),
    }
}

/// The rotary bases of a model's attention blocks.
fn rotary_bases(model: &Model<f64>) -> Vec<Option<f64>> {
    model
        .blocks()
        .iter()
        .filter_map(|b| (&**b as &dyn std::any::Any).downcast_ref::<Attention<f64>>())
        .map(|a| a.rotary_base())
        .collect()
}

/// The config of a `Config` error, and its reason.
fn config_error(result: Result<ModelFile, Error>) -> (PathBuf, String) {
    match file_error(result) {
        FileError::Config { config, reason, .. } => (config, reason),
        other => panic!("not a config error: {other}"),
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Model files that are not regular files are refused at once, saying what
/// they are: a FIFO (whose open would wait for a writer forever), a
/// directory, a socket, a device, a broken symbolic link.
#[cfg(unix)]
#[test]
fn only_regular_files_are_read_as_models() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("f.pt");
    mkfifo(&fifo);
    let folder = dir.path().join("d.safetensors");
    std::fs::create_dir(&folder).unwrap();
    let socket = dir.path().join("s.pt");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let broken = dir.path().join("b.pt");
    std::os::unix::fs::symlink(dir.path().join("gone.pt"), &broken).unwrap();
    let to_fifo = dir.path().join("l.pt");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    for (path, kind) in [
        (&*fifo, "is a FIFO"),
        (&to_fifo, "is a FIFO"),
        (&folder, "is a directory"),
        (&socket, "is a socket"),
        (Path::new("/dev/null"), "is a character device"),
        (&broken, "is a broken symbolic link"),
    ] {
        let e = open_within(path, LoadOptions::default()).unwrap_err();
        let message = e.to_string();
        assert!(
            matches!(
                e,
                Error::File {
                    source: FileError::Io(_),
                    ..
                }
            ),
            "{message}"
        );
        assert!(
            message.starts_with(&path.display().to_string()) && message.contains(kind),
            "{kind}: {message}"
        );
    }
}

/// A `config.yaml` beside the checkpoint that exists but is not a regular
/// file is an error naming it (passing over it would read the model without
/// its run's config, and then fail for want of `n_head`); so is a
/// `--config` that is not a regular file. A FIFO is refused without
/// waiting for a writer.
#[cfg(unix)]
#[test]
fn configs_that_are_not_regular_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let reset = || {
        if std::fs::symlink_metadata(&config).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir(&config).unwrap();
        } else if std::fs::symlink_metadata(&config).is_ok() {
            std::fs::remove_file(&config).unwrap();
        }
    };
    let broken = |p: &Path| std::os::unix::fs::symlink(dir.path().join("gone.yaml"), p).unwrap();
    type Make<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: [(Make, &str); 3] = [
        (
            Box::new(|p| std::fs::create_dir(p).unwrap()),
            "is a directory",
        ),
        (Box::new(mkfifo), "is a FIFO"),
        (Box::new(broken), "is a broken symbolic link"),
    ];
    for (make, kind) in &cases {
        reset();
        make(&config);
        let (path, reason) = config_error(open_within(&ckpt, LoadOptions::default()));
        assert_eq!(path, config, "{kind}");
        assert!(reason.contains(kind), "{kind}: {reason}");
        // One folder nearer the checkpoint, too (there the run's own
        // config, a folder up, would otherwise be found).
        let near = dir.path().join("checkpoints/config.yml");
        reset();
        std::fs::write(&config, fixture_config()).unwrap();
        make(&near);
        let (path, reason) = config_error(open_within(&ckpt, LoadOptions::default()));
        assert_eq!(path, near, "{kind}");
        assert!(reason.contains(kind), "{kind}: {reason}");
        // Given with --config.
        let options = LoadOptions {
            config: Some(near.clone().into()),
            ..LoadOptions::default()
        };
        let (path, reason) = config_error(open_within(&ckpt, options));
        assert_eq!(path, near, "{kind}");
        assert!(reason.contains(kind), "{kind}: {reason}");
        if std::fs::symlink_metadata(&near).unwrap().is_dir() {
            std::fs::remove_dir(&near).unwrap();
        } else {
            std::fs::remove_file(&near).unwrap();
        }
    }
    // The regular config read again: the run loads.
    reset();
    std::fs::write(&config, fixture_config()).unwrap();
    let f = open_within(&ckpt, LoadOptions::default()).unwrap();
    assert_eq!(f.config.as_deref(), Some(&*config));
}

/// `rope_base: 01750` is octal to PyYAML, which the run's code read its
/// config with: base 1000, not 1750 (as YAML 1.2 would read it).
#[test]
fn rope_base_is_read_as_pyyaml_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let text = fixture_config();
    assert!(text.contains("  rope_base: 500.0\n"));
    let with = |rope: &str| {
        std::fs::write(&config, text.replace("rope_base: 500.0", rope)).unwrap();
        io::open(&ckpt, &LoadOptions::default()).unwrap()
    };
    let octal = with("rope_base: 01750");
    assert_eq!(rotary_bases(&octal.model), [Some(1000.0), Some(1000.0)]);
    // The same model as base 1000 written out, another than 1750.
    let tokens = one_hot(&[1, 4, 7, 2], 11);
    let logits = |f: &ModelFile| f.model.forward_sequence(&tokens).unwrap();
    assert_eq!(logits(&octal), logits(&with("rope_base: 1000.0")));
    assert_ne!(logits(&octal), logits(&with("rope_base: 1750.0")));
    // The other YAML 1.1 numbers: sexagesimal, underscores, hexadecimal,
    // a float with a signed exponent.
    for (rope, base) in [
        ("rope_base: 16:40", 1000.0),
        ("rope_base: 1_000", 1000.0),
        ("rope_base: 0x3e8", 1000.0),
        ("rope_base: 1.0e+3", 1000.0),
    ] {
        assert_eq!(
            rotary_bases(&with(rope).model),
            [Some(base), Some(base)],
            "{rope}"
        );
    }
    // `1e3` is a string to PyYAML: an error that shows it, not 1000.
    std::fs::write(&config, text.replace("rope_base: 500.0", "rope_base: 1e3")).unwrap();
    let (_, reason) = config_error(io::open(&ckpt, &LoadOptions::default()));
    assert!(
        reason.contains("model.rope_base must be a positive finite number, found \"1e3\""),
        "{reason}"
    );
    std::fs::write(&config, text.replace("n_head: 2", "n_head: 1e3")).unwrap();
    let (_, reason) = config_error(io::open(&ckpt, &LoadOptions::default()));
    assert!(
        reason.contains("model.n_head must be a non-negative integer, found \"1e3\""),
        "{reason}"
    );
    // YAML 1.1 booleans.
    for (flag, ok) in [("use_bias_qk: yes", true), ("use_bias_qk: off", false)] {
        std::fs::write(&config, text.replace("use_bias_qk: true", flag)).unwrap();
        // The checkpoint has q/k biases: `off` disagrees with it.
        assert_eq!(
            io::open(&ckpt, &LoadOptions::default()).is_ok(),
            ok,
            "{flag}"
        );
    }
}

/// A native context of no positions, or fewer, is an error naming the key;
/// so is a rotary base that is not positive (not an invalid block later).
#[test]
fn n_ctx_and_rope_base_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let text = fixture_config();
    for n in ["0", "-16", "00", "-0b1"] {
        std::fs::write(&config, text.replace("n_ctx: 16", &format!("n_ctx: {n}"))).unwrap();
        let (_, reason) = config_error(io::open(&ckpt, &LoadOptions::default()));
        assert!(
            reason.contains("model.n_ctx must be a positive integer"),
            "{n}: {reason}"
        );
    }
    for base in ["0", "-500.0", "-.inf", "0.0"] {
        std::fs::write(
            &config,
            text.replace("rope_base: 500.0", &format!("rope_base: {base}")),
        )
        .unwrap();
        let (_, reason) = config_error(io::open(&ckpt, &LoadOptions::default()));
        assert!(
            reason.contains("model.rope_base must be a positive finite number"),
            "{base}: {reason}"
        );
    }
    std::fs::write(&config, text.replace("n_ctx: 16", "n_ctx: 0x10")).unwrap();
    let f = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(f.native_context, Some(16));
}

/// 20 000 unknown keys give one line of a few hundred characters that
/// names the first and counts the rest (not a 200 KB line).
#[test]
fn thousands_of_unknown_keys_give_a_short_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let unknown: String = (0..20_000).map(|i| format!("  k{i:05}: 1\n")).collect();
    std::fs::write(
        &config,
        fixture_config().replace("  n_ctx: 16\n", &format!("  n_ctx: 16\n{unknown}")),
    )
    .unwrap();
    let result = io::open(&ckpt, &LoadOptions::default());
    let message = result.as_ref().unwrap_err().to_string();
    let (path, reason) = config_error(result);
    assert_eq!(path, config);
    // The message names the checkpoint and the config, whose paths' length
    // depends on the temporary folder; the rest is under 500 characters.
    assert!(reason.chars().count() < 400, "{reason}");
    let without_paths = message
        .replace(&*ckpt.display().to_string(), "")
        .replace(&*config.display().to_string(), "");
    assert!(without_paths.chars().count() < 500, "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(
        reason.starts_with("unknown model keys \"k00000\", \"k00001\"")
            && reason.contains(", \"k00007\", … and 19992 more:"),
        "{reason}"
    );
}

/// A config of one line of block sequences half a million deep (1 MB) is
/// refused at depth 65; the YAML parser's own recursive loader overflowed
/// the stack on it (an abort, not an error).
#[test]
fn deeply_nested_configs_are_refused_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    std::fs::write(&config, "- ".repeat(500_000) + "x\n").unwrap();
    let (_, reason) = config_error(io::open(&ckpt, &LoadOptions::default()));
    assert_eq!(reason, "nested more than 64 levels deep");
}

/// One-hot rows of `tokens` over `vocab`.
fn one_hot(tokens: &[usize], vocab: usize) -> nalgebra::DMatrix<f64> {
    nalgebra::DMatrix::from_fn(tokens.len(), vocab, |i, j| f64::from(tokens[i] == j))
}

// ---------------------------------------------------------------------------
// Issue 27: config keys, --rope-base, configs given as content, options
// named as the caller spells them.

/// The fixture run's logits, as PyTorch computed them (`expected.json`),
/// against `f`'s forward pass: each sequence to `1e-12` relative (both f64
/// from the same f32 weights, summed in other orders).
fn assert_pytorch_logits(f: &ModelFile, what: &str) {
    let dir = common::files::fixtures().join("torch/runs/tiny_lm");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected["checkpoint"], "checkpoints/step_100.pt");
    let vocab = f.model.input_width();
    for case in expected["sequences"].as_array().unwrap() {
        let (tokens, want) = common::files::logits_case(case, vocab);
        let got = f.model.forward_sequence(&one_hot(&tokens, vocab)).unwrap();
        let err = (&got - &want).amax() / want.amax();
        assert!(err < 1e-12, "{what} {tokens:?}: {err:e}");
    }
}

/// The tensor similarity at context 3 of two files' models.
fn similarity_at_3(a: &ModelFile, b: &ModelFile) -> f64 {
    use tensor_similarity::RecursiveSimilarity;
    tensor_similarity::TensorSimilarity::new()
        .with_context(3)
        .unwrap()
        .similarity(&a.model, &b.model)
        .unwrap()
}

/// The keys a training script leaves under `model` that cannot change the
/// function at eval.
const FUNCTION_FREE: &str = "  dropout: 0.1\n  attn_dropout: 0.2\n  resid_pdrop: 0.1\n  \
    init_std: 0.02\n  initializer_range: 0.02\n  lr: 3.0e-4\n  weight_decay: 0.1\n  \
    betas: [0.9, 0.95]\n  adam_eps: 1.0e-8\n  optimizer:\n    name: adamw\n    eps: 1.0e-8\n  \
    warmup_steps: 100\n  lr_scheduler: cosine\n  max_steps: 1000\n  batch_size: 8\n  \
    grad_clip: 1.0\n  compile: true\n  seed: 7\n  device: cuda\n  dtype: bfloat16\n  \
    wandb_project: runs\n  log_every: 10\n";

/// `dropout`, `init_std`, optimiser, schedule and run keys under `model`
/// change nothing: the logits are still PyTorch's, the similarity to
/// another checkpoint is the same to the last bit, and each key is listed
/// as ignored with its value.
#[test]
fn function_free_config_keys_change_nothing_and_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let plain = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert!(plain.ignored_config_keys.is_empty());
    let early = io::open(
        common::files::fixtures().join("torch/runs/tiny_lm/checkpoints/step_20.pt"),
        &LoadOptions::default(),
    )
    .unwrap();
    std::fs::write(
        &config,
        fixture_config().replace("  n_ctx: 16\n", &format!("  n_ctx: 16\n{FUNCTION_FREE}")),
    )
    .unwrap();
    let with = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_pytorch_logits(&with, "with dropout, init_std, lr, …");
    assert_eq!(
        similarity_at_3(&with, &early),
        similarity_at_3(&plain, &early)
    );
    assert_counter_absent(&with.assumptions);
    let keys: Vec<&str> = with
        .ignored_config_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    let mut want: Vec<&str> = FUNCTION_FREE
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    let value = |key: &str| {
        let k = with.ignored_config_keys.iter().find(|k| k.key == key);
        k.unwrap().value.clone()
    };
    assert_eq!(value("dropout"), serde_json::json!(0.1));
    assert_eq!(value("init_std"), serde_json::json!(0.02));
    assert_eq!(value("betas"), serde_json::json!([0.9, 0.95]));
    assert_eq!(value("device"), serde_json::json!("cuda"));
    // A section is ignored whole, the optimiser's own eps with it.
    assert_eq!(
        value("optimizer"),
        serde_json::json!({"name": "adamw", "eps": 1.0e-8})
    );
    let dropout = with.ignored_config_keys.iter().find(|k| k.key == "dropout");
    assert!(dropout.unwrap().why.contains("identity at eval"));
}

/// A key that may change the function is still refused (a norm's `eps`,
/// a rotary setting), with advice that works for a `.pt` file (which
/// cannot carry metadata): an edited copy of the config given as the
/// config option, or the model described explicitly; each caller is told
/// its own spelling.
#[test]
fn keys_that_may_change_the_function_are_refused_with_advice_for_pt_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    for key in [
        "eps: 1.0e-5",
        "rotary_dim: 2",
        "rope_theta: 10000",
        "name: gpt2",
    ] {
        std::fs::write(
            &config,
            fixture_config().replace(
                "  n_ctx: 16\n",
                &format!("  n_ctx: 16\n  dropout: 0.1\n  {key}\n"),
            ),
        )
        .unwrap();
        let e = io::open(&ckpt, &LoadOptions::default()).unwrap_err();
        let rust = e.to_string();
        let cli = e.spelled(Spelling::CommandLine).to_string();
        let python = e.spelled(Spelling::Python).to_string();
        let name = key.split(':').next().unwrap();
        let (path, reason) = config_error(Err(e));
        assert_eq!(path, config);
        // Only the unknown key is named; dropout is not refused.
        assert!(
            reason.starts_with(&format!(
                "unknown model key {name:?}: it may change the function"
            )),
            "{reason}"
        );
        assert!(
            rust.contains("copy of the config without it with LoadOptions::config"),
            "{rust}"
        );
        assert!(
            cli.contains("copy of the config without it with --config FILE"),
            "{cli}"
        );
        assert!(
            cli.contains("safetensors with tensor_similarity metadata"),
            "{cli}"
        );
        assert!(
            python.contains("with config= (a path or a dict)"),
            "{python}"
        );
        assert!(python.contains("layout="), "{python}");
        for (text, foreign) in [
            (&rust, "--config"),
            (&cli, "LoadOptions"),
            (&python, "--config"),
        ] {
            assert!(!text.contains(foreign), "{text}");
        }
        // The keys the layout reads are listed, last.
        assert!(cli.ends_with("use_rmsnorm_qk)"), "{cli}");
    }
}

/// `LoadOptions::rope_base` stands in where the config gives no
/// `rope_base` (PyTorch's logits, base 500), must agree with the config
/// where it gives one, must be a positive number, and is unused by the
/// layouts without rotary attention.
#[test]
fn the_rope_base_option_stands_in_for_the_config_and_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    let base = |b: f64| LoadOptions {
        rope_base: Some(b),
        ..LoadOptions::default()
    };
    // The config's own, given again: agreed.
    let f = io::open(&ckpt, &base(500.0)).unwrap();
    assert_pytorch_logits(&f, "config and option 500");
    assert!(f.unused_options.is_empty());
    // Another disagrees, naming both.
    let e = io::open(&ckpt, &base(1000.0)).unwrap_err();
    assert!(
        e.spelled(Spelling::CommandLine)
            .to_string()
            .ends_with("model.rope_base is 500, but --rope-base says 1000"),
        "{e}"
    );
    match file_error(Err(e)) {
        FileError::Config { reason, hint, .. } => {
            assert_eq!(reason, "model.rope_base is 500");
            assert_eq!(
                hint,
                Some(ConfigHint::Disagrees {
                    option: LoadOption::RopeBase,
                    given: "1000".into()
                })
            );
        }
        other => panic!("{other}"),
    }
    // Without rope_base in the config: the option gives PyTorch's model, the
    // default (10 000, said) another.
    std::fs::write(
        &config,
        fixture_config().replace("  rope_base: 500.0\n", ""),
    )
    .unwrap();
    let f = io::open(&ckpt, &base(500.0)).unwrap();
    assert_pytorch_logits(&f, "option 500");
    assert_counter_absent(&f.assumptions);
    assert_eq!(rotary_bases(&f.model), [Some(500.0), Some(500.0)]);
    let default = io::open(&ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(default.assumptions[0], "rope_base absent: 10000");
    assert_counter_absent(&default.assumptions[1..]);
    assert_eq!(rotary_bases(&default.model), [Some(10000.0), Some(10000.0)]);
    // Not a rotary base: an error naming the option.
    for bad in [0.0, -500.0, f64::NAN, f64::INFINITY] {
        match file_error(io::open(&ckpt, &base(bad))) {
            FileError::InvalidOption { option, reason } => {
                assert_eq!(option, LoadOption::RopeBase);
                assert!(reason.contains("positive finite"), "{reason}");
            }
            other => panic!("{bad}: {other}"),
        }
    }
    // A vector layout has no attention: the option is unused.
    let vector = common::files::fixtures().join("torch/ebh_f64.safetensors");
    let f = io::open(&vector, &base(500.0)).unwrap();
    assert_eq!(f.unused_options, ["rope_base"]);
}

/// The fixture's config as content: what its YAML parses to.
fn fixture_content() -> serde_json::Value {
    serde_json::json!({
        "model": {
            "vocab_size": 11, "d_model": 8, "n_head": 2, "n_layers": 2, "attn_scale": 0.35,
            "attn_type": "bilinear", "rope_base": 500.0, "use_bias_qk": true, "n_ctx": 16,
            "norm_type": "tok0_batch", "norm_places": ["pre_unembed"], "norm_kwargs": {"eps": 1e-6},
            "use_rmsnorm_qk": false,
        },
        "train": {"seed": 0, "lr": 0.01},
    })
}

/// A config given as content is read as the same file is: the same model
/// (PyTorch's logits), found even where no file is beside the checkpoint,
/// with the same checks against the tensors and the options; its errors
/// name it as content, not as a path.
#[test]
fn a_config_given_as_content_reads_as_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    // The file, given explicitly: PyTorch's model (and so is the content,
    // below, which is what this file parses to).
    let file = LoadOptions {
        config: Some(config.clone().into()),
        ..LoadOptions::default()
    };
    assert_pytorch_logits(&io::open(&ckpt, &file).unwrap(), "file");
    std::fs::remove_file(&config).unwrap();
    let given = |content: serde_json::Value| LoadOptions {
        config: Some(ConfigSource::Content(content)),
        ..LoadOptions::default()
    };
    let f = io::open(&ckpt, &given(fixture_content())).unwrap();
    assert_pytorch_logits(&f, "content");
    assert_eq!(f.native_context, Some(16));
    assert!(f.config.is_none());
    assert_counter_absent(&f.assumptions);
    // Function-free keys are listed as they are for a file.
    let mut content = fixture_content();
    content["model"]["dropout"] = 0.1.into();
    let f = io::open(&ckpt, &given(content)).unwrap();
    assert_eq!(f.ignored_config_keys.len(), 1);
    assert_eq!(f.ignored_config_keys[0].key, "dropout");
    // Checked against the tensors: two layers, not three.
    let mut content = fixture_content();
    content["model"]["n_layers"] = 3.into();
    let e = io::open(&ckpt, &given(content)).unwrap_err();
    assert!(
        e.to_string()
            .contains("config (LoadOptions::config content): model.n_layers"),
        "{e}"
    );
    let python = e.spelled(Spelling::Python).to_string();
    assert!(
        python.contains("config (the dict given as config=): model.n_layers"),
        "{python}"
    );
    let (path, reason) = config_error(Err(e));
    assert_eq!(path, PathBuf::new());
    assert!(reason.contains("n_layers"), "{reason}");
    // And against the options.
    let options = LoadOptions {
        heads: Some(4),
        ..given(fixture_content())
    };
    let e = io::open(&ckpt, &options).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("model.n_head is 2, but LoadOptions::heads says 4"),
        "{e}"
    );
    // Read strictly, as a file is.
    for (content, needle) in [
        (serde_json::json!([1, 2]), "the top level must be a mapping"),
        (serde_json::json!({"train": {}}), "no \"model\" section"),
        (
            serde_json::json!({"model": {"n_head": "two"}}),
            "model.n_head must be",
        ),
        (
            serde_json::json!({"model": {"eps": 1e-5}}),
            "unknown model key \"eps\"",
        ),
    ] {
        let (_, reason) = config_error(io::open(&ckpt, &given(content)));
        assert!(reason.contains(needle), "{reason}");
    }
    let mut deep = serde_json::json!(1);
    for _ in 0..100 {
        deep = serde_json::json!([deep]);
    }
    let (_, reason) = config_error(io::open(
        &ckpt,
        &given(serde_json::json!({"model": {"x": deep}})),
    ));
    assert_eq!(reason, "nested more than 64 levels deep");
}

/// Errors that name an option name it as the caller spells it: the
/// library's field, the command line's flag, Python's keyword, and never
/// another's.
#[test]
fn errors_name_options_as_each_caller_spells_them() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, config) = tiny_lm(dir.path());
    std::fs::write(&config, fixture_config().replace("  n_head: 2\n", "")).unwrap();
    let e = io::open(&ckpt, &LoadOptions::default()).unwrap_err();
    assert!(matches!(
        file_error(io::open(&ckpt, &LoadOptions::default())),
        FileError::NeedsConfig {
            option: LoadOption::Heads,
            ..
        }
    ));
    let rust = e.to_string();
    let cli = e.spelled(Spelling::CommandLine).to_string();
    let python = e.spelled(Spelling::Python).to_string();
    assert_eq!(e.spelled(Spelling::Rust).to_string(), rust);
    assert!(
        rust.ends_with("LoadOptions::config, or LoadOptions::heads"),
        "{rust}"
    );
    assert!(cli.ends_with("--config FILE, or --heads"), "{cli}");
    assert!(
        python.ends_with("config= (a path or a dict), or heads="),
        "{python}"
    );
    assert!(
        !python.contains("--") && !python.contains("LoadOptions"),
        "{python}"
    );
    assert!(
        !cli.contains("heads=") && !cli.contains("LoadOptions"),
        "{cli}"
    );
    // The rest of the message is the same for all.
    assert!(
        rust.starts_with(&ckpt.display().to_string())
            && cli.starts_with(&ckpt.display().to_string())
    );
    // Two configs in one folder: say which, with the caller's option.
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let e = io::open(&ckpt, &LoadOptions::default()).unwrap_err();
    assert!(
        e.spelled(Spelling::CommandLine)
            .to_string()
            .ends_with("is in the same folder, or say which config to use with --config FILE"),
        "{e}"
    );
    assert!(
        e.spelled(Spelling::Python)
            .to_string()
            .contains("with config=")
    );
}

/// The `tiny_lm` fixtures' one assumption: their final norm has no
/// `num_batches_tracked` (written before the research code's `Tok0Batch`
/// kept one), so its stored energy is read as a tracked one's, and said.
fn assert_counter_absent(assumptions: &[String]) {
    assert_eq!(assumptions.len(), 1, "{assumptions:?}");
    assert!(
        assumptions[0].starts_with("final_norm.num_batches_tracked absent: the tok0_batch norm at pre_unembed is read with its stored running_mean_energy"),
        "{assumptions:?}"
    );
}
