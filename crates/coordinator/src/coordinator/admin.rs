//! Carrying placement actions out: the admin calls on storage nodes that each [`Action`]
//! maps to (docs/coordinator.md, the reconcile loop's table), bounded on both sides, and what
//! a failed call says about its node. Best effort where noted: whatever fails is observed
//! again and planned again next round.

use super::Coordinator;
use crate::error::{CoordinatorError, Result};
use crate::metadata::{Metadata, ShardRecord};
use crate::placement::{Action, ShardView};
use cairn_proto::addressing::{wrong_node_of, Destination};
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_types::{NodeId, ShardId};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

/// How much longer than `admin_timeout_ms` the coordinator waits for a node's own deadline
/// error.
const ADMIN_ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A node admin client whose calls name their destination (D35).
type AdminClient = NodeAdminClient<InterceptedService<tonic::transport::Channel, Destination>>;

impl Coordinator {
    /// An admin client for `node` whose every call names `node` and the cluster (D35).
    pub(crate) fn admin(&self, metadata: &Metadata, node: NodeId) -> Result<AdminClient> {
        let record = metadata
            .nodes
            .get(&node)
            .ok_or(CoordinatorError::UnknownNode(node.0))?;
        if self.gone.lock().expect("gone lock poisoned").get(&node) == Some(&record.address) {
            return Err(CoordinatorError::Unavailable(format!(
                "{node} is gone from {}: another node answers there",
                record.address
            )));
        }
        let channel = self
            .channels
            .channel(&record.address)
            .map_err(CoordinatorError::Unavailable)?;
        let cluster_id = metadata
            .cluster
            .as_ref()
            .map(|cluster| cluster.cluster_id.clone())
            .unwrap_or_default();
        Ok(NodeAdminClient::with_interceptor(
            channel,
            Destination::new(node.0, cluster_id),
        ))
    }

    /// The error of a failed admin call to `node`. A `WrongNode` refusal means `node` is gone
    /// from its address: it is remembered, and nothing is sent to it there again.
    pub(crate) fn call_failed(
        &self,
        metadata: &Metadata,
        node: NodeId,
        status: tonic::Status,
    ) -> CoordinatorError {
        if let Some(wrong) = wrong_node_of(&status) {
            if let Some(record) = metadata.nodes.get(&node) {
                tracing::warn!(
                    %node,
                    address = %record.address,
                    answered_by = wrong.node_id,
                    "another node answers at this node's address: no more commands go there for it"
                );
                self.gone
                    .lock()
                    .expect("gone lock poisoned")
                    .insert(node, record.address.clone());
            }
        }
        CoordinatorError::Unavailable(format!("{node}: {status}"))
    }

    /// Bounds an admin call on this side too: tonic sends `grpc-timeout` to the node but does
    /// not enforce it, so a paused node would hold the reconcile round until HTTP/2
    /// keep-alive gives up. The node's own deadline normally answers first (one second
    /// earlier).
    pub(crate) async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> std::result::Result<tonic::Response<T>, tonic::Status> {
        let limit = Duration::from_millis(self.config.admin_timeout_ms) + ADMIN_ANSWER_MARGIN;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "the node did not answer within {limit:?}"
            )))
        })
    }

    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_millis(self.config.admin_timeout_ms));
        request
    }

    pub(super) async fn execute(
        &self,
        action: &Action,
        metadata: &Metadata,
        shards: &[ShardView],
    ) -> Result<()> {
        let failed = |node: NodeId| move |status| self.call_failed(metadata, node, status);
        let view = |shard: ShardId| shards.iter().find(|s| s.id == shard);
        let leader_of = |shard: ShardId| {
            view(shard)
                .and_then(|s| s.leader)
                .ok_or_else(|| CoordinatorError::Unavailable(format!("{shard} has no leader")))
        };
        match action {
            Action::CreateShard { shard, nodes } => {
                self.create_shard(metadata, *shard, nodes).await?;
            }
            Action::ResumeShard {
                shard,
                voters,
                create_on,
                founder,
            } => {
                self.resume_shard(metadata, *shard, voters, create_on, *founder)
                    .await?;
            }
            Action::StartMove { shard, mv } => {
                let leader = leader_of(*shard)?;
                // Recorded only once the learner is in: a move recorded but never started
                // would wait for a learner that is not coming. A learner added but not
                // recorded (the coordinator died in between) is removed as a stray.
                self.create_replica(metadata, *shard, mv.to).await?;
                let address = metadata.address_of(mv.to);
                self.bounded(self.admin(metadata, leader)?.add_learner(self.request(
                    node_pb::AddLearnerRequest {
                        shard_id: shard.0,
                        learner: Some(node_pb::ReplicaMember {
                            node_id: mv.to.0,
                            address,
                        }),
                        wait_caught_up: false,
                    },
                )))
                .await
                .map_err(failed(leader))?;
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: Some(mv.clone()),
                        ..metadata.shard_record(*shard)
                    })
                    .await?;
            }
            Action::FinishMove { shard, voters } => {
                let leader = leader_of(*shard)?;
                self.bounded(
                    self.admin(metadata, leader)?
                        .change_membership(self.request(node_pb::ChangeMembershipRequest {
                            shard_id: shard.0,
                            voters: voters.iter().map(|n| n.0).collect(),
                            retain_as_learners: false,
                            remove_learners: vec![],
                        })),
                )
                .await
                .map_err(failed(leader))?;
            }
            Action::CompleteMove { shard, remove_from } => {
                // The move is done by the shard's committed configuration (D37), whose epoch
                // tells the old node its replica is no longer counted (D36).
                if let Some(node) = remove_from {
                    let excluded_at = view(*shard).map_or(0, |s| s.epoch);
                    self.remove_replica(metadata, *shard, *node, excluded_at)
                        .await;
                }
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: None,
                        ..metadata.shard_record(*shard)
                    })
                    .await?;
            }
            Action::AbortMove { shard, learner } => {
                self.remove_learner(metadata, leader_of(*shard).ok(), *shard, *learner)
                    .await;
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: None,
                        ..metadata.shard_record(*shard)
                    })
                    .await?;
            }
            Action::RemoveLearner { shard, node } => {
                self.remove_learner(metadata, leader_of(*shard).ok(), *shard, *node)
                    .await;
            }
            Action::TransferLeader { shard, from, to } => {
                self.bounded(self.admin(metadata, *from)?.transfer_leader(self.request(
                    node_pb::TransferLeaderRequest {
                        shard_id: shard.0,
                        to_node_id: to.0,
                    },
                )))
                .await
                .map_err(failed(*from))?;
            }
        }
        Ok(())
    }

    /// Creates an empty replica of `shard` on `node`; one that exists is kept.
    pub(crate) async fn create_replica(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        node: NodeId,
    ) -> Result<()> {
        self.bounded(
            self.admin(metadata, node)?
                .create_replica(self.request(node_pb::CreateReplicaRequest { shard_id: shard.0 })),
        )
        .await
        .map_err(|status| self.call_failed(metadata, node, status))?;
        Ok(())
    }

    /// Drops a learner from the membership, then deletes its replica. Best effort: whatever
    /// fails is seen again next round.
    async fn remove_learner(
        &self,
        metadata: &Metadata,
        leader: Option<NodeId>,
        shard: ShardId,
        learner: NodeId,
    ) {
        // The epoch of the committed configuration without the learner (0: none known, and
        // the node keeps a replica it still counts as a member of).
        let mut excluded_at = 0;
        if let Some(leader) = leader {
            if let Ok(mut admin) = self.admin(metadata, leader) {
                let request = node_pb::ChangeMembershipRequest {
                    shard_id: shard.0,
                    voters: vec![],
                    retain_as_learners: false,
                    remove_learners: vec![learner.0],
                };
                match self
                    .bounded(admin.change_membership(self.request(request)))
                    .await
                {
                    Ok(response) => excluded_at = response.into_inner().epoch,
                    Err(status) => {
                        let error = self.call_failed(metadata, leader, status);
                        tracing::warn!(%shard, %learner, %error, "could not drop the learner");
                        return;
                    }
                }
            }
        }
        self.remove_replica(metadata, shard, learner, excluded_at)
            .await;
    }

    /// Asks `node` to delete its replica of `shard`; `excluded_at` is the epoch of a committed
    /// configuration without `node` (the node refuses while its own membership is newer and
    /// still counts it, D36). Best effort: what fails is seen again next round.
    pub(super) async fn remove_replica(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        node: NodeId,
        excluded_at: u64,
    ) {
        match self.admin(metadata, node) {
            Ok(mut admin) => {
                let request = node_pb::RemoveReplicaRequest {
                    shard_id: shard.0,
                    excluded_at_epoch: excluded_at,
                };
                if let Err(status) = self
                    .bounded(admin.remove_replica(self.request(request)))
                    .await
                {
                    let error = self.call_failed(metadata, node, status);
                    tracing::warn!(%shard, %node, %error, "could not delete the replica; retrying later");
                }
            }
            Err(error) => {
                tracing::warn!(%shard, %node, %error, "could not reach the node to delete a replica")
            }
        }
    }
}
