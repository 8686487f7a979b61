//! The transaction calls of a shard leader (D93): transaction commands proposed to Raft, and
//! what is answered from the leader's applied state without a log entry (a check-status that
//! decides nothing, a lock scan).

use super::{ReplicaError, ShardReplica};
use crate::command::{Command, CommandRevision, WriteOp, WriteResult};
use crate::kv::named_keys;
use crate::latches::{InFlight, LatchKeys, Latches};
use crate::mvcc_store::{storage_error, RocksView};
use cairn_mvcc::txn::LockPage;
use cairn_mvcc::{MvccReader, RangeBounds, TxnError, TxnRules, TxnStatus};
use cairn_types::Revision;
use std::sync::Arc;
use std::time::Instant;

/// Registers a command that writes versions at a given `commit_ts` as in flight at that
/// timestamp, over its keys: from here until the returned registration is dropped, a read at a
/// revision at or above `commit_ts` waits for it (D59, D63). `None` for a command that writes
/// no versions. `floor` is the highest timestamp the node has seen.
pub(crate) fn register_commit(
    latches: &Arc<Latches>,
    floor: Revision,
    op: &WriteOp,
) -> Option<InFlight> {
    let commit_ts = op.commit_ts()?;
    let keys = named_keys(op)?.into_iter().map(<[u8]>::to_vec).collect();
    let mut flight = latches.register(floor, LatchKeys::keys(keys));
    flight.set_revision(commit_ts);
    Some(flight)
}

/// Most locks one scan returns.
pub const SCAN_LOCKS_LIMIT_MAX: usize = 1024;

impl ShardReplica {
    /// Proposes a transaction command (D93) and waits until it is applied. A command that
    /// writes versions at a given `commit_ts` (commit, resolve-to-commit) is registered as in
    /// flight at that timestamp and latched like a timestamped write, so reads at or above
    /// it wait for it rather than meet its locks; the rest (prewrite, rollback, check-status)
    /// write only locks and rollback markers, which no read at a revision misses (locks are
    /// checked by every read, markers are not versions), and go straight to Raft.
    ///
    /// No term check at apply: a commit's versions replace locks that every reader and
    /// writer already stops at, so a commit proposed under another leadership cannot slip
    /// under a read the way a one-phase write could (D57).
    pub async fn write_txn(
        &self,
        op: WriteOp,
        proposed_at_ms: u64,
    ) -> Result<WriteResult, ReplicaError> {
        debug_assert!(op.is_txn_command());
        let timestamps = self.context.timestamps.clone();
        let registered = match &timestamps {
            // Without an oracle nothing reads at a revision past the shard's own.
            None => None,
            Some(timestamps) if op.commit_ts().is_some() => {
                if !self.raft.is_leader() {
                    return Err(self.not_leader_now());
                }
                register_commit(&self.latches, timestamps.latest_known(), &op)
            }
            Some(_) => None,
        };
        let command = Command {
            write_id: None,
            proposed_at_ms,
            op,
            // Transaction commands carry their own timestamps; this is not used.
            revision: CommandRevision::Counted,
            trace: None,
        };
        let Some(mut flight) = registered else {
            return self.write(command).await;
        };
        let term = self.current_term();
        let deadline = Instant::now() + self.context.propose_timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let applied =
            {
                let latched = flight.latch(remaining()).await.map_err(|timeout| {
                    ReplicaError::Unavailable {
                        shard: self.shard,
                        reason: timeout.to_string(),
                    }
                })?;
                // Out of order is harmless here (a one-phase write of these keys proposed with a
                // higher timestamp meets the lock at apply), and the commit timestamp is the
                // transaction's: never refetched.
                let applied = self.submit(command).await?;
                latched.proposed();
                applied
            };
        let result = applied.await;
        if matches!(result, Err(ReplicaError::OutcomeUnknown { .. })) {
            self.settle_later(flight, term);
        }
        result
    }

    /// Check-status evaluated on this leader's applied state, at `now_ms` by this node's
    /// clock: the answer when it decides nothing (locked and alive, already committed or
    /// rolled back, not found), or `None` when the transaction must be decided (an expired
    /// or missing primary rolled back), which only a Raft command may do. Committed and
    /// rolled back never change; a stale "locked" or "not found" only makes the caller wait
    /// and ask again, so no read index is needed.
    pub fn check_txn_status_applied(
        &self,
        primary: &[u8],
        start_ts: Revision,
        now_ms: u64,
        rollback_if_missing: bool,
    ) -> Result<Option<Result<TxnStatus, TxnError>>, ReplicaError> {
        if !self.raft.is_leader() {
            return Err(self.not_leader_now());
        }
        let snapshot = self.db().snapshot();
        let view = RocksView::new(self.db(), Some(&snapshot));
        let answer = TxnRules::new(&view, self.shard)
            .check_txn_status(
                primary,
                start_ts,
                now_ms,
                rollback_if_missing,
                self.compact_revision(),
            )
            .map_err(|error| ReplicaError::Storage {
                shard: self.shard,
                source: storage_error(error),
            })?;
        Ok(match answer {
            Ok(applied) if applied.mutations.is_empty() => Some(Ok(applied.outcome)),
            Ok(_) => None,
            Err(refusal) => Some(Err(refusal)),
        })
    }

    /// The locks of `bounds` with `start_ts <= max_start_ts`, every kind, at most `limit`
    /// (capped at [`SCAN_LOCKS_LIMIT_MAX`]), from this leader's applied state. Blocking: it
    /// may step over many locks.
    pub fn scan_locks(
        &self,
        bounds: &RangeBounds,
        max_start_ts: Revision,
        limit: usize,
    ) -> Result<LockPage, ReplicaError> {
        if !self.raft.is_leader() {
            return Err(self.not_leader_now());
        }
        let snapshot = self.db().snapshot();
        let view = RocksView::new(self.db(), Some(&snapshot));
        MvccReader::new(&view, self.shard)
            .locks_in_range(
                bounds,
                max_start_ts,
                true,
                limit.clamp(1, SCAN_LOCKS_LIMIT_MAX),
            )
            .map_err(|error| ReplicaError::Storage {
                shard: self.shard,
                source: storage_error(error),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::TxnCommit;
    use std::time::Duration;

    /// A commit at `commit_ts` holds back reads at or above it while in flight, not below.
    #[tokio::test]
    async fn a_commit_in_flight_holds_reads_at_or_above_its_commit_ts() {
        let latches = Arc::new(Latches::default());
        let commit = WriteOp::Commit(TxnCommit {
            start_ts: Revision(10),
            commit_ts: Revision(20),
            keys: vec![b"a".to_vec()],
            remember: None,
        });
        let flight = register_commit(&latches, Revision(15), &commit).expect("registered");
        let short = Duration::from_millis(50);
        latches
            .wait_for_in_flight(Revision(19), short)
            .await
            .expect("a read below the commit does not wait");
        assert!(latches
            .wait_for_in_flight(Revision(20), short)
            .await
            .is_err());
        assert!(latches
            .wait_for_in_flight(Revision::LATEST, short)
            .await
            .is_err());
        let waiting = {
            let latches = latches.clone();
            tokio::spawn(async move {
                latches
                    .wait_for_in_flight(Revision(25), Duration::from_secs(10))
                    .await
            })
        };
        drop(flight);
        waiting
            .await
            .unwrap()
            .expect("released when the commit settles");
        let rollback = WriteOp::ResolveLocks {
            start_ts: Revision(10),
            keys: vec![b"a".to_vec()],
            resolution: cairn_mvcc::Resolution::Rollback,
        };
        assert!(register_commit(&latches, Revision(15), &rollback).is_none());
        let resolve = WriteOp::ResolveLocks {
            start_ts: Revision(10),
            keys: vec![b"a".to_vec()],
            resolution: cairn_mvcc::Resolution::Commit {
                commit_ts: Revision(30),
            },
        };
        let _held = register_commit(&latches, Revision(15), &resolve).expect("registered");
        assert!(latches
            .wait_for_in_flight(Revision(30), short)
            .await
            .is_err());
    }
}
