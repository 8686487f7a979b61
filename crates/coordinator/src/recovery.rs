//! Unsafe recovery of a shard that lost its quorum (D41), on an operator's explicit request
//! (`cairnctl unsafe recover-shard`; TiKV's online unsafe recovery and etcd's
//! `--force-new-cluster` are the models).
//!
//! The coordinator leader checks that the shard really is without quorum and that the named
//! node is one of its surviving voters, then tells that node to make its replica the shard's
//! only voter. The shard's epoch rises with the new membership, the map shows one voter, and
//! the ordinary repair re-replicates the shard from the survivor. Writes that the lost voters
//! acknowledged but the survivor never received are gone: the answer reports the survivor's
//! log and revision so that the operator knows from where on.
//!
//! It must never run on a shard that has its quorum: there it would fork the shard.

use crate::coordinator::Coordinator;
use crate::error::{CoordinatorError, Result};
use crate::metadata::ShardRecord;
use cairn_proto::coordinator::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_types::{NodeId, ShardId};

/// Checks an unsafe recovery request against what the leader knows; returns the shard and
/// the surviving node to recover from.
pub fn check_request(
    request: &pb::UnsafeRecoverShardRequest,
    shard_count: u32,
    lost: &[crate::quorum::LostShard],
) -> Result<(ShardId, NodeId)> {
    if !request.accept_data_loss {
        return Err(CoordinatorError::Invalid {
            field: "accept_data_loss",
            reason: "must be true: an unsafe recovery may lose acknowledged writes".into(),
        });
    }
    let shard = ShardId(request.shard_id);
    if request.shard_id >= u64::from(shard_count) {
        return Err(CoordinatorError::Invalid {
            field: "shard_id",
            reason: format!(
                "the cluster has shards 0 to {}",
                shard_count.saturating_sub(1)
            ),
        });
    }
    let Some(lost) = lost.iter().find(|lost| lost.loss.shard == shard) else {
        return Err(CoordinatorError::Invalid {
            field: "shard_id",
            reason: format!(
                "{shard} has its quorum (or this coordinator has not seen it lose it): \
                 an unsafe recovery would fork it; nothing to recover"
            ),
        });
    };
    let from = NodeId(request.from_node_id);
    if !lost.loss.surviving.contains(&from) {
        return Err(CoordinatorError::Invalid {
            field: "from_node_id",
            reason: format!(
                "node {} is not a surviving voter of {shard} (surviving voters: {:?})",
                from.0,
                lost.loss.surviving.iter().map(|n| n.0).collect::<Vec<_>>()
            ),
        });
    }
    Ok((shard, from))
}

impl Coordinator {
    /// Recovers a shard without quorum from one surviving voter (leader only).
    pub async fn unsafe_recover_shard(
        &self,
        request: pb::UnsafeRecoverShardRequest,
    ) -> Result<pb::UnsafeRecoverShardResponse> {
        if !self.leader_state().await? {
            return Err(self.not_leader());
        }
        let cluster = self.cluster().await?;
        let lost = self.shards_without_quorum();
        let (shard, from) = check_request(&request, cluster.shard_count, &lost)?;
        let previous_voters: Vec<u64> = lost
            .iter()
            .find(|lost| lost.loss.shard == shard)
            .map(|lost| lost.loss.voters.iter().map(|n| n.0).collect())
            .unwrap_or_default();
        let metadata = self.metadata.read_all().await?;
        tracing::warn!(%shard, from = %from, ?previous_voters, "UNSAFE RECOVERY requested: forcing the shard onto one surviving replica");
        // The recovered membership is no longer the one the shard was created with: its
        // creation must never be resumed with those voters (D51).
        if metadata.founding.contains_key(&shard) {
            self.metadata.delete_founding(shard).await?;
        }
        let answer = self
            .bounded(
                self.admin(&metadata, from)?
                    .unsafe_recover_replica(self.request(node_pb::UnsafeRecoverReplicaRequest {
                        shard_id: shard.0,
                        node_id: from.0,
                    })),
            )
            .await
            .map_err(|status| {
                CoordinatorError::Unavailable(format!(
                    "node {} did not recover its replica: {}",
                    from.0,
                    status.message()
                ))
            })?
            .into_inner();
        let before = answer.before.unwrap_or_default();
        // A move in flight waits for a learner that is no longer in the membership.
        if let Some(record) = metadata.shards.get(&shard) {
            if record.pending_move.is_some() {
                self.metadata
                    .put_shard(&ShardRecord {
                        pending_move: None,
                        ..record.clone()
                    })
                    .await?;
            }
        }
        tracing::warn!(
            %shard,
            from = %from,
            last_log_index = before.last_log_index,
            term = before.term,
            applied_index = before.applied_index,
            revision = before.revision,
            epoch = answer.epoch,
            "UNSAFE RECOVERY done: the shard runs on one replica and is re-replicated from it; \
             writes acknowledged after the survivor's last log entry are lost"
        );
        Ok(pb::UnsafeRecoverShardResponse {
            shard_id: shard.0,
            from_node_id: from.0,
            previous_voters,
            last_log_index: before.last_log_index,
            term: before.term,
            committed_index: before.committed_index,
            applied_index: before.applied_index,
            revision: before.revision,
            epoch: answer.epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::{LostShard, QuorumLoss};
    use std::time::Instant;

    fn lost() -> Vec<LostShard> {
        let now = Instant::now();
        vec![LostShard {
            loss: QuorumLoss {
                shard: ShardId(2),
                voters: [1, 2, 3].map(NodeId).into(),
                surviving: [NodeId(3)].into(),
            },
            since: now,
            attempts: 0,
            next_attempt: now,
        }]
    }

    fn request(shard_id: u64, from_node_id: u64, accept: bool) -> pb::UnsafeRecoverShardRequest {
        pb::UnsafeRecoverShardRequest {
            shard_id,
            from_node_id,
            accept_data_loss: accept,
        }
    }

    fn refused_field(result: Result<(ShardId, NodeId)>) -> &'static str {
        match result {
            Err(CoordinatorError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn only_a_shard_without_quorum_is_recovered_and_only_from_a_survivor() {
        assert_eq!(
            check_request(&request(2, 3, true), 8, &lost()).expect("allowed"),
            (ShardId(2), NodeId(3))
        );
        assert_eq!(
            refused_field(check_request(&request(2, 3, false), 8, &lost())),
            "accept_data_loss"
        );
        assert_eq!(
            refused_field(check_request(&request(1, 3, true), 8, &lost())),
            "shard_id",
            "a shard with its quorum would fork"
        );
        assert_eq!(
            refused_field(check_request(&request(9, 3, true), 8, &lost())),
            "shard_id"
        );
        assert_eq!(
            refused_field(check_request(&request(2, 1, true), 8, &lost())),
            "from_node_id",
            "node 1 is a lost voter"
        );
    }
}
