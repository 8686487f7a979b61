//! Keeps the configuration reference (`docs/configuration.md`) true: the settings a binary
//! accepts are read from its configuration struct itself ([`accepted_settings`]), the
//! documented ones from the reference's field tables ([`Reference::parse`]), and
//! [`mismatches`] names what is accepted but undocumented, or documented but accepted by
//! nothing. A field added to a struct fails the check until it is documented.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The settings one configuration struct accepts, as dotted paths (`raft.heartbeat_interval_ms`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Values: numbers, strings, lists, maps and unset optional values.
    pub leaves: BTreeSet<String>,
    /// Tables of settings (`raft`, `coordinator`), optional ones included.
    pub tables: BTreeSet<String>,
}

impl Accepted {
    /// Whether `name` is a setting or a table of settings.
    pub fn contains(&self, name: &str) -> bool {
        self.leaves.contains(name) || self.tables.contains(name)
    }
}

/// Every setting `T` accepts, found by writing `defaults` out as JSON and walking its keys. An
/// unset optional value (`null`) is tried as a table: when `T` reads `{}` there and writes a
/// table back (an optional table such as the node's `coordinator`), its fields are walked too;
/// otherwise (an optional scalar) it is one setting. An empty table is a map, one setting.
pub fn accepted_settings<T: Serialize + DeserializeOwned>(defaults: &T) -> Accepted {
    let root = serde_json::to_value(defaults).expect("a configuration writes out as JSON");
    assert!(root.is_object(), "a configuration is a table");
    let mut accepted = Accepted::default();
    walk::<T>(root, &mut Vec::new(), &mut accepted);
    accepted
}

fn walk<T: Serialize + DeserializeOwned>(
    root: Value,
    path: &mut Vec<String>,
    accepted: &mut Accepted,
) {
    let Some(Value::Object(table)) = lookup(&root, path) else {
        return;
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        path.push(key);
        let mut here = root.clone();
        if lookup(&here, path).is_some_and(Value::is_null) {
            if let Some(expanded) = with_default_table::<T>(&here, path) {
                here = expanded;
            }
        }
        match lookup(&here, path) {
            Some(Value::Object(fields)) if !fields.is_empty() => {
                accepted.tables.insert(path.join("."));
                walk::<T>(here, path, accepted);
            }
            _ => {
                accepted.leaves.insert(path.join("."));
            }
        }
        path.pop();
    }
}

/// `root` with an empty table at `path`, read as `T` and written out again: the defaults of an
/// optional table appear there. `None` when `T` refuses a table at `path`.
fn with_default_table<T: Serialize + DeserializeOwned>(
    root: &Value,
    path: &[String],
) -> Option<Value> {
    let mut probe = root.clone();
    let mut slot = &mut probe;
    for key in path {
        slot = slot.as_object_mut()?.get_mut(key)?;
    }
    *slot = Value::Object(Default::default());
    let config: T = serde_json::from_value(probe).ok()?;
    let written = serde_json::to_value(&config).ok()?;
    let is_table = lookup(&written, path)?.is_object();
    is_table.then_some(written)
}

fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |value, key| value.get(key))
}

/// The settings the reference documents: rows of its tables whose header starts with `field`,
/// and the second column of its tables of environment variables (`| variable | field |`).
/// A row names one or more settings in backticks in its first cell (`` `log`, `tracing` ``);
/// under a heading that starts with a backticked name (`` ### `raft`: … ``) the names are
/// relative to that table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    /// The shared tables at the top, before any binary's part.
    pub shared: BTreeSet<String>,
    /// Each binary's part, keyed by the backticked binary name of its top heading
    /// (`` # Gateway configuration (`cairn-gateway`) ``).
    pub binaries: BTreeMap<String, BTreeSet<String>>,
    /// The example variables and the setting each is said to set
    /// (`CAIRN_RAFT__HEARTBEAT_INTERVAL_MS`, `raft.heartbeat_interval_ms`).
    pub variables: Vec<(String, String)>,
}

/// The kind of table a row belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Other,
    /// `| field | type | … |`: the first cell names settings.
    Fields,
    /// `| variable | field |`: an example variable, then the setting it sets.
    Variables,
}

/// The setting an environment variable sets: `CAIRN_` removed, lowercased, `__` nesting.
pub fn setting_of_variable(variable: &str) -> Option<String> {
    let name = variable.strip_prefix("CAIRN_")?;
    Some(name.to_lowercase().replace("__", "."))
}

impl Reference {
    pub fn parse(markdown: &str) -> Reference {
        let mut reference = Reference::default();
        let mut binary: Option<String> = None;
        let mut prefix = String::new();
        let mut table = Table::Other;
        let mut in_code = false;
        for line in markdown.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            if let Some(heading) = line.strip_prefix("# ") {
                binary = backticked(heading)
                    .into_iter()
                    .find(|name| name.starts_with("cairn"));
                prefix.clear();
                table = Table::Other;
                continue;
            }
            if line.starts_with('#') {
                let heading = line.trim_start_matches('#').trim();
                prefix = match backticked(heading).first() {
                    Some(table) if heading.starts_with('`') => format!("{table}."),
                    _ => String::new(),
                };
                table = Table::Other;
                continue;
            }
            let Some(row) = line.trim_start().strip_prefix('|') else {
                table = Table::Other;
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            match (cells[0], cells.get(1).copied()) {
                ("field", _) => {
                    table = Table::Fields;
                    continue;
                }
                ("variable", Some("field")) => {
                    table = Table::Variables;
                    continue;
                }
                (first, _) if first.starts_with("---") => continue,
                _ => {}
            }
            let names = match table {
                Table::Other => continue,
                Table::Fields => backticked(cells[0]),
                Table::Variables => {
                    let (Some(example), Some(setting)) = (
                        backticked(cells[0]).into_iter().next(),
                        cells
                            .get(1)
                            .and_then(|cell| backticked(cell).into_iter().next()),
                    ) else {
                        continue;
                    };
                    let variable = example.split('=').next().unwrap_or_default().to_string();
                    reference.variables.push((variable, setting.clone()));
                    vec![setting]
                }
            };
            let documented = match &binary {
                Some(binary) => reference.binaries.entry(binary.clone()).or_default(),
                None => &mut reference.shared,
            };
            for name in names {
                documented.insert(format!("{prefix}{name}"));
            }
        }
        reference
    }

    /// `docs/configuration.md` of this repository.
    pub fn of_this_repository() -> Reference {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        Reference::parse(&text)
    }
}

/// The texts between pairs of backticks in `text`.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// What is out of step between what `binary` accepts and what its part of the reference
/// (`own`) and the shared tables document: settings accepted but documented nowhere, and
/// settings its part documents that it does not accept. (Whether each shared setting exists
/// is for the caller to judge against every binary.)
pub fn mismatches(
    binary: &str,
    accepted: &Accepted,
    own: &BTreeSet<String>,
    shared: &BTreeSet<String>,
) -> Vec<String> {
    let undocumented = accepted
        .leaves
        .iter()
        .filter(|name| !own.contains(*name) && !shared.contains(*name))
        .map(|name| format!("{binary}: `{name}` is accepted but not documented"));
    let missing = own
        .iter()
        .filter(|name| !accepted.contains(name))
        .map(|name| format!("{binary}: `{name}` is documented but {binary} has no such setting"));
    undocumented.chain(missing).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Sample {
        port: u16,
        labels: BTreeMap<String, String>,
        bind_ip: Option<std::net::IpAddr>,
        nested: Nested,
        optional: Option<Nested>,
    }

    #[derive(Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Nested {
        timeout_ms: u64,
        inner: Option<Inner>,
    }

    #[derive(Serialize, Deserialize, Default)]
    #[serde(default)]
    struct Inner {
        depth: u32,
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn optional_tables_are_walked_and_maps_and_optional_values_are_settings() {
        let accepted = accepted_settings(&Sample::default());
        assert_eq!(
            accepted.leaves,
            set(&[
                "bind_ip",
                "labels",
                "nested.inner.depth",
                "nested.timeout_ms",
                "optional.inner.depth",
                "optional.timeout_ms",
                "port",
            ])
        );
        assert_eq!(
            accepted.tables,
            set(&["nested", "nested.inner", "optional", "optional.inner"])
        );
    }

    const DOC: &str = "# Configuration\n\
        \n\
        | field | type |\n\
        |---|---|\n\
        | `log.format` | string |\n\
        \n\
        # Sample configuration (`cairn-sample`)\n\
        \n\
        3. **Environment**:\n\
        \n\
        \x20  | variable | field |\n\
        \x20  |---|---|\n\
        \x20  | `CAIRN_NESTED__TIMEOUT_MS=5` | `nested.timeout_ms` |\n\
        \x20  | `CAIRN_PORT=1` | `port` |\n\
        \n\
        | flag | sets |\n\
        |---|---|\n\
        | `--port` | `port` |\n\
        \n\
        ## Reference\n\
        \n\
        | field | type |\n\
        |---|---|\n\
        | `port` | u16 |\n\
        | `nested`, `labels` | tables |\n\
        | `gone_ms` | u64 |\n\
        \n\
        ```toml\n\
        # /etc/cairn/sample.toml\n\
        port = 1\n\
        ```\n\
        \n\
        ### `nested`: `Nested`\n\
        \n\
        | field | type |\n\
        |---|---|\n\
        | `timeout_ms` | u64 |\n";

    #[test]
    fn field_tables_are_read_relative_to_their_heading() {
        let reference = Reference::parse(DOC);
        assert_eq!(reference.shared, set(&["log.format"]));
        assert_eq!(
            reference.variables,
            [
                (
                    "CAIRN_NESTED__TIMEOUT_MS".to_string(),
                    "nested.timeout_ms".to_string()
                ),
                ("CAIRN_PORT".to_string(), "port".to_string())
            ]
        );
        assert_eq!(
            setting_of_variable("CAIRN_NESTED__TIMEOUT_MS").as_deref(),
            Some("nested.timeout_ms")
        );
        assert_eq!(
            reference.binaries["cairn-sample"],
            set(&["gone_ms", "labels", "nested", "nested.timeout_ms", "port"])
        );
    }

    #[test]
    fn undocumented_and_nonexistent_settings_are_named() {
        let reference = Reference::parse(DOC);
        let mut problems = mismatches(
            "cairn-sample",
            &accepted_settings(&Sample::default()),
            &reference.binaries["cairn-sample"],
            &reference.shared,
        );
        problems.sort();
        assert_eq!(
            problems,
            [
                "cairn-sample: `bind_ip` is accepted but not documented",
                "cairn-sample: `gone_ms` is documented but cairn-sample has no such setting",
                "cairn-sample: `nested.inner.depth` is accepted but not documented",
                "cairn-sample: `optional.inner.depth` is accepted but not documented",
                "cairn-sample: `optional.timeout_ms` is accepted but not documented",
            ]
        );
    }
}
