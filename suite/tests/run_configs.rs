//! Run configs are read as the runs' own PyYAML reads them (YAML 1.1), only
//! regular files are read as models or configs (a FIFO never blocks the
//! reader), and a config's errors are one line of bounded length.
//!
//! The run is the PyTorch fixture `tests/files/torch/runs/tiny_lm`, copied
//! into a temporary folder and its `config.yaml` edited.

mod common;

use std::path::{Path, PathBuf};

use tensor_similarity::block::Attention;
use tensor_similarity::io::{self, FileError, LoadOptions, ModelFile};
use tensor_similarity::{Error, Model};

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
        FileError::Config { config, reason } => (config, reason),
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
            config: Some(near.clone()),
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
