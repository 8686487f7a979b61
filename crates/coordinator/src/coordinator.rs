//! The coordinator: its metadata group, the leader's working state, and the requests storage
//! nodes make (heartbeat, leave). Its child modules hold the rest of the leader's work: the
//! reconcile loop (`reconcile_loop`), the published shard map (`shard_map`) and the admin
//! calls that carry placement actions out (`admin`). The decisions themselves are pure
//! functions elsewhere (`placement`, `founding`, `quorum`, `cleanup`, `reconcile`).

mod admin;
mod reconcile_loop;
mod shard_map;

pub use shard_map::node_state_to_proto;

use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::heartbeat::Heartbeat;
use crate::liveness::{GracePeriods, Liveness};
use crate::metadata::{ClusterInfo, MetadataStore, NodeRecord};
use crate::observed::{NodeHeartbeat, Observed};
use cairn_proto::coordinator::v1 as pb;
use cairn_raft::network::PeerChannels;
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{watch, Mutex};

/// The leader's working state; reset whenever this coordinator (re)gains leadership.
struct LeaderState {
    term: u64,
    /// The revision at which this leadership began (`begin_leadership`): the high half of
    /// every map version it publishes.
    map_generation: u64,
    observed: Observed,
    cluster: ClusterInfo,
    map_sequence: u64,
    /// The last published map without its version, to tell whether anything changed.
    last_map_body: Option<(Vec<pb::ShardInfo>, Vec<pb::NodeInfo>)>,
    /// Pending moves whose learner is not in the membership, and since when.
    missing_learners: BTreeMap<ShardId, Instant>,
    /// Replicas hosted by a node that is not a member of their shard, and since when.
    stray_since: BTreeMap<(NodeId, ShardId), Instant>,
    /// Shards being created that no replica reported founded yet, and since when (D51).
    unfounded_since: BTreeMap<ShardId, Instant>,
}

/// Counters for ClusterStatus and operators.
#[derive(Clone, Debug, Default)]
pub struct ScheduleStats {
    pub under_replicated_shards: u32,
    pub moves_in_flight: u32,
}

pub struct Coordinator {
    pub config: CoordinatorConfig,
    members: BTreeMap<u64, String>,
    pub metadata: MetadataStore,
    channels: PeerChannels,
    leader: Mutex<Option<LeaderState>>,
    map: watch::Sender<Option<pb::ShardMap>>,
    stats: std::sync::Mutex<ScheduleStats>,
    /// Nodes another node answered for at their address (a `WrongNode` refusal, D35): no
    /// admin call goes to that node at that address again until it heartbeats from it.
    gone: std::sync::Mutex<BTreeMap<NodeId, String>>,
    /// Set once this coordinator stops: it answers as a follower from then on (D43).
    stopping: std::sync::atomic::AtomicBool,
    /// Shards without quorum (D40); kept by the leader's reconcile loop.
    quorum: std::sync::Mutex<crate::quorum::QuorumWatch>,
}

impl Coordinator {
    pub fn new(
        config: CoordinatorConfig,
        metadata: MetadataStore,
        channels: PeerChannels,
    ) -> Result<Arc<Self>> {
        let members = config
            .member_list()
            .map_err(|e| CoordinatorError::Invalid {
                field: "members",
                reason: e.reason,
            })?
            .into_iter()
            .collect();
        let (map, _) = watch::channel(None);
        let quorum_confirm_after = Liveness::of(&config).grace_periods().quorum_loss_confirm;
        Ok(Arc::new(Self {
            config,
            members,
            metadata,
            channels,
            leader: Mutex::new(None),
            map,
            stats: std::sync::Mutex::new(ScheduleStats::default()),
            gone: std::sync::Mutex::new(BTreeMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            quorum: std::sync::Mutex::new(crate::quorum::QuorumWatch::new(quorum_confirm_after)),
        }))
    }

    fn liveness(&self) -> Liveness {
        Liveness::of(&self.config)
    }

    fn grace_periods(&self) -> GracePeriods {
        self.liveness().grace_periods()
    }

    /// The error a follower answers with: where the leader is.
    pub fn not_leader(&self) -> CoordinatorError {
        let leader = self.leader_id();
        CoordinatorError::NotLeader {
            leader_id: leader,
            leader_address: leader.and_then(|id| self.members.get(&id).cloned()),
        }
    }

    /// Whether this coordinator's metadata replica leads the group.
    pub fn is_leader(&self) -> bool {
        !self.is_stopping() && self.metadata.replica().is_leader()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops answering as the leader: every request gets NotLeader from now on (naming the
    /// new leader, never this coordinator) and the shard-map watches end, so that nodes and
    /// gateways move to the new leader instead of waiting on this one (D43).
    pub fn stop_serving(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.map.send_replace(None);
    }

    /// The address of the coordinator leader, if known and not this one.
    pub fn leader_address(&self) -> Option<String> {
        self.leader_id()
            .filter(|id| *id != self.config.member_id)
            .and_then(|id| self.members.get(&id).cloned())
    }

    pub fn leader_id(&self) -> Option<u64> {
        let leader = self.metadata.replica().status().leader.map(|id| id.0);
        // A stopping coordinator never names itself: whoever follows the hint would come back.
        leader.filter(|id| !(self.is_stopping() && *id == self.config.member_id))
    }

    pub fn subscribe_map(&self) -> watch::Receiver<Option<pb::ShardMap>> {
        self.map.subscribe()
    }

    pub fn current_map(&self) -> Option<pb::ShardMap> {
        self.map.borrow().clone()
    }

    pub(crate) fn quorum_watch(&self) -> std::sync::MutexGuard<'_, crate::quorum::QuorumWatch> {
        self.quorum.lock().expect("quorum watch lock poisoned")
    }

    pub fn stats(&self) -> ScheduleStats {
        self.stats.lock().expect("stats lock poisoned").clone()
    }

    pub async fn cluster(&self) -> Result<ClusterInfo> {
        let leader = self.leader.lock().await;
        leader
            .as_ref()
            .map(|state| state.cluster.clone())
            .ok_or_else(|| self.not_leader())
    }

    /// Takes (or keeps) leadership state; `None` if this coordinator is not the leader.
    pub(crate) async fn leader_state(&self) -> Result<bool> {
        let status = self.metadata.replica().status();
        let mut leader = self.leader.lock().await;
        if !self.is_leader() {
            if leader.take().is_some() {
                tracing::info!("lost coordinator leadership");
                self.map.send_replace(None);
                self.quorum_watch().clear();
            }
            return Ok(false);
        }
        if leader
            .as_ref()
            .is_some_and(|state| state.term == status.term)
        {
            return Ok(true);
        }
        let cluster = self
            .metadata
            .ensure_cluster(self.config.shard_count, self.config.replication_factor)
            .await?;
        if (cluster.shard_count, cluster.replication_factor)
            != (self.config.shard_count, self.config.replication_factor)
        {
            tracing::warn!(
                configured_shard_count = self.config.shard_count,
                configured_replication_factor = self.config.replication_factor,
                shard_count = cluster.shard_count,
                replication_factor = cluster.replication_factor,
                "the cluster was created with other settings; those stay in force"
            );
        }
        // Not the term: openraft gives a restarted leader its term back without an election,
        // and the versions it published in that term before the restart are forgotten.
        let map_generation = self.metadata.begin_leadership(status.term).await?;
        assert!(
            map_generation < 1 << 32,
            "map generation {map_generation} overflows"
        );
        tracing::info!(term = status.term, map_generation, cluster_id = %cluster.cluster_id, "became coordinator leader");
        *leader = Some(LeaderState {
            term: status.term,
            map_generation,
            observed: Observed::new(Instant::now()),
            cluster,
            map_sequence: 0,
            last_map_body: None,
            missing_learners: BTreeMap::new(),
            stray_since: BTreeMap::new(),
            unfounded_since: BTreeMap::new(),
        });
        Ok(true)
    }

    // ---- requests from storage nodes ----

    /// Records a heartbeat, converted where it arrived (`heartbeat`).
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let mut leader = self.leader.lock().await;
        let Some(state) = leader.as_mut() else {
            return Err(self.not_leader());
        };
        let node = heartbeat.node;
        {
            let mut gone = self.gone.lock().expect("gone lock poisoned");
            if gone.get(&node) == Some(&heartbeat.address) {
                tracing::info!(%node, address = %heartbeat.address, "node heartbeats from its address again");
                gone.remove(&node);
            }
        }
        state.observed.record(
            node,
            NodeHeartbeat::new(heartbeat, Instant::now()),
            self.liveness(),
        );
        Ok(())
    }

    pub async fn leave(&self, node_id: u64) -> Result<()> {
        if !self.leader_state().await? {
            return Err(self.not_leader());
        }
        let metadata = self.metadata.read_all().await?;
        let record = metadata
            .nodes
            .get(&NodeId(node_id))
            .ok_or(CoordinatorError::UnknownNode(node_id))?;
        if !record.leaving && !record.left {
            self.metadata
                .put_node(&NodeRecord {
                    leaving: true,
                    ..record.clone()
                })
                .await?;
            tracing::info!(node = node_id, "node leaving: draining its replicas");
        }
        Ok(())
    }
}
