//! Where one-phase writes and reads stop at transaction locks (D94).
//!
//! A one-phase write (put, delete, single-shard transaction) stops at any lock on a key it
//! writes, and at a put or delete lock on a key it reads or compares: it would otherwise
//! change a key under a transaction that checked it at `start_ts`, or read half of one.
//! A read at `R` stops at put and delete locks with `start_ts <= R` (a read at the latest
//! revision: at every put or delete lock), except the reading transaction's own. Read locks
//! never stop a read. The caller answers `KeyLocked`; the gateway resolves and retries.
//!
//! Point checks are one RocksDB point lookup in the `lock` column family with the storage
//! key built in a per-thread buffer and per-thread read options: no iterator and no
//! allocation on the hot path (a put or a latest read of a key nobody locked costs one
//! memtable probe and Bloom filter checks).

use crate::error::Result;
use crate::mvcc_store::{storage_error, RocksView};
use cairn_mvcc::{key, ColumnFamily, Cursor, Lock, LockInfo, LockKind, MvccView};
use cairn_types::{Revision, ShardId};
use rocksdb::{ReadOptions, DB};
use std::cell::RefCell;

thread_local! {
    /// The storage key of the lock being looked up: reused, so a check allocates nothing once
    /// the thread has seen a key as long.
    static LOCK_KEY: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// Read options, reused: RocksDB's C API allocates a fresh set per plain `get`. The
    /// snapshot set is set again before every use (it points at the caller's snapshot only
    /// for the duration of one lookup); the live set never has one.
    static SNAPSHOT_OPTIONS: RefCell<ReadOptions> = RefCell::new(ReadOptions::default());
    static LIVE_OPTIONS: ReadOptions = ReadOptions::default();
}

/// Whether a read at `at` (by the transaction `own_start_ts`, if any) must stop at `lock`.
pub fn stops_read(lock: &Lock, at: Revision, own_start_ts: Option<Revision>) -> bool {
    lock.op.kind() != LockKind::Read && lock.start_ts <= at && Some(lock.start_ts) != own_start_ts
}

/// The lock on `user_key`, as `snapshot` (or the live database) sees it.
pub fn lock_of(
    db: &DB,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    shard: ShardId,
    user_key: &[u8],
) -> Result<Option<Lock>> {
    let cf = db
        .cf_handle(ColumnFamily::Lock.name())
        .expect("MVCC column families are created at open");
    LOCK_KEY.with(|buffer| -> Result<Option<Lock>> {
        let mut lock_key = buffer.borrow_mut();
        lock_key.clear();
        lock_key.extend_from_slice(&key::shard_prefix(shard));
        key::encode_user_key_into(user_key, &mut lock_key);
        let found = match snapshot {
            Some(snapshot) => SNAPSHOT_OPTIONS.with(|options| {
                let mut options = options.borrow_mut();
                options.set_snapshot(snapshot);
                db.get_pinned_cf_opt(cf, &lock_key[..], &options)
            })?,
            None => {
                LIVE_OPTIONS.with(|options| db.get_pinned_cf_opt(cf, &lock_key[..], options))?
            }
        };
        match found {
            None => Ok(None),
            Some(bytes) => Ok(Some(Lock::decode(&bytes).map_err(storage_error)?)),
        }
    })
}

/// The lock on `user_key` that stops a read at `at`, if any.
pub fn lock_stopping_read(
    db: &DB,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    shard: ShardId,
    user_key: &[u8],
    at: Revision,
    own_start_ts: Option<Revision>,
) -> Result<Option<LockInfo>> {
    Ok(lock_of(db, snapshot, shard, user_key)?
        .filter(|lock| stops_read(lock, at, own_start_ts))
        .map(|lock| lock.info(user_key)))
}

/// The first lock (in key order) of the keys in `[start, end)` that stops a read at `at`.
/// One iterator over the shard's locks in the range: locks are few, so this is short.
pub fn range_lock_stopping_read(
    view: &RocksView<'_>,
    shard: ShardId,
    start: &[u8],
    end: Option<&[u8]>,
    at: Revision,
    own_start_ts: Option<Revision>,
) -> Result<Option<LockInfo>> {
    let lower = key::range_start(shard, start);
    let upper = key::range_end(shard, end);
    if lower >= upper {
        return Ok(None);
    }
    let mut cursor = view
        .cursor(ColumnFamily::Lock, &lower, &upper, false)
        .map_err(storage_error)?;
    cursor.seek(&lower).map_err(storage_error)?;
    while let Some((storage_key, value)) = cursor.current() {
        let lock = Lock::decode(value).map_err(storage_error)?;
        if stops_read(&lock, at, own_start_ts) {
            let user_key = key::parse_lock_key(storage_key).map_err(storage_error)?;
            return Ok(Some(lock.info(&user_key)));
        }
        cursor.next().map_err(storage_error)?;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_lookup_uses_the_rules_lock_key() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            crate::database::open_database(dir.path(), &Default::default(), Default::default())
                .unwrap();
        let shard = ShardId(4);
        let lock = Lock {
            primary: b"p".to_vec(),
            start_ts: Revision(10),
            ttl_ms: 100,
            created_at_ms: 5,
            op: cairn_mvcc::LockOp::Delete,
            write_id: None,
        };
        let cf = db.cf_handle("lock").unwrap();
        db.put_cf(cf, key::lock_key(shard, b"a\x00b"), lock.encode())
            .unwrap();
        assert_eq!(
            lock_of(&db, None, shard, b"a\x00b").unwrap(),
            Some(lock.clone())
        );
        assert_eq!(lock_of(&db, None, shard, b"a").unwrap(), None);
        // A snapshot sees the locks of its moment, whatever the lookups before it saw.
        let before = db.snapshot();
        db.delete_cf(cf, key::lock_key(shard, b"a\x00b")).unwrap();
        let after = db.snapshot();
        assert_eq!(lock_of(&db, Some(&after), shard, b"a\x00b").unwrap(), None);
        assert_eq!(
            lock_of(&db, Some(&before), shard, b"a\x00b").unwrap(),
            Some(lock.clone())
        );
        assert_eq!(lock_of(&db, Some(&after), shard, b"a\x00b").unwrap(), None);
        assert_eq!(lock_of(&db, None, shard, b"a\x00b").unwrap(), None);
        drop((before, after));
        db.put_cf(cf, key::lock_key(shard, b"a\x00b"), lock.encode())
            .unwrap();
        assert_eq!(lock_of(&db, None, ShardId(5), b"a\x00b").unwrap(), None);
        // Below its start_ts, or the reader's own: not stopped. Read locks never stop reads.
        assert!(!stops_read(&lock, Revision(9), None));
        assert!(stops_read(&lock, Revision(10), None));
        assert!(stops_read(&lock, Revision::LATEST, Some(Revision(3))));
        assert!(!stops_read(&lock, Revision::LATEST, Some(Revision(10))));
        let read_lock = Lock {
            op: cairn_mvcc::LockOp::Read,
            ..lock
        };
        assert!(!stops_read(&read_lock, Revision::LATEST, None));
        let view = RocksView::new(&db, None);
        let found = range_lock_stopping_read(&view, shard, b"a", None, Revision(10), None)
            .unwrap()
            .unwrap();
        assert_eq!(found.key, b"a\x00b");
        assert_eq!(
            range_lock_stopping_read(&view, shard, b"a", Some(b"a\x00"), Revision(10), None)
                .unwrap(),
            None
        );
    }
}
