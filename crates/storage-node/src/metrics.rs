//! The storage node's Prometheus metrics: per-RPC (from the telemetry layer), per shard
//! replica (term, leadership, commit and applied index, replication lag, snapshot, proposals,
//! elections, snapshot sends and installs), group commit (fsyncs and the appends they served,
//! fsync latency) and RocksDB sizes. Shard and storage series are read from the node's state
//! at each scrape; fsync latency is observed as it happens.

use crate::node::Node;
use crate::txn_metrics::{LockMetBy, TxnCall, TxnOutcome};
use cairn_raft::database::column_family_stats;
use cairn_raft::replica::ServerRole;
use cairn_telemetry::prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use cairn_telemetry::GrpcMetrics;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

pub struct NodeMetrics {
    pub registry: Registry,
    pub grpc: GrpcMetrics,
    replicas: IntGauge,
    shard_term: IntGaugeVec,
    shard_is_leader: IntGaugeVec,
    shard_leader_node: IntGaugeVec,
    shard_committed_index: IntGaugeVec,
    shard_applied_index: IntGaugeVec,
    shard_replication_lag: IntGaugeVec,
    shard_snapshot_index: IntGaugeVec,
    shard_epoch: IntGaugeVec,
    shard_proposals: IntCounterVec,
    shard_proposals_failed: IntCounterVec,
    shard_timestamp_refetches: IntCounterVec,
    shard_elections: IntCounterVec,
    shard_snapshots_sent: IntCounterVec,
    shard_snapshots_installed: IntCounterVec,
    /// Per shard: the term and counter totals seen at the previous scrape (counters are
    /// advanced by the difference; a replica re-opened starts its totals again).
    last_seen: Mutex<HashMap<u64, [u64; 6]>>,
    pub fsync_duration: Histogram,
    fsyncs: IntCounter,
    fsynced_appends: IntCounter,
    fsync_micros: IntCounter,
    rocksdb_sst_bytes: IntGaugeVec,
    rocksdb_memtable_bytes: IntGaugeVec,
    rocksdb_pending_compaction_bytes: IntGaugeVec,
    mvcc_versions_dropped: IntCounter,
    mvcc_tombstones_kept: IntCounter,
    tso_requests: IntCounter,
    tso_timestamps: IntCounter,
    tso_wait_micros: IntCounter,
    tso_failures: IntCounter,
    txn_calls: IntCounterVec,
    txn_locks_met: IntCounterVec,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric names are unique");
    gauge
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

/// Moves a counter up to a total kept elsewhere (counters only go up).
fn advance(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl NodeMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let grpc = GrpcMetrics::new(&registry).expect("valid gRPC metric definitions");
        let replicas = IntGauge::new("cairn_node_replicas", "Shard replicas hosted by this node")
            .expect("valid");
        registry
            .register(Box::new(replicas.clone()))
            .expect("unique");
        let shard = &["shard"];
        Self {
            shard_term: gauge_vec(
                &registry,
                "cairn_shard_term",
                "Raft term of the replica",
                shard,
            ),
            shard_is_leader: gauge_vec(
                &registry,
                "cairn_shard_is_leader",
                "1 when this replica leads its shard",
                shard,
            ),
            shard_leader_node: gauge_vec(
                &registry,
                "cairn_shard_leader_node",
                "Node id of the shard leader as this replica knows it (0: none)",
                shard,
            ),
            shard_committed_index: gauge_vec(
                &registry,
                "cairn_shard_committed_index",
                "Last committed log index",
                shard,
            ),
            shard_applied_index: gauge_vec(
                &registry,
                "cairn_shard_applied_index",
                "Last applied log index",
                shard,
            ),
            shard_replication_lag: gauge_vec(
                &registry,
                "cairn_shard_replication_lag_entries",
                "Leader only: entries the slowest member has yet to match",
                shard,
            ),
            shard_snapshot_index: gauge_vec(
                &registry,
                "cairn_shard_snapshot_index",
                "Log index of the latest snapshot",
                shard,
            ),
            shard_epoch: gauge_vec(
                &registry,
                "cairn_shard_epoch",
                "Membership epoch of the shard",
                shard,
            ),
            shard_proposals: counter_vec(
                &registry,
                "cairn_shard_proposals_total",
                "Writes proposed through this replica as leader",
                shard,
            ),
            shard_proposals_failed: counter_vec(
                &registry,
                "cairn_shard_proposals_failed_total",
                "Proposals that failed or whose outcome is unknown",
                shard,
            ),
            shard_timestamp_refetches: counter_vec(
                &registry,
                "cairn_shard_timestamp_refetches_total",
                "Writes that fetched a second timestamp because a higher one was proposed for their keys first",
                shard,
            ),
            shard_elections: counter_vec(
                &registry,
                "cairn_shard_elections_total",
                "Elections (new terms) this replica has seen",
                shard,
            ),
            shard_snapshots_sent: counter_vec(
                &registry,
                "cairn_shard_snapshots_sent_total",
                "Snapshots sent by this replica to lagging members",
                shard,
            ),
            shard_snapshots_installed: counter_vec(
                &registry,
                "cairn_shard_snapshots_installed_total",
                "Snapshots installed by this replica",
                shard,
            ),
            last_seen: Mutex::default(),
            fsync_duration: {
                let histogram = Histogram::with_opts(
                    HistogramOpts::new(
                        "cairn_group_commit_fsync_duration_seconds",
                        "Duration of one group-commit WAL fsync, in seconds",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0,
                    ]),
                )
                .expect("valid metric definition");
                registry
                    .register(Box::new(histogram.clone()))
                    .expect("metric names are unique");
                histogram
            },
            fsyncs: counter(
                &registry,
                "cairn_group_commit_fsyncs_total",
                "WAL fsyncs made by group commit",
            ),
            fsynced_appends: counter(
                &registry,
                "cairn_group_commit_appends_total",
                "Raft log appends acknowledged by those fsyncs",
            ),
            fsync_micros: counter(
                &registry,
                "cairn_group_commit_fsync_microseconds_total",
                "Time spent in WAL fsyncs, in microseconds",
            ),
            rocksdb_sst_bytes: gauge_vec(
                &registry,
                "cairn_rocksdb_sst_bytes",
                "Bytes of SST files",
                &["cf"],
            ),
            rocksdb_memtable_bytes: gauge_vec(
                &registry,
                "cairn_rocksdb_memtable_bytes",
                "Bytes in memtables",
                &["cf"],
            ),
            rocksdb_pending_compaction_bytes: gauge_vec(
                &registry,
                "cairn_rocksdb_pending_compaction_bytes",
                "Estimated bytes compaction still has to rewrite",
                &["cf"],
            ),
            mvcc_versions_dropped: counter(
                &registry,
                "cairn_node_mvcc_versions_dropped_total",
                "Old versions the compaction filter dropped (below the compaction point, shadowed)",
            ),
            mvcc_tombstones_kept: counter(
                &registry,
                "cairn_node_mvcc_tombstones_kept_total",
                "Tombstones at or below the compaction point the filter had to keep (partial compactions)",
            ),
            txn_calls: counter_vec(
                &registry,
                "cairn_node_txn_calls_total",
                "Transaction calls served (prewrite, commit, rollback, check_txn_status, resolve_locks, scan_locks) by outcome",
                &["call", "outcome"],
            ),
            txn_locks_met: counter_vec(
                &registry,
                "cairn_node_txn_locks_met_total",
                "Reads and one-phase writes stopped by a transaction's lock (KeyLocked)",
                &["by"],
            ),
            tso_requests: counter(
                &registry,
                "cairn_node_tso_requests_total",
                "Timestamp requests this node sent to the oracle",
            ),
            tso_timestamps: counter(
                &registry,
                "cairn_node_tso_timestamps_total",
                "Timestamps those requests carried (divided by requests: the mean batch)",
            ),
            tso_wait_micros: counter(
                &registry,
                "cairn_node_tso_wait_micros_total",
                "Microseconds writes spent waiting for their timestamp (divided by timestamps: the mean wait)",
            ),
            tso_failures: counter(
                &registry,
                "cairn_node_tso_failures_total",
                "Timestamp requests that failed (no oracle leader reachable in time)",
            ),
            replicas,
            grpc,
            registry,
        }
    }

    /// Reads the node's state into the gauges (called before each scrape).
    pub fn refresh(&self, node: &Node) {
        let replicas = node.replicas();
        self.replicas.set(replicas.len() as i64);
        for vec in [
            &self.shard_term,
            &self.shard_is_leader,
            &self.shard_leader_node,
            &self.shard_committed_index,
            &self.shard_applied_index,
            &self.shard_replication_lag,
            &self.shard_snapshot_index,
            &self.shard_epoch,
        ] {
            // Removed replicas must not linger as stale series.
            vec.reset();
        }
        let mut last_seen = self.last_seen.lock().expect("metrics lock poisoned");
        let hosted: std::collections::HashSet<u64> = replicas.iter().map(|r| r.shard().0).collect();
        let removed: Vec<u64> = last_seen
            .keys()
            .filter(|shard| !hosted.contains(shard))
            .copied()
            .collect();
        for shard in removed {
            last_seen.remove(&shard);
            for vec in [
                &self.shard_proposals,
                &self.shard_proposals_failed,
                &self.shard_timestamp_refetches,
                &self.shard_elections,
                &self.shard_snapshots_sent,
                &self.shard_snapshots_installed,
            ] {
                let _ = vec.remove_label_values(&[&shard.to_string()]);
            }
        }
        for replica in &replicas {
            let status = replica.status();
            let label = status.shard.0.to_string();
            let label = [label.as_str()];
            self.shard_term
                .with_label_values(&label)
                .set(status.term as i64);
            self.shard_is_leader
                .with_label_values(&label)
                .set(i64::from(status.role == Some(ServerRole::Leader)));
            self.shard_leader_node
                .with_label_values(&label)
                .set(status.leader.map_or(0, |id| id.0) as i64);
            self.shard_committed_index
                .with_label_values(&label)
                .set(status.committed_index as i64);
            self.shard_applied_index
                .with_label_values(&label)
                .set(status.applied_index as i64);
            self.shard_snapshot_index
                .with_label_values(&label)
                .set(status.snapshot_index as i64);
            self.shard_epoch
                .with_label_values(&label)
                .set(status.epoch as i64);
            let counters = replica.counters();
            let now = [
                status.term,
                counters.proposals.load(Relaxed),
                counters.proposals_failed.load(Relaxed),
                counters.timestamp_refetches.load(Relaxed),
                counters.snapshots_sent.load(Relaxed),
                counters.snapshots_installed.load(Relaxed),
            ];
            // First sight of a replica: its totals so far count, except the term (elections
            // before this node hosted the shard are not this replica's to count).
            let before = *last_seen
                .entry(status.shard.0)
                .or_insert([status.term, 0, 0, 0, 0, 0]);
            for (vec, (now, before)) in [
                &self.shard_elections,
                &self.shard_proposals,
                &self.shard_proposals_failed,
                &self.shard_timestamp_refetches,
                &self.shard_snapshots_sent,
                &self.shard_snapshots_installed,
            ]
            .iter()
            .zip(now.iter().zip(before.iter()))
            {
                // A re-opened replica restarts its totals: count from zero again.
                let delta = if now >= before { now - before } else { *now };
                vec.with_label_values(&label).inc_by(delta);
            }
            last_seen.insert(status.shard.0, now);
            if let Some(lag) = status.replication_lag_max {
                self.shard_replication_lag
                    .with_label_values(&label)
                    .set(lag as i64);
            }
        }
        let txn = &node.txn_counters;
        for call in TxnCall::ALL {
            for outcome in TxnOutcome::ALL {
                advance(
                    &self
                        .txn_calls
                        .with_label_values(&[call.label(), outcome.label()]),
                    txn.calls(call, outcome),
                );
            }
        }
        for (by, label) in [(LockMetBy::Read, "read"), (LockMetBy::Write, "write")] {
            advance(
                &self.txn_locks_met.with_label_values(&[label]),
                txn.locks_met(by),
            );
        }
        let stats = &node.group_commit_stats;
        advance(&self.fsyncs, stats.fsyncs.load(Relaxed));
        advance(&self.fsynced_appends, stats.appends.load(Relaxed));
        advance(&self.fsync_micros, stats.fsync_micros_total.load(Relaxed));
        advance(
            &self.mvcc_versions_dropped,
            node.compaction_points.versions_dropped.load(Relaxed),
        );
        advance(
            &self.mvcc_tombstones_kept,
            node.compaction_points.tombstones_kept.load(Relaxed),
        );
        if let Some(timestamps) = &node.timestamps {
            let stats = timestamps.client().stats();
            advance(&self.tso_requests, stats.requests.load(Relaxed));
            advance(&self.tso_timestamps, stats.timestamps.load(Relaxed));
            advance(&self.tso_wait_micros, stats.wait_micros_total.load(Relaxed));
            advance(&self.tso_failures, stats.failures.load(Relaxed));
        }
        for cf in column_family_stats(node.db()) {
            self.rocksdb_sst_bytes
                .with_label_values(&[cf.name])
                .set(cf.sst_bytes as i64);
            self.rocksdb_memtable_bytes
                .with_label_values(&[cf.name])
                .set(cf.memtable_bytes as i64);
            self.rocksdb_pending_compaction_bytes
                .with_label_values(&[cf.name])
                .set(cf.pending_compaction_bytes as i64);
        }
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Ready to take traffic: every replica knows its shard's leader and has applied what it
/// knows to be committed.
pub fn readiness(node: &Node) -> Result<(), String> {
    for replica in node.replicas() {
        let status = replica.status();
        if status.leader.is_none() {
            return Err(format!("{} has no leader", status.shard));
        }
        if status.applied_index < status.committed_index {
            return Err(format!(
                "{} is applying ({} of {})",
                status.shard, status.applied_index, status.committed_index
            ));
        }
    }
    Ok(())
}
