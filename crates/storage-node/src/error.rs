//! The storage node's errors, and the one place they become gRPC statuses. Every status
//! carries a structured `cairn.kv.v1.ErrorDetail` in its details where clients can act on
//! fields, never on message strings. A replica's own errors map by the shared
//! `From<ReplicaError> for Status` (cairn-raft), so they read the same at every service.

use cairn_mvcc::TxnError;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::with_detail;
use cairn_raft::convert::InvalidRequest;
use cairn_raft::replica::ReplicaError;
use cairn_types::{Sequence, ShardId};
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
    /// A transaction rule refused (or a one-phase write or a read met a lock): nothing was
    /// applied.
    #[error(transparent)]
    Txn(#[from] cairn_mvcc::TxnError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    /// A request that lacks a field it must have (a protobuf message field left unset).
    pub fn missing(field: &'static str) -> Self {
        NodeError::InvalidRequest(InvalidRequest::Field {
            field,
            reason: "must be set".into(),
        })
    }
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Status {
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
            NodeError::Refused(_) => Status::unavailable(message),
            NodeError::Txn(refusal) => txn_status(refusal, message),
            NodeError::Replica(replica) => replica.into(),
            NodeError::Internal(_) => {
                tracing::error!(error = %message, "request failed on an internal error");
                Status::internal(message)
            }
        }
    }
}

/// The status of a transaction rule's refusal (D93): what the gateway acts on is the detail.
fn txn_status(refusal: TxnError, message: String) -> Status {
    let invalid = |field: &str| {
        with_detail(
            Code::InvalidArgument,
            message.clone(),
            Kind::InvalidArgument(pb::InvalidArgument {
                field: field.into(),
                reason: message.clone(),
            }),
        )
    };
    match refusal {
        TxnError::KeyLocked(lock) => with_detail(
            Code::FailedPrecondition,
            message,
            Kind::KeyLocked(crate::txn_service::key_locked(lock)),
        ),
        TxnError::WriteConflict {
            key,
            start_ts,
            conflicting_revision,
            ..
        } => with_detail(
            Code::Aborted,
            message,
            Kind::Conflict(pb::Conflict {
                key,
                start_revision: start_ts.0,
                conflicting_revision: conflicting_revision.0,
            }),
        ),
        TxnError::RolledBack { key, start_ts } => with_detail(
            Code::Aborted,
            message,
            Kind::TxnRolledBack(pb::TxnRolledBack {
                key,
                start_ts: start_ts.0,
            }),
        ),
        TxnError::TxnNotFound { key, start_ts } => with_detail(
            Code::NotFound,
            message,
            Kind::TxnNotFound(pb::TxnNotFound {
                key,
                start_ts: start_ts.0,
            }),
        ),
        TxnError::AtOrBelowCompaction {
            start_ts,
            compact_revision,
            ..
        }
        | TxnError::StatusCompacted {
            start_ts,
            compact_revision,
            ..
        } => with_detail(
            Code::OutOfRange,
            message,
            Kind::Compacted(pb::Compacted {
                requested_revision: start_ts.0,
                compact_revision: compact_revision.0,
            }),
        ),
        TxnError::CommitNotAboveStart { .. } => invalid("commit_ts"),
        TxnError::ReadOnlyPrimary { .. } | TxnError::NotPrimary { .. } => invalid("primary"),
        // The protocol was broken (a late retry of a transaction that committed, a commit
        // below a newer version): refused, never retried.
        TxnError::AlreadyCommitted { .. } | TxnError::NotAboveNewest { .. } => {
            Status::failed_precondition(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::status::detail_of;
    use cairn_types::Revision;

    #[test]
    fn node_errors_map_to_their_code_and_detail() {
        let shard = ShardId(2);
        let cases: Vec<(NodeError, Code, Option<Kind>)> = vec![
            (
                NodeError::UnknownShard(shard),
                Code::NotFound,
                Some(Kind::UnknownShard(pb::UnknownShard { shard_id: 2 })),
            ),
            (
                NodeError::StaleEpoch {
                    shard,
                    requested: 3,
                    current: 5,
                },
                Code::FailedPrecondition,
                Some(Kind::StaleEpoch(pb::StaleEpoch {
                    shard_id: 2,
                    current_epoch: 5,
                })),
            ),
            (
                NodeError::missing("request"),
                Code::InvalidArgument,
                Some(Kind::InvalidArgument(pb::InvalidArgument {
                    field: "request".into(),
                    reason: "must be set".into(),
                })),
            ),
            (
                NodeError::WriteWindowExceeded {
                    client_id: 1,
                    sequence: Sequence(2),
                    oldest_remembered: Sequence(3),
                },
                Code::FailedPrecondition,
                Some(Kind::WriteWindowExceeded(pb::WriteWindowExceeded {
                    client_id: 1,
                    sequence: 2,
                    oldest_remembered: 3,
                })),
            ),
            (
                NodeError::AppliedResultNotRetained,
                Code::AlreadyExists,
                None,
            ),
            (
                NodeError::WriteIdReused,
                Code::InvalidArgument,
                Some(Kind::InvalidArgument(pb::InvalidArgument {
                    field: "write_id".into(),
                    reason: "reused".into(),
                })),
            ),
            (
                NodeError::Replica(ReplicaError::Stopped {
                    shard,
                    reason: "r".into(),
                }),
                Code::Unavailable,
                None,
            ),
            (NodeError::Internal("x".into()), Code::Internal, None),
            (
                NodeError::Txn(TxnError::KeyLocked(cairn_mvcc::LockInfo {
                    key: b"k".to_vec(),
                    primary: b"p".to_vec(),
                    start_ts: Revision(4),
                    ttl_ms: 100,
                    created_at_ms: 7,
                    kind: cairn_mvcc::LockKind::Delete,
                })),
                Code::FailedPrecondition,
                Some(Kind::KeyLocked(pb::KeyLocked {
                    key: b"k".to_vec(),
                    primary: b"p".to_vec(),
                    start_ts: 4,
                    ttl_ms: 100,
                    created_at_ms: 7,
                    kind: pb::key_locked::Kind::Delete as i32,
                })),
            ),
            (
                NodeError::Txn(TxnError::WriteConflict {
                    key: b"k".to_vec(),
                    start_ts: Revision(4),
                    conflicting_revision: Revision(6),
                    conflicting_start_ts: None,
                }),
                Code::Aborted,
                Some(Kind::Conflict(pb::Conflict {
                    key: b"k".to_vec(),
                    start_revision: 4,
                    conflicting_revision: 6,
                })),
            ),
            (
                NodeError::Txn(TxnError::RolledBack {
                    key: b"k".to_vec(),
                    start_ts: Revision(4),
                }),
                Code::Aborted,
                Some(Kind::TxnRolledBack(pb::TxnRolledBack {
                    key: b"k".to_vec(),
                    start_ts: 4,
                })),
            ),
            (
                NodeError::Txn(TxnError::TxnNotFound {
                    key: b"k".to_vec(),
                    start_ts: Revision(4),
                }),
                Code::NotFound,
                Some(Kind::TxnNotFound(pb::TxnNotFound {
                    key: b"k".to_vec(),
                    start_ts: 4,
                })),
            ),
            (
                NodeError::Txn(TxnError::StatusCompacted {
                    key: b"k".to_vec(),
                    start_ts: Revision(4),
                    compact_revision: Revision(9),
                }),
                Code::OutOfRange,
                Some(Kind::Compacted(pb::Compacted {
                    requested_revision: 4,
                    compact_revision: 9,
                })),
            ),
        ];
        for (error, code, detail) in cases {
            let described = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{described}");
            assert_eq!(detail_of(&status), detail, "{described}");
        }
    }
}
