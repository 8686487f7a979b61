//! Commit and rollback of one key's lock: the second phase, and its undoing.

use super::history::trace;
use super::lock::{self, LockOp};
use super::{Applied, TxnError, TxnResult, TxnRules};
use crate::error::Result;
use crate::key;
use crate::record::WriteRecord;
use crate::view::{ColumnFamily, Mutation, MvccView};
use cairn_types::Revision;

impl<V: MvccView> TxnRules<'_, V> {
    /// Commits the transaction `start_ts` on `user_key` at `commit_ts`: its lock becomes a
    /// `TxnPut` or `TxnDelete` version at `commit_ts` (a read lock just goes), and the lock
    /// is removed. The outcome is the commit timestamp on record.
    ///
    /// Without the lock: a commit record of the transaction makes this an idempotent success
    /// (with the recorded `commit_ts`); a rollback marker is `RolledBack`; nothing is
    /// `TxnNotFound` — which is also what a retried commit of a *read* lock gets, since
    /// committing one leaves no record (the caller, who knows the primary committed, treats
    /// it as done).
    pub fn commit(
        &self,
        user_key: &[u8],
        start_ts: Revision,
        commit_ts: Revision,
    ) -> TxnResult<Applied<Revision>> {
        if commit_ts <= start_ts {
            return Ok(Err(TxnError::CommitNotAboveStart {
                key: user_key.to_vec(),
                start_ts,
                commit_ts,
            }));
        }
        let held = lock::load(self.reader.view(), self.shard(), user_key)?;
        let Some(held) = held.filter(|held| held.start_ts == start_ts) else {
            let trace = trace(self.reader.view(), self.shard(), user_key, start_ts)?;
            return Ok(match trace.committed_at {
                Some(recorded) => Ok(Applied::nothing(recorded)),
                None if trace.rolled_back => Err(TxnError::RolledBack {
                    key: user_key.to_vec(),
                    start_ts,
                }),
                None => Err(TxnError::TxnNotFound {
                    key: user_key.to_vec(),
                    start_ts,
                }),
            });
        };
        // The lock kept every other writer out since prewrite checked that nothing was
        // committed at or after `start_ts`, so this holds unless the caller broke the
        // protocol (or a one-phase write ignored the lock); refuse rather than rewrite history.
        if let Some((newest, _)) = self.reader.record_at(user_key, Revision::LATEST)? {
            if newest >= commit_ts {
                return Ok(Err(TxnError::NotAboveNewest {
                    key: user_key.to_vec(),
                    commit_ts,
                    newest,
                }));
            }
        }
        let mut mutations = Vec::with_capacity(2);
        let record = match held.op {
            LockOp::Put { value } => Some(self.txn_put(user_key, start_ts, commit_ts, value)?),
            LockOp::Delete => Some(WriteRecord::TxnDelete { start_ts }),
            LockOp::Read => None,
        };
        if let Some(record) = record {
            mutations.push(Mutation::Put {
                cf: ColumnFamily::Write,
                key: key::version_key(self.shard(), user_key, commit_ts),
                value: record.encode(),
            });
        }
        mutations.push(self.remove_lock(user_key));
        Ok(Ok(Applied {
            outcome: commit_ts,
            mutations,
        }))
    }

    /// Rolls the transaction `start_ts` back on `user_key`: removes its lock if there, and
    /// leaves a `Rollback` marker at `start_ts` either way, so a prewrite arriving late is
    /// refused. Idempotent; `AlreadyCommitted` if the transaction committed the key.
    pub fn rollback(&self, user_key: &[u8], start_ts: Revision) -> TxnResult<Applied<()>> {
        let held = lock::load(self.reader.view(), self.shard(), user_key)?;
        let ours = held.is_some_and(|held| held.start_ts == start_ts);
        let trace = trace(self.reader.view(), self.shard(), user_key, start_ts)?;
        if let Some(commit_ts) = trace.committed_at {
            // Our lock cannot be there too: prewrite refuses a transaction that committed
            // the key, and committing a read lock leaves no record to find.
            return Ok(Err(TxnError::AlreadyCommitted {
                key: user_key.to_vec(),
                start_ts,
                commit_ts,
            }));
        }
        let mut mutations = Vec::with_capacity(2);
        if ours {
            mutations.push(self.remove_lock(user_key));
        }
        // A version already at `start_ts` (never, with unique oracle timestamps) must not be
        // overwritten; it refuses a late prewrite by itself (a version at `start_ts` is a
        // write conflict).
        if !trace.rolled_back && !trace.version_at_start {
            mutations.push(Mutation::Put {
                cf: ColumnFamily::Write,
                key: key::version_key(self.shard(), user_key, start_ts),
                value: WriteRecord::Rollback.encode(),
            });
        }
        Ok(Ok(Applied {
            outcome: (),
            mutations,
        }))
    }

    /// The committed put of `value`: one more version of the key, or version 1 with
    /// `create_revision = commit_ts` when it does not exist (as [`crate::VersionWriter::put`]).
    fn txn_put(
        &self,
        user_key: &[u8],
        start_ts: Revision,
        commit_ts: Revision,
        value: Vec<u8>,
    ) -> Result<WriteRecord> {
        let current = self.reader.get(user_key, Revision::LATEST, true)?;
        Ok(match current {
            Some(current) => WriteRecord::TxnPut {
                start_ts,
                create_revision: current.create_revision,
                version: current.version + 1,
                value,
            },
            None => WriteRecord::TxnPut {
                start_ts,
                create_revision: commit_ts,
                version: 1,
                value,
            },
        })
    }

    pub(super) fn remove_lock(&self, user_key: &[u8]) -> Mutation {
        Mutation::Delete {
            cf: ColumnFamily::Lock,
            key: key::lock_key(self.shard(), user_key),
        }
    }
}
