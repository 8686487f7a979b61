//! Replica sets under node replacement and pauses (issue 14), as fault scenarios with
//! checked histories: while clients run through the gateways, nodes are replaced at their
//! old addresses or paused around "down after". After each, every shard must have as many
//! voters as the replication factor that, asked themselves, host their replica; the map must
//! agree with them; and the history must be linearizable with identical replicas
//! (`Scenario::finish`).

use cairn_test_harness::nemesis::Pause;
use cairn_test_harness::{ClusterSpec, Scenario, SCENARIO_WAIT};
use std::path::Path;
use std::time::Duration;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");

/// One coordinator, four nodes, two gateways, `shards` shards of three replicas; nodes are
/// suspect after 1.5 s and down after 3 s.
async fn start(name: &'static str, shards: u32) -> Scenario {
    let spec = ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(1)
        .nodes(4)
        .gateways(2)
        .shards(shards)
        .fast_failure_detection();
    let scenario = Scenario::start(name, spec).await;
    scenario
        .cluster
        .wait_for_every_shard_hosted(SCENARIO_WAIT)
        .await;
    scenario
}

/// Finding 1: the replacement at a reused address must never act on commands meant for its
/// dead predecessor (D35), nor delete a replica its shard still counts (D36).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replaced_in_turn_at_their_old_addresses_keep_every_replica() {
    let mut scenario = start("replace-in-turn", 4).await;
    let originals = scenario.cluster.node_ids();
    for victim in [originals[1], originals[2]] {
        tracing::info!(%victim, "--- kill -9 the node, wipe its data, start a fresh node at its address");
        let replacement = scenario.cluster.replace_node(victim).await;
        tracing::info!(%victim, %replacement, "--- the dead node's replicas are replaced; every voter hosts its replica");
        let status = scenario
            .cluster
            .wait_for_every_shard_hosted(SCENARIO_WAIT)
            .await;
        for shard in &status.shards {
            assert!(
                !shard.voters.contains(&victim.0),
                "shard {} still counts the dead {victim}: {:?}",
                shard.shard_id,
                shard.voters
            );
        }
        scenario.calm().await;
    }
    scenario.finish().await;
}

/// Finding 2: pauses just shorter and just longer than "down after" (3 s), mostly of one
/// node, 1 s apart, must leave no voter that hosts nothing, and the map must say so (D37, D38).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pauses_around_down_after_leave_every_voter_hosting_its_replica() {
    let mut scenario = start("pauses-around-down-after", 8).await;
    let nodes = scenario.cluster.node_ids();
    let pauses = [
        (nodes[2], 3_500),
        (nodes[2], 2_500),
        (nodes[2], 4_500),
        (nodes[3], 5_000),
        (nodes[2], 3_200),
        (nodes[2], 2_800),
        (nodes[2], 4_000),
    ];
    for (victim, pause_ms) in pauses {
        tracing::info!(%victim, pause_ms, "--- SIGSTOP the node around down_after");
        let mut pause = Pause(victim.into());
        scenario.inject(&mut pause).await;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        scenario.heal(&mut pause).await;
        // Shorter than the probation (down_after): the next pause finds it still suspect.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
    tracing::info!("--- quiet: every voter hosts its replica, and the map agrees");
    scenario
        .cluster
        .wait_for_every_shard_hosted(SCENARIO_WAIT)
        .await;
    scenario.finish().await;
}
