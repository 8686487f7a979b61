//! The gateway's errors, and the one place they become gRPC statuses
//! (`From<GatewayError> for Status`), with the structured `ErrorDetail` the SDK acts on.
//!
//! A node's or the coordinator's answer that the gateway passes on stays the status it was
//! (`Upstream`), detail included: the gateway adds nothing a client could act on.

use cairn_coordinator_client::TimestampError;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::{detail_of, with_detail};
use cairn_types::ShardId;
use tonic::{Code, Status};

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway routes nothing until the coordinators have sent it a shard map.
    #[error("no shard map from the coordinators yet")]
    NoShardMap,
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// `limit` is the configuration name of the limit.
    #[error("{limit} exceeded: {actual} > {max}")]
    LimitExceeded {
        limit: &'static str,
        max: u64,
        actual: u64,
    },
    #[error(
        "the transaction's keys live in {} shards; transactions must stay within one shard",
        shards.len()
    )]
    CrossShardTxn { shards: Vec<ShardId> },
    /// No snapshot revision for a range from the timestamp oracle.
    #[error(transparent)]
    Timestamps(#[from] TimestampError),
    /// The request's time ran out between attempts.
    #[error("{shard}: request timed out; last error: {last}")]
    TimedOut { shard: ShardId, last: String },
    /// The request's time ran out while an attempt was waiting for `address`.
    #[error("{shard}: request timed out at {address}")]
    TimedOutAt { shard: ShardId, address: String },
    /// Every attempt failed in a way another attempt might not have.
    #[error("{shard}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        shard: ShardId,
        attempts: u32,
        last: String,
    },
    /// A node answered an op with the result of another kind: a bug, not a retriable error.
    #[error("the node answered a {op} with a {result} result")]
    MismatchedResult {
        op: &'static str,
        result: &'static str,
    },
    /// The transaction lost a race and applied nothing (ABORTED, retryable as a new
    /// attempt): `key` was changed after `start_revision`, or is locked by a transaction that
    /// this one must not wait for, or this transaction was rolled back by another party.
    #[error("transaction conflict on key {}: {reason}", key.escape_ascii())]
    Conflict {
        key: Vec<u8>,
        start_revision: u64,
        /// 0 when not known.
        conflicting_revision: u64,
        reason: String,
    },
    /// The commit of a transaction's primary got no answer: it may have committed. The
    /// client retries with the same write id and gets the first result (D97).
    #[error(
        "the transaction's commit outcome is unknown (retry with the same write id): {reason}"
    )]
    CommitOutcomeUnknown { reason: String },
    /// The request waited for another transaction's lock until its deadline.
    #[error("timed out waiting for the lock on key {key} (held by the transaction started at {start_ts})")]
    LockWaitTimedOut { key: String, start_ts: u64 },
    /// The coordinator evaluated an op over a key it had not read: a bug.
    #[error("transaction evaluation met {key}, which the read phase did not read")]
    TxnNotRead { key: String },
    /// A node's or the coordinator's answer, passed on as it is.
    #[error(transparent)]
    Upstream(#[from] Status),
}

impl GatewayError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        GatewayError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The structured detail of a node's answer passed on.
    fn upstream_detail(&self) -> Option<Kind> {
        match self {
            GatewayError::Upstream(status) => detail_of(status),
            _ => None,
        }
    }

    /// The lock a node's refusal names (`KeyLocked`): resolve it and try again.
    pub fn key_locked(&self) -> Option<pb::KeyLocked> {
        match self.upstream_detail() {
            Some(Kind::KeyLocked(lock)) => Some(lock),
            _ => None,
        }
    }

    /// A node's `Conflict` refusal (a prewrite that met a newer version), as the gateway's.
    pub fn as_conflict(&self) -> Option<GatewayError> {
        match self.upstream_detail() {
            Some(Kind::Conflict(conflict)) => Some(GatewayError::Conflict {
                key: conflict.key,
                start_revision: conflict.start_revision,
                conflicting_revision: conflict.conflicting_revision,
                reason: "a newer version was committed after the transaction's snapshot".into(),
            }),
            _ => None,
        }
    }

    /// Whether a node answered that the transaction was rolled back on a key.
    pub fn rolled_back(&self) -> Option<pb::TxnRolledBack> {
        match self.upstream_detail() {
            Some(Kind::TxnRolledBack(rolled)) => Some(rolled),
            _ => None,
        }
    }

    /// Whether a node answered that it has no lock or record of the transaction.
    pub fn txn_not_found(&self) -> bool {
        matches!(self.upstream_detail(), Some(Kind::TxnNotFound(_)))
    }
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Status {
        let message = error.to_string();
        match error {
            GatewayError::NoShardMap
            | GatewayError::Timestamps(_)
            | GatewayError::GaveUp { .. } => Status::unavailable(message),
            GatewayError::InvalidArgument { field, reason } => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(pb::InvalidArgument {
                    field: field.into(),
                    reason,
                }),
            ),
            GatewayError::LimitExceeded { limit, max, actual } => with_detail(
                Code::InvalidArgument,
                message,
                Kind::LimitExceeded(pb::LimitExceeded {
                    limit: limit.into(),
                    max,
                    actual,
                }),
            ),
            GatewayError::CrossShardTxn { shards } => with_detail(
                Code::InvalidArgument,
                message,
                Kind::CrossShardTxn(pb::CrossShardTxn {
                    shard_ids: shards.iter().map(|shard| shard.0).collect(),
                }),
            ),
            GatewayError::TimedOut { .. } | GatewayError::TimedOutAt { .. } => {
                Status::deadline_exceeded(message)
            }
            GatewayError::MismatchedResult { .. } => {
                tracing::error!(error = %message, "a node answered with the wrong kind of result");
                Status::internal(message)
            }
            GatewayError::Conflict {
                key,
                start_revision,
                conflicting_revision,
                ..
            } => with_detail(
                Code::Aborted,
                message,
                Kind::Conflict(pb::Conflict {
                    key,
                    start_revision,
                    conflicting_revision,
                }),
            ),
            GatewayError::CommitOutcomeUnknown { .. } => Status::unavailable(message),
            GatewayError::LockWaitTimedOut { .. } => Status::deadline_exceeded(message),
            GatewayError::TxnNotRead { .. } => {
                tracing::error!(error = %message, "transaction evaluation over an unread key");
                Status::internal(message)
            }
            GatewayError::Upstream(status) => status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_code_and_detail() {
        let shard = ShardId(3);
        let cases: Vec<(GatewayError, Code, Option<Kind>)> = vec![
            (GatewayError::NoShardMap, Code::Unavailable, None),
            (
                GatewayError::invalid("key", "must not be empty"),
                Code::InvalidArgument,
                Some(Kind::InvalidArgument(pb::InvalidArgument {
                    field: "key".into(),
                    reason: "must not be empty".into(),
                })),
            ),
            (
                GatewayError::LimitExceeded {
                    limit: "range_keys_max",
                    max: 10,
                    actual: 11,
                },
                Code::InvalidArgument,
                Some(Kind::LimitExceeded(pb::LimitExceeded {
                    limit: "range_keys_max".into(),
                    max: 10,
                    actual: 11,
                })),
            ),
            (
                GatewayError::CrossShardTxn {
                    shards: vec![ShardId(1), ShardId(4)],
                },
                Code::InvalidArgument,
                Some(Kind::CrossShardTxn(pb::CrossShardTxn {
                    shard_ids: vec![1, 4],
                })),
            ),
            (
                GatewayError::Timestamps(TimestampError::Stopped),
                Code::Unavailable,
                None,
            ),
            (
                GatewayError::TimedOut {
                    shard,
                    last: "x".into(),
                },
                Code::DeadlineExceeded,
                None,
            ),
            (
                GatewayError::TimedOutAt {
                    shard,
                    address: "n1:7100".into(),
                },
                Code::DeadlineExceeded,
                None,
            ),
            (
                GatewayError::GaveUp {
                    shard,
                    attempts: 10,
                    last: "x".into(),
                },
                Code::Unavailable,
                None,
            ),
            (
                GatewayError::Conflict {
                    key: b"k".to_vec(),
                    start_revision: 5,
                    conflicting_revision: 7,
                    reason: "x".into(),
                },
                Code::Aborted,
                Some(Kind::Conflict(pb::Conflict {
                    key: b"k".to_vec(),
                    start_revision: 5,
                    conflicting_revision: 7,
                })),
            ),
            (
                GatewayError::CommitOutcomeUnknown { reason: "x".into() },
                Code::Unavailable,
                None,
            ),
            (
                GatewayError::LockWaitTimedOut {
                    key: "k".into(),
                    start_ts: 1,
                },
                Code::DeadlineExceeded,
                None,
            ),
            (
                GatewayError::MismatchedResult {
                    op: "put",
                    result: "get",
                },
                Code::Internal,
                None,
            ),
        ];
        for (error, code, detail) in cases {
            let described = format!("{error:?}");
            let status = Status::from(error);
            assert_eq!(status.code(), code, "{described}");
            assert_eq!(detail_of(&status), detail, "{described}");
        }
    }

    #[test]
    fn transaction_refusals_of_a_node_are_recognised() {
        let locked = pb::KeyLocked {
            key: b"k".to_vec(),
            primary: b"p".to_vec(),
            start_ts: 3,
            ..Default::default()
        };
        let error = GatewayError::from(with_detail(
            Code::FailedPrecondition,
            "locked",
            Kind::KeyLocked(locked.clone()),
        ));
        assert_eq!(error.key_locked(), Some(locked));
        assert!(error.as_conflict().is_none());
        let conflict = GatewayError::from(with_detail(
            Code::Aborted,
            "conflict",
            Kind::Conflict(pb::Conflict {
                key: b"k".to_vec(),
                start_revision: 1,
                conflicting_revision: 2,
            }),
        ));
        assert!(matches!(
            conflict.as_conflict(),
            Some(GatewayError::Conflict {
                conflicting_revision: 2,
                ..
            })
        ));
        let rolled = GatewayError::from(with_detail(
            Code::FailedPrecondition,
            "rolled back",
            Kind::TxnRolledBack(pb::TxnRolledBack {
                key: b"k".to_vec(),
                start_ts: 1,
            }),
        ));
        assert!(rolled.rolled_back().is_some());
        assert!(!rolled.txn_not_found());
        assert!(GatewayError::NoShardMap.key_locked().is_none());
    }

    #[test]
    fn an_upstream_answer_passes_unchanged() {
        let node = with_detail(
            Code::FailedPrecondition,
            "window",
            Kind::WriteWindowExceeded(pb::WriteWindowExceeded {
                client_id: 1,
                sequence: 2,
                oldest_remembered: 3,
            }),
        );
        let passed = Status::from(GatewayError::from(node.clone()));
        assert_eq!(passed.code(), node.code());
        assert_eq!(passed.message(), node.message());
        assert_eq!(passed.details(), node.details());
    }
}
