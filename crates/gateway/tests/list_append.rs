//! Multi-key transactions checked Elle-style (issue 16): concurrent clients read lists and
//! append to them in transactions over keys of every shard, through both gateways, while a
//! nemesis strikes twice; the recorded history must show no anomaly (no dependency cycle, no
//! aborted or intermediate read, no lost or duplicated append, no stale read). See
//! `cairn_test_harness::list_append` for the workload and `cairn_linearizability` for the
//! checker.
//!
//! `CAIRN_NEMESIS_SEED` replays the random choices of a run (the fault and the clients').

use cairn_linearizability::Outcome;
use cairn_test_harness::list_append::{
    assert_no_anomaly, keys_over_shards, read_every_list, shards_of, ListAppend,
};
use cairn_test_harness::nemesis::random_fault;
use cairn_test_harness::workload::Clock;
use cairn_test_harness::ClusterSpec;
use rand::SeedableRng;
use std::path::Path;
use std::time::Duration;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 3;
/// Keys: few, so that transactions contend; two per shard.
const KEYS: usize = 6;
const CLIENTS: u64 = 6;
const FAULTS: usize = 2;
/// Quiet time before the first fault and after each heal.
const CALM: Duration = Duration::from_millis(1_500);
/// How long each fault lasts; longer than an election timeout.
const FAULT: Duration = Duration::from_millis(2_500);
/// Committed transactions over two shards or more the run must reach, or it showed nothing.
const CROSS_SHARD_COMMITS_MIN: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_append_transactions_across_shards_show_no_anomaly_under_faults() {
    let seed = match std::env::var("CAIRN_NEMESIS_SEED") {
        Ok(seed) => seed.parse().expect("CAIRN_NEMESIS_SEED is a u64"),
        Err(_) => rand::random(),
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = ClusterSpec::new(Path::new(GATEWAY))
        .nodes(3)
        .gateways(2)
        .shards(SHARDS)
        .fast_failure_detection()
        .network_faults()
        .start()
        .await;
    tracing::info!("--- wait for every shard's leader; CAIRN_NEMESIS_SEED={seed} replays the run");
    cluster.wait_for_every_leader(WAIT).await;
    let mut gateways = Vec::new();
    for number in cluster.gateway_numbers() {
        gateways.push(cluster.gateway_clients(number, WAIT).await.0);
    }

    let keys = keys_over_shards("list/", KEYS, SHARDS);
    tracing::info!(
        ?keys,
        "--- {CLIENTS} clients read and append in transactions"
    );
    let clock = Clock::new();
    let running = ListAppend {
        keys: keys.clone(),
        clients: CLIENTS,
        keys_per_txn_max: 3,
        seed,
    }
    .start(&gateways, clock);
    tokio::time::sleep(CALM).await;
    for _ in 0..FAULTS {
        let mut fault = random_fault(&cluster, &mut rng);
        tracing::info!(?fault, "--- the nemesis strikes");
        fault.inject(&mut cluster).await;
        tokio::time::sleep(FAULT).await;
        tracing::info!(?fault, "--- heal");
        fault.heal(&mut cluster).await;
        cluster.wait_for_every_leader(WAIT).await;
        tokio::time::sleep(CALM).await;
    }

    tracing::info!("--- heal, stop the clients, read every list through every gateway");
    cluster.heal();
    cluster.wait_for_every_leader(WAIT).await;
    let finished = running.finish().await;
    let mut history = finished.history;
    let count = |wanted: fn(&Outcome) -> bool| {
        history
            .iter()
            .filter(|transaction| wanted(&transaction.outcome))
            .count()
    };
    let committed = count(|o| matches!(o, Outcome::Committed { .. }));
    let aborted = count(|o| *o == Outcome::Aborted);
    let unknown = count(|o| *o == Outcome::Unknown);
    let cross_shard = history
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Committed { .. }))
        .filter(|t| shards_of(t, SHARDS).len() > 1)
        .count();
    tracing::info!(
        committed,
        aborted,
        unknown,
        cross_shard,
        errors = ?finished.errors,
        "--- the clients stopped"
    );
    history.extend(read_every_list(&gateways, &keys, clock, 1_000).await);

    tracing::info!(transactions = history.len(), "--- check the history");
    let report = assert_no_anomaly(&history, cluster.root(), "list-append");
    tracing::info!(%report, "history checked");
    assert!(
        cross_shard >= CROSS_SHARD_COMMITS_MIN,
        "only {cross_shard} cross-shard transactions committed ({committed} committed, \
         {aborted} aborted, {unknown} unknown; errors {:?})",
        finished.errors
    );
}
