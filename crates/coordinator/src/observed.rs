//! What the coordinator leader observes: node heartbeats and the replica reports in them,
//! turned into the placement module's views and into the shard map. Kept in memory on the
//! leader only; a new leader starts empty and gives every node `down_after_ms` to report
//! before calling it down.

use crate::metadata::{Metadata, NodeRecord};
use crate::placement::{NodeState, NodeView, ShardView};
use cairn_proto::coordinator::v1 as pb;
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct NodeHeartbeat {
    pub last_seen: Instant,
    pub address: String,
    pub replicas: Vec<pb::ReplicaReport>,
    /// The node's `storage.engine` (`pb::StorageEngine` as sent).
    pub storage_engine: i32,
}

#[derive(Debug)]
pub struct Observed {
    heartbeats: HashMap<NodeId, NodeHeartbeat>,
    /// When this coordinator became leader: silence before it is not held against nodes.
    leader_since: Instant,
}

/// Liveness thresholds.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    pub suspect_after: Duration,
    pub down_after: Duration,
}

impl Observed {
    pub fn new(now: Instant) -> Self {
        Self {
            heartbeats: HashMap::new(),
            leader_since: now,
        }
    }

    pub fn record(&mut self, node: NodeId, heartbeat: NodeHeartbeat) {
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
        let alive = if silent >= liveness.down_after {
            NodeState::Down
        } else if silent >= liveness.suspect_after {
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

    /// Every shard's view: membership from its leader's report (or, failing that, the
    /// report with the newest epoch), learners that caught up, and the pending move.
    ///
    /// Only fresh heartbeats count: a node that went silent may still claim to lead a shard
    /// that has long elected another leader.
    pub fn shard_views(
        &self,
        metadata: &Metadata,
        shard_count: u32,
        now: Instant,
        liveness: Liveness,
    ) -> Vec<ShardView> {
        let mut reports: BTreeMap<ShardId, Vec<(NodeId, &pb::ReplicaReport)>> = BTreeMap::new();
        let fresh = self
            .heartbeats
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.last_seen) < liveness.suspect_after);
        for (node, heartbeat) in fresh {
            for report in &heartbeat.replicas {
                reports
                    .entry(ShardId(report.shard_id))
                    .or_default()
                    .push((*node, report));
            }
        }
        (0..u64::from(shard_count))
            .map(ShardId)
            .map(|shard| {
                let record = metadata.shards.get(&shard);
                let pending_move = record.and_then(|r| r.pending_move.clone());
                let shard_reports = reports.get(&shard).map(Vec::as_slice).unwrap_or_default();
                let leader_report = shard_reports
                    .iter()
                    .filter(|(_, r)| r.role == pb::RaftRole::Leader as i32)
                    .max_by_key(|(_, r)| r.term);
                let membership_report =
                    leader_report.or_else(|| shard_reports.iter().max_by_key(|(_, r)| r.epoch));
                let Some((reporter, report)) = membership_report else {
                    let voters = record
                        .map(|r| r.initial_voters.iter().copied().collect())
                        .unwrap_or_default();
                    return ShardView {
                        id: shard,
                        voters,
                        pending_move,
                        ..ShardView::default()
                    };
                };
                let learners: BTreeSet<NodeId> =
                    report.learners.iter().copied().map(NodeId).collect();
                let leader = leader_report.map(|_| *reporter);
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
                // Replicas created but not yet founded report no voters: the shard exists all
                // the same (planning it again could found a second, conflicting group).
                let voters: BTreeSet<NodeId> = if report.voters.is_empty() {
                    record
                        .map(|r| r.initial_voters.iter().copied().collect())
                        .unwrap_or_default()
                } else {
                    report.voters.iter().copied().map(NodeId).collect()
                };
                ShardView {
                    id: shard,
                    voters,
                    learners,
                    leader,
                    caught_up,
                    pending_move,
                }
            })
            .collect()
    }

    /// Nodes hosting a replica of `shard` according to their own heartbeats.
    pub fn hosts_of(&self, shard: ShardId) -> BTreeSet<NodeId> {
        self.heartbeats
            .iter()
            .filter(|(_, h)| h.replicas.iter().any(|r| r.shard_id == shard.0))
            .map(|(node, _)| *node)
            .collect()
    }

    /// The epoch the shard's leader reports (0 if unknown).
    pub fn epoch_of(&self, shard: ShardId, leader: Option<NodeId>) -> u64 {
        leader
            .and_then(|leader| self.heartbeats.get(&leader))
            .and_then(|h| h.replicas.iter().find(|r| r.shard_id == shard.0))
            .map_or(0, |r| r.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::ShardRecord;

    fn report(
        shard: u64,
        role: pb::RaftRole,
        term: u64,
        voters: &[u64],
        learners: &[u64],
        applied: u64,
    ) -> pb::ReplicaReport {
        pb::ReplicaReport {
            shard_id: shard,
            role: role as i32,
            term,
            leader_node_id: 0,
            committed_index: applied,
            applied_index: applied,
            epoch: 1,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
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
                storage_engine: 0,
            },
        );
        assert_eq!(
            observed.node_state(&record(1), start + Duration::from_secs(11), liveness),
            NodeState::Up
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
        let mut observed = Observed::new(now);
        let heartbeat = |replicas| NodeHeartbeat {
            last_seen: now,
            address: String::new(),
            replicas,
            storage_engine: 0,
        };
        observed.record(
            NodeId(1),
            heartbeat(vec![report(
                0,
                pb::RaftRole::Leader,
                3,
                &[1, 2, 3],
                &[4, 5],
                100,
            )]),
        );
        observed.record(
            NodeId(2),
            heartbeat(vec![report(0, pb::RaftRole::Follower, 3, &[1, 2], &[], 90)]),
        );
        observed.record(
            NodeId(4),
            heartbeat(vec![report(
                0,
                pb::RaftRole::Learner,
                3,
                &[1, 2, 3],
                &[4, 5],
                100,
            )]),
        );
        observed.record(
            NodeId(5),
            heartbeat(vec![report(
                0,
                pb::RaftRole::Learner,
                3,
                &[1, 2, 3],
                &[4, 5],
                40,
            )]),
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
        let liveness = Liveness {
            suspect_after: Duration::from_secs(3),
            down_after: Duration::from_secs(10),
        };
        let views = observed.shard_views(&metadata, 2, now, liveness);
        assert_eq!(views[0].leader, Some(NodeId(1)));
        let later = observed.shard_views(&metadata, 2, now + Duration::from_secs(4), liveness);
        assert_eq!(
            later[0].leader, None,
            "a silent node's claim to lead is not believed"
        );
        assert!(later[0].voters.is_empty());
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
}
