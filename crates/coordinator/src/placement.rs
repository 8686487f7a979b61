//! Placement decisions: pure functions from the cluster as the coordinator sees it (nodes,
//! shards, moves in progress) to the actions that bring it closer to the desired state.
//! No I/O, no clocks: the reconcile loop gathers the inputs and carries out the actions, so
//! every rule here is unit-tested without a network.
//!
//! Desired state: every shard has `replication_factor` voters on distinct nodes that are up
//! (on distinct zones when labels allow), no voter on a node that is down or leaving, replica
//! counts per node within `replica_tolerance` of each other, leader counts within
//! `leader_tolerance`. A replica moves by adding a learner on the target, waiting for it to
//! catch up, then replacing the old voter in one membership change (joint consensus), so a
//! shard never drops below its voter count and never loses quorum because of a move.
//!
//! [`plan`] is the one entry point: the rules live in `planner.rs`, and the views and
//! [`Action`]s below are the planner's whole interface.

mod action;
mod planner;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod simulation_tests;
#[cfg(test)]
mod test_support;

pub use action::Action;
use cairn_types::{NodeId, ShardId};
use planner::Planner;
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeState {
    /// Heartbeating.
    Up,
    /// Missed heartbeats for a while; not a target for new replicas, not yet replaced.
    Suspect,
    /// Missed heartbeats for long: its replicas are replaced elsewhere.
    Down,
    /// Asked to leave: its replicas move elsewhere, then it is removed.
    Leaving,
    /// Gone for good: holds nothing; kept only so its id is never reused.
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    /// The node's `zone` label, if it has one.
    pub zone: Option<String>,
    pub state: NodeState,
}

/// A replica move in progress: `to` was added as a learner to replace the voter `from`
/// (`None`: the shard is growing back to full replication). Stored as a
/// `persisted::MoveV1`, never as itself (D52).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub to: NodeId,
    pub from: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ShardView {
    pub id: ShardId,
    /// Empty until the shard's Raft group has been created.
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// The leader reported by heartbeats, if any (no leader: no quorum, or an election).
    pub leader: Option<NodeId>,
    /// Learners whose applied index has reached the leader's commit index.
    pub caught_up: BTreeSet<NodeId>,
    pub pending_move: Option<Move>,
    /// The epoch of the committed configuration `voters` and `learners` come from (0: none
    /// known yet).
    pub epoch: u64,
    /// Nodes whose fresh heartbeat lists a replica of the shard, members or not. A node that
    /// hosts a replica outside the membership (a stray, about to be deleted) is not a target.
    pub hosts: BTreeSet<NodeId>,
    /// Voters whose node heartbeats without a replica of the shard: replaced like voters on a
    /// down node (`reconcile::missing_voters`).
    pub missing: BTreeSet<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    pub replication_factor: usize,
    /// Largest allowed difference between the most and the least loaded node's replica count.
    pub replica_tolerance: usize,
    /// Largest allowed difference between leader counts.
    pub leader_tolerance: usize,
    /// Most moves (pending or started in this plan) and leader transfers at once.
    pub moves_in_flight_max: usize,
}

/// Everything the coordinator should do now, most urgent first. See the module doc.
///
/// The actions come in rule order: shard creations, then the resolution of pending moves,
/// then learner cleanup, then repairs (most urgent shard first), then replica rebalancing,
/// then leader transfers. Inputs may come in any order: everything is keyed by id, and ties
/// are always broken by the lowest node or shard id, so the same cluster gives the same plan.
pub fn plan(nodes: &[NodeView], shards: &[ShardView], config: &PlacementConfig) -> Vec<Action> {
    let mut planner = Planner::new(nodes, shards, config);
    planner.create_shards();
    planner.resolve_pending_moves();
    planner.remove_stray_learners();
    // Balancing while replicas are missing or on bad nodes would compete with the repairs
    // for the move budget and move data around a cluster that is about to change anyway.
    if !planner.repair_shards() {
        planner.rebalance_replicas();
        planner.balance_leaders();
    }
    planner.actions
}
