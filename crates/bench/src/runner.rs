//! The load phase and the measured run: `concurrency` workers, each with one request in
//! flight, over a shared set of connections. Latency is the time from issuing a call to its
//! answer, recorded in microseconds in per-worker HDR histograms merged at the end.

use crate::keys::{record_key, KeyChooser};
use crate::report::{Latencies, LatencySummary, LoadSummary, RunSummary};
use crate::target::KvTarget;
use crate::workload::{OpKind, Workload};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
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
    errors: u64,
    not_found: u64,
    first_error: Option<String>,
    finished: Instant,
}

/// Runs the workload: a warm-up, then `plan.duration` (or `plan.operations`) measured.
pub async fn run<T: KvTarget>(connections: &[T], plan: RunPlan) -> RunSummary {
    assert!(!connections.is_empty() && plan.concurrency > 0);
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
                let mut stats = WorkerStats {
                    reads: histogram(),
                    updates: histogram(),
                    errors: 0,
                    not_found: 0,
                    first_error: None,
                    finished: Instant::now(),
                };
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
                    let key = record_key(plan.chooser.next_record(&mut rng), plan.key_size);
                    let outcome = match op {
                        OpKind::Read => target.get(key).await,
                        OpKind::Update => {
                            let value = next_value(&buffer, plan.value_size, &mut rng);
                            target.put(key, value).await.map(|()| true)
                        }
                    };
                    let micros = started.elapsed().as_micros() as u64;
                    stats.finished = Instant::now();
                    if !measured {
                        continue;
                    }
                    match outcome {
                        Ok(found) => {
                            let histogram = match op {
                                OpKind::Read => &mut stats.reads,
                                OpKind::Update => &mut stats.updates,
                            };
                            histogram.saturating_record(micros.clamp(1, LATENCY_MICROS_MAX));
                            stats.not_found += u64::from(!found);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            stats.errors += 1;
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
    let (mut error_count, mut not_found, mut first_error) = (0, 0, None);
    let mut finished = measure_from;
    for worker in workers {
        let stats = worker.await.expect("run worker panicked");
        reads.add(&stats.reads).expect("same bounds");
        updates.add(&stats.updates).expect("same bounds");
        error_count += stats.errors;
        not_found += stats.not_found;
        first_error = first_error.or(stats.first_error);
        finished = finished.max(stats.finished);
    }
    let mut all = histogram();
    all.add(&reads).expect("same bounds");
    all.add(&updates).expect("same bounds");
    let duration = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let operations = all.len();
    RunSummary {
        duration_secs: duration,
        operations,
        errors: error_count,
        not_found,
        first_error,
        throughput_ops_per_sec: if duration > 0.0 {
            operations as f64 / duration
        } else {
            0.0
        },
        latency_ms: Latencies {
            all: LatencySummary::from_micros(&all),
            read: LatencySummary::from_micros(&reads),
            update: LatencySummary::from_micros(&updates),
        },
    }
}
