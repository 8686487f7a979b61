//! Log setup: human-readable by default, JSON when configured; levels per module from the
//! configuration, overridden by `RUST_LOG`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Levels in `tracing` filter syntax, e.g. `info,cairn_raft=debug,openraft=warn`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info,openraft=warn".into(),
        }
    }
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `config.filter`.
pub fn init_logging(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => value,
        _ => config.filter.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|error| format!("invalid configuration: log.filter: {error}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match config.format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|error| format!("cannot install the logger: {error}"))
}
