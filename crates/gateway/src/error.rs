//! The gateway's errors, and the one place they become gRPC statuses
//! (`From<GatewayError> for Status`), with the structured `ErrorDetail` the SDK acts on.
//!
//! A node's or the coordinator's answer that the gateway passes on stays the status it was
//! (`Upstream`), detail included: the gateway adds nothing a client could act on.

use cairn_coordinator_client::TimestampError;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::with_detail;
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
            GatewayError::Upstream(status) => status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::status::detail_of;

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
