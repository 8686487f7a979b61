//! The node administration service (`cairn.node.v1.NodeAdmin`): what the coordinator (and,
//! until it exists, tests and the static bootstrap) use to place and move replicas.

use crate::error::NodeError;
use crate::node::Node;
use cairn_proto::node::v1 as pb;
use cairn_proto::node::v1::node_admin_server::NodeAdmin;
use cairn_raft::replica::ReplicaStatus;
use cairn_raft::type_config::NodeAddress;
use cairn_types::{NodeId, ShardId};
use openraft_state::role_of;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a TriggerSnapshot call waits for the snapshot to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn invalid(field: &'static str, reason: &str) -> Status {
    NodeError::InvalidRequest(cairn_raft::convert::InvalidRequest::Field {
        field,
        reason: reason.into(),
    })
    .into()
}

mod openraft_state {
    use cairn_proto::node::v1::ReplicaRole;
    use cairn_raft::replica::ServerRole;

    pub fn role_of(role: Option<ServerRole>) -> ReplicaRole {
        match role {
            Some(ServerRole::Leader) => ReplicaRole::Leader,
            Some(ServerRole::Follower) => ReplicaRole::Follower,
            Some(ServerRole::Candidate) => ReplicaRole::Candidate,
            Some(ServerRole::Learner) => ReplicaRole::Learner,
            Some(ServerRole::Shutdown) => ReplicaRole::Shutdown,
            None => ReplicaRole::Unknown,
        }
    }
}

fn to_proto(status: ReplicaStatus) -> pb::ReplicaStatus {
    pb::ReplicaStatus {
        shard_id: status.shard.0,
        role: role_of(status.role) as i32,
        term: status.term,
        leader_node_id: status.leader.map_or(0, |id| id.0),
        last_log_index: status.last_log_index,
        committed_index: status.committed_index,
        applied_index: status.applied_index,
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        epoch: status.epoch,
        voters: status.voters.iter().map(|id| id.0).collect(),
        learners: status.learners.iter().map(|id| id.0).collect(),
        revision: status.revision.0,
    }
}

#[tonic::async_trait]
impl NodeAdmin for AdminService {
    async fn create_replica(
        &self,
        request: Request<pb::CreateReplicaRequest>,
    ) -> Result<Response<pb::CreateReplicaResponse>, Status> {
        let shard = ShardId(request.into_inner().shard_id);
        let created = self.node.create_replica(shard).await?;
        Ok(Response::new(pb::CreateReplicaResponse { created }))
    }

    async fn initialize_shard(
        &self,
        request: Request<pb::InitializeShardRequest>,
    ) -> Result<Response<pb::InitializeShardResponse>, Status> {
        let request = request.into_inner();
        let replica = self.node.replica_or_error(ShardId(request.shard_id))?;
        if request.members.is_empty() {
            return Err(invalid("members", "must list at least one member"));
        }
        let mut members = BTreeMap::new();
        for member in request.members {
            if member.node_id == 0 || member.address.is_empty() {
                return Err(invalid(
                    "members",
                    "every member needs a node id and an address",
                ));
            }
            members.insert(
                NodeId(member.node_id),
                NodeAddress {
                    address: member.address,
                },
            );
        }
        let initialized = replica.initialize(members).await.map_err(NodeError::from)?;
        Ok(Response::new(pb::InitializeShardResponse { initialized }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::AddLearnerResponse>, Status> {
        let request = request.into_inner();
        let replica = self.node.replica_or_error(ShardId(request.shard_id))?;
        let learner = request
            .learner
            .ok_or_else(|| invalid("learner", "must be set"))?;
        if learner.node_id == 0 || learner.address.is_empty() {
            return Err(invalid("learner", "needs a node id and an address"));
        }
        let epoch = replica
            .add_learner(
                NodeId(learner.node_id),
                learner.address,
                request.wait_caught_up,
            )
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(pb::AddLearnerResponse { epoch }))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ChangeMembershipResponse>, Status> {
        let request = request.into_inner();
        let replica = self.node.replica_or_error(ShardId(request.shard_id))?;
        let voters: BTreeSet<NodeId> = request.voters.into_iter().map(NodeId).collect();
        let remove_learners: BTreeSet<NodeId> =
            request.remove_learners.into_iter().map(NodeId).collect();
        if voters.is_empty() && remove_learners.is_empty() {
            return Err(invalid(
                "voters",
                "give voters, learners to remove, or both",
            ));
        }
        let mut epoch = replica.epoch();
        if !voters.is_empty() {
            epoch = replica
                .change_membership(voters, request.retain_as_learners)
                .await
                .map_err(NodeError::from)?;
        }
        if !remove_learners.is_empty() {
            epoch = replica
                .remove_learners(remove_learners)
                .await
                .map_err(NodeError::from)?;
        }
        Ok(Response::new(pb::ChangeMembershipResponse { epoch }))
    }

    async fn remove_replica(
        &self,
        request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::RemoveReplicaResponse>, Status> {
        let request = request.into_inner();
        let removed = self
            .node
            .remove_replica(ShardId(request.shard_id), request.excluded_at_epoch)
            .await?;
        Ok(Response::new(pb::RemoveReplicaResponse { removed }))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let request = request.into_inner();
        let replica = self.node.replica_or_error(ShardId(request.shard_id))?;
        replica
            .transfer_leader(NodeId(request.to_node_id))
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(pb::TransferLeaderResponse {}))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        let request = request.into_inner();
        let replica = self.node.replica_or_error(ShardId(request.shard_id))?;
        let snapshot_index = replica
            .snapshot_now(request.purge_log, SNAPSHOT_WAIT)
            .await
            .map_err(NodeError::from)?;
        Ok(Response::new(pb::TriggerSnapshotResponse {
            snapshot_index,
        }))
    }

    async fn unsafe_recover_replica(
        &self,
        request: Request<pb::UnsafeRecoverReplicaRequest>,
    ) -> Result<Response<pb::UnsafeRecoverReplicaResponse>, Status> {
        let request = request.into_inner();
        if request.node_id != self.node.node_id().0 {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: refusing a recovery meant for another node",
                self.node.node_id().0,
                request.node_id
            )));
        }
        let (before, epoch) = self
            .node
            .unsafe_recover_replica(ShardId(request.shard_id))
            .await?;
        Ok(Response::new(pb::UnsafeRecoverReplicaResponse {
            before: Some(to_proto(before)),
            epoch,
        }))
    }

    async fn shard_status(
        &self,
        request: Request<pb::ShardStatusRequest>,
    ) -> Result<Response<pb::ShardStatusResponse>, Status> {
        let request = request.into_inner();
        let replicas = if request.all {
            self.node.replicas()
        } else {
            vec![self.node.replica_or_error(ShardId(request.shard_id))?]
        };
        let mut statuses = Vec::with_capacity(replicas.len());
        for replica in replicas {
            statuses.push(to_proto(
                replica.status_with_data().await.map_err(NodeError::from)?,
            ));
        }
        Ok(Response::new(pb::ShardStatusResponse {
            replicas: statuses,
            node_id: self.node.node_id().0,
        }))
    }
}
