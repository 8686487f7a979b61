//! The timestamp oracle: the coordinator leader hands out unique, rising timestamps, which
//! become the revisions of writes and the snapshot revisions of reads (PD's TSO).
//!
//! The decisions are in [`crate::timestamp_allocator`]; this module does the I/O around them:
//!
//! 1. **On every leadership it holds**, including a leader restarted in the same term (its
//!    memory is new, so it always begins again), it reads the stored window linearizably,
//!    starts above it and persists a new window through the group's Raft log with a
//!    compare-and-set, before answering anything.
//! 2. **It hands out timestamps** from memory while they stay below the persisted window,
//!    extending the window in the background when it nears its end, and in the foreground
//!    (the request waits for one Raft write) only when a burst or a clock jump passes it.
//! 3. **It fences itself before every answer**: after allocating, it confirms that it still
//!    leads, by its lease (no round trip while the lease holds) or a ReadIndex round, and that
//!    the term did not change since the allocation. A deposed leader cannot confirm, so a
//!    timestamp it allocated is never handed out after its successor handed out a higher one.
//!
//! Nothing here caches timestamps ahead of a request: a timestamp is allocated after the
//! request arrives, which is what lets callers use it to order events in real time.

use crate::error::{CoordinatorError, Result};
use crate::metadata::MetadataStore;
use crate::timestamp_allocator::{Allocator, Blocked, Clock, BATCH_MAX};
use cairn_telemetry::prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use cairn_types::Revision;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One leadership's oracle state.
struct Leadership {
    term: u64,
    /// The cluster's creation time (Unix ms): timestamps count milliseconds from it.
    epoch_unix_ms: u64,
    allocator: Allocator,
    /// The stored window's revision, for the next compare-and-set.
    window_revision: u64,
}

pub struct OracleMetrics {
    requests: IntCounter,
    timestamps: IntCounter,
    batch_size: Histogram,
    latency: Histogram,
    window_writes: IntCounter,
    fence_failures: IntCounter,
}

impl OracleMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric definition");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric names are unique");
            counter
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric definition");
            registry
                .register(Box::new(histogram.clone()))
                .expect("metric names are unique");
            histogram
        };
        Self {
            requests: counter(
                "cairn_tso_requests_total",
                "Timestamp requests answered by this coordinator as oracle leader",
            ),
            timestamps: counter(
                "cairn_tso_timestamps_total",
                "Timestamps handed out by this coordinator",
            ),
            batch_size: histogram(
                "cairn_tso_batch_size",
                "Timestamps per request (one request carries the waiters of a whole node or gateway)",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0],
            ),
            latency: histogram(
                "cairn_tso_request_seconds",
                "Time from a timestamp request's arrival to its answer, fencing included",
                vec![
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
                ],
            ),
            window_writes: counter(
                "cairn_tso_window_writes_total",
                "Windows persisted through the coordinator's Raft log",
            ),
            fence_failures: counter(
                "cairn_tso_fence_failures_total",
                "Allocations discarded because leadership could not be confirmed afterwards",
            ),
        }
    }
}

pub struct TimestampOracle {
    metadata: MetadataStore,
    clock: Arc<dyn Clock>,
    state: Mutex<Option<Leadership>>,
    /// Serialises window writes (begin, foreground and background extension).
    persisting: tokio::sync::Mutex<()>,
    renewing: AtomicBool,
    metrics: OracleMetrics,
}

impl TimestampOracle {
    pub fn new(
        metadata: MetadataStore,
        clock: Arc<dyn Clock>,
        metrics: OracleMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            metadata,
            clock,
            state: Mutex::new(None),
            persisting: tokio::sync::Mutex::new(()),
            renewing: AtomicBool::new(false),
            metrics,
        })
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Option<Leadership>> {
        self.state.lock().expect("oracle state lock poisoned")
    }

    fn now_ms(&self, epoch_unix_ms: u64) -> u64 {
        self.clock.now_unix_ms().saturating_sub(epoch_unix_ms)
    }

    /// The current term if this coordinator leads, else `NotLeader`.
    fn leading_term(&self) -> Result<u64> {
        let replica = self.metadata.replica();
        let status = replica.status();
        if !replica.is_leader() {
            return Err(CoordinatorError::NotLeader {
                leader_id: status.leader.map(|id| id.0),
                leader_address: None,
            });
        }
        Ok(status.term)
    }

    /// Hands out `count` consecutive timestamps.
    pub async fn timestamps(self: &Arc<Self>, count: u64) -> Result<Range<Revision>> {
        if !(1..=BATCH_MAX).contains(&count) {
            return Err(CoordinatorError::Invalid {
                field: "count",
                reason: format!("must be 1 to {BATCH_MAX}"),
            });
        }
        let started = Instant::now();
        let term = self.leading_term()?;
        let allocated = loop {
            match self.try_allocate(term, count) {
                Some(Ok(range)) => break range,
                Some(Err(Blocked::NeedsWindow { window_end })) => {
                    self.persist_window(term, window_end).await?
                }
                None => self.begin(term).await?,
            }
        };
        // Fencing: confirm, after allocating, that this coordinator still leads in the term
        // it allocated in. A leader deposed since cannot, so it never answers.
        let fenced = self.metadata.replica().linearizable_barrier().await;
        if fenced.is_err() || self.leading_term().ok() != Some(term) {
            self.metrics.fence_failures.inc();
            self.forget(term);
            fenced?;
            return Err(CoordinatorError::Unavailable(format!(
                "oracle leadership of term {term} ended while answering"
            )));
        }
        self.maybe_renew(term);
        self.metrics.requests.inc();
        self.metrics.timestamps.inc_by(count);
        self.metrics.batch_size.observe(count as f64);
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        Ok(allocated)
    }

    /// `None` when this leadership has not begun (or another one has).
    fn try_allocate(&self, term: u64, count: u64) -> Option<Result<Range<Revision>, Blocked>> {
        let mut state = self.lock_state();
        let leadership = state.as_mut().filter(|l| l.term == term)?;
        let now = self.now_ms(leadership.epoch_unix_ms);
        Some(leadership.allocator.allocate(count, now))
    }

    fn forget(&self, term: u64) {
        let mut state = self.lock_state();
        if state.as_ref().is_some_and(|l| l.term <= term) {
            *state = None;
        }
    }

    /// Begins the oracle's part of leadership `term`: start above the stored window and
    /// persist a new one.
    async fn begin(&self, term: u64) -> Result<()> {
        let _persisting = self.persisting.lock().await;
        if self.lock_state().as_ref().is_some_and(|l| l.term == term) {
            return Ok(());
        }
        let cluster = self.metadata.cluster_info().await?.ok_or_else(|| {
            CoordinatorError::Unavailable("the cluster identity is not created yet".into())
        })?;
        let (stored_window, revision) = self.metadata.timestamp_window().await?;
        let now = self.now_ms(cluster.created_at_ms);
        let (mut allocator, window) = Allocator::begin(stored_window, now);
        let window_revision = self.store(revision, window).await?;
        allocator.window_persisted(window);
        if self.leading_term()? != term {
            return Err(CoordinatorError::Unavailable(
                "coordinator leadership changed while the oracle began".into(),
            ));
        }
        tracing::info!(term, stored_window, window, "timestamp oracle serving");
        *self.lock_state() = Some(Leadership {
            term,
            epoch_unix_ms: cluster.created_at_ms,
            allocator,
            window_revision,
        });
        Ok(())
    }

    /// Persists `window_end` (if no larger window is persisted already).
    async fn persist_window(&self, term: u64, window_end: u64) -> Result<()> {
        let _persisting = self.persisting.lock().await;
        let expected = {
            let state = self.lock_state();
            let Some(leadership) = state.as_ref().filter(|l| l.term == term) else {
                return Ok(()); // The caller begins again.
            };
            if leadership.allocator.window_end() >= window_end {
                return Ok(());
            }
            leadership.window_revision
        };
        let revision = self
            .store(expected, window_end)
            .await
            .inspect_err(|_| self.forget(term))?;
        let mut state = self.lock_state();
        if let Some(leadership) = state.as_mut().filter(|l| l.term == term) {
            leadership.allocator.window_persisted(window_end);
            leadership.window_revision = revision;
        }
        Ok(())
    }

    async fn store(&self, expected_revision: u64, window: u64) -> Result<u64> {
        let stored = self
            .metadata
            .store_timestamp_window(expected_revision, window)
            .await?;
        self.metrics.window_writes.inc();
        // Only one leader writes the window; a changed window means another one did.
        stored.ok_or_else(|| {
            CoordinatorError::Unavailable("another coordinator wrote the oracle window".into())
        })
    }

    /// Extends the window in the background when it is close to running out.
    fn maybe_renew(self: &Arc<Self>, term: u64) {
        let window = {
            let state = self.lock_state();
            let Some(leadership) = state.as_ref().filter(|l| l.term == term) else {
                return;
            };
            let now = self.now_ms(leadership.epoch_unix_ms);
            leadership.allocator.renewal(now)
        };
        let Some(window) = window else { return };
        if self.renewing.swap(true, Ordering::AcqRel) {
            return;
        }
        let oracle = self.clone();
        tokio::spawn(async move {
            if let Err(error) = oracle.persist_window(term, window).await {
                tracing::warn!(%error, term, window, "extending the oracle window failed; requests past it will wait");
            }
            oracle.renewing.store(false, Ordering::Release);
        });
    }
}
