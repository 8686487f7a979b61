//! The placement rules, applied in order by one `Planner` per call to `plan`. See
//! the parent module's doc for the desired state they drive towards.

use super::{Action, Move, NodeState, NodeView, PlacementConfig, ShardView};
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// What "distinct zones" compares: a node without a zone label is its own zone, so unlabelled
/// clusters spread over nodes and a missing label never makes two nodes look co-located.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ZoneKey<'a> {
    Named(&'a str),
    Unlabelled(NodeId),
}

/// Why a voter must be moved off its node; the derive order is the urgency order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RepairClass {
    /// On a node that is down, gone, or unknown: the shard is already running a replica short.
    BadNodeDown,
    /// On a node that is leaving: still serving, but it must be drained.
    BadNodeLeaving,
    /// Fewer voters than the replication factor.
    UnderReplicated,
}

/// A repair the planner would like to start, before budget and target checks.
struct RepairNeed<'a> {
    class: RepairClass,
    shard: &'a ShardView,
    /// The voter to replace; `None` when the shard only has to grow.
    from: Option<NodeId>,
}

/// The state one call to [`plan`] works on: the inputs indexed by id, plus what the actions
/// planned so far will change (replica counts, budget used, shards already touched).
pub(super) struct Planner<'a> {
    config: &'a PlacementConfig,
    nodes: BTreeMap<NodeId, &'a NodeView>,
    /// Sorted by shard id, so every scan visits shards lowest id first.
    shards: Vec<&'a ShardView>,
    /// Replicas per node: voters, learners and pending-move targets, plus replicas that
    /// actions earlier in this plan add. Every known node has an entry.
    replicas: BTreeMap<NodeId, usize>,
    /// Moves pending (and not completed in this plan) plus moves and leader transfers
    /// started in this plan: what `moves_in_flight_max` bounds.
    in_flight: usize,
    /// Shards given a `StartMove` or `TransferLeader` in this plan; one such change per shard
    /// per plan, since the next one must be decided on the membership the first one leaves.
    touched: BTreeSet<ShardId>,
    pub(super) actions: Vec<Action>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(
        nodes: &'a [NodeView],
        shards: &'a [ShardView],
        config: &'a PlacementConfig,
    ) -> Self {
        let nodes: BTreeMap<NodeId, &NodeView> = nodes.iter().map(|n| (n.id, n)).collect();
        let mut sorted: Vec<&ShardView> = shards.iter().collect();
        sorted.sort_by_key(|s| s.id);
        let mut replicas: BTreeMap<NodeId, usize> = nodes.keys().map(|id| (*id, 0)).collect();
        for shard in &sorted {
            for node in replica_nodes(shard) {
                *replicas.entry(node).or_insert(0) += 1;
            }
        }
        Planner {
            config,
            nodes,
            shards: sorted,
            replicas,
            in_flight: 0,
            touched: BTreeSet::new(),
            actions: Vec::new(),
        }
    }

    fn state(&self, node: NodeId) -> Option<NodeState> {
        self.nodes.get(&node).map(|n| n.state)
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.state(node) == Some(NodeState::Up)
    }

    /// Whether a replica on `node` can still be deleted: the node answers, or may again soon.
    fn is_reachable(&self, node: NodeId) -> bool {
        matches!(
            self.state(node),
            Some(NodeState::Up | NodeState::Suspect | NodeState::Leaving)
        )
    }

    fn zone(&self, node: NodeId) -> ZoneKey<'a> {
        match self.nodes.get(&node).and_then(|n| n.zone.as_deref()) {
            Some(zone) => ZoneKey::Named(zone),
            None => ZoneKey::Unlabelled(node),
        }
    }

    fn distinct_zones<I: IntoIterator<Item = NodeId>>(&self, nodes: I) -> usize {
        nodes
            .into_iter()
            .map(|n| self.zone(n))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Up nodes, ascending.
    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| self.is_up(*id))
            .collect()
    }

    fn replica_count(&self, node: NodeId) -> usize {
        self.replicas.get(&node).copied().unwrap_or(0)
    }

    fn add_replica(&mut self, node: NodeId) {
        *self.replicas.entry(node).or_insert(0) += 1;
    }

    fn remove_replica(&mut self, node: NodeId) {
        if let Some(count) = self.replicas.get_mut(&node) {
            *count = count.saturating_sub(1);
        }
    }

    fn budget_left(&self) -> bool {
        self.in_flight < self.config.moves_in_flight_max
    }

    fn start_move(&mut self, shard: ShardId, mv: Move) {
        self.in_flight += 1;
        self.touched.insert(shard);
        self.actions.push(Action::StartMove { shard, mv });
    }

    /// Rule 1: found every uncreated shard on `replication_factor` up nodes. Not bounded by the
    /// move budget: an uncreated shard serves nothing, and creating it moves no data.
    pub(super) fn create_shards(&mut self) {
        let rf = self.config.replication_factor;
        let up = self.up_nodes();
        // Founding a group on fewer nodes than asked would leave it under-replicated from the
        // start; better to wait for nodes to join. A factor of 0 founds nothing.
        if rf == 0 || up.len() < rf {
            return;
        }
        let uncreated: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|s| s.voters.is_empty())
            .map(|s| s.id)
            .collect();
        for shard in uncreated {
            let mut nodes = self.choose_creation_nodes(&up);
            for node in &nodes {
                self.add_replica(*node);
            }
            nodes.sort();
            self.actions.push(Action::CreateShard { shard, nodes });
        }
    }

    /// Picks `replication_factor` of `up` one at a time: a node in a zone not yet chosen if
    /// any is left (so the result has as many distinct zones as possible), then the fewest
    /// replicas, then the lowest id.
    fn choose_creation_nodes(&self, up: &[NodeId]) -> Vec<NodeId> {
        let mut chosen: Vec<NodeId> = Vec::new();
        let mut zones: BTreeSet<ZoneKey<'a>> = BTreeSet::new();
        while chosen.len() < self.config.replication_factor {
            let best = up
                .iter()
                .copied()
                .filter(|n| !chosen.contains(n))
                .min_by_key(|n| (zones.contains(&self.zone(*n)), self.replica_count(*n), *n));
            let Some(node) = best else { break };
            zones.insert(self.zone(node));
            chosen.push(node);
        }
        chosen
    }

    /// Rule 2: drive each pending move one step. Every move not completed here stays in
    /// flight, even one aborted here: its learner is still being removed this round.
    pub(super) fn resolve_pending_moves(&mut self) {
        let shards = self.shards.clone();
        for shard in shards {
            let Some(mv) = &shard.pending_move else {
                continue;
            };
            // A move is driven, and recorded as done, only from the shard's committed
            // configuration (D37). Without one (a new coordinator leader that has not heard
            // from the shard yet) `voters` are the shard's initial voters, what the coordinator
            // once meant: a move to one of them would look complete. It waits.
            if shard.epoch == 0 {
                self.in_flight += 1;
                continue;
            }
            // During the joint configuration both the old and the new voter are in `voters`:
            // the move is complete only once the old one is gone.
            let replaced = mv.from.is_none_or(|from| !shard.voters.contains(&from));
            if shard.voters.contains(&mv.to) && !replaced {
                self.in_flight += 1;
                continue;
            }
            if shard.voters.contains(&mv.to) {
                // Delete the old replica only from a node that can still be asked to.
                let remove_from = mv.from.filter(|from| self.is_reachable(*from));
                self.actions.push(Action::CompleteMove {
                    shard: shard.id,
                    remove_from,
                });
                continue;
            }
            self.in_flight += 1;
            if !self.is_up(mv.to) {
                self.actions.push(Action::AbortMove {
                    shard: shard.id,
                    learner: mv.to,
                });
            } else if shard.caught_up.contains(&mv.to) && shard.leader.is_some() {
                // A membership change needs a leader to propose it; without one, keep waiting.
                let mut voters = shard.voters.clone();
                if let Some(from) = mv.from {
                    voters.remove(&from);
                }
                voters.insert(mv.to);
                self.actions.push(Action::FinishMove {
                    shard: shard.id,
                    voters,
                });
            }
        }
    }

    /// Rule 3: a learner no move is waiting for only costs the leader replication traffic.
    pub(super) fn remove_stray_learners(&mut self) {
        for shard in &self.shards {
            let move_target = shard.pending_move.as_ref().map(|mv| mv.to);
            for learner in &shard.learners {
                // A node listed as both learner and voter is a voter: never remove it here.
                if Some(*learner) == move_target || shard.voters.contains(learner) {
                    continue;
                }
                self.actions.push(Action::RemoveLearner {
                    shard: shard.id,
                    node: *learner,
                });
            }
        }
    }

    /// The voter that most needs moving off its node, if any: down (or gone, or unknown)
    /// before leaving, then the lowest id.
    fn worst_voter(&self, shard: &ShardView) -> Option<(RepairClass, NodeId)> {
        shard
            .voters
            .iter()
            .filter_map(|voter| {
                // A voter that hosts nothing is a replica short, whatever its node's state.
                if shard.missing.contains(voter) {
                    return Some((RepairClass::BadNodeDown, *voter));
                }
                let class = match self.state(*voter) {
                    Some(NodeState::Up | NodeState::Suspect) => return None,
                    Some(NodeState::Leaving) => RepairClass::BadNodeLeaving,
                    Some(NodeState::Down | NodeState::Left) | None => RepairClass::BadNodeDown,
                };
                Some((class, *voter))
            })
            .min()
    }

    /// What, if anything, a created shard needs repaired (ignoring leader and pending moves).
    fn repair_need(&self, shard: &'a ShardView) -> Option<RepairNeed<'a>> {
        if shard.voters.is_empty() {
            return None;
        }
        if let Some((class, from)) = self.worst_voter(shard) {
            return Some(RepairNeed {
                class,
                shard,
                from: Some(from),
            });
        }
        if shard.voters.len() < self.config.replication_factor {
            return Some(RepairNeed {
                class: RepairClass::UnderReplicated,
                shard,
                from: None,
            });
        }
        None
    }

    /// Rule 4: start moves for shards with a voter on a bad node or too few voters, most
    /// urgent first, within the budget. Returns whether any shard needed a repair at all
    /// (whether or not one could be started now), which holds back balancing.
    pub(super) fn repair_shards(&mut self) -> bool {
        let needs: Vec<RepairNeed<'a>> = self
            .shards
            .iter()
            .filter_map(|s| self.repair_need(s))
            .collect();
        let needed = !needs.is_empty();
        let mut startable: Vec<RepairNeed<'a>> = needs
            .into_iter()
            // No leader means no quorum (or an election): a membership change could not commit.
            // A pending move already changes this shard; the next change waits for it.
            .filter(|need| need.shard.leader.is_some() && need.shard.pending_move.is_none())
            .collect();
        startable.sort_by_key(|need| (need.class, need.shard.id));
        for need in startable {
            if !self.budget_left() {
                break;
            }
            let Some(to) = self.choose_repair_target(need.shard, need.from) else {
                continue;
            };
            self.add_replica(to);
            self.start_move(
                need.shard.id,
                Move {
                    to,
                    from: need.from,
                },
            );
        }
        needed
    }

    /// An up node outside the shard, preferring a zone the remaining voters do not cover,
    /// then the fewest replicas, then the lowest id.
    fn choose_repair_target(&self, shard: &ShardView, from: Option<NodeId>) -> Option<NodeId> {
        let remaining_zones: BTreeSet<ZoneKey<'a>> = shard
            .voters
            .iter()
            .filter(|v| Some(**v) != from)
            .map(|v| self.zone(*v))
            .collect();
        self.up_nodes()
            .into_iter()
            .filter(|n| !replica_nodes(shard).contains(n))
            .min_by_key(|n| {
                (
                    remaining_zones.contains(&self.zone(*n)),
                    self.replica_count(*n),
                    *n,
                )
            })
    }

    /// Rule 5: move replicas from the most to the least loaded up node until their counts are
    /// within `replica_tolerance`, the budget is spent, or no shard can make that move.
    pub(super) fn rebalance_replicas(&mut self) {
        let up = self.up_nodes();
        while self.budget_left() {
            let counts: Vec<(NodeId, usize)> =
                up.iter().map(|n| (*n, self.replica_count(*n))).collect();
            let Some((shard, source, target)) = self.rebalance_move(&counts) else {
                return;
            };
            self.remove_replica(source);
            self.add_replica(target);
            self.start_move(
                shard,
                Move {
                    to: target,
                    from: Some(source),
                },
            );
        }
    }

    /// The move that narrows the spread: from the most loaded node that has a shard which can
    /// go to a node loaded more than `replica_tolerance` below it, to the least loaded such
    /// node. Trying only the single most and least loaded pair stalls for good when zones
    /// forbid that pair: with nodes in zones c, a, b holding every shard and a new node in
    /// zone a, only the zone-a node's replicas can move to it (a new StatefulSet pod on
    /// Kubernetes lands in a zone already used).
    fn rebalance_move(&self, counts: &[(NodeId, usize)]) -> Option<(ShardId, NodeId, NodeId)> {
        let mut sources = counts.to_vec();
        // The most loaded first, the lowest id among equals.
        sources.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
        let mut targets = counts.to_vec();
        targets.sort_by_key(|(n, c)| (*c, *n));
        for (source, most) in &sources {
            for (target, least) in &targets {
                if most.saturating_sub(*least) <= self.config.replica_tolerance {
                    // Targets come least loaded first: the rest are closer still.
                    break;
                }
                if let Some(shard) = self.rebalance_candidate(*source, *target) {
                    return Some((shard, *source, *target));
                }
            }
        }
        None
    }

    /// The lowest-id shard that can move a voter from `source` to `target` now without
    /// spreading over fewer zones.
    fn rebalance_candidate(&self, source: NodeId, target: NodeId) -> Option<ShardId> {
        self.shards
            .iter()
            .find(|shard| {
                shard.leader.is_some()
                    && shard.pending_move.is_none()
                    && !self.touched.contains(&shard.id)
                    && shard.voters.contains(&source)
                    && !replica_nodes(shard).contains(&target)
                    && self.distinct_zones(
                        shard
                            .voters
                            .iter()
                            .copied()
                            .filter(|v| *v != source)
                            .chain([target]),
                    ) >= self.distinct_zones(shard.voters.iter().copied())
            })
            .map(|shard| shard.id)
    }

    /// Rule 6: move leadership from the most to the least led up node until leader counts are
    /// within `leader_tolerance`, the budget is spent, or no shard can make that transfer.
    pub(super) fn balance_leaders(&mut self) {
        let mut leaders: BTreeMap<NodeId, usize> =
            self.up_nodes().into_iter().map(|n| (n, 0)).collect();
        for shard in &self.shards {
            if let Some(count) = shard.leader.and_then(|l| leaders.get_mut(&l)) {
                *count += 1;
            }
        }
        // A transfer between counts that differ by 1 would only swap them: require 2.
        let spread_min = self.config.leader_tolerance.max(1);
        while self.budget_left() {
            let mut sources: Vec<(NodeId, usize)> = leaders.iter().map(|(n, c)| (*n, *c)).collect();
            sources.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
            let mut targets = sources.clone();
            targets.sort_by_key(|(n, c)| (*c, *n));
            // The most led node may lead nothing that the least led one can take over; then
            // the next best pair still narrows the spread.
            let transfer = sources.iter().find_map(|(from, most)| {
                targets.iter().find_map(|(to, least)| {
                    if most.saturating_sub(*least) <= spread_min {
                        return None;
                    }
                    self.shards
                        .iter()
                        .find(|shard| {
                            shard.leader == Some(*from)
                                && shard.pending_move.is_none()
                                && !self.touched.contains(&shard.id)
                                && shard.voters.contains(to)
                        })
                        .map(|shard| (shard.id, *from, *to))
                })
            });
            let Some((shard, from, to)) = transfer else {
                return;
            };
            leaders.entry(from).and_modify(|c| *c -= 1);
            leaders.entry(to).and_modify(|c| *c += 1);
            self.in_flight += 1;
            self.touched.insert(shard);
            self.actions
                .push(Action::TransferLeader { shard, from, to });
        }
    }
}

/// Every node holding (or about to hold) a replica of `shard`: voters, learners, nodes that
/// report hosting one (a stray replica the sweep has yet to delete: adding that node back
/// would race the deletion) and the target of its pending move.
fn replica_nodes(shard: &ShardView) -> BTreeSet<NodeId> {
    let mut nodes: BTreeSet<NodeId> = shard.voters.union(&shard.learners).copied().collect();
    nodes.extend(shard.hosts.iter().copied());
    if let Some(mv) = &shard.pending_move {
        nodes.insert(mv.to);
    }
    nodes
}
