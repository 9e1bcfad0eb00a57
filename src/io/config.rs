//! A training run's architecture config, `config.json` or `config.yaml`
//! ([SPEC §8](crate::spec#8-sequence-model-files)): where it is found, and its `"model"` keys read strictly.
//!
//! Runs keep their config beside the checkpoints' folder
//! (`runs/NAME/config.yaml`, `runs/NAME/checkpoints/step_N.pt`), so it is
//! looked for beside the checkpoint, then one and two folders up; or it is
//! given, as a file or as its content ([`ConfigSource`]). Only the
//! `"model"` section is read; every key in it must be one the layout
//! knows, or one that cannot change the function at eval
//! ([`ignored`](super::ignored): read, listed, not used), since an unknown
//! key may change the function. YAML is read as the runs' own PyYAML reads
//! it (YAML 1.1, [`yaml11`](super::yaml11)), and only a regular file is
//! read as a config.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{CLIPPED, ConfigHint, FileError, LISTED, LoadOption, clipped, listed};
use crate::io::{ConfigSource, IgnoredConfigKey};

/// The file names a config may have, in the order they are looked for.
const NAMES: [&str; 3] = ["config.json", "config.yaml", "config.yml"];

/// A config larger than this is not a config (and is not read whole).
const MAX_BYTES: u64 = 1 << 20;

/// Where a config came from: a file, or content given in memory.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Origin {
    /// A file read.
    File(PathBuf),
    /// Content given ([`ConfigSource::Content`]).
    Content,
}

impl Origin {
    /// The file, for a config read from one.
    pub(crate) fn into_path(self) -> Option<PathBuf> {
        match self {
            Origin::File(path) => Some(path),
            Origin::Content => None,
        }
    }

    /// The path a [`FileError::Config`] names: empty for content.
    pub(crate) fn error_path(&self) -> PathBuf {
        match self {
            Origin::File(path) => path.clone(),
            Origin::Content => PathBuf::new(),
        }
    }

    /// Whether it is a YAML file (by its extension).
    fn is_yaml(&self) -> bool {
        match self {
            Origin::File(path) => matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ),
            Origin::Content => false,
        }
    }
}

/// The `"model"` section of a run's config, and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    pub(crate) origin: Origin,
    model: Map<String, Value>,
}

/// The config for the checkpoint at `checkpoint`: `explicit` if given,
/// else the first folder of the checkpoint's own, its parent and its
/// grandparent that holds one. Two configs in one folder are an error (which
/// one the run used cannot be told), and so is a `config.yaml` (or `.json`,
/// `.yml`) that exists but is not a regular file (a directory, FIFO or
/// broken symbolic link): passing over it would read the model without
/// the config its run meant, or fail later for want of a key.
pub(crate) fn find(
    checkpoint: &Path,
    explicit: Option<&ConfigSource>,
) -> Result<Option<RunConfig>, FileError> {
    match explicit {
        Some(ConfigSource::File(path)) => return read(path).map(Some),
        Some(ConfigSource::Content(content)) => return from_content(content).map(Some),
        None => {}
    }
    let mut dir = checkpoint.parent();
    for _ in 0..3 {
        let Some(d) = dir else { break };
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        let mut found: Vec<PathBuf> = Vec::new();
        for name in NAMES {
            let path = d.join(name);
            // The link itself, not its target: a broken link exists.
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(FileError::Config {
                        config: path,
                        reason: format!("cannot be looked at ({e})"),
                        hint: None,
                    });
                }
                Ok(_) => {}
            }
            if let Some(reason) = super::open::not_regular_reason(&path) {
                return Err(FileError::Config {
                    config: path,
                    reason: format!(
                        "{reason}; a config beside a checkpoint is read as its run's architecture, \
                         so remove it"
                    ),
                    hint: Some(ConfigHint::Choose),
                });
            }
            found.push(path);
        }
        match &found[..] {
            [] => {}
            [one] => return read(one).map(Some),
            [first, second, ..] => {
                return Err(FileError::Config {
                    config: first.clone(),
                    reason: format!("{} is in the same folder", second.display()),
                    hint: Some(ConfigHint::Choose),
                });
            }
        }
        dir = d.parent();
    }
    Ok(None)
}

/// The config at `path`: a regular file (opened without blocking) of at
/// most [`MAX_BYTES`], UTF-8, JSON or (by its extension) YAML, with a
/// `"model"` mapping.
fn read(path: &Path) -> Result<RunConfig, FileError> {
    use std::io::Read;
    let origin = Origin::File(path.to_owned());
    let err = |reason: String| FileError::Config {
        config: path.to_owned(),
        reason,
        hint: None,
    };
    let (file, meta) = super::open::open_regular(path).map_err(|e| err(e.to_string()))?;
    let too_large = || err(format!("larger than {MAX_BYTES} bytes: not a config"));
    if meta.len() > MAX_BYTES {
        return Err(too_large());
    }
    // Through the opened handle, and never more than the bound (the file
    // may grow after the look at its length).
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        err(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let root = if origin.is_yaml() {
        parse_yaml(&text).map_err(err)?
    } else {
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?
    };
    model_section(root, origin)
}

/// A config given as content: read as the same file's JSON would be, its
/// nesting bounded as a file's is.
fn from_content(content: &Value) -> Result<RunConfig, FileError> {
    // Without recursion: the value may have been built by any code.
    let mut stack = vec![(content, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(entries) => Box::new(entries.values()),
            _ => continue,
        };
        if depth >= MAX_DEPTH {
            return Err(FileError::Config {
                config: Origin::Content.error_path(),
                reason: format!("nested more than {MAX_DEPTH} levels deep"),
                hint: None,
            });
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    model_section(content.clone(), Origin::Content)
}

/// The `"model"` mapping of a config's top level `root`.
fn model_section(root: Value, origin: Origin) -> Result<RunConfig, FileError> {
    let err = |reason: &str| FileError::Config {
        config: origin.error_path(),
        reason: reason.into(),
        hint: None,
    };
    let Value::Object(mut root) = root else {
        return Err(err("the top level must be a mapping"));
    };
    match root.remove("model") {
        Some(Value::Object(model)) => Ok(RunConfig { origin, model }),
        Some(_) => Err(err("\"model\" must be a mapping of keys")),
        None => Err(err(
            "no \"model\" section: the architecture keys (d_model, n_head, …) are read from under \"model\"",
        )),
    }
}

/// Mappings and sequences nested deeper than this are refused.
const MAX_DEPTH: usize = 64;

/// A YAML config as JSON values, read as PyYAML's `yaml.safe_load` reads
/// it (YAML 1.1, [`yaml11`](super::yaml11)): the research code writes and reads its
/// configs with PyYAML, and YAML 1.2 reads some values otherwise
/// (`rope_base: 01750` is 1000 to PyYAML and 1750 to a YAML 1.2 reader).
///
/// Built from the parser's events, without recursion (so that a line of
/// `- - - …` cannot exhaust the stack) and refusing, before anything large
/// is built: aliases (`*name`; expanded by copying, a few lines of nested
/// aliases make gigabytes, the "billion laughs"), nesting deeper than
/// [`MAX_DEPTH`], more than one document, duplicate keys (PyYAML keeps the
/// last; which one the writer meant cannot be told), merge keys (`<<`),
/// and tags other than the standard scalar ones (`!!str`, `!!int`,
/// `!!float`, `!!bool`, `!!null`: honoured when the value is of that type
/// as YAML 1.1 reads it, `!!str` always) and `!!map`/`!!seq`.
///
/// Mapping keys are resolved as values are; integer and boolean keys are
/// kept as their text (`1`, `true`), other non-string keys are refused.
/// Non-finite floats (`.inf`, `.nan`) have no JSON value and are kept as
/// their text: no model key takes one, and the typed accessors refuse it.
fn parse_yaml(text: &str) -> Result<Value, String> {
    use super::yaml11::{self, Node};
    use yaml_rust2::parser::{Event, Parser};
    use yaml_rust2::scanner::TScalarStyle;

    /// A collection being built; a mapping holds the key awaiting its value.
    enum Open {
        Seq(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root = None;
    let mut documents = 0usize;
    loop {
        let (event, _) = parser
            .next_token()
            .map_err(|e| format!("not valid YAML: {e}"))?;
        let is_key = matches!(stack.last(), Some(Open::Map(_, None)));
        let node = match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err("the file holds several YAML documents".into());
                }
                continue;
            }
            Event::Alias(_) => return Err("YAML aliases (*name) are not read in a config".into()),
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(format!("nested more than {MAX_DEPTH} levels deep"));
            }
            Event::SequenceStart(_, tag) => {
                yaml11::collection_tag(tag.as_ref(), "seq")?;
                stack.push(Open::Seq(Vec::new()));
                continue;
            }
            Event::MappingStart(_, tag) => {
                yaml11::collection_tag(tag.as_ref(), "map")?;
                stack.push(Open::Map(Map::new(), None));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items)) => Node::Tree(Value::Array(items)),
                _ => return Err("not valid YAML: an unbalanced sequence".into()),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(entries, None)) => Node::Tree(Value::Object(entries)),
                _ => return Err("not valid YAML: an unbalanced mapping".into()),
            },
            Event::Scalar(value, style, _, tag) => {
                yaml11::scalar(&value, style == TScalarStyle::Plain, tag.as_ref(), is_key)?
            }
        };
        match stack.last_mut() {
            None => root = Some(node.into_value()),
            Some(Open::Seq(items)) => items.push(node.into_value()),
            Some(Open::Map(entries, key)) => match key.take() {
                None => *key = Some(node.into_key()?),
                Some(k) => {
                    if entries.contains_key(&k) {
                        return Err(format!(
                            "the key {:?} appears twice in one mapping",
                            crate::error::clipped(&k, crate::error::CLIPPED)
                        ));
                    }
                    entries.insert(k, node.into_value());
                }
            },
        }
    }
    root.ok_or_else(|| "the file is empty".into())
}

impl RunConfig {
    fn err(&self, reason: String) -> FileError {
        FileError::Config {
            config: self.origin.error_path(),
            reason,
            hint: None,
        }
    }

    /// The keys of `"model"` outside `known` that cannot change the
    /// function at eval, sorted, each with why; any other key outside
    /// `known` is refused, naming the first few and counting the rest (a
    /// config may hold thousands), with what to do about it.
    pub(crate) fn check_keys(
        &self,
        known: &[&'static str],
    ) -> Result<Vec<IgnoredConfigKey>, FileError> {
        let mut ignored = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        for (key, value) in &self.model {
            if known.contains(&key.as_str()) {
                continue;
            }
            match super::ignored::why(key) {
                Some(why) => ignored.push(IgnoredConfigKey {
                    key: key.clone(),
                    value: value.clone(),
                    why,
                }),
                None => unknown.push(key),
            }
        }
        unknown.sort_unstable();
        ignored.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        match unknown.len() {
            0 => Ok(ignored),
            n => Err(FileError::Config {
                config: self.origin.error_path(),
                reason: format!(
                    "unknown model key{} {}: it may change the function",
                    if n > 1 { "s" } else { "" },
                    listed(unknown.iter().map(|k| format!("{k:?}")), LISTED),
                ),
                hint: Some(ConfigHint::EditOrDescribe {
                    known: known.to_vec(),
                }),
            }),
        }
    }

    /// An option that disagrees with this config's `key`, whose value is
    /// `found`: the error names both.
    pub(crate) fn disagrees(
        &self,
        key: &str,
        found: impl std::fmt::Display,
        option: LoadOption,
        given: impl std::fmt::Display,
    ) -> FileError {
        FileError::Config {
            config: self.origin.error_path(),
            reason: format!("model.{key} is {found}"),
            hint: Some(ConfigHint::Disagrees {
                option,
                given: given.to_string(),
            }),
        }
    }

    /// `v` for an error message about this config.
    fn shown(&self, v: &Value) -> String {
        shown(v, self.origin.is_yaml())
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.model.get(key).filter(|v| !v.is_null())
    }

    /// `key` read by `read`; absent or null is `None`, a value `read`
    /// refuses an error saying it must be `what`, and what it is.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        what: &str,
        read: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, FileError> {
        self.get(key)
            .map(|v| {
                read(v).ok_or_else(|| {
                    self.err(format!(
                        "model.{key} must be {what}, found {}",
                        self.shown(v)
                    ))
                })
            })
            .transpose()
    }

    /// A non-negative integer key.
    pub(crate) fn usize(&self, key: &str) -> Result<Option<usize>, FileError> {
        self.typed(key, "a non-negative integer", |v| {
            usize::try_from(v.as_u64()?).ok()
        })
    }

    /// A positive integer key (a length: `n_ctx`).
    pub(crate) fn positive(&self, key: &str) -> Result<Option<usize>, FileError> {
        self.typed(key, "a positive integer", |v| {
            usize::try_from(v.as_u64()?).ok().filter(|&x| x > 0)
        })
    }

    /// A finite number key.
    pub(crate) fn f64(&self, key: &str) -> Result<Option<f64>, FileError> {
        self.typed(key, "a finite number", |v| {
            v.as_f64().filter(|x| x.is_finite())
        })
    }

    /// A positive finite number key (a rotary base).
    pub(crate) fn positive_f64(&self, key: &str) -> Result<Option<f64>, FileError> {
        self.typed(key, "a positive finite number", |v| {
            v.as_f64().filter(|x| x.is_finite() && *x > 0.0)
        })
    }

    /// A boolean key.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, FileError> {
        self.typed(key, "true or false", Value::as_bool)
    }

    /// Whether `key` is present (null included).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.model.contains_key(key)
    }

    /// A string key.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>, FileError> {
        self.typed(key, "a string", Value::as_str)
    }

    /// A key that must be a list of strings.
    pub(crate) fn strings(&self, key: &str) -> Result<Option<Vec<&str>>, FileError> {
        self.typed(key, "a list of strings", |v| {
            v.as_array()?.iter().map(Value::as_str).collect()
        })
    }

    /// A key that must be a mapping (a section such as `norm_kwargs`).
    pub(crate) fn mapping(&self, key: &str) -> Result<Option<&Map<String, Value>>, FileError> {
        self.typed(key, "a mapping", Value::as_object)
    }

    /// `value` for an error message about this config.
    pub(crate) fn show(&self, value: &Value) -> String {
        self.shown(value)
    }

    /// An error about this config's `key`.
    pub(crate) fn refuse(&self, key: &str, reason: impl Into<String>) -> FileError {
        self.err(format!("model.{key}: {}", reason.into()))
    }
}

/// A config value for an error message: its JSON text (a string quoted),
/// cut to a line. In a YAML config, a string that YAML 1.2 would have read
/// as a number (`1e3`, `0o17`) says why it is a string here.
fn shown(v: &Value, yaml: bool) -> String {
    let text = clipped(&v.to_string(), CLIPPED);
    match v {
        Value::String(s)
            if yaml
                && s.bytes().any(|b| b.is_ascii_digit())
                && (s.parse::<f64>().is_ok() || s.starts_with("0o")) =>
        {
            format!(
                "{text} (a string in YAML 1.1, as PyYAML reads configs: write numbers as 1000 or 1.0e+3)"
            )
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_read_alike() {
        let yaml = parse_yaml(
        "model:\n  d_model: 8\n  attn_scale: 0.35\n  norm_places: []\n  use_bias_qk: true\n  rope_base: 500.0\ntrain:\n  lr: 1.0e-3\n",
    )
    .unwrap();
        let json: Value = serde_json::from_str(
        r#"{"model": {"d_model": 8, "attn_scale": 0.35, "norm_places": [], "use_bias_qk": true, "rope_base": 500.0}, "train": {"lr": 0.001}}"#,
    )
    .unwrap();
        assert_eq!(yaml, json);
    }

    #[test]
    fn bad_yaml_is_an_error() {
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n".to_owned()
            + &(b'b'..=b'z')
                .map(|c| {
                    let (c, p) = (c as char, (c - 1) as char);
                    format!(
                        "{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                    )
                })
                .collect::<String>();
        let deep = "[".repeat(100) + &"]".repeat(100);
        for text in [
            "",
            "a: [1, 2",
            "--- 1\n--- 2\n",
            "a: &x 1\nb: *x\n",
            "? [1]\n: 2\n",
            &laughs,
            &deep,
        ] {
            assert!(parse_yaml(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn yaml_is_read_as_pyyaml_reads_it() {
        let yaml = parse_yaml(
        "model:\n  rope_base: 01750\n  n_ctx: 0x10\n  use_bias_qk: on\n  attn_scale: 1e3\n  lr: 1.0e+3\n  \
         d: 1:30\n  e: '01750'\n  f: !!str 12\n  g: .inf\n1: one\nyes: true\n=: value key\n",
    )
    .unwrap();
        let want: Value = serde_json::from_str(
            r#"{"model": {"rope_base": 1000, "n_ctx": 16, "use_bias_qk": true, "attn_scale": "1e3",
            "lr": 1000.0, "d": 90, "e": "01750", "f": "12", "g": ".inf"},
            "1": "one", "true": true, "=": "value key"}"#,
        )
        .unwrap();
        assert_eq!(yaml, want);
    }

    #[test]
    fn yaml_documents_are_bounded_and_unambiguous() {
        // A line of block sequences a million deep is refused at depth 65,
        // without recursion (it would overflow the stack).
        let deep = "- ".repeat(500_000) + "x\n";
        assert_eq!(
            parse_yaml(&deep).unwrap_err(),
            "nested more than 64 levels deep"
        );
        let ok = "- ".repeat(64) + "x\n";
        assert!(parse_yaml(&ok).is_ok());
        // A key twice: PyYAML keeps the last, which the writer may not have meant.
        let e = parse_yaml("model:\n  n_head: 2\n  n_head: 4\n").unwrap_err();
        assert!(e.contains("\"n_head\" appears twice"), "{e}");
        // 1 and "1" are one key here.
        assert!(parse_yaml("1: a\n'1': b\n").is_err());
        // Merge keys, tags that are not the standard ones, and null or float keys.
        for text in [
            "model:\n  <<: {n_head: 2}\n",
            "model: !!python/object:argparse.Namespace {}\n",
            "model: !!omap [a: 1]\n",
            "model:\n  n: !!python/tuple [1, 2]\n",
            "model:\n  ~: 1\n",
            "model:\n  1.5: 1\n",
            "model:\n  n: =\n",
        ] {
            assert!(parse_yaml(text).is_err(), "{text:?}");
        }
        assert_eq!(
            parse_yaml("# only a comment\n").unwrap_err(),
            "the file is empty"
        );
    }
}
