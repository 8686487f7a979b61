//! The public Cluster service (`cairn.kv.v1.Cluster`): status, members, shards, join and
//! leave, passed to the coordinator leader.

use crate::auth::AuthGate;
use cairn_coordinator_client::CoordinatorClient;
use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::cluster_server::Cluster;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

pub struct ClusterService {
    client: Mutex<CoordinatorClient>,
    /// With auth on, any user may read the cluster's state; changing membership or
    /// recovering a shard needs the root role.
    auth: Arc<AuthGate>,
}

impl ClusterService {
    pub fn new(
        coordinators: Vec<String>,
        timeout: Duration,
        tls: cairn_tls::ClientTls,
        auth: Arc<AuthGate>,
    ) -> Self {
        Self {
            client: Mutex::new(CoordinatorClient::new(coordinators, timeout).with_tls(tls)),
            auth,
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match coordinator::NodeState::try_from(state) {
        Ok(coordinator::NodeState::Up) => "up",
        Ok(coordinator::NodeState::Suspect) => "suspect",
        Ok(coordinator::NodeState::Down) => "down",
        Ok(coordinator::NodeState::Leaving) => "leaving",
        Ok(coordinator::NodeState::Left) => "left",
        _ => "unknown",
    }
}

fn engine_name(engine: i32) -> &'static str {
    match coordinator::StorageEngine::try_from(engine) {
        Ok(coordinator::StorageEngine::Disk) => "disk",
        Ok(coordinator::StorageEngine::Memory) => "memory",
        _ => "unknown",
    }
}

fn shard_status(shard: coordinator::ShardInfo) -> pb::ShardStatus {
    pb::ShardStatus {
        shard_id: shard.shard_id,
        epoch: shard.epoch,
        voters: shard.voters,
        learners: shard.learners,
        leader_node_id: shard.leader_node_id,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.auth.authenticate(&request).await?;
        let status = self.client.lock().await.cluster_status().await?;
        Ok(Response::new(pb::StatusResponse {
            cluster_id: status.cluster_id,
            shard_count: status.shard_count,
            replication_factor: status.replication_factor,
            coordinator_leader_id: status.coordinator_leader_id,
            node_count: status.nodes.len() as u32,
            nodes_up: status
                .nodes
                .iter()
                .filter(|n| n.state == coordinator::NodeState::Up as i32)
                .count() as u32,
            under_replicated_shards: status.under_replicated_shards,
            moves_in_flight: status.moves_in_flight,
            shard_map_version: status.map_version,
            coordinator_storage_engine: engine_name(status.coordinator_storage_engine).into(),
            in_memory_nodes: status
                .nodes
                .iter()
                .filter(|n| n.storage_engine == coordinator::StorageEngine::Memory as i32)
                .count() as u32,
            shards_without_quorum: status
                .shards_without_quorum
                .into_iter()
                .map(|lost| pb::ShardWithoutQuorum {
                    shard_id: lost.shard_id,
                    voters: lost.voters,
                    surviving_voters: lost.surviving_voters,
                    lost_for_ms: lost.lost_for_ms,
                })
                .collect(),
        }))
    }

    async fn members(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.auth.authenticate(&request).await?;
        let status = self.client.lock().await.cluster_status().await?;
        let members = status
            .nodes
            .into_iter()
            .map(|node| pb::Member {
                node_id: node.node_id,
                address: node.address,
                labels: node.labels.into_iter().map(|l| (l.key, l.value)).collect(),
                state: state_name(node.state).into(),
                replica_count: node.replica_count,
                leader_count: node.leader_count,
                storage_engine: engine_name(node.storage_engine).into(),
            })
            .collect();
        Ok(Response::new(pb::MembersResponse { members }))
    }

    async fn shards(
        &self,
        request: Request<pb::ShardsRequest>,
    ) -> Result<Response<pb::ShardsResponse>, Status> {
        self.auth.authenticate(&request).await?;
        let map = self.client.lock().await.shard_map().await?;
        Ok(Response::new(pb::ShardsResponse {
            shard_map_version: map.version,
            shards: map.shards.into_iter().map(shard_status).collect(),
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.auth.authorize_admin(&request, "join").await?;
        let request = request.into_inner();
        let joined = self
            .client
            .lock()
            .await
            .join(coordinator::JoinClusterRequest {
                address: request.address,
                labels: request
                    .labels
                    .into_iter()
                    .map(|(key, value)| coordinator::Label { key, value })
                    .collect(),
                node_id: 0,
                storage_engine: coordinator::StorageEngine::Unknown as i32,
                // One registration: the coordinator client's retries of it get one id (D50).
                join_token: format!("{:032x}", rand::random::<u128>()),
                cluster_id: String::new(),
            })
            .await?;
        Ok(Response::new(pb::JoinResponse {
            node_id: joined.node_id,
        }))
    }

    async fn unsafe_recover_shard(
        &self,
        request: Request<pb::UnsafeRecoverShardRequest>,
    ) -> Result<Response<pb::UnsafeRecoverShardResponse>, Status> {
        self.auth
            .authorize_admin(&request, "unsafe recover shard")
            .await?;
        let request = request.into_inner();
        let answer = self
            .client
            .lock()
            .await
            .unsafe_recover_shard(coordinator::UnsafeRecoverShardRequest {
                shard_id: request.shard_id,
                from_node_id: request.from_node_id,
                accept_data_loss: request.accept_data_loss,
            })
            .await?;
        Ok(Response::new(pb::UnsafeRecoverShardResponse {
            shard_id: answer.shard_id,
            from_node_id: answer.from_node_id,
            previous_voters: answer.previous_voters,
            last_log_index: answer.last_log_index,
            term: answer.term,
            committed_index: answer.committed_index,
            applied_index: answer.applied_index,
            revision: answer.revision,
            epoch: answer.epoch,
        }))
    }

    async fn leave(
        &self,
        request: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveResponse>, Status> {
        self.auth.authorize_admin(&request, "leave").await?;
        let left = self
            .client
            .lock()
            .await
            .leave(request.into_inner().node_id)
            .await?;
        Ok(Response::new(pb::LeaveResponse {
            draining: left.draining,
        }))
    }
}
