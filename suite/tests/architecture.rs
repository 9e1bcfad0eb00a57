//! The library's modules import in one direction: no module of `src/`
//! imports from a module that imports it back.
//!
//! A cycle means two modules are one idea split over two files (or one
//! idea leaking into another): neither can be read, tested or changed
//! without the other. This test reads the source as text, builds the import
//! graph and fails on every strongly connected component with more than one
//! module, printing each cycle as `a → b → a` with the lines responsible.
//!
//! What the graph is:
//!
//! * **A node is a file module**: `src/io/read.rs` is `io::read`,
//!   `src/io/mod.rs` is `io`, `src/lib.rs` is `crate`. The binary
//!   (`src/bin/`), the unit-test files `src/**/*_tests.rs` and items under
//!   `#[cfg(test)]` (the inline `mod tests` blocks) are left out: tests may
//!   reach anywhere.
//! * **An edge `a → b`** exists when `a`'s code names a path into `b`:
//!   `use crate::…`, `use super::…`, `use self::…`, a qualified path in code
//!   (`crate::x::f(…)`, `super::f`), or a path through one of `a`'s own
//!   child modules (`kernel::f(…)` in `block`). The path resolves to the
//!   longest prefix that is a file module, so `crate::block::Attention` is
//!   an edge to `block` and `crate::block::kernel::f` one to
//!   `block::kernel`. Comments, doc comments and string literals are not
//!   code and give no edges.
//! * **Not edges**: `mod child;` declarations, and a module's re-export of
//!   its own descendants (`pub use child::X;`, `pub(crate) use child::…`):
//!   that is how a parent publishes its files (STYLE.md, "small private
//!   files, flat public re-exports"), not a dependency of the parent's code
//!   on them.
//!
//! The checker is plain Rust on the token stream (a small lexer for
//! comments, strings, chars and lifetimes, then `use` trees and paths), so
//! its own tests below run it on synthetic trees: a cycle is found, the
//! re-export exemption holds, and comments, strings and test code give no
//! edges. On the real tree it must find a plausible graph (every module,
//! dozens of edges, edges known to exist), so the check cannot pass by
//! reading nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A module path: `[]` for the crate root, `["io", "read"]` for `io::read`.
type ModulePath = Vec<String>;

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// One token of Rust source: an identifier or keyword, `::`, or any other
/// single punctuation character (literals become `Literal`).
#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
    Literal,
}

/// The code tokens of `source` with their 1-based lines: comments (line,
/// block, nested, doc) dropped, string, byte-string, raw-string and char
/// literals reduced to [`Token::Literal`], lifetimes dropped.
fn tokens(source: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let ident_char = |ch: char| ch == '_' || ch.is_alphanumeric();
    // Skips a quoted literal starting at `c[i] == '"'`, escapes honoured.
    let skip_string = |i: &mut usize, line: &mut usize| {
        *i += 1;
        while *i < c.len() && c[*i] != '"' {
            if c[*i] == '\\' {
                *i += 1;
            }
            if *i < c.len() && c[*i] == '\n' {
                *line += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let at = line;
            skip_string(&mut i, &mut line);
            out.push((Token::Literal, at));
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push((Token::Literal, line));
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push((Token::Literal, line));
            } else {
                i += 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let prefix = matches!(word.as_str(), "r" | "br" | "cr" | "b" | "c");
            if prefix && c.get(i) == Some(&'"') && !word.ends_with('r') {
                // b"…", c"…"
                let at = line;
                skip_string(&mut i, &mut line);
                out.push((Token::Literal, at));
            } else if prefix && word.ends_with('r') && matches!(c.get(i), Some('"' | '#')) {
                let mut hashes = 0;
                while c.get(i + hashes) == Some(&'#') {
                    hashes += 1;
                }
                if c.get(i + hashes) == Some(&'"') {
                    // r"…", r#"…"#: ends at a quote followed by as many #.
                    let at = line;
                    i += hashes + 1;
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                            i += 1 + hashes;
                            break;
                        }
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    out.push((Token::Literal, at));
                } else if word == "r" && hashes == 1 {
                    // r#ident
                    let start = i + 1;
                    i = start;
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                    out.push((Token::Ident(c[start..i].iter().collect()), line));
                } else {
                    out.push((Token::Ident(word), line));
                }
            } else if word == "b" && c.get(i) == Some(&'\'') {
                // b'x', b'\n'
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    if c[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push((Token::Literal, line));
            } else {
                out.push((Token::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((Token::Literal, line));
        } else if ch == ':' && next == Some(':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// A path one module names, as written, with where it was written.
#[derive(Debug)]
struct Reference {
    /// The module whose code holds it (a file module, or an inline module
    /// inside one).
    scope: ModulePath,
    segments: Vec<String>,
    line: usize,
    /// From a `pub`/`pub(…)` `use`: a re-export.
    reexport: bool,
}

fn is_ident(t: Option<&(Token, usize)>) -> Option<&str> {
    match t {
        Some((Token::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// Index just past the item starting at `start` (after its attributes):
/// the first `;` outside brackets, or the `}` closing its first top-level
/// `{…}`.
fn item_end(t: &[(Token, usize)], start: usize) -> usize {
    let mut depth = 0i32;
    let mut i = start;
    while i < t.len() {
        match t[i].0 {
            Token::Punct('(' | '[') => depth += 1,
            Token::Punct(')' | ']') => depth -= 1,
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            Token::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index just past the attribute `#[…]` or `#![…]` starting at `start`.
fn attribute_end(t: &[(Token, usize)], start: usize) -> usize {
    let mut i = start + 1;
    if t.get(i).map(|x| &x.0) == Some(&Token::Punct('!')) {
        i += 1;
    }
    let mut depth = 0;
    while i < t.len() {
        match t[i].0 {
            Token::Punct('[') => depth += 1,
            Token::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Expands the use tree at `t[*i..]` (up to, not including, the `;`) into
/// full paths, each with the line of its last segment.
fn use_tree(
    t: &[(Token, usize)],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, usize)>,
) {
    let mut path = prefix.to_vec();
    let mut line = t.get(*i).map_or(0, |x| x.1);
    loop {
        match t.get(*i).map(|x| &x.0) {
            Some(Token::Punct('{')) => {
                *i += 1;
                loop {
                    match t.get(*i).map(|x| &x.0) {
                        Some(Token::Punct('}')) | None => {
                            *i += 1;
                            return;
                        }
                        Some(Token::Punct(',')) => *i += 1,
                        _ => use_tree(t, i, &path, out),
                    }
                }
            }
            Some(Token::PathSep) => *i += 1,
            Some(Token::Punct('*')) => {
                *i += 1;
                out.push((path, line));
                return;
            }
            Some(Token::Ident(s)) if s == "as" => {
                *i += 2;
            }
            Some(Token::Ident(s)) => {
                line = t[*i].1;
                // `self` inside a group names the group's prefix itself.
                if !(s == "self" && !path.is_empty() && path.len() == prefix.len()) {
                    path.push(s.clone());
                }
                *i += 1;
            }
            _ => {
                out.push((path, line));
                return;
            }
        }
    }
}

/// Every path `scope`'s code names that can lead into another module of
/// the crate: `use` trees, and expressions starting with `crate::`,
/// `super::`, `self::` or `child::` for a child module in `children`.
fn references(file: &ModulePath, source: &str, modules: &BTreeSet<ModulePath>) -> Vec<Reference> {
    let t = tokens(source);
    let mut out = Vec::new();
    // Inline modules (`mod name { … }`) open here: (name, brace depth).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let scope_of = |inline: &[(String, i32)]| -> ModulePath {
        let mut s = file.clone();
        s.extend(inline.iter().map(|(n, _)| n.clone()));
        s
    };
    let is_child = |scope: &ModulePath, name: &str| {
        let mut p = scope.clone();
        p.push(name.into());
        modules.contains(&p)
    };
    let mut i = 0;
    while i < t.len() {
        match &t[i].0 {
            Token::Punct('#') => {
                let end = attribute_end(&t, i);
                let words: Vec<&Token> = t[i..end].iter().map(|x| &x.0).collect();
                let cfg_test = words
                    == [
                        &Token::Punct('#'),
                        &Token::Punct('['),
                        &Token::Ident("cfg".into()),
                        &Token::Punct('('),
                        &Token::Ident("test".into()),
                        &Token::Punct(')'),
                        &Token::Punct(']'),
                    ];
                i = end;
                if cfg_test {
                    // Test-only: skip the item, with its other attributes.
                    while t.get(i).map(|x| &x.0) == Some(&Token::Punct('#')) {
                        i = attribute_end(&t, i);
                    }
                    i = item_end(&t, i);
                }
            }
            Token::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Token::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
                i += 1;
            }
            Token::Ident(w) if w == "mod" => {
                match (is_ident(t.get(i + 1)), t.get(i + 2).map(|x| &x.0)) {
                    (Some(name), Some(Token::Punct('{'))) => {
                        depth += 1;
                        inline.push((name.to_owned(), depth));
                        i += 3;
                    }
                    _ => i += 2,
                }
            }
            Token::Ident(w) if w == "use" => {
                // `pub use`, `pub(crate) use`, `pub(in …) use`: a re-export.
                let mut b = i;
                if b > 0 && t[b - 1].0 == Token::Punct(')') {
                    while b > 0 && t[b - 1].0 != Token::Punct('(') {
                        b -= 1;
                    }
                    b = b.saturating_sub(1);
                }
                let reexport = is_ident(t.get(b.wrapping_sub(1))) == Some("pub");
                i += 1;
                let mut paths = Vec::new();
                use_tree(&t, &mut i, &[], &mut paths);
                while i < t.len() && t[i].0 != Token::Punct(';') {
                    i += 1;
                }
                let scope = scope_of(&inline);
                for (segments, line) in paths {
                    out.push(Reference {
                        scope: scope.clone(),
                        segments,
                        line,
                        reexport,
                    });
                }
            }
            Token::Ident(w) => {
                let scope = scope_of(&inline);
                let starts_path = t.get(i + 1).map(|x| &x.0) == Some(&Token::PathSep)
                    && !(i > 0 && matches!(t[i - 1].0, Token::PathSep | Token::Punct('.')))
                    && (matches!(w.as_str(), "crate" | "super" | "self") || is_child(&scope, w));
                if starts_path {
                    let line = t[i].1;
                    let mut segments = vec![w.clone()];
                    let mut j = i + 1;
                    while t.get(j).map(|x| &x.0) == Some(&Token::PathSep) {
                        match is_ident(t.get(j + 1)) {
                            Some(s) => segments.push(s.to_owned()),
                            None => break,
                        }
                        j += 2;
                    }
                    out.push(Reference {
                        scope,
                        segments,
                        line,
                        reexport: false,
                    });
                    i = j;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The file module `segments` lead into, read from `scope`: `crate`,
/// `super` and `self` resolved, a leading child module name taken as
/// relative, then the longest prefix that is a file module. `None` for
/// paths outside the crate (`std::…`, `nalgebra::…`).
fn resolve(
    scope: &[String],
    segments: &[String],
    modules: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let mut path: ModulePath;
    let mut rest = segments;
    match segments.first().map(String::as_str) {
        Some("crate") => {
            path = Vec::new();
            rest = &segments[1..];
        }
        Some("super" | "self") => {
            path = scope.to_vec();
            while let Some(s) = rest.first().map(String::as_str) {
                match s {
                    "super" => {
                        path.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = scope.to_vec();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None;
            }
            path = scope.to_vec();
        }
        None => return None,
    }
    path.extend(rest.iter().cloned());
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

/// The import graph: each edge with the lines (`file:line: code`) that make it.
#[derive(Debug, Default)]
struct Graph {
    modules: BTreeSet<ModulePath>,
    edges: BTreeMap<(ModulePath, ModulePath), Vec<String>>,
}

/// The module a source file is, by its path relative to `src/`; `None` for
/// what the graph leaves out (the binary, unit-test files, non-Rust files).
fn module_of(relative: &Path) -> Option<ModulePath> {
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let (file, dirs) = parts.split_last()?;
    let stem = file.strip_suffix(".rs")?;
    if dirs.first().map(String::as_str) == Some("bin") || stem.ends_with("_tests") {
        return None;
    }
    let mut module = dirs.to_vec();
    if !(dirs.is_empty() && stem == "lib" || stem == "mod") {
        module.push(stem.to_owned());
    }
    Some(module)
}

/// The graph of `files`: (path relative to `src/`, source text).
fn graph(files: &[(PathBuf, String)]) -> Graph {
    let sources: Vec<(ModulePath, &Path, &str)> = files
        .iter()
        .filter_map(|(p, s)| Some((module_of(p)?, p.as_path(), s.as_str())))
        .collect();
    let modules: BTreeSet<ModulePath> = sources.iter().map(|(m, _, _)| m.clone()).collect();
    let mut g = Graph {
        modules: modules.clone(),
        ..Graph::default()
    };
    for (module, path, source) in &sources {
        let lines: Vec<&str> = source.lines().collect();
        for r in references(module, source, &modules) {
            let Some(target) = resolve(&r.scope, &r.segments, &modules) else {
                continue;
            };
            let descendant = target.len() > module.len() && target.starts_with(module);
            if target == *module || (r.reexport && descendant) {
                continue;
            }
            let code = lines.get(r.line - 1).map_or("", |l| l.trim());
            let at = format!("src/{}:{}: {code}", path.display(), r.line);
            let lines_of_edge = g.edges.entry((module.clone(), target)).or_default();
            // A `use` group naming several items of one module: one line.
            if lines_of_edge.last() != Some(&at) {
                lines_of_edge.push(at);
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles_components(g: &Graph) -> Vec<Vec<ModulePath>> {
    let nodes: Vec<&ModulePath> = g.modules.iter().collect();
    let index_of: BTreeMap<&ModulePath, usize> =
        nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b) in g.edges.keys() {
        next[index_of[a]].push(index_of[b]);
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, next: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &next[v] {
            match s.index[w] {
                None => {
                    visit(w, next, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let n = nodes.len();
    let mut s = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &next, &mut s);
        }
    }
    let mut components: Vec<Vec<ModulePath>> = s
        .out
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut c: Vec<ModulePath> = c.into_iter().map(|i| nodes[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    components.sort();
    components
}

/// One shortest cycle through each module of each component (deduplicated),
/// as `[a, b, …, a]`.
fn cycles(g: &Graph) -> Vec<Vec<ModulePath>> {
    let mut found: BTreeSet<Vec<ModulePath>> = BTreeSet::new();
    for component in cycles_components(g) {
        let inside: BTreeSet<&ModulePath> = component.iter().collect();
        for start in &component {
            // Breadth-first from `start` back to `start`, inside the component.
            let mut parent: BTreeMap<&ModulePath, &ModulePath> = BTreeMap::new();
            let mut queue = VecDeque::from([start]);
            let mut closing = None;
            'search: while let Some(a) = queue.pop_front() {
                for (a2, b) in g.edges.keys() {
                    if a2 != a || !inside.contains(b) {
                        continue;
                    }
                    if b == start {
                        closing = Some(a);
                        break 'search;
                    }
                    if !parent.contains_key(b) {
                        parent.insert(b, a);
                        queue.push_back(b);
                    }
                }
            }
            let Some(mut at) = closing else { continue };
            let mut cycle = vec![start.clone()];
            while at != start {
                cycle.push(at.clone());
                at = parent[at];
            }
            cycle.push(start.clone());
            cycle.reverse();
            // The same cycle from its smallest module, so rotations dedupe.
            cycle.pop();
            let smallest = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap();
            cycle.rotate_left(smallest);
            cycle.push(cycle[0].clone());
            found.insert(cycle);
        }
    }
    found.into_iter().collect()
}

/// The report of every cycle: `a → b → a`, then the lines of each edge.
fn report(g: &Graph) -> String {
    let mut out = String::new();
    for component in cycles_components(g) {
        let names: Vec<String> = component.iter().map(|m| display(m)).collect();
        writeln!(out, "modules importing each other: {}", names.join(", ")).unwrap();
    }
    for cycle in cycles(g) {
        let names: Vec<String> = cycle.iter().map(|m| display(m)).collect();
        writeln!(out, "{}", names.join(" → ")).unwrap();
        for pair in cycle.windows(2) {
            writeln!(out, "  {} → {}:", display(&pair[0]), display(&pair[1])).unwrap();
            for line in &g.edges[&(pair[0].clone(), pair[1].clone())] {
                writeln!(out, "    {line}").unwrap();
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`, with its path relative to `root`.
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), text));
        }
    }
}

fn real_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    graph(&files)
}

fn m(path: &str) -> ModulePath {
    if path == "crate" {
        Vec::new()
    } else {
        path.split("::").map(str::to_owned).collect()
    }
}

fn synthetic(files: &[(&str, &str)]) -> Graph {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect();
    graph(&files)
}

fn has_edge(g: &Graph, a: &str, b: &str) -> bool {
    g.edges.contains_key(&(m(a), m(b)))
}

#[test]
fn no_module_imports_from_a_module_that_imports_it_back() {
    let g = real_graph();
    let report = report(&g);
    assert!(
        report.is_empty(),
        "import cycles between the modules of src/:\n{report}"
    );
}

/// Prints the cycles of today's tree (run with `--nocapture`) without
/// failing; the check above fails on them.
#[test]
fn the_real_tree_is_read_whole() {
    let g = real_graph();
    let report = report(&g);
    if !report.is_empty() {
        println!("import cycles between the modules of src/:\n{report}");
    }
    // Every file module, the binary and the unit-test files left out.
    for module in [
        "crate",
        "io",
        "io::read",
        "io::torch",
        "block",
        "block::kernel",
        "block::attention::step",
        "gaussian::wick",
        "recursion",
    ] {
        assert!(g.modules.contains(&m(module)), "{module} not read");
    }
    assert!(
        !g.modules
            .iter()
            .any(|p| p.first().map(String::as_str) == Some("bin"))
    );
    assert!(
        !g.modules
            .iter()
            .any(|p| p.last().is_some_and(|s| s.ends_with("_tests")))
    );
    assert!(g.modules.len() >= 30, "{} modules", g.modules.len());
    assert!(g.edges.len() >= 80, "{} edges", g.edges.len());
    // Edges known to exist, one of each kind of path.
    assert!(
        has_edge(&g, "recursion", "model"),
        "use crate::model::Model"
    );
    assert!(
        has_edge(&g, "io::torch", "io::pickle"),
        "use super::pickle::…"
    );
    assert!(
        has_edge(&g, "io::read", "io::open"),
        "super::open::open_regular(…) in code"
    );
    assert!(
        has_edge(&g, "gaussian::cp", "block::factors"),
        "longest prefix"
    );
    assert!(has_edge(&g, "gaussian", "model"), "crate::model::Model");
    // The crate root only declares and re-exports its modules.
    assert!(
        !g.edges.keys().any(|(a, _)| a.is_empty()),
        "{:?}",
        g.edges
            .keys()
            .filter(|(a, _)| a.is_empty())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_cycle_is_found_and_printed_with_its_lines() {
    let g = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        (
            "b.rs",
            "pub struct Thing;\nfn f() {\n    crate::a::g();\n}\n",
        ),
        ("c.rs", "use crate::a;\n"),
    ]);
    assert_eq!(cycles_components(&g), vec![vec![m("a"), m("b")]]);
    assert_eq!(cycles(&g), vec![vec![m("a"), m("b"), m("a")]]);
    let report = report(&g);
    assert!(
        report.starts_with("modules importing each other: a, b\na → b → a\n"),
        "{report}"
    );
    assert!(
        report.contains("src/a.rs:1: use crate::b::Thing;"),
        "{report}"
    );
    assert!(report.contains("src/b.rs:3: crate::a::g();"), "{report}");
    assert!(!report.contains("c.rs"), "{report}");
}

#[test]
fn a_longer_cycle_is_found() {
    let g = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use super::b::X;\n"),
        ("b.rs", "fn f() { let x = crate::c::y; }\n"),
        ("c.rs", "use crate::{a::Z, b};\n"),
    ]);
    let cycles = cycles(&g);
    assert!(
        cycles.contains(&vec![m("a"), m("b"), m("c"), m("a")]),
        "{cycles:?}"
    );
    assert!(cycles.contains(&vec![m("b"), m("c"), m("b")]), "{cycles:?}");
}

#[test]
fn a_parent_reexporting_its_children_is_no_edge() {
    let files = |parent: &str| {
        synthetic(&[
            ("lib.rs", "mod x;\npub use x::Y;\n"),
            (
                "x/mod.rs",
                &format!("mod y;\nmod z;\n{parent}\npub struct Shared;\n"),
            ),
            ("x/y.rs", "use super::Shared;\npub struct Y;\n"),
            ("x/z.rs", "use crate::x::Shared;\npub fn f() {}\n"),
        ])
    };
    for reexport in [
        "pub use y::Y;",
        "pub(crate) use self::y::Y;",
        "pub(super) use {y::Y, z::f};",
        "pub use crate::x::y::*;",
    ] {
        let g = files(reexport);
        assert!(cycles(&g).is_empty(), "{reexport}: {}", report(&g));
        assert!(
            has_edge(&g, "x::y", "x") && has_edge(&g, "x::z", "x"),
            "{reexport}"
        );
    }
    // Using a child is an edge, through `use` or a path in code.
    for uses in [
        "use y::Y;",
        "use self::y::Y;",
        "fn g() { z::f(); }",
        "fn g() { self::z::f() }",
    ] {
        let g = files(uses);
        assert_eq!(cycles_components(&g).len(), 1, "{uses}: no cycle found");
    }
    // Re-exporting what is not a descendant is an edge.
    let g = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "pub use crate::b::B;\npub struct A;\n"),
        ("b.rs", "use crate::a::A;\npub struct B;\n"),
    ]);
    assert_eq!(cycles(&g), vec![vec![m("a"), m("b"), m("a")]]);
}

#[test]
fn comments_strings_and_test_code_are_no_edges() {
    let g = synthetic(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            r####"//! See [`crate::b::B`].
/// Calls `crate::b::f()`.
// use crate::b::B;
/* use crate::b::B; /* nested */ crate::b::f() */
fn f<'a>(x: &'a str) -> char {
    let _ = "crate::b::f()";
    let _ = r##"use crate::b::B; "# crate::b::f()"##;
    let _ = b"super::b";
    let _ = '"';
    let _ = self.crate_thing;
    'x'
}
#[cfg(test)]
mod tests {
    use crate::b::B;
    fn g() { super::super::b::f(); }
}
#[cfg(test)]
use crate::b::C;
"####,
        ),
        ("b.rs", "use crate::a::f;\n"),
        ("a_tests.rs", "use crate::b::B;\n"),
        ("bin/tool/main.rs", "use crate::b::B;\n"),
    ]);
    assert_eq!(g.modules, BTreeSet::from([m("crate"), m("a"), m("b")]));
    assert!(!has_edge(&g, "a", "b"), "{:?}", g.edges);
    assert!(has_edge(&g, "b", "a"));
}

#[test]
fn paths_resolve_to_the_longest_module_prefix() {
    let g = synthetic(&[
        ("lib.rs", "mod block;\nmod other;\n"),
        ("block/mod.rs", "mod kernel;\npub struct Attention;\n"),
        ("block/kernel.rs", "pub fn f() {}\n"),
        (
            "other.rs",
            "use crate::block::Attention;\nfn g() { crate::block::kernel::f(); }\nmod inner {\n    use super::super::block::Attention;\n}\n",
        ),
    ]);
    assert_eq!(g.edges[&(m("other"), m("block"))].len(), 2, "{:?}", g.edges);
    assert!(has_edge(&g, "other", "block::kernel"));
    assert!(!has_edge(&g, "other", "crate"));
    assert_eq!(g.edges.len(), 2, "{:?}", g.edges);
}
