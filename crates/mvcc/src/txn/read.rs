//! Reads that respect locks. A read at `R` must not step past a lock whose `start_ts <= R`:
//! that transaction may commit (or have committed, on its primary) at a `commit_ts <= R`, and
//! reading the older version would show half of it. A lock with `start_ts > R` cannot commit
//! at or below `R` and is invisible. Read locks never block reads (they change nothing).
//!
//! The caller resolves what is reported (check-status on the primary, then resolve-lock) and
//! reads again; nothing here waits.

use super::lock::{self, Lock, LockInfo, LockKind};
use super::{TxnError, TxnResult};
use crate::error::Result;
use crate::key;
use crate::reader::{MvccReader, RangeBounds, Version};
use crate::view::{ColumnFamily, Cursor, MvccView};
use cairn_types::Revision;

/// Locks found in a range, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockPage {
    pub locks: Vec<LockInfo>,
    /// More matching locks follow the page.
    pub more: bool,
}

/// Whether a lock stops a read at `at`.
fn blocks_read(lock: &Lock, at: Revision) -> bool {
    lock.op.kind() != LockKind::Read && lock.start_ts <= at
}

impl<V: MvccView> MvccReader<'_, V> {
    /// The lock on `user_key`, if any.
    pub fn lock(&self, user_key: &[u8]) -> Result<Option<Lock>> {
        lock::load(self.view(), self.shard(), user_key)
    }

    /// The key as a read at `at` sees it, or `KeyLocked` when a lock may hide a version at or
    /// below `at`.
    pub fn get_checked(
        &self,
        user_key: &[u8],
        at: Revision,
        keys_only: bool,
    ) -> TxnResult<Option<Version>> {
        if let Some(held) = self.lock(user_key)? {
            if blocks_read(&held, at) {
                return Ok(Err(TxnError::KeyLocked(held.info(user_key))));
            }
        }
        Ok(Ok(self.get(user_key, at, keys_only)?))
    }

    /// The locks in `bounds` with `start_ts <= max_start_ts`, at most `limit` of them. A read
    /// of the range at `R` asks with `max_start_ts = R` and `include_read_locks = false`,
    /// and reads the range only once this is empty; the expired-lock scanner asks with
    /// [`Revision::LATEST`] and every kind.
    pub fn locks_in_range(
        &self,
        bounds: &RangeBounds,
        max_start_ts: Revision,
        include_read_locks: bool,
        limit: usize,
    ) -> Result<LockPage> {
        let lower = key::range_start(self.shard(), &bounds.start);
        let upper = key::range_end(self.shard(), bounds.end.as_deref());
        let mut page = LockPage::default();
        if lower >= upper {
            return Ok(page);
        }
        let mut cursor = self
            .view()
            .cursor(ColumnFamily::Lock, &lower, &upper, false)?;
        cursor.seek(&lower)?;
        while let Some((storage_key, value)) = cursor.current() {
            let held = Lock::decode(value)?;
            let wanted = held.start_ts <= max_start_ts
                && (include_read_locks || held.op.kind() != LockKind::Read);
            if wanted {
                if page.locks.len() >= limit {
                    page.more = true;
                    break;
                }
                page.locks
                    .push(held.info(&key::parse_lock_key(storage_key)?));
            }
            cursor.next()?;
        }
        Ok(page)
    }
}
