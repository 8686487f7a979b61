//! The operator HTTP endpoint: `/metrics` (Prometheus text format), `/livez` (the process
//! runs) and `/readyz` (serving and caught up, as the binary decides).

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Address of the metrics and health endpoint, `ip:port`; empty disables it.
    pub listen_address: String,
}

/// Tells `/readyz` whether the process should receive traffic, and why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Serves the endpoint until `shutdown` resolves. `before_scrape` refreshes gauges that are
/// read from the process's state rather than updated as things happen.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    registry: Registry,
    readiness: Readiness,
    before_scrape: Arc<dyn Fn() + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = move || {
        let registry = registry.clone();
        let before_scrape = before_scrape.clone();
        async move {
            before_scrape();
            let mut body = Vec::new();
            match TextEncoder::new().encode(&registry.gather(), &mut body) {
                Ok(()) => (
                    StatusCode::OK,
                    [("content-type", "text/plain; version=0.0.4")],
                    body,
                ),
                Err(error) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "text/plain")],
                    format!("encoding metrics failed: {error}").into_bytes(),
                ),
            }
        }
    };
    let ready = move || {
        let readiness = readiness.clone();
        async move {
            match readiness() {
                Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                Err(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                ),
            }
        }
    };
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "live\n" }))
        .route("/readyz", get(ready));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `address` (empty: no endpoint) and serves `/metrics`, `/livez` and `/readyz` on it
/// in the background; the task lives until aborted.
pub async fn start_http(
    address: &str,
    registry: Registry,
    readiness: Readiness,
    before_scrape: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    if address.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!("cannot listen on {address} for metrics: {error}"),
            )
        })?;
    tracing::info!(%address, "metrics and health endpoint serving");
    Ok(Some(tokio::spawn(serve_http(
        listener,
        registry,
        readiness,
        before_scrape,
        std::future::pending(),
    ))))
}
