//! Shards that lost their quorum (D40): which ones, since when, and how often the
//! coordinator may still try to repair them.
//!
//! A shard has lost its quorum when fewer than a majority of its voters survive: a voter
//! survives while its node is not down (or left) and reports hosting the shard's replica (a
//! node not heard from since this coordinator became leader gets the benefit of the doubt
//! until it is down). Such a shard cannot commit anything, so no move can help it: every
//! one needs its leader. The coordinator keeps planning for it (the lost voters may come
//! back) but acts on its plan only after an exponential back-off, and tells the operator,
//! once per change, who may then recover it from a survivor (`cairnctl unsafe
//! recover-shard`, docs/operations.md).
//!
//! Pure decisions and bookkeeping only: no I/O here.

use crate::coordinator::Coordinator;
use crate::observed::Observed;
use crate::placement::{Action, NodeState, NodeView, ShardView};
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// First wait between repair attempts on a shard without quorum.
pub const RETRY_DELAY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between repair attempts on a shard without quorum.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

/// One shard that lost its quorum, as seen in one reconcile round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumLoss {
    pub shard: ShardId,
    pub voters: BTreeSet<NodeId>,
    /// The voters that still host the replica on a live node.
    pub surviving: BTreeSet<NodeId>,
}

/// Whether a node in `state` can still vote for its replicas.
fn can_vote(state: Option<&NodeState>) -> bool {
    matches!(
        state,
        Some(NodeState::Up | NodeState::Suspect | NodeState::Leaving)
    )
}

/// The voters of `shard` that survive: their node is alive and hosts the replica (or has
/// not reported since this coordinator became leader).
pub fn surviving_voters(
    shard: &ShardView,
    hosts: &BTreeSet<NodeId>,
    heard_from: &BTreeSet<NodeId>,
    states: &BTreeMap<NodeId, NodeState>,
) -> BTreeSet<NodeId> {
    shard
        .voters
        .iter()
        .copied()
        .filter(|voter| can_vote(states.get(voter)))
        .filter(|voter| hosts.contains(voter) || !heard_from.contains(voter))
        .collect()
}

/// `Some` when `shard` lost its quorum: fewer than a majority of its voters survive. A
/// shard without voters is not created yet and has nothing to lose.
pub fn quorum_loss(
    shard: &ShardView,
    hosts: &BTreeSet<NodeId>,
    heard_from: &BTreeSet<NodeId>,
    states: &BTreeMap<NodeId, NodeState>,
) -> Option<QuorumLoss> {
    if shard.voters.is_empty() {
        return None;
    }
    let surviving = surviving_voters(shard, hosts, heard_from, states);
    (surviving.len() * 2 <= shard.voters.len()).then(|| QuorumLoss {
        shard: shard.id,
        voters: shard.voters.clone(),
        surviving,
    })
}

/// The wait before repair attempt `attempt` (0 for the first) on a shard without quorum:
/// doubling from `RETRY_DELAY_MIN`, at most `RETRY_DELAY_MAX`.
pub fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    RETRY_DELAY_MIN
        .checked_mul(factor)
        .map_or(RETRY_DELAY_MAX, |delay| delay.min(RETRY_DELAY_MAX))
}

/// A shard known to be without quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostShard {
    pub loss: QuorumLoss,
    pub since: Instant,
    /// Repair attempts made since the loss.
    pub attempts: u32,
    /// No repair is attempted before this.
    pub next_attempt: Instant,
}

/// What changed in one round, for the log: each change is logged once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumChanges {
    /// Shards that lost their quorum this round, or whose survivors changed.
    pub lost: Vec<QuorumLoss>,
    /// Shards that have their quorum again.
    pub regained: Vec<ShardId>,
}

/// The shards without quorum, across reconcile rounds.
#[derive(Debug)]
pub struct QuorumWatch {
    /// How long a loss must be seen before it counts: a replica just created for a new
    /// shard is not in its node's heartbeat yet, and must not read as a lost voter.
    confirm_after: Duration,
    /// Losses seen and not yet confirmed, since when.
    seen: BTreeMap<ShardId, Instant>,
    lost: BTreeMap<ShardId, LostShard>,
}

impl QuorumWatch {
    pub fn new(confirm_after: Duration) -> Self {
        Self {
            confirm_after,
            seen: BTreeMap::new(),
            lost: BTreeMap::new(),
        }
    }

    /// Takes this round's losses; returns what changed since the last round.
    pub fn update(&mut self, losses: Vec<QuorumLoss>, now: Instant) -> QuorumChanges {
        let current: BTreeSet<ShardId> = losses.iter().map(|loss| loss.shard).collect();
        self.seen.retain(|shard, _| current.contains(shard));
        let confirm_after = self.confirm_after;
        let lost = &self.lost;
        let seen = &mut self.seen;
        let losses: Vec<QuorumLoss> = losses
            .into_iter()
            .filter(|loss| {
                let first_seen = *seen.entry(loss.shard).or_insert(now);
                lost.contains_key(&loss.shard)
                    || now.saturating_duration_since(first_seen) >= confirm_after
            })
            .collect();
        let regained: Vec<ShardId> = self
            .lost
            .keys()
            .filter(|shard| !current.contains(shard))
            .copied()
            .collect();
        for shard in &regained {
            self.lost.remove(shard);
        }
        let mut lost = Vec::new();
        for loss in losses {
            match self.lost.get_mut(&loss.shard) {
                Some(known) if known.loss == loss => {}
                Some(known) => {
                    // Other survivors: worth a fresh attempt soon.
                    known.loss = loss.clone();
                    known.attempts = 0;
                    known.next_attempt = now;
                    lost.push(loss);
                }
                None => {
                    self.lost.insert(
                        loss.shard,
                        LostShard {
                            loss: loss.clone(),
                            since: now,
                            attempts: 0,
                            // The first attempt waits too: a shard whose nodes just died
                            // is as stuck now as in a second.
                            next_attempt: now + retry_delay(0),
                        },
                    );
                    lost.push(loss);
                }
            }
        }
        QuorumChanges { lost, regained }
    }

    /// Whether the coordinator may act on `shard` now. For a shard without quorum, at most
    /// once per back-off period: a `true` counts as an attempt and schedules the next one.
    pub fn may_act(&mut self, shard: ShardId, now: Instant) -> bool {
        let Some(lost) = self.lost.get_mut(&shard) else {
            return true;
        };
        if now < lost.next_attempt {
            return false;
        }
        lost.attempts = lost.attempts.saturating_add(1);
        lost.next_attempt = now + retry_delay(lost.attempts);
        true
    }

    /// Marks every action of a round taken for `shard`: several actions of one round share
    /// one attempt.
    pub fn filter_actions(&mut self, actions: Vec<Action>, now: Instant) -> Vec<Action> {
        let mut allowed: BTreeMap<ShardId, bool> = BTreeMap::new();
        actions
            .into_iter()
            .filter(|action| {
                let shard = action.shard();
                *allowed
                    .entry(shard)
                    .or_insert_with(|| self.may_act(shard, now))
            })
            .collect()
    }

    /// Every shard without quorum, by shard id.
    pub fn lost(&self) -> Vec<LostShard> {
        self.lost.values().cloned().collect()
    }

    pub fn is_lost(&self, shard: ShardId) -> bool {
        self.lost.contains_key(&shard)
    }

    /// Forgets everything (leadership moved: the next leader observes afresh).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.lost.clear();
    }
}

/// This round's losses, from the leader's observations.
pub fn losses(observed: &Observed, nodes: &[NodeView], shards: &[ShardView]) -> Vec<QuorumLoss> {
    let states: BTreeMap<NodeId, NodeState> = nodes.iter().map(|n| (n.id, n.state)).collect();
    let heard_from = observed.heard_from();
    shards
        .iter()
        .filter_map(|shard| quorum_loss(shard, &observed.hosts_of(shard.id), &heard_from, &states))
        .collect()
}

impl Coordinator {
    /// Records this round's losses and logs what changed, once per change.
    pub(crate) fn note_quorum_losses(&self, losses: Vec<QuorumLoss>, now: Instant) {
        let changes = self.quorum_watch().update(losses, now);
        for loss in changes.lost {
            tracing::warn!(
                shard = %loss.shard,
                voters = ?loss.voters,
                surviving = ?loss.surviving,
                "shard lost its quorum: it cannot commit writes until its lost voters come back, \
                 or an operator recovers it from a survivor (cairnctl unsafe recover-shard, \
                 docs/operations.md); repairs back off meanwhile"
            );
        }
        for shard in changes.regained {
            tracing::info!(%shard, "shard has its quorum again");
        }
    }

    /// Every shard without quorum, as the last reconcile round saw them (leader only).
    pub fn shards_without_quorum(&self) -> Vec<LostShard> {
        self.quorum_watch().lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn shard(id: u64, voters: &[u64]) -> ShardView {
        ShardView {
            id: ShardId(id),
            voters: ids(voters),
            ..ShardView::default()
        }
    }

    fn states(list: &[(u64, NodeState)]) -> BTreeMap<NodeId, NodeState> {
        list.iter()
            .map(|(id, state)| (NodeId(*id), *state))
            .collect()
    }

    #[test]
    fn two_of_three_voters_down_is_a_loss_one_is_not() {
        let view = shard(0, &[1, 2, 3]);
        let hosts = ids(&[1, 2, 3]);
        let heard = ids(&[1, 2, 3, 4]);
        let one_down = states(&[(1, NodeState::Up), (2, NodeState::Down), (3, NodeState::Up)]);
        assert_eq!(quorum_loss(&view, &hosts, &heard, &one_down), None);
        let two_down = states(&[
            (1, NodeState::Up),
            (2, NodeState::Down),
            (3, NodeState::Left),
        ]);
        assert_eq!(
            quorum_loss(&view, &hosts, &heard, &two_down),
            Some(QuorumLoss {
                shard: ShardId(0),
                voters: ids(&[1, 2, 3]),
                surviving: ids(&[1]),
            })
        );
    }

    #[test]
    fn a_voter_whose_node_lost_the_replica_does_not_survive() {
        // Finding 1 of issue 14: node 5 is up but deleted its replica of the shard.
        let view = shard(0, &[1, 3, 5]);
        let up = states(&[(1, NodeState::Up), (3, NodeState::Down), (5, NodeState::Up)]);
        let loss = quorum_loss(&view, &ids(&[1]), &ids(&[1, 5]), &up).expect("a loss");
        assert_eq!(loss.surviving, ids(&[1]));
    }

    #[test]
    fn suspect_and_unheard_nodes_get_the_benefit_of_the_doubt() {
        let view = shard(0, &[1, 2, 3]);
        let states = states(&[
            (1, NodeState::Suspect),
            (2, NodeState::Up),
            (3, NodeState::Down),
        ]);
        // Node 2 has not reported since this coordinator became leader.
        assert_eq!(quorum_loss(&view, &ids(&[1]), &ids(&[1]), &states), None);
    }

    #[test]
    fn shards_not_created_yet_and_even_voter_counts() {
        let none = states(&[]);
        assert_eq!(
            quorum_loss(&shard(0, &[]), &ids(&[]), &ids(&[]), &none),
            None
        );
        // Two of four is not a majority.
        let view = shard(1, &[1, 2, 3, 4]);
        let half = states(&[
            (1, NodeState::Up),
            (2, NodeState::Up),
            (3, NodeState::Down),
            (4, NodeState::Down),
        ]);
        assert!(quorum_loss(&view, &ids(&[1, 2]), &ids(&[1, 2]), &half).is_some());
        // A single voter that is up has its quorum.
        let single = shard(2, &[1]);
        assert_eq!(quorum_loss(&single, &ids(&[1]), &ids(&[1]), &half), None);
    }

    #[test]
    fn retry_delay_doubles_up_to_its_bound() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(6), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(40), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_DELAY_MAX);
    }

    fn loss(shard: u64, surviving: &[u64]) -> QuorumLoss {
        QuorumLoss {
            shard: ShardId(shard),
            voters: ids(&[1, 2, 3]),
            surviving: ids(surviving),
        }
    }

    #[test]
    fn changes_are_reported_once() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::ZERO);
        let first = watch.update(vec![loss(0, &[1])], start);
        assert_eq!(first.lost, vec![loss(0, &[1])]);
        assert!(first.regained.is_empty());
        let again = watch.update(vec![loss(0, &[1])], start + Duration::from_millis(200));
        assert_eq!(again, QuorumChanges::default(), "no change, nothing to log");
        let fewer = watch.update(vec![loss(0, &[])], start + Duration::from_millis(400));
        assert_eq!(fewer.lost, vec![loss(0, &[])], "the survivors changed");
        let back = watch.update(vec![], start + Duration::from_millis(600));
        assert_eq!(back.regained, vec![ShardId(0)]);
        assert!(watch.lost().is_empty());
    }

    #[test]
    fn a_loss_counts_once_it_lasted_the_confirmation_period() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::from_secs(3));
        assert!(watch.update(vec![loss(0, &[1])], start).lost.is_empty());
        assert!(watch.may_act(ShardId(0), start), "not a loss yet");
        // Gone before it was confirmed (a new replica showed up in its heartbeat).
        assert!(watch
            .update(vec![], start + Duration::from_secs(1))
            .regained
            .is_empty());
        let again = start + Duration::from_secs(2);
        assert!(watch.update(vec![loss(0, &[1])], again).lost.is_empty());
        let confirmed = watch.update(vec![loss(0, &[1])], again + Duration::from_secs(3));
        assert_eq!(confirmed.lost, vec![loss(0, &[1])]);
        assert!(watch.is_lost(ShardId(0)));
    }

    #[test]
    fn a_shard_without_quorum_is_acted_on_with_exponential_back_off() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::ZERO);
        watch.update(vec![loss(0, &[1])], start);
        assert!(
            watch.may_act(ShardId(1), start),
            "other shards are not held back"
        );
        // Reconcile every 200 ms for two minutes: attempts at 1, 3, 7, 15, 31, 63, 123 s.
        let tick = Duration::from_millis(200);
        let mut attempts = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(120) {
            if watch.may_act(ShardId(0), now) {
                attempts.push((now - start).as_millis() / 1_000);
            }
            now += tick;
        }
        assert_eq!(attempts, vec![1, 3, 7, 15, 31, 63]);
        let lost = watch.lost();
        assert_eq!(lost[0].attempts, 6);
        assert_eq!(lost[0].since, start);
    }

    #[test]
    fn actions_of_one_round_share_one_attempt() {
        let start = Instant::now();
        let mut watch = QuorumWatch::new(Duration::ZERO);
        watch.update(vec![loss(0, &[1])], start);
        let actions = vec![
            Action::RemoveLearner {
                shard: ShardId(0),
                node: NodeId(4),
            },
            Action::TransferLeader {
                shard: ShardId(1),
                from: NodeId(1),
                to: NodeId(2),
            },
            Action::CompleteMove {
                shard: ShardId(0),
                remove_from: None,
            },
        ];
        let held = watch.filter_actions(actions.clone(), start);
        assert_eq!(held, vec![actions[1].clone()]);
        let due = watch.filter_actions(actions.clone(), start + Duration::from_secs(1));
        assert_eq!(due, actions);
        assert_eq!(watch.lost()[0].attempts, 1);
    }
}
