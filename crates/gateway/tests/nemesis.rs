//! Fault-injection scenarios with checked histories (etcd's robustness tests, Jepsen): while
//! clients get, put, compare-and-set, delete and run transactions through the gateways, a
//! nemesis kills, pauses, partitions and slows the cluster's processes. After each scenario
//! the faults are healed, every key is read through every gateway, the whole history must
//! be linearizable, and every replica of every shard must hold the same data
//! (`Scenario::finish`). The faults and the scenario live in the test harness
//! (`cairn_test_harness::nemesis`), so any crate's tests can strike with them.
//!
//! `CAIRN_NEMESIS_PROFILE=soak` runs more rounds of longer faults with more clients; the
//! default, `short`, fits the normal test run (docs/testing.md).

use cairn_test_harness::nemesis::{random_fault, Kill, LinkFaults, Partition, Pause};
use cairn_test_harness::{wait_for, ClusterSpec, ProcessId, Scenario, SCENARIO_WAIT};
use std::path::Path;
use std::time::Duration;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
/// A follower cut off for seconds catches up by one snapshot of a few hundred keys in well
/// under a second; this much longer means it is stuck.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// `coordinators` coordinators, three nodes, two gateways, three shards of three replicas.
async fn start(name: &'static str, coordinators: u64) -> Scenario {
    let spec = ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(coordinators)
        .nodes(3)
        .gateways(2)
        .shards(3)
        .fast_failure_detection();
    Scenario::start(name, spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_leaders_are_killed() {
    let mut scenario = start("leader-kill", 1).await;
    for round in 0..scenario.profile.rounds {
        let victim = scenario.leader_of_key(scenario.key(round)).await;
        scenario.strike(Kill(victim.into())).await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_under_random_kills() {
    let mut scenario = start("random-kills", 1).await;
    // Two kills per round in the short profile too: different nodes, overlapping restarts.
    for _ in 0..scenario.profile.rounds * 2 {
        let mut kill = Kill(scenario.random_node().into());
        scenario.inject(&mut kill).await;
        tokio::time::sleep(scenario.profile.fault / 2).await;
        scenario.heal(&mut kill).await;
        scenario.cluster.wait_for_every_leader(SCENARIO_WAIT).await;
    }
    scenario.calm().await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_leader_is_paused() {
    let mut scenario = start("leader-pause", 1).await;
    for round in 0..scenario.profile.rounds {
        let shard = scenario.shard_of(scenario.key(round));
        let victim = scenario.leader_of_key(scenario.key(round)).await;
        tracing::info!(round, %victim, "--- SIGSTOP the leader of {shard}");
        let mut pause = Pause(victim.into());
        scenario.inject(&mut pause).await;
        scenario
            .wait_for_leader_other_than(
                shard,
                victim,
                "another node to lead while the leader is paused",
            )
            .await;
        scenario.hold_fault().await;
        tracing::info!(
            round,
            %victim,
            "--- SIGCONT: the old leader wakes up believing it leads"
        );
        scenario.heal(&mut pause).await;
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_leader_is_partitioned() {
    let mut scenario = start("leader-partition", 1).await;
    for round in 0..scenario.profile.rounds {
        let key = scenario.key(round);
        let shard = scenario.shard_of(key);
        let victim = scenario.leader_of_key(key).await;
        tracing::info!(
            round,
            %victim,
            "--- cut the leader off from the other nodes; gateways still reach it"
        );
        let mut partition = Partition::from_peers(&scenario.cluster, victim);
        scenario.inject(&mut partition).await;
        scenario
            .wait_for_leader_other_than(shard, victim, "the majority to elect a leader of its own")
            .await;
        scenario.hold_fault().await;
        scenario.heal(&mut partition).await;
        scenario.calm().await;

        let victim = scenario.leader_of_key(key).await;
        tracing::info!(
            round,
            %victim,
            "--- cut the new leader off from everyone (nodes and gateways)"
        );
        let isolate = Partition::isolate(&scenario.cluster, victim);
        scenario.strike(isolate).await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_over_one_way_and_lossy_links() {
    let mut scenario = start("one-way-and-lossy", 1).await;
    for round in 0..scenario.profile.rounds {
        let key = scenario.key(round);
        let victim = scenario.leader_of_key(key).await;
        tracing::info!(
            round,
            %victim,
            "--- one way: the leader hears its followers but cannot reach them"
        );
        let cannot_send = Partition::cannot_send(&scenario.cluster, victim);
        scenario.strike(cannot_send).await;

        tracing::info!(
            round,
            "--- one way: nothing reaches the leader; it still sends"
        );
        let victim = scenario.leader_of_key(key).await;
        let cannot_receive = Partition::cannot_receive(&scenario.cluster, victim);
        scenario.strike(cannot_receive).await;

        tracing::info!(
            round,
            "--- every link to a node slow (20 ms) or lossy (3% of chunks cut)"
        );
        let cluster = &scenario.cluster;
        let sources: Vec<ProcessId> = cluster
            .node_ids()
            .into_iter()
            .map(ProcessId::Node)
            .chain(
                cluster
                    .gateway_numbers()
                    .into_iter()
                    .map(ProcessId::Gateway),
            )
            .collect();
        let links = LinkFaults::slow_and_lossy(cluster, &sources, Duration::from_millis(20), 0.03);
        scenario.strike(links).await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_catches_up_by_snapshot_and_histories_stay_linearizable() {
    let mut scenario = start("snapshot-catch-up", 1).await;
    for round in 0..scenario.profile.rounds {
        let key = scenario.key(round);
        let shard = scenario.shard_of(key);
        let leader = scenario.leader_of_key(key).await;
        let ids = scenario.cluster.node_ids();
        let lagging = *ids.iter().find(|id| **id != leader).expect("a follower");
        tracing::info!(
            round,
            %shard,
            %leader,
            %lagging,
            "--- cut a follower off from everyone"
        );
        let mut isolate = Partition::isolate(&scenario.cluster, lagging);
        scenario.inject(&mut isolate).await;
        let cut_at = scenario
            .cluster
            .status(lagging, shard)
            .await
            .expect("the follower's status");
        let cluster = &scenario.cluster;
        wait_for(
            "the shard to commit past the cut-off follower",
            SCENARIO_WAIT,
            || async move {
                let status = cluster.status(leader, shard).await?;
                (status.committed_index > cut_at.last_log_index + 10).then_some(())
            },
        )
        .await;

        tracing::info!(
            round,
            "--- snapshot and purge the log on the connected replicas"
        );
        for id in ids.iter().filter(|id| **id != lagging) {
            cluster
                .trigger_snapshot(*id, shard, true)
                .await
                .expect("snapshot");
        }
        let current_leader = cluster.wait_for_leader(shard, SCENARIO_WAIT).await;
        let purged = wait_for(
            "the leader to purge past the follower's log",
            SCENARIO_WAIT,
            || async move {
                let status = cluster.status(current_leader, shard).await?;
                (status.purged_index > cut_at.last_log_index).then_some(status.purged_index)
            },
        )
        .await;
        scenario.hold_fault().await;

        tracing::info!(
            round,
            purged,
            "--- heal: the follower needs the snapshot, its log is gone"
        );
        scenario.heal(&mut isolate).await;
        let healed_at = std::time::Instant::now();
        let cluster = &scenario.cluster;
        let status = wait_for(
            "the follower to install a snapshot and catch up",
            CATCH_UP_WAIT,
            || async move {
                let leader = cluster.status(current_leader, shard).await?;
                let follower = cluster.status(lagging, shard).await?;
                (follower.snapshot_index >= purged
                    && follower.applied_index >= leader.committed_index.min(purged))
                .then_some(follower)
            },
        )
        .await;
        tracing::info!(elapsed = ?healed_at.elapsed(), "caught up by snapshot");
        assert!(
            status.snapshot_index >= purged && status.snapshot_index > cut_at.snapshot_index,
            "{lagging} caught up by snapshot: snapshot index {} (before {}), purged {purged}",
            status.snapshot_index,
            cut_at.snapshot_index
        );
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_coordinator_leader_dies_during_rebalancing() {
    let mut scenario = start("coordinator-loss-rebalancing", 3).await;
    tracing::info!("--- a fourth node joins: the coordinators start moving replicas to it");
    let new_node = scenario.cluster.add_node().await;
    let cluster = &scenario.cluster;
    let leader = wait_for("a replica move in flight", SCENARIO_WAIT, || async move {
        let status = cluster.cluster_status().await?;
        (status.moves_in_flight > 0 || status.shards.iter().any(|s| !s.learners.is_empty()))
            .then_some(status.coordinator_leader_id)
    })
    .await;
    tracing::info!(leader, "--- kill -9 the coordinator leader mid-move");
    scenario.strike(Kill(ProcessId::Coordinator(leader))).await;

    let cluster = &scenario.cluster;
    wait_for(
        "the new node to hold replicas with no move pending",
        SCENARIO_WAIT,
        || async move {
            let status = cluster.cluster_status().await?;
            let held = status
                .shards
                .iter()
                .filter(|s| s.voters.contains(&new_node.0))
                .count();
            (held > 0
                && status.moves_in_flight == 0
                && status
                    .shards
                    .iter()
                    .all(|s| s.learners.is_empty() && s.voters.len() == 3))
            .then_some(())
        },
    )
    .await;
    scenario.calm().await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_a_gateway_dies_mid_request() {
    let mut scenario = start("gateway-kill", 1).await;
    for round in 0..scenario.profile.rounds {
        tracing::info!(round, "--- kill -9 gateway 1 with requests in flight");
        scenario.strike(Kill(ProcessId::Gateway(1))).await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_under_a_random_mix_of_faults() {
    let mut scenario = start("random-mix", 1).await;
    for _ in 0..scenario.profile.rounds * 3 {
        let mut fault = random_fault(&scenario.cluster, &mut scenario.rng);
        scenario.inject(fault.as_mut()).await;
        scenario.hold_fault().await;
        scenario.heal(fault.as_mut()).await;
        scenario.cluster.wait_for_every_leader(SCENARIO_WAIT).await;
        scenario.calm().await;
    }
    scenario.finish().await;
}
