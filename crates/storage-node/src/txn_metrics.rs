//! Counters of the transaction calls a node serves (by call and outcome) and of the locks its
//! reads and one-phase writes meet. Kept as atomics on the node; `crate::metrics` publishes
//! them at each scrape as `cairn_node_txn_calls_total{call, outcome}` and
//! `cairn_node_txn_locks_met_total{by}`.

use crate::error::NodeError;
use cairn_mvcc::TxnError;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A transaction call of `ShardKv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnCall {
    Prewrite,
    Commit,
    Rollback,
    CheckTxnStatus,
    ResolveLocks,
    ScanLocks,
}

impl TxnCall {
    pub const ALL: [TxnCall; 6] = [
        TxnCall::Prewrite,
        TxnCall::Commit,
        TxnCall::Rollback,
        TxnCall::CheckTxnStatus,
        TxnCall::ResolveLocks,
        TxnCall::ScanLocks,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TxnCall::Prewrite => "prewrite",
            TxnCall::Commit => "commit",
            TxnCall::Rollback => "rollback",
            TxnCall::CheckTxnStatus => "check_txn_status",
            TxnCall::ResolveLocks => "resolve_locks",
            TxnCall::ScanLocks => "scan_locks",
        }
    }
}

/// How a call ended, as an operator groups it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    Ok,
    /// Another transaction's lock (`KeyLocked`).
    Locked,
    /// A write conflict (`WriteConflict`).
    Conflict,
    /// The transaction was rolled back (`RolledBack`).
    RolledBack,
    /// No trace of the transaction (`TxnNotFound`).
    NotFound,
    /// Another refusal: bad input, compaction, a broken protocol.
    Refused,
    /// Not served: not the leader, unavailable, storage.
    Failed,
}

impl TxnOutcome {
    pub const ALL: [TxnOutcome; 7] = [
        TxnOutcome::Ok,
        TxnOutcome::Locked,
        TxnOutcome::Conflict,
        TxnOutcome::RolledBack,
        TxnOutcome::NotFound,
        TxnOutcome::Refused,
        TxnOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TxnOutcome::Ok => "ok",
            TxnOutcome::Locked => "locked",
            TxnOutcome::Conflict => "conflict",
            TxnOutcome::RolledBack => "rolled_back",
            TxnOutcome::NotFound => "not_found",
            TxnOutcome::Refused => "refused",
            TxnOutcome::Failed => "failed",
        }
    }

    pub fn of<T>(answer: &Result<T, NodeError>) -> Self {
        match answer {
            Ok(_) => TxnOutcome::Ok,
            Err(NodeError::Txn(TxnError::KeyLocked(_))) => TxnOutcome::Locked,
            Err(NodeError::Txn(TxnError::WriteConflict { .. })) => TxnOutcome::Conflict,
            Err(NodeError::Txn(TxnError::RolledBack { .. })) => TxnOutcome::RolledBack,
            Err(NodeError::Txn(TxnError::TxnNotFound { .. })) => TxnOutcome::NotFound,
            Err(NodeError::Txn(_) | NodeError::InvalidRequest(_)) => TxnOutcome::Refused,
            Err(_) => TxnOutcome::Failed,
        }
    }
}

/// Who met a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMetBy {
    Read,
    Write,
}

#[derive(Default)]
pub struct TxnCounters {
    calls: [[AtomicU64; TxnOutcome::ALL.len()]; TxnCall::ALL.len()],
    locks_met_by_reads: AtomicU64,
    locks_met_by_writes: AtomicU64,
}

impl TxnCounters {
    pub fn call(&self, call: TxnCall, outcome: TxnOutcome) {
        self.calls[call as usize][outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn calls(&self, call: TxnCall, outcome: TxnOutcome) -> u64 {
        self.calls[call as usize][outcome as usize].load(Relaxed)
    }

    pub fn lock_met(&self, by: LockMetBy) {
        match by {
            LockMetBy::Read => &self.locks_met_by_reads,
            LockMetBy::Write => &self.locks_met_by_writes,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn locks_met(&self, by: LockMetBy) -> u64 {
        match by {
            LockMetBy::Read => &self.locks_met_by_reads,
            LockMetBy::Write => &self.locks_met_by_writes,
        }
        .load(Relaxed)
    }
}
