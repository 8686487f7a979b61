//! Builders shared by the placement tests.

use super::*;
use std::collections::BTreeMap;

pub(super) fn n(id: u64) -> NodeId {
    NodeId(id)
}

pub(super) fn sid(id: u64) -> ShardId {
    ShardId(id)
}

pub(super) fn ids(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().map(|id| n(*id)).collect()
}

pub(super) fn node(id: u64, state: NodeState) -> NodeView {
    NodeView {
        id: n(id),
        zone: None,
        state,
    }
}

pub(super) fn up(id: u64) -> NodeView {
    node(id, NodeState::Up)
}

pub(super) fn zoned(id: u64, zone: &str) -> NodeView {
    NodeView {
        id: n(id),
        zone: Some(zone.to_string()),
        state: NodeState::Up,
    }
}

pub(super) fn uncreated(id: u64) -> ShardView {
    ShardView {
        id: sid(id),
        ..ShardView::default()
    }
}

pub(super) fn shard(id: u64, voters: &[u64], leader: Option<u64>) -> ShardView {
    ShardView {
        id: sid(id),
        voters: ids(voters),
        leader: leader.map(n),
        epoch: 1,
        ..ShardView::default()
    }
}

/// A shard in the middle of moving a replica to `to` (already a learner).
pub(super) fn moving(id: u64, voters: &[u64], to: u64, from: Option<u64>) -> ShardView {
    ShardView {
        learners: ids(&[to]),
        pending_move: Some(mv(to, from)),
        ..shard(id, voters, Some(voters[0]))
    }
}

pub(super) fn mv(to: u64, from: Option<u64>) -> Move {
    Move {
        to: n(to),
        from: from.map(n),
    }
}

pub(super) fn config(replication_factor: usize, moves_in_flight_max: usize) -> PlacementConfig {
    PlacementConfig {
        replication_factor,
        replica_tolerance: 1,
        leader_tolerance: 1,
        moves_in_flight_max,
    }
}

pub(super) fn create(shard: u64, nodes: &[u64]) -> Action {
    Action::CreateShard {
        shard: sid(shard),
        nodes: nodes.iter().map(|id| n(*id)).collect(),
    }
}

pub(super) fn start(shard: u64, to: u64, from: Option<u64>) -> Action {
    Action::StartMove {
        shard: sid(shard),
        mv: mv(to, from),
    }
}

pub(super) fn transfer(shard: u64, from: u64, to: u64) -> Action {
    Action::TransferLeader {
        shard: sid(shard),
        from: n(from),
        to: n(to),
    }
}

/// Replica counts per node over a set of `CreateShard` actions.
pub(super) fn created_counts(actions: &[Action]) -> BTreeMap<NodeId, usize> {
    let mut counts = BTreeMap::new();
    for action in actions {
        let Action::CreateShard { nodes, .. } = action else {
            panic!("unexpected {action:?}")
        };
        assert_eq!(
            nodes.iter().collect::<BTreeSet<_>>().len(),
            nodes.len(),
            "{nodes:?}"
        );
        assert!(
            nodes.windows(2).all(|w| w[0] < w[1]),
            "not sorted: {nodes:?}"
        );
        for node in nodes {
            *counts.entry(*node).or_insert(0) += 1;
        }
    }
    counts
}
