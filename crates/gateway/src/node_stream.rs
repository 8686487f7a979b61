//! The gateway's side of the batch stream (`ShardKv/Batch`, TiKV's BatchCommands): one
//! long-lived stream per storage node carries every Put, Get, Delete and Txn the gateway
//! sends that node, and brings results back as the node finishes them.
//!
//! A caller hands its op to the node's [`NodeStream`] and waits for its result. While a stream
//! is open and has room, the caller sends its op itself, as a message of one item: no task
//! hop on the way out, so a lone request is no slower than a unary call. Otherwise (no stream
//! yet, or too many ops waiting) it queues for the node's driver task, which opens the stream
//! and sends what queued, many per message. The driver also reads the results and hands each
//! to its caller by id. Messages that queue up together still leave in one socket write:
//! HTTP/2 writes every frame it holds at once.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

/// Ops that may wait for the driver (while no stream is open); callers beyond it wait.
pub const QUEUE_MAX: usize = 4096;
/// Ops sent and not yet answered, per node; beyond it, callers queue for the driver, which
/// takes no more ops until answers come.
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

struct Waiting {
    reply: Reply,
    deadline: Instant,
}

/// What callers and the driver share: the open stream's sender and the ops waiting on it.
/// One lock, held for a map insert or remove and a channel send, never across an await.
struct State {
    // Unbounded so that nobody ever waits to send while results wait to be read (the node
    // stops reading when it is full, and would wait for us): what it holds is bounded by
    // PENDING_MAX, since every message in it carries at least one pending op.
    outbound: Option<mpsc::UnboundedSender<node_pb::BatchRequest>>,
    pending: HashMap<u64, Waiting>,
    next_id: u64,
}

struct Shared {
    address: String,
    stats: Arc<StreamStats>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("node stream state poisoned")
    }

    /// Makes the item for `queued` and records it as waiting. Called with the state locked.
    fn enlist(state: &mut State, queued: Queued, now: Instant) -> node_pb::BatchItem {
        let id = state.next_id;
        state.next_id += 1;
        state.pending.insert(
            id,
            Waiting {
                reply: queued.reply,
                deadline: queued.deadline,
            },
        );
        node_pb::BatchItem {
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
        }
    }

    /// The fast path: when a stream is open and has room, the caller sends its op itself, as
    /// a message of one, without waking the driver. Gives the op back (for the driver)
    /// otherwise.
    fn send_direct(&self, queued: Queued) -> Option<Queued> {
        let mut state = self.state();
        let Some(outbound) = state.outbound.clone() else {
            return Some(queued);
        };
        if state.pending.len() >= PENDING_MAX {
            return Some(queued);
        }
        let item = Self::enlist(&mut state, queued, Instant::now());
        let id = item.id;
        match outbound.send(node_pb::BatchRequest { items: vec![item] }) {
            Ok(()) => {
                self.stats.ops.fetch_add(1, Relaxed);
                self.stats.messages.fetch_add(1, Relaxed);
                None
            }
            Err(mpsc::error::SendError(message)) => {
                // The stream is closing; the driver will notice and open another.
                let waiting = state.pending.remove(&id).expect("enlisted just now");
                let item = message.items.into_iter().next().expect("one item");
                Some(Queued {
                    op: item.op.and_then(|op| op.op).expect("enlisted with an op"),
                    deadline: waiting.deadline,
                    traceparent: TraceParent::parse(&item.traceparent),
                    reply: waiting.reply,
                })
            }
        }
    }

    /// Fails every op waiting on the stream and forgets the stream; the next op opens a new
    /// one.
    fn reset(&self, status: Status) {
        let pending = {
            let mut state = self.state();
            state.outbound = None;
            std::mem::take(&mut state.pending)
        };
        if !pending.is_empty() {
            tracing::info!(node = %self.address, waiting = pending.len(), reason = %status.message(), "request stream to node lost; the router retries its requests");
        }
        for (_, waiting) in pending {
            let _ = waiting.reply.send(Err(status.clone()));
        }
    }
}

/// Handle to one node's stream. Cheap to clone; the driver ends when every handle is gone.
#[derive(Clone)]
pub struct NodeStream {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Queued>,
}

impl NodeStream {
    /// Starts the driver for the node `client` talks to.
    pub fn start(address: String, client: NodeKvClient, stats: Arc<StreamStats>) -> Self {
        let shared = Arc::new(Shared {
            address,
            stats,
            state: Mutex::new(State {
                outbound: None,
                pending: HashMap::new(),
                next_id: 0,
            }),
        });
        let (queue, receiver) = mpsc::channel(QUEUE_MAX);
        let driver = Driver {
            shared: shared.clone(),
            client,
            inbound: None,
        };
        tokio::spawn(driver.run(receiver));
        Self { shared, queue }
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
            if let Some(queued) = self.shared.send_direct(queued) {
                self.queue.send(queued).await.map_err(|_| {
                    Status::unavailable("the gateway's stream to the node has stopped")
                })?;
            }
            result.await.map_err(|_| {
                Status::unavailable("the stream to the node ended before the request's answer")
            })?
        })
        .await;
        outcome
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer from the node in time")))
    }
}

/// Opens streams, sends what callers could not send themselves, reads results and hands
/// them to their callers, and watches for a stream the node stopped answering.
struct Driver {
    shared: Arc<Shared>,
    client: NodeKvClient,
    inbound: Option<tonic::Streaming<node_pb::BatchResponse>>,
}

impl Driver {
    async fn run(mut self, mut queue: mpsc::Receiver<Queued>) {
        let mut taken = Vec::with_capacity(ITEMS_PER_MESSAGE_MAX);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let has_room = self.shared.state().pending.len() < PENDING_MAX;
            tokio::select! {
                biased;
                response = next_response(&mut self.inbound) => match response {
                    Ok(Some(response)) => self.answer(response),
                    Ok(None) => self.reset(Status::unavailable(format!(
                        "node {} ended the request stream (shutting down?)", self.shared.address
                    ))),
                    Err(status) => self.reset(Status::unavailable(format!(
                        "request stream to node {} broke: {}", self.shared.address, status.message()
                    ))),
                },
                received = queue.recv_many(&mut taken, ITEMS_PER_MESSAGE_MAX), if has_room => {
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
        let open = self.shared.state().outbound.is_some() && self.inbound.is_some();
        if !open {
            match self.open().await {
                Ok((outbound, inbound)) => {
                    self.shared.state().outbound = Some(outbound);
                    self.inbound = Some(inbound);
                }
                Err(status) => {
                    for queued in taken.drain(..) {
                        let _ = queued.reply.send(Err(status.clone()));
                    }
                    return;
                }
            }
        }
        let sent = {
            let mut state = self.shared.state();
            let now = Instant::now();
            let mut message = node_pb::BatchRequest::default();
            let mut bytes = 0;
            let mut messages = Vec::new();
            for queued in taken.drain(..) {
                if queued.reply.is_closed() {
                    continue; // The caller gave up while it queued.
                }
                let item = Shared::enlist(&mut state, queued, now);
                bytes += item.encoded_len();
                message.items.push(item);
                if bytes >= MESSAGE_BYTES_TARGET {
                    messages.push(std::mem::take(&mut message));
                    bytes = 0;
                }
            }
            if !message.items.is_empty() {
                messages.push(message);
            }
            let outbound = state.outbound.clone().expect("opened above");
            messages.into_iter().try_for_each(|message| {
                let ops = message.items.len() as u64;
                outbound.send(message).map_err(|_| ())?;
                self.shared.stats.ops.fetch_add(ops, Relaxed);
                self.shared.stats.messages.fetch_add(1, Relaxed);
                Ok::<_, ()>(())
            })
        };
        if sent.is_err() {
            self.reset(Status::unavailable(format!(
                "request stream to node {} closed",
                self.shared.address
            )));
        }
    }

    async fn open(
        &mut self,
    ) -> Result<
        (
            mpsc::UnboundedSender<node_pb::BatchRequest>,
            tonic::Streaming<node_pb::BatchResponse>,
        ),
        Status,
    > {
        let address = &self.shared.address;
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
                    "opening a request stream to node {address} timed out"
                ))
            })?
            .map_err(|status| {
                // Keep the node's code (e.g. UNAVAILABLE when it is down): the router decides.
                Status::new(
                    retriable(status.code()),
                    format!(
                        "opening a request stream to node {address}: {}",
                        status.message()
                    ),
                )
            })?;
        self.shared.stats.streams_opened.fetch_add(1, Relaxed);
        tracing::debug!(node = %address, "request stream opened");
        Ok((outbound, response.into_inner()))
    }

    fn answer(&mut self, response: node_pb::BatchResponse) {
        let mut answered = Vec::with_capacity(response.results.len());
        {
            let mut state = self.shared.state();
            for result in response.results {
                // Not one we are waiting for (a node answering twice): ignore it.
                if let Some(waiting) = state.pending.remove(&result.id) {
                    answered.push((waiting.reply, result.result));
                }
            }
        }
        for (reply, result) in answered {
            let outcome = match result {
                Some(ItemResult::Error(error)) => Err(Status::with_details(
                    Code::from_i32(error.code),
                    error.message,
                    error.details.into(),
                )),
                Some(result) => Ok(result),
                None => Err(Status::internal(format!(
                    "node {} sent a result with nothing in it",
                    self.shared.address
                ))),
            };
            let _ = reply.send(outcome);
        }
    }

    fn reset(&mut self, status: Status) {
        self.inbound = None;
        self.shared.reset(status);
    }

    /// The node answers every op by its deadline (it enforces it), so an op unanswered a
    /// sweep past it means the node stopped reading or answering the stream: drop the
    /// stream and fail what it carries. (Ops whose callers gave up stay until answered or
    /// overdue: they are how a silent stream is noticed.)
    fn sweep(&mut self) {
        let now = Instant::now();
        let (overdue, waiting) = {
            let state = self.shared.state();
            let overdue = state
                .pending
                .values()
                .any(|waiting| now >= waiting.deadline + SWEEP_INTERVAL);
            (overdue, state.pending.len())
        };
        if overdue {
            tracing::warn!(node = %self.shared.address, waiting, "node left requests unanswered past their deadline; reopening the request stream");
            self.reset(Status::unavailable(format!(
                "node {} stopped answering the request stream",
                self.shared.address
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
    inbound: &mut Option<tonic::Streaming<node_pb::BatchResponse>>,
) -> Result<Option<node_pb::BatchResponse>, Status> {
    match inbound {
        Some(inbound) => inbound.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "node_stream_tests.rs"]
mod tests;
