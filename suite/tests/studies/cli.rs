//! The command line (the suite's build of `tensor-similarity`), run in a
//! study's directory as a user would run it there.

use std::path::Path;
use std::process::Command;

/// `tensor-similarity ARGS` run in `dir`: its standard output, or a panic
/// with its standard error.
pub fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tensor-similarity-repo"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tensor-similarity {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The number `tensor-similarity ARGS` prints (`compare`, `difference`).
pub fn number(dir: &Path, args: &[&str]) -> f64 {
    let text = run(dir, args);
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{args:?} printed {text:?}: {e}"))
}

/// `matrix FILES… -o OUT [EXTRA…]` in `dir`, `OUT` a path outside it.
pub fn matrix(dir: &Path, files: &[String], out: &Path, extra: &[&str]) {
    let out = out.to_str().unwrap();
    let mut args: Vec<&str> = vec!["matrix"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["-o", out]);
    args.extend(extra);
    run(dir, &args);
}
