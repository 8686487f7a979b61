//! What a replica reports about itself: its role and log positions (from Raft's metrics), the
//! revision it applied and its size (from storage), and the events an operator graphs.

use super::{epoch_of, ReplicaError, ShardReplica};
use crate::keys;
use cairn_types::{NodeId, ShardId};
use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use std::sync::atomic::AtomicU64;

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

impl ShardReplica {
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
}
