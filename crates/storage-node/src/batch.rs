//! The node's side of the batch stream (`ShardKv/Batch`): a gateway sends requests, one or
//! many per message, over one long-lived stream; the node runs each as its own task (exactly
//! as the unary RPC would, same spans, same metrics series) and each task sends its result
//! back as soon as it has it.
//!
//! Why: a unary call costs an HTTP/2 stream of its own — headers, trailers, a flow-control
//! window and a task on each side — which on the gateway → node hop was the largest cost per
//! request after the Raft work itself (docs/benchmarks/README.md).
//!
//! Bounds: at most [`BATCH_ITEMS_MAX`] items per message and [`ITEMS_IN_FLIGHT_MAX`] running
//! per stream (the node stops reading the stream while at the limit, so HTTP/2 flow control
//! pushes back on the gateway); every item has a deadline of at most [`ITEM_TIMEOUT_MAX`].
//! When the node shuts down, the stream stops taking items, gives the running ones up to
//! [`SHUTDOWN_GRACE`] to finish, and ends.

use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_kv_server::ShardKv;
use cairn_proto::node::v1::shard_op::Op;
use cairn_telemetry::GrpcMetrics;
use cairn_trace_context::TraceParent;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Status};
use tracing::Instrument;

/// Most items one `BatchRequest` may carry.
pub const BATCH_ITEMS_MAX: usize = 1024;
/// Most items of one stream running at the same time.
pub const ITEMS_IN_FLIGHT_MAX: usize = 4096;
/// Longest an item may run (also the deadline of an item that names none).
pub const ITEM_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// Longest a stream waits for its running items when the node shuts down: well inside the
/// drain phase of the node's `shutdown_grace_ms` (D42), which starts after the leadership
/// hand-off, so that the items end with an answer rather than a cut connection.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Responses that may wait for HTTP/2 to take them; items wait to send theirs beyond it.
const RESPONSES_QUEUED_MAX: usize = 64;

/// Runs one item the way its unary RPC would run.
pub trait ItemHandler: ShardKv + Clone {}
impl<T: ShardKv + Clone> ItemHandler for T {}

type Out = mpsc::Sender<Result<node_pb::BatchResponse, Status>>;

/// Serves one batch stream until the caller ends it, the node shuts down or the caller is
/// gone. Each item's task sends its own result to `out` as soon as it has it (no hop back
/// through this task); the stream ends when this task and every item task have dropped
/// their senders.
pub async fn serve_stream<H: ItemHandler + Send + Sync + 'static>(
    handler: H,
    metrics: GrpcMetrics,
    mut inbound: tonic::Streaming<node_pb::BatchRequest>,
    out: Out,
    mut stopping: watch::Receiver<bool>,
) {
    // Dropping the set aborts the items still running: when the shutdown grace runs out.
    let mut running = tokio::task::JoinSet::new();
    let mut reading = true;
    let mut grace_ends: Option<tokio::time::Instant> = None;
    loop {
        if !reading && running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stopped(&mut stopping), if grace_ends.is_none() => {
                reading = false;
                grace_ends = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = sleep_until(grace_ends), if grace_ends.is_some() => {
                tracing::warn!(running = running.len(), "node shutting down: ending a batch stream with items still running");
                return;
            }
            message = inbound.message(), if reading && running.len() < ITEMS_IN_FLIGHT_MAX => {
                match message {
                    Ok(Some(batch)) => {
                        if batch.items.len() > BATCH_ITEMS_MAX {
                            let _ = out.send(Err(Status::invalid_argument(format!(
                                "a batch carries at most {BATCH_ITEMS_MAX} items, this one {}",
                                batch.items.len()
                            )))).await;
                            return;
                        }
                        for item in batch.items {
                            let (handler, metrics, out) = (handler.clone(), metrics.clone(), out.clone());
                            running.spawn(async move {
                                let id = item.id;
                                // A bug that panics fails its item, not the stream: the caller
                                // gets INTERNAL now instead of waiting out its deadline.
                                let result = AssertUnwindSafe(run_item(handler, &metrics, item))
                                    .catch_unwind()
                                    .await
                                    .unwrap_or_else(|_| panicked(id));
                                // An error means the caller is gone: nobody to tell.
                                let _ = out
                                    .send(Ok(node_pb::BatchResponse { results: vec![result] }))
                                    .await;
                            });
                        }
                    }
                    // The caller has no more items (or is gone): finish the running ones.
                    Ok(None) | Err(_) => reading = false,
                }
            }
        }
    }
}

fn panicked(id: u64) -> node_pb::BatchItemResult {
    tracing::error!(item = id, "a batch item's handler panicked");
    node_pb::BatchItemResult {
        id,
        result: Some(ItemResult::Error(node_pb::ItemError {
            code: tonic::Code::Internal as i32,
            message: "the node failed while serving this request (a bug: see its log)".into(),
            details: Vec::new(),
        })),
    }
}

/// Resolves once the node is shutting down (never, if nobody can tell it to).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending().await
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The gRPC method an op stands for, as the layer would label its unary call.
fn method_of(op: Option<&Op>) -> &'static str {
    match op {
        Some(Op::Put(_)) => "/cairn.node.v1.ShardKv/Put",
        Some(Op::Get(_)) => "/cairn.node.v1.ShardKv/Get",
        Some(Op::Delete(_)) => "/cairn.node.v1.ShardKv/Delete",
        Some(Op::Txn(_)) => "/cairn.node.v1.ShardKv/Txn",
        None => "other",
    }
}

async fn run_item<H: ItemHandler>(
    handler: H,
    metrics: &GrpcMetrics,
    item: node_pb::BatchItem,
) -> node_pb::BatchItemResult {
    let started = Instant::now();
    let op = item.op.and_then(|op| op.op);
    let method = method_of(op.as_ref());
    // The same span the gRPC layer gives a unary call, continuing the caller's trace.
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    if let Some(parent) = TraceParent::parse(&item.traceparent) {
        parent.adopt(&span);
    }
    let timeout = match item.timeout_ms {
        0 => ITEM_TIMEOUT_MAX,
        ms => Duration::from_millis(ms).min(ITEM_TIMEOUT_MAX),
    };
    let outcome = tokio::time::timeout(timeout, dispatch(&handler, op))
        .instrument(span.clone())
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "the request did not finish within its {} ms",
                timeout.as_millis()
            )))
        });
    let (code, result) = match outcome {
        Ok(result) => (tonic::Code::Ok, result),
        Err(status) => (
            status.code(),
            ItemResult::Error(node_pb::ItemError {
                code: status.code() as i32,
                message: status.message().to_string(),
                details: status.details().to_vec(),
            }),
        ),
    };
    span.record("rpc.grpc.status_code", code as i32);
    metrics.record_call(method, code, started);
    node_pb::BatchItemResult {
        id: item.id,
        result: Some(result),
    }
}

async fn dispatch<H: ItemHandler>(handler: &H, op: Option<Op>) -> Result<ItemResult, Status> {
    Ok(match op {
        Some(Op::Put(request)) => {
            ItemResult::Put(handler.put(Request::new(request)).await?.into_inner())
        }
        Some(Op::Get(request)) => {
            ItemResult::Get(handler.get(Request::new(request)).await?.into_inner())
        }
        Some(Op::Delete(request)) => {
            ItemResult::Delete(handler.delete(Request::new(request)).await?.into_inner())
        }
        Some(Op::Txn(request)) => {
            ItemResult::Txn(handler.txn(Request::new(request)).await?.into_inner())
        }
        None => return Err(crate::error::NodeError::missing("op").into()),
    })
}

/// The stream type of `ShardKv::Batch`.
pub type BatchStream =
    tokio_stream::wrappers::ReceiverStream<Result<node_pb::BatchResponse, Status>>;

/// What the service needs to serve batch streams.
#[derive(Clone)]
pub struct BatchContext {
    pub metrics: GrpcMetrics,
    pub stopping: watch::Receiver<bool>,
}

/// Starts serving `inbound` on its own task and returns the stream of results.
pub fn start<H: ItemHandler + Send + Sync + 'static>(
    handler: H,
    context: &BatchContext,
    inbound: tonic::Streaming<node_pb::BatchRequest>,
) -> BatchStream {
    let (out, receiver) = mpsc::channel(RESPONSES_QUEUED_MAX);
    tokio::spawn(serve_stream(
        handler,
        context.metrics.clone(),
        inbound,
        out,
        context.stopping.clone(),
    ));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::kv::v1 as pb;
    use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
    use cairn_proto::node::v1::shard_kv_server::ShardKvServer;
    use tonic::Response;

    /// A handler whose `Put` panics (a bug) and whose `Get` answers at once.
    #[derive(Clone)]
    struct Faulty {
        context: BatchContext,
    }

    #[tonic::async_trait]
    impl ShardKv for Faulty {
        type BatchStream = BatchStream;
        async fn put(
            &self,
            _: Request<node_pb::ShardPutRequest>,
        ) -> Result<Response<pb::PutResponse>, Status> {
            panic!("a bug in put");
        }
        async fn get(
            &self,
            _: Request<node_pb::ShardGetRequest>,
        ) -> Result<Response<pb::GetResponse>, Status> {
            Ok(Response::new(pb::GetResponse::default()))
        }
        async fn delete(
            &self,
            _: Request<node_pb::ShardDeleteRequest>,
        ) -> Result<Response<pb::DeleteResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn range(
            &self,
            _: Request<node_pb::ShardRangeRequest>,
        ) -> Result<Response<pb::RangeResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn txn(
            &self,
            _: Request<node_pb::ShardTxnRequest>,
        ) -> Result<Response<pb::TxnResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn prewrite(
            &self,
            _: Request<node_pb::PrewriteRequest>,
        ) -> Result<Response<node_pb::PrewriteResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn commit(
            &self,
            _: Request<node_pb::CommitRequest>,
        ) -> Result<Response<node_pb::CommitResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn rollback(
            &self,
            _: Request<node_pb::RollbackRequest>,
        ) -> Result<Response<node_pb::RollbackResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn check_txn_status(
            &self,
            _: Request<node_pb::CheckTxnStatusRequest>,
        ) -> Result<Response<node_pb::CheckTxnStatusResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn resolve_locks(
            &self,
            _: Request<node_pb::ResolveLocksRequest>,
        ) -> Result<Response<node_pb::ResolveLocksResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn scan_locks(
            &self,
            _: Request<node_pb::ScanLocksRequest>,
        ) -> Result<Response<node_pb::ScanLocksResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn batch(
            &self,
            request: Request<tonic::Streaming<node_pb::BatchRequest>>,
        ) -> Result<Response<Self::BatchStream>, Status> {
            Ok(Response::new(start(
                self.clone(),
                &self.context,
                request.into_inner(),
            )))
        }
    }

    fn item(id: u64, op: Op) -> node_pb::BatchItem {
        node_pb::BatchItem {
            id,
            op: Some(node_pb::ShardOp { op: Some(op) }),
            timeout_ms: 5_000,
            traceparent: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_item_fails_alone_and_the_stream_goes_on() {
        let registry = cairn_telemetry::prometheus::Registry::new();
        let (_stop, stopping) = watch::channel(false);
        let handler = Faulty {
            context: BatchContext {
                metrics: GrpcMetrics::new(&registry).unwrap(),
                stopping,
            },
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ShardKvServer::new(handler))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = ShardKvClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut results = client
            .batch(tokio_stream::wrappers::UnboundedReceiverStream::new(
                receiver,
            ))
            .await
            .unwrap()
            .into_inner();
        let get = || Op::Get(node_pb::ShardGetRequest::default());
        sender
            .send(node_pb::BatchRequest {
                items: vec![
                    item(1, Op::Put(node_pb::ShardPutRequest::default())),
                    item(2, get()),
                ],
            })
            .unwrap();
        let mut answered = std::collections::HashMap::new();
        while answered.len() < 2 {
            let response = tokio::time::timeout(Duration::from_secs(5), results.message())
                .await
                .expect("answers within 5 s")
                .unwrap()
                .expect("the stream stays open");
            for result in response.results {
                answered.insert(result.id, result.result.unwrap());
            }
        }
        match &answered[&1] {
            ItemResult::Error(error) => assert_eq!(error.code, tonic::Code::Internal as i32),
            other => panic!("the panicking put must fail with INTERNAL, got {other:?}"),
        }
        assert!(matches!(answered[&2], ItemResult::Get(_)));

        sender
            .send(node_pb::BatchRequest {
                items: vec![item(3, get())],
            })
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), results.message())
            .await
            .expect("an answer within 5 s")
            .unwrap()
            .expect("the stream is still open");
        assert_eq!(response.results[0].id, 3);
    }
}
