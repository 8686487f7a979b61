//! Sends one request to the right replica of a shard, and retries safely: on not-leader it
//! follows the hint, on a stale epoch or unknown shard it refreshes the shard map, on an
//! unavailable node or unknown outcome it backs off and tries again. Writes always carry a
//! write id, so a retry never applies a write twice. Attempts and time are bounded.

use crate::routing::ShardMaps;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use cairn_trace_context::InjectTraceContext;
use cairn_types::ShardId;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

/// A storage node's shard KV client; every call carries the caller's trace context.
pub type NodeKvClient = ShardKvClient<InterceptedService<Channel, InjectTraceContext>>;
use tonic::{Code, Status};

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
    request_timeout: Duration,
    attempts_max: u32,
    backoff_min: Duration,
    backoff_max: Duration,
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
    ) -> Arc<Self> {
        Arc::new(Self {
            maps,
            channels: Mutex::new(HashMap::new()),
            request_timeout,
            attempts_max,
            backoff_min,
            backoff_max,
            stats: RetryStats::default(),
            spread: AtomicU64::new(0),
            outbound_bind_ip,
        })
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn client(&self, address: &str) -> Result<NodeKvClient, Status> {
        let mut channels = self.channels.lock().expect("channel map poisoned");
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|e| Status::internal(format!("bad node address {address:?}: {e}")))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .local_address(self.outbound_bind_ip)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .connect_lazy();
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(ShardKvClient::with_interceptor(channel, InjectTraceContext)
            .max_decoding_message_size(cairn_types::REQUEST_BYTES_MAX_CEILING as usize)
            .max_encoding_message_size(cairn_types::REQUEST_BYTES_MAX_CEILING as usize))
    }

    /// Waits before the next attempt; after the last one there is nothing to wait for.
    async fn pause(&self, attempt: u32, remaining: Duration) {
        if attempt + 1 < self.attempts_max {
            tokio::time::sleep(self.backoff(attempt).min(remaining)).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self.backoff_min.saturating_mul(1u32 << attempt.min(16));
        let capped = doubled.min(self.backoff_max);
        // Jitter (50-100% of the step) keeps many gateways from retrying in step.
        capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Calls `call` on the replica of `shard` that `target` names until it succeeds, fails
    /// for good, or the request's time or attempts run out.
    pub async fn call<T, F, Fut>(
        &self,
        shard: ShardId,
        target: Target,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(NodeKvClient, node_pb::ShardTarget) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut hint: Option<String> = None;
        let mut last = Status::unavailable(format!("{shard}: no attempt made"));
        for attempt in 0..self.attempts_max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "{shard}: request timed out; last error: {}",
                    last.message()
                )));
            }
            let Some(table) = self.maps.table(remaining).await else {
                return Err(Status::unavailable(
                    "no shard map from the coordinators yet",
                ));
            };
            let route = table.route(shard).cloned().unwrap_or_default();
            let address = match (hint.take(), target) {
                (Some(address), _) => Some(address),
                (None, Target::Leader) => table.leader_address(shard).map(str::to_string),
                (None, Target::AnyReplica) => {
                    let pick = self.spread.fetch_add(1, Ordering::Relaxed) as usize;
                    table.replica_address(shard, pick).map(str::to_string)
                }
            };
            let Some(address) = address else {
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
            let client = self.client(&address)?;
            let span = tracing::info_span!(
                "gateway.attempt",
                shard = shard.0,
                attempt,
                node = %address,
            );
            let outcome = tokio::time::timeout(remaining, call(client, shard_target))
                .instrument(span)
                .await;
            let status = match outcome {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "{shard}: request timed out at {address}"
                    )))
                }
            };
            let detail = cairn_proto::kv::v1::ErrorDetail::decode(status.details())
                .ok()
                .and_then(|d| d.kind);
            match (status.code(), detail) {
                (_, Some(Kind::NotLeader(not_leader))) => {
                    self.stats.not_leader.fetch_add(1, Ordering::Relaxed);
                    if !not_leader.leader_address.is_empty() && not_leader.leader_address != address
                    {
                        hint = Some(not_leader.leader_address);
                    } else {
                        self.maps.refresh().await;
                        self.pause(attempt, remaining).await;
                    }
                    if target == Target::Leader {
                        // The map's leader is stale; let the watch catch up in the background.
                        let maps = self.maps.clone();
                        tokio::spawn(async move { maps.refresh().await });
                    }
                }
                (_, Some(Kind::StaleEpoch(_))) | (Code::NotFound, Some(Kind::UnknownShard(_))) => {
                    self.stats.stale_map.fetch_add(1, Ordering::Relaxed);
                    self.maps.refresh().await;
                    self.pause(attempt, remaining).await;
                }
                (
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Aborted,
                    _,
                ) => {
                    // Node down, election, or a write whose outcome is unknown: the write id
                    // makes trying again safe. The map may already name a new leader.
                    self.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                    let maps = self.maps.clone();
                    tokio::spawn(async move { maps.refresh().await });
                    self.pause(attempt, remaining).await;
                }
                _ => return Err(status),
            }
            last = status;
        }
        Err(Status::unavailable(format!(
            "{shard}: gave up after {} attempts; last error: {}",
            self.attempts_max,
            last.message()
        )))
    }
}
