//! The storage node's errors, and the one place they become gRPC statuses. Every status
//! carries a structured `cairn.kv.v1.ErrorDetail` in its details so clients act on fields,
//! never on message strings.

use cairn_proto::kv::v1 as pb;
use cairn_raft::convert::InvalidRequest;
use cairn_raft::replica::ReplicaError;
use cairn_types::{Sequence, ShardId};
use prost::Message;
use tonic::{Code, Status};

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0} has no replica on this node")]
    UnknownShard(ShardId),
    #[error("{shard}: request routed with epoch {requested}, current epoch is {current}")]
    StaleEpoch {
        shard: ShardId,
        requested: u64,
        current: u64,
    },
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    #[error("write id {sequence} is older than the oldest remembered result {oldest_remembered} of its client")]
    WriteWindowExceeded {
        client_id: u64,
        sequence: Sequence,
        oldest_remembered: Sequence,
    },
    #[error("the write was applied before; its result was too large to remember")]
    AppliedResultNotRetained,
    #[error("write id reused for a different kind of operation")]
    WriteIdReused,
    /// The write's timestamp could not be applied; nothing was applied (retry: a retry gets a
    /// new timestamp).
    #[error("write refused at apply: {0}")]
    Refused(cairn_mvcc::Refusal),
    /// RemoveReplica on a replica its shard may still count (D36).
    #[error("{shard}: not removed: {still}")]
    StillMember {
        shard: ShardId,
        still: crate::removal::StillMember,
    },
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    Internal(String),
}

fn with_detail(code: Code, message: String, kind: pb::error_detail::Kind) -> Status {
    let detail = pb::ErrorDetail { kind: Some(kind) };
    Status::with_details(code, message, detail.encode_to_vec().into())
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Status {
        use pb::error_detail::Kind;
        let message = error.to_string();
        match error {
            NodeError::UnknownShard(shard) => with_detail(
                Code::NotFound,
                message,
                Kind::UnknownShard(pb::UnknownShard { shard_id: shard.0 }),
            ),
            NodeError::StaleEpoch { shard, current, .. } => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::StaleEpoch(pb::StaleEpoch {
                    shard_id: shard.0,
                    current_epoch: current,
                }),
            ),
            NodeError::InvalidRequest(InvalidRequest::Limit(limit)) => with_detail(
                Code::InvalidArgument,
                message,
                Kind::LimitExceeded(pb::LimitExceeded {
                    limit: limit.limit.to_string(),
                    max: limit.max,
                    actual: limit.actual,
                }),
            ),
            NodeError::InvalidRequest(InvalidRequest::Field { field, reason }) => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(pb::InvalidArgument {
                    field: field.to_string(),
                    reason,
                }),
            ),
            NodeError::WriteWindowExceeded {
                client_id,
                sequence,
                oldest_remembered,
            } => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::WriteWindowExceeded(pb::WriteWindowExceeded {
                    client_id,
                    sequence: sequence.0,
                    oldest_remembered: oldest_remembered.0,
                }),
            ),
            NodeError::AppliedResultNotRetained => Status::already_exists(message),
            NodeError::StillMember { .. } => Status::failed_precondition(message),
            NodeError::WriteIdReused => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(pb::InvalidArgument {
                    field: "write_id".into(),
                    reason: "reused".into(),
                }),
            ),
            NodeError::Replica(ReplicaError::NotLeader {
                shard,
                leader,
                leader_address,
            }) => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::NotLeader(pb::NotLeader {
                    shard_id: shard.0,
                    leader_node_id: leader.map_or(0, |id| id.0),
                    leader_address: leader_address.unwrap_or_default(),
                }),
            ),
            NodeError::Replica(ReplicaError::Unavailable { .. }) => Status::unavailable(message),
            // The write may or may not have applied: the caller retries with the same write id.
            NodeError::Replica(ReplicaError::OutcomeUnknown { .. }) => {
                Status::deadline_exceeded(message)
            }
            NodeError::Replica(ReplicaError::Membership { .. }) => {
                Status::failed_precondition(message)
            }
            NodeError::Replica(ReplicaError::Stopped { .. }) | NodeError::Refused(_) => {
                Status::unavailable(message)
            }
            NodeError::Replica(ReplicaError::Compacted {
                requested,
                compact_revision,
                ..
            }) => with_detail(
                Code::OutOfRange,
                message,
                Kind::Compacted(pb::Compacted {
                    requested_revision: requested.0,
                    compact_revision: compact_revision.0,
                }),
            ),
            NodeError::Replica(ReplicaError::FutureRevision {
                requested, latest, ..
            }) => with_detail(
                Code::OutOfRange,
                message,
                Kind::FutureRevision(pb::FutureRevision {
                    requested_revision: requested.0,
                    latest_revision: latest.0,
                }),
            ),
            NodeError::Replica(ReplicaError::Storage { .. }) | NodeError::Internal(_) => {
                tracing::error!(error = %message, "request failed on a storage error");
                Status::internal(message)
            }
        }
    }
}

/// Decodes the structured detail of a status, for clients and tests.
pub fn error_detail(status: &Status) -> Option<pb::error_detail::Kind> {
    pb::ErrorDetail::decode(status.details()).ok()?.kind
}
