//! Configuration layering shared by every binary: defaults < TOML file < `CAIRN_*`
//! environment (`__` nests: `CAIRN_RAFT__HEARTBEAT_INTERVAL_MS`) — the binary applies its
//! flags on top and validates.

use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Reads `T` from its defaults, then `file` (if any), then the environment. `list_keys` are
/// fields whose environment value is a comma-separated list.
pub fn layered_config<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<&Path>,
    list_keys: &[&str],
) -> Result<T, String> {
    let default_layer =
        config::Config::try_from(defaults).map_err(|e| format!("encoding defaults: {e}"))?;
    let mut builder = config::Config::builder().add_source(default_layer);
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        // Unknown keys warn rather than fail, so a rollback to an older binary does not break
        // on a newer file. Logging is not set up yet: the warning goes to stderr.
        for key in unknown_file_keys(defaults, path) {
            eprintln!(
                "warning: {}: unknown configuration key `{key}` is ignored",
                path.display()
            );
        }
    }
    let mut environment = config::Environment::with_prefix("CAIRN")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true);
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    builder
        .add_source(environment)
        .build()
        .and_then(|layered| layered.try_deserialize())
        .map_err(|error| format!("reading configuration: {error}"))
}

/// Keys of the TOML file at `path` that `T` has no field for. A key under an optional table
/// that is unset in `defaults` cannot be judged and is not reported. A file that cannot be
/// read yields nothing here; reading it for real reports the error.
pub fn unknown_file_keys<T: Serialize>(defaults: &T, path: &Path) -> Vec<String> {
    let Ok(known) = serde_json::to_value(defaults) else {
        return Vec::new();
    };
    let Ok(file) = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()
    else {
        return Vec::new();
    };
    let Ok(file) = file.try_deserialize::<serde_json::Value>() else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    collect_unknown(&file, &known, "", &mut unknown);
    unknown
}

fn collect_unknown(
    file: &serde_json::Value,
    known: &serde_json::Value,
    prefix: &str,
    unknown: &mut Vec<String>,
) {
    let (serde_json::Value::Object(file), serde_json::Value::Object(known)) = (file, known) else {
        return;
    };
    for (key, value) in file {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => unknown.push(path),
            Some(known) => collect_unknown(value, known, &path, unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        port: u16,
        name: String,
        nested: Nested,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Nested {
        timeout_ms: u64,
    }

    #[test]
    fn file_overrides_defaults_and_environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("cairn-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sample.toml");
        std::fs::write(
            &file,
            "port = 7\nname = \"from-file\"\n[nested]\ntimeout_ms = 5\n",
        )
        .unwrap();
        let defaults = Sample {
            port: 1,
            name: "default".into(),
            nested: Nested { timeout_ms: 1 },
        };
        // Only this test sets these variables.
        std::env::set_var("CAIRN_NESTED__TIMEOUT_MS", "99");
        let layered: Sample = layered_config(&defaults, Some(&file), &[]).unwrap();
        std::env::remove_var("CAIRN_NESTED__TIMEOUT_MS");
        assert_eq!(
            layered,
            Sample {
                port: 7,
                name: "from-file".into(),
                nested: Nested { timeout_ms: 99 }
            }
        );
        std::fs::write(
            &file,
            "port = 7\nprot = 8\n[nested]\ntimeout_ms = 5\ntimeout_s = 1\n[extra]\na = 1\n",
        )
        .unwrap();
        let mut unknown = unknown_file_keys(&defaults, &file);
        unknown.sort();
        assert_eq!(unknown, ["extra", "nested.timeout_s", "prot"]);
        // Unknown keys are ignored, not refused.
        let layered: Sample = layered_config(&defaults, Some(&file), &[]).unwrap();
        assert_eq!(layered.port, 7);
        std::fs::write(&file, "port = \"not a number\"\n").unwrap();
        let error = layered_config(&defaults, Some(&file), &[]).unwrap_err();
        assert!(error.contains("port"), "{error}");
    }
}
