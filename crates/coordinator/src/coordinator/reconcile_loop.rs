//! The reconcile loop: each round, the leader gathers its views, takes the decisions
//! (placement, interrupted creations, quorum losses, cleanup) and carries them out one at a
//! time. Only the leader acts; the decisions are pure functions in their own modules.

use super::{Coordinator, ScheduleStats};
use crate::cleanup;
use crate::error::Result;
use crate::founding;
use crate::metadata::{Metadata, NodeRecord, ShardRecord};
use crate::placement::{self, Action, NodeState, PlacementConfig, ShardView};
use crate::reconcile;
use cairn_types::NodeId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Coordinator {
    /// Runs the reconcile loop until the process ends. Only the leader acts.
    pub async fn run_reconcile(self: Arc<Self>) {
        let mut ticker =
            tokio::time::interval(Duration::from_millis(self.config.reconcile_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.reconcile_once().await {
                tracing::warn!(%error, "reconcile round failed; retrying next round");
            }
        }
    }

    pub async fn reconcile_once(&self) -> Result<()> {
        if !self.leader_state().await? {
            return Ok(());
        }
        let metadata = self.metadata.read_all().await?;
        let now = Instant::now();
        let grace = self.grace_periods();
        let (nodes, shards, cluster, founded, resumptions, stale_moves) = {
            let mut leader = self.leader.lock().await;
            let Some(state) = leader.as_mut() else {
                return Ok(());
            };
            let nodes = state.observed.node_views(&metadata, now, self.liveness());
            let mut shards = state.observed.shard_views(
                &metadata,
                state.cluster.shard_count,
                now,
                self.liveness(),
            );
            // A move whose learner never showed up would wait forever: it is dropped and
            // planned afresh.
            let stale_moves = cleanup::stale_moves(
                &shards,
                &mut state.missing_learners,
                now,
                grace.missing_learner,
            );
            for shard in shards.iter_mut().filter(|s| stale_moves.contains(&s.id)) {
                if let Some(mv) = shard.pending_move.take() {
                    tracing::warn!(shard = %shard.id, ?mv, "the move's learner never appeared; dropping the move");
                }
            }
            // Creations interrupted by a death (D51): resumed after a grace period.
            let founded = founding::founded(&shards, &metadata.founding);
            let stalled = founding::stalled(
                &shards,
                &metadata.founding,
                &mut state.unfounded_since,
                now,
                grace.stalled_founding,
            );
            let states: BTreeMap<NodeId, NodeState> =
                nodes.iter().map(|n| (n.id, n.state)).collect();
            let resumptions = founding::plan(
                &stalled,
                &metadata.founding,
                &states,
                state.cluster.replication_factor as usize,
            );
            // One attempt per grace period: an attempt blocks the round until its calls
            // answer or time out.
            for shard in &stalled {
                if resumptions.resumes(*shard) {
                    state.unfounded_since.insert(*shard, now);
                }
            }
            self.publish(state, &metadata, &nodes, &shards);
            let mut losses = crate::quorum::losses(&state.observed, &nodes, &shards);
            losses.retain(|loss| {
                !founding::hides_quorum_loss(
                    metadata.founding.get(&loss.shard),
                    resumptions.resumes(loss.shard),
                )
            });
            self.note_quorum_losses(losses, now);
            (
                nodes,
                shards,
                state.cluster.clone(),
                founded,
                resumptions,
                stale_moves,
            )
        };
        // Before anything else is done to them: a founded shard must never again be taken
        // for one being created.
        for shard in founded {
            self.metadata.delete_founding(shard).await?;
            tracing::info!(%shard, "shard founded");
        }
        let config = PlacementConfig {
            replication_factor: cluster.replication_factor as usize,
            replica_tolerance: self.config.replica_tolerance,
            leader_tolerance: self.config.leader_tolerance,
            moves_in_flight_max: self.config.moves_in_flight_max,
        };
        let states: BTreeMap<NodeId, NodeState> = nodes.iter().map(|n| (n.id, n.state)).collect();
        // Counted over voters that really host their replica (D37), not the voter list.
        *self.stats.lock().expect("stats lock poisoned") = ScheduleStats {
            under_replicated_shards: shards
                .iter()
                .filter(|s| reconcile::under_replicated(s, config.replication_factor))
                .count() as u32,
            moves_in_flight: shards.iter().filter(|s| s.pending_move.is_some()).count() as u32,
        };
        for shard in stale_moves {
            self.metadata
                .put_shard(&ShardRecord {
                    pending_move: None,
                    ..metadata.shard_record(shard)
                })
                .await?;
        }
        // A creation planned afresh is shown to the planner as uncreated.
        let planned = resumptions.views_to_plan(&shards);
        let actions: Vec<Action> = resumptions
            .actions
            .into_iter()
            .chain(placement::plan(&nodes, &planned, &config))
            .collect();
        // Shards without quorum: their moves need a leader they do not have (D40).
        let actions = self.quorum_watch().filter_actions(actions, now);
        for action in actions {
            tracing::info!(?action, "placement");
            if let Err(error) = self.execute(&action, &metadata, &shards).await {
                tracing::warn!(?action, %error, "placement action failed; it is planned again next round");
            }
        }
        self.sweep(&metadata, &shards, &states).await;
        Ok(())
    }

    /// Housekeeping outside placement (`cleanup`): replicas a node still hosts but that no
    /// longer belong to their shard are deleted, and a leaving node that holds nothing
    /// becomes left.
    async fn sweep(
        &self,
        metadata: &Metadata,
        shards: &[ShardView],
        states: &BTreeMap<NodeId, NodeState>,
    ) {
        let now = Instant::now();
        let strays = {
            let mut leader = self.leader.lock().await;
            let Some(state) = leader.as_mut() else { return };
            // The same views the planner used this round (D37): hosts from fresh heartbeats,
            // members from the committed configuration, which the planner never adds a
            // hosting node to.
            cleanup::strays_to_delete(
                shards,
                states,
                &mut state.stray_since,
                now,
                self.grace_periods().stray_replica,
            )
        };
        for (node, shard, excluded_at) in strays {
            tracing::info!(%shard, %node, excluded_at, "deleting a replica that is no longer a member");
            self.remove_replica(metadata, shard, node, excluded_at)
                .await;
        }
        for record in cleanup::drained_nodes(&metadata.nodes, shards) {
            let left = NodeRecord {
                left: true,
                ..record.clone()
            };
            match self.metadata.put_node(&left).await {
                Ok(()) => {
                    tracing::info!(node = %record.id, "node drained and left the cluster")
                }
                Err(error) => {
                    tracing::warn!(node = %record.id, %error, "could not mark the node as left")
                }
            }
        }
    }
}
