//! The `[raft]` settings of a process's Raft groups (a storage node's shards, the
//! coordinator's metadata group): one serde struct shared by both binaries, its rules checked
//! here once, and its mapping onto openraft's `Config`. Binaries mount it at `raft` in their
//! own configuration and turn a [`RaftConfigError`] into their configuration error; this
//! module knows nothing about files, the environment or flags (D53).

use cairn_types::RAFT_MESSAGE_BYTES_MAX;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Shortest leader heartbeat period, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS_MIN: u64 = 10;
/// Longest leader heartbeat period, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS_MAX: u64 = 10_000;
/// The shortest election timeout spans at least this many heartbeats, so a few late heartbeats
/// (a loaded two-core machine, an append waiting on a group-commit fsync) do not start an
/// election (D12).
pub const ELECTION_TIMEOUT_HEARTBEATS_MIN: u64 = 3;

/// The part of a lease a leader reads by. A voter that acknowledged the leader refuses other
/// candidates for one whole lease (`election_timeout_max_ms`) by its own clock; the leader
/// stops reading by lease after 90 % of it by its clock. So the nodes' clocks may advance at
/// rates up to 10 % apart (they need not agree on the time) before a new leader could be
/// elected while the old one still reads locally. Raising it narrows that margin; lowering it
/// sends more reads to ReadIndex (D26).
pub const LEASE_READ_FRACTION: f64 = 0.9;
const _: () = assert!(LEASE_READ_FRACTION > 0.0 && LEASE_READ_FRACTION < 1.0);

/// The `[raft]` section: timing and log compaction of every Raft group the process runs, and
/// how their leaders confirm linearizable reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftConfig {
    /// Leader heartbeat period, in milliseconds; openraft also allows one AppendEntries or
    /// heartbeat RPC this long.
    pub heartbeat_interval_ms: u64,
    /// Shortest election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout, in milliseconds; also the leader lease (D26), which must be
    /// the same on every member of a group that reads by lease.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one (entries); a follower
    /// lagging by more is sent a snapshot.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept after a snapshot, for followers that lag a little (entries).
    pub logs_to_keep_after_snapshot: u64,
    /// Most entries in one AppendEntries RPC (entries). On a storage node, times
    /// `limits.request_bytes_max` at most half the largest Raft message (D16).
    pub append_entries_max: u64,
    /// How a leader confirms a linearizable read: `lease` (no round trip while a quorum
    /// acknowledged it within [`LEASE_READ_FRACTION`] of `election_timeout_max_ms`; falls back
    /// to `read_index`) or `read_index` (a heartbeat round per batch of reads). See D26.
    pub linearizable_reads: LinearizableReads,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 64,
            linearizable_reads: LinearizableReads::default(),
        }
    }
}

/// How a leader confirms, before a linearizable read, that no other replica can have become
/// leader and accepted writes it has not seen (D26).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearizableReads {
    /// Leader lease: no other replica can win an election within one lease
    /// (`election_timeout_max_ms`) of a message the leader sent and a quorum acknowledged, so
    /// for [`LEASE_READ_FRACTION`] of that time the leader reads locally with no round trip.
    /// Falls back to ReadIndex when it has lapsed. Assumes the nodes' clocks advance at rates
    /// within 10 % of each other (not that they agree on the time).
    #[default]
    Lease,
    /// ReadIndex: every read waits for a quorum to acknowledge a heartbeat sent after it
    /// arrived (one round trip; concurrent reads share the round).
    ReadIndex,
}

/// A `[raft]` value that breaks a rule. `field` is its dotted path (`raft.…`), so a binary
/// reports it as it reports its own fields.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {rule}")]
pub struct RaftConfigError {
    pub field: &'static str,
    pub rule: RaftRule,
}

/// The rule a `[raft]` value breaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftRule {
    #[error("must be in {min}..={max}")]
    Within { min: u64, max: u64 },
    #[error("must be at least {min}")]
    AtLeast { min: u64 },
    #[error("must be at least {times} × {of}")]
    AtLeastTimes { times: u64, of: &'static str },
    #[error("must be above {of}")]
    Above { of: &'static str },
    #[error(
        "append_entries_max × limits.request_bytes_max ({append_bytes}) must be at most {max}, half the largest raft message"
    )]
    AppendTooLarge { append_bytes: u64, max: u64 },
    /// openraft's own check refused the mapped configuration, which [`RaftConfig::validate`]
    /// should have prevented.
    #[error("refused by openraft: {0}")]
    Openraft(String),
}

fn broken(field: &'static str, rule: RaftRule) -> RaftConfigError {
    RaftConfigError { field, rule }
}

impl RaftConfig {
    /// Checks every rule that involves `[raft]` alone, in the order of the configuration
    /// reference, and names the first field at fault.
    pub fn validate(&self) -> Result<(), RaftConfigError> {
        if !(HEARTBEAT_INTERVAL_MS_MIN..=HEARTBEAT_INTERVAL_MS_MAX)
            .contains(&self.heartbeat_interval_ms)
        {
            return Err(broken(
                "raft.heartbeat_interval_ms",
                RaftRule::Within {
                    min: HEARTBEAT_INTERVAL_MS_MIN,
                    max: HEARTBEAT_INTERVAL_MS_MAX,
                },
            ));
        }
        if self.election_timeout_min_ms
            < ELECTION_TIMEOUT_HEARTBEATS_MIN * self.heartbeat_interval_ms
        {
            return Err(broken(
                "raft.election_timeout_min_ms",
                RaftRule::AtLeastTimes {
                    times: ELECTION_TIMEOUT_HEARTBEATS_MIN,
                    of: "raft.heartbeat_interval_ms",
                },
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(broken(
                "raft.election_timeout_max_ms",
                RaftRule::Above {
                    of: "raft.election_timeout_min_ms",
                },
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return Err(broken(
                "raft.snapshot_logs_since_last",
                RaftRule::AtLeast { min: 1 },
            ));
        }
        if self.append_entries_max == 0 {
            return Err(broken(
                "raft.append_entries_max",
                RaftRule::AtLeast { min: 1 },
            ));
        }
        Ok(())
    }

    /// Checks that one AppendEntries of `append_entries_max` requests of up to
    /// `request_bytes_max` each fits in half the largest Raft message (D16), leaving room
    /// for encoding. For a process that bounds its requests by `limits.request_bytes_max`.
    pub fn validate_append_bytes(&self, request_bytes_max: u64) -> Result<(), RaftConfigError> {
        let append_bytes = self.append_entries_max.saturating_mul(request_bytes_max);
        let max = RAFT_MESSAGE_BYTES_MAX / 2;
        if append_bytes > max {
            return Err(broken(
                "raft.append_entries_max",
                RaftRule::AppendTooLarge { append_bytes, max },
            ));
        }
        Ok(())
    }

    /// The openraft configuration of a group run with these settings; snapshots may take
    /// `install_snapshot_timeout_ms` to transfer.
    pub fn to_openraft(
        &self,
        install_snapshot_timeout_ms: u64,
    ) -> Result<Arc<openraft::Config>, RaftConfigError> {
        self.validate()?;
        let config = openraft::Config {
            cluster_name: "cairn".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: install_snapshot_timeout_ms,
            max_payload_entries: self.append_entries_max,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.logs_to_keep_after_snapshot,
            purge_batch_size: 256,
            // Lagging further than this many entries means catching up by snapshot.
            replication_lag_threshold: self.snapshot_logs_since_last,
            // A restarted leader stands for election like anyone else. Restoring leadership
            // without one is unsafe here: the commit point and the applied state are not
            // fsynced, so after a power loss such a leader could serve reads from a state
            // machine that misses acknowledged writes (openraft's own warning on this field).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|error| broken("raft", RaftRule::Openraft(error.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_map_onto_openraft() {
        let config = RaftConfig::default();
        config.validate().unwrap();
        let openraft = config.to_openraft(60_000).unwrap();
        assert_eq!(openraft.heartbeat_interval, 250);
        assert_eq!(openraft.election_timeout_min, 1_000);
        assert_eq!(openraft.election_timeout_max, 2_000);
        assert_eq!(openraft.max_payload_entries, 64);
        assert_eq!(openraft.install_snapshot_timeout, 60_000);
        assert_eq!(openraft.enable_leader_restore, Some(false));
    }

    /// Each rule, broken alone, names its field and the rule.
    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(RaftConfig, &str, RaftRule)> = vec![
            (
                RaftConfig {
                    heartbeat_interval_ms: 9,
                    ..RaftConfig::default()
                },
                "raft.heartbeat_interval_ms",
                RaftRule::Within {
                    min: 10,
                    max: 10_000,
                },
            ),
            (
                RaftConfig {
                    heartbeat_interval_ms: 10_001,
                    ..RaftConfig::default()
                },
                "raft.heartbeat_interval_ms",
                RaftRule::Within {
                    min: 10,
                    max: 10_000,
                },
            ),
            (
                RaftConfig {
                    election_timeout_min_ms: 749,
                    ..RaftConfig::default()
                },
                "raft.election_timeout_min_ms",
                RaftRule::AtLeastTimes {
                    times: 3,
                    of: "raft.heartbeat_interval_ms",
                },
            ),
            (
                RaftConfig {
                    election_timeout_max_ms: 1_000,
                    ..RaftConfig::default()
                },
                "raft.election_timeout_max_ms",
                RaftRule::Above {
                    of: "raft.election_timeout_min_ms",
                },
            ),
            (
                RaftConfig {
                    snapshot_logs_since_last: 0,
                    ..RaftConfig::default()
                },
                "raft.snapshot_logs_since_last",
                RaftRule::AtLeast { min: 1 },
            ),
            (
                RaftConfig {
                    append_entries_max: 0,
                    ..RaftConfig::default()
                },
                "raft.append_entries_max",
                RaftRule::AtLeast { min: 1 },
            ),
        ];
        for (config, field, rule) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!(error, RaftConfigError { field, rule });
            assert_eq!(
                config.to_openraft(60_000).unwrap_err(),
                error,
                "openraft is never given a configuration that breaks a rule"
            );
        }
        let at_bound = RaftConfig {
            election_timeout_min_ms: 750,
            ..RaftConfig::default()
        };
        at_bound.validate().unwrap();
    }

    #[test]
    fn an_append_must_fit_in_half_the_largest_raft_message() {
        let config = RaftConfig::default();
        let at_bound = RAFT_MESSAGE_BYTES_MAX / 2 / config.append_entries_max;
        config.validate_append_bytes(at_bound).unwrap();
        let error = config.validate_append_bytes(at_bound + 1).unwrap_err();
        assert_eq!(error.field, "raft.append_entries_max");
        assert!(
            matches!(error.rule, RaftRule::AppendTooLarge { append_bytes, .. } if append_bytes == 64 * (at_bound + 1)),
            "{error}"
        );
    }

    #[test]
    fn messages_read_as_the_configuration_reference_states_the_rules() {
        let config = RaftConfig {
            election_timeout_min_ms: 100,
            ..RaftConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: raft.election_timeout_min_ms: must be at least 3 × raft.heartbeat_interval_ms"
        );
    }
}
