//! Layering defaults, the TOML file, the environment and flags, remembering sources.
//!
//! Why not `figment`: it merges providers well, but its extraction is serde's, which stops a
//! struct at its first unknown or mistyped key, so a file with three mistakes reports one;
//! and it has no "did you mean". Reporting every problem at once, each with its source (file,
//! variable or flag) and a hint, needs a pass over the merged tree before serde sees it: that
//! pass is this file, and with it figment would add a dependency without removing code.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::Value;

use crate::{Config, ConfigError, Problem};

/// Prefix of environment overrides: `CITYHUB__SERVER__BIND` sets `server.bind`.
pub const ENV_PREFIX: &str = "CITYHUB__";

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A loaded configuration and the source of each of its values.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    sources: BTreeMap<String, Source>,
    values: BTreeMap<String, Value>,
}

impl Loaded {
    /// The layer that set a dotted key, `Default` for keys nobody set.
    pub fn source_of(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    /// The effective configuration as TOML, each value followed by its source.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut section = "";
        for (key, value) in &self.values {
            let (this_section, name) = key.split_once('.').unwrap_or(("", key.as_str()));
            if this_section != section {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{this_section}]\n"));
                section = this_section;
            }
            let line = format!("{name} = {value}");
            out.push_str(&format!("{line:<44} # {}\n", self.source_of(key)));
        }
        out.push_str(&format!(
            "\n# resolved: objects at {}, catalog at {}\n",
            self.config.storage_url(),
            self.config.catalog_url()
        ));
        out
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `CITYHUB__*` variables
    /// from `env`, then `flags` as (dotted key, value, flag name). All problems are returned
    /// together.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &[(&str, String, &str)],
    ) -> Result<Loaded, ConfigError> {
        let mut layers = Layers::new();
        if let Some(path) = file {
            layers.apply_file(path);
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (name, raw) in env {
            let key = name[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            layers.apply_text(&key, &raw, Source::Env(name.clone()));
        }
        for (key, raw, flag) in flags {
            layers.apply_text(key, raw, Source::Flag((*flag).to_string()));
        }
        layers.finish()
    }
}

struct Layers {
    /// Every known key (dotted) with its current value; the defaults define which keys exist.
    values: BTreeMap<String, Value>,
    sources: BTreeMap<String, Source>,
    problems: Vec<Problem>,
}

impl Layers {
    fn new() -> Self {
        let defaults =
            Value::try_from(Config::default()).unwrap_or_else(|_| Value::Table(Default::default()));
        let mut values = BTreeMap::new();
        flatten("", &defaults, &mut values);
        Self {
            values,
            sources: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, key: &str, source: Source, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            source,
            message: message.into(),
        });
    }

    fn apply_file(&mut self, path: &Path) {
        let source = Source::File(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                self.problem("", source, format!("cannot read the file: {err}"));
                return;
            }
        };
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(err) => {
                let message = err.message().to_string();
                let at = err
                    .span()
                    .map(|span| {
                        let line = text[..span.start].matches('\n').count() + 1;
                        format!("line {line}: ")
                    })
                    .unwrap_or_default();
                self.problem("", source, format!("not valid TOML: {at}{message}"));
                return;
            }
        };
        self.apply_table("", &table, &source);
    }

    fn apply_table(&mut self, prefix: &str, table: &toml::Table, source: &Source) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let is_section = self
                .values
                .keys()
                .any(|known| known.starts_with(&format!("{key}.")));
            match value {
                Value::Table(inner) if is_section => self.apply_table(&key, inner, source),
                _ => self.apply_value(&key, value.clone(), source.clone()),
            }
        }
    }

    fn apply_value(&mut self, key: &str, value: Value, source: Source) {
        if key == "ingest.kafka"
            && let Value::Array(feeds) = &value
        {
            // Each feed is checked on its own so that a problem names the feed.
            let mut ok = true;
            for (index, feed) in feeds.iter().enumerate() {
                if let Err(err) = feed.clone().try_into::<crate::KafkaFeed>() {
                    self.problem(&format!("{key}[{index}]"), source.clone(), err.message());
                    ok = false;
                }
            }
            if !ok {
                return;
            }
        }
        let Some(default) = self.values.get(key) else {
            let hint = self.closest_key(key);
            self.problem(key, source, format!("unknown key{hint}"));
            return;
        };
        let value = match (default, value) {
            (Value::Float(_), Value::Integer(i)) => Value::Float(i as f64),
            (default, value) if default.same_type(&value) => value,
            (default, value) => {
                let message = format!(
                    "expected {}, found {} {value}",
                    article(default.type_str()),
                    value.type_str()
                );
                self.problem(key, source, message);
                return;
            }
        };
        self.values.insert(key.to_string(), value);
        self.sources.insert(key.to_string(), source);
    }

    /// Text from the environment or a flag, read as the type the key's default has.
    fn apply_text(&mut self, key: &str, raw: &str, source: Source) {
        let Some(default) = self.values.get(key) else {
            let hint = self.closest_key(key);
            self.problem(key, source, format!("unknown key{hint}"));
            return;
        };
        let parsed = match default {
            Value::String(_) => Ok(Value::String(raw.to_string())),
            Value::Integer(_) => raw
                .trim()
                .replace('_', "")
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| "a whole number"),
            Value::Float(_) => raw
                .trim()
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| "a number"),
            Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
                _ => Err("true or false"),
            },
            other => format!("x = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut table| table.remove("x"))
                .filter(|value| value.same_type(other))
                .ok_or("a TOML value of the key's type"),
        };
        match parsed {
            Ok(value) => self.apply_value(key, value, source),
            Err(expected) => {
                self.problem(key, source, format!("expected {expected}, found {raw:?}"));
            }
        }
    }

    fn closest_key(&self, key: &str) -> String {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        self.values
            .keys()
            .find(|known| known.ends_with(&format!(".{leaf}")) || known.as_str() == leaf)
            .map(|known| format!(" (did you mean {known}?)"))
            .unwrap_or_default()
    }

    fn finish(mut self) -> Result<Loaded, ConfigError> {
        let tree = unflatten(&self.values);
        let config: Config = match tree.try_into() {
            Ok(config) => config,
            Err(err) => {
                // Types were checked leaf by leaf, so this is a range problem such as a
                // negative size; serde names no key, so report it against the whole file.
                self.problem("", Source::Default, format!("invalid value: {err}"));
                return Err(ConfigError {
                    problems: self.problems,
                });
            }
        };
        for (key, message) in config.semantic_problems() {
            let source = self.sources.get(&key).cloned().unwrap_or(Source::Default);
            self.problem(&key, source, message);
        }
        if self.problems.is_empty() {
            Ok(Loaded {
                config,
                sources: self.sources,
                values: self.values,
            })
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Table(table) => {
            for (name, inner) in table {
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                flatten(&key, inner, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn unflatten(values: &BTreeMap<String, Value>) -> Value {
    let mut root = toml::Table::new();
    for (key, value) in values {
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        let mut table = &mut root;
        for part in parts {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = Value::Table(toml::Table::new());
            }
            let Value::Table(inner) = entry else {
                unreachable!("just made a table")
            };
            table = inner;
        }
        table.insert(leaf.to_string(), value.clone());
    }
    Value::Table(root)
}
