//! The load phase and the measured run: `concurrency` workers, each with one request in
//! flight, over a shared set of connections. Latency is the time from issuing a call to its
//! answer, recorded in microseconds in per-worker HDR histograms merged at the end.

use crate::keys::{record_key, KeyChooser};
use crate::report::{Latencies, LatencySummary, LoadSummary, RunSummary, TxnSummary};
use crate::target::{ErrorKind, KvTarget, TargetError};
use crate::transfer::{transfer, PairChooser, Tally, TXN_RUNS_MAX};
use crate::workload::{OpKind, Workload};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Highest latency the histograms track exactly; slower calls are recorded as this.
const LATENCY_MICROS_MAX: u64 = 60_000_000;
/// Interval of the progress line.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What one measured run does.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub workload: Workload,
    pub chooser: KeyChooser,
    pub key_size: usize,
    pub value_size: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub operations: Option<u64>,
    pub seed: u64,
    /// Pairs of records on different shards: needed by the transactional workload (T).
    pub pairs: Option<PairChooser>,
    /// Prefix of the progress line on stderr; `None` prints nothing.
    pub progress: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, 3).expect("valid histogram bounds")
}

/// A value of `value_size` bytes from a random window of the worker's buffer, so values are
/// incompressible and differ between writes.
fn next_value(buffer: &[u8], value_size: usize, rng: &mut SmallRng) -> Vec<u8> {
    let offset = rng.random_range(0..=buffer.len() - value_size);
    buffer[offset..offset + value_size].to_vec()
}

fn value_buffer(value_size: usize, rng: &mut SmallRng) -> Vec<u8> {
    let mut buffer = vec![0u8; value_size * 2];
    rng.fill_bytes(&mut buffer);
    buffer
}

/// Prints `label elapsed ops rate errors` on one line of stderr until dropped.
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: Option<String>, done: Arc<AtomicU64>, errors: Arc<AtomicU64>) -> Self {
        let Some(label) = label else {
            return Self { task: None };
        };
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last = 0;
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let now = done.load(Ordering::Relaxed);
                let rate = (now - last) as f64 / PROGRESS_INTERVAL.as_secs_f64();
                last = now;
                eprint!(
                    "\r{label} {:>5.0}s {:>10} ops {:>9.0} ops/s {:>6} errors   ",
                    started.elapsed().as_secs_f64(),
                    now,
                    rate,
                    errors.load(Ordering::Relaxed)
                );
                let _ = std::io::stderr().flush();
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            eprintln!();
        }
    }
}

/// Writes records `0..record_count` once each, spread over `concurrency` workers.
pub async fn load<T: KvTarget>(
    connections: &[T],
    record_count: u64,
    key_size: usize,
    value_size: usize,
    concurrency: usize,
    seed: u64,
    progress: Option<String>,
) -> LoadSummary {
    assert!(!connections.is_empty() && concurrency > 0);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(progress, done.clone(), errors.clone());
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let target = connections[worker % connections.len()].clone();
            let (done, errors) = (done.clone(), errors.clone());
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed ^ (worker as u64) << 20);
                let buffer = value_buffer(value_size, &mut rng);
                let mut record = worker as u64;
                while record < record_count {
                    let value = next_value(&buffer, value_size, &mut rng);
                    match target.put(record_key(record, key_size), value).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                    record += concurrency as u64;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("load worker panicked");
    }
    let duration = started.elapsed().as_secs_f64();
    let records = done.load(Ordering::Relaxed);
    LoadSummary {
        records,
        errors: errors.load(Ordering::Relaxed),
        duration_secs: duration,
        throughput_ops_per_sec: records as f64 / duration,
    }
}

struct WorkerStats {
    reads: Histogram<u64>,
    updates: Histogram<u64>,
    txns: Histogram<u64>,
    errors: u64,
    errors_by_kind: BTreeMap<ErrorKind, u64>,
    not_found: u64,
    tally: Tally,
    first_error: Option<String>,
    finished: Instant,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            reads: histogram(),
            updates: histogram(),
            txns: histogram(),
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            not_found: 0,
            tally: Tally::default(),
            first_error: None,
            finished: Instant::now(),
        }
    }
}

/// Issues one operation of the plan's workload: `Ok(found)` (always true but for a read of
/// a missing key), with what a transaction's runs met added to `tally`.
async fn one_op<T: KvTarget>(
    target: &T,
    plan: &RunPlan,
    op: OpKind,
    buffer: &[u8],
    rng: &mut SmallRng,
    tally: &mut Tally,
) -> Result<bool, TargetError> {
    match op {
        OpKind::Read => {
            let key = record_key(plan.chooser.next_record(rng), plan.key_size);
            target.get(key).await
        }
        OpKind::Update => {
            let key = record_key(plan.chooser.next_record(rng), plan.key_size);
            let value = next_value(buffer, plan.value_size, rng);
            target.put(key, value).await.map(|()| true)
        }
        OpKind::Txn => {
            let pairs = plan
                .pairs
                .as_ref()
                .expect("a transactional plan has a pair chooser");
            let Some((a, b)) = pairs.next_pair(rng) else {
                return Err(TargetError {
                    system: "bench",
                    kind: ErrorKind::NoCrossShardPair,
                    message: format!(
                        "no two of the {} records live on different shards of {}",
                        pairs.record_count, pairs.shard_count
                    ),
                });
            };
            let keys = (record_key(a, plan.key_size), record_key(b, plan.key_size));
            let values = (
                next_value(buffer, plan.value_size, rng),
                next_value(buffer, plan.value_size, rng),
            );
            transfer(target, keys, values, tally).await.map(|()| true)
        }
    }
}

/// Runs the workload: a warm-up, then `plan.duration` (or `plan.operations`) measured.
///
/// # Panics
/// When the workload is transactional and the plan has no pair chooser.
pub async fn run<T: KvTarget>(connections: &[T], plan: RunPlan) -> RunSummary {
    assert!(!connections.is_empty() && plan.concurrency > 0);
    assert!(
        !plan.workload.is_transactional() || plan.pairs.is_some(),
        "workload {} needs a pair chooser",
        plan.workload.name()
    );
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start(plan.progress.clone(), done.clone(), errors.clone());
    let measure_from = Instant::now() + plan.warmup;
    let end = measure_from + plan.duration;
    let plan = Arc::new(plan);
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|worker| {
            let target = connections[worker % connections.len()].clone();
            let plan = plan.clone();
            let (done, errors, issued) = (done.clone(), errors.clone(), issued.clone());
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(plan.seed.wrapping_add(worker as u64));
                let buffer = value_buffer(plan.value_size, &mut rng);
                let mut stats = WorkerStats::new();
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let measured = started >= measure_from;
                    if measured {
                        if let Some(max) = plan.operations {
                            if issued.fetch_add(1, Ordering::Relaxed) >= max {
                                break;
                            }
                        }
                    }
                    let op = plan.workload.next_op(&mut rng);
                    let mut tally = Tally::default();
                    let outcome = one_op(&target, &plan, op, &buffer, &mut rng, &mut tally).await;
                    let micros = started.elapsed().as_micros() as u64;
                    stats.finished = Instant::now();
                    if !measured {
                        continue;
                    }
                    stats.tally.compare_failures += tally.compare_failures;
                    stats.tally.conflicts += tally.conflicts;
                    match outcome {
                        Ok(found) => {
                            let histogram = match op {
                                OpKind::Read => &mut stats.reads,
                                OpKind::Update => &mut stats.updates,
                                OpKind::Txn => &mut stats.txns,
                            };
                            histogram.saturating_record(micros.clamp(1, LATENCY_MICROS_MAX));
                            stats.not_found += u64::from(!found);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            stats.errors += 1;
                            *stats.errors_by_kind.entry(error.kind).or_default() += 1;
                            errors.fetch_add(1, Ordering::Relaxed);
                            stats.first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
                stats
            })
        })
        .collect();

    let mut reads = histogram();
    let mut updates = histogram();
    let mut txns = histogram();
    let (mut error_count, mut not_found, mut first_error) = (0, 0, None);
    let mut errors_by_kind: BTreeMap<ErrorKind, u64> = BTreeMap::new();
    let mut tally = Tally::default();
    let mut finished = measure_from;
    for worker in workers {
        let stats = worker.await.expect("run worker panicked");
        reads.add(&stats.reads).expect("same bounds");
        updates.add(&stats.updates).expect("same bounds");
        txns.add(&stats.txns).expect("same bounds");
        error_count += stats.errors;
        for (kind, count) in stats.errors_by_kind {
            *errors_by_kind.entry(kind).or_default() += count;
        }
        tally.compare_failures += stats.tally.compare_failures;
        tally.conflicts += stats.tally.conflicts;
        not_found += stats.not_found;
        first_error = first_error.or(stats.first_error);
        finished = finished.max(stats.finished);
    }
    let mut all = histogram();
    all.add(&reads).expect("same bounds");
    all.add(&updates).expect("same bounds");
    all.add(&txns).expect("same bounds");
    let duration = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let operations = all.len();
    RunSummary {
        duration_secs: duration,
        operations,
        errors: error_count,
        errors_by_kind: errors_by_kind
            .into_iter()
            .map(|(kind, count)| (kind.name().to_string(), count))
            .collect(),
        not_found,
        first_error,
        throughput_ops_per_sec: if duration > 0.0 {
            operations as f64 / duration
        } else {
            0.0
        },
        txn: plan.pairs.as_ref().map(|pairs| TxnSummary {
            shard_count: pairs.shard_count,
            committed: txns.len(),
            compare_failures: tally.compare_failures,
            conflicts: tally.conflicts,
            runs_max: TXN_RUNS_MAX,
        }),
        latency_ms: Latencies {
            all: LatencySummary::from_micros(&all),
            read: LatencySummary::from_micros(&reads),
            update: LatencySummary::from_micros(&updates),
            txn: LatencySummary::from_micros(&txns),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyDistribution;
    use crate::memory_target::MemoryTarget;

    fn plan(workload: Workload, shard_count: Option<u32>) -> RunPlan {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 100);
        RunPlan {
            workload,
            pairs: shard_count.map(|shard_count| PairChooser {
                chooser: chooser.clone(),
                record_count: 100,
                key_size: 16,
                shard_count,
            }),
            chooser,
            key_size: 16,
            value_size: 8,
            concurrency: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(5),
            operations: Some(50),
            seed: 1,
            progress: None,
        }
    }

    #[tokio::test]
    async fn transactions_are_measured_and_tallied() {
        // One worker: no race but the five arranged ones.
        let target = MemoryTarget::interfered(5);
        let plan = RunPlan {
            concurrency: 1,
            ..plan(Workload::T, Some(3))
        };
        let summary = run(std::slice::from_ref(&target), plan).await;
        assert_eq!(summary.errors, 0, "{:?}", summary.first_error);
        assert_eq!(summary.operations, 50);
        let txn = summary.txn.expect("a transactional summary");
        assert_eq!(txn.committed, 50);
        assert_eq!(txn.compare_failures, 5);
        assert_eq!(txn.shard_count, 3);
        assert!(summary.latency_ms.txn.is_some());
        assert!(summary.latency_ms.read.is_none() && summary.latency_ms.update.is_none());
    }

    #[tokio::test]
    async fn refused_transactions_are_counted_by_kind_not_fatal() {
        let target = MemoryTarget::refusing(ErrorKind::CrossShardTxn);
        let summary = run(&[target], plan(Workload::T, Some(3))).await;
        assert_eq!(summary.operations, 0);
        assert_eq!(summary.errors, 50);
        assert_eq!(summary.errors_by_kind.get("cross_shard_txn"), Some(&50));
        assert_eq!(summary.throughput_ops_per_sec, 0.0);
        assert!(summary.latency_ms.all.is_none());
        assert!(summary
            .first_error
            .is_some_and(|error| error.contains("cross_shard_txn")));
    }

    #[tokio::test]
    async fn other_workloads_have_no_transaction_summary() {
        let summary = run(&[MemoryTarget::default()], plan(Workload::W, None)).await;
        assert_eq!(summary.operations, 50);
        assert!(summary.txn.is_none());
        assert!(summary.errors_by_kind.is_empty());
    }
}
