//! `cairnctl`'s traces: the same `[tracing]` settings as the servers' (docs/configuration.md),
//! read from `CAIRN_TRACING__*` environment variables only (cairnctl has no file). With
//! `CAIRN_TRACING__OTLP_ENDPOINT` set, each command is a `cairnctl <command>` span whose
//! context goes to the gateway with every call, so the command and what it caused in the
//! cluster are one trace. Nothing is logged: stdout is the command's output.

use serde::{Deserialize, Serialize};

/// Every setting cairnctl reads from the environment (its flags are in `args`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CliConfig {
    pub tracing: cairn_telemetry::TracingConfig,
}

impl CliConfig {
    /// The defaults overlaid with `CAIRN_*` variables, validated. Variables that name no
    /// field of cairnctl (`CAIRN_ENDPOINTS`, the servers' settings) are ignored.
    pub fn from_environment() -> Result<Self, String> {
        let config: CliConfig =
            cairn_telemetry::layered_config(&CliConfig::default(), None, &[])?;
        config.tracing.validate().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

/// Starts trace export as the environment asks (nothing when it does not). Call inside the
/// Tokio runtime, and `shutdown` the result before exiting so the command's spans are sent.
pub fn start() -> Result<cairn_telemetry::Telemetry, String> {
    let config = CliConfig::from_environment()?;
    cairn_telemetry::init_trace_export(&config.tracing, "cairnctl")
}
