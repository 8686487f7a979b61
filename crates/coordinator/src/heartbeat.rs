//! A storage node's heartbeat as the coordinator works with it: converted from the wire
//! (`pb::HeartbeatRequest`) where it arrives, in the service, and validated there. Nothing
//! behind the service sees the generated types.
//!
//! Enum values this coordinator does not know (a newer node's role or storage engine) read as
//! unknown rather than refusing the heartbeat: a refused heartbeat would make a live node look
//! down and have its replicas replaced.

use crate::error::CoordinatorError;
use cairn_proto::coordinator::v1 as pb;
use cairn_raft::database::StorageEngine;
use cairn_raft::replica::ServerRole;
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeSet;

/// One heartbeat, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: NodeId,
    /// The address the node serves at, as it advertises it.
    pub address: String,
    pub replicas: Vec<ReplicaReport>,
    /// The node's `storage.engine`; `None` when not reported or unknown to this coordinator.
    pub storage_engine: Option<StorageEngine>,
}

/// What a node reports about one replica it hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaReport {
    pub shard: ShardId,
    /// `None` when not reported or unknown to this coordinator.
    pub role: Option<ServerRole>,
    pub term: u64,
    /// The leader this replica knows of, if any.
    pub leader: Option<NodeId>,
    pub committed_index: u64,
    pub applied_index: u64,
    /// The epoch of the replica's latest membership (log index + 1, D7; 0: none).
    pub epoch: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub approximate_size_bytes: u64,
}

impl ReplicaReport {
    pub fn is_leader(&self) -> bool {
        self.role == Some(ServerRole::Leader)
    }
}

impl TryFrom<pb::HeartbeatRequest> for Heartbeat {
    type Error = CoordinatorError;

    fn try_from(request: pb::HeartbeatRequest) -> Result<Self, Self::Error> {
        if request.node_id == 0 {
            return Err(CoordinatorError::Invalid {
                field: "node_id",
                reason: "0 is never a node id: a node heartbeats after it joined".into(),
            });
        }
        let storage_engine = storage_engine_from_proto(request.storage_engine());
        Ok(Heartbeat {
            node: NodeId(request.node_id),
            address: request.address,
            replicas: request
                .replicas
                .into_iter()
                .map(ReplicaReport::try_from)
                .collect::<Result<_, _>>()?,
            storage_engine,
        })
    }
}

impl TryFrom<pb::ReplicaReport> for ReplicaReport {
    type Error = CoordinatorError;

    fn try_from(report: pb::ReplicaReport) -> Result<Self, Self::Error> {
        let shard = ShardId(report.shard_id);
        if !shard.is_valid() {
            return Err(CoordinatorError::Invalid {
                field: "replicas.shard_id",
                reason: format!("{} is above the largest shard id", report.shard_id),
            });
        }
        let role = role_from_proto(report.role());
        Ok(ReplicaReport {
            shard,
            role,
            term: report.term,
            leader: (report.leader_node_id != 0).then_some(NodeId(report.leader_node_id)),
            committed_index: report.committed_index,
            applied_index: report.applied_index,
            epoch: report.epoch,
            voters: report.voters.into_iter().map(NodeId).collect(),
            learners: report.learners.into_iter().map(NodeId).collect(),
            approximate_size_bytes: report.approximate_size_bytes,
        })
    }
}

fn role_from_proto(role: pb::RaftRole) -> Option<ServerRole> {
    match role {
        pb::RaftRole::Leader => Some(ServerRole::Leader),
        pb::RaftRole::Follower => Some(ServerRole::Follower),
        pb::RaftRole::Candidate => Some(ServerRole::Candidate),
        pb::RaftRole::Learner => Some(ServerRole::Learner),
        pb::RaftRole::Unknown => None,
    }
}

/// The storage engine a node reports (in a heartbeat or a join); `None` for unknown.
pub fn storage_engine_from_proto(engine: pb::StorageEngine) -> Option<StorageEngine> {
    match engine {
        pb::StorageEngine::Disk => Some(StorageEngine::Disk),
        pb::StorageEngine::Memory => Some(StorageEngine::Memory),
        pb::StorageEngine::Unknown => None,
    }
}

pub fn storage_engine_to_proto(engine: Option<StorageEngine>) -> pb::StorageEngine {
    match engine {
        Some(StorageEngine::Disk) => pb::StorageEngine::Disk,
        Some(StorageEngine::Memory) => pb::StorageEngine::Memory,
        None => pb::StorageEngine::Unknown,
    }
}

/// The name of a storage engine as a node reported it, for logs.
pub fn storage_engine_name(engine: Option<StorageEngine>) -> &'static str {
    engine.map_or("unknown", StorageEngine::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard_id: u64, role: i32) -> pb::ReplicaReport {
        pb::ReplicaReport {
            shard_id,
            role,
            term: 3,
            leader_node_id: 0,
            committed_index: 9,
            applied_index: 8,
            epoch: 4,
            voters: vec![3, 1, 2],
            learners: vec![5],
            approximate_size_bytes: 77,
        }
    }

    fn request(node_id: u64, replicas: Vec<pb::ReplicaReport>) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            node_id,
            address: "node-1:7101".into(),
            replicas,
            storage_engine: pb::StorageEngine::Memory as i32,
        }
    }

    #[test]
    fn a_heartbeat_converts_to_domain_types() {
        let heartbeat =
            Heartbeat::try_from(request(1, vec![report(2, pb::RaftRole::Leader as i32)])).unwrap();
        assert_eq!(heartbeat.node, NodeId(1));
        assert_eq!(heartbeat.storage_engine, Some(StorageEngine::Memory));
        assert_eq!(
            heartbeat.replicas,
            vec![ReplicaReport {
                shard: ShardId(2),
                role: Some(ServerRole::Leader),
                term: 3,
                leader: None,
                committed_index: 9,
                applied_index: 8,
                epoch: 4,
                voters: [1, 2, 3].map(NodeId).into(),
                learners: [NodeId(5)].into(),
                approximate_size_bytes: 77,
            }]
        );
        assert!(heartbeat.replicas[0].is_leader());
    }

    #[test]
    fn values_a_newer_node_may_send_read_as_unknown() {
        let heartbeat = Heartbeat::try_from(pb::HeartbeatRequest {
            storage_engine: 99,
            ..request(1, vec![report(2, 99)])
        })
        .unwrap();
        assert_eq!(heartbeat.storage_engine, None);
        assert_eq!(heartbeat.replicas[0].role, None);
        assert!(!heartbeat.replicas[0].is_leader());
        assert_eq!(storage_engine_name(heartbeat.storage_engine), "unknown");
    }

    #[test]
    fn a_heartbeat_without_a_node_id_or_with_an_impossible_shard_is_refused() {
        let field = |request: pb::HeartbeatRequest| match Heartbeat::try_from(request) {
            Err(CoordinatorError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(request(0, vec![])), "node_id");
        assert_eq!(
            field(request(1, vec![report(u64::MAX, 1)])),
            "replicas.shard_id"
        );
    }

    #[test]
    fn storage_engines_round_trip() {
        for engine in [None, Some(StorageEngine::Disk), Some(StorageEngine::Memory)] {
            assert_eq!(
                storage_engine_from_proto(storage_engine_to_proto(engine)),
                engine
            );
        }
    }
}
