//! The reconcile loop's housekeeping decisions outside placement: pending moves that will
//! never finish, replicas that belong to no shard, and leaving nodes that hold nothing.
//!
//! Pure functions of the round's views (what heartbeats show), the metadata (what the
//! coordinator recorded), the time, and the since-when maps the leader keeps across rounds;
//! no I/O and no clocks, so every rule is unit-tested without a network. The loop carries
//! the decisions out (`coordinator::reconcile_loop`).

use crate::metadata::NodeRecord;
use crate::placement::{NodeState, ShardView};
use crate::reconcile::stray_replicas;
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Shards whose pending move is to be dropped and planned afresh: for more than `grace`
/// without a break, its target was not in the shard's membership (the learner was never
/// added: its add was lost with a leader change) or did not host the replica (deleted, or
/// a wiped disk), so it never catches up. Keeps `since` (when each move was first seen so)
/// up to date.
pub fn stale_moves(
    shards: &[ShardView],
    since: &mut BTreeMap<ShardId, Instant>,
    now: Instant,
    grace: Duration,
) -> Vec<ShardId> {
    let mut stale = Vec::new();
    for shard in shards {
        let Some(mv) = &shard.pending_move else {
            since.remove(&shard.id);
            continue;
        };
        let in_membership = shard.learners.contains(&mv.to) || shard.voters.contains(&mv.to);
        if in_membership && shard.hosts.contains(&mv.to) {
            since.remove(&shard.id);
            continue;
        }
        let first = *since.entry(shard.id).or_insert(now);
        if now.saturating_duration_since(first) > grace {
            stale.push(shard.id);
        }
    }
    stale
}

/// Replicas to delete now, as `(node, shard, epoch of a committed configuration without the
/// node)`: hosted outside their shard's committed configuration
/// (`reconcile::stray_replicas`) for more than `grace`, on a node that can be asked to.
/// Keeps `since` (when each replica was first seen stray) up to date.
///
/// The views are from the start of the round and heartbeats lag: a replica just created
/// for a move looks stray for a moment, hence the grace. Never on a node that may be dead
/// (its address may serve another node by now); a left node that still runs may hold a
/// replica its drain left behind, so `Left` counts as reachable.
pub fn strays_to_delete(
    shards: &[ShardView],
    states: &BTreeMap<NodeId, NodeState>,
    since: &mut BTreeMap<(NodeId, ShardId), Instant>,
    now: Instant,
    grace: Duration,
) -> Vec<(NodeId, ShardId, u64)> {
    let stray = stray_replicas(shards);
    let current: BTreeSet<(NodeId, ShardId)> = stray
        .iter()
        .map(|(node, shard, _)| (*node, *shard))
        .collect();
    since.retain(|key, _| current.contains(key));
    stray
        .into_iter()
        .filter(|(node, shard, _)| {
            let first = *since.entry((*node, *shard)).or_insert(now);
            now.saturating_duration_since(first) > grace
        })
        .filter(|(node, _, _)| {
            matches!(
                states.get(node),
                Some(NodeState::Up | NodeState::Leaving | NodeState::Left)
            )
        })
        .collect()
}

/// Leaving nodes that no shard lists as a voter or learner any more: they become left.
pub fn drained_nodes<'a>(
    nodes: &'a BTreeMap<NodeId, NodeRecord>,
    shards: &[ShardView],
) -> Vec<&'a NodeRecord> {
    nodes
        .values()
        .filter(|record| record.leaving && !record.left)
        .filter(|record| {
            shards
                .iter()
                .all(|s| !s.voters.contains(&record.id) && !s.learners.contains(&record.id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Move;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    /// Shard 0 on voters 1, 2, 3 (led by 1, epoch 7), hosted by `hosts`, moving to node 4.
    fn moving(learners: &[u64], hosts: &[u64]) -> ShardView {
        ShardView {
            id: ShardId(0),
            voters: ids(&[1, 2, 3]),
            learners: ids(learners),
            leader: Some(NodeId(1)),
            pending_move: Some(Move {
                to: NodeId(4),
                from: Some(NodeId(3)),
            }),
            epoch: 7,
            hosts: ids(hosts),
            ..ShardView::default()
        }
    }

    #[test]
    fn a_move_whose_learner_never_appears_is_dropped_after_the_grace() {
        let start = Instant::now();
        let grace = Duration::from_secs(6);
        let at = |secs| start + Duration::from_secs(secs);
        let mut since = BTreeMap::new();
        let never_added = [moving(&[], &[1, 2, 3])];
        assert!(stale_moves(&never_added, &mut since, at(0), grace).is_empty());
        assert!(
            stale_moves(&never_added, &mut since, at(6), grace).is_empty(),
            "only once the grace is over"
        );
        assert_eq!(
            stale_moves(&never_added, &mut since, at(7), grace),
            vec![ShardId(0)]
        );
    }

    #[test]
    fn a_learner_that_is_in_and_hosted_restarts_the_clock() {
        let start = Instant::now();
        let grace = Duration::from_secs(6);
        let at = |secs| start + Duration::from_secs(secs);
        let mut since = BTreeMap::new();
        assert!(stale_moves(&[moving(&[], &[1, 2, 3])], &mut since, at(0), grace).is_empty());
        assert!(stale_moves(&[moving(&[4], &[1, 2, 3, 4])], &mut since, at(5), grace).is_empty());
        assert!(since.is_empty());
        // In the membership, but its node lost the replica: it never catches up either.
        let lost = [moving(&[4], &[1, 2, 3])];
        assert!(stale_moves(&lost, &mut since, at(6), grace).is_empty());
        assert_eq!(
            stale_moves(&lost, &mut since, at(13), grace),
            vec![ShardId(0)]
        );
        // No move pending: nothing to remember.
        let settled = [ShardView {
            pending_move: None,
            ..lost[0].clone()
        }];
        assert!(stale_moves(&settled, &mut since, at(20), grace).is_empty());
        assert!(since.is_empty());
    }

    fn states(list: &[(u64, NodeState)]) -> BTreeMap<NodeId, NodeState> {
        list.iter()
            .map(|(id, state)| (NodeId(*id), *state))
            .collect()
    }

    #[test]
    fn a_stray_replica_is_deleted_once_it_stayed_stray_and_only_where_it_can_be() {
        let start = Instant::now();
        let grace = Duration::from_secs(6);
        let at = |secs| start + Duration::from_secs(secs);
        // Nodes 5, 6 and 8 host replicas outside the configuration; node 4 is the move's
        // target and not stray.
        let shards = [moving(&[], &[1, 2, 3, 4, 5, 6, 8])];
        let node_states = states(&[
            (5, NodeState::Up),
            (6, NodeState::Down),
            (8, NodeState::Left),
        ]);
        let mut since = BTreeMap::new();
        assert!(strays_to_delete(&shards, &node_states, &mut since, at(0), grace).is_empty());
        assert!(strays_to_delete(&shards, &node_states, &mut since, at(6), grace).is_empty());
        assert_eq!(
            strays_to_delete(&shards, &node_states, &mut since, at(7), grace),
            vec![(NodeId(5), ShardId(0), 7), (NodeId(8), ShardId(0), 7)],
            "never on a node that may be dead"
        );
        // Node 5's replica joined the membership, then shows up stray again: a new clock.
        let joined = [ShardView {
            learners: ids(&[5]),
            ..shards[0].clone()
        }];
        strays_to_delete(&joined, &node_states, &mut since, at(8), grace);
        assert!(!since.contains_key(&(NodeId(5), ShardId(0))));
        let again = strays_to_delete(&shards, &node_states, &mut since, at(9), grace);
        assert!(!again.contains(&(NodeId(5), ShardId(0), 7)));
    }

    fn node(id: u64, leaving: bool, left: bool) -> (NodeId, NodeRecord) {
        let record = NodeRecord {
            id: NodeId(id),
            address: format!("node-{id}:7101"),
            labels: BTreeMap::new(),
            leaving,
            left,
        };
        (record.id, record)
    }

    #[test]
    fn a_leaving_node_is_left_once_no_shard_lists_it() {
        let nodes: BTreeMap<NodeId, NodeRecord> = [
            node(1, false, false),
            node(3, true, false),
            node(4, true, false),
            node(5, true, false),
            node(6, true, true),
        ]
        .into();
        // Node 3 is still a voter, node 4 a learner; node 5 holds nothing; node 6 left.
        let shards = [moving(&[4], &[1, 2, 3, 4])];
        let drained: Vec<NodeId> = drained_nodes(&nodes, &shards)
            .into_iter()
            .map(|record| record.id)
            .collect();
        assert_eq!(drained, vec![NodeId(5)]);
    }
}
