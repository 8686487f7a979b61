//! Telemetry and start-up shared by every Cairn binary: layered configuration, logs (human or
//! JSON, level per module), trace export over OTLP, Prometheus
//! metrics, the HTTP endpoints operators and Kubernetes probe (`/metrics`, `/livez`,
//! `/readyz`), and a gRPC layer that counts and times every request.
//!
//! It knows nothing about shards or Raft: each binary registers its own metrics here.

mod config_check;
mod grpc_metrics;
mod http;
mod layered_config;
mod logging;
pub mod shutdown;
mod tracing_export;

pub use config_check::{check_socket_address, config_error, ConfigError};
pub use grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};
pub use http::{serve_http, start_http, HttpConfig, Readiness};
pub use layered_config::{layered_config, unknown_file_keys};
pub use logging::{
    init_logging, init_telemetry, init_trace_export, LogConfig, LogFormat, Telemetry,
};
pub use prometheus;
pub use shutdown::{
    serve_bounded, until_deadline, ShutdownDeadlines, Stopping, SHUTDOWN_GRACE_MS_DEFAULT,
    SHUTDOWN_GRACE_MS_MIN,
};
pub use tracing_export::{starts_trace, TracingConfig};

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM), so every binary shuts
/// down the same way.
pub async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested");
}

/// Binds a server's listener, with an error that names the address.
pub async fn bind_listener(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            std::io::Error::new(error.kind(), format!("cannot listen on {address}: {error}"))
        })
}

/// Registers an "info" gauge: one series, value 1, whose label carries a fact about the
/// process that an operator must see on a dashboard (e.g. `cairn_storage_engine{engine="memory"}`).
pub fn register_info_gauge(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
    label: &str,
    value: &str,
) {
    let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), &[label])
        .expect("valid metric definition");
    gauge.with_label_values(&[value]).set(1);
    registry
        .register(Box::new(gauge))
        .expect("metric names are unique");
}
