//! A training run's architecture config, `config.json` or `config.yaml`
//! ([SPEC §8](crate::spec#8-sequence-model-files)): where it is found, and its `"model"` keys read strictly.
//!
//! Runs keep their config beside the checkpoints' folder
//! (`runs/NAME/config.yaml`, `runs/NAME/checkpoints/step_N.pt`), so it is
//! looked for beside the checkpoint, then one and two folders up. Only the
//! `"model"` section is read; every key in it must be one this crate knows,
//! since an unknown key may change the function.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::FileError;

/// The file names a config may have, in the order they are looked for.
const NAMES: [&str; 3] = ["config.json", "config.yaml", "config.yml"];

/// A config larger than this is not a config (and is not read whole).
const MAX_BYTES: u64 = 1 << 20;

/// The `"model"` section of a run's config, and where it came from.
#[derive(Clone, Debug)]
pub(crate) struct RunConfig {
    pub(crate) path: PathBuf,
    model: Map<String, Value>,
}

/// The config for the checkpoint at `checkpoint`: `explicit` if given,
/// else the first folder of the checkpoint's own, its parent and its
/// grandparent that holds one. Two configs in one folder are an error (which
/// one the run used cannot be told).
pub(crate) fn find(
    checkpoint: &Path,
    explicit: Option<&Path>,
) -> Result<Option<RunConfig>, FileError> {
    if let Some(path) = explicit {
        return read(path).map(Some);
    }
    let mut dir = checkpoint.parent();
    for _ in 0..3 {
        let Some(d) = dir else { break };
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        let found: Vec<PathBuf> = NAMES
            .iter()
            .map(|n| d.join(n))
            .filter(|p| p.is_file())
            .collect();
        match &found[..] {
            [] => {}
            [one] => return read(one).map(Some),
            [first, second, ..] => {
                return Err(FileError::Config {
                    config: first.clone(),
                    reason: format!(
                        "{} is in the same folder; say which to use with --config",
                        second.display()
                    ),
                });
            }
        }
        dir = d.parent();
    }
    Ok(None)
}

fn read(path: &Path) -> Result<RunConfig, FileError> {
    let err = |reason: String| FileError::Config {
        config: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(err(format!(
            "not a regular file of at most {MAX_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let root = if yaml {
        parse_yaml(&text).map_err(err)?
    } else {
        serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?
    };
    let Value::Object(mut root) = root else {
        return Err(err("the top level must be a mapping".into()));
    };
    match root.remove("model") {
        Some(Value::Object(model)) => Ok(RunConfig {
            path: path.to_owned(),
            model,
        }),
        Some(_) => Err(err("\"model\" must be a mapping of keys".into())),
        None => Err(err(
            "no \"model\" section: the architecture keys (d_model, n_head, …) are read from under \"model\""
                .into(),
        )),
    }
}

/// A YAML document as JSON values (the keys a config needs are scalars,
/// lists and mappings with string keys).
fn parse_yaml(text: &str) -> Result<Value, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn convert(y: &Yaml, depth: usize) -> Result<Value, String> {
        if depth > 64 {
            return Err("nested more than 64 levels deep".into());
        }
        Ok(match y {
            Yaml::Real(s) => {
                let x: f64 = s
                    .parse()
                    .map_err(|_| format!("{s:?} is not a number this reader understands"))?;
                serde_json::Number::from_f64(x)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{s} is not finite"))?
            }
            Yaml::Integer(i) => Value::from(*i),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Null => Value::Null,
            Yaml::Array(a) => Value::Array(
                a.iter()
                    .map(|v| convert(v, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Hash(h) => {
                let mut m = Map::new();
                for (k, v) in h {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => return Err(format!("a mapping key {k:?} that is not a string")),
                    };
                    m.insert(key, convert(v, depth + 1)?);
                }
                Value::Object(m)
            }
            Yaml::Alias(_) => return Err("YAML aliases are not read".into()),
            Yaml::BadValue => return Err("an invalid YAML value".into()),
        })
    }
    // Aliases are expanded by copying: a few lines of nested aliases make
    // gigabytes (the "billion laughs"). A config has no need of them, so
    // a first pass over the events refuses them, and deep nesting, before
    // anything is built.
    struct Screen {
        alias: bool,
        depth: usize,
        deepest: usize,
    }
    impl yaml_rust2::parser::EventReceiver for Screen {
        fn on_event(&mut self, ev: yaml_rust2::Event) {
            use yaml_rust2::Event;
            match ev {
                Event::Alias(_) => self.alias = true,
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    self.depth += 1;
                    self.deepest = self.deepest.max(self.depth);
                }
                Event::SequenceEnd | Event::MappingEnd => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    let mut screen = Screen {
        alias: false,
        depth: 0,
        deepest: 0,
    };
    yaml_rust2::parser::Parser::new_from_str(text)
        .load(&mut screen, true)
        .map_err(|e| format!("not valid YAML: {e}"))?;
    if screen.alias {
        return Err("YAML aliases (*name) are not read in a config".into());
    }
    if screen.deepest > 64 {
        return Err("nested more than 64 levels deep".into());
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    match &docs[..] {
        [doc] => convert(doc, 0),
        [] => Err("the file is empty".into()),
        _ => Err("the file holds several YAML documents".into()),
    }
}

impl RunConfig {
    fn err(&self, reason: String) -> FileError {
        FileError::Config {
            config: self.path.clone(),
            reason,
        }
    }

    /// Refuses every key of `"model"` outside `known`.
    pub(crate) fn check_keys(&self, known: &[&str]) -> Result<(), FileError> {
        let mut unknown: Vec<&str> = self
            .model
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        unknown.sort_unstable();
        match unknown.first() {
            None => Ok(()),
            Some(_) => Err(self.err(format!(
                "unknown model key{} {}: it may change the function, and this reader does not know how \
                 (known: {}); describe the model with tensor_similarity metadata instead",
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known.join(", ")
            ))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.model.get(key).filter(|v| !v.is_null())
    }

    /// A non-negative integer key.
    pub(crate) fn usize(&self, key: &str) -> Result<Option<usize>, FileError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        self.err(format!(
                            "model.{key} must be a non-negative integer, found {v}"
                        ))
                    })
            })
            .transpose()
    }

    /// A finite number key.
    pub(crate) fn f64(&self, key: &str) -> Result<Option<f64>, FileError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| self.err(format!("model.{key} must be a number, found {v}")))
            })
            .transpose()
    }

    /// A boolean key.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, FileError> {
        self.get(key)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    self.err(format!("model.{key} must be true or false, found {v}"))
                })
            })
            .transpose()
    }

    /// A string key.
    pub(crate) fn str(&self, key: &str) -> Result<Option<&str>, FileError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.err(format!("model.{key} must be a string, found {v}")))
            })
            .transpose()
    }

    /// A key that must be a list; its length.
    pub(crate) fn list_len(&self, key: &str) -> Result<Option<usize>, FileError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .map(Vec::len)
                    .ok_or_else(|| self.err(format!("model.{key} must be a list, found {v}")))
            })
            .transpose()
    }

    /// An error about this config's `key`.
    pub(crate) fn refuse(&self, key: &str, reason: impl Into<String>) -> FileError {
        self.err(format!("model.{key}: {}", reason.into()))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
