//! An OTLP/gRPC trace receiver for tests and local runs: keeps every span in memory and renders
//! a trace as an indented tree. `cargo run -p cairn-test-harness --example otlp_receiver` runs
//! it as a stand-alone collector that prints each trace.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One span as the receiver got it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    /// `service.instance.id`: which process (its address).
    pub instance: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub duration_us: u64,
    /// Start, in nanoseconds since the Unix epoch (orders siblings in the tree).
    pub start_ns: u64,
}

/// An OTLP/gRPC trace receiver keeping every span in memory.
#[derive(Clone, Default)]
pub struct Receiver {
    pub spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = |key: &str| {
                resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == key)
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| any_value_text(&v.value))
                    .unwrap_or_default()
            };
            let (service, instance) = (resource("service.name"), resource("service.instance.id"));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        instance: instance.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let value = kv.value.as_ref().map(|v| any_value_text(&v.value));
                                (kv.key.clone(), value.unwrap_or_default())
                            })
                            .collect(),
                        start_ns: span.start_time_unix_nano,
                        duration_us: span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano)
                            / 1_000,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn any_value_text(value: &Option<Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Serves a receiver on `address` (`ip:port`, port 0 for any); returns it and its endpoint URL.
pub async fn start_receiver(address: &str) -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {address}: {e}"));
    let address = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (receiver, format!("http://{address}"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace as an indented tree (parents before children); `root_parent` is the
/// parent id of the top spans (empty for a trace's root).
pub fn render_tree(spans: &[ReceivedSpan], root_parent: &[u8]) -> String {
    let mut children: HashMap<Vec<u8>, Vec<&ReceivedSpan>> = HashMap::new();
    for span in spans {
        children
            .entry(span.parent_span_id.clone())
            .or_default()
            .push(span);
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Vec<u8>, Vec<&ReceivedSpan>>,
        parent: &[u8],
        depth: usize,
    ) {
        let Some(list) = children.get(parent) else {
            return;
        };
        let mut list = list.clone();
        list.sort_by_key(|span| span.start_ns);
        for span in list {
            let detail: Vec<String> = ["shard", "peer", "node", "index"]
                .iter()
                .filter_map(|key| span.attributes.get(*key).map(|v| format!("{key}={v}")))
                .collect();
            let process = if span.instance.is_empty() {
                span.service.clone()
            } else {
                format!("{} {}", span.service, span.instance)
            };
            out.push_str(&format!(
                "{}{} [{}] {}us {}\n",
                "  ".repeat(depth),
                span.name,
                process,
                span.duration_us,
                detail.join(" ")
            ));
            walk(out, children, &span.span_id, depth + 1);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, root_parent, 0);
    out
}
