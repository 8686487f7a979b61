//! The coordinator's errors and their one mapping to gRPC statuses.

use cairn_proto::kv::v1 as pb;
use cairn_raft::replica::ReplicaError;
use prost::Message;
use tonic::{Code, Status};

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This coordinator is not the leader; `leader_address` is where to go.
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
        let not_leader = |leader_id: Option<u64>, leader_address: Option<String>| {
            let detail = pb::ErrorDetail {
                kind: Some(pb::error_detail::Kind::NotLeader(pb::NotLeader {
                    shard_id: 0,
                    leader_node_id: leader_id.unwrap_or(0),
                    leader_address: leader_address.unwrap_or_default(),
                })),
            };
            Status::with_details(
                Code::FailedPrecondition,
                message.clone(),
                detail.encode_to_vec().into(),
            )
        };
        match error {
            CoordinatorError::NotLeader {
                leader_id,
                leader_address,
            } => not_leader(leader_id, leader_address),
            CoordinatorError::Replica(ReplicaError::NotLeader {
                leader,
                leader_address,
                ..
            }) => not_leader(leader.map(|id| id.0), leader_address),
            CoordinatorError::Unavailable(_)
            | CoordinatorError::Replica(ReplicaError::Unavailable { .. }) => {
                Status::unavailable(message)
            }
            CoordinatorError::Replica(ReplicaError::OutcomeUnknown { .. }) => {
                Status::deadline_exceeded(message)
            }
            CoordinatorError::Invalid { field, reason } => {
                let detail = pb::ErrorDetail {
                    kind: Some(pb::error_detail::Kind::InvalidArgument(
                        pb::InvalidArgument {
                            field: field.to_string(),
                            reason,
                        },
                    )),
                };
                Status::with_details(
                    Code::InvalidArgument,
                    message,
                    detail.encode_to_vec().into(),
                )
            }
            CoordinatorError::FutureRevision { requested, latest } => {
                let detail = pb::ErrorDetail {
                    kind: Some(pb::error_detail::Kind::FutureRevision(pb::FutureRevision {
                        requested_revision: requested.0,
                        latest_revision: latest.0,
                    })),
                };
                Status::with_details(Code::OutOfRange, message, detail.encode_to_vec().into())
            }
            CoordinatorError::UnknownNode(_) => Status::not_found(message),
            CoordinatorError::Replica(_) | CoordinatorError::Internal(_) => {
                tracing::error!(error = %message, "coordinator request failed");
                Status::internal(message)
            }
        }
    }
}
