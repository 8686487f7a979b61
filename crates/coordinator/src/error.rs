//! The coordinator's errors and their one mapping to gRPC statuses.
//!
//! Its not-leader answer is `CoordinatorNotLeader`, never a shard's `NotLeader`: it names the
//! coordinator leader, and it is sent only from a leadership check, before acting, so any call
//! may follow it (D47). A leadership lost while acting (the metadata group refusing a write)
//! is `UNAVAILABLE`: the caller cannot tell whether the call acted. Every other replica error
//! maps as at the storage node (cairn-raft's `From<ReplicaError> for Status`).

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::with_detail;
use cairn_raft::replica::ReplicaError;
use tonic::{Code, Status};

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This coordinator is not the leader and did not act; `leader_address` is where to go.
    #[error("this coordinator is not the leader (leader: {leader_address:?})")]
    NotLeader {
        leader_id: Option<u64>,
        leader_address: Option<String>,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A revision the oracle has not handed out yet.
    #[error(
        "revision {requested} is in the future: the latest revision handed out is at most {latest}"
    )]
    FutureRevision {
        requested: cairn_types::Revision,
        latest: cairn_types::Revision,
    },
    #[error("unknown node {0}")]
    UnknownNode(u64),
    #[error("replica: {0}")]
    Replica(#[from] ReplicaError),
    /// Refused by auth: no credentials, not root, or a user or role command that does not
    /// apply (D88).
    #[error("{0}")]
    Auth(#[from] cairn_auth::AuthError),
    #[error("{0}")]
    Internal(String),
}

impl CoordinatorError {
    pub fn storage(error: cairn_raft::StorageError) -> Self {
        CoordinatorError::Internal(format!("metadata storage: {error}"))
    }
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Status {
        let message = error.to_string();
        match error {
            CoordinatorError::NotLeader {
                leader_id,
                leader_address,
            } => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::CoordinatorNotLeader(pb::CoordinatorNotLeader {
                    leader_id: leader_id.unwrap_or(0),
                    leader_address: leader_address.unwrap_or_default(),
                }),
            ),
            CoordinatorError::Replica(ReplicaError::NotLeader { .. })
            | CoordinatorError::Unavailable(_) => Status::unavailable(message),
            CoordinatorError::Invalid { field, reason } => with_detail(
                Code::InvalidArgument,
                message,
                Kind::InvalidArgument(pb::InvalidArgument {
                    field: field.to_string(),
                    reason,
                }),
            ),
            CoordinatorError::FutureRevision { requested, latest } => with_detail(
                Code::OutOfRange,
                message,
                Kind::FutureRevision(pb::FutureRevision {
                    requested_revision: requested.0,
                    latest_revision: latest.0,
                }),
            ),
            CoordinatorError::UnknownNode(_) => Status::not_found(message),
            CoordinatorError::Auth(auth) => auth.into(),
            CoordinatorError::Replica(replica) => replica.into(),
            CoordinatorError::Internal(_) => {
                tracing::error!(error = %message, "coordinator request failed");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::retry::{classify, Cause, Retry};
    use cairn_proto::status::detail_of;
    use cairn_types::{NodeId, ShardId};

    #[test]
    fn not_leader_names_the_coordinator_leader_not_a_shard() {
        let status = Status::from(CoordinatorError::NotLeader {
            leader_id: Some(2),
            leader_address: Some("c2:7200".into()),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            detail_of(&status),
            Some(Kind::CoordinatorNotLeader(pb::CoordinatorNotLeader {
                leader_id: 2,
                leader_address: "c2:7200".into(),
            }))
        );
        let verdict = classify(&status);
        assert_eq!(verdict.retry, Retry::Always);
        assert_eq!(verdict.cause.leader_address(), Some("c2:7200"));
    }

    #[test]
    fn leadership_lost_while_acting_is_unavailable() {
        let status = Status::from(CoordinatorError::Replica(ReplicaError::NotLeader {
            shard: ShardId(0),
            leader: Some(NodeId(3)),
            leader_address: Some("c3:7200".into()),
        }));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(detail_of(&status), None);
        assert_eq!(classify(&status).cause, Cause::Unavailable);
    }

    #[test]
    fn replica_errors_map_as_at_the_node() {
        let stopped = || ReplicaError::Stopped {
            shard: ShardId(0),
            reason: "shutting down".into(),
        };
        let at_coordinator = Status::from(CoordinatorError::Replica(stopped()));
        let at_node = Status::from(stopped());
        assert_eq!(at_coordinator.code(), Code::Unavailable);
        assert_eq!(at_coordinator.code(), at_node.code());
    }

    #[test]
    fn the_other_errors_keep_their_codes() {
        let cases = [
            (CoordinatorError::Unavailable("x".into()), Code::Unavailable),
            (
                CoordinatorError::Invalid {
                    field: "address",
                    reason: "must be set".into(),
                },
                Code::InvalidArgument,
            ),
            (
                CoordinatorError::FutureRevision {
                    requested: cairn_types::Revision(9),
                    latest: cairn_types::Revision(5),
                },
                Code::OutOfRange,
            ),
            (CoordinatorError::UnknownNode(4), Code::NotFound),
            (CoordinatorError::Internal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
