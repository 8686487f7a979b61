//! What the planner asks the reconcile loop to do.

use super::Move;
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create a replica on each of `nodes` and found the shard's group with them as voters.
    CreateShard { shard: ShardId, nodes: Vec<NodeId> },
    /// Carry on with an interrupted creation (`founding`, D51): create a replica on each of
    /// `create_on` (the voters that are up) and found the group with `voters`, the ones the
    /// shard was created with, from `founder`.
    ResumeShard {
        shard: ShardId,
        voters: Vec<NodeId>,
        create_on: Vec<NodeId>,
        founder: NodeId,
    },
    /// Begin a move: create a replica on `mv.to`, add it as a learner, record the move.
    StartMove { shard: ShardId, mv: Move },
    /// The learner caught up: make `voters` the shard's voter set (one joint-consensus change).
    FinishMove {
        shard: ShardId,
        voters: BTreeSet<NodeId>,
    },
    /// The move is done (its target is a voter): forget it, and delete the replaced replica
    /// from `remove_from` when that node is up.
    CompleteMove {
        shard: ShardId,
        remove_from: Option<NodeId>,
    },
    /// The move's target is no longer usable: remove the learner and forget the move.
    AbortMove { shard: ShardId, learner: NodeId },
    /// Remove a learner that belongs to no move (left over from an aborted one).
    RemoveLearner { shard: ShardId, node: NodeId },
    TransferLeader {
        shard: ShardId,
        from: NodeId,
        to: NodeId,
    },
}

impl Action {
    /// The shard this action is about.
    pub fn shard(&self) -> ShardId {
        match self {
            Action::CreateShard { shard, .. }
            | Action::ResumeShard { shard, .. }
            | Action::StartMove { shard, .. }
            | Action::FinishMove { shard, .. }
            | Action::CompleteMove { shard, .. }
            | Action::AbortMove { shard, .. }
            | Action::RemoveLearner { shard, .. }
            | Action::TransferLeader { shard, .. } => *shard,
        }
    }
}
