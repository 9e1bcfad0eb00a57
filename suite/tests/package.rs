//! The published `.crate` ships every page docs.rs renders: docs.rs builds
//! the documentation from the `.crate`, so a file the source includes
//! (`include_str!`, `include_bytes!`: the README, SPEC and the guide's
//! pages) must not match the manifest's `exclude` list, or the build there
//! fails.
//!
//! The manifest is read as a file (as in `features.rs`: a cargo started
//! inside `cargo test` can wait on the outer cargo's locks), and `exclude`
//! is matched with gitignore's rules as far as the list uses them: a
//! pattern with no inner `/` matches a name at any depth, one with an
//! inner `/` is anchored at the root, a trailing `/` matches a directory
//! and everything below it, `*` matches within a name and `**` any number
//! of directories. `cargo package -p tensor-similarity --list` shows the
//! real list (`.ci/run` packages it and bounds its size at 1 MB).

use std::path::{Component, Path, PathBuf};

const MANIFEST: &str = include_str!("../../Cargo.toml");

/// The root manifest's `exclude = [...]` entries.
fn excludes(manifest: &str) -> Vec<String> {
    let start = manifest
        .find("\nexclude = [")
        .expect("the manifest has an exclude list");
    let list = &manifest[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.lines()
        .map(|l| l.split('#').next().unwrap())
        .flat_map(|l| l.split(','))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `name` matches the one-component glob `pattern` (`*` for any run of
/// characters).
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len())
                    .filter(|&i| name.is_char_boundary(head.len() + i))
                    .any(|i| name_matches(tail, &name[head.len() + i..]))
        }
    }
}

/// The path components `path` match the pattern components `pattern`
/// (`**` for any number of components).
fn components_match(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| components_match(rest, &path[i..])),
        Some((first, rest)) => {
            path.first().is_some_and(|p| name_matches(first, p))
                && components_match(rest, &path[1..])
        }
    }
}

/// Whether the file at `path` (relative to the package root) is excluded
/// by `pattern`.
fn excluded_by(pattern: &str, path: &str) -> bool {
    let directory = pattern.ends_with('/');
    let pattern = pattern.trim_end_matches('/');
    let anchored = pattern.contains('/');
    let parts: Vec<&str> = path.split('/').collect();
    let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    // The file itself (unless the pattern names directories only) or any of
    // its directories.
    let candidates = (1..=parts.len()).filter(|&n| n < parts.len() || !directory);
    candidates.into_iter().any(|n| {
        if anchored {
            components_match(&pattern, &parts[..n])
        } else {
            components_match(&pattern, &parts[n - 1..n])
        }
    })
}

fn excluded(excludes: &[String], path: &str) -> bool {
    excludes.iter().any(|p| excluded_by(p, path))
}

/// `a/b/../c` → `a/c`.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every file `src/**/*.rs` includes with `include_str!`/`include_bytes!`,
/// relative to the package root, with the file that includes it.
fn included_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let from = normalise(path.strip_prefix(&root).unwrap());
            for part in text.split("include_").skip(1) {
                let Some(rest) = part
                    .strip_prefix("str!(\"")
                    .or_else(|| part.strip_prefix("bytes!(\""))
                else {
                    continue;
                };
                let target = &rest[..rest.find('"').unwrap()];
                let file = normalise(&from.parent().unwrap().join(target));
                out.push((
                    file.to_string_lossy().replace('\\', "/"),
                    from.display().to_string(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_file_the_source_includes_is_published() {
    let excludes = excludes(MANIFEST);
    let included = included_files();
    // The README, SPEC and the guide's nine pages at least.
    for page in [
        "README.md",
        "docs/SPEC.md",
        "docs/recursion.md",
        "docs/security.md",
    ] {
        assert!(
            included.iter().any(|(f, _)| f == page),
            "{page} not found among {included:?}"
        );
    }
    assert!(included.len() >= 11, "{included:?}");
    let missing: Vec<String> = included
        .iter()
        .filter(|(f, _)| excluded(&excludes, f))
        .map(|(f, by)| format!("{f} (included by {by})"))
        .collect();
    assert!(
        missing.is_empty(),
        "Cargo.toml's exclude leaves out files the source includes; docs.rs \
         builds from the .crate and would fail: {missing:?}"
    );
}

#[test]
fn the_exclude_list_leaves_out_what_a_user_never_needs() {
    let excludes = excludes(MANIFEST);
    for path in [
        "tests/files/torch/legacy.pt",
        "tests/files/snippet/transformer.safetensors",
        "docs/grokking.png",
        "docs/studies.md",
        "docs/studies-backdoor.png",
        "docs/python.md",
        "python/Cargo.toml",
        ".ci/run",
        "benches/recursion.rs",
        "CHANGELOG.md",
        "CONTRIBUTING.md",
    ] {
        assert!(excluded(&excludes, path), "{path} is published");
    }
    for path in [
        "src/io/read.rs",
        "docs/recursion.md",
        "README.md",
        "src/lib.rs",
    ] {
        assert!(!excluded(&excludes, path), "{path} is left out");
    }
}

#[test]
fn exclude_patterns_match_as_gitignore_does() {
    assert!(excluded_by("tests/", "tests/a/b.rs"));
    assert!(
        excluded_by("tests/", "src/tests/b.rs"),
        "unanchored: at any depth"
    );
    assert!(
        !excluded_by("tests/", "tests"),
        "a directory pattern, not a file"
    );
    assert!(excluded_by("docs/*.png", "docs/a.png"));
    assert!(!excluded_by("docs/*.png", "docs/sub/a.png"));
    assert!(!excluded_by("docs/*.png", "other/docs/a.png"), "anchored");
    assert!(excluded_by("src/**/*_tests.rs", "src/a_tests.rs"));
    assert!(excluded_by("src/**/*_tests.rs", "src/io/a/b_tests.rs"));
    assert!(!excluded_by("src/**/*_tests.rs", "src/io/tests.rs"));
    assert!(excluded_by("CHANGELOG.md", "CHANGELOG.md"));
    assert!(excluded_by(".gitignore", "sub/.gitignore"));
    assert!(!excluded_by("docs/python.md", "docs/python.mdx"));
}
