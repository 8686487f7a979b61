//! How a coordinator stops (D43): within `shutdown_grace_ms` of SIGTERM, and without stalling
//! the data plane.
//!
//! Order matters. While it still serves, the leader hands its leadership to the follower
//! whose log matches the most (the oracle keeps answering until the new leader takes over).
//! Then it stops answering as a leader (NotLeader naming the new leader, shard-map watches
//! ended) and stops its Raft replica, so that a leadership it could not hand off is lost by
//! an election timeout instead of being held by a process that no longer serves. Only then
//! does the gRPC server drain, for a bounded time. The old order (drain first, Raft last,
//! nothing bounded) kept a leader whose services were closed for as long as a watch stream
//! stayed open, that is forever, and every write waited on its timestamp oracle.

use crate::coordinator::Coordinator;
use cairn_raft::replica::ShardReplica;
use cairn_telemetry::{until_deadline, ShutdownDeadlines};
use std::time::Instant;

/// Runs the stop sequence up to the drain: hand-off, stop serving, stop Raft. Returns once
/// the gRPC server may drain.
pub async fn stop(coordinator: &Coordinator, replica: &ShardReplica, deadlines: ShutdownDeadlines) {
    if replica.is_leader() {
        tracing::info!("coordinator stopping: handing off leadership");
        until_deadline(
            "coordinator leadership hand-off",
            deadlines.handoff,
            hand_off(replica),
        )
        .await;
    }
    coordinator.stop_serving();
    tracing::info!(leader = ?coordinator.leader_id(), "coordinator stopping: no longer serving; stopping its raft replica");
    until_deadline(
        "coordinator raft shutdown",
        deadlines.drain,
        replica.shutdown(),
    )
    .await;
}

async fn hand_off(replica: &ShardReplica) {
    let Some(target) = replica.hand_off_leadership().await else {
        return;
    };
    let started = Instant::now();
    replica.wait_until_not_leader().await;
    tracing::info!(
        %target,
        took_ms = started.elapsed().as_millis() as u64,
        "coordinator leadership handed off"
    );
}
