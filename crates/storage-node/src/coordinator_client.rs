//! The storage node's side of the coordinator: join (get a permanent node id, kept in the
//! data folder), then heartbeat with the status of every replica. Finding the leader is
//! `cairn-coordinator-client`'s job.

use crate::node::Node;
use cairn_coordinator_client::CoordinatorClient;
use cairn_proto::coordinator::v1 as pb;
use cairn_raft::database::StorageEngine;
use cairn_raft::replica::ServerRole;
use cairn_types::Revision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorClientConfig {
    /// Coordinator addresses, `host:port`; a host may be a DNS name with several addresses.
    pub addresses: Vec<String>,
    /// Period of heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Longest one call to a coordinator may take, in milliseconds.
    pub rpc_timeout_ms: u64,
    /// How long the node keeps trying to join before it gives up and exits, in milliseconds.
    pub join_timeout_ms: u64,
    /// Labels this node registers with, e.g. `zone = "a"`.
    pub labels: BTreeMap<String, String>,
    /// Timestamp requests to the oracle outstanding at once; writes that arrive meanwhile
    /// wait and leave together in the next request.
    pub timestamp_requests_in_flight_max: usize,
}

/// Pause between join attempts while the coordinators are not reachable.
const JOIN_RETRY_PAUSE: Duration = Duration::from_secs(1);

impl Default for CoordinatorClientConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            heartbeat_interval_ms: 1_000,
            rpc_timeout_ms: 5_000,
            join_timeout_ms: 300_000,
            labels: BTreeMap::new(),
            timestamp_requests_in_flight_max: 2,
        }
    }
}

impl CoordinatorClientConfig {
    fn client(&self, tls: &cairn_tls::ClientTls) -> CoordinatorClient {
        CoordinatorClient::new(
            self.addresses.clone(),
            Duration::from_millis(self.rpc_timeout_ms),
        )
        .with_tls(tls.clone())
    }
}

/// The protocol's name for a storage engine.
pub fn engine_to_proto(engine: StorageEngine) -> pb::StorageEngine {
    match engine {
        StorageEngine::Disk => pb::StorageEngine::Disk,
        StorageEngine::Memory => pb::StorageEngine::Memory,
    }
}

/// Who the cluster says this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub node_id: u64,
    pub cluster_id: String,
}

/// Reads the node id this node was given (or the configured one), joins the cluster with
/// it (0: asks for a new one), and keeps the answer in `<data_dir>/node_id` and
/// `<data_dir>/cluster_id` (each written to a temporary file, synced, renamed). Retries until
/// `join_timeout_ms`. Data kept for one cluster is never served to another: a stored cluster
/// id that differs from the coordinator's is an error.
///
/// With the memory engine nothing is read or kept: the node's data does not survive it, so it
/// always joins as a new node (D31).
pub async fn node_id_from_coordinator(
    data_dir: &Path,
    engine: StorageEngine,
    advertise: &str,
    configured_id: u64,
    config: &CoordinatorClientConfig,
    tls: &cairn_tls::ClientTls,
) -> anyhow::Result<Joined> {
    let path = data_dir.join("node_id");
    let stored: u64 = match std::fs::read_to_string(&path) {
        _ if !engine.is_durable() => 0,
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{} does not hold a node id", path.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error.into()),
    };
    if stored != 0 && configured_id != 0 && stored != configured_id {
        anyhow::bail!(
            "configured node_id {configured_id} but {} holds {stored}",
            path.display()
        );
    }
    let known = if stored != 0 { stored } else { configured_id };
    let cluster_path = data_dir.join("cluster_id");
    let stored_cluster = match std::fs::read_to_string(&cluster_path) {
        _ if !engine.is_durable() => String::new(),
        Ok(text) => text.trim().to_string(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error.into()),
    };
    // Drawn once for this start-up and sent with every attempt: a retry whose first attempt
    // was given an id (its answer lost) gets that id, and nothing else does (D50). A node
    // with an id needs none.
    let join_token = if known == 0 {
        format!("{:032x}", rand::random::<u128>())
    } else {
        String::new()
    };
    let request = pb::JoinClusterRequest {
        address: advertise.to_string(),
        labels: config
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        node_id: known,
        storage_engine: engine_to_proto(engine) as i32,
        join_token,
        // The coordinators refuse data of another cluster before they change anything.
        cluster_id: stored_cluster.clone(),
    };
    let mut client = config.client(tls);
    let deadline = Instant::now() + Duration::from_millis(config.join_timeout_ms);
    let joined = loop {
        match client.join(request.clone()).await {
            Ok(joined) => break joined,
            // A refused join (bad address, an id the cluster does not know, a node that
            // left) will not succeed by asking again. Joining is idempotent (D46).
            Err(status)
                if !cairn_proto::retry::classify(&status)
                    .allows(cairn_proto::retry::Idempotency::Idempotent) =>
            {
                anyhow::bail!("the cluster refused this node: {}", status.message())
            }
            Err(status) if Instant::now() < deadline => {
                tracing::warn!(%status, "cannot join the cluster yet; retrying");
                tokio::time::sleep(JOIN_RETRY_PAUSE).await;
            }
            Err(status) => anyhow::bail!("cannot join the cluster: {}", status.message()),
        }
    };
    if engine.is_durable() {
        // Checked here too: a coordinator older than D50 does not check it.
        if !stored_cluster.is_empty() && stored_cluster != joined.cluster_id {
            anyhow::bail!(
                "{} holds cluster {:?}, but the coordinators lead cluster {:?}: this data \
                 belongs to another cluster",
                cluster_path.display(),
                stored_cluster,
                joined.cluster_id
            )
        }
        if stored_cluster.is_empty() {
            write_synced(data_dir, "cluster_id", &joined.cluster_id)?;
        }
        if stored == 0 {
            write_synced(data_dir, "node_id", &joined.node_id.to_string())?;
        }
    }
    tracing::info!(node_id = joined.node_id, cluster_id = %joined.cluster_id, "joined the cluster");
    Ok(Joined {
        node_id: joined.node_id,
        cluster_id: joined.cluster_id,
    })
}

/// Writes `<data_dir>/<name>` crash-atomically: a temporary file, synced, renamed, the folder
/// synced.
fn write_synced(data_dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let temporary = data_dir.join(format!("{name}.tmp"));
    std::fs::write(&temporary, contents)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, data_dir.join(name))?;
    std::fs::File::open(data_dir)?.sync_all()
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
    let mut client = config.client(&node.client_tls);
    let compacting = Arc::new(AtomicBool::new(false));
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
            storage_engine: engine_to_proto(node.storage_engine()) as i32,
        };
        match client.heartbeat(request).await {
            Ok(response) => {
                compact_lagging_shards(&node, Revision(response.compact_revision), &compacting)
            }
            Err(status) => tracing::warn!(%status, "heartbeat to the coordinator failed"),
        }
    }
}

/// Proposes the cluster's compaction point to every shard this node leads whose own point is
/// lower, one shard after the other, in the background (one such task at a time).
fn compact_lagging_shards(node: &Arc<Node>, point: Revision, compacting: &Arc<AtomicBool>) {
    let lagging: Vec<_> = node
        .replicas()
        .into_iter()
        .filter(|replica| replica.is_leader() && replica.compact_revision() < point)
        .collect();
    if lagging.is_empty() || compacting.swap(true, Ordering::AcqRel) {
        return;
    }
    let compacting = compacting.clone();
    tokio::spawn(async move {
        for replica in lagging {
            if let Err(error) = replica.propose_compaction(point).await {
                tracing::warn!(shard = %replica.shard(), %error, %point, "proposing the compaction point failed; next heartbeat retries");
            }
        }
        compacting.store(false, Ordering::Release);
    });
}
