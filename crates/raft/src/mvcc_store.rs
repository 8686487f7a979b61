//! RocksDB as the storage under Cairn's MVCC rules (`cairn-mvcc`): a read view over the node's
//! database (optionally at a RocksDB snapshot), the per-shard compaction points, and the
//! compaction filter that drops the versions no read can see any more.
//!
//! The compaction filter ignores RocksDB snapshots (RocksDB's own warning: data seen from a
//! snapshot may disappear after a compaction). So a reader checks a shard's compaction point
//! **after** reading: the point only rises, every drop so far used a point at most the one it
//! then sees, and a read at or above that point lost nothing it needs.

use crate::error::StorageError;
use cairn_mvcc::compaction::{CompactionFilter as VersionFilter, Decision};
use cairn_mvcc::{ColumnFamily, Cursor, MvccError, MvccView};
use cairn_types::{Revision, ShardId};
use rocksdb::compaction_filter::{CompactionFilter, Decision as RocksDecision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{DBRawIterator, ReadOptions, DB};
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Every shard's compaction point on this node, as applied and made durable by its state
/// machine; read by the compaction filter and by readers.
#[derive(Debug, Default)]
pub struct CompactionPoints {
    points: RwLock<HashMap<ShardId, Revision>>,
    /// Versions the filter dropped, and tombstones it had to keep (see `cairn_mvcc::compaction`).
    pub versions_dropped: AtomicU64,
    pub tombstones_kept: AtomicU64,
}

impl CompactionPoints {
    pub fn get(&self, shard: ShardId) -> Revision {
        self.points
            .read()
            .expect("compaction points lock poisoned")
            .get(&shard)
            .copied()
            .unwrap_or_default()
    }

    /// Raises `shard`'s point to `point` (never lowers it, except through [`Self::reset`]).
    pub fn raise(&self, shard: ShardId, point: Revision) {
        let mut points = self
            .points
            .write()
            .expect("compaction points lock poisoned");
        let entry = points.entry(shard).or_default();
        *entry = (*entry).max(point);
    }

    /// Sets `shard`'s point as loaded from its state (open, snapshot install, removal).
    pub fn reset(&self, shard: ShardId, point: Revision) {
        let mut points = self
            .points
            .write()
            .expect("compaction points lock poisoned");
        if point == Revision(0) {
            points.remove(&shard);
        } else {
            points.insert(shard, point);
        }
    }
}

pub fn storage_error(error: MvccError) -> StorageError {
    match error {
        MvccError::Corrupt { what, reason } => {
            StorageError::Inconsistent(format!("corrupt {what}: {reason}"))
        }
        MvccError::Storage(source) => match source.downcast::<rocksdb::Error>() {
            Ok(rocks) => StorageError::RocksDb(*rocks),
            Err(other) => StorageError::Inconsistent(other.to_string()),
        },
    }
}

fn rocks_error(error: rocksdb::Error) -> MvccError {
    MvccError::Storage(Box::new(error))
}

/// The MVCC column families of the node's database, live or at a RocksDB snapshot.
pub struct RocksView<'a> {
    db: &'a DB,
    snapshot: Option<&'a rocksdb::Snapshot<'a>>,
}

impl<'a> RocksView<'a> {
    pub fn new(db: &'a DB, snapshot: Option<&'a rocksdb::Snapshot<'a>>) -> Self {
        Self { db, snapshot }
    }
}

pub struct RocksCursor<'a> {
    iter: DBRawIterator<'a>,
}

impl Cursor for RocksCursor<'_> {
    fn seek(&mut self, key: &[u8]) -> cairn_mvcc::Result<()> {
        self.iter.seek(key);
        self.iter.status().map_err(rocks_error)
    }

    fn next(&mut self) -> cairn_mvcc::Result<()> {
        if self.iter.valid() {
            self.iter.next();
        }
        self.iter.status().map_err(rocks_error)
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        if !self.iter.valid() {
            return None;
        }
        Some((self.iter.key()?, self.iter.value()?))
    }
}

impl MvccView for RocksView<'_> {
    type Cursor<'c>
        = RocksCursor<'c>
    where
        Self: 'c;

    fn cursor(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: &[u8],
        point: bool,
    ) -> cairn_mvcc::Result<RocksCursor<'_>> {
        let handle = self
            .db
            .cf_handle(cf.name())
            .expect("MVCC column families are created at open");
        let mut options = ReadOptions::default();
        if let Some(snapshot) = self.snapshot {
            options.set_snapshot(snapshot);
        }
        options.set_iterate_lower_bound(lower.to_vec());
        options.set_iterate_upper_bound(upper.to_vec());
        if point {
            // One key's versions share its prefix: the prefix Bloom filters skip every file
            // that does not hold the key, as a point lookup's would.
            options.set_prefix_same_as_start(true);
        } else {
            options.set_total_order_seek(true);
        }
        Ok(RocksCursor {
            iter: self.db.raw_iterator_cf_opt(&handle, options),
        })
    }
}

/// The `write` column family's prefix: a version key without its revision suffix.
pub fn versions_prefix_of(key: &[u8]) -> &[u8] {
    &key[..key.len() - cairn_mvcc::key::REVISION_BYTES]
}

/// Whether `key` is a version key (long enough to have a prefix).
pub fn is_version_key(key: &[u8]) -> bool {
    key.len() >= cairn_mvcc::key::SHARD_PREFIX_BYTES + 2 + cairn_mvcc::key::REVISION_BYTES
}

/// Creates one filter per compaction of the `write` column family.
pub struct WriteFilterFactory {
    pub points: Arc<CompactionPoints>,
}

impl CompactionFilterFactory for WriteFilterFactory {
    type Filter = WriteFilter;

    fn create(&mut self, context: CompactionFilterContext) -> WriteFilter {
        WriteFilter {
            points: self.points.clone(),
            full: context.is_full_compaction,
            shard: None,
            filter: VersionFilter::new(Revision(0), false),
            dropped: 0,
            tombstones_kept: 0,
        }
    }

    fn name(&self) -> &CStr {
        c"cairn.mvcc.write"
    }
}

/// Drops versions by each shard's compaction point (see `cairn_mvcc::compaction`).
pub struct WriteFilter {
    points: Arc<CompactionPoints>,
    full: bool,
    /// The shard of the keys being visited, and its filter state.
    shard: Option<ShardId>,
    filter: VersionFilter,
    dropped: u64,
    tombstones_kept: u64,
}

impl CompactionFilter for WriteFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> RocksDecision {
        if !is_version_key(key) {
            return RocksDecision::Keep;
        }
        let shard = ShardId(u64::from_be_bytes(key[..8].try_into().expect("8 bytes")));
        if self.shard != Some(shard) {
            // Keys come in order, so each shard's keys come together: one point per shard.
            self.shard = Some(shard);
            self.filter = VersionFilter::new(self.points.get(shard), self.full);
        }
        match self.filter.decide(key, value) {
            Decision::Keep => RocksDecision::Keep,
            Decision::Drop => {
                self.dropped += 1;
                RocksDecision::Remove
            }
            Decision::KeepObsoleteTombstone => {
                self.tombstones_kept += 1;
                RocksDecision::Keep
            }
        }
    }

    fn name(&self) -> &CStr {
        c"cairn.mvcc.write"
    }
}

impl Drop for WriteFilter {
    fn drop(&mut self) {
        self.points
            .versions_dropped
            .fetch_add(self.dropped, Ordering::Relaxed);
        self.points
            .tombstones_kept
            .fetch_add(self.tombstones_kept, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_mvcc::{MvccReader, RangeBounds, RangeOptions, VersionWriter};

    /// The RocksDB view under the MVCC rules: point reads through the prefix filters, ranges
    /// in total order, across memtable and files.
    #[test]
    fn rocks_view_serves_points_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            crate::database::open_database(dir.path(), &Default::default(), Default::default())
                .unwrap();
        let shard = ShardId(3);
        for (revision, key) in [(1, "a"), (2, "b"), (3, "a"), (4, "c")] {
            let view = RocksView::new(&db, None);
            let mut writer = VersionWriter::new(&view, shard, Revision(revision));
            writer.put(key.as_bytes(), vec![revision as u8]).unwrap();
            let mut batch = rocksdb::WriteBatch::default();
            for mutation in writer.into_mutations() {
                crate::kv::write_mutation(&db, &mut batch, mutation);
            }
            db.write(batch).unwrap();
            if revision == 2 {
                db.flush_cf(db.cf_handle("write").unwrap()).unwrap();
            }
        }
        let view = RocksView::new(&db, None);
        let reader = MvccReader::new(&view, shard);
        let a = reader.get(b"a", Revision::LATEST, false).unwrap().unwrap();
        assert_eq!((a.mod_revision, a.version), (Revision(3), 2));
        let old = reader.get(b"a", Revision(2), false).unwrap().unwrap();
        assert_eq!(old.mod_revision, Revision(1));
        let all = RangeBounds {
            start: Vec::new(),
            end: None,
        };
        let options = RangeOptions {
            limit: 10,
            keys_only: false,
            count_only: false,
        };
        let keys: Vec<Vec<u8>> = reader
            .range(&all, Revision::LATEST, options)
            .unwrap()
            .versions
            .into_iter()
            .map(|v| v.key)
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let at_two = reader.range(&all, Revision(2), options).unwrap().versions;
        assert_eq!(at_two.len(), 2);
    }
}
