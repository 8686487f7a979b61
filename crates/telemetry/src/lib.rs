//! Telemetry shared by every Cairn binary: logs (human or JSON, level per module), Prometheus
//! metrics, the HTTP endpoints operators and Kubernetes probe (`/metrics`, `/livez`,
//! `/readyz`), and a gRPC layer that counts and times every request.
//!
//! It knows nothing about shards or Raft: each binary registers its own metrics here.

mod grpc_metrics;
mod http;
mod logging;

pub use grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};
pub use http::{serve_http, HttpConfig, Readiness};
pub use logging::{init_logging, LogConfig, LogFormat};
pub use prometheus;
