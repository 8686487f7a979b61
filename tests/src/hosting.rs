//! Whether the shard map tells the truth about where replicas are: every shard has as many
//! voters as the replication factor, and each of them, asked directly, hosts its replica
//! and counts the same voters (issue 14: a map that lists voters that host nothing hides a
//! shard one failure away from losing its quorum).

use crate::observe::admin_client;
use crate::{wait_for, Cluster};
use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::node::v1 as node;
use cairn_types::NodeId;
use std::collections::BTreeSet;
use std::time::Duration;

impl Cluster {
    /// Waits until the coordinators report no under-replicated shard and no missing voter,
    /// every shard has `replication_factor` voters and a leader, and every voter's node,
    /// asked itself, hosts the shard's replica with the same voter set as the map. Returns
    /// the status that passed.
    pub async fn wait_for_every_shard_hosted(
        &self,
        timeout: Duration,
    ) -> coordinator::ClusterStatusResponse {
        wait_for(
            "every shard's voters to host their replicas, and the map to agree",
            timeout,
            || async move {
                let status = self.cluster_status().await?;
                match self.hosting_problem(&status).await {
                    None => Some(status),
                    Some(problem) => {
                        tracing::debug!(%problem, "not yet");
                        None
                    }
                }
            },
        )
        .await
    }

    /// What is wrong with `status` compared with the nodes, if anything.
    async fn hosting_problem(&self, status: &coordinator::ClusterStatusResponse) -> Option<String> {
        let replication = self.replication_factor() as usize;
        if status.shards.len() != self.shard_count() as usize {
            return Some(format!("{} shards in the map", status.shards.len()));
        }
        if status.under_replicated_shards != 0 {
            return Some(format!(
                "{} shards under-replicated",
                status.under_replicated_shards
            ));
        }
        for shard in &status.shards {
            let voters: BTreeSet<u64> = shard.voters.iter().copied().collect();
            if voters.len() != replication || shard.leader_node_id == 0 {
                return Some(format!(
                    "shard {}: voters {voters:?}, leader {}",
                    shard.shard_id, shard.leader_node_id
                ));
            }
            if !shard.missing_voters.is_empty() {
                return Some(format!(
                    "shard {}: missing {:?}",
                    shard.shard_id, shard.missing_voters
                ));
            }
            for voter in &voters {
                let Some(process) = self.node_process(NodeId(*voter)) else {
                    return Some(format!(
                        "shard {}: voter {voter} is no running node",
                        shard.shard_id
                    ));
                };
                if !process.is_awake() {
                    return Some(format!(
                        "shard {}: voter {voter} is not awake",
                        shard.shard_id
                    ));
                }
                let mut admin = admin_client(&self.client_tls(), &process.listen_address).await?;
                let replica = admin
                    .shard_status(node::ShardStatusRequest {
                        shard_id: shard.shard_id,
                        all: false,
                    })
                    .await
                    .ok()
                    .and_then(|response| response.into_inner().replicas.into_iter().next());
                let Some(replica) = replica else {
                    return Some(format!(
                        "shard {}: voter {voter} hosts no replica",
                        shard.shard_id
                    ));
                };
                let own: BTreeSet<u64> = replica.voters.iter().copied().collect();
                if own != voters {
                    return Some(format!(
                        "shard {}: the map says {voters:?}, node {voter}'s replica says {own:?}",
                        shard.shard_id
                    ));
                }
            }
        }
        None
    }
}
