//! What a replica's operations answer when they fail.

use crate::error::StorageError;
use cairn_types::{NodeId, Revision, ShardId};

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
