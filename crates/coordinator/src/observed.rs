//! What the coordinator leader observes: node heartbeats and the replica reports in them,
//! turned into the placement module's views and into the shard map. Kept in memory on the
//! leader only; a new leader starts empty and gives every node `down_after_ms` to report
//! before calling it down.

use crate::heartbeat::{Heartbeat, ReplicaReport};
use crate::liveness::Liveness;
use crate::metadata::{Metadata, NodeRecord};
use crate::placement::{NodeState, NodeView, ShardView};
use crate::reconcile::{missing_for_long, missing_voters, newest_committed, CommittedConfig};
use cairn_raft::database::StorageEngine;
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// A node's last heartbeat and when it arrived.
#[derive(Clone, Debug)]
pub struct NodeHeartbeat {
    pub last_seen: Instant,
    pub address: String,
    pub replicas: Vec<ReplicaReport>,
    /// The node's `storage.engine` (`None`: not reported).
    pub storage_engine: Option<StorageEngine>,
}

impl NodeHeartbeat {
    /// `heartbeat`, arrived at `last_seen`.
    pub fn new(heartbeat: Heartbeat, last_seen: Instant) -> Self {
        NodeHeartbeat {
            last_seen,
            address: heartbeat.address,
            replicas: heartbeat.replicas,
            storage_engine: heartbeat.storage_engine,
        }
    }
}

#[derive(Debug)]
pub struct Observed {
    heartbeats: HashMap<NodeId, NodeHeartbeat>,
    /// When this coordinator became leader: silence before it is not held against nodes.
    leader_since: Instant,
    /// Nodes that came back after a silence of at least `suspect_after`, and when: until they
    /// have heartbeated for `down_after` since, they count as suspect (D38).
    back_since: HashMap<NodeId, Instant>,
    /// Each shard's newest committed configuration seen (D37): the map never goes back to an
    /// older one, nor forward to one only proposed.
    committed: HashMap<ShardId, CommittedConfig>,
    /// Voters seen missing, per shard, and since when (`reconcile::missing_for_long`).
    missing_since: HashMap<ShardId, BTreeMap<NodeId, Instant>>,
}

impl Observed {
    pub fn new(now: Instant) -> Self {
        Self {
            heartbeats: HashMap::new(),
            leader_since: now,
            back_since: HashMap::new(),
            committed: HashMap::new(),
            missing_since: HashMap::new(),
        }
    }

    /// Records a heartbeat. One that ends a silence of `suspect_after` or more starts the
    /// node's probation (see [`Observed::node_state`]).
    pub fn record(&mut self, node: NodeId, heartbeat: NodeHeartbeat, liveness: Liveness) {
        if let Some(previous) = self.heartbeats.get(&node) {
            let silence = heartbeat
                .last_seen
                .saturating_duration_since(previous.last_seen);
            if silence >= liveness.suspect_after {
                self.back_since.insert(node, heartbeat.last_seen);
            }
        }
        self.heartbeats.insert(node, heartbeat);
    }

    /// Nodes that have heartbeated to this leader.
    pub fn heard_from(&self) -> BTreeSet<NodeId> {
        self.heartbeats.keys().copied().collect()
    }

    pub fn heartbeat(&self, node: NodeId) -> Option<&NodeHeartbeat> {
        self.heartbeats.get(&node)
    }

    pub fn node_state(&self, record: &NodeRecord, now: Instant, liveness: Liveness) -> NodeState {
        if record.left {
            return NodeState::Left;
        }
        let last_seen = self
            .heartbeats
            .get(&record.id)
            .map_or(self.leader_since, |h| h.last_seen.max(self.leader_since));
        let silent = now.saturating_duration_since(last_seen);
        // Hysteresis (D38): a node that went silent and came back is not trusted again (no
        // new replicas, no leaderships moved to it) until it has stayed up for `down_after`,
        // so a node that keeps pausing around `down_after` is not moved away and back.
        let on_probation = self
            .back_since
            .get(&record.id)
            .is_some_and(|back| now.saturating_duration_since(*back) < liveness.down_after);
        let alive = if silent >= liveness.down_after {
            NodeState::Down
        } else if silent >= liveness.suspect_after || on_probation {
            NodeState::Suspect
        } else {
            NodeState::Up
        };
        // A leaving node that died is down: its replicas are replaced, not drained.
        if record.leaving && alive != NodeState::Down {
            NodeState::Leaving
        } else {
            alive
        }
    }

    pub fn node_views(
        &self,
        metadata: &Metadata,
        now: Instant,
        liveness: Liveness,
    ) -> Vec<NodeView> {
        metadata
            .nodes
            .values()
            .map(|record| NodeView {
                id: record.id,
                zone: record.labels.get("zone").cloned(),
                state: self.node_state(record, now, liveness),
            })
            .collect()
    }

    /// Every shard's view (D37): voters and learners of its newest committed configuration
    /// (`reconcile::newest_committed`), its leader, learners that caught up, the nodes that
    /// host a replica, the voters that do not (missing), and the pending move.
    ///
    /// Only fresh heartbeats count: a node that went silent may still claim to lead a shard
    /// that has long elected another leader, or to host a replica it lost since.
    pub fn shard_views(
        &mut self,
        metadata: &Metadata,
        shard_count: u32,
        now: Instant,
        liveness: Liveness,
    ) -> Vec<ShardView> {
        let mut reports: BTreeMap<ShardId, Vec<(NodeId, &ReplicaReport)>> = BTreeMap::new();
        let fresh: Vec<(NodeId, &NodeHeartbeat)> = self
            .heartbeats
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.last_seen) < liveness.suspect_after)
            .map(|(node, h)| (*node, h))
            .collect();
        let heartbeating: BTreeSet<NodeId> = fresh.iter().map(|(node, _)| *node).collect();
        for (node, heartbeat) in &fresh {
            for report in &heartbeat.replicas {
                reports
                    .entry(report.shard)
                    .or_default()
                    .push((*node, report));
            }
        }
        let mut views = Vec::with_capacity(shard_count as usize);
        for shard in (0..u64::from(shard_count)).map(ShardId) {
            let record = metadata.shards.get(&shard);
            let pending_move = record.and_then(|r| r.pending_move.clone());
            let shard_reports = reports.get(&shard).map(Vec::as_slice).unwrap_or_default();
            let leader_report = shard_reports
                .iter()
                .filter(|(_, r)| r.is_leader())
                .max_by_key(|(_, r)| r.term);
            let hosts: BTreeSet<NodeId> = shard_reports.iter().map(|(node, _)| *node).collect();
            // The leader's report last: among equal epochs it wins.
            let ordered = shard_reports
                .iter()
                .filter(|(node, _)| Some(*node) != leader_report.map(|(l, _)| *l))
                .chain(leader_report)
                .map(|(_, r)| *r);
            let committed = newest_committed(self.committed.get(&shard), ordered);
            if let Some(config) = &committed {
                self.committed.insert(shard, config.clone());
            }
            // Replicas created but not yet founded report no configuration: the shard exists
            // all the same (planning it again could found a second, conflicting group).
            let (voters, learners, epoch) = match committed {
                Some(config) => (config.voters, config.learners, config.epoch),
                None => (
                    record
                        .map(|r| r.initial_voters.iter().copied().collect())
                        .unwrap_or_default(),
                    BTreeSet::new(),
                    0,
                ),
            };
            let leader = leader_report.map(|(node, _)| *node);
            let caught_up = match leader_report {
                Some((_, leader)) => shard_reports
                    .iter()
                    .filter(|(node, r)| {
                        learners.contains(node) && r.applied_index >= leader.committed_index
                    })
                    .map(|(node, _)| *node)
                    .collect(),
                None => BTreeSet::new(),
            };
            let missing = missing_for_long(
                &missing_voters(&voters, &heartbeating, &hosts),
                self.missing_since.entry(shard).or_default(),
                now,
                liveness.grace_periods().missing_voter,
            );
            views.push(ShardView {
                id: shard,
                voters,
                learners,
                leader,
                caught_up,
                pending_move,
                epoch,
                hosts,
                missing,
            });
        }
        views
    }

    /// Nodes hosting a replica of `shard` according to their own heartbeats.
    pub fn hosts_of(&self, shard: ShardId) -> BTreeSet<NodeId> {
        self.heartbeats
            .iter()
            .filter(|(_, h)| h.replicas.iter().any(|r| r.shard == shard))
            .map(|(node, _)| *node)
            .collect()
    }

    /// The epoch the shard's leader reports (0 if unknown).
    pub fn epoch_of(&self, shard: ShardId, leader: Option<NodeId>) -> u64 {
        leader
            .and_then(|leader| self.heartbeats.get(&leader))
            .and_then(|h| h.replicas.iter().find(|r| r.shard == shard))
            .map_or(0, |r| r.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::ShardRecord;
    use cairn_raft::replica::ServerRole;
    use std::time::Duration;

    fn report(
        shard: u64,
        role: ServerRole,
        term: u64,
        voters: &[u64],
        learners: &[u64],
        applied: u64,
    ) -> ReplicaReport {
        ReplicaReport {
            shard: ShardId(shard),
            role: Some(role),
            term,
            leader: None,
            committed_index: applied,
            applied_index: applied,
            epoch: 1,
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
            approximate_size_bytes: 0,
        }
    }

    fn record(id: u64) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            address: format!("a{id}"),
            labels: BTreeMap::new(),
            leaving: false,
            left: false,
        }
    }

    #[test]
    fn node_states_follow_heartbeat_age_with_a_grace_period_for_a_new_leader() {
        let start = Instant::now();
        let liveness = Liveness {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(10),
        };
        let mut observed = Observed::new(start);
        assert_eq!(
            observed.node_state(&record(1), start + Duration::from_secs(2), liveness),
            NodeState::Up
        );
        assert_eq!(
            observed.node_state(&record(1), start + Duration::from_secs(5), liveness),
            NodeState::Suspect
        );
        assert_eq!(
            observed.node_state(&record(1), start + Duration::from_secs(11), liveness),
            NodeState::Down
        );
        observed.record(
            NodeId(1),
            NodeHeartbeat {
                last_seen: start + Duration::from_secs(10),
                address: "a1".into(),
                replicas: vec![],
                storage_engine: None,
            },
            liveness,
        );
        assert_eq!(
            observed.node_state(&record(1), start + Duration::from_secs(11), liveness),
            NodeState::Up,
            "a first heartbeat to a new leader is no return from a silence"
        );
        let leaving = NodeRecord {
            leaving: true,
            ..record(1)
        };
        assert_eq!(
            observed.node_state(&leaving, start + Duration::from_secs(11), liveness),
            NodeState::Leaving
        );
        assert_eq!(
            observed.node_state(&leaving, start + Duration::from_secs(30), liveness),
            NodeState::Down
        );
    }

    #[test]
    fn shard_views_take_membership_from_the_leader_and_spot_caught_up_learners() {
        let now = Instant::now();
        let liveness = Liveness {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(10),
        };
        let mut observed = Observed::new(now);
        let heartbeat = |replicas| NodeHeartbeat {
            last_seen: now,
            address: String::new(),
            replicas,
            storage_engine: None,
        };
        observed.record(
            NodeId(1),
            heartbeat(vec![report(
                0,
                ServerRole::Leader,
                3,
                &[1, 2, 3],
                &[4, 5],
                100,
            )]),
            liveness,
        );
        observed.record(
            NodeId(2),
            heartbeat(vec![report(0, ServerRole::Follower, 3, &[1, 2], &[], 90)]),
            liveness,
        );
        observed.record(
            NodeId(4),
            heartbeat(vec![report(
                0,
                ServerRole::Learner,
                3,
                &[1, 2, 3],
                &[4, 5],
                100,
            )]),
            liveness,
        );
        observed.record(
            NodeId(5),
            heartbeat(vec![report(
                0,
                ServerRole::Learner,
                3,
                &[1, 2, 3],
                &[4, 5],
                40,
            )]),
            liveness,
        );
        let mut metadata = Metadata::default();
        metadata.shards.insert(
            ShardId(1),
            ShardRecord {
                id: ShardId(1),
                initial_voters: vec![NodeId(7)],
                pending_move: None,
            },
        );
        let views = observed.shard_views(&metadata, 2, now, liveness);
        assert_eq!(views[0].leader, Some(NodeId(1)));
        let later = observed.shard_views(&metadata, 2, now + Duration::from_secs(4), liveness);
        assert_eq!(
            later[0].leader, None,
            "a silent node's claim to lead is not believed"
        );
        assert_eq!(
            later[0].voters,
            [1, 2, 3].map(NodeId).into(),
            "with every report stale, the last committed configuration stands"
        );
        assert!(later[0].hosts.is_empty() && later[0].missing.is_empty());
        assert_eq!(views[0].leader, Some(NodeId(1)));
        assert_eq!(views[0].voters, [1, 2, 3].map(NodeId).into());
        assert_eq!(views[0].caught_up, [NodeId(4)].into());
        assert_eq!(
            views[1].voters,
            [NodeId(7)].into(),
            "a shard nobody reports yet keeps its initial voters"
        );
        assert_eq!(views[1].leader, None);
    }

    /// D38: the bound that decides is `down_after`. A node is replaced only after it has been
    /// silent that long, and a node back from a silence of `suspect_after` or more is no
    /// target (suspect) until it has heartbeated for `down_after` since.
    #[test]
    fn a_node_back_from_a_pause_stays_suspect_until_it_has_been_up_for_down_after() {
        let start = Instant::now();
        let liveness = Liveness {
            suspect_after: Duration::from_millis(1_500),
            down_after: Duration::from_millis(3_000),
        };
        let at = |ms: u64| start + Duration::from_millis(ms);
        let beat = |ms: u64| NodeHeartbeat {
            last_seen: at(ms),
            address: "a1".into(),
            replicas: vec![],
            storage_engine: None,
        };
        let mut observed = Observed::new(start);
        for ms in (0..=3_000).step_by(300) {
            observed.record(NodeId(1), beat(ms), liveness);
        }
        assert_eq!(
            observed.node_state(&record(1), at(3_100), liveness),
            NodeState::Up
        );
        // Paused for 2.5 s (longer than suspect_after, shorter than down_after): suspect,
        // never down, so nothing is replaced.
        assert_eq!(
            observed.node_state(&record(1), at(5_400), liveness),
            NodeState::Suspect
        );
        observed.record(NodeId(1), beat(5_500), liveness);
        assert_eq!(
            observed.node_state(&record(1), at(5_600), liveness),
            NodeState::Suspect,
            "back, but on probation"
        );
        // Paused again for 4 s, past down_after: down, its replicas are replaced.
        assert_eq!(
            observed.node_state(&record(1), at(8_600), liveness),
            NodeState::Down
        );
        observed.record(NodeId(1), beat(9_500), liveness);
        // Heartbeating steadily again: suspect (no replica or leader moved back to it) until
        // down_after has passed since it came back.
        for ms in (9_800..=12_400).step_by(300) {
            observed.record(NodeId(1), beat(ms), liveness);
            assert_eq!(
                observed.node_state(&record(1), at(ms + 50), liveness),
                NodeState::Suspect,
                "at {ms} ms"
            );
        }
        observed.record(NodeId(1), beat(12_600), liveness);
        assert_eq!(
            observed.node_state(&record(1), at(12_600), liveness),
            NodeState::Up
        );
        // Short gaps (below suspect_after) start no probation.
        observed.record(NodeId(1), beat(13_600), liveness);
        assert_eq!(
            observed.node_state(&record(1), at(13_700), liveness),
            NodeState::Up
        );
    }

    #[test]
    fn a_voter_whose_node_reports_no_replica_is_missing() {
        let now = Instant::now();
        let liveness = Liveness {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(10),
        };
        let heartbeat = |replicas| NodeHeartbeat {
            last_seen: now,
            address: String::new(),
            replicas,
            storage_engine: None,
        };
        let mut observed = Observed::new(now);
        observed.record(
            NodeId(1),
            heartbeat(vec![report(0, ServerRole::Leader, 3, &[1, 3, 5], &[], 100)]),
            liveness,
        );
        // Node 5 answers at the address of a dead node and holds nothing.
        observed.record(NodeId(5), heartbeat(vec![]), liveness);
        let views = observed.shard_views(&Metadata::default(), 1, now, liveness);
        assert_eq!(views[0].voters, [1, 3, 5].map(NodeId).into());
        assert_eq!(views[0].hosts, [NodeId(1)].into());
        assert!(
            views[0].missing.is_empty(),
            "one report may lag the replica"
        );
        assert_eq!(views[0].epoch, 1);
        let later = now + liveness.suspect_after;
        let fresh = |replicas| NodeHeartbeat {
            last_seen: later,
            ..heartbeat(replicas)
        };
        observed.record(
            NodeId(1),
            fresh(vec![report(0, ServerRole::Leader, 3, &[1, 3, 5], &[], 100)]),
            liveness,
        );
        observed.record(NodeId(5), fresh(vec![]), liveness);
        let views = observed.shard_views(&Metadata::default(), 1, later, liveness);
        assert_eq!(
            views[0].missing,
            [NodeId(5)].into(),
            "node 3 is silent, not missing"
        );
    }
}
