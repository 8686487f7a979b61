//! The rules of cross-shard transactions (Percolator, as TiKV runs it without async commit):
//! what prewrite, commit, rollback, check-status and lock resolution add to or remove from
//! one shard's `lock` and `write` column families, and when they must refuse.
//!
//! Like [`crate::VersionWriter`], everything here reads through an [`crate::MvccView`] and
//! returns [`crate::Mutation`]s; the caller writes them atomically with the rest of its Raft
//! command. Nothing here knows a clock: the caller passes times (`now_ms`, a lock's creation
//! time) taken from the command, so every replica decides the same way.
//!
//! The protocol in brief: a transaction takes `start_ts`, **prewrites** a [`Lock`] on every
//! key it writes or reads by point (one of them, the **primary**, decides), takes
//! `commit_ts`, **commits** the primary (lock → `TxnPut`/`TxnDelete` at `commit_ts`), then
//! the secondaries. Anyone who meets a lock asks the primary (**check-status**): committed →
//! commit the lock forward; rolled back or expired → roll it back; alive → wait. A
//! **rollback** leaves a `Rollback` marker at `start_ts` so a prewrite arriving late is
//! refused and the primary's answer never changes.
//!
//! Outcomes are two-level: the outer `Result` is the storage failing or data not decoding
//! ([`crate::MvccError`]); the inner one is the rule's answer ([`TxnError`]), plain data that
//! every replica computes identically and that can be sent back to the client.

mod commit;
mod history;
mod lock;
mod prewrite;
mod read;
mod status;
#[cfg(test)]
mod tests;

pub use lock::{Lock, LockInfo, LockKind, LockOp};
pub use read::LockPage;
pub use status::{Resolution, TxnStatus};

use crate::error::Result;
use crate::view::{Mutation, MvccView};
use crate::MvccReader;
use cairn_types::{Revision, ShardId};

/// A rule's answer: `Ok` with what to write, or the typed refusal.
pub type TxnResult<T> = Result<std::result::Result<T, TxnError>>;

/// What a rule decided and the mutations that record it (empty for an idempotent retry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<T> {
    pub outcome: T,
    pub mutations: Vec<Mutation>,
}

impl<T> Applied<T> {
    fn nothing(outcome: T) -> Self {
        Self {
            outcome,
            mutations: Vec::new(),
        }
    }
}

/// Why a transaction rule refused. Each names the key it is about; none is a storage failure.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum TxnError {
    /// Another transaction holds the key's lock (or a read met a lock it cannot see past):
    /// resolve it through its primary, then retry.
    #[error("key {} is locked by the transaction started at {}", .0.key.escape_ascii(), .0.start_ts)]
    KeyLocked(LockInfo),
    /// A version of the key was committed at or after the transaction's `start_ts`: the
    /// transaction lost the race and must restart with a new `start_ts`.
    #[error("write conflict on key {}: committed at {conflicting_revision}, after start {start_ts}", key.escape_ascii())]
    WriteConflict {
        key: Vec<u8>,
        start_ts: Revision,
        conflicting_revision: Revision,
        /// The conflicting transaction's `start_ts`, when it was a transaction.
        conflicting_start_ts: Option<Revision>,
    },
    /// The transaction was rolled back on this key (a `Rollback` marker at its `start_ts`).
    #[error("transaction started at {start_ts} was rolled back on key {}", key.escape_ascii())]
    RolledBack { key: Vec<u8>, start_ts: Revision },
    /// The transaction already committed on this key, so it cannot be rolled back or
    /// prewritten again.
    #[error("transaction started at {start_ts} already committed key {} at {commit_ts}", key.escape_ascii())]
    AlreadyCommitted {
        key: Vec<u8>,
        start_ts: Revision,
        commit_ts: Revision,
    },
    /// Neither a lock, a commit record nor a rollback marker of the transaction on this key.
    #[error("no lock or record of the transaction started at {start_ts} on key {}", key.escape_ascii())]
    TxnNotFound { key: Vec<u8>, start_ts: Revision },
    /// `start_ts` is at or below the compaction point: the versions it would be checked
    /// against may be gone.
    #[error("start {start_ts} of key {} is at or below the compaction point {compact_revision}", key.escape_ascii())]
    AtOrBelowCompaction {
        key: Vec<u8>,
        start_ts: Revision,
        compact_revision: Revision,
    },
    /// The transaction's outcome cannot be known any more: no lock, and its records (if it
    /// had any) may have been compacted.
    #[error("status of the transaction started at {start_ts} on key {} was compacted (point {compact_revision})", key.escape_ascii())]
    StatusCompacted {
        key: Vec<u8>,
        start_ts: Revision,
        compact_revision: Revision,
    },
    /// A commit timestamp must be above the start timestamp.
    #[error("commit {commit_ts} of key {} is not above its start {start_ts}", key.escape_ascii())]
    CommitNotAboveStart {
        key: Vec<u8>,
        start_ts: Revision,
        commit_ts: Revision,
    },
    /// A commit must be above the key's newest version, or the key's history would go back.
    #[error("commit {commit_ts} of key {} is not above its newest version {newest}", key.escape_ascii())]
    NotAboveNewest {
        key: Vec<u8>,
        commit_ts: Revision,
        newest: Revision,
    },
    /// A primary must be written (put or delete): its commit record is the transaction's
    /// outcome, and a read lock commits to nothing.
    #[error("the primary {} of the transaction started at {start_ts} is only read", key.escape_ascii())]
    ReadOnlyPrimary { key: Vec<u8>, start_ts: Revision },
    /// Check-status was asked of a key whose lock names another primary.
    #[error("key {} is not the primary of the transaction started at {start_ts} (its primary is {})", key.escape_ascii(), primary.escape_ascii())]
    NotPrimary {
        key: Vec<u8>,
        start_ts: Revision,
        primary: Vec<u8>,
    },
}

/// The transaction rules over one shard's view.
pub struct TxnRules<'v, V: MvccView> {
    reader: MvccReader<'v, V>,
}

impl<'v, V: MvccView> TxnRules<'v, V> {
    pub fn new(view: &'v V, shard: ShardId) -> Self {
        Self {
            reader: MvccReader::new(view, shard),
        }
    }

    pub fn reader(&self) -> &MvccReader<'v, V> {
        &self.reader
    }

    pub fn shard(&self) -> ShardId {
        self.reader.shard()
    }
}
