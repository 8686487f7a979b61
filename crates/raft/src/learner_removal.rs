//! What dropping learners from a shard's membership does (D36), as a pure decision so every
//! case is unit-tested; `ShardReplica::remove_learners` applies it.
//!
//! The epoch it answers is what the coordinator sends on with RemoveReplica as the committed
//! configuration that excludes the node, and a node deletes a replica its own older membership
//! still counts once that epoch is past its own. So the answer must never be the epoch of a
//! configuration that counts the node, nor of one that is only proposed:
//! - a node that is a voter of the replica's latest configuration is not a learner to drop
//!   (the coordinator's view lags: a FinishMove may have made it a voter already): refused;
//! - a node in no configuration: the latest configuration's epoch if this replica knows it is
//!   committed, otherwise 0 ("none known"), and the node keeps a replica it still counts.

use cairn_types::NodeId;
use std::collections::BTreeSet;

/// The replica's latest (effective) membership and how far it knows its log is committed.
#[derive(Clone, Copy, Debug)]
pub struct Effective<'a> {
    /// Membership log index + 1 (D7); 0 if the replica has none.
    pub epoch: u64,
    pub voters: &'a BTreeSet<NodeId>,
    pub learners: &'a BTreeSet<NodeId>,
    /// The replica's committed log index; `None` if nothing is committed yet.
    pub committed_index: Option<u64>,
}

impl Effective<'_> {
    /// Whether the replica knows its latest configuration to be committed.
    fn committed(&self) -> bool {
        self.epoch > 0
            && self
                .committed_index
                .is_some_and(|committed| committed >= self.epoch - 1)
    }
}

/// What to do about a request to drop `requested` learners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearnerRemoval {
    /// Propose a configuration without these learners (its epoch is the answer once committed).
    Remove(BTreeSet<NodeId>),
    /// None of them is a member: answer `epoch` (0: no committed configuration known).
    Absent { epoch: u64 },
}

/// Refused: `node` is a voter of the latest configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsVoter(pub NodeId);

pub fn decide(
    requested: &BTreeSet<NodeId>,
    effective: &Effective<'_>,
) -> Result<LearnerRemoval, IsVoter> {
    if let Some(voter) = requested.intersection(effective.voters).next() {
        return Err(IsVoter(*voter));
    }
    let present: BTreeSet<NodeId> = requested
        .intersection(effective.learners)
        .copied()
        .collect();
    if !present.is_empty() {
        return Ok(LearnerRemoval::Remove(present));
    }
    let epoch = if effective.committed() {
        effective.epoch
    } else {
        0
    };
    Ok(LearnerRemoval::Absent { epoch })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn a_learner_is_dropped() {
        let (voters, learners) = (ids(&[1, 2, 3]), ids(&[4]));
        let effective = Effective {
            epoch: 9,
            voters: &voters,
            learners: &learners,
            committed_index: Some(8),
        };
        assert_eq!(
            decide(&ids(&[4]), &effective),
            Ok(LearnerRemoval::Remove(ids(&[4])))
        );
    }

    /// The coordinator's view still has node 4 as the move's learner, but the leader already
    /// proposed the FinishMove ({1, 2, 3} -> {1, 2, 4}, joint): node 4 is a voter. Answering
    /// the epoch of that configuration would let RemoveReplica delete node 4's replica (its own
    /// membership, the learner one, is older) while the shard counts it.
    #[test]
    fn a_node_that_became_a_voter_is_not_dropped_as_a_learner() {
        let (voters, learners) = (ids(&[1, 2, 3, 4]), ids(&[]));
        let effective = Effective {
            epoch: 12,
            voters: &voters,
            learners: &learners,
            committed_index: Some(10),
        };
        assert_eq!(decide(&ids(&[4]), &effective), Err(IsVoter(NodeId(4))));
    }

    #[test]
    fn an_absent_node_gets_the_epoch_only_of_a_committed_configuration() {
        let (voters, learners) = (ids(&[1, 2, 4]), ids(&[]));
        let committed = Effective {
            epoch: 12,
            voters: &voters,
            learners: &learners,
            committed_index: Some(11),
        };
        assert_eq!(
            decide(&ids(&[5]), &committed),
            Ok(LearnerRemoval::Absent { epoch: 12 })
        );
        let proposed = Effective {
            committed_index: Some(10),
            ..committed
        };
        assert_eq!(
            decide(&ids(&[5]), &proposed),
            Ok(LearnerRemoval::Absent { epoch: 0 })
        );
        let unknown = Effective {
            epoch: 0,
            committed_index: None,
            ..committed
        };
        assert_eq!(
            decide(&ids(&[5]), &unknown),
            Ok(LearnerRemoval::Absent { epoch: 0 })
        );
        let nothing_committed = Effective {
            epoch: 1,
            committed_index: None,
            ..committed
        };
        assert_eq!(
            decide(&ids(&[5]), &nothing_committed),
            Ok(LearnerRemoval::Absent { epoch: 0 })
        );
    }
}
