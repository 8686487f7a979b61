//! Transaction metrics an operator graphs: how transactions commit (one phase, two phases,
//! read-only), how often they lose races, how long requests wait for other transactions'
//! locks, how many locks are resolved and how old they were, and what the expired-lock scan
//! does.

use cairn_telemetry::prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};
use std::time::Duration;

pub struct TxnMetrics {
    /// By path: `one_phase`, `two_phase`, `read_only`.
    commits: IntCounterVec,
    /// By phase where the race was lost: `prewrite`, `validate`, `commit`, `lock`.
    conflicts: IntCounterVec,
    outcome_unknown: IntCounter,
    lock_waits: IntCounter,
    lock_wait_seconds: Histogram,
    /// By resolution: `commit`, `rollback`.
    locks_resolved: IntCounterVec,
    resolved_lock_age_seconds: HistogramVec,
    scans: IntCounter,
    scan_failures: IntCounter,
    scan_expired_locks: IntCounter,
}

impl TxnMetrics {
    pub fn new(registry: &Registry) -> Self {
        let seconds = exponential_buckets(0.001, 2.0, 18).expect("valid buckets");
        let counter_vec = |name: &str, help: &str, label: &str| {
            let metric = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("metric names are unique");
            metric
        };
        let lock_wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "cairn_gateway_lock_wait_seconds",
                "Time requests spent waiting for other transactions' locks",
            )
            .buckets(seconds.clone()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(lock_wait_seconds.clone()))
            .expect("metric names are unique");
        let resolved_lock_age_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cairn_gateway_resolved_lock_age_seconds",
                "Age of the locks the gateway resolved (from their prewrite), by resolution",
            )
            .buckets(seconds),
            &["resolution"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(resolved_lock_age_seconds.clone()))
            .expect("metric names are unique");
        Self {
            commits: counter_vec(
                "cairn_gateway_txn_commits_total",
                "Transactions answered as committed, by path (one_phase, two_phase, read_only)",
                "path",
            ),
            conflicts: counter_vec(
                "cairn_gateway_txn_conflicts_total",
                "Transactions answered Conflict, by the phase that lost the race",
                "phase",
            ),
            outcome_unknown: counter(
                "cairn_gateway_txn_outcome_unknown_total",
                "Two-phase transactions whose primary commit's outcome was unknown (answered UNAVAILABLE)",
            ),
            lock_waits: counter(
                "cairn_gateway_lock_waits_total",
                "Pauses of requests waiting for a live lock of another transaction",
            ),
            lock_wait_seconds,
            locks_resolved: counter_vec(
                "cairn_gateway_locks_resolved_total",
                "Locks of other transactions resolved by this gateway, by resolution (commit, rollback)",
                "resolution",
            ),
            resolved_lock_age_seconds,
            scans: counter(
                "cairn_gateway_lock_scans_total",
                "Expired-lock scans run (each over every shard)",
            ),
            scan_failures: counter(
                "cairn_gateway_lock_scan_failures_total",
                "Shards whose expired-lock scan failed (retried at the next scan)",
            ),
            scan_expired_locks: counter(
                "cairn_gateway_lock_scan_expired_locks_total",
                "Expired locks the scans found",
            ),
        }
    }

    pub fn committed(&self, path: &str) {
        self.commits.with_label_values(&[path]).inc();
    }

    pub fn conflict(&self, phase: &str) {
        self.conflicts.with_label_values(&[phase]).inc();
    }

    pub fn outcome_unknown(&self) {
        self.outcome_unknown.inc();
    }

    pub fn waited(&self, pause: Duration) {
        self.lock_waits.inc();
        self.lock_wait_seconds.observe(pause.as_secs_f64());
    }

    pub fn resolved(&self, resolution: &str, count: u64, age_ms: u64) {
        self.locks_resolved
            .with_label_values(&[resolution])
            .inc_by(count);
        self.resolved_lock_age_seconds
            .with_label_values(&[resolution])
            .observe(age_ms as f64 / 1000.0);
    }

    pub fn scanned(&self, expired_locks: u64, failed_shards: u64) {
        self.scans.inc();
        self.scan_expired_locks.inc_by(expired_locks);
        self.scan_failures.inc_by(failed_shards);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_register_and_count() {
        let registry = Registry::new();
        let metrics = TxnMetrics::new(&registry);
        metrics.committed("two_phase");
        metrics.conflict("prewrite");
        metrics.waited(Duration::from_millis(5));
        metrics.resolved("rollback", 2, 3500);
        metrics.scanned(1, 0);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_string())
            .collect();
        for name in [
            "cairn_gateway_txn_commits_total",
            "cairn_gateway_txn_conflicts_total",
            "cairn_gateway_lock_waits_total",
            "cairn_gateway_lock_wait_seconds",
            "cairn_gateway_locks_resolved_total",
            "cairn_gateway_resolved_lock_age_seconds",
            "cairn_gateway_lock_scans_total",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
        assert_eq!(
            metrics
                .locks_resolved
                .with_label_values(&["rollback"])
                .get(),
            2
        );
    }
}
