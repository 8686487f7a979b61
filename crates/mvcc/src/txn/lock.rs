//! The lock record: one per key in the `lock` column family, written by prewrite and removed
//! by commit or rollback.

use crate::error::{MvccError, Result};
use crate::key;
use crate::view::{ColumnFamily, Cursor, MvccView};
use cairn_types::{codec, Revision, ShardId};
use serde::{Deserialize, Serialize};

/// What the transaction does to the locked key when it commits.
///
/// Values are carried in the lock itself (no separate `data` column family): a transaction's
/// total size is bounded by its configured limit, so a lock is never larger than a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    Put {
        value: Vec<u8>,
    },
    Delete,
    /// The transaction only reads (or compares) this key: the lock keeps writers out until
    /// the transaction is decided, so what it read at `start_ts` is still true at
    /// `commit_ts`. Readers do not wait for it, and committing it writes nothing.
    Read,
}

impl LockOp {
    pub fn kind(&self) -> LockKind {
        match self {
            LockOp::Put { .. } => LockKind::Put,
            LockOp::Delete => LockKind::Delete,
            LockOp::Read => LockKind::Read,
        }
    }
}

/// A lock's op without its value, for errors and scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    Put,
    Delete,
    Read,
}

/// A transaction's lock on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The key whose lock (or commit record) decides the transaction.
    pub primary: Vec<u8>,
    pub start_ts: Revision,
    /// How long after `created_at_ms` the lock may be rolled back by others.
    pub ttl_ms: u64,
    /// When the lock was written, in the caller's milliseconds (carried by the command, so
    /// every replica agrees).
    pub created_at_ms: u64,
    pub op: LockOp,
    /// The transaction's write id, opaque here: lets a retried transaction find its outcome.
    pub write_id: Option<Vec<u8>>,
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        codec::decode(bytes).map_err(|error| MvccError::corrupt("lock record", error))
    }

    /// When others may roll it back: `created_at_ms + ttl_ms`, saturating.
    pub fn expires_at_ms(&self) -> u64 {
        self.created_at_ms.saturating_add(self.ttl_ms)
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms()
    }

    pub fn info(&self, key: &[u8]) -> LockInfo {
        LockInfo {
            key: key.to_vec(),
            primary: self.primary.clone(),
            start_ts: self.start_ts,
            ttl_ms: self.ttl_ms,
            created_at_ms: self.created_at_ms,
            kind: self.op.kind(),
        }
    }
}

/// What a caller needs to resolve a lock it met: the key, and where to ask (the primary).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub key: Vec<u8>,
    pub primary: Vec<u8>,
    pub start_ts: Revision,
    pub ttl_ms: u64,
    pub created_at_ms: u64,
    pub kind: LockKind,
}

/// The lock on `user_key`, if any.
pub(crate) fn load<V: MvccView>(view: &V, shard: ShardId, user_key: &[u8]) -> Result<Option<Lock>> {
    let lock_key = key::lock_key(shard, user_key);
    let upper = key::after_versions(&lock_key);
    // Not a point cursor: the `lock` column family has no prefix extractor.
    let mut cursor = view.cursor(ColumnFamily::Lock, &lock_key, &upper, false)?;
    cursor.seek(&lock_key)?;
    match cursor.current() {
        Some((found, value)) if found == lock_key.as_slice() => Ok(Some(Lock::decode(value)?)),
        _ => Ok(None),
    }
}
