//! How any Cairn process (storage node, gateway, tools) reaches the coordinator leader.
//!
//! Coordinators are configured as a list of `host:port` entries; a host may be a DNS name
//! resolving to several addresses (a Kubernetes headless service), resolved again on every
//! attempt. A call goes to the last coordinator that answered, then to every other address;
//! a not-leader answer's hint is tried next. Whether a failure is tried again is
//! `cairn_proto::retry::classify`'s answer for the call's idempotency (D46). Attempts and
//! per-call time are bounded. Every call carries the caller's trace context (W3C
//! `traceparent`, when the caller's span is sampled), so a client request that reaches the
//! coordinator through a gateway stays one trace. This crate depends on the protocol only,
//! never on server crates.
//!
//! [`TimestampClient`] is the process's client of the timestamp oracle: one batching queue
//! for every caller in the process.

mod timestamps;
pub use timestamps::{
    TimestampClient, TimestampClientConfig, TimestampError, TimestampStats,
    TIMESTAMPS_PER_REQUEST_MAX, WAITERS_QUEUED_MAX,
};

use cairn_proto::coordinator::v1 as pb;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient as GrpcClient;
use cairn_proto::retry::{classify, Backoff, Idempotency};
use cairn_trace_context::InjectTraceContext;
use std::future::Future;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A coordinator's gRPC client whose calls carry the caller's trace context.
pub type CoordinatorGrpc = GrpcClient<InterceptedService<Channel, InjectTraceContext>>;

/// Rounds over every known coordinator before one call gives up.
const ROUNDS_MAX: u32 = 12;
/// Pause between rounds: jittered, so that the nodes and gateways that lost the leader
/// together do not come back in step; about 3 s over all rounds.
const ROUND_BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(100),
    max: Duration::from_millis(400),
};

pub struct CoordinatorClient {
    addresses: Vec<String>,
    rpc_timeout: Duration,
    /// The coordinator that answered last (the leader, as far as we know).
    current: Option<String>,
    tls: cairn_tls::ClientTls,
}

impl CoordinatorClient {
    pub fn new(addresses: Vec<String>, rpc_timeout: Duration) -> Self {
        Self {
            addresses,
            rpc_timeout,
            current: None,
            tls: cairn_tls::ClientTls::plaintext(),
        }
    }

    /// The same, connecting through `tls` (TLS with this process's certificate).
    pub fn with_tls(mut self, tls: cairn_tls::ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Every address the configured entries resolve to now, the last good one first.
    async fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for entry in &self.addresses {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addresses) => out.extend(addresses.map(|a| a.to_string())),
                Err(error) => {
                    tracing::debug!(%entry, %error, "coordinator address does not resolve")
                }
            }
        }
        out.sort();
        out.dedup();
        if let Some(current) = &self.current {
            out.retain(|a| a != current);
            out.push(current.clone());
        }
        out
    }

    pub fn client(&self, address: &str) -> Option<CoordinatorGrpc> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect_timeout(self.rpc_timeout)
            .timeout(self.rpc_timeout)
            .tcp_nodelay(true);
        Some(GrpcClient::with_interceptor(
            self.tls.connect_lazy(endpoint, None),
            InjectTraceContext,
        ))
    }

    /// Calls `call` on the coordinator leader, following hints and trying every address, as
    /// long as a call of its `idempotency` may be repeated after the failures it meets.
    pub async fn call<T, F, Fut>(
        &mut self,
        what: &str,
        idempotency: Idempotency,
        mut call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(CoordinatorGrpc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last_error = tonic::Status::unavailable("no coordinator address resolved");
        for round in 0..ROUNDS_MAX {
            let mut queue = self.candidates().await;
            while let Some(address) = queue.pop() {
                let Some(client) = self.client(&address) else {
                    continue;
                };
                match call(client).await {
                    Ok(response) => {
                        self.current = Some(address);
                        return Ok(response.into_inner());
                    }
                    Err(status) => {
                        let verdict = classify(&status);
                        if !verdict.allows(idempotency) {
                            return Err(status);
                        }
                        if let Some(hint) = verdict.cause.leader_address() {
                            if hint != address && !queue.iter().any(|queued| queued == hint) {
                                queue.push(hint.to_string());
                            }
                        }
                        tracing::debug!(%address, %status, what, "coordinator call failed; trying the next");
                        if self.current.as_deref() == Some(address.as_str()) {
                            self.current = None;
                        }
                        last_error = status;
                    }
                }
            }
            if round + 1 < ROUNDS_MAX {
                tokio::time::sleep(ROUND_BACKOFF.pause(round)).await;
            }
        }
        Err(last_error)
    }

    pub async fn join(
        &mut self,
        request: pb::JoinClusterRequest,
    ) -> Result<pb::JoinClusterResponse, tonic::Status> {
        self.call("join", Idempotency::Idempotent, |mut c| {
            let request = request.clone();
            async move { c.join_cluster(request).await }
        })
        .await
    }

    pub async fn leave(&mut self, node_id: u64) -> Result<pb::LeaveClusterResponse, tonic::Status> {
        self.call("leave", Idempotency::Idempotent, |mut c| async move {
            c.leave_cluster(pb::LeaveClusterRequest { node_id }).await
        })
        .await
    }

    pub async fn heartbeat(
        &mut self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, tonic::Status> {
        self.call("heartbeat", Idempotency::Idempotent, |mut c| {
            let request = request.clone();
            async move { c.heartbeat(request).await }
        })
        .await
    }

    /// Moves the cluster's compaction point up to `revision`.
    pub async fn compact(&mut self, revision: u64) -> Result<pb::CompactResponse, tonic::Status> {
        self.call("compact", Idempotency::Idempotent, |mut c| async move {
            c.compact(pb::CompactRequest { revision }).await
        })
        .await
    }

    /// Forces a shard without quorum onto one surviving replica (docs/operations.md).
    pub async fn unsafe_recover_shard(
        &mut self,
        request: pb::UnsafeRecoverShardRequest,
    ) -> Result<pb::UnsafeRecoverShardResponse, tonic::Status> {
        self.call(
            "unsafe recover shard",
            Idempotency::NotIdempotent,
            |mut c| async move { c.unsafe_recover_shard(request).await },
        )
        .await
    }

    pub async fn shard_map(&mut self) -> Result<pb::ShardMap, tonic::Status> {
        self.call("shard map", Idempotency::Idempotent, |mut c| async move {
            c.get_shard_map(pb::GetShardMapRequest {}).await
        })
        .await
    }

    pub async fn cluster_status(&mut self) -> Result<pb::ClusterStatusResponse, tonic::Status> {
        self.call(
            "cluster status",
            Idempotency::Idempotent,
            |mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await },
        )
        .await
    }

    /// A user or role management command on behalf of `acting_user` (docs/security.md). Not
    /// repeated after a failure that may have acted: a repeated grant would be refused.
    pub async fn change_auth(
        &mut self,
        request: pb::ChangeAuthRequest,
    ) -> Result<cairn_proto::kv::v1::AuthChangeResponse, tonic::Status> {
        self.call("change auth", Idempotency::NotIdempotent, |mut c| {
            let request = request.clone();
            async move { c.change_auth(request).await }
        })
        .await
    }

    pub async fn auth_status(
        &mut self,
        acting_user: String,
    ) -> Result<cairn_proto::kv::v1::AuthStatusResponse, tonic::Status> {
        self.call("auth status", Idempotency::Idempotent, |mut c| {
            let acting_user = acting_user.clone();
            async move { c.auth_status(pb::AuthStatusRequest { acting_user }).await }
        })
        .await
    }

    /// The auth state, or `unchanged` when it is still at `after_revision`.
    pub async fn auth_state(
        &mut self,
        after_revision: u64,
    ) -> Result<pb::AuthState, tonic::Status> {
        self.call("auth state", Idempotency::Idempotent, |mut c| async move {
            c.get_auth_state(pb::GetAuthStateRequest { after_revision })
                .await
        })
        .await
    }

    /// Opens a shard-map watch on the leader (streams end when leadership moves).
    pub async fn watch_shard_map(
        &mut self,
        after_version: u64,
    ) -> Result<tonic::Streaming<pb::ShardMap>, tonic::Status> {
        self.call("watch", Idempotency::Idempotent, |mut c| async move {
            c.watch_shard_map(pb::WatchShardMapRequest { after_version })
                .await
        })
        .await
    }
}
