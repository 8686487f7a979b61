//! The node: its RocksDB, its replicas, and the operations the services share.

use crate::config::NodeConfig;
use crate::error::{NodeError, Result};
use crate::removal;
use crate::timestamps::NodeTimestamps;
use cairn_coordinator_client::TimestampClientConfig;
use cairn_proto::addressing::{self, Identity};
use cairn_raft::convert::RequestValidator;
use cairn_raft::database::{open_storage, OpenStorage, StorageEngine};
use cairn_raft::group_commit::{GroupCommit, GroupCommitLimits, GroupCommitStats};
use cairn_raft::mvcc_store::CompactionPoints;
use cairn_raft::network::PeerChannels;
use cairn_raft::replica::{hosted_shards, ReplicaContext, ShardReplica};
use cairn_raft::transport::ReplicaDirectory;
use cairn_types::{NodeId, ShardId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub struct Node {
    pub config: NodeConfig,
    /// This node's id and cluster id, which every call to it must match (D35).
    identity: Identity,
    pub validator: RequestValidator,
    context: Arc<ReplicaContext>,
    replicas: RwLock<HashMap<ShardId, Arc<ShardReplica>>>,
    /// Serialises replica creation and removal (rare; keeps "open twice" impossible).
    lifecycle: tokio::sync::Mutex<()>,
    pub group_commit_stats: Arc<GroupCommitStats>,
    /// Kept for the memory engine's scratch folder, removed at shutdown.
    storage: std::sync::Mutex<OpenStorage>,
    /// The oracle's client, under a coordinator.
    pub timestamps: Option<Arc<NodeTimestamps>>,
    pub compaction_points: Arc<CompactionPoints>,
    /// Transaction calls served and locks met (`crate::txn_metrics`).
    pub txn_counters: crate::txn_metrics::TxnCounters,
    /// How this node connects to the coordinators and its peers (plaintext or mutual TLS).
    pub client_tls: cairn_tls::ClientTls,
}

impl Node {
    /// Opens the node's storage and every replica it hosted before. `config` has been
    /// validated by the caller, and its `node_id` is the node's id (with a coordinator, the
    /// one it was given at join, which the operator's configuration may leave at 0).
    /// `cluster_id` is the cluster's id from the join (empty for a static bootstrap).
    pub async fn open(config: NodeConfig, cluster_id: String) -> anyhow::Result<Arc<Self>> {
        assert!(config.node_id != 0, "a node opens under its id");
        let node_id = NodeId(config.node_id);
        let client_tls = config.tls.client()?;
        let (engine, data_dir, rocksdb_config) = (
            config.storage.engine,
            config.data_dir.clone(),
            config.rocksdb.clone(),
        );
        let compaction_points = Arc::new(CompactionPoints::default());
        let points = compaction_points.clone();
        let storage = tokio::task::spawn_blocking(move || {
            open_storage(engine, &data_dir, &rocksdb_config, points, "node")
        })
        .await??;
        let db = storage.db.clone();
        // Under a coordinator every write's revision is a timestamp from its oracle; a
        // statically bootstrapped node counts revisions per shard.
        let timestamps = config.coordinator.as_ref().map(|coordinator| {
            Arc::new(NodeTimestamps::start(TimestampClientConfig {
                coordinators: coordinator.addresses.clone(),
                requests_in_flight_max: coordinator.timestamp_requests_in_flight_max,
                rpc_timeout: Duration::from_millis(coordinator.rpc_timeout_ms),
                outbound_bind_ip: None,
                tls: client_tls.clone(),
            }))
        });
        let stats = Arc::new(GroupCommitStats::default());
        let group_commit = GroupCommit::start(
            db.clone(),
            GroupCommitLimits {
                queue_max: config.group_commit_queue_max,
                batch_max: config.group_commit_batch_max,
                sync_wal: engine.is_durable(),
            },
            stats.clone(),
        );
        let raft_config = config
            .raft
            .to_openraft(config.transport.snapshot_transfer_timeout_ms)?;
        let context = Arc::new(ReplicaContext {
            node_id,
            db: db.clone(),
            snapshot_root: storage.snapshot_root.clone(),
            channels: PeerChannels::new(config.transport.clone())
                .for_cluster(&cluster_id)
                .with_tls(client_tls.clone()),
            group_commit,
            raft_config,
            session_limits: config.sessions.clone(),
            propose_timeout: Duration::from_millis(config.propose_timeout_ms),
            read_index_timeout: Duration::from_millis(config.read_index_timeout_ms),
            linearizable_reads: config.raft.linearizable_reads,
            hold_votes_after_restart: true,
            compaction_points: compaction_points.clone(),
            timestamps: timestamps
                .clone()
                .map(|source| source as Arc<dyn cairn_raft::versioned::TimestampSource>),
        });
        let node = Arc::new(Self {
            identity: Identity {
                node_id: node_id.0,
                cluster_id,
            },
            validator: RequestValidator::new(config.limits.clone()),
            config,
            context,
            replicas: RwLock::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
            group_commit_stats: stats,
            storage: std::sync::Mutex::new(storage),
            timestamps,
            compaction_points,
            txn_counters: Default::default(),
            client_tls,
        });
        let shards = hosted_shards(&db)?;
        tracing::info!(%node_id, replicas = shards.len(), "opening hosted replicas");
        for shard in shards {
            node.create_replica(shard).await?;
        }
        Ok(node)
    }

    pub fn db(&self) -> &Arc<cairn_raft::database::Db> {
        &self.context.db
    }

    pub fn node_id(&self) -> NodeId {
        self.context.node_id
    }

    /// The check every call to this node's internal services passes first: a call that names
    /// another node or another cluster is refused with a `WrongNode` detail.
    pub fn destination_check(
        &self,
    ) -> impl FnMut(tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status>
           + Clone
           + Send
           + Sync
           + 'static {
        let identity = self.identity.clone();
        move |request: tonic::Request<()>| match addressing::check(request.metadata(), 0, &identity)
        {
            Ok(()) => Ok(request),
            Err(refused) => {
                // Peers retry Raft messages to a replaced node every heartbeat until its
                // shards are repaired: the senders log it once, here it would flood the log.
                tracing::debug!(%refused, "refused a call meant for another node");
                Err(refused.into())
            }
        }
    }

    pub fn storage_engine(&self) -> StorageEngine {
        self.config.storage.engine
    }

    pub fn replica_or_error(&self, shard: ShardId) -> Result<Arc<ShardReplica>> {
        self.replica(shard).ok_or(NodeError::UnknownShard(shard))
    }

    pub fn replicas(&self) -> Vec<Arc<ShardReplica>> {
        let mut replicas: Vec<_> = self
            .replicas
            .read()
            .expect("replica map poisoned")
            .values()
            .cloned()
            .collect();
        replicas.sort_by_key(|replica| replica.shard());
        replicas
    }

    /// Creates (or reopens) this node's replica of `shard`. Returns false if it already runs.
    pub async fn create_replica(&self, shard: ShardId) -> Result<bool> {
        if !shard.is_valid() {
            return Err(NodeError::InvalidRequest(
                cairn_raft::convert::InvalidRequest::Field {
                    field: "shard_id",
                    reason: format!("must be at most {}", ShardId::MAX.0),
                },
            ));
        }
        let _guard = self.lifecycle.lock().await;
        if self.replica(shard).is_some() {
            return Ok(false);
        }
        let replica = ShardReplica::open(self.context.clone(), shard).await?;
        self.replicas
            .write()
            .expect("replica map poisoned")
            .insert(shard, Arc::new(replica));
        tracing::info!(%shard, "replica started");
        Ok(true)
    }

    /// Unsafe recovery (D41): makes this node's replica of `shard` the shard's only voter
    /// (it stops, gets a membership entry naming it alone, and is reopened). Returns its
    /// status before the recovery and the shard's new epoch.
    pub async fn unsafe_recover_replica(
        &self,
        shard: ShardId,
    ) -> Result<(cairn_raft::replica::ReplicaStatus, u64)> {
        let _guard = self.lifecycle.lock().await;
        let replica = self.replica_or_error(shard)?;
        let voters = replica.status().voters;
        if !voters.contains(&self.node_id()) {
            return Err(NodeError::from(cairn_raft::replica::ReplicaError::Membership {
                shard,
                reason: format!(
                    "this replica is not a voter of its shard (voters {voters:?}): recover from a voter"
                ),
            }));
        }
        let forced = replica.force_single_voter().await;
        if forced.is_err() {
            // Whatever failed, the instance must be stopped before the replica is reopened.
            replica.shutdown().await;
        }
        // Open it again, on the new membership when there is one.
        let reopened = ShardReplica::open(self.context.clone(), shard).await?;
        self.replicas
            .write()
            .expect("replica map poisoned")
            .insert(shard, Arc::new(reopened));
        tracing::info!(%shard, "replica reopened after an unsafe recovery");
        Ok(forced?)
    }

    /// Stops this node's replica of `shard` and deletes its data, unless the shard may still
    /// count it (see [`removal::may_remove`]; `excluded_at_epoch` is the epoch of a committed
    /// configuration that excludes this node, 0 if the caller knows none).
    pub async fn remove_replica(&self, shard: ShardId, excluded_at_epoch: u64) -> Result<bool> {
        let _guard = self.lifecycle.lock().await;
        let Some(replica) = self.replica(shard) else {
            return Ok(false);
        };
        let status = replica.status();
        removal::may_remove(
            self.node_id(),
            &removal::OwnMembership {
                epoch: status.epoch,
                voters: &status.voters,
                learners: &status.learners,
            },
            excluded_at_epoch,
        )
        .map_err(|still| {
            tracing::warn!(%shard, %still, "refused to delete a replica its shard still counts");
            NodeError::StillMember { shard, still }
        })?;
        let Some(replica) = self
            .replicas
            .write()
            .expect("replica map poisoned")
            .remove(&shard)
        else {
            return Ok(false);
        };
        // Requests still holding the replica fail once its Raft instance has stopped.
        replica.destroy().await?;
        tracing::info!(%shard, "replica removed");
        Ok(true)
    }

    /// Hands off the leadership of every shard this node leads and waits, until `deadline`,
    /// for the new leaders to take over, so that a stopping node costs its shards no election
    /// timeout (a rolling restart moves leaders instead of losing them).
    pub async fn hand_off_leadership(&self, deadline: std::time::Instant) {
        let replicas = self.replicas();
        let targets =
            futures::future::join_all(replicas.iter().map(|replica| replica.hand_off_leadership()))
                .await;
        let handed_off: Vec<_> = replicas
            .into_iter()
            .zip(targets)
            .filter_map(|(replica, target)| target.map(|target| (replica, target)))
            .collect();
        if handed_off.is_empty() {
            return;
        }
        tracing::info!(
            shards = handed_off.len(),
            "handed off shard leadership; waiting for the new leaders"
        );
        let taken_over = handed_off
            .iter()
            .map(|(replica, _)| replica.wait_until_not_leader());
        // Past the deadline the shards that kept this node as leader are counted below.
        let _ =
            tokio::time::timeout_at(deadline.into(), futures::future::join_all(taken_over)).await;
        let kept = handed_off
            .iter()
            .filter(|(replica, _)| replica.is_leader())
            .count();
        if kept > 0 {
            tracing::warn!(
                shards = kept,
                "some shards kept this node as leader; they elect a new one once it stops"
            );
        }
    }

    /// Stops every replica (all at once: the caller bounds the time) and removes the memory
    /// engine's scratch folder.
    pub async fn shutdown(&self) {
        let replicas = self.replicas();
        futures::future::join_all(replicas.iter().map(|replica| replica.shutdown())).await;
        self.storage
            .lock()
            .expect("storage lock poisoned")
            .remove_scratch();
    }
}

impl ReplicaDirectory for Node {
    fn node_id(&self) -> NodeId {
        self.context.node_id
    }

    fn replica(&self, shard: ShardId) -> Option<Arc<ShardReplica>> {
        self.replicas
            .read()
            .expect("replica map poisoned")
            .get(&shard)
            .cloned()
    }
}
