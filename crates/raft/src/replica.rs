//! One replica of one shard on this node: its Raft instance over the shared RocksDB, and the
//! operations the node's services need (propose a write, confirm a read index, change
//! membership, report status).

use crate::command::{Command, CommandResponse, WriteResult};
use crate::error::StorageError;
use crate::group_commit::GroupCommit;
use crate::keys;
use crate::latches::Latches;
use crate::learner_removal;
use crate::log_store::LogStore;
use crate::mvcc_store::CompactionPoints;
use crate::network::{
    decode_payload, encode_payload, PeerChannels, ShardNetworkFactory, ENCODING_POSTCARD,
};
use crate::sessions::SessionLimits;
use crate::state_machine::ShardStateMachine;
use crate::type_config::{LogId, NodeAddress, ShardRaftConfig};
use crate::versioned::TimestampSource;
use cairn_proto::raft::v1 as pb;
use cairn_types::{NodeId, Revision, ShardId};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{
    ClientWriteError, ForwardToLeader, InitializeError, LinearizableReadError, RaftError,
};
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::{ChangeMembers, LinearizerOption, Raft, ReadPolicy, ServerState};
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub type ShardRaft = Raft<ShardRaftConfig, ShardStateMachine>;
type C = ShardRaftConfig;

/// Why a replica could not do what was asked. Retryable and final outcomes are different
/// variants; callers never parse messages.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("{shard}: this replica is not the leader (leader: {leader:?})")]
    NotLeader {
        shard: ShardId,
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    #[error("{shard}: unavailable: {reason}")]
    Unavailable { shard: ShardId, reason: String },
    /// The write may or may not be applied: retry with the same write id.
    #[error("{shard}: outcome of the write is unknown: {reason}")]
    OutcomeUnknown { shard: ShardId, reason: String },
    #[error("{shard}: membership change refused: {reason}")]
    Membership { shard: ShardId, reason: String },
    #[error("{shard}: replica stopped: {reason}")]
    Stopped { shard: ShardId, reason: String },
    #[error("{shard}: storage: {source}")]
    Storage {
        shard: ShardId,
        source: StorageError,
    },
    /// A read at a revision below the shard's compaction point.
    #[error("{shard}: revision {requested} is compacted (compaction point {compact_revision})")]
    Compacted {
        shard: ShardId,
        requested: Revision,
        compact_revision: Revision,
    },
    /// A read at a revision the cluster has not handed out yet.
    #[error("{shard}: revision {requested} is in the future (latest handed out: {latest})")]
    FutureRevision {
        shard: ShardId,
        requested: Revision,
        latest: Revision,
    },
}

/// Everything a replica shares with the other replicas of its node.
pub struct ReplicaContext {
    pub node_id: NodeId,
    pub db: Arc<DB>,
    /// Each shard keeps its snapshot files in `<snapshot_root>/shard-<id>/`.
    pub snapshot_root: PathBuf,
    pub channels: PeerChannels,
    pub group_commit: GroupCommit,
    pub raft_config: Arc<openraft::Config>,
    pub session_limits: SessionLimits,
    /// Longest a proposal waits to be applied.
    pub propose_timeout: Duration,
    /// Longest a linearizable read waits for its read index.
    pub read_index_timeout: Duration,
    /// How a leader confirms it may serve a linearizable read (D26).
    pub linearizable_reads: LinearizableReads,
    /// Whether a replica reopened with a vote on disk stays out of elections for one lease
    /// (D26). Storage nodes: always, whatever their own `linearizable_reads`, because a peer
    /// may lead by lease. The coordinator's group reads by lease too (its oracle fences by it).
    pub hold_votes_after_restart: bool,
    /// The node's compaction points, shared with the database's compaction filter.
    pub compaction_points: Arc<CompactionPoints>,
    /// The timestamp oracle writes take their revisions from; `None` for groups that count
    /// their own revisions (the coordinator's metadata, a statically bootstrapped node).
    pub timestamps: Option<Arc<dyn TimestampSource>>,
}

/// How a shard leader confirms, before a linearizable read, that no other replica can have
/// become leader and accepted writes it has not seen (D26).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearizableReads {
    /// Leader lease: no other replica can win an election within one lease
    /// (`election_timeout_max_ms`) of a message the leader sent and a quorum acknowledged, so
    /// for 90 % of that time the leader reads locally with no round trip. Falls back to
    /// ReadIndex when it has lapsed. Assumes the nodes' clocks advance at rates within 10 % of
    /// each other (not that they agree on the time).
    #[default]
    Lease,
    /// ReadIndex: every read waits for a quorum to acknowledge a heartbeat sent after it
    /// arrived (one round trip; concurrent reads share the round).
    ReadIndex,
}

/// Raft timing and log-compaction settings, validated by the node's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_to_keep_after_snapshot: u64,
    pub append_entries_max: u64,
}

impl RaftTiming {
    /// The openraft configuration shared by every shard of the node.
    pub fn to_openraft(&self, transfer_timeout_ms: u64) -> Result<Arc<openraft::Config>, String> {
        let config = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: transfer_timeout_ms,
            max_payload_entries: self.append_entries_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.logs_to_keep_after_snapshot,
            purge_batch_size: 256,
            // Lagging further than this many entries means catching up by snapshot.
            replication_lag_threshold: self.snapshot_logs_since_last,
            // A restarted leader stands for election like anyone else. Restoring leadership
            // without one is unsafe here: the commit point and the applied state are not
            // fsynced, so after a power loss such a leader could serve reads from a state
            // machine that misses acknowledged writes (openraft's own warning on this field).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|error| error.to_string())
    }
}

/// A replica's role in its shard's Raft group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl From<ServerState> for ServerRole {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Leader => ServerRole::Leader,
            ServerState::Follower => ServerRole::Follower,
            ServerState::Candidate => ServerRole::Candidate,
            ServerState::Learner => ServerRole::Learner,
            ServerState::Shutdown => ServerRole::Shutdown,
        }
    }
}

/// A replica's state as its node reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub shard: ShardId,
    pub role: Option<ServerRole>,
    /// The shard revision this replica has applied.
    pub revision: cairn_types::Revision,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub epoch: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Leader only: the largest number of log entries a member has yet to match.
    pub replication_lag_max: Option<u64>,
}

pub struct ShardReplica {
    pub(crate) shard: ShardId,
    pub(crate) context: Arc<ReplicaContext>,
    pub(crate) raft: ShardRaft,
    counters: Arc<ReplicaCounters>,
    /// Keys of the writes in flight on this leader (see [`crate::latches`]).
    pub(crate) latches: Arc<Latches>,
    /// Until this instant the replica stays out of elections (storage nodes, after reopening
    /// with a stored vote; see [`ShardReplica::refuses_votes`]).
    votes_refused_until: Option<Instant>,
}

/// Events of one replica an operator graphs, counted since the replica was opened.
#[derive(Debug, Default)]
pub struct ReplicaCounters {
    /// Writes proposed through this replica (as leader), whatever their outcome.
    pub proposals: AtomicU64,
    /// Of those, the ones that failed or whose outcome is unknown.
    pub proposals_failed: AtomicU64,
    /// Timestamped writes that fetched a second timestamp because a higher one had been
    /// proposed for their keys first (see [`crate::latches`]).
    pub timestamp_refetches: AtomicU64,
    /// Snapshots this replica (as leader) sent to lagging members.
    pub snapshots_sent: AtomicU64,
    /// Snapshots this replica installed from its leader.
    pub snapshots_installed: AtomicU64,
}

/// A span for work done on behalf of a request (a child of the current span), or none for
/// background work with no current span (the coordinator's own metadata reads and writes),
/// which must not start traces of its own.
fn request_child(span: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        span()
    }
}

/// Shards with a replica on this node, as recorded in the `replicas` column family.
pub fn hosted_shards(db: &DB) -> Result<Vec<ShardId>, StorageError> {
    let cf = db
        .cf_handle(keys::CF_REPLICAS)
        .expect("replicas column family exists");
    let mut shards = Vec::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, _) = item?;
        let id: [u8; 8] = key
            .as_ref()
            .try_into()
            .map_err(|_| StorageError::Inconsistent("malformed replica key".into()))?;
        shards.push(ShardId(u64::from_be_bytes(id)));
    }
    Ok(shards)
}

impl ShardReplica {
    /// Opens (or creates) this node's replica of `shard` and starts its Raft instance.
    pub async fn open(context: Arc<ReplicaContext>, shard: ShardId) -> Result<Self, ReplicaError> {
        let storage = |source| ReplicaError::Storage { shard, source };
        let db = context.db.clone();
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let cf = db
            .cf_handle(keys::CF_REPLICAS)
            .expect("replicas column family exists");
        db.put_cf_opt(cf, keys::replica_key(shard), [], &synced)
            .map_err(|e| storage(e.into()))?;

        let snapshot_dir = context.snapshot_root.join(format!("shard-{}", shard.0));
        let limits = context.session_limits.clone();
        let points = context.compaction_points.clone();
        let state_machine = tokio::task::spawn_blocking(move || {
            ShardStateMachine::open(db, shard, snapshot_dir, limits, points)
        })
        .await
        .map_err(|join| ReplicaError::Stopped {
            shard,
            reason: join.to_string(),
        })?
        .map_err(storage)?;
        let counters = Arc::new(ReplicaCounters::default());
        let state_machine = state_machine.counting_into(counters.clone());
        let log_store = LogStore::new(context.db.clone(), shard, context.group_commit.clone());
        // A replica that voted before this process started may have promised a leader not to
        // vote for anyone else for one lease; that promise lived in memory only, so keep it:
        // for one lease from now it refuses other candidates' votes and does not stand for
        // election itself (it would vote for itself) (D26).
        let votes_refused_until = (context.hold_votes_after_restart
            && log_store.has_vote().map_err(storage)?)
        .then(|| Instant::now() + Duration::from_millis(context.raft_config.election_timeout_max));
        let raft_config = match votes_refused_until {
            Some(_) => {
                let mut config = (*context.raft_config).clone();
                config.enable_elect = false;
                Arc::new(config)
            }
            None => context.raft_config.clone(),
        };
        let network = ShardNetworkFactory {
            shard,
            channels: context.channels.clone(),
            counters: counters.clone(),
        };
        // Started in a task of its own: openraft runs the instance's tasks for its whole life
        // inside the span current at `Raft::new`, and a replica is often opened while serving
        // a request (`CreateReplica`); that request's span would stay open until the process
        // stops, and the replica's Raft work would appear under it.
        let started = tokio::spawn(Raft::new(
            context.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        ))
        .await;
        let raft = match started {
            Ok(outcome) => outcome,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => {
                return Err(ReplicaError::Stopped {
                    shard,
                    reason: join.to_string(),
                })
            }
        }
        .map_err(|fatal| ReplicaError::Stopped {
            shard,
            reason: fatal.to_string(),
        })?;
        if let Some(until) = votes_refused_until {
            let raft = raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                raft.runtime_config().elect(true);
            });
        }
        Ok(Self {
            shard,
            context,
            raft,
            counters,
            latches: Arc::default(),
            votes_refused_until,
        })
    }

    /// How much longer this replica must refuse vote requests, if at all. A replica reopened
    /// with a vote on disk refuses votes for one leader lease after opening, except for a
    /// leadership transfer (which the leader itself started): before the restart it may have
    /// acknowledged a leader whose lease is still running, and a vote for another candidate now
    /// could let two leaders serve reads at once (D26).
    pub fn refuses_votes(&self, leadership_transfer: bool) -> Option<Duration> {
        let until = self.votes_refused_until?;
        let remaining = until.saturating_duration_since(Instant::now());
        (!leadership_transfer && !remaining.is_zero()).then_some(remaining)
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn counters(&self) -> &ReplicaCounters {
        &self.counters
    }

    /// Whether this replica currently leads its shard.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Returns once this replica no longer leads (its handed-off leadership was taken over,
    /// or lost), woken by Raft's own state changes. Callers bound the wait.
    pub async fn wait_until_not_leader(&self) {
        let mut metrics = self.raft.metrics();
        while metrics.borrow_watched().state == ServerState::Leader {
            if metrics.changed().await.is_err() {
                return; // Raft stopped: it leads nothing any more
            }
        }
    }

    pub fn raft(&self) -> &ShardRaft {
        &self.raft
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.context.db
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.context
            .snapshot_root
            .join(format!("shard-{}", self.shard.0))
    }

    /// The shard's membership version: one more than the log index of its current
    /// membership config, so that it starts at 1 and 0 can mean "not known".
    pub fn epoch(&self) -> u64 {
        // Borrowed, not cloned: every request checks it, and the metrics hold maps.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        epoch_of(metrics.membership_config.log_id().as_ref())
    }

    pub fn status(&self) -> ReplicaStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        ReplicaStatus {
            shard: self.shard,
            role: Some(metrics.state.into()),
            revision: cairn_types::Revision(0),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            committed_index: metrics.local_committed.as_ref().map_or(0, |l| l.index),
            applied_index: metrics.last_applied.as_ref().map_or(0, |l| l.index),
            snapshot_index: metrics.snapshot.as_ref().map_or(0, |l| l.index),
            purged_index: metrics.purged.as_ref().map_or(0, |l| l.index),
            epoch: epoch_of(metrics.membership_config.log_id().as_ref()),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            // On the leader: how far the slowest member's matched log is behind the last log.
            replication_lag_max: metrics.replication.as_ref().map(|replication| {
                let last = metrics.last_log_index.unwrap_or(0);
                replication
                    .values()
                    .map(|matched| last.saturating_sub(matched.as_ref().map_or(0, |l| l.index)))
                    .max()
                    .unwrap_or(0)
            }),
        }
    }

    /// Estimated bytes this replica's keys and log take on disk (RocksDB's estimate over the
    /// shard's key ranges; data still in memtables is not counted).
    pub fn approximate_size_bytes(&self) -> u64 {
        let db = &self.context.db;
        let prefix = keys::shard_prefix(self.shard);
        let upper = keys::shard_upper_bound(self.shard);
        let range = rocksdb::Range::new(&prefix, &upper);
        [keys::CF_WRITE, keys::CF_RAFT_LOG, keys::CF_SESSIONS]
            .iter()
            .filter_map(|name| db.cf_handle(name))
            .map(|cf| {
                db.get_approximate_sizes_cf(&cf, std::slice::from_ref(&range))
                    .iter()
                    .sum::<u64>()
            })
            .sum()
    }

    /// [`Self::status`] plus the applied revision, read from storage.
    pub async fn status_with_data(&self) -> Result<ReplicaStatus, ReplicaError> {
        let mut status = self.status();
        let db = self.context.db.clone();
        let shard = self.shard;
        status.revision = tokio::task::spawn_blocking(move || {
            crate::state_machine::read_revision(&db, None, shard)
        })
        .await
        .map_err(|join| ReplicaError::Stopped {
            shard,
            reason: join.to_string(),
        })?
        .map_err(|source| ReplicaError::Storage { shard, source })?;
        Ok(status)
    }

    pub(crate) fn not_leader(&self, forward: &ForwardToLeader<C>) -> ReplicaError {
        if forward.leader_id.is_none() {
            // Raft's answer names no leader while its vote is not yet committed, though the
            // replica may already have heard from one: the best hint is what it knows.
            return self.not_leader_now();
        }
        ReplicaError::NotLeader {
            shard: self.shard,
            leader: forward.leader_id,
            leader_address: forward
                .leader_node
                .as_ref()
                .map(|node| node.address.clone()),
        }
    }

    /// "Not the leader", naming the leader this replica last heard from, if any.
    pub(crate) fn not_leader_now(&self) -> ReplicaError {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader = metrics
            .current_leader
            .filter(|id| *id != self.context.node_id);
        let leader_address = leader.and_then(|leader| {
            metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|node| node.address.clone())
        });
        ReplicaError::NotLeader {
            shard: self.shard,
            leader,
            leader_address,
        }
    }

    fn fatal(&self, error: impl std::fmt::Display) -> ReplicaError {
        ReplicaError::Stopped {
            shard: self.shard,
            reason: error.to_string(),
        }
    }

    fn write_error(&self, error: RaftError<C, ClientWriteError<C>>) -> ReplicaError {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                self.not_leader(&forward)
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
                ReplicaError::OutcomeUnknown {
                    shard: self.shard,
                    reason: "leader changed before the entry committed".into(),
                }
            }
            RaftError::APIError(other) => ReplicaError::Membership {
                shard: self.shard,
                reason: other.to_string(),
            },
            RaftError::Fatal(fatal) => self.fatal(fatal),
        }
    }

    /// Founds the shard's Raft group with `members` as voters. Returns false if the group
    /// already exists (initialising twice is harmless).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, NodeAddress>,
    ) -> Result<bool, ReplicaError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(other)) => Err(ReplicaError::Membership {
                shard: self.shard,
                reason: other.to_string(),
            }),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    /// Proposes `command` and waits until it is applied; returns the state machine's result.
    pub async fn write(&self, command: Command) -> Result<WriteResult, ReplicaError> {
        self.submit(command).await?.await
    }

    /// Hands `command` to Raft and returns once its place in the log order is fixed (Raft
    /// appends proposals in the order it receives them); the returned future waits until it
    /// is applied. A writer that must order its entry before a later one (the key latches of
    /// timestamped writes) can let the later one go as soon as this returns.
    pub async fn submit(
        &self,
        mut command: Command,
    ) -> Result<
        impl std::future::Future<Output = Result<WriteResult, ReplicaError>> + '_,
        ReplicaError,
    > {
        let timeout = self.context.propose_timeout;
        // The span covers the log append, replication to a quorum and the apply; a sampled
        // request's entry carries it so replicas' spans for this entry join the same trace.
        let span = request_child(|| tracing::info_span!("raft.propose", shard = self.shard.0));
        command.trace = cairn_trace_context::TraceParent::of(&span);
        self.counters.proposals.fetch_add(1, Ordering::Relaxed);
        let (responder, applied) = openraft::impls::ProgressResponder::complete_only();
        let submitted_at = tokio::time::Instant::now();
        if let Err(fatal) = self.raft.client_write_ff(command, Some(responder)).await {
            self.counters
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed);
            return Err(self.fatal(fatal));
        }
        Ok(async move {
            let response = tokio::time::timeout_at(submitted_at + timeout, applied)
                .instrument(span)
                .await
                .map_err(|_| ReplicaError::OutcomeUnknown {
                    shard: self.shard,
                    reason: format!("not applied within {timeout:?}"),
                })
                .and_then(|answered| {
                    // Raft drops the responder only when it stops: the entry may be in the log.
                    answered.map_err(|_| ReplicaError::OutcomeUnknown {
                        shard: self.shard,
                        reason: "raft stopped before answering".into(),
                    })
                })
                .and_then(|written| {
                    written.map_err(|error| self.write_error(RaftError::APIError(error)))
                })
                .inspect_err(|_| {
                    self.counters
                        .proposals_failed
                        .fetch_add(1, Ordering::Relaxed);
                })?;
            match response.data {
                CommandResponse::Write(result) => Ok(result),
                CommandResponse::None => Err(ReplicaError::Stopped {
                    shard: self.shard,
                    reason: "state machine returned no result for a write".into(),
                }),
            }
        })
    }

    /// Returns once this replica has applied every write acknowledged before the call: on the
    /// leader by its lease or, when that has lapsed or is off, by confirming leadership with a
    /// quorum (ReadIndex); on a follower by asking the leader for its read index and waiting
    /// to apply up to it.
    pub async fn linearizable_barrier(&self) -> Result<(), ReplicaError> {
        let span = request_child(|| tracing::info_span!("raft.read_index", shard = self.shard.0));
        self.read_index_barrier().instrument(span).await
    }

    async fn read_index_barrier(&self) -> Result<(), ReplicaError> {
        let timeout = self.context.read_index_timeout;
        let read_log_id = if self.raft.is_leader() {
            None
        } else {
            let metrics = self.raft.metrics().borrow_watched().clone();
            let Some(leader) = metrics.current_leader else {
                return Err(ReplicaError::NotLeader {
                    shard: self.shard,
                    leader: None,
                    leader_address: None,
                });
            };
            let address = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.address.clone());
            let Some(address) = address else {
                return Err(ReplicaError::NotLeader {
                    shard: self.shard,
                    leader: Some(leader),
                    leader_address: None,
                });
            };
            Some(self.fetch_read_index(leader, &address, timeout).await?)
        };
        match read_log_id {
            None if self.context.linearizable_reads == LinearizableReads::Lease => {
                match self.lease_read_log_id().await? {
                    Some(read_log_id) => self.await_applied(read_log_id, timeout).await,
                    // The lease has lapsed (no quorum acknowledged recently): ReadIndex.
                    None => self.confirm_by_read_index(timeout).await,
                }
            }
            None => self.confirm_by_read_index(timeout).await,
            Some(read_log_id) => self.await_applied(read_log_id, timeout).await,
        }
    }

    /// The read index under the leader's lease, with no round trip; `None` when the lease has
    /// lapsed and a quorum has to be asked.
    async fn lease_read_log_id(&self) -> Result<Option<ReadLogId<C>>, ReplicaError> {
        // 90 % of the lease: the followers' leases last the whole of it, so clocks that run up
        // to 10 % apart in rate over one lease cannot let a new leader in while we still read.
        let lease = Duration::from_millis(self.context.raft_config.election_timeout_max);
        let option = LinearizerOption::new(Some(lease.mul_f64(0.9)), false)
            .with_wait_timeout(Duration::ZERO);
        match self.raft.get_read_linearizer(option).await {
            Ok(linearizer) => Ok(Some(*linearizer.read_log_id())),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Ok(None),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    /// Waits until this replica has applied up to `read_log_id`.
    async fn await_applied(
        &self,
        read_log_id: ReadLogId<C>,
        timeout: Duration,
    ) -> Result<(), ReplicaError> {
        // Usually already applied: check the published metrics in place (openraft's own wait
        // would subscribe and copy them), with openraft's comparison.
        if self.raft.metrics().borrow_watched().last_applied.as_ref() >= Some(read_log_id.log_id())
        {
            return Ok(());
        }
        let linearizer = Linearizer::new(self.context.node_id, read_log_id, None);
        match linearizer.try_await_ready(&self.raft, Some(timeout)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ReplicaError::Unavailable {
                shard: self.shard,
                reason: format!("did not apply up to the read index within {timeout:?}"),
            }),
            Err(fatal) => Err(self.fatal(fatal)),
        }
    }

    /// ReadIndex on the leader: a quorum acknowledges a heartbeat sent after the call, then
    /// this replica applies up to the index it had when the call arrived.
    async fn confirm_by_read_index(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let unavailable = |reason: String| ReplicaError::Unavailable {
            shard: self.shard,
            reason,
        };
        let confirmed = tokio::time::timeout(
            timeout,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        .map_err(|_| unavailable(format!("read index not confirmed within {timeout:?}")))?;
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(RaftError::APIError(other)) => Err(unavailable(other.to_string())),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    async fn fetch_read_index(
        &self,
        leader: NodeId,
        address: &str,
        timeout: Duration,
    ) -> Result<ReadLogId<C>, ReplicaError> {
        let unavailable = |reason: String| ReplicaError::Unavailable {
            shard: self.shard,
            reason,
        };
        let mut client = self.context.channels.client(address).map_err(unavailable)?;
        let mut request = tonic::Request::new(pb::RaftRequest {
            shard_id: self.shard.0,
            to_node_id: leader.0,
            encoding: ENCODING_POSTCARD,
            payload: Default::default(),
        });
        request.set_timeout(timeout);
        self.context
            .channels
            .destination(leader)
            .stamp(request.metadata_mut());
        let reply = tokio::time::timeout(timeout, client.read_index(request))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "leader {leader} gave no read index within {timeout:?}"
                ))
            })?
            .map_err(|status| {
                unavailable(format!("read index from {leader}: {}", status.message()))
            })?
            .into_inner();
        let answer: Result<ReadLogId<C>, ReadIndexRefusal> =
            decode_payload(reply.encoding, &reply.payload).map_err(unavailable)?;
        answer.map_err(|refusal| match refusal {
            ReadIndexRefusal::NotLeader {
                leader,
                leader_address,
            } => ReplicaError::NotLeader {
                shard: self.shard,
                leader,
                leader_address,
            },
            ReadIndexRefusal::Unavailable(reason) => unavailable(reason),
        })
    }

    /// Leader side of a follower's ReadIndex request.
    pub async fn serve_read_index(&self) -> Vec<u8> {
        if self.context.linearizable_reads == LinearizableReads::Lease {
            // A lapsed lease or another leader: ReadIndex below answers either.
            if let Ok(Some(read_log_id)) = self.lease_read_log_id().await {
                let answer: Result<ReadLogId<C>, ReadIndexRefusal> = Ok(read_log_id);
                return encode_payload(&answer);
            }
        }
        let answer: Result<ReadLogId<C>, ReadIndexRefusal> =
            match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
                Ok(linearizer) => Ok(*linearizer.read_log_id()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                    Err(ReadIndexRefusal::NotLeader {
                        leader: forward.leader_id,
                        leader_address: forward.leader_node.map(|node| node.address),
                    })
                }
                Err(other) => Err(ReadIndexRefusal::Unavailable(other.to_string())),
            };
        encode_payload(&answer)
    }

    pub async fn add_learner(
        &self,
        node: NodeId,
        address: String,
        wait_caught_up: bool,
    ) -> Result<u64, ReplicaError> {
        let response = self
            .raft
            .add_learner(node, NodeAddress { address }, wait_caught_up)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain_as_learners: bool,
    ) -> Result<u64, ReplicaError> {
        if voters.is_empty() {
            return Err(ReplicaError::Membership {
                shard: self.shard,
                reason: "a shard needs at least one voter".into(),
            });
        }
        let response = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), retain_as_learners)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    /// Drops `learners` from the shard's membership (voters stay as they are). Answers the
    /// epoch of a committed configuration without them, or 0 if none is known; refuses to
    /// drop a voter of the latest configuration (see [`learner_removal::decide`], D36).
    pub async fn remove_learners(&self, learners: BTreeSet<NodeId>) -> Result<u64, ReplicaError> {
        let decision = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let members: BTreeSet<NodeId> = membership.learner_ids().collect();
            learner_removal::decide(
                &learners,
                &learner_removal::Effective {
                    epoch: epoch_of(metrics.membership_config.log_id().as_ref()),
                    voters: &voters,
                    learners: &members,
                    committed_index: metrics.local_committed.as_ref().map(|l| l.index),
                },
            )
        };
        let present = match decision {
            Ok(learner_removal::LearnerRemoval::Remove(present)) => present,
            Ok(learner_removal::LearnerRemoval::Absent { epoch }) => return Ok(epoch),
            Err(learner_removal::IsVoter(voter)) => {
                return Err(ReplicaError::Membership {
                    shard: self.shard,
                    reason: format!(
                        "{voter} is a voter of the latest configuration, not a learner to drop"
                    ),
                })
            }
        };
        let response = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(present), false)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ReplicaError> {
        if !self.raft.is_leader() {
            let leader = self.raft.current_leader().await;
            return Err(ReplicaError::NotLeader {
                shard: self.shard,
                leader,
                leader_address: None,
            });
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|fatal| self.fatal(fatal))
    }

    /// Before this process stops: if this replica leads, asks the voter whose log matches the
    /// most of the leader's to take over (openraft's leadership transfer: it stands for
    /// election at once, without waiting for an election timeout). Returns the chosen voter;
    /// `None` when this replica does not lead or leads alone.
    pub async fn hand_off_leadership(&self) -> Option<NodeId> {
        let target = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.current_leader != Some(self.context.node_id) {
                return None;
            }
            let replication = metrics.replication.as_ref()?;
            metrics
                .membership_config
                .membership()
                .voter_ids()
                .filter(|voter| *voter != self.context.node_id)
                .max_by_key(|voter| {
                    replication
                        .get(voter)
                        .and_then(|matched| matched.as_ref().map(|log_id| log_id.index))
                        .unwrap_or(0)
                })?
        };
        match self.transfer_leader(target).await {
            Ok(()) => Some(target),
            Err(error) => {
                tracing::warn!(shard = %self.shard, %target, %error, "could not hand off leadership");
                None
            }
        }
    }

    /// Unsafe recovery (D41): stops this replica's Raft instance and appends a membership
    /// entry that makes this node the shard's only voter. The caller reopens the replica,
    /// which then elects itself and commits whatever its log holds. Returns the replica's
    /// status before (what the survivor had: writes after it may be lost) and the shard's
    /// new epoch. Refused when this replica is not a voter (a learner may miss committed
    /// entries that a voter has).
    pub async fn force_single_voter(&self) -> Result<(ReplicaStatus, u64), ReplicaError> {
        let before = self.status_with_data().await?;
        let me = self.context.node_id;
        if !before.voters.contains(&me) {
            return Err(ReplicaError::Membership {
                shard: self.shard,
                reason: format!(
                    "this replica is not a voter of its shard (voters {:?}): recover from a voter",
                    before.voters
                ),
            });
        }
        let address = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&me)
            .cloned()
            .unwrap_or_default();
        self.shutdown().await;
        let log_store = LogStore::new(
            self.context.db.clone(),
            self.shard,
            self.context.group_commit.clone(),
        );
        let shard = self.shard;
        let log_id =
            tokio::task::spawn_blocking(move || log_store.append_forced_membership(me, address))
                .await
                .map_err(|join| ReplicaError::Stopped {
                    shard,
                    reason: join.to_string(),
                })?
                .map_err(|source| ReplicaError::Storage { shard, source })?;
        tracing::warn!(
            %shard,
            last_log_index = before.last_log_index,
            applied_index = before.applied_index,
            revision = before.revision.0,
            forced_index = log_id.index(),
            "UNSAFE RECOVERY: this replica is now the shard's only voter"
        );
        Ok((before, epoch_of(Some(&log_id))))
    }

    /// Builds a snapshot now and waits for it; with `purge_log`, also purges the log up to it.
    pub async fn snapshot_now(
        &self,
        purge_log: bool,
        timeout: Duration,
    ) -> Result<u64, ReplicaError> {
        let applied = self.raft.metrics().borrow_watched().last_applied;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|fatal| self.fatal(fatal))?;
        let target = applied.map_or(0, |log_id: LogId| log_id.index);
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.snapshot.as_ref().map_or(0, |l| l.index) >= target && m.snapshot.is_some(),
                "snapshot built",
            )
            .await
            .map_err(|error| ReplicaError::Unavailable {
                shard: self.shard,
                reason: error.to_string(),
            })?;
        let index = metrics.snapshot.as_ref().map_or(0, |l| l.index);
        if purge_log {
            self.raft
                .trigger()
                .purge_log(index)
                .await
                .map_err(|fatal| self.fatal(fatal))?;
        }
        Ok(index)
    }

    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(shard = %self.shard, %error, "raft shutdown reported an error");
        }
    }

    /// Stops the replica and deletes its data from this node. Blocking I/O inside.
    pub async fn destroy(&self) -> Result<(), ReplicaError> {
        self.shutdown().await;
        let shard = self.shard;
        let db = self.context.db.clone();
        let dir = self.snapshot_dir();
        let points = self.context.compaction_points.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut batch = WriteBatch::default();
            let prefix = keys::shard_prefix(shard);
            let upper = keys::shard_upper_bound(shard);
            for name in [
                keys::CF_RAFT_LOG,
                keys::CF_RAFT_STATE,
                keys::CF_WRITE,
                keys::CF_LOCK,
                keys::CF_SESSIONS,
                keys::CF_SM_STATE,
            ] {
                let cf = db.cf_handle(name).expect("column family exists");
                batch.delete_range_cf(cf, &prefix[..], &upper[..]);
            }
            let cf = db
                .cf_handle(keys::CF_REPLICAS)
                .expect("replicas column family exists");
            batch.delete_cf(cf, keys::replica_key(shard));
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            db.write_opt(batch, &synced)?;
            points.reset(shard, Revision(0));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            Ok(())
        })
        .await
        .map_err(|join| ReplicaError::Stopped {
            shard,
            reason: join.to_string(),
        })?
        .map_err(|source| ReplicaError::Storage { shard, source })
    }
}

fn epoch_of(membership_log_id: Option<&LogId>) -> u64 {
    membership_log_id.map_or(0, |log_id| log_id.index + 1)
}

/// Why a leader did not hand out a read index.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum ReadIndexRefusal {
    NotLeader {
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_commit::{GroupCommitLimits, GroupCommitStats};
    use crate::network::{PeerChannels, TransportConfig};
    use crate::type_config::Vote;
    use openraft::storage::RaftLogStorage;

    fn context(db: Arc<DB>, root: PathBuf, reads: LinearizableReads) -> Arc<ReplicaContext> {
        context_with_election(db, root, reads, 1_000)
    }

    /// `election_timeout_min_ms` varies; the lease (`election_timeout_max_ms`) is 2 s.
    fn context_with_election(
        db: Arc<DB>,
        root: PathBuf,
        reads: LinearizableReads,
        election_timeout_min_ms: u64,
    ) -> Arc<ReplicaContext> {
        let timing = RaftTiming {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms,
            election_timeout_max_ms: 2_000,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 64,
        };
        let group_commit = GroupCommit::start(
            db.clone(),
            GroupCommitLimits::default(),
            Arc::new(GroupCommitStats::default()),
        );
        Arc::new(ReplicaContext {
            node_id: NodeId(1),
            db,
            snapshot_root: root,
            channels: PeerChannels::new(TransportConfig::default()),
            group_commit,
            raft_config: timing.to_openraft(60_000).unwrap(),
            session_limits: SessionLimits::default(),
            propose_timeout: Duration::from_secs(5),
            read_index_timeout: Duration::from_secs(5),
            linearizable_reads: reads,
            hold_votes_after_restart: reads == LinearizableReads::Lease,
            compaction_points: Arc::default(),
            timestamps: None,
        })
    }

    /// A replica that voted before a restart keeps refusing votes for one lease (its lease
    /// promise lived in memory); one that never voted, a leadership transfer, and ReadIndex
    /// mode are not held back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_replica_that_voted_refuses_votes_for_one_lease() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let lease_reads = context(
            db.clone(),
            dir.path().join("snapshots"),
            LinearizableReads::Lease,
        );
        // Shard 1 voted in an earlier life of the node; shard 2 never did.
        let mut store = LogStore::new(db.clone(), ShardId(1), lease_reads.group_commit.clone());
        let vote: Vote = openraft::Vote::new_committed(3, NodeId(2));
        store.save_vote(&vote).await.unwrap();

        let voted = ShardReplica::open(lease_reads.clone(), ShardId(1))
            .await
            .unwrap();
        let remaining = voted
            .refuses_votes(false)
            .expect("a reopened replica that voted refuses votes");
        assert!(remaining <= Duration::from_millis(2_000), "{remaining:?}");
        assert_eq!(
            voted.refuses_votes(true),
            None,
            "a leadership transfer started by the leader is not held back"
        );

        let fresh = ShardReplica::open(lease_reads, ShardId(2)).await.unwrap();
        assert_eq!(
            fresh.refuses_votes(false),
            None,
            "a replica that never voted promised nothing"
        );

        let read_index = context(
            db,
            dir.path().join("snapshots"),
            LinearizableReads::ReadIndex,
        );
        let mut store = LogStore::new(
            read_index.db.clone(),
            ShardId(3),
            read_index.group_commit.clone(),
        );
        store.save_vote(&vote).await.unwrap();
        let without_lease = ShardReplica::open(read_index, ShardId(3)).await.unwrap();
        assert_eq!(
            without_lease.refuses_votes(false),
            None,
            "a group that never reads by lease (the coordinator's) needs no vote hold"
        );

        for replica in [voted, fresh, without_lease] {
            replica.raft().shutdown().await.unwrap();
        }
    }

    /// The hold also keeps a reopened replica from standing for election (it would vote for
    /// itself): a one-member shard that led before a restart is leaderless for the whole
    /// lease, although its election timeout (150-2000 ms) would have fired, and leads again
    /// after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_replica_that_voted_does_not_stand_for_election_during_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let context = context_with_election(
            db,
            dir.path().join("snapshots"),
            LinearizableReads::Lease,
            150,
        );
        let shard = ShardId(7);
        let replica = ShardReplica::open(context.clone(), shard).await.unwrap();
        let members = BTreeMap::from([(
            NodeId(1),
            NodeAddress {
                address: "127.0.0.1:1".into(),
            },
        )]);
        assert!(replica.initialize(members).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica.is_leader() {
            assert!(
                Instant::now() < deadline,
                "the one-member shard never elected itself"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica.raft().shutdown().await.unwrap();
        drop(replica);

        let reopened = ShardReplica::open(context, shard).await.unwrap();
        let opened = Instant::now();
        assert!(reopened.refuses_votes(false).is_some());
        // Watch until just before the hold ends: no election, so no leader.
        while opened.elapsed() < Duration::from_millis(1_900) {
            assert!(
                !reopened.is_leader(),
                "led {:?} after reopening, inside the hold",
                opened.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reopened.is_leader() {
            assert!(
                Instant::now() < deadline,
                "no election after the hold ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            opened.elapsed() >= Duration::from_millis(2_000),
            "led {:?} after reopening",
            opened.elapsed()
        );
        reopened.raft().shutdown().await.unwrap();
    }

    /// Records the names of the spans that close.
    struct SpanCloses(Arc<std::sync::Mutex<Vec<&'static str>>>);

    impl<S> tracing_subscriber::Layer<S> for SpanCloses
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
            if let Some(span) = ctx.span(&id) {
                self.0.lock().unwrap().push(span.name());
            }
        }
    }

    /// A replica opened while a request is served (`CreateReplica`) does not keep the
    /// request's span open for its life: the Raft instance's tasks run outside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opened_replica_does_not_hold_the_span_it_was_opened_in() {
        use tracing::Instrument;
        use tracing_subscriber::layer::SubscriberExt;
        let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(SpanCloses(closed.clone()));
        let _default = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let context = context(db, dir.path().join("snapshots"), LinearizableReads::Lease);

        let request = tracing::info_span!("create_replica_request");
        let replica = ShardReplica::open(context, ShardId(1))
            .instrument(request)
            .await
            .unwrap();
        assert!(
            closed.lock().unwrap().contains(&"create_replica_request"),
            "the request's span is still open while the replica runs: {:?}",
            closed.lock().unwrap()
        );
        replica.raft().shutdown().await.unwrap();
    }
}
