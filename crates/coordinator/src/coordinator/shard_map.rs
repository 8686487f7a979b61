//! The shard map the leader publishes (docs/coordinator.md, "The shard map"): built from the
//! round's views, published with a new version only when its content changed.

use super::{Coordinator, LeaderState};
use crate::heartbeat::storage_engine_to_proto;
use crate::metadata::Metadata;
use crate::placement::{NodeState, NodeView, ShardView};
use cairn_proto::coordinator::v1 as pb;
use cairn_types::NodeId;
use std::collections::BTreeMap;

impl Coordinator {
    /// Publishes the map of this round's views, with a new version, if its content changed.
    pub(super) fn publish(
        &self,
        state: &mut LeaderState,
        metadata: &Metadata,
        nodes: &[NodeView],
        shards: &[ShardView],
    ) {
        let mut replica_counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut leader_counts: BTreeMap<NodeId, u64> = BTreeMap::new();
        for shard in shards {
            for node in shard.voters.iter().chain(&shard.learners) {
                *replica_counts.entry(*node).or_default() += 1;
            }
            if let Some(leader) = shard.leader {
                *leader_counts.entry(leader).or_default() += 1;
            }
        }
        let shard_infos: Vec<pb::ShardInfo> = shards
            .iter()
            .map(|shard| pb::ShardInfo {
                shard_id: shard.id.0,
                epoch: state.observed.epoch_of(shard.id, shard.leader),
                voters: shard.voters.iter().map(|n| n.0).collect(),
                learners: shard.learners.iter().map(|n| n.0).collect(),
                leader_node_id: shard.leader.map_or(0, |n| n.0),
                missing_voters: shard.missing.iter().map(|n| n.0).collect(),
            })
            .collect();
        let node_infos: Vec<pb::NodeInfo> = nodes
            .iter()
            .filter_map(|view| metadata.nodes.get(&view.id).map(|record| (view, record)))
            .map(|(view, record)| pb::NodeInfo {
                node_id: record.id.0,
                address: record.address.clone(),
                labels: record
                    .labels
                    .iter()
                    .map(|(k, v)| pb::Label {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                state: node_state_to_proto(view.state) as i32,
                replica_count: replica_counts.get(&record.id).copied().unwrap_or(0),
                leader_count: leader_counts.get(&record.id).copied().unwrap_or(0),
                storage_engine: storage_engine_to_proto(
                    state
                        .observed
                        .heartbeat(record.id)
                        .and_then(|heartbeat| heartbeat.storage_engine),
                ) as i32,
            })
            .collect();
        let body = (shard_infos, node_infos);
        if state.last_map_body.as_ref() == Some(&body) {
            return;
        }
        state.map_sequence += 1;
        assert!(state.map_sequence < 1 << 32, "map sequence overflows");
        // Versions increase across leaderships: each begins at a higher revision.
        let version = (state.map_generation << 32) | state.map_sequence;
        let map = pb::ShardMap {
            version,
            cluster_id: state.cluster.cluster_id.clone(),
            shard_count: state.cluster.shard_count,
            shards: body.0.clone(),
            nodes: body.1.clone(),
        };
        state.last_map_body = Some(body);
        self.map.send_replace(Some(map));
    }
}

pub fn node_state_to_proto(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Suspect => pb::NodeState::Suspect,
        NodeState::Down => pb::NodeState::Down,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Left => pb::NodeState::Left,
    }
}
