//! Stopping processes under load (issue 14, D42, D43): every process exits within its
//! `shutdown_grace_ms` of SIGTERM, leadership is handed off on the way out, the history of the
//! clients' operations stays linearizable, and no key's clients are stalled beyond a bound:
//! least of all by the coordinator leader stopping (it stalled writes for 22 s before).

use cairn_test_harness::{longest_stall, ClusterSpec, ProcessId, Role, Scenario, SCENARIO_WAIT};
use std::path::Path;
use std::time::Duration;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
/// Every process's `shutdown_grace_ms` (the default).
const GRACE: Duration = Duration::from_millis(5_000);
/// Past the grace period, the runtime's teardown and the process's exit.
const EXIT_SLACK: Duration = Duration::from_millis(1_000);
/// The longest any key may go without a successful operation while a process stops: a
/// leadership hand-off, or at worst one election timeout (2 s) and the clients' retries.
const STALL_MAX: Duration = Duration::from_secs(5);

async fn start(name: &'static str) -> Scenario {
    let spec = ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(3)
        .nodes(3)
        .gateways(2)
        .shards(3)
        .fast_failure_detection();
    Scenario::start(name, spec).await
}

/// SIGTERMs `id`, asserts that it exits within its bound, starts it again and waits until it
/// serves. Returns how long it took to exit.
async fn stop_and_restart(scenario: &mut Scenario, id: ProcessId) -> Duration {
    tracing::info!(%id, "--- SIGTERM");
    let took = scenario
        .cluster
        .terminate(id, GRACE + EXIT_SLACK * 10)
        .await
        .unwrap_or_else(|| panic!("{id} did not exit after SIGTERM"));
    assert!(
        took <= GRACE + EXIT_SLACK,
        "{id} took {took:?} to exit after SIGTERM (bound {GRACE:?} + {EXIT_SLACK:?})"
    );
    tracing::info!(%id, ?took, "--- exited in time; restart it");
    scenario.cluster.restart(id);
    match id {
        ProcessId::Gateway(number) => {
            scenario
                .cluster
                .gateway_clients(number, SCENARIO_WAIT)
                .await;
        }
        _ => scenario.cluster.wait_for_every_leader(SCENARIO_WAIT).await,
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_of_every_process_under_load() {
    let mut scenario = start("rolling-restart").await;
    let mut processes = scenario.cluster.ids_of(Role::Coordinator);
    processes.extend(scenario.cluster.ids_of(Role::Node));
    processes.extend(scenario.cluster.ids_of(Role::Gateway));
    let mut exits = Vec::new();
    let mut stalls = Vec::new();
    let mut windows = Vec::new();
    for id in processes {
        let from = scenario.now_micros();
        exits.push((id, stop_and_restart(&mut scenario, id).await));
        // A restarted node catches up before the next one stops: two replicas of a shard
        // behind at once would be a quorum loss of the test's own making.
        scenario.calm().await;
        windows.push((id, from, scenario.now_micros()));
    }
    let (_, history) = scenario.finish_with_history().await;
    for (id, from, to) in windows {
        let stall = longest_stall(&history, from, to);
        stalls.push((id, stall));
        assert!(
            stall <= STALL_MAX,
            "while {id} stopped and restarted, a key had no successful operation for {stall:?} \
             (bound {STALL_MAX:?}); exits {exits:?}"
        );
    }
    tracing::info!(?exits, ?stalls, "every process exited within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_coordinator_leader_does_not_stall_the_data_plane() {
    let mut scenario = start("coordinator-leader-sigterm").await;
    let status = scenario
        .cluster
        .cluster_status()
        .await
        .expect("a coordinator answers");
    let leader = ProcessId::Coordinator(status.coordinator_leader_id);
    let from = scenario.now_micros();
    tracing::info!(%leader, "--- SIGTERM the coordinator leader; it stays down");
    let took = scenario
        .cluster
        .terminate(leader, GRACE + EXIT_SLACK * 10)
        .await
        .unwrap_or_else(|| panic!("{leader} did not exit after SIGTERM"));
    assert!(took <= GRACE + EXIT_SLACK, "{leader} took {took:?} to exit");
    tracing::info!("--- the clients go on without it");
    scenario.hold_fault().await;
    scenario.hold_fault().await;
    let to = scenario.now_micros();
    let new_leader = scenario
        .cluster
        .cluster_status()
        .await
        .expect("the remaining coordinators answer")
        .coordinator_leader_id;
    assert_ne!(ProcessId::Coordinator(new_leader), leader);
    tracing::info!(new_leader, "--- restart the old leader");
    scenario.cluster.restart(leader);
    let (_, history) = scenario.finish_with_history().await;
    let stall = longest_stall(&history, from, to);
    assert!(
        stall <= STALL_MAX,
        "a key had no successful operation for {stall:?} after the coordinator leader's SIGTERM \
         (bound {STALL_MAX:?}; it took {took:?} to exit)"
    );
    tracing::info!(?took, ?stall, "the data plane did not stall");
}
