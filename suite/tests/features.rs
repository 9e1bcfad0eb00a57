//! The dependency a user adds: `tensor-similarity = "0.1"` must bring the
//! library alone, not the command line's dependencies, and the library must
//! build and work without any feature.
//!
//! What is checked, and why this way:
//!
//! * **Cargo.toml itself** ([`check_default_features`]):
//!   the `default` feature set, closed over everything it enables (features
//!   enabling features, `dep:x`, `x/feature`), contains neither `cli` nor any
//!   of the command line's dependencies, and each of those is an optional
//!   dependency (a non-optional one would be built whatever the features).
//!   The manifest is read as a file rather than by running `cargo metadata`
//!   or `cargo tree` from the test: a cargo started inside `cargo test` can
//!   wait on the locks the outer cargo holds, and the manifest is what cargo
//!   resolves features from. Mutated manifests show the check fails where
//!   it should. `.ci/run` adds the resolved view: `cargo tree -e normal` of
//!   the default features must not list these crates.
//! * **The targets that need the command line say so**
//!   ([`command_line_targets_require_the_feature`]): the binary and its
//!   test carry `required-features = ["cli"]`, so `cargo build`/`cargo
//!   test` without the feature skip them instead of failing.
//! * **The library's code does not use them** ([`library_code_does_not_use_the_command_line_crates`]):
//!   only `src/bin/` may name clap, indicatif, plotters or dejavu.
//! * **The library works without features** ([`library_works_without_features`]):
//!   the README's path, with nalgebra through the re-export, a file round
//!   trip and a similarity matrix. This file has no `cfg` on the features, so
//!   `.ci/run`'s `cargo check --no-default-features --all-targets` builds it
//!   (and every other target) with no feature at all, which is the "builds
//!   with no default features" half; `cargo test` without `--all-features`
//!   runs it in that configuration.

use std::collections::{BTreeMap, BTreeSet};

/// The crates only the command line needs.
const CLI_DEPENDENCIES: [&str; 4] = ["clap", "indicatif", "plotters", "dejavu"];

const MANIFEST: &str = include_str!("../../Cargo.toml");

/// The parts of a Cargo.toml these tests need: every table (`[a.b]` or an
/// entry of `[[a]]`) as its header and its `key = value` lines, values kept
/// as raw text (arrays joined onto one line). Enough for this crate's
/// manifest, which uses one line per dependency and no multi-line strings.
fn tables(manifest: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = vec![(String::new(), BTreeMap::new())];
    let mut pending: Option<(String, String)> = None;
    for raw in manifest.lines() {
        let line = strip_comment(raw).trim().to_string();
        if let Some((key, mut value)) = pending.take() {
            value.push(' ');
            value.push_str(&line);
            if brackets_balanced(&value) {
                out.last_mut().unwrap().1.insert(key, value);
            } else {
                pending = Some((key, value));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let header = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            out.push((header, BTreeMap::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("Cargo.toml line not understood: {raw}"));
        let (key, value) = (
            key.trim().trim_matches('"').to_string(),
            value.trim().to_string(),
        );
        if brackets_balanced(&value) {
            out.last_mut().unwrap().1.insert(key, value);
        } else {
            pending = Some((key, value));
        }
    }
    assert!(pending.is_none(), "unterminated array in Cargo.toml");
    out
}

fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

fn brackets_balanced(value: &str) -> bool {
    value.matches(['[', '{']).count() == value.matches([']', '}']).count()
}

/// The quoted strings of a TOML array such as `["a", "dep:b"]`.
fn strings(array: &str) -> Vec<String> {
    array
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn table<'a>(
    tables: &'a [(String, BTreeMap<String, String>)],
    header: &str,
) -> &'a BTreeMap<String, String> {
    &tables
        .iter()
        .find(|(h, _)| h == header)
        .unwrap_or_else(|| panic!("Cargo.toml has no [{header}]"))
        .1
}

/// The features and the optional dependencies that enabling `start`
/// switches on, following cargo's rules: a feature's entries are other
/// features, `dep:x` (the optional dependency `x`), `x/f` (feature `f` of
/// `x`, and `x` itself), `x?/f` (only if `x` is on anyway) or, for an
/// optional dependency without `dep:` entries, its implicit feature `x`.
fn closure(
    features: &BTreeMap<String, Vec<String>>,
    dependencies: &BTreeSet<String>,
    start: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut on, mut deps) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![start.to_string()];
    while let Some(feature) = stack.pop() {
        if !on.insert(feature.clone()) {
            continue;
        }
        for entry in features.get(&feature).into_iter().flatten() {
            if let Some(dep) = entry.strip_prefix("dep:") {
                deps.insert(dep.to_string());
            } else if let Some((dep, _)) = entry.split_once('/') {
                if !dep.ends_with('?') {
                    deps.insert(dep.to_string());
                    if features.contains_key(dep) {
                        stack.push(dep.to_string());
                    }
                }
            } else if features.contains_key(entry) {
                stack.push(entry.clone());
            } else if dependencies.contains(entry) {
                deps.insert(entry.clone());
            } else {
                panic!("feature `{feature}` enables `{entry}`, neither a feature nor a dependency");
            }
        }
    }
    (on, deps)
}

/// `Ok` if the manifest's default features leave out the command line:
/// `default`, closed over what it enables, has no `cli` and none of
/// [`CLI_DEPENDENCIES`], each of which is an optional dependency that `cli`
/// enables. `Err` says what is wrong.
fn check_default_features(manifest: &str) -> Result<(), String> {
    let tables = tables(manifest);
    let features: BTreeMap<String, Vec<String>> = table(&tables, "features")
        .iter()
        .map(|(k, v)| (k.clone(), strings(v)))
        .collect();

    // Every dependency a user's build sees (not dev-dependencies), written
    // `[dependencies] name = {…}` or, as `cargo package` rewrites the
    // manifest, `[dependencies.name]`: a command-line crate among them must
    // be optional.
    let is_deps = |header: &str| {
        let last = header.rsplit('.').next().unwrap_or(header);
        (header == last || header.starts_with("target."))
            && (last == "dependencies" || last == "build-dependencies")
    };
    let mut specs = Vec::new();
    for (header, entries) in &tables {
        if is_deps(header) {
            for (name, spec) in entries {
                specs.push((header.clone(), name.clone(), spec.replace(' ', "")));
            }
        } else if let Some((parent, name)) = header.rsplit_once('.')
            && is_deps(parent)
        {
            let optional = entries.get("optional").map(String::as_str) == Some("true");
            specs.push((
                parent.to_string(),
                name.to_string(),
                format!("{{optional={optional}}}"),
            ));
        }
    }
    let mut dependencies = BTreeSet::new();
    for (header, name, spec) in specs {
        if CLI_DEPENDENCIES.contains(&name.as_str()) && !spec.contains("optional=true") {
            return Err(format!(
                "`{name}` in [{header}] must be `optional = true`: the command line's \
                 dependencies may only come with the `cli` feature"
            ));
        }
        dependencies.insert(name);
    }
    if let Some(name) = CLI_DEPENDENCIES
        .iter()
        .find(|n| !dependencies.contains(**n))
    {
        return Err(format!(
            "`{name}` is not a dependency any more: update CLI_DEPENDENCIES"
        ));
    }

    let (on, deps) = closure(&features, &dependencies, "default");
    if on.contains("cli") {
        return Err(format!("the default features enable `cli`: {on:?}"));
    }
    let pulled: Vec<_> = CLI_DEPENDENCIES
        .iter()
        .filter(|d| deps.contains(**d))
        .collect();
    if !pulled.is_empty() {
        return Err(format!(
            "the default features pull the command line's dependencies {pulled:?}"
        ));
    }

    // The `cli` feature is what brings them, so `--features cli` works.
    let (_, cli_deps) = closure(&features, &dependencies, "cli");
    if let Some(name) = CLI_DEPENDENCIES.iter().find(|n| !cli_deps.contains(**n)) {
        return Err(format!("`cli` does not enable `{name}`"));
    }
    Ok(())
}

#[test]
fn default_features_leave_out_the_command_line() {
    if let Err(e) = check_default_features(MANIFEST) {
        panic!("{e}");
    }
}

/// The manifest with `optional = true` taken off the dependency `name`,
/// written inline (`name = { …, optional = true }`) or as its own table
/// (`[dependencies.name]`, as in the manifest `cargo package` ships).
fn without_optional(manifest: &str, name: &str) -> String {
    let mut in_table = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_table = line.trim() == format!("[dependencies.{name}]");
        }
        if in_table && line.replace(' ', "") == "optional=true" {
            continue;
        }
        if line.starts_with(&format!("{name} = {{")) {
            out.push(line.replace(", optional = true", ""));
        } else {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

/// The check is not vacuous: manifests that would bring the command line
/// with `tensor-similarity = "0.1"` fail it.
#[test]
fn the_check_catches_a_default_with_the_command_line() {
    assert!(MANIFEST.contains("\ndefault = []\n"));
    let broken = [
        MANIFEST.replace("\ndefault = []\n", "\ndefault = [\"cli\"]\n"),
        MANIFEST.replace("\ndefault = []\n", "\ndefault = [\"dep:plotters\"]\n"),
        MANIFEST.replace("\ndefault = []\n", "\ndefault = [\"clap/derive\"]\n"),
        MANIFEST.replace(
            "\ndefault = []\n",
            "\ndefault = [\"all\"]\nall = [\"cli\"]\n",
        ),
        without_optional(MANIFEST, "indicatif"),
    ];
    for manifest in broken {
        assert_ne!(manifest, MANIFEST, "a mutation no longer applies");
        assert!(check_default_features(&manifest).is_err());
    }
}

#[test]
fn command_line_targets_require_the_feature() {
    const SUITE: &str = include_str!("../Cargo.toml");
    for (manifest, kind, name) in [
        (MANIFEST, "bin", "tensor-similarity"),
        (SUITE, "bin", "tensor-similarity-repo"),
        (SUITE, "test", "cli"),
    ] {
        let tables = tables(manifest);
        let quoted = format!("\"{name}\"");
        let (_, target) = tables
            .iter()
            .find(|(h, t)| h == kind && t.get("name") == Some(&quoted))
            .unwrap_or_else(|| panic!("no [[{kind}]] named {name}"));
        let required = target.get("required-features").map(|v| strings(v));
        assert_eq!(
            required,
            Some(vec!["cli".to_string()]),
            "[[{kind}]] {name} must have required-features = [\"cli\"]"
        );
    }
}

#[test]
fn library_code_does_not_use_the_command_line_crates() {
    fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "bin") {
                    continue;
                }
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for name in CLI_DEPENDENCIES {
                    if text.contains(&format!("{name}::")) || text.contains(&format!("use {name}"))
                    {
                        found.push(format!("{} uses {name}", path.display()));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../src"),
        &mut found,
    );
    assert!(found.is_empty(), "library code outside src/bin/: {found:?}");
}

#[test]
fn library_works_without_features() -> Result<(), tensor_similarity::Error> {
    use tensor_similarity::io::{self, Layout};
    use tensor_similarity::matrix::similarity_matrix;
    // The re-export: no separate nalgebra dependency line needed.
    use tensor_similarity::nalgebra::DMatrix;
    use tensor_similarity::{Bilinear, Linear, Model, TensorSimilarity, similarity};

    let w = |seed: usize, r: usize, c: usize| {
        DMatrix::from_fn(r, c, |i, j| {
            (((i * 5 + j * 3 + seed) % 7) as f64 - 3.0) * 0.2
        })
    };
    let model = |seed| -> Result<Model<f64>, tensor_similarity::Error> {
        Model::builder()
            .block(Linear::new(w(seed, 4, 3), None)?)
            .block(Bilinear::new(w(seed + 1, 5, 4), w(seed + 2, 5, 4))?)
            .block(Linear::new(w(seed + 3, 2, 5), None)?)
            .build()
    };
    let (a, b) = (model(0)?, model(4)?);

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("a.safetensors");
    io::save(&a, &path, Layout::Described)?;
    let back = io::load(&path)?;
    assert!((similarity(&a, &back)? - 1.0).abs() < 1e-12);

    let m = similarity_matrix(&TensorSimilarity::new(), &[a, b.clone(), b], || {})?;
    assert_eq!(m.shape(), (3, 3));
    assert!((m[(1, 2)] - 1.0).abs() < 1e-12);
    Ok(())
}
