//! Prewrite: the first phase. Puts the transaction's lock on one key, or says why not.

use super::history::trace;
use super::lock::{self, Lock, LockOp};
use super::{Applied, TxnError, TxnResult, TxnRules};
use crate::key;
use crate::view::{ColumnFamily, Mutation, MvccView};
use cairn_types::Revision;

impl<V: MvccView> TxnRules<'_, V> {
    /// Locks `user_key` for the transaction `lock.start_ts`. Refused, in this order, when
    /// - the key is the transaction's primary and only read (`ReadOnlyPrimary`);
    /// - `start_ts` is at or below the compaction point (`AtOrBelowCompaction`): the records
    ///   the checks below need may have been dropped, rollback markers first;
    /// - another transaction holds the key's lock (`KeyLocked`): resolve it and retry;
    /// - this transaction already committed the key (`AlreadyCommitted`: a late retry);
    /// - it was rolled back on this key (`RolledBack`): a late prewrite must not revive it;
    /// - a version was committed at or after `start_ts` (`WriteConflict`): what the
    ///   transaction read at `start_ts` is stale.
    ///
    /// The same transaction's lock already there is success with nothing to write (a retry).
    pub fn prewrite(
        &self,
        user_key: &[u8],
        lock: Lock,
        compact_revision: Revision,
    ) -> TxnResult<Applied<()>> {
        let start_ts = lock.start_ts;
        if lock.op == LockOp::Read && lock.primary == user_key {
            return Ok(Err(TxnError::ReadOnlyPrimary {
                key: user_key.to_vec(),
                start_ts,
            }));
        }
        if start_ts <= compact_revision {
            return Ok(Err(TxnError::AtOrBelowCompaction {
                key: user_key.to_vec(),
                start_ts,
                compact_revision,
            }));
        }
        if let Some(held) = lock::load(self.reader.view(), self.shard(), user_key)? {
            if held.start_ts == start_ts {
                return Ok(Ok(Applied::nothing(())));
            }
            return Ok(Err(TxnError::KeyLocked(held.info(user_key))));
        }
        let trace = trace(self.reader.view(), self.shard(), user_key, start_ts)?;
        if let Some(commit_ts) = trace.committed_at {
            return Ok(Err(TxnError::AlreadyCommitted {
                key: user_key.to_vec(),
                start_ts,
                commit_ts,
            }));
        }
        if trace.rolled_back {
            return Ok(Err(TxnError::RolledBack {
                key: user_key.to_vec(),
                start_ts,
            }));
        }
        if let Some((conflicting_revision, conflicting_start_ts)) = trace.newest_other {
            return Ok(Err(TxnError::WriteConflict {
                key: user_key.to_vec(),
                start_ts,
                conflicting_revision,
                conflicting_start_ts,
            }));
        }
        Ok(Ok(Applied {
            outcome: (),
            mutations: vec![Mutation::Put {
                cf: ColumnFamily::Lock,
                key: key::lock_key(self.shard(), user_key),
                value: lock.encode(),
            }],
        }))
    }
}
