//! Comparing the replicas of every shard once the writes stopped.

use crate::{wait_for, Cluster};
use cairn_types::{NodeId, ShardId};
use std::time::Duration;

impl Cluster {
    /// Waits until the replicas of each shard (as the coordinators place them) have applied
    /// the same index, then asserts that they hold the same keys, values and revisions.
    /// Returns the number of keys compared. Call it once no client writes any more.
    pub async fn assert_replicas_identical(&self, timeout: Duration) -> usize {
        let status = wait_for("a cluster status", timeout, || self.cluster_status()).await;
        let mut compared = 0;
        for shard in &status.shards {
            let shard_id = ShardId(shard.shard_id);
            // The replica set is read again on every attempt: a move that was in flight when
            // the writes stopped may still add its learner or drop the replica it replaces,
            // and a replica that left the shard never catches up.
            let (replicas, scans) = wait_for(
                &format!("the replicas of {shard_id} to apply the same index"),
                timeout,
                || async move {
                    let replicas = self.replicas_of(shard_id).await?;
                    let applied = self.applied_indexes(&replicas, shard_id).await?;
                    if applied.iter().any(|index| *index != applied[0]) {
                        tracing::debug!(%shard_id, ?replicas, ?applied, "replicas not level yet");
                        return None;
                    }
                    let mut scans = Vec::new();
                    for id in &replicas {
                        scans.push(self.local_scan(*id, shard_id).await?);
                    }
                    // Nothing was applied while scanning, and the replica set did not change,
                    // so the scans are comparable.
                    (self.applied_indexes(&replicas, shard_id).await? == applied
                        && self.replicas_of(shard_id).await? == replicas)
                        .then_some((replicas, scans))
                },
            )
            .await;
            for (id, scan) in replicas.iter().zip(&scans) {
                assert_eq!(
                    scan, &scans[0],
                    "{shard_id}: the replica on {id} differs from the one on {}",
                    replicas[0]
                );
            }
            compared += scans[0].len();
        }
        compared
    }

    /// The voters and learners of `shard` as the coordinators place them now.
    async fn replicas_of(&self, shard: ShardId) -> Option<Vec<NodeId>> {
        let status = self.cluster_status().await?;
        let shard = status.shards.iter().find(|s| s.shard_id == shard.0)?;
        Some(
            shard
                .voters
                .iter()
                .chain(&shard.learners)
                .map(|node_id| NodeId(*node_id))
                .collect(),
        )
    }

    async fn applied_indexes(&self, replicas: &[NodeId], shard: ShardId) -> Option<Vec<u64>> {
        let mut applied = Vec::new();
        for id in replicas {
            applied.push(self.status(*id, shard).await?.applied_index);
        }
        Some(applied)
    }
}
