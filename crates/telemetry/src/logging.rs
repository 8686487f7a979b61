//! Log setup: human-readable by default, JSON when configured; levels per module from the
//! configuration, overridden by `RUST_LOG`; and, when configured, trace export.

use crate::config_check::{config_error, ConfigError};
use crate::tracing_export::{tracer, tracer_provider, TracingConfig};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

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

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map(|_| ())
            .map_err(|error| config_error("log.filter", error.to_string()))
    }
}

/// What `init_telemetry` installed; call [`Telemetry::shutdown`] before the process exits so
/// the last spans are sent.
#[must_use = "dropping Telemetry without shutdown() loses the spans not yet exported"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still queued (bounded by the exporter's timeout) and stops exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks on its export thread, which needs this runtime running.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "trace exporter did not shut down cleanly"),
            Err(error) => tracing::warn!(%error, "trace exporter shutdown task failed"),
        }
    }
}

/// Installs the global subscriber: logs as `log` says (`RUST_LOG`, when set, wins over
/// `log.filter`) and, when `tracing.otlp_endpoint` is set, span export over OTLP under
/// `service_name` unless the configuration names another, with `instance` (the process's
/// address) as `service.instance.id`. Call inside the Tokio runtime.
pub fn init_telemetry(
    log: &LogConfig,
    tracing_config: &TracingConfig,
    service_name: &str,
    instance: &str,
) -> Result<Telemetry, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => value,
        _ => log.filter.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|error| format!("invalid configuration: log.filter: {error}"))?;
    let fmt = match log.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
    };
    let provider = if tracing_config.enabled() {
        Some(tracer_provider(tracing_config, service_name, instance)?)
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(tracer(provider)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|error| format!("cannot install the logger: {error}"))?;
    if provider.is_some() {
        tracing::info!(
            endpoint = %tracing_config.otlp_endpoint,
            sampling_ratio = tracing_config.sampling_ratio,
            "exporting traces over OTLP"
        );
    }
    Ok(Telemetry { provider })
}

/// Trace export only, for a command-line tool whose stdout is its output (`cairnctl`): no log
/// lines are written anywhere; when `tracing_config.otlp_endpoint` is set, spans at `info`
/// and above are sent under `service_name`. With export off nothing is installed. Call inside
/// the Tokio runtime, and [`Telemetry::shutdown`] before exiting.
pub fn init_trace_export(
    tracing_config: &TracingConfig,
    service_name: &str,
) -> Result<Telemetry, String> {
    if !tracing_config.enabled() {
        return Ok(Telemetry { provider: None });
    }
    let provider = tracer_provider(tracing_config, service_name, "")?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(tracer(&provider)))
        .try_init()
        .map_err(|error| format!("cannot install the trace exporter: {error}"))?;
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Logs only, no trace export (tools and tests).
pub fn init_logging(config: &LogConfig) -> Result<(), String> {
    init_telemetry(config, &TracingConfig::default(), "cairn", "").map(|_| ())
}
