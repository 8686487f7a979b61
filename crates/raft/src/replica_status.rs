//! The one map from a replica's errors to gRPC statuses, for every service that serves a
//! replica's answers (the storage node's shards, the coordinator's metadata group), so that
//! the same failure reads the same everywhere (D47). A status carries an `ErrorDetail` where
//! the caller can act on fields.
//!
//! The coordinator answers its own group's `NotLeader` differently (it is not a shard's), and
//! maps it before calling this.

use crate::replica::ReplicaError;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::with_detail;
use tonic::{Code, Status};

impl From<ReplicaError> for Status {
    fn from(error: ReplicaError) -> Status {
        let message = error.to_string();
        match error {
            ReplicaError::NotLeader {
                shard,
                leader,
                leader_address,
            } => with_detail(
                Code::FailedPrecondition,
                message,
                Kind::NotLeader(pb::NotLeader {
                    shard_id: shard.0,
                    leader_node_id: leader.map_or(0, |id| id.0),
                    leader_address: leader_address.unwrap_or_default(),
                }),
            ),
            // Not serving now (an election, a replica stopping): another attempt, perhaps at
            // another replica, may be.
            ReplicaError::Unavailable { .. } | ReplicaError::Stopped { .. } => {
                Status::unavailable(message)
            }
            // The write may or may not have applied: the caller retries with the same write id.
            ReplicaError::OutcomeUnknown { .. } => Status::deadline_exceeded(message),
            ReplicaError::Membership { .. } => Status::failed_precondition(message),
            ReplicaError::Compacted {
                requested,
                compact_revision,
                ..
            } => with_detail(
                Code::OutOfRange,
                message,
                Kind::Compacted(pb::Compacted {
                    requested_revision: requested.0,
                    compact_revision: compact_revision.0,
                }),
            ),
            ReplicaError::FutureRevision {
                requested, latest, ..
            } => with_detail(
                Code::OutOfRange,
                message,
                Kind::FutureRevision(pb::FutureRevision {
                    requested_revision: requested.0,
                    latest_revision: latest.0,
                }),
            ),
            ReplicaError::Storage { .. } => {
                tracing::error!(error = %message, "request failed on a storage error");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageError;
    use cairn_proto::status::detail_of;
    use cairn_types::{NodeId, Revision, ShardId};

    #[test]
    fn every_replica_error_maps_to_its_code_and_detail() {
        let shard = ShardId(7);
        let reason = || "r".to_string();
        let cases: Vec<(ReplicaError, Code, Option<Kind>)> = vec![
            (
                ReplicaError::NotLeader {
                    shard,
                    leader: Some(NodeId(2)),
                    leader_address: Some("n2:7100".into()),
                },
                Code::FailedPrecondition,
                Some(Kind::NotLeader(pb::NotLeader {
                    shard_id: 7,
                    leader_node_id: 2,
                    leader_address: "n2:7100".into(),
                })),
            ),
            (
                ReplicaError::NotLeader {
                    shard,
                    leader: None,
                    leader_address: None,
                },
                Code::FailedPrecondition,
                Some(Kind::NotLeader(pb::NotLeader {
                    shard_id: 7,
                    leader_node_id: 0,
                    leader_address: String::new(),
                })),
            ),
            (
                ReplicaError::Unavailable {
                    shard,
                    reason: reason(),
                },
                Code::Unavailable,
                None,
            ),
            (
                ReplicaError::Stopped {
                    shard,
                    reason: reason(),
                },
                Code::Unavailable,
                None,
            ),
            (
                ReplicaError::OutcomeUnknown {
                    shard,
                    reason: reason(),
                },
                Code::DeadlineExceeded,
                None,
            ),
            (
                ReplicaError::Membership {
                    shard,
                    reason: reason(),
                },
                Code::FailedPrecondition,
                None,
            ),
            (
                ReplicaError::Storage {
                    shard,
                    source: StorageError::Task("t".into()),
                },
                Code::Internal,
                None,
            ),
            (
                ReplicaError::Compacted {
                    shard,
                    requested: Revision(3),
                    compact_revision: Revision(9),
                },
                Code::OutOfRange,
                Some(Kind::Compacted(pb::Compacted {
                    requested_revision: 3,
                    compact_revision: 9,
                })),
            ),
            (
                ReplicaError::FutureRevision {
                    shard,
                    requested: Revision(50),
                    latest: Revision(40),
                },
                Code::OutOfRange,
                Some(Kind::FutureRevision(pb::FutureRevision {
                    requested_revision: 50,
                    latest_revision: 40,
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
