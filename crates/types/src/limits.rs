//! Request limits. Every limit has a configuration name (used in errors) and a unit in its
//! name; defaults are chosen so that one request fits comfortably in one gRPC message and
//! one Raft log entry.

use serde::{Deserialize, Serialize};

/// Size and count limits enforced on every request, before it reaches Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest key, in bytes.
    pub key_bytes_max: u64,
    /// Largest value, in bytes.
    pub value_bytes_max: u64,
    /// Most operations (compare + success + failure) in one transaction. 1024 by default,
    /// where etcd fixes 128 (a cap its users keep running into, etcd-io/etcd#7826): a
    /// transaction's size is bounded by `request_bytes_max` anyway, and a lock per point key
    /// costs the nodes no more than a write (D98).
    pub txn_ops_max: u64,
    /// Largest encoded request, in bytes.
    pub request_bytes_max: u64,
    /// Most keys returned by one range request (also the default page size).
    pub range_keys_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            key_bytes_max: 4 * 1024,
            value_bytes_max: 1024 * 1024,
            txn_ops_max: 1024,
            request_bytes_max: 4 * 1024 * 1024,
            range_keys_max: 10_000,
        }
    }
}

/// A request broke a limit. `limit` is the configuration name of the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit} exceeded: {actual} > {max}")]
pub struct LimitError {
    pub limit: &'static str,
    pub max: u64,
    pub actual: u64,
}

impl Limits {
    /// Checks the relationships between limits; returns the name of the offending field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("key_bytes_max", self.key_bytes_max),
            ("value_bytes_max", self.value_bytes_max),
            ("txn_ops_max", self.txn_ops_max),
            ("request_bytes_max", self.request_bytes_max),
            ("range_keys_max", self.range_keys_max),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if self.request_bytes_max < self.key_bytes_max + self.value_bytes_max {
            return Err(format!(
                "limits.request_bytes_max ({}) must be at least key_bytes_max + value_bytes_max ({})",
                self.request_bytes_max,
                self.key_bytes_max + self.value_bytes_max
            ));
        }
        if self.request_bytes_max > REQUEST_BYTES_MAX_CEILING {
            return Err(format!(
                "limits.request_bytes_max ({}) must be at most {REQUEST_BYTES_MAX_CEILING}",
                self.request_bytes_max
            ));
        }
        Ok(())
    }

    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        check("key_bytes_max", self.key_bytes_max, key.len() as u64)
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), LimitError> {
        check("value_bytes_max", self.value_bytes_max, value.len() as u64)
    }

    pub fn check_txn_ops(&self, ops: usize) -> Result<(), LimitError> {
        check("txn_ops_max", self.txn_ops_max, ops as u64)
    }

    pub fn check_request_bytes(&self, bytes: usize) -> Result<(), LimitError> {
        check("request_bytes_max", self.request_bytes_max, bytes as u64)
    }

    pub fn check_range_keys(&self, keys: u64) -> Result<(), LimitError> {
        check("range_keys_max", self.range_keys_max, keys)
    }
}

/// The largest Raft transport message, in bytes. An append carries up to `append_entries_max`
/// requests; configuration keeps their total at most half of this, leaving room for encoding.
pub const RAFT_MESSAGE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// The gRPC transport refuses messages beyond this, whatever `request_bytes_max` says; the
/// configured limit must fit under it so that its violations get a named error.
pub const REQUEST_BYTES_MAX_CEILING: u64 = 64 * 1024 * 1024;

/// What a gateway → node batch message adds around its items (ids, deadlines, trace
/// contexts, field tags). A batch message may be this much larger than the ceiling, so that
/// one request of the largest allowed size still travels batched.
pub const BATCH_ENVELOPE_BYTES: u64 = 1024 * 1024;

fn check(limit: &'static str, max: u64, actual: u64) -> Result<(), LimitError> {
    if actual > max {
        Err(LimitError { limit, max, actual })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_field() {
        let limits = Limits {
            key_bytes_max: 0,
            ..Limits::default()
        };
        assert!(limits.validate().unwrap_err().contains("key_bytes_max"));
        let limits = Limits {
            request_bytes_max: 10,
            ..Limits::default()
        };
        assert!(limits.validate().unwrap_err().contains("request_bytes_max"));
    }

    #[test]
    fn checks_report_limit_and_sizes() {
        let limits = Limits {
            key_bytes_max: 3,
            ..Limits::default()
        };
        assert!(limits.check_key(b"abc").is_ok());
        let err = limits.check_key(b"abcd").unwrap_err();
        assert_eq!(
            err,
            LimitError {
                limit: "key_bytes_max",
                max: 3,
                actual: 4
            }
        );
    }
}
