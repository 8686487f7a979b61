//! Resuming a shard creation that was interrupted (D51). Pure decisions, no I/O, no clocks.
//!
//! Creating a shard records its voters (a `Founding`, then `initial_voters`), creates a
//! replica on each, marks the founding `initialize_sent` and sends InitializeShard to one
//! of them. A node or the coordinator leader dying in between leaves a shard that has voters
//! but no group; the planner never creates it again (it has voters) and nothing repairs it
//! (no leader). Such a shard is *stalled*: a `Founding` is recorded and no replica has
//! reported the group's committed configuration for a grace period. It is resumed:
//!
//! - **Replan** — InitializeShard was never sent, so no replica anywhere is initialized:
//!   when a chosen voter is gone (down, left, unknown) and enough nodes are up, the shard
//!   is planned afresh as if uncreated, on other nodes. Replicas created for the first
//!   choice are uninitialized; once the shard is founded they are strays and are deleted.
//!   While a voter is only suspect it waits; with every voter up it is re-driven.
//! - **Redrive** — the same voters again: create the replicas that are missing on the voters
//!   that are up, and send InitializeShard to one of them. Initializing founds the group with
//!   one fixed membership entry at the start of the log, identical whichever voter it is
//!   sent to, so initializing a second voter of a group that already exists on a first one
//!   (which may be down) cannot fork it; a replica already initialized answers that it was.
//!   It needs a majority of the voters up, to elect a leader; the planner then replaces the
//!   voters that are gone like any voter on a down node. A never initialized shard is
//!   re-driven on a majority only when a voter is gone and no other node can replace it.
//! - **Wait** — otherwise. With InitializeShard sent, the group may exist on voters that
//!   are down, so it is never founded on other nodes (that would fork it): a shard that lost
//!   the majority of its voters is a quorum loss (D40), for the operator.
//!
//! A shard created by a coordinator older than D51 has no `Founding` and is never resumed.

use crate::metadata::Founding;
use crate::placement::{Action, NodeState, ShardView};
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How a stalled creation is resumed; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    Redrive {
        create_on: Vec<NodeId>,
        founder: NodeId,
    },
    Replan,
    Wait,
}

/// Decides how to resume a stalled creation of a shard with `founding`, given every node's
/// state and the replication factor.
pub fn resume(
    founding: &Founding,
    states: &BTreeMap<NodeId, NodeState>,
    replication_factor: usize,
) -> Resume {
    let state = |node: &NodeId| states.get(node).copied();
    let gone = founding
        .voters
        .iter()
        .any(|voter| matches!(state(voter), None | Some(NodeState::Down | NodeState::Left)));
    let up_nodes = states.values().filter(|s| **s == NodeState::Up).count();
    let mut create_on: Vec<NodeId> = founding
        .voters
        .iter()
        .copied()
        .filter(|voter| state(voter) == Some(NodeState::Up))
        .collect();
    create_on.sort();
    create_on.dedup();
    let Some(founder) = create_on.first().copied() else {
        return if !founding.initialize_sent && gone && up_nodes >= replication_factor {
            Resume::Replan
        } else {
            Resume::Wait
        };
    };
    if !founding.initialize_sent {
        // Nothing to fork: found it complete, on the same voters or on others.
        if create_on.len() == founding.voters.len() {
            return Resume::Redrive { create_on, founder };
        }
        if gone && up_nodes >= replication_factor {
            return Resume::Replan;
        }
        // A voter only suspect may be back in a moment; one gone for good with no node to
        // take its place is replaced after the founding, like any voter on a down node.
        if !gone {
            return Resume::Wait;
        }
    }
    if create_on.len() * 2 > founding.voters.len() {
        Resume::Redrive { create_on, founder }
    } else {
        Resume::Wait
    }
}

/// Shards whose creation is over: a replica reports the group's committed configuration,
/// so the map and the planner follow the group from now on. Their `Founding` is deleted
/// before anything else is done to them: a shard whose membership changed must never be
/// taken for one still being created.
pub fn founded(shards: &[ShardView], founding: &BTreeMap<ShardId, Founding>) -> Vec<ShardId> {
    shards
        .iter()
        .filter(|shard| shard.epoch > 0 && founding.contains_key(&shard.id))
        .map(|shard| shard.id)
        .collect()
}

/// The shards being created that no replica has reported founded for at least `grace`,
/// keeping `since` (when each was first seen unfounded by this leader) up to date. The
/// grace covers heartbeats that lag a creation that went well, and a new leader that has
/// not heard from the replicas yet.
pub fn stalled(
    shards: &[ShardView],
    founding: &BTreeMap<ShardId, Founding>,
    since: &mut BTreeMap<ShardId, Instant>,
    now: Instant,
    grace: Duration,
) -> BTreeSet<ShardId> {
    let unfounded: BTreeSet<ShardId> = shards
        .iter()
        .filter(|shard| shard.epoch == 0 && founding.contains_key(&shard.id))
        .map(|shard| shard.id)
        .collect();
    since.retain(|shard, _| unfounded.contains(shard));
    unfounded
        .into_iter()
        .filter(|shard| {
            let first = *since.entry(*shard).or_insert(now);
            now.saturating_duration_since(first) >= grace
        })
        .collect()
}

/// What to do about the stalled creations this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resumptions {
    /// `ResumeShard` actions, by shard id.
    pub actions: Vec<Action>,
    /// Shards to plan afresh: the planner is to see them uncreated.
    pub replan: BTreeSet<ShardId>,
}

impl Resumptions {
    /// Whether the shard is being resumed this round (re-driven or re-planned).
    pub fn resumes(&self, shard: ShardId) -> bool {
        self.replan.contains(&shard) || self.actions.iter().any(|a| a.shard() == shard)
    }

    /// The views the planner is to see this round: a shard planned afresh shows as
    /// uncreated (no voters, none missing), every other shard as it is.
    pub fn views_to_plan(&self, shards: &[ShardView]) -> Vec<ShardView> {
        shards
            .iter()
            .map(|shard| {
                if self.replan.contains(&shard.id) {
                    ShardView {
                        voters: BTreeSet::new(),
                        missing: BTreeSet::new(),
                        ..shard.clone()
                    }
                } else {
                    shard.clone()
                }
            })
            .collect()
    }
}

/// Decides every stalled creation.
pub fn plan(
    stalled: &BTreeSet<ShardId>,
    founding: &BTreeMap<ShardId, Founding>,
    states: &BTreeMap<NodeId, NodeState>,
    replication_factor: usize,
) -> Resumptions {
    let mut resumptions = Resumptions::default();
    for shard in stalled {
        let Some(founding) = founding.get(shard) else {
            continue;
        };
        match resume(founding, states, replication_factor) {
            Resume::Redrive { create_on, founder } => {
                resumptions.actions.push(Action::ResumeShard {
                    shard: *shard,
                    voters: founding.voters.clone(),
                    create_on,
                    founder,
                })
            }
            Resume::Replan => {
                resumptions.replan.insert(*shard);
            }
            Resume::Wait => {}
        }
    }
    resumptions
}

/// Whether a quorum loss reported for a shard being created is no loss: without
/// InitializeShard sent there is no group to lose a quorum of, and a creation being resumed
/// is the coordinator's business, not the operator's.
pub fn hides_quorum_loss(founding: Option<&Founding>, resumed: bool) -> bool {
    founding.is_some_and(|founding| !founding.initialize_sent || resumed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{plan as placement_plan, NodeView, PlacementConfig};

    fn n(id: u64) -> NodeId {
        NodeId(id)
    }

    fn founding(voters: &[u64], initialize_sent: bool) -> Founding {
        Founding {
            voters: voters.iter().copied().map(NodeId).collect(),
            initialize_sent,
        }
    }

    fn states(list: &[(u64, NodeState)]) -> BTreeMap<NodeId, NodeState> {
        list.iter().map(|(id, state)| (n(*id), *state)).collect()
    }

    use NodeState::{Down, Left, Suspect, Up};

    #[test]
    fn a_creation_interrupted_with_every_voter_up_is_driven_again_on_the_same_voters() {
        let all_up = states(&[(1, Up), (2, Up), (3, Up), (4, Up)]);
        for sent in [false, true] {
            assert_eq!(
                resume(&founding(&[1, 2, 3], sent), &all_up, 3),
                Resume::Redrive {
                    create_on: vec![n(1), n(2), n(3)],
                    founder: n(1)
                }
            );
        }
    }

    #[test]
    fn a_creation_never_initialized_is_planned_afresh_when_a_voter_is_gone() {
        let one_down = states(&[(1, Down), (2, Up), (3, Up), (4, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &one_down, 3),
            Resume::Replan
        );
        let left = states(&[(1, Left), (2, Up), (3, Up), (4, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &left, 3),
            Resume::Replan
        );
        let unknown = states(&[(2, Up), (3, Up), (4, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &unknown, 3),
            Resume::Replan
        );
        // Too few nodes to plan afresh: the majority that is up founds it, and the planner
        // replaces the voter that is gone.
        let three_nodes = states(&[(1, Down), (2, Up), (3, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &three_nodes, 3),
            Resume::Redrive {
                create_on: vec![n(2), n(3)],
                founder: n(2)
            }
        );
    }

    /// The group may exist on the voter that is down: founding it on other nodes would
    /// fork it. Only the same voters may found it, and only with a majority of them up.
    #[test]
    fn a_creation_that_may_be_initialized_is_never_founded_on_other_nodes() {
        let one_down = states(&[(1, Down), (2, Up), (3, Up), (4, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], true), &one_down, 3),
            Resume::Redrive {
                create_on: vec![n(2), n(3)],
                founder: n(2)
            }
        );
        let two_down = states(&[(1, Down), (2, Down), (3, Up), (4, Up), (5, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], true), &two_down, 3),
            Resume::Wait
        );
        // Never initialized: nothing to fork, so other nodes may found it.
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &two_down, 3),
            Resume::Replan
        );
    }

    #[test]
    fn a_creation_waits_while_a_voter_is_only_suspect() {
        let suspect = states(&[(1, Suspect), (2, Suspect), (3, Up), (4, Up)]);
        for sent in [false, true] {
            assert_eq!(
                resume(&founding(&[1, 2, 3], sent), &suspect, 3),
                Resume::Wait
            );
        }
        // Never initialized: it is founded complete, or planned afresh once the voter is
        // gone for good.
        let one_suspect = states(&[(1, Suspect), (2, Up), (3, Up), (4, Up)]);
        assert_eq!(
            resume(&founding(&[1, 2, 3], false), &one_suspect, 3),
            Resume::Wait
        );
        // Maybe initialized: the majority that is up elects a leader now.
        assert_eq!(
            resume(&founding(&[1, 2, 3], true), &one_suspect, 3),
            Resume::Redrive {
                create_on: vec![n(2), n(3)],
                founder: n(2)
            }
        );
    }

    fn view(id: u64, voters: &[u64], epoch: u64) -> ShardView {
        ShardView {
            id: ShardId(id),
            voters: voters.iter().copied().map(NodeId).collect(),
            epoch,
            ..ShardView::default()
        }
    }

    #[test]
    fn a_creation_stalls_after_the_grace_and_ends_when_a_replica_reports_the_group() {
        let start = Instant::now();
        let grace = Duration::from_secs(3);
        let records: BTreeMap<ShardId, Founding> = [
            (ShardId(0), founding(&[1, 2, 3], true)),
            (ShardId(1), founding(&[1, 2, 3], false)),
        ]
        .into();
        // Shard 2 is not being created (an older coordinator created it, or it is done).
        let unfounded = [
            view(0, &[1, 2, 3], 0),
            view(1, &[1, 2, 3], 0),
            view(2, &[1, 2, 3], 0),
        ];
        let mut since = BTreeMap::new();
        assert!(stalled(&unfounded, &records, &mut since, start, grace).is_empty());
        assert_eq!(
            stalled(&unfounded, &records, &mut since, start + grace, grace),
            [ShardId(0), ShardId(1)].into()
        );
        // Shard 0 reports its group: founded, no longer stalled, its founding to delete.
        let later = [
            view(0, &[1, 2, 3], 1),
            view(1, &[1, 2, 3], 0),
            view(2, &[1, 2, 3], 0),
        ];
        assert_eq!(founded(&later, &records), vec![ShardId(0)]);
        assert_eq!(
            stalled(&later, &records, &mut since, start + grace * 2, grace),
            [ShardId(1)].into()
        );
        assert!(!since.contains_key(&ShardId(0)));
    }

    #[test]
    fn stalled_creations_become_resume_actions_or_fresh_plans() {
        let records: BTreeMap<ShardId, Founding> = [
            (ShardId(0), founding(&[1, 2, 3], true)),
            (ShardId(1), founding(&[1, 2, 4], false)),
            (ShardId(2), founding(&[1, 4, 5], true)),
        ]
        .into();
        let node_states = states(&[(1, Up), (2, Up), (3, Up), (4, Down), (5, Down)]);
        let stalled: BTreeSet<ShardId> = [0, 1, 2].map(ShardId).into();
        let resumptions = plan(&stalled, &records, &node_states, 3);
        assert_eq!(
            resumptions.actions,
            vec![Action::ResumeShard {
                shard: ShardId(0),
                voters: vec![n(1), n(2), n(3)],
                create_on: vec![n(1), n(2), n(3)],
                founder: n(1),
            }]
        );
        assert_eq!(resumptions.replan, [ShardId(1)].into());
        assert!(resumptions.resumes(ShardId(0)) && resumptions.resumes(ShardId(1)));
        assert!(
            !resumptions.resumes(ShardId(2)),
            "a majority is down: it waits"
        );
        assert!(hides_quorum_loss(records.get(&ShardId(1)), false));
        assert!(!hides_quorum_loss(records.get(&ShardId(2)), false));
        assert!(!hides_quorum_loss(None, true));

        // The planner, shown the re-planned shard as uncreated, founds it on up nodes only.
        let nodes: Vec<NodeView> = node_states
            .iter()
            .map(|(id, state)| NodeView {
                id: *id,
                zone: None,
                state: *state,
            })
            .collect();
        let shards = resumptions.views_to_plan(&[ShardView {
            missing: [n(4)].into(),
            ..view(1, &[1, 2, 4], 0)
        }]);
        assert_eq!(shards, [view(1, &[], 0)]);
        let config = PlacementConfig {
            replication_factor: 3,
            replica_tolerance: 1,
            leader_tolerance: 1,
            moves_in_flight_max: 2,
        };
        assert_eq!(
            placement_plan(&nodes, &shards, &config),
            vec![Action::CreateShard {
                shard: ShardId(1),
                nodes: vec![n(1), n(2), n(3)]
            }]
        );
    }
}
