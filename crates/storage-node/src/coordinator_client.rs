//! The storage node's side of the coordinator: join (get a permanent node id), then
//! heartbeat with the status of every replica. Coordinators are found through a static
//! address list whose entries may be DNS names resolving to several addresses (a Kubernetes
//! headless service); the client follows NotLeader hints to the coordinator leader.

use crate::node::Node;
use cairn_proto::coordinator::v1 as pb;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient as GrpcClient;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_raft::replica::ServerRole;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorClientConfig {
    /// Coordinator addresses, `host:port`; a host may be a DNS name with several addresses.
    pub addresses: Vec<String>,
    /// Period of heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Longest one call to a coordinator may take, in milliseconds.
    pub rpc_timeout_ms: u64,
    /// Labels this node registers with, e.g. `zone = "a"`.
    pub labels: BTreeMap<String, String>,
}

impl Default for CoordinatorClientConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            heartbeat_interval_ms: 1_000,
            rpc_timeout_ms: 5_000,
            labels: BTreeMap::new(),
        }
    }
}

/// Attempts over every known coordinator before one call gives up.
const ATTEMPTS_MAX: usize = 12;
/// Pause between rounds of attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

pub struct CoordinatorClient {
    config: CoordinatorClientConfig,
    /// The coordinator that answered last (the leader, as far as we know).
    current: Option<String>,
}

impl CoordinatorClient {
    pub fn new(config: CoordinatorClientConfig) -> Self {
        Self {
            config,
            current: None,
        }
    }

    /// Every address the configured names resolve to now.
    async fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = self.current.iter().cloned().collect();
        for entry in &self.config.addresses {
            match tokio::net::lookup_host(entry.as_str()).await {
                Ok(addresses) => out.extend(addresses.map(|a| a.to_string())),
                Err(error) => {
                    tracing::debug!(%entry, %error, "coordinator address does not resolve")
                }
            }
        }
        out.dedup();
        out
    }

    fn client(&self, address: &str) -> Option<GrpcClient<Channel>> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect_timeout(Duration::from_millis(self.config.rpc_timeout_ms))
            .timeout(Duration::from_millis(self.config.rpc_timeout_ms))
            .tcp_nodelay(true);
        Some(GrpcClient::new(endpoint.connect_lazy()))
    }

    /// Calls `call` on the coordinator leader, following hints and trying every address.
    async fn call<T, F, Fut>(&mut self, what: &str, mut call: F) -> Result<T, String>
    where
        F: FnMut(GrpcClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last_error = String::from("no coordinator address resolved");
        for _ in 0..ATTEMPTS_MAX {
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
                        if let Some(Kind::NotLeader(hint)) =
                            cairn_proto::kv::v1::ErrorDetail::decode(status.details())
                                .ok()
                                .and_then(|d| d.kind)
                        {
                            if !hint.leader_address.is_empty() && hint.leader_address != address {
                                queue.push(hint.leader_address);
                            }
                        }
                        last_error = format!("{what} at {address}: {}", status.message());
                        if self.current.as_deref() == Some(address.as_str()) {
                            self.current = None;
                        }
                    }
                }
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(last_error)
    }

    pub async fn join(
        &mut self,
        address: &str,
        node_id: u64,
    ) -> Result<pb::JoinClusterResponse, String> {
        let request = pb::JoinClusterRequest {
            address: address.to_string(),
            labels: self
                .config
                .labels
                .iter()
                .map(|(k, v)| pb::Label {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            node_id,
        };
        self.call("join", |mut client| {
            let request = request.clone();
            async move { client.join_cluster(request).await }
        })
        .await
    }

    pub async fn heartbeat(&mut self, request: pb::HeartbeatRequest) -> Result<(), String> {
        self.call("heartbeat", |mut client| {
            let request = request.clone();
            async move { client.heartbeat(request).await }
        })
        .await
        .map(|_| ())
    }
}

/// Reads the node id this node was given, or joins the cluster to get one and keeps it in
/// `<data_dir>/node_id` (written to a temporary file, synced, renamed).
pub async fn node_id_from_coordinator(
    data_dir: &Path,
    advertise: &str,
    config: &CoordinatorClientConfig,
) -> anyhow::Result<u64> {
    let path = data_dir.join("node_id");
    let known: u64 = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{} does not hold a node id", path.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error.into()),
    };
    let mut client = CoordinatorClient::new(config.clone());
    let joined = client
        .join(advertise, known)
        .await
        .map_err(|e| anyhow::anyhow!("cannot join the cluster: {e}"))?;
    if known == 0 {
        std::fs::create_dir_all(data_dir)?;
        let temporary = data_dir.join("node_id.tmp");
        std::fs::write(&temporary, joined.node_id.to_string())?;
        std::fs::File::open(&temporary)?.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(data_dir)?.sync_all()?;
    }
    tracing::info!(node_id = joined.node_id, cluster_id = %joined.cluster_id, "joined the cluster");
    Ok(joined.node_id)
}

fn role_of(role: Option<ServerRole>) -> pb::RaftRole {
    match role {
        Some(ServerRole::Leader) => pb::RaftRole::Leader,
        Some(ServerRole::Follower) => pb::RaftRole::Follower,
        Some(ServerRole::Candidate) => pb::RaftRole::Candidate,
        Some(ServerRole::Learner) => pb::RaftRole::Learner,
        Some(ServerRole::Shutdown) | None => pb::RaftRole::Unknown,
    }
}

/// Heartbeats until the task is aborted.
pub async fn heartbeat_loop(node: Arc<Node>, advertise: String, config: CoordinatorClientConfig) {
    let mut client = CoordinatorClient::new(config.clone());
    let mut ticker = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let replicas = node
            .replicas()
            .iter()
            .map(|replica| {
                let status = replica.status();
                pb::ReplicaReport {
                    shard_id: status.shard.0,
                    role: role_of(status.role) as i32,
                    term: status.term,
                    leader_node_id: status.leader.map_or(0, |id| id.0),
                    committed_index: status.committed_index,
                    applied_index: status.applied_index,
                    epoch: status.epoch,
                    voters: status.voters.iter().map(|id| id.0).collect(),
                    learners: status.learners.iter().map(|id| id.0).collect(),
                    approximate_size_bytes: replica.approximate_size_bytes(),
                }
            })
            .collect();
        let request = pb::HeartbeatRequest {
            node_id: node.node_id().0,
            address: advertise.clone(),
            replicas,
        };
        if let Err(error) = client.heartbeat(request).await {
            tracing::warn!(%error, "heartbeat to the coordinator failed");
        }
    }
}
