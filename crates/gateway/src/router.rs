//! Sends one request to the right replica of a shard, and retries safely: on not-leader it
//! follows the hint, on a stale epoch or unknown shard it refreshes the shard map, on an
//! unavailable node or unknown outcome it backs off and tries again. Writes always carry a
//! write id, so a retry never applies a write twice. Attempts and time are bounded.

use crate::error::GatewayError;
use crate::node_stream::{NodeStream, StreamStats};
use crate::routing::{NodeAt, ShardMaps};
use cairn_proto::addressing::Destination;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use cairn_proto::node::v1::shard_op::Op;
use cairn_proto::retry::{classify, Backoff, Cause, Idempotency};
use cairn_types::ShardId;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

/// A storage node's shard KV client; every call carries the caller's trace context and names
/// the node it is meant for (D35).
pub type NodeKvClient = ShardKvClient<InterceptedService<Channel, NodeCall>>;

/// What every call to a node carries: the trace context, and its destination.
#[derive(Clone, Debug, Default)]
pub struct NodeCall {
    pub destination: Destination,
}

impl tonic::service::Interceptor for NodeCall {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        cairn_trace_context::inject(request.metadata_mut());
        self.destination.stamp(request.metadata_mut());
        Ok(request)
    }
}
use tonic::Status;

/// Longest the gateway waits to open a connection to a storage node.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an HTTP/2 ping goes to a storage node over a connection with calls in flight,
/// so that a node that vanished without closing its connections (a dead host, a cut link) is
/// noticed within about a keep-alive interval plus timeout, instead of when the calls time out.
pub const NODE_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is closed and its calls fail
/// (hyper's default, written out so that both halves of the rule are in one place).
pub const NODE_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which replica a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Leader,
    /// Any voter (serializable reads).
    AnyReplica,
}

/// Counts of retries by cause, for operators.
#[derive(Debug, Default)]
pub struct RetryStats {
    pub not_leader: AtomicU64,
    pub stale_map: AtomicU64,
    pub unavailable: AtomicU64,
}

pub struct Router {
    pub maps: ShardMaps,
    channels: Mutex<HashMap<String, Channel>>,
    /// One batch stream per node (id and address), when `batch_node_requests` is on.
    streams: Mutex<HashMap<NodeAt, NodeStream>>,
    batch_node_requests: bool,
    pub stream_stats: Arc<StreamStats>,
    request_timeout: Duration,
    attempts_max: u32,
    backoff: Backoff,
    pub stats: RetryStats,
    spread: AtomicU64,
    /// Source IP of connections to nodes (unset: the kernel chooses).
    outbound_bind_ip: Option<IpAddr>,
}

impl Router {
    pub fn new(
        maps: ShardMaps,
        request_timeout: Duration,
        attempts_max: u32,
        backoff_min: Duration,
        backoff_max: Duration,
        outbound_bind_ip: Option<IpAddr>,
        batch_node_requests: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            maps,
            channels: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            batch_node_requests,
            stream_stats: Arc::default(),
            request_timeout,
            attempts_max,
            backoff: Backoff::new(backoff_min, backoff_max),
            stats: RetryStats::default(),
            spread: AtomicU64::new(0),
            outbound_bind_ip,
        })
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A client for `node`, naming it and the cluster `cluster_id` in every call.
    fn client(&self, node: &NodeAt, cluster_id: &str) -> Result<NodeKvClient, Status> {
        let address = node.address.as_str();
        let mut channels = self.channels.lock().expect("channel map poisoned");
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|e| Status::internal(format!("bad node address {address:?}: {e}")))?
                    .connect_timeout(NODE_CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(NODE_KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(NODE_KEEP_ALIVE_TIMEOUT);
                let channel = self.maps.tls.connect_lazy(channel, self.outbound_bind_ip);
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        // A batch message may carry a request of the largest size plus its envelope.
        let message_bytes_max =
            (cairn_types::REQUEST_BYTES_MAX_CEILING + cairn_types::BATCH_ENVELOPE_BYTES) as usize;
        let call = NodeCall {
            destination: Destination::new(node.node_id, cluster_id),
        };
        Ok(ShardKvClient::with_interceptor(channel, call)
            .max_decoding_message_size(message_bytes_max)
            .max_encoding_message_size(message_bytes_max))
    }

    /// The batch stream to `node`, started on first use. The stream names the node when it
    /// opens, so it is kept per node id and address.
    fn stream(&self, node: &NodeAt, cluster_id: &str) -> Result<NodeStream, Status> {
        if let Some(stream) = self.streams.lock().expect("stream map poisoned").get(node) {
            return Ok(stream.clone());
        }
        let client = self.client(node, cluster_id)?;
        let mut streams = self.streams.lock().expect("stream map poisoned");
        Ok(streams
            .entry(node.clone())
            .or_insert_with(|| {
                NodeStream::start(node.address.clone(), client, self.stream_stats.clone())
            })
            .clone())
    }

    /// Forgets the stream to a node that is gone from its address.
    fn drop_stream(&self, node: &NodeAt) {
        self.streams
            .lock()
            .expect("stream map poisoned")
            .remove(node);
    }

    /// Sends one op of a shard to the replica `target` names, with the router's retries (see
    /// [`Router::call`]); over the node's batch stream unless `batch_node_requests` is off.
    pub async fn call_op<F>(
        &self,
        shard: ShardId,
        target: Target,
        deadline: Instant,
        mut op: F,
    ) -> Result<ItemResult, GatewayError>
    where
        F: FnMut(node_pb::ShardTarget) -> Op,
    {
        self.attempt_until_done(shard, target, deadline, |node, cluster_id, shard_target| {
            let op = op(shard_target);
            let sent = if self.batch_node_requests {
                self.stream(node, cluster_id)
                    .map(|stream| Sent::Batched(stream, op))
            } else {
                self.client(node, cluster_id)
                    .map(|client| Sent::Unary(client, op))
            };
            async move {
                match sent? {
                    Sent::Batched(stream, op) => stream.call(op, deadline).await,
                    Sent::Unary(client, op) => unary(client, op).await,
                }
            }
        })
        .await
    }

    /// Waits before the next attempt; after the last one there is nothing to wait for.
    async fn pause(&self, attempt: u32, remaining: Duration) {
        if attempt + 1 < self.attempts_max {
            tokio::time::sleep(self.backoff.pause(attempt).min(remaining)).await;
        }
    }

    /// Refreshes the shard map in the background: the next attempt routes by whatever map is
    /// current then.
    fn refresh_in_background(&self) {
        let maps = self.maps.clone();
        tokio::spawn(async move { maps.refresh().await });
    }

    /// Calls `call` on the replica of `shard` that `target` names until it succeeds, fails
    /// for good, or the request's time or attempts run out.
    pub async fn call<T, F, Fut>(
        &self,
        shard: ShardId,
        target: Target,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut(NodeKvClient, node_pb::ShardTarget) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.attempt_until_done(shard, target, deadline, |node, cluster_id, shard_target| {
            let called = self
                .client(node, cluster_id)
                .map(|client| call(client, shard_target));
            async move { Ok(called?.await?.into_inner()) }
        })
        .await
    }

    /// The retry loop of [`Router::call`] and [`Router::call_op`]: `send` sends one try
    /// to the node it is given (naming it and the cluster). What each failure means is
    /// `cairn_proto::retry::classify`'s answer (D46); every request the router sends may be
    /// repeated (reads, and writes with their write id). A node that refuses a call as meant
    /// for another node (D35) is gone from that address: this request never goes there again.
    async fn attempt_until_done<T, F, Fut>(
        &self,
        shard: ShardId,
        target: Target,
        deadline: Instant,
        mut send: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut(&NodeAt, &str, node_pb::ShardTarget) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut hint: Option<NodeAt> = None;
        let mut gone: HashSet<NodeAt> = HashSet::new();
        let mut last = Status::unavailable(format!("{shard}: no attempt made"));
        for attempt in 0..self.attempts_max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(GatewayError::TimedOut {
                    shard,
                    last: last.message().to_string(),
                });
            }
            let Some(table) = self.maps.table(remaining).await else {
                return Err(GatewayError::NoShardMap);
            };
            let route = table.route(shard).cloned().unwrap_or_default();
            // This attempt follows another replica's word on who leads, not the map.
            let redirected = hint.is_some();
            let node = match (hint.take(), target) {
                (Some(node), _) => Some(node),
                (None, Target::Leader) => table.leader_node(shard),
                (None, Target::AnyReplica) => {
                    let pick = self.spread.fetch_add(1, Ordering::Relaxed) as usize;
                    table.replica_node(shard, pick)
                }
            };
            let Some(node) = node.filter(|node| !gone.contains(node)) else {
                last = Status::unavailable(format!("{shard} has no known leader"));
                self.stats.stale_map.fetch_add(1, Ordering::Relaxed);
                self.maps.refresh().await;
                self.pause(attempt, remaining).await;
                continue;
            };
            let shard_target = node_pb::ShardTarget {
                shard_id: shard.0,
                epoch: route.epoch,
            };
            let span = tracing::info_span!(
                "gateway.attempt",
                shard = shard.0,
                attempt,
                node = %node.address,
            );
            let address = node.address.clone();
            let outcome =
                tokio::time::timeout(remaining, send(&node, &table.cluster_id, shard_target))
                    .instrument(span)
                    .await;
            let status = match outcome {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status)) => status,
                Err(_) => return Err(GatewayError::TimedOutAt { shard, address }),
            };
            let verdict = classify(&status);
            if !verdict.allows(Idempotency::Idempotent) {
                return Err(status.into());
            }
            match verdict.cause {
                Cause::NodeGone => {
                    let answered_by = cairn_proto::addressing::wrong_node_of(&status)
                        .map_or(0, |wrong| wrong.node_id);
                    tracing::warn!(
                        %shard,
                        meant_for = node.node_id,
                        answered_by,
                        %address,
                        "another node answers at this address; not sending there again"
                    );
                    self.stats.stale_map.fetch_add(1, Ordering::Relaxed);
                    self.drop_stream(&node);
                    gone.insert(node);
                    self.maps.refresh().await;
                    self.pause(attempt, remaining).await;
                }
                Cause::ShardNotLeader { leader } => {
                    self.stats.not_leader.fetch_add(1, Ordering::Relaxed);
                    match leader {
                        Some(leader) if leader.address != address => {
                            // The first redirect goes at once (the map is one leader change
                            // behind). A redirect that answers with another redirect means
                            // the replicas' views disagree while leadership moves (a node
                            // handing it on as it shuts down still names itself, or the one
                            // it named): without a pause the request would ping-pong between
                            // them and spend every attempt before the election ends.
                            if redirected {
                                self.pause(attempt, remaining).await;
                            }
                            hint = Some(NodeAt {
                                node_id: leader.node_id,
                                address: leader.address,
                            });
                        }
                        _ => {
                            self.maps.refresh().await;
                            self.pause(attempt, remaining).await;
                        }
                    }
                    if target == Target::Leader {
                        // The map's leader is stale; let the watch catch up in the background.
                        self.refresh_in_background();
                    }
                }
                Cause::StaleMap => {
                    self.stats.stale_map.fetch_add(1, Ordering::Relaxed);
                    self.maps.refresh().await;
                    self.pause(attempt, remaining).await;
                }
                // Node down, election, or a write whose outcome is unknown: the write id
                // makes trying again safe. The map may already name a new leader. (A node
                // never answers CoordinatorNotLeader; Refused, TxnConflict and KeyLocked are
                // never retried here and were returned above: a lock is resolved by the
                // caller, `crate::txn::resolver`.)
                Cause::Unavailable
                | Cause::NotSent
                | Cause::OutcomeUnknown
                | Cause::CoordinatorNotLeader { .. }
                | Cause::Refused
                | Cause::TxnConflict
                | Cause::KeyLocked => {
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    self.refresh_in_background();
                    self.pause(attempt, remaining).await;
                }
            }
            last = status;
        }
        Err(GatewayError::GaveUp {
            shard,
            attempts: self.attempts_max,
            last: last.message().to_string(),
        })
    }
}

/// How one attempt of [`Router::call_op`] goes out.
enum Sent {
    Batched(NodeStream, Op),
    Unary(NodeKvClient, Op),
}

/// Sends `op` as its own unary call (when batching is off).
async fn unary(mut client: NodeKvClient, op: Op) -> Result<ItemResult, Status> {
    Ok(match op {
        Op::Put(request) => ItemResult::Put(client.put(request).await?.into_inner()),
        Op::Get(request) => ItemResult::Get(client.get(request).await?.into_inner()),
        Op::Delete(request) => ItemResult::Delete(client.delete(request).await?.into_inner()),
        Op::Txn(request) => ItemResult::Txn(client.txn(request).await?.into_inner()),
    })
}
