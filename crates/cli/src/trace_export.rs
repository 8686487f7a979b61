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
        let config: CliConfig = cairn_telemetry::layered_config(&CliConfig::default(), None, &[])?;
        config
            .tracing
            .validate()
            .map_err(|error| error.to_string())?;
        Ok(config)
    }
}

/// Starts trace export as the environment asks (nothing when it does not). Call inside the
/// Tokio runtime, and `shutdown` the result before exiting so the command's spans are sent.
pub fn start() -> Result<cairn_telemetry::Telemetry, String> {
    let config = CliConfig::from_environment()?;
    cairn_telemetry::init_trace_export(&config.tracing, "cairnctl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_test_harness::config_reference::{accepted_settings, mismatches, Reference};

    /// Every setting cairnctl reads is documented in the reference's shared tables.
    #[test]
    fn every_setting_is_documented() {
        let reference = Reference::of_this_repository();
        let problems = mismatches(
            "cairnctl",
            &accepted_settings(&CliConfig::default()),
            &Default::default(),
            &reference.shared,
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn settings_come_from_the_environment_and_are_validated() {
        // Only this test sets this variable.
        std::env::set_var("CAIRN_TRACING__SAMPLING_RATIO", "0.5");
        let read = CliConfig::from_environment();
        std::env::set_var("CAIRN_TRACING__SAMPLING_RATIO", "1.5");
        let refused = CliConfig::from_environment();
        std::env::remove_var("CAIRN_TRACING__SAMPLING_RATIO");
        assert_eq!(read.expect("a valid ratio").tracing.sampling_ratio, 0.5);
        let error = refused.expect_err("a ratio above 1 is refused");
        assert!(error.contains("tracing.sampling_ratio"), "{error}");
    }
}
