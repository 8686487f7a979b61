//! Trace export: `tracing` spans become OpenTelemetry spans sent over OTLP/gRPC, when an
//! endpoint is configured. With no endpoint no OpenTelemetry layer is installed at all, so
//! traces cost nothing but the `tracing` spans the log layer already sees.
//!
//! Only a client's request starts a trace ([`starts_trace`]): a call to the gateway's public
//! services, or a `cairnctl` command. Every other span without a sampled parent (start-up,
//! joins, shard-map watches, placement's admin calls, Raft, heartbeats) is dropped, with its
//! children, so routine internal work never buries the traces of requests.

use crate::config_check::{config_error, ConfigError};
use opentelemetry::trace::{Link, SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SamplingDecision, SamplingResult,
    SdkTracerProvider, ShouldSample,
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

/// The beginnings of the span names that may start a trace: the gateway's public services
/// (the gRPC layer names a request span after its method, `/cairn.kv.v1.KV/Put`), a
/// `cairnctl` command (`cairnctl cluster status`) and an SDK call (`cairn.client.put`).
const TRACE_ROOTS: [&str; 3] = ["/cairn.kv.v1.", "cairnctl ", "cairn.client."];

/// Whether a span named `name` that has no sampled parent may start a trace: only when it is
/// a client's request. Internal calls between Cairn processes join the trace of the request
/// they serve, which their caller sends along, or none.
pub fn starts_trace(name: &str) -> bool {
    TRACE_ROOTS.iter().any(|root| name.starts_with(root))
}

/// The sampler of spans without a parent: a client's request is recorded with probability
/// `ratio`, anything else is dropped.
#[derive(Clone, Debug)]
struct ClientRequests {
    ratio: f64,
}

impl ShouldSample for ClientRequests {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if starts_trace(name) {
            Sampler::TraceIdRatioBased(self.ratio).should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            )
        } else {
            SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: Default::default(),
            }
        }
    }
}

/// A span with a parent follows its parent's decision, so one decision at the edge holds for
/// the whole request across processes; a span without one starts a trace only as a client's
/// request, with probability `ratio`.
pub(crate) fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(ClientRequests { ratio }))
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
    let mut resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name);
    // A process without an address of its own (cairnctl) has no instance id.
    if !instance.is_empty() {
        resource =
            resource.with_attribute(KeyValue::new("service.instance.id", instance.to_string()));
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batches)
                .build(),
        )
        .with_sampler(sampler(config.sampling_ratio))
        .with_resource(resource.build())
        .build())
}

pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("cairn")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_trace_context::TraceParent;
    use opentelemetry_sdk::trace::InMemorySpanExporter;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn only_client_requests_start_traces() {
        for (name, starts) in [
            ("/cairn.kv.v1.KV/Put", true),
            ("/cairn.kv.v1.Cluster/Status", true),
            ("cairnctl cluster status", true),
            ("cairn.client.put", true),
            ("/cairn.coordinator.v1.Coordinator/JoinCluster", false),
            ("/cairn.coordinator.v1.Coordinator/WatchShardMap", false),
            ("/cairn.coordinator.v1.Coordinator/GetShardMap", false),
            ("/cairn.coordinator.v1.Coordinator/ClusterStatus", false),
            ("/cairn.node.v1.NodeAdmin/CreateReplica", false),
            ("/cairn.node.v1.NodeAdmin/InitializeShard", false),
            ("/cairn.node.v1.NodeAdmin/TransferLeader", false),
            ("/cairn.node.v1.ShardKv/Put", false),
            ("/cairn.raft.v1.Raft/Append", false),
            ("coordinator.join", false),
            ("raft.propose", false),
        ] {
            assert_eq!(starts_trace(name), starts, "{name}");
        }
    }

    /// Spans as the binaries make them, through the `tracing` layer and this sampler into an
    /// in-memory exporter: an internal call without a parent exports nothing (nor do its
    /// children); a client's request does, and so does the internal call it reaches.
    #[test]
    fn internal_calls_join_a_request_trace_but_start_none() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(sampler(1.0))
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(tracer(&provider)));
        tracing::subscriber::with_default(subscriber, || {
            let placement = tracing::info_span!(
                "grpc.request",
                otel.name = "/cairn.node.v1.NodeAdmin/CreateReplica"
            );
            placement.in_scope(|| {
                assert_eq!(TraceParent::current(), None, "nothing to pass on");
                tracing::info_span!("raft.propose").in_scope(|| {});
            });
            drop(placement);

            let request =
                tracing::info_span!("grpc.request", otel.name = "/cairn.kv.v1.Cluster/Status");
            let sent = request
                .in_scope(TraceParent::current)
                .expect("a client's request is sampled");
            // The coordinator's side of the call, continuing the context the gateway sent.
            let served = tracing::info_span!(
                "grpc.request",
                otel.name = "/cairn.coordinator.v1.Coordinator/ClusterStatus"
            );
            sent.adopt(&served);
            served.in_scope(|| tracing::info_span!("coordinator.status").in_scope(|| {}));
            drop(served);
            drop(request);
        });
        let spans = exporter.get_finished_spans().expect("finished spans");
        let mut names: Vec<String> = spans.iter().map(|span| span.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "/cairn.coordinator.v1.Coordinator/ClusterStatus",
                "/cairn.kv.v1.Cluster/Status",
                "coordinator.status"
            ]
        );
        assert!(
            spans
                .iter()
                .all(|span| span.span_context.trace_id() == spans[0].span_context.trace_id()),
            "one trace"
        );
    }

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
