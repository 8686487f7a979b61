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
    let defaults =
        config::Config::try_from(defaults).map_err(|e| format!("encoding defaults: {e}"))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
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
        std::fs::write(&file, "port = \"not a number\"\n").unwrap();
        let error = layered_config(&defaults, Some(&file), &[]).unwrap_err();
        assert!(error.contains("port"), "{error}");
    }
}
