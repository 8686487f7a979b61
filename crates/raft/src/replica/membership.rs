//! Changes to the shard's Raft group: founding it, learners and voters, leadership transfer
//! and hand-off, and unsafe recovery to a single voter (D41).

use super::{epoch_of, ReplicaError, ReplicaStatus, ShardReplica};
use crate::learner_removal;
use crate::log_store::LogStore;
use crate::type_config::NodeAddress;
use cairn_types::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};

impl ShardReplica {
    /// Founds the shard's Raft group with `members` as voters. Returns false if the group
    /// already exists (initialising twice is harmless).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, NodeAddress>,
    ) -> Result<bool, ReplicaError> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(other)) => Err(ReplicaError::Membership {
                shard: self.shard,
                reason: other.to_string(),
            }),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    pub async fn add_learner(
        &self,
        node: NodeId,
        address: String,
        wait_caught_up: bool,
    ) -> Result<u64, ReplicaError> {
        let response = self
            .raft
            .add_learner(node, NodeAddress { address }, wait_caught_up)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain_as_learners: bool,
    ) -> Result<u64, ReplicaError> {
        if voters.is_empty() {
            return Err(ReplicaError::Membership {
                shard: self.shard,
                reason: "a shard needs at least one voter".into(),
            });
        }
        let response = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), retain_as_learners)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    /// Drops `learners` from the shard's membership (voters stay as they are). Answers the
    /// epoch of a committed configuration without them, or 0 if none is known; refuses to
    /// drop a voter of the latest configuration (see [`learner_removal::decide`], D36).
    pub async fn remove_learners(&self, learners: BTreeSet<NodeId>) -> Result<u64, ReplicaError> {
        let decision = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let members: BTreeSet<NodeId> = membership.learner_ids().collect();
            learner_removal::decide(
                &learners,
                &learner_removal::Effective {
                    epoch: epoch_of(metrics.membership_config.log_id().as_ref()),
                    voters: &voters,
                    learners: &members,
                    committed_index: metrics.local_committed.as_ref().map(|l| l.index),
                },
            )
        };
        let present = match decision {
            Ok(learner_removal::LearnerRemoval::Remove(present)) => present,
            Ok(learner_removal::LearnerRemoval::Absent { epoch }) => return Ok(epoch),
            Err(learner_removal::IsVoter(voter)) => {
                return Err(ReplicaError::Membership {
                    shard: self.shard,
                    reason: format!(
                        "{voter} is a voter of the latest configuration, not a learner to drop"
                    ),
                })
            }
        };
        let response = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(present), false)
            .await
            .map_err(|error| self.write_error(error))?;
        Ok(epoch_of(Some(&response.log_id)))
    }

    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), ReplicaError> {
        if !self.raft.is_leader() {
            let leader = self.raft.current_leader().await;
            return Err(ReplicaError::NotLeader {
                shard: self.shard,
                leader,
                leader_address: None,
            });
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|fatal| self.fatal(fatal))
    }

    /// Before this process stops: if this replica leads, asks the voter whose log matches the
    /// most of the leader's to take over (openraft's leadership transfer: it stands for
    /// election at once, without waiting for an election timeout). Returns the chosen voter;
    /// `None` when this replica does not lead or leads alone.
    pub async fn hand_off_leadership(&self) -> Option<NodeId> {
        let target = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.current_leader != Some(self.context.node_id) {
                return None;
            }
            let replication = metrics.replication.as_ref()?;
            metrics
                .membership_config
                .membership()
                .voter_ids()
                .filter(|voter| *voter != self.context.node_id)
                .max_by_key(|voter| {
                    replication
                        .get(voter)
                        .and_then(|matched| matched.as_ref().map(|log_id| log_id.index))
                        .unwrap_or(0)
                })?
        };
        match self.transfer_leader(target).await {
            Ok(()) => Some(target),
            Err(error) => {
                tracing::warn!(shard = %self.shard, %target, %error, "could not hand off leadership");
                None
            }
        }
    }

    /// Unsafe recovery (D41): stops this replica's Raft instance and appends a membership
    /// entry that makes this node the shard's only voter. The caller reopens the replica,
    /// which then elects itself and commits whatever its log holds. Returns the replica's
    /// status before (what the survivor had: writes after it may be lost) and the shard's
    /// new epoch. Refused when this replica is not a voter (a learner may miss committed
    /// entries that a voter has).
    pub async fn force_single_voter(&self) -> Result<(ReplicaStatus, u64), ReplicaError> {
        let before = self.status_with_data().await?;
        let me = self.context.node_id;
        if !before.voters.contains(&me) {
            return Err(ReplicaError::Membership {
                shard: self.shard,
                reason: format!(
                    "this replica is not a voter of its shard (voters {:?}): recover from a voter",
                    before.voters
                ),
            });
        }
        let address = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&me)
            .cloned()
            .unwrap_or_default();
        self.shutdown().await;
        let log_store = LogStore::new(
            self.context.db.clone(),
            self.shard,
            self.context.group_commit.clone(),
        );
        let shard = self.shard;
        let log_id =
            tokio::task::spawn_blocking(move || log_store.append_forced_membership(me, address))
                .await
                .map_err(|join| ReplicaError::Stopped {
                    shard,
                    reason: join.to_string(),
                })?
                .map_err(|source| ReplicaError::Storage { shard, source })?;
        tracing::warn!(
            %shard,
            last_log_index = before.last_log_index,
            applied_index = before.applied_index,
            revision = before.revision.0,
            forced_index = log_id.index(),
            "UNSAFE RECOVERY: this replica is now the shard's only voter"
        );
        Ok((before, epoch_of(Some(&log_id))))
    }
}
