//! One replica of one shard on this node: its Raft instance over the shared RocksDB, and the
//! operations the node's services need (propose a write, confirm a read index, change
//! membership, report status).
//!
//! The type, its accessors and its error mapping are here; its operations are split by what
//! they serve: [`lifecycle`] (open, snapshot, shut down, destroy), [`write`] (propose),
//! [`read`] (read index and lease), [`membership`] (change the group) and [`status`]
//! (report).

mod context;
mod error;
mod lifecycle;
mod membership;
mod read;
mod status;
mod txn;
mod write;

pub use context::ReplicaContext;
pub use error::ReplicaError;
pub use lifecycle::hosted_shards;
pub use status::{ReplicaCounters, ReplicaStatus, ServerRole};
pub use txn::SCAN_LOCKS_LIMIT_MAX;

use crate::latches::Latches;
use crate::state_machine::ShardStateMachine;
use crate::type_config::{LogId, ShardRaftConfig};
use cairn_types::ShardId;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{Raft, ServerState};
use rocksdb::DB;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub type ShardRaft = Raft<ShardRaftConfig, ShardStateMachine>;
type C = ShardRaftConfig;

/// This node's replica of one shard: its Raft instance and what its operations share.
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

impl ShardReplica {
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
}

fn epoch_of(membership_log_id: Option<&LogId>) -> u64 {
    membership_log_id.map_or(0, |log_id| log_id.index + 1)
}
