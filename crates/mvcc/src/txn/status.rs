//! Check-status, asked of a transaction's primary key by whoever meets one of its locks, and
//! lock resolution, which carries the primary's answer to another key.

use super::history::trace;
use super::lock::{self, LockInfo};
use super::{Applied, TxnError, TxnResult, TxnRules};
use crate::view::MvccView;
use cairn_types::Revision;
use serde::{Deserialize, Serialize};

/// A transaction's state as its primary key records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnStatus {
    /// Undecided: the primary's lock is alive for `ttl_remaining_ms` more. Wait or retry.
    Locked {
        lock: LockInfo,
        ttl_remaining_ms: u64,
    },
    /// Committed at `commit_ts`: commit its other locks forward at the same timestamp.
    Committed { commit_ts: Revision },
    /// Rolled back (now or before): roll its other locks back.
    RolledBack,
}

/// What to do with a transaction's lock on another key, from its primary's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    Commit { commit_ts: Revision },
    Rollback,
}

impl<V: MvccView> TxnRules<'_, V> {
    /// The status of the transaction `start_ts` whose primary is `primary`, deciding it when
    /// it may be decided:
    /// - its lock is there and alive at `now_ms`: `Locked`;
    /// - its lock expired: rolled back now (lock removed, marker written): `RolledBack`;
    /// - a commit record: `Committed`; a rollback marker: `RolledBack`;
    /// - nothing (its prewrite has not arrived, and may never): with `rollback_if_missing`,
    ///   a marker is written so the late prewrite is refused, and `RolledBack`; without,
    ///   `TxnNotFound`, for a caller that met a lock still alive and would rather wait than
    ///   abort a transaction whose prewrites are merely in flight.
    ///
    /// At or below the compaction point a missing record proves nothing (it may have been
    /// dropped), so that case is `StatusCompacted`. Once `Committed` or `RolledBack`, the
    /// answer never changes.
    pub fn check_txn_status(
        &self,
        primary: &[u8],
        start_ts: Revision,
        now_ms: u64,
        rollback_if_missing: bool,
        compact_revision: Revision,
    ) -> TxnResult<Applied<TxnStatus>> {
        if let Some(held) = lock::load(self.reader.view(), self.shard(), primary)? {
            if held.start_ts == start_ts {
                if held.primary != primary {
                    return Ok(Err(TxnError::NotPrimary {
                        key: primary.to_vec(),
                        start_ts,
                        primary: held.primary,
                    }));
                }
                if !held.is_expired(now_ms) {
                    return Ok(Ok(Applied::nothing(TxnStatus::Locked {
                        ttl_remaining_ms: held.expires_at_ms() - now_ms,
                        lock: held.info(primary),
                    })));
                }
                return Ok(self.rollback(primary, start_ts)?.map(|rolled| Applied {
                    outcome: TxnStatus::RolledBack,
                    mutations: rolled.mutations,
                }));
            }
        }
        let trace = trace(self.reader.view(), self.shard(), primary, start_ts)?;
        if let Some(commit_ts) = trace.committed_at {
            return Ok(Ok(Applied::nothing(TxnStatus::Committed { commit_ts })));
        }
        if trace.rolled_back {
            return Ok(Ok(Applied::nothing(TxnStatus::RolledBack)));
        }
        if start_ts <= compact_revision {
            return Ok(Err(TxnError::StatusCompacted {
                key: primary.to_vec(),
                start_ts,
                compact_revision,
            }));
        }
        if !rollback_if_missing {
            return Ok(Err(TxnError::TxnNotFound {
                key: primary.to_vec(),
                start_ts,
            }));
        }
        Ok(self.rollback(primary, start_ts)?.map(|rolled| Applied {
            outcome: TxnStatus::RolledBack,
            mutations: rolled.mutations,
        }))
    }

    /// Applies the primary's decision to the transaction's lock on `user_key`: commit it
    /// forward at the primary's `commit_ts`, or roll it back. Idempotent, as commit and
    /// rollback are, and more: committing finds nothing (`TxnNotFound`) only when the lock
    /// was a read lock already resolved, because the primary committed only after every
    /// prewrite succeeded, so this key was locked and has since been committed (a put or
    /// delete leaves a record, a read lock nothing). That counts as done.
    pub fn resolve_lock(
        &self,
        user_key: &[u8],
        start_ts: Revision,
        resolution: Resolution,
    ) -> TxnResult<Applied<()>> {
        Ok(match resolution {
            Resolution::Commit { commit_ts } => {
                match self.commit(user_key, start_ts, commit_ts)? {
                    Ok(committed) => Ok(Applied {
                        outcome: (),
                        mutations: committed.mutations,
                    }),
                    Err(TxnError::TxnNotFound { .. }) => Ok(Applied::nothing(())),
                    Err(refused) => Err(refused),
                }
            }
            Resolution::Rollback => self.rollback(user_key, start_ts)?,
        })
    }
}
