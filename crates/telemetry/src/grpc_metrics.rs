//! A tower layer for tonic servers: counts every gRPC request by method and status code, times
//! it, and runs it inside a `grpc.request` span that continues the caller's trace (W3C
//! `traceparent` header). The method label is the gRPC path of a Cairn service (anything else
//! counts as `other`, so a client cannot blow up the label set).

use pin_project_lite::pin_project;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct GrpcMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl GrpcMetrics {
    /// Registers `cairn_grpc_requests_total{method,code}` and
    /// `cairn_grpc_request_duration_seconds{method}` in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "cairn_grpc_requests_total",
                "gRPC requests served, by method and status code",
            ),
            &["method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cairn_grpc_request_duration_seconds",
                "Time to serve a gRPC request, in seconds",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }

    /// Counts and times one call that did not come through the layer: an item of a batch
    /// stream is counted under the method it stands for (`/cairn.node.v1.ShardKv/Put`), so
    /// dashboards see the same series whether or not the caller batches.
    pub fn record_call(&self, method: &str, code: tonic::Code, started: Instant) {
        self.record(method, &(code as i32).to_string(), started);
    }

    fn record(&self, method: &str, code: &str, started: Instant) {
        self.requests.with_label_values(&[method, code]).inc();
        self.duration
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: self.clone(),
        }
    }
}

fn method_label(path: &str) -> String {
    if path.len() <= 96 && (path.starts_with("/cairn.") || path.starts_with("/grpc.health.")) {
        path.to_string()
    } else {
        "other".to_string()
    }
}

/// Internal, periodic RPCs (see `call`).
fn is_background(method: &str) -> bool {
    method.starts_with("/cairn.raft.v1.")
        // A batch stream carries many requests, each continuing its own trace.
        || method == "/cairn.node.v1.ShardKv/Batch"
        || method.starts_with("/grpc.health.")
        || method == "/cairn.coordinator.v1.Coordinator/Heartbeat"
}

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, ResponseBody> Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let parent = cairn_trace_context::extract(request.headers());
        let span = if parent.is_none() && is_background(&method) {
            // Raft heartbeats, node heartbeats and health probes are many and routine: they
            // join a trace that reaches them, and otherwise get no span at all. Other internal
            // calls get a span (their log lines name the method), which the sampler keeps out
            // of traces unless the caller sent its context (`tracing_export::starts_trace`).
            tracing::Span::none()
        } else {
            tracing::info_span!(
            "grpc.request",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        };
        if let Some(parent) = parent {
            parent.adopt(&span);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture {
            inner,
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
            span,
        }
    }
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        method: String,
        started: Instant,
        metrics: GrpcMetrics,
        span: tracing::Span,
    }
}

impl<F, ResponseBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<ResponseBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        // Errors of unary calls come as trailers-only responses (status in the headers);
        // a missing status means OK (it follows in the trailers).
        let code = match &result {
            Ok(response) => response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0")
                .to_string(),
            Err(_) => "transport".to_string(),
        };
        this.span.record("rpc.grpc.status_code", code.as_str());
        this.metrics.record(this.method, &code, *this.started);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_do_not_become_labels() {
        assert_eq!(method_label("/cairn.kv.v1.KV/Put"), "/cairn.kv.v1.KV/Put");
        assert_eq!(method_label("/evil/random-1234"), "other");
    }

    #[test]
    fn recorded_requests_show_up_in_the_registry() {
        let registry = Registry::new();
        let metrics = GrpcMetrics::new(&registry).unwrap();
        metrics.record("/cairn.kv.v1.KV/Put", "0", Instant::now());
        metrics.record("/cairn.kv.v1.KV/Put", "3", Instant::now());
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#"cairn_grpc_requests_total{code="3",method="/cairn.kv.v1.KV/Put"} 1"#),
            "{text}"
        );
        assert!(text.contains("cairn_grpc_request_duration_seconds_count"));
    }
}
