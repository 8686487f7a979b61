//! The `[txn]` table of the gateway's configuration: how the gateway coordinates cross-shard
//! transactions (lock lifetime, the expired-lock scan) and the limits it enforces on the
//! transactions no node ever sees whole.

use cairn_telemetry::{config_error as bad, ConfigError};
use serde::{Deserialize, Serialize};

/// Shortest lock lifetime: a prewrite, an oracle round and a commit must fit in it with room
/// to spare, or healthy transactions are rolled back by others.
pub const LOCK_TTL_MS_MIN: u64 = 500;
/// Longest lock lifetime: a dead gateway's locks stall readers of its keys this long.
pub const LOCK_TTL_MS_MAX: u64 = 600_000;
/// Bounds of the expired-lock scan period.
pub const LOCK_SCAN_INTERVAL_MS_MIN: u64 = 100;
pub const LOCK_SCAN_INTERVAL_MS_MAX: u64 = 600_000;
/// The node answers at most this many locks per `ScanLocks` call (node.proto).
pub const LOCK_SCAN_LOCKS_MAX_CEILING: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TxnConfig {
    /// How long after its prewrite a transaction's lock may be rolled back by others, in
    /// milliseconds (measured by the clock of the leader that applied the prewrite).
    pub lock_ttl_ms: u64,
    /// How often the gateway scans every shard for expired locks and resolves them, in
    /// milliseconds.
    pub lock_scan_interval_ms: u64,
    /// Most locks one scan reads from one shard (the rest wait for the next scan).
    pub lock_scan_locks_max: u32,
    /// Most compares plus ops of one transaction (the gateway's twin of the nodes'
    /// `limits.txn_ops_max`; it is the only check of a cross-shard transaction's size in ops).
    pub ops_max: u64,
    /// Largest encoded transaction request, in bytes (the twin of the nodes'
    /// `limits.request_bytes_max`, which bounds each shard's part).
    pub request_bytes_max: u64,
    /// Most shards one transaction's prewrites, commits or reads go to at the same time.
    pub shards_in_flight_max: usize,
}

impl Default for TxnConfig {
    fn default() -> Self {
        let limits = cairn_types::Limits::default();
        Self {
            lock_ttl_ms: 3_000,
            lock_scan_interval_ms: 2_000,
            lock_scan_locks_max: 256,
            ops_max: limits.txn_ops_max,
            request_bytes_max: limits.request_bytes_max,
            shards_in_flight_max: 64,
        }
    }
}

impl TxnConfig {
    /// Checks the table; errors name the field as `txn.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(LOCK_TTL_MS_MIN..=LOCK_TTL_MS_MAX).contains(&self.lock_ttl_ms) {
            return Err(bad(
                "txn.lock_ttl_ms",
                format!("must be in {LOCK_TTL_MS_MIN}..={LOCK_TTL_MS_MAX}"),
            ));
        }
        if !(LOCK_SCAN_INTERVAL_MS_MIN..=LOCK_SCAN_INTERVAL_MS_MAX)
            .contains(&self.lock_scan_interval_ms)
        {
            return Err(bad(
                "txn.lock_scan_interval_ms",
                format!("must be in {LOCK_SCAN_INTERVAL_MS_MIN}..={LOCK_SCAN_INTERVAL_MS_MAX}"),
            ));
        }
        if !(1..=LOCK_SCAN_LOCKS_MAX_CEILING).contains(&self.lock_scan_locks_max) {
            return Err(bad(
                "txn.lock_scan_locks_max",
                format!("must be in 1..={LOCK_SCAN_LOCKS_MAX_CEILING}"),
            ));
        }
        if self.ops_max == 0 {
            return Err(bad("txn.ops_max", "must be at least 1"));
        }
        if self.request_bytes_max == 0
            || self.request_bytes_max > cairn_types::REQUEST_BYTES_MAX_CEILING
        {
            return Err(bad(
                "txn.request_bytes_max",
                format!("must be in 1..={}", cairn_types::REQUEST_BYTES_MAX_CEILING),
            ));
        }
        if self.shards_in_flight_max == 0 {
            return Err(bad("txn.shards_in_flight_max", "must be at least 1"));
        }
        Ok(())
    }

    /// Checks the table against the request deadline: a lock must be able to outlive the
    /// time between prewrite and commit of a transaction that is not stuck.
    pub fn validate_with(&self, request_timeout_ms: u64) -> Result<(), ConfigError> {
        self.validate()?;
        if self.lock_ttl_ms > request_timeout_ms.saturating_mul(60) {
            return Err(bad(
                "txn.lock_ttl_ms",
                "must be at most 60 × request_timeout_ms: a dead gateway's locks would stall \
                 readers for longer than any request may wait",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        TxnConfig::default().validate_with(10_000).unwrap();
        let field = |config: TxnConfig| config.validate_with(10_000).unwrap_err().field;
        assert_eq!(
            field(TxnConfig {
                lock_ttl_ms: 10,
                ..TxnConfig::default()
            }),
            "txn.lock_ttl_ms"
        );
        assert_eq!(
            field(TxnConfig {
                lock_scan_interval_ms: 0,
                ..TxnConfig::default()
            }),
            "txn.lock_scan_interval_ms"
        );
        assert_eq!(
            field(TxnConfig {
                lock_scan_locks_max: 5000,
                ..TxnConfig::default()
            }),
            "txn.lock_scan_locks_max"
        );
        assert_eq!(
            field(TxnConfig {
                ops_max: 0,
                ..TxnConfig::default()
            }),
            "txn.ops_max"
        );
        assert_eq!(
            field(TxnConfig {
                request_bytes_max: u64::MAX,
                ..TxnConfig::default()
            }),
            "txn.request_bytes_max"
        );
        assert_eq!(
            field(TxnConfig {
                shards_in_flight_max: 0,
                ..TxnConfig::default()
            }),
            "txn.shards_in_flight_max"
        );
    }

    #[test]
    fn the_ops_limit_follows_the_nodes_default() {
        assert_eq!(
            TxnConfig::default().ops_max,
            cairn_types::Limits::default().txn_ops_max
        );
    }
}
