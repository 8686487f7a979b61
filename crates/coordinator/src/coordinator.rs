//! The coordinator: its metadata group, the leader's observations, the published shard map,
//! and the reconcile loop that turns placement decisions into admin calls on storage nodes.

use crate::config::CoordinatorConfig;
use crate::error::{CoordinatorError, Result};
use crate::founding;
use crate::metadata::{ClusterInfo, Metadata, MetadataStore, NodeRecord, ShardRecord};
use crate::observed::{Liveness, NodeHeartbeat, Observed};
use crate::placement::{self, Action, NodeState, PlacementConfig, ShardView};
use crate::reconcile;
use cairn_proto::addressing::{wrong_node_of, Destination};
use cairn_proto::coordinator::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_raft::network::PeerChannels;
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex};
use tonic::service::interceptor::InterceptedService;

/// A node admin client whose calls name their destination (D35).
/// How much longer than `admin_timeout_ms` the coordinator waits for a node's own deadline error.
const ADMIN_ANSWER_MARGIN: Duration = Duration::from_secs(1);
type AdminClient = NodeAdminClient<InterceptedService<tonic::transport::Channel, Destination>>;

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
        // A loss must last one suspicion period before it counts (D40).
        let quorum_confirm_after = Duration::from_millis(config.suspect_after_ms);
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

    /// How long a replica may look like it belongs to no shard before it is deleted.
    fn stray_grace(&self) -> Duration {
        Duration::from_millis(self.config.suspect_after_ms * 2)
    }

    /// How long a shard's creation may go unreported before it is resumed (D51): longer
    /// than heartbeats lag a creation that went well.
    fn founding_grace(&self) -> Duration {
        Duration::from_millis(self.config.suspect_after_ms * 2)
    }

    /// How long a move's learner may be missing from its shard's membership.
    fn missing_learner_grace(&self) -> Duration {
        Duration::from_millis(self.config.suspect_after_ms * 2)
    }

    fn liveness(&self) -> Liveness {
        Liveness {
            suspect_after: Duration::from_millis(self.config.suspect_after_ms),
            down_after: Duration::from_millis(self.config.down_after_ms),
        }
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

    pub async fn heartbeat(&self, request: pb::HeartbeatRequest) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let mut leader = self.leader.lock().await;
        let Some(state) = leader.as_mut() else {
            return Err(self.not_leader());
        };
        let node = NodeId(request.node_id);
        {
            let mut gone = self.gone.lock().expect("gone lock poisoned");
            if gone.get(&node) == Some(&request.address) {
                tracing::info!(%node, address = %request.address, "node heartbeats from its address again");
                gone.remove(&node);
            }
        }
        state.observed.record(
            node,
            NodeHeartbeat {
                last_seen: Instant::now(),
                address: request.address,
                replicas: request.replicas,
                storage_engine: request.storage_engine,
            },
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

    // ---- the reconcile loop ----

    /// Runs the reconcile loop until the process ends. Only the leader acts.
    pub async fn run_reconcile(self: Arc<Self>) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.reconcile_once().await {
                tracing::warn!(%error, "reconcile round failed; retrying next round");
            }
        }
    }

    pub async fn reconcile_once(&self) -> Result<()> {
        if !self.leader_state().await? {
            return Ok(());
        }
        let metadata = self.metadata.read_all().await?;
        let now = Instant::now();
        let mut stale_moves = Vec::new();
        let (nodes, shards, cluster, founded, resumptions) = {
            let mut leader = self.leader.lock().await;
            let Some(state) = leader.as_mut() else {
                return Ok(());
            };
            let nodes = state.observed.node_views(&metadata, now, self.liveness());
            let mut shards = state.observed.shard_views(
                &metadata,
                state.cluster.shard_count,
                now,
                self.liveness(),
            );
            // A move whose learner never showed up (its add was lost with a leader change)
            // would wait forever: after a grace period it is dropped and planned afresh.
            for shard in &mut shards {
                let Some(mv) = &shard.pending_move else {
                    state.missing_learners.remove(&shard.id);
                    continue;
                };
                let in_membership =
                    shard.learners.contains(&mv.to) || shard.voters.contains(&mv.to);
                // A learner whose node lost the replica (deleted, or a wiped disk) never
                // catches up either.
                if in_membership && shard.hosts.contains(&mv.to) {
                    state.missing_learners.remove(&shard.id);
                    continue;
                }
                let since = *state.missing_learners.entry(shard.id).or_insert(now);
                if now.saturating_duration_since(since) > self.missing_learner_grace() {
                    tracing::warn!(shard = %shard.id, ?mv, "the move's learner never appeared; dropping the move");
                    stale_moves.push(shard.id);
                    shard.pending_move = None;
                }
            }
            // Creations interrupted by a death (D51): resumed after a grace period.
            let founded = founding::founded(&shards, &metadata.founding);
            let stalled = founding::stalled(
                &shards,
                &metadata.founding,
                &mut state.unfounded_since,
                now,
                self.founding_grace(),
            );
            let states: BTreeMap<NodeId, NodeState> =
                nodes.iter().map(|n| (n.id, n.state)).collect();
            let resumptions = founding::plan(
                &stalled,
                &metadata.founding,
                &states,
                state.cluster.replication_factor as usize,
            );
            // One attempt per grace period: an attempt blocks the round until its calls
            // answer or time out.
            for shard in &stalled {
                if resumptions.resumes(*shard) {
                    state.unfounded_since.insert(*shard, now);
                }
            }
            self.publish(state, &metadata, &nodes, &shards);
            let mut losses = crate::quorum::losses(&state.observed, &nodes, &shards);
            losses.retain(|loss| {
                !founding::hides_quorum_loss(
                    metadata.founding.get(&loss.shard),
                    resumptions.resumes(loss.shard),
                )
            });
            self.note_quorum_losses(losses, now);
            (nodes, shards, state.cluster.clone(), founded, resumptions)
        };
        // Before anything else is done to them: a founded shard must never again be taken
        // for one being created.
        for shard in founded {
            self.metadata.delete_founding(shard).await?;
            tracing::info!(%shard, "shard founded");
        }
        let config = PlacementConfig {
            replication_factor: cluster.replication_factor as usize,
            replica_tolerance: self.config.replica_tolerance,
            leader_tolerance: self.config.leader_tolerance,
            moves_in_flight_max: self.config.moves_in_flight_max,
        };
        let states: BTreeMap<NodeId, NodeState> = nodes.iter().map(|n| (n.id, n.state)).collect();
        // Counted over voters that really host their replica (D37), not the voter list.
        *self.stats.lock().expect("stats lock poisoned") = ScheduleStats {
            under_replicated_shards: shards
                .iter()
                .filter(|s| reconcile::under_replicated(s, config.replication_factor))
                .count() as u32,
            moves_in_flight: shards.iter().filter(|s| s.pending_move.is_some()).count() as u32,
        };
        for shard in stale_moves {
            let record = metadata.shards.get(&shard).cloned();
            let record = record.unwrap_or(ShardRecord {
                id: shard,
                ..ShardRecord::default()
            });
            self.metadata
                .put_shard(&ShardRecord {
                    pending_move: None,
                    ..record
                })
                .await?;
        }
        // A creation planned afresh is shown to the planner as uncreated.
        let planned: Vec<ShardView> = shards
            .iter()
            .map(|shard| {
                if resumptions.replan.contains(&shard.id) {
                    ShardView {
                        voters: BTreeSet::new(),
                        missing: BTreeSet::new(),
                        ..shard.clone()
                    }
                } else {
                    shard.clone()
                }
            })
            .collect();
        let actions: Vec<Action> = resumptions
            .actions
            .into_iter()
            .chain(placement::plan(&nodes, &planned, &config))
            .collect();
        // Shards without quorum: their moves need a leader they do not have (D40).
        let actions = self.quorum_watch().filter_actions(actions, now);
        for action in actions {
            tracing::info!(?action, "placement");
            if let Err(error) = self.execute(&action, &metadata, &shards).await {
                tracing::warn!(?action, %error, "placement action failed; it is planned again next round");
            }
        }
        self.sweep(&metadata, &shards, &states).await;
        Ok(())
    }

    fn publish(
        &self,
        state: &mut LeaderState,
        metadata: &Metadata,
        nodes: &[placement::NodeView],
        shards: &[ShardView],
    ) {
        let mut replica_counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut leader_counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        for shard in shards {
            for node in shard.voters.iter().chain(&shard.learners) {
                *replica_counts.entry(*node).or_default() += 1;
            }
            if let Some(leader) = shard.leader {
                *leader_counts.entry(leader).or_default() += 1;
            }
        }
        let shard_infos: Vec<pb::ShardInfo> = shards
            .iter()
            .map(|shard| pb::ShardInfo {
                shard_id: shard.id.0,
                epoch: state.observed.epoch_of(shard.id, shard.leader),
                voters: shard.voters.iter().map(|n| n.0).collect(),
                learners: shard.learners.iter().map(|n| n.0).collect(),
                leader_node_id: shard.leader.map_or(0, |n| n.0),
                missing_voters: shard.missing.iter().map(|n| n.0).collect(),
            })
            .collect();
        let node_infos: Vec<pb::NodeInfo> = nodes
            .iter()
            .filter_map(|view| metadata.nodes.get(&view.id).map(|record| (view, record)))
            .map(|(view, record)| pb::NodeInfo {
                node_id: record.id.0,
                address: record.address.clone(),
                labels: record
                    .labels
                    .iter()
                    .map(|(k, v)| pb::Label {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                state: node_state_to_proto(view.state) as i32,
                replica_count: replica_counts.get(&record.id).copied().unwrap_or(0),
                leader_count: leader_counts.get(&record.id).copied().unwrap_or(0),
                storage_engine: state
                    .observed
                    .heartbeat(record.id)
                    .map_or(0, |heartbeat| heartbeat.storage_engine),
            })
            .collect();
        let body = (shard_infos, node_infos);
        if state.last_map_body.as_ref() == Some(&body) {
            return;
        }
        state.map_sequence += 1;
        assert!(state.map_sequence < 1 << 32, "map sequence overflows");
        // Versions increase across leaderships: each begins at a higher revision.
        let version = (state.map_generation << 32) | state.map_sequence;
        let map = pb::ShardMap {
            version,
            cluster_id: state.cluster.cluster_id.clone(),
            shard_count: state.cluster.shard_count,
            shards: body.0.clone(),
            nodes: body.1.clone(),
        };
        state.last_map_body = Some(body);
        self.map.send_replace(Some(map));
    }

    /// An admin client for `node` whose every call names `node` and the cluster (D35).
    pub(crate) fn admin(&self, metadata: &Metadata, node: NodeId) -> Result<AdminClient> {
        let record = metadata
            .nodes
            .get(&node)
            .ok_or(CoordinatorError::UnknownNode(node.0))?;
        if self.gone.lock().expect("gone lock poisoned").get(&node) == Some(&record.address) {
            return Err(CoordinatorError::Unavailable(format!(
                "{node} is gone from {}: another node answers there",
                record.address
            )));
        }
        let channel = self
            .channels
            .channel(&record.address)
            .map_err(CoordinatorError::Unavailable)?;
        let cluster_id = metadata
            .cluster
            .as_ref()
            .map(|cluster| cluster.cluster_id.clone())
            .unwrap_or_default();
        Ok(NodeAdminClient::with_interceptor(
            channel,
            Destination::new(node.0, cluster_id),
        ))
    }

    /// The error of a failed admin call to `node`. A `WrongNode` refusal means `node` is gone
    /// from its address: it is remembered, and nothing is sent to it there again.
    pub(crate) fn call_failed(
        &self,
        metadata: &Metadata,
        node: NodeId,
        status: tonic::Status,
    ) -> CoordinatorError {
        if let Some(wrong) = wrong_node_of(&status) {
            if let Some(record) = metadata.nodes.get(&node) {
                tracing::warn!(
                    %node,
                    address = %record.address,
                    answered_by = wrong.node_id,
                    "another node answers at this node's address: no more commands go there for it"
                );
                self.gone
                    .lock()
                    .expect("gone lock poisoned")
                    .insert(node, record.address.clone());
            }
        }
        CoordinatorError::Unavailable(format!("{node}: {status}"))
    }

    /// Bounds an admin call on this side too: tonic sends `grpc-timeout` to the node but does
    /// not enforce it, so a paused node would hold the reconcile round until HTTP/2
    /// keep-alive gives up. The node's own deadline normally answers first (one second
    /// earlier).
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> std::result::Result<tonic::Response<T>, tonic::Status> {
        let limit = Duration::from_millis(self.config.admin_timeout_ms) + ADMIN_ANSWER_MARGIN;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "the node did not answer within {limit:?}"
            )))
        })
    }

    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_millis(self.config.admin_timeout_ms));
        request
    }

    async fn execute(
        &self,
        action: &Action,
        metadata: &Metadata,
        shards: &[ShardView],
    ) -> Result<()> {
        let failed = |node: NodeId| move |status| self.call_failed(metadata, node, status);
        let view = |shard: ShardId| shards.iter().find(|s| s.id == shard);
        let leader_of = |shard: ShardId| {
            view(shard)
                .and_then(|s| s.leader)
                .ok_or_else(|| CoordinatorError::Unavailable(format!("{shard} has no leader")))
        };
        let record_of = |shard: ShardId| {
            metadata.shards.get(&shard).cloned().unwrap_or(ShardRecord {
                id: shard,
                ..ShardRecord::default()
            })
        };
        match action {
            Action::CreateShard { shard, nodes } => {
                self.create_shard(metadata, *shard, nodes).await?;
            }
            Action::ResumeShard {
                shard,
                voters,
                create_on,
                founder,
            } => {
                self.resume_shard(metadata, *shard, voters, create_on, *founder)
                    .await?;
            }
            Action::StartMove { shard, mv } => {
                let leader = leader_of(*shard)?;
                // Recorded only once the learner is in: a move recorded but never started
                // would wait for a learner that is not coming. A learner added but not
                // recorded (the coordinator died in between) is removed as a stray.
                self.bounded(self.admin(metadata, mv.to)?.create_replica(
                    self.request(node_pb::CreateReplicaRequest { shard_id: shard.0 }),
                ))
                .await
                .map_err(failed(mv.to))?;
                let address = metadata
                    .nodes
                    .get(&mv.to)
                    .map(|r| r.address.clone())
                    .unwrap_or_default();
                self.bounded(self.admin(metadata, leader)?.add_learner(self.request(
                    node_pb::AddLearnerRequest {
                        shard_id: shard.0,
                        learner: Some(node_pb::ReplicaMember {
                            node_id: mv.to.0,
                            address,
                        }),
                        wait_caught_up: false,
                    },
                )))
                .await
                .map_err(failed(leader))?;
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: Some(mv.clone()),
                        ..record_of(*shard)
                    })
                    .await?;
            }
            Action::FinishMove { shard, voters } => {
                let leader = leader_of(*shard)?;
                self.bounded(
                    self.admin(metadata, leader)?
                        .change_membership(self.request(node_pb::ChangeMembershipRequest {
                            shard_id: shard.0,
                            voters: voters.iter().map(|n| n.0).collect(),
                            retain_as_learners: false,
                            remove_learners: vec![],
                        })),
                )
                .await
                .map_err(failed(leader))?;
            }
            Action::CompleteMove { shard, remove_from } => {
                // The move is done by the shard's committed configuration (D37), whose epoch
                // tells the old node its replica is no longer counted (D36).
                if let Some(node) = remove_from {
                    let excluded_at = view(*shard).map_or(0, |s| s.epoch);
                    self.remove_replica(metadata, *shard, *node, excluded_at)
                        .await;
                }
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: None,
                        ..record_of(*shard)
                    })
                    .await?;
            }
            Action::AbortMove { shard, learner } => {
                self.remove_learner(metadata, leader_of(*shard).ok(), *shard, *learner)
                    .await;
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: None,
                        ..record_of(*shard)
                    })
                    .await?;
            }
            Action::RemoveLearner { shard, node } => {
                self.remove_learner(metadata, leader_of(*shard).ok(), *shard, *node)
                    .await;
            }
            Action::TransferLeader { shard, from, to } => {
                self.bounded(self.admin(metadata, *from)?.transfer_leader(self.request(
                    node_pb::TransferLeaderRequest {
                        shard_id: shard.0,
                        to_node_id: to.0,
                    },
                )))
                .await
                .map_err(failed(*from))?;
            }
        }
        Ok(())
    }

    /// Drops a learner from the membership, then deletes its replica. Best effort: whatever
    /// fails is seen again next round.
    async fn remove_learner(
        &self,
        metadata: &Metadata,
        leader: Option<NodeId>,
        shard: ShardId,
        learner: NodeId,
    ) {
        // The epoch of the committed configuration without the learner (0: none known, and
        // the node keeps a replica it still counts as a member of).
        let mut excluded_at = 0;
        if let Some(leader) = leader {
            if let Ok(mut admin) = self.admin(metadata, leader) {
                let request = node_pb::ChangeMembershipRequest {
                    shard_id: shard.0,
                    voters: vec![],
                    retain_as_learners: false,
                    remove_learners: vec![learner.0],
                };
                match self
                    .bounded(admin.change_membership(self.request(request)))
                    .await
                {
                    Ok(response) => excluded_at = response.into_inner().epoch,
                    Err(status) => {
                        let error = self.call_failed(metadata, leader, status);
                        tracing::warn!(%shard, %learner, %error, "could not drop the learner");
                        return;
                    }
                }
            }
        }
        self.remove_replica(metadata, shard, learner, excluded_at)
            .await;
    }

    /// Asks `node` to delete its replica of `shard`; `excluded_at` is the epoch of a committed
    /// configuration without `node` (the node refuses while its own membership is newer and
    /// still counts it, D36). Best effort: what fails is seen again next round.
    async fn remove_replica(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        node: NodeId,
        excluded_at: u64,
    ) {
        match self.admin(metadata, node) {
            Ok(mut admin) => {
                let request = node_pb::RemoveReplicaRequest {
                    shard_id: shard.0,
                    excluded_at_epoch: excluded_at,
                };
                if let Err(status) = self
                    .bounded(admin.remove_replica(self.request(request)))
                    .await
                {
                    let error = self.call_failed(metadata, node, status);
                    tracing::warn!(%shard, %node, %error, "could not delete the replica; retrying later");
                }
            }
            Err(error) => {
                tracing::warn!(%shard, %node, %error, "could not reach the node to delete a replica")
            }
        }
    }

    /// Housekeeping outside placement: replicas a node still hosts but that no longer belong
    /// to their shard are deleted, and a leaving node that holds nothing becomes left.
    async fn sweep(
        &self,
        metadata: &Metadata,
        shards: &[ShardView],
        states: &BTreeMap<NodeId, NodeState>,
    ) {
        let now = Instant::now();
        let hosted: Vec<(NodeId, ShardId, u64)> = {
            let mut leader = self.leader.lock().await;
            let Some(state) = leader.as_mut() else { return };
            // The same views the planner used this round (D37): hosts from fresh heartbeats,
            // members from the committed configuration, which the planner never adds a
            // hosting node to.
            let stray = reconcile::stray_replicas(shards);
            // The views are from the start of the round and heartbeats lag: a replica just
            // created for a move looks stray for a moment. Only one that stays stray for a
            // grace period is deleted.
            let grace = self.stray_grace();
            let keys: BTreeSet<(NodeId, ShardId)> = stray
                .iter()
                .map(|(node, shard, _)| (*node, *shard))
                .collect();
            state.stray_since.retain(|key, _| keys.contains(key));
            stray
                .into_iter()
                .filter(|(node, shard, _)| {
                    let since = *state.stray_since.entry((*node, *shard)).or_insert(now);
                    now.saturating_duration_since(since) > grace
                })
                .collect()
        };
        for (node, shard, excluded_at) in hosted {
            // Never to a node that may be dead (its address may serve another node by now);
            // a left node that still runs may hold a replica its drain left behind.
            if matches!(
                states.get(&node),
                Some(NodeState::Up | NodeState::Leaving | NodeState::Left)
            ) {
                tracing::info!(%shard, %node, excluded_at, "deleting a replica that is no longer a member");
                self.remove_replica(metadata, shard, node, excluded_at)
                    .await;
            }
        }
        for record in metadata.nodes.values().filter(|r| r.leaving && !r.left) {
            let holds_nothing = shards
                .iter()
                .all(|s| !s.voters.contains(&record.id) && !s.learners.contains(&record.id));
            if holds_nothing {
                let left = NodeRecord {
                    left: true,
                    ..record.clone()
                };
                match self.metadata.put_node(&left).await {
                    Ok(()) => {
                        tracing::info!(node = %record.id, "node drained and left the cluster")
                    }
                    Err(error) => {
                        tracing::warn!(node = %record.id, %error, "could not mark the node as left")
                    }
                }
            }
        }
    }
}

pub fn node_state_to_proto(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Suspect => pb::NodeState::Suspect,
        NodeState::Down => pb::NodeState::Down,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Left => pb::NodeState::Left,
    }
}

/// The name of a storage engine as a node reported it.
pub fn engine_name(engine: i32) -> &'static str {
    match pb::StorageEngine::try_from(engine) {
        Ok(pb::StorageEngine::Disk) => "disk",
        Ok(pb::StorageEngine::Memory) => "memory",
        _ => "unknown",
    }
}
