//! The timestamp oracle under faults, with real coordinator processes: timestamps stay unique
//! and rise in real time across kill -9 of the leader, a leader paused (SIGSTOP) until another
//! leads, a coordinator restarted in the same term, and a clock stepped backwards and forwards
//! (libfaketime, Debian package `faketime`).
//!
//! Every answered request is recorded with when it was sent and answered. The check: no two
//! answers overlap, and a request sent after another was answered got higher timestamps.

use cairn_proto::coordinator::v1 as pb;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use cairn_test_harness::{wait_for, Cluster, ClusterSpec, ProcessId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COORDINATOR: &str = env!("CARGO_BIN_EXE_cairn-coordinator");
const WAIT: Duration = Duration::from_secs(60);
/// Short Raft timing so that a lost leader is replaced quickly.
const COORDINATOR_ENV: &[(&str, &str)] = &[
    ("CAIRN_RAFT__HEARTBEAT_INTERVAL_MS", "100"),
    ("CAIRN_RAFT__ELECTION_TIMEOUT_MIN_MS", "500"),
    ("CAIRN_RAFT__ELECTION_TIMEOUT_MAX_MS", "1000"),
];

/// One answered request.
#[derive(Clone, Copy, Debug)]
struct Observation {
    sent: Instant,
    answered: Instant,
    first: u64,
    count: u64,
}

impl Observation {
    fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

#[derive(Clone, Default)]
struct History(Arc<Mutex<Vec<Observation>>>);

impl History {
    fn record(&self, observation: Observation) {
        self.0.lock().unwrap().push(observation);
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn highest(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(Observation::last)
            .max()
            .unwrap_or(0)
    }

    /// Unique: no two answers share a timestamp. Real-time order: an answer to a request
    /// sent after another request was answered is above it.
    fn check(&self) {
        let mut history = self.0.lock().unwrap().clone();
        assert!(!history.is_empty(), "no timestamp was handed out");
        history.sort_by_key(|o| o.first);
        for pair in history.windows(2) {
            assert!(
                pair[0].last() < pair[1].first,
                "overlapping answers: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
        let mut by_answer = history.clone();
        by_answer.sort_by_key(|o| o.answered);
        let mut by_send = history;
        by_send.sort_by_key(|o| o.sent);
        let (mut answered, mut highest) = (0, 0);
        for later in &by_send {
            while answered < by_answer.len() && by_answer[answered].answered < later.sent {
                highest = highest.max(by_answer[answered].last());
                answered += 1;
            }
            assert!(
                later.first > highest,
                "{later:?} was sent after timestamp {highest} was answered, and is not above it"
            );
        }
    }
}

async fn client(
    address: &str,
    timeout: Duration,
) -> Option<CoordinatorClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .ok()?;
    Some(CoordinatorClient::new(channel))
}

/// Asks one coordinator for `count` timestamps; records and returns the answer.
async fn ask(address: &str, count: u32, timeout: Duration, history: &History) -> Option<u64> {
    let mut client = client(address, timeout).await?;
    let sent = Instant::now();
    let answer = client
        .get_timestamps(pb::GetTimestampsRequest { count })
        .await
        .ok()?
        .into_inner();
    let answered = Instant::now();
    assert_eq!(answer.count, count, "the oracle answered another count");
    history.record(Observation {
        sent,
        answered,
        first: answer.first,
        count: u64::from(count),
    });
    Some(answer.first)
}

fn addresses(cluster: &Cluster, ids: &[u64]) -> Vec<String> {
    ids.iter()
        .map(|id| cluster.coordinator(*id).address.clone())
        .collect()
}

/// The coordinator that hands out timestamps now.
async fn oracle_leader(cluster: &Cluster, ids: &[u64], history: &History) -> u64 {
    wait_for(
        "a coordinator handing out timestamps",
        WAIT,
        || async move {
            for id in ids {
                let address = cluster.coordinator(*id).address.clone();
                if ask(&address, 1, Duration::from_secs(2), history)
                    .await
                    .is_some()
                {
                    return Some(*id);
                }
            }
            None
        },
    )
    .await
}

/// Clients asking every coordinator in turn for timestamps until stopped.
fn start_load(
    addresses: Vec<String>,
    history: History,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|worker| {
            let (addresses, history, stop) = (addresses.clone(), history.clone(), stop.clone());
            tokio::spawn(async move {
                let mut turn = worker;
                while !stop.load(Ordering::Relaxed) {
                    let address = &addresses[turn % addresses.len()];
                    let count = 1 + (turn % 7) as u32;
                    if ask(address, count, Duration::from_secs(1), &history)
                        .await
                        .is_none()
                    {
                        turn += 1;
                    }
                }
            })
        })
        .collect()
}

async fn wait_for_progress(history: &History, what: &str) {
    let before = history.len();
    wait_for(what, WAIT, || async move {
        (history.len() > before + 20).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_stay_unique_and_ordered_through_leader_kill_and_pause() {
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(3)
        .nodes(0)
        .shards(1)
        .replication_factor(1)
        .coordinator_env(COORDINATOR_ENV)
        .start()
        .await;
    let ids = [1, 2, 3];
    let history = History::default();
    let stop = Arc::new(AtomicBool::new(false));
    let leader = oracle_leader(&cluster, &ids, &history).await;
    let load = start_load(addresses(&cluster, &ids), history.clone(), stop.clone());
    wait_for_progress(&history, "timestamps under load").await;

    tracing::info!("--- kill -9 the oracle's leader (coordinator {leader}), then restart it");
    cluster.kill(ProcessId::Coordinator(leader));
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    let next = oracle_leader(&cluster, &others, &history).await;
    wait_for_progress(&history, "timestamps from the new leader").await;
    cluster.restart(ProcessId::Coordinator(leader));
    wait_for_progress(&history, "timestamps after the restart").await;

    tracing::info!("--- SIGSTOP the oracle's leader (coordinator {next}) until another leads");
    let paused = oracle_leader(&cluster, &ids, &history).await;
    cluster.pause(ProcessId::Coordinator(paused));
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != paused).collect();
    let successor = oracle_leader(&cluster, &others, &history).await;
    wait_for_progress(&history, "timestamps from the successor").await;
    // A request sent to the paused leader now, after its successor answered: when it
    // resumes it must not answer with a timestamp from its old window (fencing).
    let paused_address = cluster.coordinator(paused).address.clone();
    let stale = {
        let history = history.clone();
        tokio::spawn(
            async move { ask(&paused_address, 1, Duration::from_secs(30), &history).await },
        )
    };
    // Let the request reach the paused process's socket before it resumes.
    wait_for_progress(&history, "more timestamps while the old leader is paused").await;
    cluster.resume(ProcessId::Coordinator(paused));
    let stale_answer = stale.await.expect("request task");
    tracing::info!(
        ?stale_answer,
        successor,
        "the resumed leader's answer to a request sent while it was paused"
    );
    wait_for_progress(&history, "timestamps after the old leader resumed").await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    tracing::info!(
        answers = history.len(),
        "--- checking uniqueness and real-time order"
    );
    history.check();
}

/// The file libfaketime reads the clock's offset from, for one coordinator.
struct SteppedClock {
    file: PathBuf,
}

impl SteppedClock {
    fn step(&self, offset: &str) {
        std::fs::write(&self.file, offset).expect("faketime offset file");
        tracing::info!(offset, "stepped the coordinator's wall clock");
    }
}

fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .expect("/usr/lib")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|path| path.exists());
    found
        .expect("libfaketime.so.1 (Debian package faketime; scripts/lib/prepare.sh installs it)")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_rise_when_the_clock_steps_back_and_across_same_term_restarts() {
    let clock_dir = tempfile::tempdir().expect("temp dir");
    let clock = SteppedClock {
        file: clock_dir.path().join("offset"),
    };
    clock.step("+0");
    let preload = libfaketime();
    let file = clock.file.display().to_string();
    let mut env: Vec<(&str, &str)> = COORDINATOR_ENV.to_vec();
    env.extend([
        ("LD_PRELOAD", preload.as_str()),
        ("FAKETIME_TIMESTAMP_FILE", file.as_str()),
        // Re-read the offset on every clock read, and leave the monotonic clock (Raft's
        // timers, the lease) alone: only the wall clock steps.
        ("FAKETIME_NO_CACHE", "1"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]);
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(1)
        .nodes(0)
        .shards(1)
        .replication_factor(1)
        .coordinator_env(&env)
        .start()
        .await;
    let history = History::default();
    let address = cluster.coordinator(1).address.clone();
    let ask_some = |history: History, address: String| async move {
        for count in [1, 5, 100] {
            wait_for("a timestamp", WAIT, || {
                let (history, address) = (history.clone(), address.clone());
                async move { ask(&address, count, Duration::from_secs(2), &history).await }
            })
            .await;
        }
    };
    ask_some(history.clone(), address.clone()).await;
    let before = history.highest();

    tracing::info!("--- the wall clock steps back an hour");
    clock.step("-3600s");
    ask_some(history.clone(), address.clone()).await;
    assert!(history.highest() > before);

    tracing::info!("--- kill -9 and restart the only coordinator, its clock still an hour behind");
    // A single coordinator restarted with its vote on disk leads the same term again.
    let before_restart = history.highest();
    cluster.restart(ProcessId::Coordinator(1));
    ask_some(history.clone(), address.clone()).await;
    assert!(history.highest() > before_restart);

    tracing::info!(
        "--- the wall clock jumps a day forward, then back to real time, with a restart"
    );
    clock.step("+86400s");
    ask_some(history.clone(), address.clone()).await;
    let after_jump = history.highest();
    assert!(
        (after_jump >> 12) > (before_restart >> 12) + 80_000_000,
        "the physical part follows a clock that jumps forward"
    );
    clock.step("+0");
    cluster.restart(ProcessId::Coordinator(1));
    ask_some(history.clone(), address.clone()).await;
    assert!(history.highest() > after_jump);
    history.check();
}
