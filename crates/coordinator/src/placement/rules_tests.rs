//! One test group per placement rule, plus determinism.

use super::test_support::*;
use super::*;

// ---- Rule 1: creation ----

#[test]
fn creates_shard_on_up_nodes_regardless_of_move_budget() {
    let nodes = [up(1), up(2), up(3), node(4, NodeState::Suspect)];
    let actions = plan(&nodes, &[uncreated(0)], &config(3, 0));
    assert_eq!(actions, vec![create(0, &[1, 2, 3])]);
}

#[test]
fn creation_waits_for_enough_up_nodes() {
    let nodes = [
        up(1),
        up(2),
        node(3, NodeState::Suspect),
        node(4, NodeState::Down),
    ];
    assert_eq!(
        plan(&nodes, &[uncreated(0), uncreated(1)], &config(3, 4)),
        vec![]
    );
}

#[test]
fn creation_spreads_many_shards_evenly() {
    let nodes: Vec<NodeView> = (1..=5).map(up).collect();
    let shards: Vec<ShardView> = (0..10).map(uncreated).collect();
    let actions = plan(&nodes, &shards, &config(3, 4));
    assert_eq!(actions.len(), 10);
    assert_eq!(
        actions[..3],
        [
            create(0, &[1, 2, 3]),
            create(1, &[1, 4, 5]),
            create(2, &[2, 3, 4])
        ]
    );
    assert!(created_counts(&actions).values().all(|c| *c == 6));

    // 7 shards x 3 replicas over 4 nodes does not divide evenly: counts differ by one.
    let nodes: Vec<NodeView> = (1..=4).map(up).collect();
    let shards: Vec<ShardView> = (0..7).map(uncreated).collect();
    let counts = created_counts(&plan(&nodes, &shards, &config(3, 4)));
    assert_eq!(counts.len(), 4);
    let (min, max) = (counts.values().min(), counts.values().max());
    assert_eq!((min, max), (Some(&5), Some(&6)));
}

#[test]
fn creation_counts_existing_replicas() {
    let nodes: Vec<NodeView> = (1..=4).map(up).collect();
    let shards = [shard(0, &[1, 2, 3], Some(1)), uncreated(1)];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 4)),
        vec![create(1, &[1, 2, 4])]
    );
}

#[test]
fn creation_spreads_over_zones() {
    // Node 5 has no zone label: it counts as a zone of its own.
    let nodes = [
        zoned(1, "a"),
        zoned(2, "a"),
        zoned(3, "b"),
        zoned(4, "b"),
        up(5),
    ];
    let actions = plan(&nodes, &[uncreated(0), uncreated(1)], &config(3, 4));
    assert_eq!(actions, vec![create(0, &[1, 3, 5]), create(1, &[2, 4, 5])]);
}

// ---- Rule 4: repairs ----

#[test]
fn replaces_voter_on_down_node() {
    let nodes = [up(1), up(2), node(3, NodeState::Down), up(4)];
    let shards = [shard(0, &[1, 2, 3], Some(1))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(0, 4, Some(3))]
    );
}

#[test]
fn replacement_prefers_a_zone_the_remaining_voters_lack() {
    // Node 4 has fewer replicas and a lower id, but zone a is already covered by node 1.
    let nodes = [
        zoned(1, "a"),
        zoned(2, "b"),
        NodeView {
            state: NodeState::Down,
            ..zoned(3, "c")
        },
        zoned(4, "a"),
        zoned(5, "c"),
    ];
    let shards = [shard(0, &[1, 2, 3], Some(1)), shard(1, &[1, 2, 5], Some(1))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(0, 5, Some(3))]
    );
}

#[test]
fn drains_leaving_node() {
    let nodes = [up(1), up(2), up(3), node(4, NodeState::Leaving)];
    let shards = [shard(0, &[1, 2, 4], Some(1))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(0, 3, Some(4))]
    );
}

#[test]
fn under_replicated_shard_grows_back() {
    let nodes = [up(1), up(2), up(3)];
    let shards = [shard(0, &[1, 2], Some(1))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(0, 3, None)]
    );
}

#[test]
fn repairs_down_before_leaving_before_under_replicated() {
    let nodes = [
        up(1),
        up(2),
        up(3),
        node(4, NodeState::Leaving),
        node(5, NodeState::Down),
        up(6),
    ];
    let shards = [
        shard(0, &[1, 2], Some(1)),
        shard(1, &[1, 2, 4], Some(1)),
        shard(2, &[1, 2, 5], Some(1)),
    ];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 1)),
        vec![start(2, 3, Some(5))]
    );
    // With budget for all three, targets alternate as each move adds to its target's count.
    assert_eq!(
        plan(&nodes, &shards, &config(3, 3)),
        vec![
            start(2, 3, Some(5)),
            start(1, 6, Some(4)),
            start(0, 3, None)
        ]
    );
}

#[test]
fn one_move_per_shard_replacing_down_voter_first() {
    let nodes = [
        up(1),
        up(2),
        up(3),
        node(4, NodeState::Leaving),
        node(5, NodeState::Down),
    ];
    let shards = [shard(0, &[1, 4, 5], Some(1))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 4)),
        vec![start(0, 2, Some(5))]
    );
}

#[test]
fn no_membership_change_without_leader() {
    let nodes = [up(1), up(2), node(3, NodeState::Down), up(4)];
    let shards = [shard(0, &[1, 2, 3], None), shard(1, &[1, 2], None)];
    assert_eq!(plan(&nodes, &shards, &config(3, 4)), vec![]);
}

#[test]
fn suspect_nodes_are_neither_targets_nor_replaced() {
    let mut nodes = vec![
        up(1),
        up(2),
        node(3, NodeState::Suspect),
        node(4, NodeState::Suspect),
        node(5, NodeState::Down),
    ];
    let shards = [shard(0, &[1, 2, 5], Some(1)), shard(1, &[1, 2, 3], Some(1))];
    // The only nodes outside shard 0 are suspect: nothing to move to, so nothing happens.
    assert_eq!(plan(&nodes, &shards, &config(3, 4)), vec![]);
    nodes.push(up(6));
    assert_eq!(
        plan(&nodes, &shards, &config(3, 4)),
        vec![start(0, 6, Some(5))]
    );
}

// ---- Rules 2 and 3: pending moves and learners ----

#[test]
fn pending_move_waits_until_caught_up() {
    let nodes: Vec<NodeView> = (1..=4).map(up).collect();
    let shards = [moving(0, &[1, 2, 3], 4, Some(3))];
    assert_eq!(plan(&nodes, &shards, &config(3, 4)), vec![]);
}

#[test]
fn pending_move_finishes_when_caught_up_and_led() {
    let nodes: Vec<NodeView> = (1..=4).map(up).collect();
    let caught_up = ShardView {
        caught_up: ids(&[4]),
        ..moving(0, &[1, 2, 3], 4, Some(3))
    };
    assert_eq!(
        plan(&nodes, std::slice::from_ref(&caught_up), &config(3, 4)),
        vec![Action::FinishMove {
            shard: sid(0),
            voters: ids(&[1, 2, 4])
        }]
    );
    let growing = ShardView {
        caught_up: ids(&[4]),
        ..moving(0, &[1, 2], 4, None)
    };
    assert_eq!(
        plan(&nodes, &[growing], &config(3, 4)),
        vec![Action::FinishMove {
            shard: sid(0),
            voters: ids(&[1, 2, 4])
        }]
    );
    let leaderless = ShardView {
        leader: None,
        ..caught_up
    };
    assert_eq!(plan(&nodes, &[leaderless], &config(3, 4)), vec![]);
}

#[test]
fn completed_move_removes_old_replica_only_where_reachable() {
    let complete = |remove_from: Option<u64>| Action::CompleteMove {
        shard: sid(0),
        remove_from: remove_from.map(n),
    };
    let done = ShardView {
        learners: BTreeSet::new(),
        ..moving(0, &[1, 2, 4], 4, Some(3))
    };
    let cases = [
        (Some(NodeState::Up), Some(3)),
        (Some(NodeState::Suspect), Some(3)),
        (Some(NodeState::Leaving), Some(3)),
        (Some(NodeState::Down), None),
        (Some(NodeState::Left), None),
        (None, None),
    ];
    for (state, expected) in cases {
        let mut nodes = vec![up(1), up(2), up(4)];
        nodes.extend(state.map(|s| node(3, s)));
        assert_eq!(
            plan(&nodes, std::slice::from_ref(&done), &config(3, 4)),
            vec![complete(expected)],
            "{state:?}"
        );
    }
    let grown = ShardView {
        learners: BTreeSet::new(),
        ..moving(0, &[1, 2, 4], 4, None)
    };
    assert_eq!(
        plan(&[up(1), up(2), up(4)], &[grown], &config(3, 4)),
        vec![complete(None)]
    );
}

#[test]
fn pending_move_aborted_when_target_unusable() {
    for state in [
        NodeState::Suspect,
        NodeState::Down,
        NodeState::Leaving,
        NodeState::Left,
    ] {
        let nodes = [up(1), up(2), up(3), node(4, state)];
        // Aborting needs no leader: removing a learner does not change the voters.
        let shards = [ShardView {
            leader: None,
            ..moving(0, &[1, 2, 3], 4, Some(3))
        }];
        assert_eq!(
            plan(&nodes, &shards, &config(3, 4)),
            vec![Action::AbortMove {
                shard: sid(0),
                learner: n(4)
            }],
            "{state:?}"
        );
    }
    let unknown_target = [moving(0, &[1, 2, 3], 9, Some(3))];
    assert_eq!(
        plan(&[up(1), up(2), up(3)], &unknown_target, &config(3, 4)),
        vec![Action::AbortMove {
            shard: sid(0),
            learner: n(9)
        }]
    );
}

#[test]
fn stray_learner_removed() {
    let nodes: Vec<NodeView> = (1..=5).map(up).collect();
    let shards = [ShardView {
        learners: ids(&[4, 5]),
        ..moving(0, &[1, 2, 3], 5, Some(3))
    }];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 0)),
        vec![Action::RemoveLearner {
            shard: sid(0),
            node: n(4)
        }]
    );
}

// ---- Rule 7: the move budget ----

#[test]
fn pending_moves_count_against_the_budget() {
    let nodes = [up(1), up(2), up(3), up(4), up(5), node(6, NodeState::Down)];
    let mut shards = vec![moving(0, &[1, 2, 6], 3, Some(6))];
    shards.extend((1..=3).map(|id| shard(id, &[1, 2, 6], Some(1))));
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(1, 4, Some(6))]
    );
    assert_eq!(plan(&nodes, &shards, &config(3, 1)), vec![]);
}

#[test]
fn completed_move_frees_its_budget() {
    let nodes = [up(1), up(2), up(3), up(4), up(5), node(6, NodeState::Down)];
    let mut shards = vec![ShardView {
        learners: BTreeSet::new(),
        ..moving(0, &[1, 2, 3], 3, Some(6))
    }];
    shards.extend((1..=3).map(|id| shard(id, &[1, 2, 6], Some(1))));
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![
            Action::CompleteMove {
                shard: sid(0),
                remove_from: None
            },
            start(1, 4, Some(6)),
            start(2, 5, Some(6)),
        ]
    );
}

// ---- Rule 5: replica rebalance ----

/// Four nodes, four shards, three replicas each: every node holds three, leaders spread.
fn four_balanced_shards() -> Vec<ShardView> {
    vec![
        shard(0, &[1, 2, 3], Some(1)),
        shard(1, &[1, 2, 4], Some(2)),
        shard(2, &[1, 3, 4], Some(3)),
        shard(3, &[2, 3, 4], Some(4)),
    ]
}

#[test]
fn rebalance_moves_replicas_to_new_empty_node() {
    let nodes: Vec<NodeView> = (1..=5).map(up).collect();
    let shards = four_balanced_shards();
    assert_eq!(
        plan(&nodes, &shards, &config(3, 1)),
        vec![start(0, 5, Some(1))]
    );
    // 3,3,3,3,0 -> 2,3,3,3,1 -> 2,2,3,3,2: within tolerance after two moves.
    assert_eq!(
        plan(&nodes, &shards, &config(3, 4)),
        vec![start(0, 5, Some(1)), start(1, 5, Some(2))]
    );
    // Without the new node the cluster is balanced: nothing to do.
    assert_eq!(plan(&nodes[..4], &shards, &config(3, 4)), vec![]);
}

#[test]
fn rebalance_waits_for_repairs() {
    let nodes = [up(1), up(2), up(3), up(4), up(5), node(6, NodeState::Down)];
    let mut shards: Vec<ShardView> = (0..3).map(|id| shard(id, &[1, 2, 3], Some(1))).collect();
    // Shard 3 cannot be repaired now (no leader), yet it still holds back all balancing.
    shards.push(shard(3, &[1, 2, 6], None));
    assert_eq!(plan(&nodes, &shards, &config(3, 4)), vec![]);
}

#[test]
fn rebalance_keeps_zone_spread() {
    let nodes = [
        zoned(1, "a"),
        zoned(2, "b"),
        zoned(3, "c"),
        zoned(4, "c"),
        zoned(5, "a"),
    ];
    // Moving node 2's replica of shard 0 to node 5 would leave shard 0 in zones a and c.
    let shards = [shard(0, &[1, 2, 3], Some(1)), shard(1, &[2, 3, 4], Some(3))];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![start(1, 5, Some(2))]
    );
}

#[test]
fn rebalance_moves_from_a_node_in_the_new_nodes_zone_when_the_most_loaded_cannot() {
    // Three nodes in zones c, a, b hold every shard; a fourth joins in zone a. Node 1 (the
    // most loaded, lowest id) can give nothing to node 4 without leaving a shard in two
    // zones; node 2, in zone a, can.
    let nodes = [zoned(1, "c"), zoned(2, "a"), zoned(3, "b"), zoned(4, "a")];
    let shards = [
        shard(0, &[1, 2, 3], Some(1)),
        shard(1, &[1, 2, 3], Some(2)),
        shard(2, &[1, 2, 3], Some(3)),
    ];
    assert_eq!(
        plan(&nodes, &shards, &config(3, 1)),
        vec![start(0, 4, Some(2))]
    );
}

#[test]
fn rebalance_ignores_nodes_that_are_not_up() {
    // Node 5 is empty but suspect, node 6 empty but leaving: neither attracts replicas.
    let mut nodes: Vec<NodeView> = (1..=4).map(up).collect();
    nodes.push(node(5, NodeState::Suspect));
    nodes.push(node(6, NodeState::Leaving));
    assert_eq!(plan(&nodes, &four_balanced_shards(), &config(3, 4)), vec![]);
}

// ---- Rule 6: leader balance ----

#[test]
fn leader_balance_transfers_within_budget() {
    let nodes = [up(1), up(2), up(3)];
    let shards: Vec<ShardView> = (0..6).map(|id| shard(id, &[1, 2, 3], Some(1))).collect();
    assert_eq!(
        plan(&nodes, &shards, &config(3, 10)),
        vec![
            transfer(0, 1, 2),
            transfer(1, 1, 3),
            transfer(2, 1, 2),
            transfer(3, 1, 3)
        ]
    );
    assert_eq!(
        plan(&nodes, &shards, &config(3, 2)),
        vec![transfer(0, 1, 2), transfer(1, 1, 3)]
    );
    // A pending move takes one slot and keeps its shard's leader where it is.
    let mut with_move = shards.clone();
    with_move[0] = ShardView {
        learners: ids(&[4]),
        pending_move: Some(mv(4, None)),
        ..shards[0].clone()
    };
    let nodes4 = [up(1), up(2), up(3), up(4)];
    let relaxed = PlacementConfig {
        replica_tolerance: 10,
        ..config(3, 2)
    };
    assert_eq!(plan(&nodes4, &with_move, &relaxed), vec![transfer(1, 1, 2)]);
}

#[test]
fn leader_balance_uses_other_pairs_when_the_extremes_share_no_shard() {
    let nodes: Vec<NodeView> = (1..=4).map(up).collect();
    let shards = [
        shard(0, &[1, 2, 3], Some(1)),
        shard(1, &[1, 2, 3], Some(1)),
        shard(2, &[1, 2, 3], Some(1)),
        shard(3, &[2, 3, 4], Some(2)),
        shard(4, &[2, 3, 4], Some(3)),
    ];
    // Node 4 leads nothing, but no shard led by node 1 has a replica on it: node 1 hands
    // one to node 2, which hands one to node 4.
    let relaxed = PlacementConfig {
        replica_tolerance: 10,
        ..config(3, 4)
    };
    assert_eq!(
        plan(&nodes, &shards, &relaxed),
        vec![transfer(0, 1, 2), transfer(3, 2, 4)]
    );
    // Once within tolerance, nothing more.
    let balanced = [
        shard(0, &[1, 2, 3], Some(2)),
        shard(1, &[1, 2, 3], Some(1)),
        shard(2, &[1, 2, 3], Some(1)),
        shard(3, &[2, 3, 4], Some(4)),
        shard(4, &[2, 3, 4], Some(3)),
    ];
    assert_eq!(plan(&nodes, &balanced, &relaxed), vec![]);
}

// ---- Determinism ----

#[test]
fn plan_is_deterministic_and_ignores_input_order() {
    let nodes = vec![
        zoned(1, "a"),
        zoned(2, "b"),
        node(3, NodeState::Down),
        up(4),
        zoned(5, "a"),
        node(6, NodeState::Leaving),
        up(7),
    ];
    let shards = vec![
        shard(0, &[1, 2, 3], Some(1)),
        shard(1, &[1, 2, 6], Some(2)),
        shard(2, &[4, 5], Some(4)),
        moving(3, &[1, 4, 5], 7, Some(1)),
        uncreated(4),
        ShardView {
            learners: ids(&[2]),
            ..shard(5, &[1, 4, 5], Some(5))
        },
    ];
    let config = config(3, 3);
    let first = plan(&nodes, &shards, &config);
    assert!(!first.is_empty());
    assert_eq!(plan(&nodes, &shards, &config), first);
    let reversed_nodes: Vec<NodeView> = nodes.iter().rev().cloned().collect();
    let reversed_shards: Vec<ShardView> = shards.iter().rev().cloned().collect();
    assert_eq!(plan(&reversed_nodes, &reversed_shards, &config), first);
}
