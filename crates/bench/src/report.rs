//! The JSON result of a run: what was measured, how, and the numbers.

use crate::args::{Phase, TargetKind};
use crate::keys::KeyDistribution;
use crate::workload::Workload;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the result's shape; bump it when a field changes meaning.
pub const RESULT_SCHEMA: &str = "cairn-bench/1";

#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub schema: &'static str,
    pub label: String,
    pub target: TargetKind,
    pub endpoints: Vec<String>,
    /// The client spoke TLS to the servers (`--cacert`). Results before this field are
    /// plaintext.
    pub tls: bool,
    pub workload: Workload,
    pub read_proportion: f64,
    pub distribution: KeyDistribution,
    /// "linearizable" or "serializable".
    pub read_consistency: &'static str,
    pub record_count: u64,
    pub key_size: usize,
    pub value_size: usize,
    pub concurrency: usize,
    pub connections: usize,
    pub phase: Phase,
    pub started_at_unix_ms: u64,
    /// The load phase, when it ran.
    pub load: Option<LoadSummary>,
    /// The measured run, when it ran.
    pub run: Option<RunSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    pub records: u64,
    pub errors: u64,
    pub duration_secs: f64,
    pub throughput_ops_per_sec: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub duration_secs: f64,
    /// Completed operations (errors excluded).
    pub operations: u64,
    pub errors: u64,
    /// `errors` by kind (`conflict`, `cross_shard_txn`, `timeout`, `unavailable`,
    /// `rejected`, `contended`, `no_cross_shard_pair`, `other`); kinds never met are absent.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Reads that found no key (each loaded record should exist: expect 0 after a load).
    pub not_found: u64,
    pub first_error: Option<String>,
    pub throughput_ops_per_sec: f64,
    /// The transactional workload's own counts; absent for the others.
    pub txn: Option<TxnSummary>,
    pub latency_ms: Latencies,
}

/// What the transactions of workload T met. An operation is one committed transaction,
/// however many runs it took (each run reads both keys and sends the transaction).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnSummary {
    /// The shard count that chose the pairs (each pair spans two shards of it).
    pub shard_count: u32,
    pub committed: u64,
    /// Runs whose comparisons failed: another writer changed a key after it was read.
    pub compare_failures: u64,
    /// Runs refused as lost races (Cairn's `Conflict`).
    pub conflicts: u64,
    /// Runs after which an operation gives up (counted as a `contended` error).
    pub runs_max: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latencies {
    pub all: Option<LatencySummary>,
    pub read: Option<LatencySummary>,
    pub update: Option<LatencySummary>,
    /// Workload T: one committed transaction, its reads and re-runs included.
    pub txn: Option<LatencySummary>,
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// Summarises a histogram recorded in microseconds; `None` when it is empty.
    pub fn from_micros(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Some(Self {
            count: histogram.len(),
            mean: histogram.mean() / 1_000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values_micros: &[u64]) -> Histogram<u64> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &value in values_micros {
            histogram.record(value).unwrap();
        }
        histogram
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let values: Vec<u64> = (1..=1_000).map(|i| i * 10).collect(); // 10 µs .. 10 ms
        let summary = LatencySummary::from_micros(&histogram(&values)).unwrap();
        assert_eq!(summary.count, 1_000);
        assert!((summary.p50 - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p99 - 9.9).abs() < 0.01, "{summary:?}");
        assert!((summary.max - 10.0).abs() < 0.01, "{summary:?}");
        assert!(LatencySummary::from_micros(&histogram(&[])).is_none());
    }

    #[test]
    fn result_has_the_documented_shape() {
        let summary = LatencySummary::from_micros(&histogram(&[1_000, 2_000])).unwrap();
        let result = BenchResult {
            schema: RESULT_SCHEMA,
            label: "x".into(),
            target: TargetKind::Etcd,
            endpoints: vec!["127.0.0.1:2379".into()],
            tls: true,
            workload: Workload::T,
            read_proportion: 0.0,
            distribution: KeyDistribution::Uniform,
            read_consistency: "linearizable",
            record_count: 10,
            key_size: 16,
            value_size: 256,
            concurrency: 4,
            connections: 2,
            phase: Phase::All,
            started_at_unix_ms: 1,
            load: Some(LoadSummary {
                records: 10,
                errors: 0,
                duration_secs: 1.0,
                throughput_ops_per_sec: 10.0,
            }),
            run: Some(RunSummary {
                duration_secs: 2.0,
                operations: 2,
                errors: 1,
                errors_by_kind: BTreeMap::from([("cross_shard_txn".to_string(), 1)]),
                not_found: 0,
                first_error: None,
                throughput_ops_per_sec: 1.0,
                txn: Some(TxnSummary {
                    shard_count: 3,
                    committed: 2,
                    compare_failures: 1,
                    conflicts: 0,
                    runs_max: 16,
                }),
                latency_ms: Latencies {
                    all: Some(summary.clone()),
                    read: None,
                    update: None,
                    txn: Some(summary),
                },
            }),
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["schema"], "cairn-bench/1");
        assert_eq!(json["target"], "etcd");
        assert_eq!(json["tls"], true);
        assert_eq!(json["workload"], "T");
        assert_eq!(json["distribution"], "uniform");
        assert_eq!(json["phase"], "all");
        assert_eq!(json["run"]["operations"], 2);
        assert_eq!(json["run"]["latency_ms"]["read"], serde_json::Value::Null);
        for field in ["count", "mean", "p50", "p95", "p99", "p999", "max"] {
            assert!(
                json["run"]["latency_ms"]["all"][field].is_number(),
                "latency field {field}"
            );
        }
        assert_eq!(json["load"]["records"], 10);
        assert_eq!(json["run"]["errors_by_kind"]["cross_shard_txn"], 1);
        assert_eq!(json["run"]["txn"]["shard_count"], 3);
        assert_eq!(json["run"]["txn"]["compare_failures"], 1);
        assert!(json["run"]["latency_ms"]["txn"]["p99"].is_number());
    }
}
