//! Cross-shard transactions under faults (issue 16): the bank workload (Jepsen's bank test)
//! runs beside the recorded register workload while the nemesis kills, pauses and
//! partitions nodes and kills gateways; every snapshot read of all accounts must sum to the
//! opening total. etcd's mutex recipe (a prefix read and a put in one transaction) must never
//! let two clients hold the lock at once.

use cairn_test_harness::bank::Bank;
use cairn_test_harness::nemesis::random_fault;
use cairn_test_harness::{mutex, ClusterSpec, Scenario, SCENARIO_WAIT};
use rand::Rng;
use std::path::Path;
use std::time::Duration;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const SHARDS: u32 = 3;

/// One coordinator, three nodes, two gateways, three shards of three replicas.
async fn start(name: &'static str) -> Scenario {
    let spec = ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(1)
        .nodes(3)
        .gateways(2)
        .shards(SHARDS)
        .fast_failure_detection();
    Scenario::start(name, spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_across_shards_keep_the_total_under_faults() {
    let mut scenario = start("bank").await;
    let bank = Bank::spread(SHARDS, 3, scenario.rng.random());
    bank.open(&scenario.gateways()[0]).await;
    let running = bank.start(scenario.gateways());
    scenario.calm().await;
    // Three faults per round, as in the random-mix scenario: kills, pauses, partitions and
    // slow links of nodes, and gateway kills (a transaction's coordinator dying mid-way).
    for _ in 0..scenario.profile.rounds * 3 {
        let mut fault = random_fault(&scenario.cluster, &mut scenario.rng);
        scenario.inject(fault.as_mut()).await;
        scenario.hold_fault().await;
        scenario.heal(fault.as_mut()).await;
        scenario.cluster.wait_for_every_leader(SCENARIO_WAIT).await;
        scenario.calm().await;
    }
    scenario.cluster.heal();
    scenario.cluster.wait_for_every_leader(SCENARIO_WAIT).await;
    let report = running.finish().await;
    tracing::info!(?report, "--- the bank's clients stopped");
    assert!(
        report.violations.is_empty(),
        "snapshots that saw half a transfer: {:#?}",
        report.violations
    );
    assert!(
        report.transfers_committed > 0 && report.reads_checked > 0,
        "the bank made progress: {report:?}"
    );
    let final_violation = bank.final_violation(&scenario.gateways()[0]).await;
    assert_eq!(final_violation, None, "the final balances");
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_mutex_recipe_never_admits_two_holders() {
    let scenario = start("mutex").await;
    let running = mutex::start(scenario.gateways(), 6, scenario.clock());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = running.finish().await;
    tracing::info!(
        sections = report.sections.len(),
        contended = report.contended,
        failed = report.failed,
        "--- the mutex clients stopped"
    );
    assert_eq!(report.overlap(), None, "two clients held the lock at once");
    assert!(
        report.sections.len() >= 5,
        "the lock was taken only {} times: {report:?}",
        report.sections.len()
    );
    scenario.finish().await;
}
