//! The gateway's side of the batch stream (`ShardKv/Batch`, TiKV's BatchCommands): one
//! long-lived stream per storage node carries every Put, Get, Delete and Txn the gateway
//! sends that node, many per message, and brings results back as the node finishes them.
//!
//! A caller hands its op to the node's [`NodeStream`] and waits for its result. One task per
//! node (the driver) takes every op that has queued up, gives each an id, sends them as one
//! message, and matches results to callers by id. Batching is opportunistic, like group
//! commit: a lone request goes out alone and at once; under load, whatever queued while the
//! driver was busy goes out together.
//!
//! Failure: when the stream breaks or the node ends it (it does when shutting down), every
//! op still waiting gets `UNAVAILABLE`, which the router retries (writes carry write ids, so
//! that is safe); the next op opens a new stream. Bounds: [`QUEUE_MAX`] ops may wait for the
//! driver, [`PENDING_MAX`] may wait for their results, a message carries at most
//! [`ITEMS_PER_MESSAGE_MAX`] ops or about [`MESSAGE_BYTES_TARGET`] bytes, and opening a
//! stream may take [`OPEN_TIMEOUT`].

use crate::router::NodeKvClient;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_op::Op;
use cairn_trace_context::TraceParent;
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

/// Ops that may wait for the driver; callers beyond it wait for room.
pub const QUEUE_MAX: usize = 4096;
/// Ops sent and not yet answered, per node; the driver stops taking ops while at it.
pub const PENDING_MAX: usize = 4096;
/// Most ops in one message (the node refuses more than 1024).
pub const ITEMS_PER_MESSAGE_MAX: usize = 256;
/// A message is sent once its ops reach this size (one op may be larger).
pub const MESSAGE_BYTES_TARGET: usize = 1 << 20;
/// Longest opening a stream to a node may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the driver looks for ops unanswered past their deadline (the node answers every
/// op by its deadline, so this only matters if a node stops answering).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Counters an operator graphs: ops and messages sent (their ratio is the batch size) and
/// streams opened (more than one per node means reconnects).
#[derive(Debug, Default)]
pub struct StreamStats {
    pub ops: AtomicU64,
    pub messages: AtomicU64,
    pub streams_opened: AtomicU64,
}

type Reply = oneshot::Sender<Result<ItemResult, Status>>;

struct Queued {
    op: Op,
    deadline: Instant,
    traceparent: Option<TraceParent>,
    reply: Reply,
}

/// Handle to one node's stream driver. Cheap to clone; the driver ends when every handle is
/// gone.
#[derive(Clone)]
pub struct NodeStream {
    queue: mpsc::Sender<Queued>,
}

impl NodeStream {
    /// Starts the driver for the node `client` talks to.
    pub fn start(address: String, client: NodeKvClient, stats: Arc<StreamStats>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(Driver::new(address, client, stats).run(receiver));
        Self { queue }
    }

    /// Sends `op` to the node and waits for its result, or until `deadline` (the caller
    /// normally gives up first: this is the backstop).
    pub async fn call(&self, op: Op, deadline: Instant) -> Result<ItemResult, Status> {
        let (reply, result) = oneshot::channel();
        let queued = Queued {
            op,
            deadline,
            traceparent: TraceParent::current(),
            reply,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome = tokio::time::timeout(wait, async {
            self.queue
                .send(queued)
                .await
                .map_err(|_| Status::unavailable("the gateway's stream to the node has stopped"))?;
            result.await.map_err(|_| {
                Status::unavailable("the stream to the node ended before the request's answer")
            })?
        })
        .await;
        outcome
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer from the node in time")))
    }
}

struct Waiting {
    reply: Reply,
    deadline: Instant,
}

struct Open {
    // Unbounded so that the driver never waits to send while results wait to be read (the
    // node stops reading when it is full, and would wait for us): what it holds is bounded
    // by PENDING_MAX, since every message in it carries at least one pending op.
    outbound: mpsc::UnboundedSender<node_pb::BatchRequest>,
    inbound: tonic::Streaming<node_pb::BatchResponse>,
}

struct Driver {
    address: String,
    client: NodeKvClient,
    stats: Arc<StreamStats>,
    pending: HashMap<u64, Waiting>,
    next_id: u64,
    stream: Option<Open>,
}

impl Driver {
    fn new(address: String, client: NodeKvClient, stats: Arc<StreamStats>) -> Self {
        Self {
            address,
            client,
            stats,
            pending: HashMap::new(),
            next_id: 0,
            stream: None,
        }
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        let mut taken = Vec::with_capacity(ITEMS_PER_MESSAGE_MAX);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                response = next_response(&mut self.stream) => match response {
                    Ok(Some(response)) => self.answer(response),
                    Ok(None) => self.reset(Status::unavailable(format!(
                        "node {} ended the request stream (shutting down?)", self.address
                    ))),
                    Err(status) => self.reset(Status::unavailable(format!(
                        "request stream to node {} broke: {}", self.address, status.message()
                    ))),
                },
                received = queue.recv_many(&mut taken, ITEMS_PER_MESSAGE_MAX),
                    if self.pending.len() < PENDING_MAX =>
                {
                    if received == 0 {
                        return; // Every handle is gone.
                    }
                    self.send(&mut taken).await;
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    /// Sends the taken ops, opening a stream first if there is none.
    async fn send(&mut self, taken: &mut Vec<Queued>) {
        if self.stream.is_none() {
            match self.open().await {
                Ok(open) => self.stream = Some(open),
                Err(status) => {
                    for queued in taken.drain(..) {
                        let _ = queued.reply.send(Err(status.clone()));
                    }
                    return;
                }
            }
        }
        let now = Instant::now();
        let mut message = node_pb::BatchRequest::default();
        let mut bytes = 0;
        let mut messages = Vec::new();
        for queued in taken.drain(..) {
            if queued.reply.is_closed() {
                continue; // The caller gave up while it queued.
            }
            let id = self.next_id;
            self.next_id += 1;
            let item = node_pb::BatchItem {
                id,
                op: Some(node_pb::ShardOp {
                    op: Some(queued.op),
                }),
                // Rounded up, so that the node never gives up before the caller does.
                timeout_ms: (queued.deadline.saturating_duration_since(now).as_micros() as u64)
                    .div_ceil(1000)
                    .max(1),
                traceparent: queued
                    .traceparent
                    .map(|parent| parent.to_string())
                    .unwrap_or_default(),
            };
            bytes += item.encoded_len();
            message.items.push(item);
            self.pending.insert(
                id,
                Waiting {
                    reply: queued.reply,
                    deadline: queued.deadline,
                },
            );
            if bytes >= MESSAGE_BYTES_TARGET {
                messages.push(std::mem::take(&mut message));
                bytes = 0;
            }
        }
        if !message.items.is_empty() {
            messages.push(message);
        }
        let Some(open) = &self.stream else { return };
        for message in messages {
            let ops = message.items.len() as u64;
            if open.outbound.send(message).is_err() {
                self.reset(Status::unavailable(format!(
                    "request stream to node {} closed",
                    self.address
                )));
                return;
            }
            self.stats.ops.fetch_add(ops, Relaxed);
            self.stats.messages.fetch_add(1, Relaxed);
        }
    }

    async fn open(&mut self) -> Result<Open, Status> {
        let (outbound, receiver) = mpsc::unbounded_channel();
        let call = self
            .client
            .batch(tokio_stream::wrappers::UnboundedReceiverStream::new(
                receiver,
            ));
        let response = tokio::time::timeout(OPEN_TIMEOUT, call)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "opening a request stream to node {} timed out",
                    self.address
                ))
            })?
            .map_err(|status| {
                // Keep the node's code (e.g. UNAVAILABLE when it is down): the router decides.
                Status::new(
                    retriable(status.code()),
                    format!(
                        "opening a request stream to node {}: {}",
                        self.address,
                        status.message()
                    ),
                )
            })?;
        self.stats.streams_opened.fetch_add(1, Relaxed);
        tracing::debug!(node = %self.address, "request stream opened");
        Ok(Open {
            outbound,
            inbound: response.into_inner(),
        })
    }

    fn answer(&mut self, response: node_pb::BatchResponse) {
        for result in response.results {
            let Some(waiting) = self.pending.remove(&result.id) else {
                continue; // Not one we are waiting for (a node answering twice): ignore it.
            };
            let outcome = match result.result {
                Some(ItemResult::Error(error)) => Err(Status::with_details(
                    Code::from_i32(error.code),
                    error.message,
                    error.details.into(),
                )),
                Some(result) => Ok(result),
                None => Err(Status::internal(format!(
                    "node {} sent a result with nothing in it",
                    self.address
                ))),
            };
            let _ = waiting.reply.send(outcome);
        }
    }

    /// Fails every op waiting on the stream and drops it; the next op opens a new one.
    fn reset(&mut self, status: Status) {
        if !self.pending.is_empty() {
            tracing::info!(node = %self.address, waiting = self.pending.len(), reason = %status.message(), "request stream to node lost; the router retries its requests");
        }
        for (_, waiting) in self.pending.drain() {
            let _ = waiting.reply.send(Err(status.clone()));
        }
        self.stream = None;
    }

    /// The node answers every op by its deadline (it enforces it), so an op unanswered a
    /// sweep past it means the node stopped reading or answering the stream: drop the
    /// stream and fail what it carries. (Ops whose callers gave up stay until answered or
    /// overdue: they are how a silent stream is noticed.)
    fn sweep(&mut self) {
        let now = Instant::now();
        let overdue = self
            .pending
            .values()
            .any(|waiting| now >= waiting.deadline + SWEEP_INTERVAL);
        if overdue {
            tracing::warn!(node = %self.address, waiting = self.pending.len(), "node left requests unanswered past their deadline; reopening the request stream");
            self.reset(Status::unavailable(format!(
                "node {} stopped answering the request stream",
                self.address
            )));
        }
    }
}

/// A failed open is worth retrying elsewhere unless the node refused the call itself.
fn retriable(code: Code) -> Code {
    match code {
        Code::Unimplemented | Code::InvalidArgument | Code::PermissionDenied => code,
        _ => Code::Unavailable,
    }
}

async fn next_response(
    stream: &mut Option<Open>,
) -> Result<Option<node_pb::BatchResponse>, Status> {
    match stream {
        Some(open) => open.inbound.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::kv::v1 as pb;
    use cairn_proto::node::v1::shard_kv_server::{ShardKv, ShardKvServer};
    use std::sync::Mutex;
    use tonic::{Request, Response, Streaming};

    /// How the fake node treats one stream, in the order streams are opened.
    #[derive(Clone, Copy, Debug)]
    enum Behaviour {
        /// Answers every item (revision = the put's key as a number), each message's results
        /// in reverse order.
        Answer,
        /// Ends the stream when the first message comes, answering nothing.
        End,
        /// Reads items and never answers.
        Silent,
    }

    #[derive(Clone)]
    struct FakeNode {
        behaviours: Arc<Mutex<Vec<Behaviour>>>,
    }

    fn not_used<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("the fake node only serves Batch"))
    }

    #[tonic::async_trait]
    impl ShardKv for FakeNode {
        type BatchStream =
            tokio_stream::wrappers::ReceiverStream<Result<node_pb::BatchResponse, Status>>;
        async fn put(
            &self,
            _: Request<node_pb::ShardPutRequest>,
        ) -> Result<Response<pb::PutResponse>, Status> {
            not_used()
        }
        async fn get(
            &self,
            _: Request<node_pb::ShardGetRequest>,
        ) -> Result<Response<pb::GetResponse>, Status> {
            not_used()
        }
        async fn delete(
            &self,
            _: Request<node_pb::ShardDeleteRequest>,
        ) -> Result<Response<pb::DeleteResponse>, Status> {
            not_used()
        }
        async fn range(
            &self,
            _: Request<node_pb::ShardRangeRequest>,
        ) -> Result<Response<pb::RangeResponse>, Status> {
            not_used()
        }
        async fn txn(
            &self,
            _: Request<node_pb::ShardTxnRequest>,
        ) -> Result<Response<pb::TxnResponse>, Status> {
            not_used()
        }
        async fn batch(
            &self,
            request: Request<Streaming<node_pb::BatchRequest>>,
        ) -> Result<Response<Self::BatchStream>, Status> {
            let behaviour = {
                let mut behaviours = self.behaviours.lock().unwrap();
                if behaviours.len() > 1 {
                    behaviours.remove(0)
                } else {
                    behaviours[0]
                }
            };
            let mut inbound = request.into_inner();
            let (out, receiver) = mpsc::channel(16);
            tokio::spawn(async move {
                while let Ok(Some(message)) = inbound.message().await {
                    match behaviour {
                        Behaviour::End => return,
                        Behaviour::Silent => continue,
                        Behaviour::Answer => {}
                    }
                    let results = message
                        .items
                        .into_iter()
                        .rev()
                        .map(|item| {
                            let Some(Op::Put(put)) = item.op.and_then(|op| op.op) else {
                                panic!("the tests send puts only");
                            };
                            let key = put.request.unwrap().key;
                            node_pb::BatchItemResult {
                                id: item.id,
                                result: Some(ItemResult::Put(pb::PutResponse {
                                    revision: String::from_utf8(key).unwrap().parse().unwrap(),
                                    ..Default::default()
                                })),
                            }
                        })
                        .collect();
                    if out
                        .send(Ok(node_pb::BatchResponse { results }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
                receiver,
            )))
        }
    }

    async fn start_fake(behaviours: Vec<Behaviour>) -> (NodeStream, Arc<StreamStats>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let fake = FakeNode {
            behaviours: Arc::new(Mutex::new(behaviours)),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ShardKvServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let client = cairn_proto::node::v1::shard_kv_client::ShardKvClient::with_interceptor(
            channel,
            cairn_trace_context::InjectTraceContext,
        );
        let stats = Arc::new(StreamStats::default());
        (NodeStream::start(address, client, stats.clone()), stats)
    }

    fn put(key: u64) -> Op {
        Op::Put(node_pb::ShardPutRequest {
            target: None,
            request: Some(pb::PutRequest {
                key: key.to_string().into_bytes(),
                ..Default::default()
            }),
        })
    }

    fn revision(result: Result<ItemResult, Status>) -> u64 {
        match result {
            Ok(ItemResult::Put(put)) => put.revision,
            other => panic!("expected a put result, got {other:?}"),
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_its_own_result_in_whatever_order_the_node_answers() {
        let (stream, stats) = start_fake(vec![Behaviour::Answer]).await;
        let calls = (1..=200u64).map(|key| {
            let stream = stream.clone();
            tokio::spawn(async move { (key, stream.call(put(key), soon()).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (key, result) = call.unwrap();
            assert_eq!(revision(result), key);
        }
        assert_eq!(stats.ops.load(Relaxed), 200);
        assert_eq!(
            stats.streams_opened.load(Relaxed),
            1,
            "one stream carries them all"
        );
        let messages = stats.messages.load(Relaxed);
        assert!((1..=200).contains(&messages), "{messages} messages");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_stream_fails_its_ops_as_unavailable_and_the_next_op_opens_another() {
        let (stream, stats) = start_fake(vec![Behaviour::End, Behaviour::Answer]).await;
        let failed = stream.call(put(1), soon()).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable, "{failed}");
        assert_eq!(revision(stream.call(put(2), soon()).await), 2);
        assert_eq!(stats.streams_opened.load(Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_stops_answering_loses_its_stream_after_the_deadline() {
        let (stream, stats) = start_fake(vec![Behaviour::Silent, Behaviour::Answer]).await;
        let deadline = Instant::now() + Duration::from_millis(200);
        let timed_out = stream.call(put(1), deadline).await.unwrap_err();
        assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out}");
        // A sweep after the deadline plus one interval drops the silent stream.
        tokio::time::sleep(3 * SWEEP_INTERVAL).await;
        assert_eq!(revision(stream.call(put(2), soon()).await), 2);
        assert_eq!(stats.streams_opened.load(Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_is_down_fails_the_op_as_unavailable() {
        let address = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect_lazy();
        let client = cairn_proto::node::v1::shard_kv_client::ShardKvClient::with_interceptor(
            channel,
            cairn_trace_context::InjectTraceContext,
        );
        let stream = NodeStream::start(address, client, Arc::default());
        let failed = stream.call(put(1), soon()).await.unwrap_err();
        assert_eq!(failed.code(), Code::Unavailable, "{failed}");
    }
}
