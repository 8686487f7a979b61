//! What the shard map says about a shard, from what its replicas report (D37). Pure
//! functions, no clocks and no I/O: `observed` feeds them the fresh heartbeats, so every rule
//! is unit-tested without a network.
//!
//! The map is what Raft says, never what the coordinator asked for:
//! - a shard's voters and learners are those of its newest *committed* configuration, as a
//!   replica reports it with a commit index at or past the configuration's log index (epoch =
//!   log index + 1, D7). A configuration only proposed (a move the coordinator started, an
//!   uncommitted joint configuration) does not count, so a move is recorded as done only once
//!   Raft committed it;
//! - a voter whose node heartbeats but does not list the shard hosts nothing: it is *missing*,
//!   and a shard with fewer present voters (voters that report hosting their replica) than
//!   the replication factor is under-replicated, whatever the voter list says.

use crate::heartbeat::ReplicaReport;
use crate::placement::ShardView;
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A shard's configuration that its Raft log has committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommittedConfig {
    /// Membership log index + 1 (D7).
    pub epoch: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

/// The configuration in `report` if the reporting replica knows it to be committed: its own
/// commit index has reached the configuration's log index. `None` for a replica whose group
/// was never founded (epoch 0, no voters) or whose configuration is still being proposed.
pub fn committed_config(report: &ReplicaReport) -> Option<CommittedConfig> {
    if report.epoch == 0 || report.voters.is_empty() {
        return None;
    }
    let log_index = report.epoch - 1;
    (report.committed_index >= log_index).then(|| CommittedConfig {
        epoch: report.epoch,
        voters: report.voters.clone(),
        learners: report.learners.clone(),
    })
}

/// The newest committed configuration among the one remembered from earlier reports and the
/// ones in `reports`. Committed configurations of one Raft group are ordered by their log
/// index, and every later leader holds them, so the highest epoch is the current one; an
/// older report never moves the map back. Among equal epochs the last report wins (callers
/// put the leader's last).
pub fn newest_committed<'a>(
    remembered: Option<&CommittedConfig>,
    reports: impl IntoIterator<Item = &'a ReplicaReport>,
) -> Option<CommittedConfig> {
    remembered
        .cloned()
        .into_iter()
        .chain(reports.into_iter().filter_map(committed_config))
        .max_by_key(|config| config.epoch)
}

/// Voters that a fresh heartbeat of their own node shows hosting no replica of the shard.
/// A voter whose node is silent is not missing here: its node's state (suspect, down) speaks
/// for it.
pub fn missing_voters(
    voters: &BTreeSet<NodeId>,
    heartbeating: &BTreeSet<NodeId>,
    hosts: &BTreeSet<NodeId>,
) -> BTreeSet<NodeId> {
    voters
        .iter()
        .copied()
        .filter(|voter| heartbeating.contains(voter) && !hosts.contains(voter))
        .collect()
}

/// The voters of `raw` (missing now) that have been missing for at least `grace`, keeping
/// `since` (when each was first seen missing) up to date. Heartbeats lag: a voter's last
/// heartbeat may predate the replica it hosts by now (a shard just created), so one report is
/// not enough to call a voter missing.
pub fn missing_for_long(
    raw: &BTreeSet<NodeId>,
    since: &mut BTreeMap<NodeId, Instant>,
    now: Instant,
    grace: Duration,
) -> BTreeSet<NodeId> {
    since.retain(|node, _| raw.contains(node));
    raw.iter()
        .copied()
        .filter(|node| {
            let first = *since.entry(*node).or_insert(now);
            now.saturating_duration_since(first) >= grace
        })
        .collect()
}

/// Voters that report hosting their replica in a fresh heartbeat.
pub fn present_voters(shard: &ShardView) -> BTreeSet<NodeId> {
    shard.voters.intersection(&shard.hosts).copied().collect()
}

/// Whether the shard runs with fewer present voters than `replication_factor`. A shard not
/// founded yet is not counted (it is created, not repaired).
pub fn under_replicated(shard: &ShardView, replication_factor: usize) -> bool {
    !shard.voters.is_empty() && present_voters(shard).len() < replication_factor
}

/// Replicas hosted outside their shard's committed configuration, with the epoch of that
/// configuration: `(node, shard, epoch)`. Only shards with a leader and a known committed
/// configuration count (without them the configuration may be about to change), and the
/// target of a pending move is not stray.
pub fn stray_replicas(shards: &[ShardView]) -> Vec<(NodeId, ShardId, u64)> {
    shards
        .iter()
        .filter(|shard| shard.leader.is_some() && shard.epoch > 0)
        .flat_map(|shard| {
            let moving_to = shard.pending_move.as_ref().map(|m| m.to);
            shard
                .hosts
                .iter()
                .filter(move |node| {
                    !shard.voters.contains(node)
                        && !shard.learners.contains(node)
                        && Some(**node) != moving_to
                })
                .map(move |node| (*node, shard.id, shard.epoch))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{plan, Action, Move, NodeState, NodeView, PlacementConfig};
    use cairn_raft::replica::ServerRole;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn report(epoch: u64, committed_index: u64, voters: &[u64], learners: &[u64]) -> ReplicaReport {
        ReplicaReport {
            shard: ShardId(0),
            role: Some(ServerRole::Leader),
            term: 2,
            leader: Some(NodeId(1)),
            committed_index,
            applied_index: committed_index,
            epoch,
            voters: ids(voters),
            learners: ids(learners),
            approximate_size_bytes: 0,
        }
    }

    #[test]
    fn a_configuration_counts_once_the_reporter_committed_it() {
        // Epoch 8 is the configuration at log index 7.
        assert_eq!(committed_config(&report(8, 6, &[1, 2, 4], &[])), None);
        assert_eq!(
            committed_config(&report(8, 7, &[1, 2, 4], &[5])),
            Some(CommittedConfig {
                epoch: 8,
                voters: ids(&[1, 2, 4]),
                learners: ids(&[5]),
            })
        );
        assert_eq!(
            committed_config(&report(0, 0, &[], &[])),
            None,
            "not founded"
        );
    }

    #[test]
    fn a_move_the_coordinator_only_proposed_does_not_change_the_map() {
        let before = CommittedConfig {
            epoch: 5,
            voters: ids(&[1, 2, 3]),
            learners: ids(&[4]),
        };
        // The leader appended {1, 2, 4} (a FinishMove) but has not committed it yet.
        let proposed = report(9, 7, &[1, 2, 4], &[]);
        assert_eq!(
            newest_committed(Some(&before), [&proposed]),
            Some(before.clone())
        );
        // Once committed it is the map's configuration.
        let committed = report(9, 9, &[1, 2, 4], &[]);
        assert_eq!(
            newest_committed(Some(&before), [&proposed, &committed]).map(|c| c.voters),
            Some(ids(&[1, 2, 4]))
        );
    }

    #[test]
    fn an_older_report_never_moves_the_map_back() {
        let current = CommittedConfig {
            epoch: 9,
            voters: ids(&[1, 2, 4]),
            learners: BTreeSet::new(),
        };
        // A replica that missed the move (it was paused) still reports the old configuration.
        let stale = report(5, 30, &[1, 2, 3], &[]);
        assert_eq!(newest_committed(Some(&current), [&stale]), Some(current));
        assert_eq!(
            newest_committed(None, [&stale]).map(|c| c.epoch),
            Some(5),
            "with nothing newer it is the best known"
        );
    }

    #[test]
    fn a_voter_that_heartbeats_without_its_replica_is_missing() {
        let voters = ids(&[1, 3, 5]);
        // Node 5 took over a dead node's address and deleted its replica; node 3 is silent.
        let heartbeating = ids(&[1, 5, 6]);
        let hosts = ids(&[1, 6]);
        assert_eq!(missing_voters(&voters, &heartbeating, &hosts), ids(&[5]));
    }

    #[test]
    fn a_voter_is_missing_only_once_it_stayed_missing_for_the_grace_period() {
        let start = Instant::now();
        let grace = Duration::from_millis(1_500);
        let mut since = BTreeMap::new();
        let at = |ms| start + Duration::from_millis(ms);
        // Node 2's last heartbeat predates the replica it was just given.
        assert!(missing_for_long(&ids(&[2]), &mut since, at(0), grace).is_empty());
        assert!(missing_for_long(&ids(&[2]), &mut since, at(1_000), grace).is_empty());
        assert_eq!(
            missing_for_long(&ids(&[2]), &mut since, at(1_500), grace),
            ids(&[2])
        );
        // Once it reports the replica the clock starts again.
        assert!(missing_for_long(&ids(&[]), &mut since, at(1_700), grace).is_empty());
        assert!(missing_for_long(&ids(&[2]), &mut since, at(2_000), grace).is_empty());
    }

    #[test]
    fn under_replication_counts_voters_that_really_host_their_replica() {
        let shard = |voters: &[u64], hosts: &[u64]| ShardView {
            id: ShardId(0),
            voters: ids(voters),
            hosts: ids(hosts),
            ..ShardView::default()
        };
        assert!(!under_replicated(&shard(&[1, 2, 3], &[1, 2, 3, 4]), 3));
        assert!(
            under_replicated(&shard(&[1, 2, 3], &[1, 2]), 3),
            "three voters listed, two replicas"
        );
        assert!(!under_replicated(&shard(&[], &[]), 3), "not founded yet");
    }

    fn up(id: u64) -> NodeView {
        NodeView {
            id: NodeId(id),
            zone: None,
            state: NodeState::Up,
        }
    }

    fn placement_config() -> PlacementConfig {
        PlacementConfig {
            replication_factor: 3,
            replica_tolerance: 1,
            leader_tolerance: 1,
            moves_in_flight_max: 4,
        }
    }

    #[test]
    fn the_planner_replaces_a_missing_voter_on_an_up_node() {
        let nodes = [up(1), up(2), up(3), up(4)];
        let shard = ShardView {
            id: ShardId(0),
            voters: ids(&[1, 2, 3]),
            leader: Some(NodeId(1)),
            hosts: ids(&[1, 2]),
            missing: ids(&[3]),
            ..ShardView::default()
        };
        assert_eq!(
            plan(&nodes, &[shard], &placement_config()),
            vec![Action::StartMove {
                shard: ShardId(0),
                mv: Move {
                    to: NodeId(4),
                    from: Some(NodeId(3)),
                },
            }]
        );
    }

    #[test]
    fn the_planner_never_targets_a_node_that_still_hosts_a_stray_replica() {
        let mut nodes = vec![up(1), up(2), up(4), up(5)];
        nodes.push(NodeView {
            state: NodeState::Down,
            ..up(3)
        });
        // Node 4 holds an old replica of the shard that the sweep is about to delete.
        let shard = ShardView {
            id: ShardId(0),
            voters: ids(&[1, 2, 3]),
            leader: Some(NodeId(1)),
            hosts: ids(&[1, 2, 4]),
            ..ShardView::default()
        };
        let actions = plan(&nodes, &[shard], &placement_config());
        assert_eq!(
            actions,
            vec![Action::StartMove {
                shard: ShardId(0),
                mv: Move {
                    to: NodeId(5),
                    from: Some(NodeId(3)),
                },
            }]
        );
    }

    /// A new coordinator leader that has not heard from a shard yet sees its initial voters
    /// (epoch 0). The pending move {to: 3, from: 4} of a shard founded on {1, 2, 3} that
    /// has since run on {1, 2, 4} must not look complete: that would drop the move from the
    /// metadata and ask node 4, a voter, to delete its replica.
    #[test]
    fn a_move_is_not_recorded_as_done_from_the_initial_voters() {
        let nodes = [up(1), up(2), up(3), up(4)];
        let unknown = ShardView {
            id: ShardId(0),
            voters: ids(&[1, 2, 3]),
            pending_move: Some(Move {
                to: NodeId(3),
                from: Some(NodeId(4)),
            }),
            epoch: 0,
            ..ShardView::default()
        };
        assert_eq!(
            plan(&nodes, std::slice::from_ref(&unknown), &placement_config()),
            vec![]
        );
        // Once a committed configuration with 3 and without 4 is known, it is done.
        let committed = ShardView {
            epoch: 14,
            leader: Some(NodeId(1)),
            hosts: ids(&[1, 2, 3, 4]),
            ..unknown
        };
        assert_eq!(
            plan(&nodes, &[committed], &placement_config()),
            vec![Action::CompleteMove {
                shard: ShardId(0),
                remove_from: Some(NodeId(4)),
            }]
        );
    }

    #[test]
    fn strays_are_replicas_outside_the_committed_configuration() {
        let shard = ShardView {
            id: ShardId(2),
            voters: ids(&[1, 2, 4]),
            learners: ids(&[5]),
            leader: Some(NodeId(1)),
            epoch: 9,
            // 3 was replaced while paused; 6 is a move's new learner.
            hosts: ids(&[1, 2, 3, 4, 5, 6]),
            pending_move: Some(Move {
                to: NodeId(6),
                from: None,
            }),
            ..ShardView::default()
        };
        assert_eq!(
            stray_replicas(std::slice::from_ref(&shard)),
            vec![(NodeId(3), ShardId(2), 9)]
        );
        let leaderless = ShardView {
            leader: None,
            ..shard.clone()
        };
        assert!(stray_replicas(&[leaderless]).is_empty());
        let unknown = ShardView { epoch: 0, ..shard };
        assert!(stray_replicas(&[unknown]).is_empty());
    }
}
