//! `KvTarget`: the calls every system under test provides. The runner measures only
//! through this trait, so Cairn and etcd go through the same loop.

use serde::Serialize;
use std::future::Future;

/// What kind of failure a call met; the run reports a count per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A transaction lost a race and applied nothing (Cairn's `Conflict`).
    Conflict,
    /// A transaction across shards was refused (a Cairn gateway without cross-shard
    /// transactions answers `CrossShardTxn`).
    CrossShardTxn,
    /// The call ran out of time; a write may or may not have been applied.
    Timeout,
    /// The system was unreachable or had no leader.
    Unavailable,
    /// The request was refused: invalid, over a limit, not allowed.
    Rejected,
    /// Every run of a transaction found its keys changed since it read them (workload T
    /// gives up after `TXN_RUNS_MAX` runs).
    Contended,
    /// No two records on different shards could be found (workload T with very few records).
    NoCrossShardPair,
    Other,
}

impl ErrorKind {
    /// The name used in results (`errors_by_kind`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "conflict",
            ErrorKind::CrossShardTxn => "cross_shard_txn",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Contended => "contended",
            ErrorKind::NoCrossShardPair => "no_cross_shard_pair",
            ErrorKind::Other => "other",
        }
    }
}

/// A failed call; the runner counts these per kind and keeps the first message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{system}: {message}")]
pub struct TargetError {
    pub system: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

/// One key of a transaction: what was read and what to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairWrite {
    pub key: Vec<u8>,
    /// The key's mod revision when read (0: absent).
    pub read_revision: u64,
    pub value: Vec<u8>,
}

/// One connection to a system under test. Clones share the connection.
pub trait KvTarget: Clone + Send + Sync + 'static {
    /// Writes `value` under `key`, acknowledged once durable on a quorum.
    fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Reads `key` with the configured consistency; `Ok(false)` when it does not exist.
    fn get(&self, key: Vec<u8>) -> impl Future<Output = Result<bool, TargetError>> + Send;

    /// Reads `key` (linearizable) for a transaction: its mod revision, 0 when absent.
    fn read_revision(&self, key: Vec<u8>) -> impl Future<Output = Result<u64, TargetError>> + Send;

    /// One transaction: if both keys still have the mod revisions read, writes both
    /// (`Ok(true)`); otherwise writes nothing (`Ok(false)`).
    fn write_pair_if_unchanged(
        &self,
        pair: [PairWrite; 2],
    ) -> impl Future<Output = Result<bool, TargetError>> + Send;
}
