//! When a node may delete its replica of a shard (D36): never while the shard may still count
//! it. A pure decision, so every case is unit-tested; `Node::remove_replica` applies it.
//!
//! The replica's own latest membership (the one its Raft log holds, committed or not) is what
//! this node knows for certain: while it lists this node as voter or learner, deleting the
//! replica could take a vote or a copy the shard relies on. The one exception is a replica
//! that missed its own removal (it was away when the shard committed a configuration without
//! it): the caller names the epoch of that committed configuration, and a replica whose own
//! membership is older than it is a stale copy nobody counts.

use cairn_types::NodeId;
use std::fmt;

/// The replica's latest membership as its Raft log holds it.
#[derive(Clone, Copy, Debug)]
pub struct OwnMembership<'a> {
    /// Membership log index + 1 (D7); 0 for a replica whose group was never founded.
    pub epoch: u64,
    pub voters: &'a [NodeId],
    pub learners: &'a [NodeId],
}

/// Why a replica was not deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillMember {
    /// Whether the node is a voter (otherwise a learner) in the replica's own membership.
    pub voter: bool,
    /// The epoch of that membership.
    pub epoch: u64,
    /// The committed configuration the caller named as excluding the node (0: none).
    pub excluded_at_epoch: u64,
}

impl fmt::Display for StillMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this node is a {} of the shard in the replica's own membership (epoch {}), and no newer committed configuration excludes it (named: {})",
            if self.voter { "voter" } else { "learner" },
            self.epoch,
            self.excluded_at_epoch
        )
    }
}

/// Whether `node` may delete its replica whose own membership is `own`.
pub fn may_remove(
    node: NodeId,
    own: &OwnMembership<'_>,
    excluded_at_epoch: u64,
) -> Result<(), StillMember> {
    let voter = own.voters.contains(&node);
    if !voter && !own.learners.contains(&node) {
        return Ok(());
    }
    if excluded_at_epoch > own.epoch {
        return Ok(());
    }
    Err(StillMember {
        voter,
        epoch: own.epoch,
        excluded_at_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId(5);

    fn own<'a>(epoch: u64, voters: &'a [NodeId], learners: &'a [NodeId]) -> OwnMembership<'a> {
        OwnMembership {
            epoch,
            voters,
            learners,
        }
    }

    #[test]
    fn a_voter_is_never_deleted_on_a_bare_request() {
        let voters = [NodeId(1), NodeId(3), ME];
        let refused = may_remove(ME, &own(12, &voters, &[]), 0).unwrap_err();
        assert!(refused.voter);
        assert_eq!(refused.epoch, 12);
    }

    #[test]
    fn a_learner_is_not_deleted_either() {
        let refused = may_remove(ME, &own(7, &[NodeId(1)], &[ME]), 0).unwrap_err();
        assert!(!refused.voter);
    }

    #[test]
    fn a_committed_configuration_older_than_the_replicas_own_does_not_count() {
        let voters = [NodeId(1), ME];
        assert!(may_remove(ME, &own(12, &voters, &[]), 12).is_err());
        assert!(may_remove(ME, &own(12, &voters, &[]), 9).is_err());
    }

    #[test]
    fn a_stale_replica_goes_once_a_newer_committed_configuration_excludes_it() {
        let voters = [NodeId(1), NodeId(3), ME];
        assert_eq!(may_remove(ME, &own(12, &voters, &[]), 15), Ok(()));
    }

    #[test]
    fn a_replica_that_saw_its_own_removal_or_was_never_founded_may_go() {
        assert_eq!(
            may_remove(ME, &own(15, &[NodeId(1), NodeId(3)], &[]), 0),
            Ok(())
        );
        assert_eq!(may_remove(ME, &own(0, &[], &[]), 0), Ok(()));
    }
}
