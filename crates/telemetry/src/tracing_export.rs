//! Trace export: `tracing` spans become OpenTelemetry spans sent over OTLP/gRPC, when an
//! endpoint is configured. With no endpoint no OpenTelemetry layer is installed at all, so
//! traces cost nothing but the `tracing` spans the log layer already sees.

use crate::config_check::{config_error, ConfigError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where and how much to trace. One table, `[tracing]`, in every binary's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TracingConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317` (Jaeger and the
    /// OpenTelemetry Collector both accept it). Empty disables trace export.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans; empty means the binary's name.
    pub service_name: String,
    /// Fraction of new traces to record, 0.0..=1.0. A request that arrives with a sampled
    /// parent (from the SDK or a gateway) is always recorded, so one decision holds for the
    /// whole request.
    pub sampling_ratio: f64,
    /// How often finished spans are sent, in milliseconds.
    pub export_interval_ms: u64,
    /// Finished spans waiting to be sent; more are dropped (and counted by the SDK).
    pub export_queue_spans_max: usize,
    /// Longest one export call may take, in milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: String::new(),
            sampling_ratio: 0.01,
            export_interval_ms: 2_000,
            export_queue_spans_max: 4_096,
            export_timeout_ms: 5_000,
        }
    }
}

impl TracingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let is_url = ["http://", "https://"]
            .iter()
            .any(|scheme| self.otlp_endpoint.starts_with(scheme));
        if !self.otlp_endpoint.is_empty() && !is_url {
            return Err(config_error(
                "tracing.otlp_endpoint",
                format!(
                    "{:?} must be an http:// or https:// URL, or empty to disable export",
                    self.otlp_endpoint
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(config_error(
                "tracing.sampling_ratio",
                format!("{} is not in 0.0..=1.0", self.sampling_ratio),
            ));
        }
        if !(10..=60_000).contains(&self.export_interval_ms) {
            return Err(config_error(
                "tracing.export_interval_ms",
                "must be in 10..=60000",
            ));
        }
        if !(64..=1_000_000).contains(&self.export_queue_spans_max) {
            return Err(config_error(
                "tracing.export_queue_spans_max",
                "must be in 64..=1000000",
            ));
        }
        if !(100..=60_000).contains(&self.export_timeout_ms) {
            return Err(config_error(
                "tracing.export_timeout_ms",
                "must be in 100..=60000",
            ));
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.is_empty()
    }
}

/// Builds the tracer provider for `config` (which must be enabled). Must run inside the Tokio
/// runtime: the OTLP exporter's gRPC channel lives on it.
pub(crate) fn tracer_provider(
    config: &TracingConfig,
    default_service_name: &str,
    instance: &str,
) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .with_timeout(Duration::from_millis(config.export_timeout_ms))
        .with_channel(
            tonic::transport::Endpoint::from_shared(config.otlp_endpoint.clone())
                .map_err(|error| format!("invalid configuration: tracing.otlp_endpoint: {error}"))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy(),
        )
        .build()
        .map_err(|error| format!("cannot set up the OTLP exporter: {error}"))?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .with_max_queue_size(config.export_queue_spans_max)
        .with_max_export_batch_size(config.export_queue_spans_max.min(512))
        .build();
    let service_name = if config.service_name.is_empty() {
        default_service_name.to_string()
    } else {
        config.service_name.clone()
    };
    Ok(SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batches)
                .build(),
        )
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    instance.to_string(),
                ))
                .build(),
        )
        .build())
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("cairn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_field() {
        let cases: Vec<(TracingConfig, &str)> = vec![
            (
                TracingConfig {
                    otlp_endpoint: "collector:4317".into(),
                    ..Default::default()
                },
                "tracing.otlp_endpoint",
            ),
            (
                TracingConfig {
                    sampling_ratio: 1.5,
                    ..Default::default()
                },
                "tracing.sampling_ratio",
            ),
            (
                TracingConfig {
                    export_interval_ms: 0,
                    ..Default::default()
                },
                "tracing.export_interval_ms",
            ),
            (
                TracingConfig {
                    export_queue_spans_max: 1,
                    ..Default::default()
                },
                "tracing.export_queue_spans_max",
            ),
            (
                TracingConfig {
                    export_timeout_ms: 1,
                    ..Default::default()
                },
                "tracing.export_timeout_ms",
            ),
        ];
        for (config, field) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        assert!(TracingConfig::default().validate().is_ok());
        assert!(!TracingConfig::default().enabled());
    }
}
