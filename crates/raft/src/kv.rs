//! The key-value semantics of one shard: what a write command does (conditions, compares,
//! transaction branches) and what reads return, on top of the MVCC rules of `cairn-mvcc`,
//! which decide how versions are stored and which one a read at a revision sees. Pure with
//! respect to Raft: it reads through a [`KvView`] and writes into a RocksDB `WriteBatch`; the
//! state machine decides when batches are written.

use crate::command::*;
use crate::error::{Result, StorageError};
use crate::lock_checks;
use crate::mvcc_store::{storage_error, RocksView};
use crate::newest_cache::NewestCache;
use cairn_mvcc::{
    ColumnFamily, LockInfo, Mutation, MvccReader, MvccView, Overlay, RangeBounds, RangeOptions,
    TxnError, Version, VersionWriter,
};
use cairn_types::{Revision, ShardId};
use rocksdb::{WriteBatch, DB};

fn key_value(version: Version) -> KeyValue {
    KeyValue {
        key: version.key,
        value: version.value,
        create_revision: version.create_revision,
        mod_revision: version.mod_revision,
        version: version.version,
    }
}

/// Reads one shard's keys, from the live database or from a RocksDB snapshot (so that a
/// range and the revision it reports are one consistent view).
pub struct KvView<'a> {
    db: &'a DB,
    shard: ShardId,
    snapshot: Option<&'a rocksdb::Snapshot<'a>>,
}

impl<'a> KvView<'a> {
    pub fn new(db: &'a DB, shard: ShardId) -> Self {
        Self {
            db,
            shard,
            snapshot: None,
        }
    }

    pub fn with_snapshot(db: &'a DB, shard: ShardId, snapshot: &'a rocksdb::Snapshot<'a>) -> Self {
        Self {
            db,
            shard,
            snapshot: Some(snapshot),
        }
    }

    fn rocks(&self) -> RocksView<'a> {
        RocksView::new(self.db, self.snapshot)
    }

    /// The key at its newest version.
    pub fn get(&self, key: &[u8], keys_only: bool) -> Result<Option<KeyValue>> {
        self.get_at(key, Revision::LATEST, keys_only)
    }

    /// The key as a read at revision `at` sees it.
    pub fn get_at(&self, key: &[u8], at: Revision, keys_only: bool) -> Result<Option<KeyValue>> {
        get_at(&self.rocks(), self.shard, key, at, keys_only)
    }

    /// The key as a read at `at` sees it ([`Revision::LATEST`]: the newest version), or the
    /// transaction lock that stops the read (D94): one lock lookup, then one seek.
    pub fn get_checked(
        &self,
        key: &[u8],
        at: Revision,
        keys_only: bool,
        own_start_ts: Option<Revision>,
    ) -> Result<std::result::Result<Option<KeyValue>, LockInfo>> {
        if let Some(info) = lock_checks::lock_stopping_read(
            self.db,
            self.snapshot,
            self.shard,
            key,
            at,
            own_start_ts,
        )? {
            return Ok(Err(info));
        }
        Ok(Ok(self.get_at(key, at, keys_only)?))
    }

    /// As [`KvView::range_at`], or the first transaction lock in the range that stops the
    /// read. Any such lock in `[start, end)` stops it, also past the page's last key: the
    /// next page would meet it anyway.
    pub fn range_checked(
        &self,
        range: &Range,
        at: Revision,
        reported: Revision,
        own_start_ts: Option<Revision>,
    ) -> Result<std::result::Result<RangeResult, LockInfo>> {
        if let Some(info) = lock_checks::range_lock_stopping_read(
            &self.rocks(),
            self.shard,
            &range.start,
            range.end.as_deref(),
            at,
            own_start_ts,
        )? {
            return Ok(Err(info));
        }
        Ok(Ok(self.range_at(range, at, reported)?))
    }

    /// Keys in the range at their newest versions, reported at `revision`.
    pub fn range(&self, range: &Range, revision: Revision) -> Result<RangeResult> {
        self.range_at(range, Revision::LATEST, revision)
    }

    /// Keys in the range in ascending order as a read at `at` sees them, at most
    /// `range.limit` of them (or all of them, counted, with `count_only`); the result reports
    /// `reported` as its revision.
    pub fn range_at(&self, range: &Range, at: Revision, reported: Revision) -> Result<RangeResult> {
        range_at(&self.rocks(), self.shard, range, at, reported)
    }
}

fn get_at<V: MvccView>(
    view: &V,
    shard: ShardId,
    key: &[u8],
    at: Revision,
    keys_only: bool,
) -> Result<Option<KeyValue>> {
    Ok(MvccReader::new(view, shard)
        .get(key, at, keys_only)
        .map_err(storage_error)?
        .map(key_value))
}

fn range_at<V: MvccView>(
    view: &V,
    shard: ShardId,
    range: &Range,
    at: Revision,
    reported: Revision,
) -> Result<RangeResult> {
    let bounds = RangeBounds {
        start: range.start.clone(),
        end: range.end.clone(),
    };
    let options = RangeOptions {
        limit: range.limit,
        keys_only: range.keys_only,
        count_only: range.count_only,
    };
    let page = MvccReader::new(view, shard)
        .range(&bounds, at, options)
        .map_err(storage_error)?;
    let kvs: Vec<KeyValue> = page.versions.into_iter().map(key_value).collect();
    Ok(RangeResult {
        revision: reported,
        continuation: if page.more {
            kvs.last().map(|kv| kv.key.clone())
        } else {
            None
        },
        more: page.more,
        count: page.count,
        kvs,
    })
}

/// Every key an operation reads or writes, or `None` when it includes a range.
pub fn named_keys(op: &WriteOp) -> Option<Vec<&[u8]>> {
    match op {
        WriteOp::Put(put) => Some(vec![&put.key]),
        WriteOp::Delete(delete) => Some(vec![&delete.key]),
        WriteOp::Txn(txn) => {
            let mut keys: Vec<&[u8]> = txn.compares.iter().map(|c| c.key.as_slice()).collect();
            for op in txn.success.iter().chain(&txn.failure) {
                keys.push(match op {
                    TxnOp::Put(put) => &put.key,
                    TxnOp::Delete(delete) => &delete.key,
                    TxnOp::Get(get) => &get.key,
                    TxnOp::Range(_) => return None,
                });
            }
            Some(keys)
        }
        WriteOp::Compact { .. } => Some(Vec::new()),
        WriteOp::Prewrite(prewrite) => Some(
            prewrite
                .mutations
                .iter()
                .map(|m| m.key.as_slice())
                .collect(),
        ),
        WriteOp::Commit(commit) => Some(commit.keys.iter().map(Vec::as_slice).collect()),
        WriteOp::Rollback { keys, .. } | WriteOp::ResolveLocks { keys, .. } => {
            Some(keys.iter().map(Vec::as_slice).collect())
        }
        WriteOp::CheckTxnStatus { primary, .. } => Some(vec![primary.as_slice()]),
    }
}

/// The keys an operation names outside its ranges (what its revision is checked against).
fn point_keys(op: &WriteOp) -> Vec<&[u8]> {
    match op {
        WriteOp::Txn(txn) => {
            let mut keys: Vec<&[u8]> = txn.compares.iter().map(|c| c.key.as_slice()).collect();
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    TxnOp::Put(put) => keys.push(&put.key),
                    TxnOp::Delete(delete) => keys.push(&delete.key),
                    TxnOp::Get(get) => keys.push(&get.key),
                    TxnOp::Range(_) => {}
                }
            }
            keys
        }
        other => named_keys(other).unwrap_or_default(),
    }
}

/// Where a write is applied and what it reports.
#[derive(Clone, Copy, Debug)]
pub struct WriteAt {
    /// The revision the write's versions get if it changes anything.
    pub revision: Revision,
    /// What results report when nothing changed, and what reads inside a transaction report:
    /// the shard's revision before the write.
    pub unchanged: Revision,
    /// The shard's compaction point: the revision must be above it.
    pub compact_revision: Revision,
}

/// Applies one write command's op (a put, a delete or a transaction) into `batch`. Returns
/// the result and whether anything changed. A refused revision changes nothing.
/// `cache` answers what a plain put or delete needs of its key without a read, and learns
/// what this write read and wrote once its mutations are in `batch`.
pub fn apply_write(
    db: &DB,
    shard: ShardId,
    batch: &mut WriteBatch,
    op: &WriteOp,
    at: WriteAt,
    cache: &mut NewestCache,
) -> Result<(WriteResult, bool)> {
    let view = RocksView::new(db, None);
    // The command's own mutations laid over the database: reads inside a transaction see
    // the earlier ops of that transaction.
    let overlay = Overlay::new(&view);
    let known: &NewestCache = cache;
    let mut writer = Writer {
        inner: VersionWriter::with_known(&overlay, shard, at.revision, known),
        overlay: &overlay,
        db,
        shard,
    };
    if let Some(refusal) = writer
        .inner
        .refusal(point_keys(op), at.compact_revision)
        .map_err(storage_error)?
    {
        return Ok((WriteResult::Refused(refusal), false));
    }
    // One-phase writes stop at transaction locks (D94): nothing is written, and the
    // refusal is not remembered, so the retry after the lock is resolved applies.
    let locked = |info| Ok((WriteResult::TxnRefused(TxnError::KeyLocked(info)), false));
    let result = match op {
        WriteOp::Put(put) => {
            if let Some(info) = writer.lock_on_write(&put.key)? {
                return locked(info);
            }
            WriteResult::Put(writer.put(put)?)
        }
        WriteOp::Delete(delete) => {
            if let Some(info) = writer.lock_on_write(&delete.key)? {
                return locked(info);
            }
            WriteResult::Delete(writer.delete(delete)?)
        }
        WriteOp::Txn(txn) => match writer.txn(txn)? {
            Ok(result) => WriteResult::Txn(result),
            Err(info) => return locked(info),
        },
        _ => {
            return Err(StorageError::Inconsistent(format!(
                "not a key write: {}",
                op_name(op)
            )))
        }
    };
    let changed = writer.inner.changed();
    let revision = if changed { at.revision } else { at.unchanged };
    let learnt = writer.inner.newest_metas();
    for mutation in writer.inner.into_mutations() {
        write_mutation(db, batch, mutation);
    }
    for (key, meta) in learnt {
        cache.learn(key, meta);
    }
    Ok((with_revision(result, revision), changed))
}

fn cf_handle(db: &DB, cf: ColumnFamily) -> &rocksdb::ColumnFamily {
    db.cf_handle(cf.name())
        .expect("MVCC column families are created at open")
}

pub fn write_mutation(db: &DB, batch: &mut WriteBatch, mutation: Mutation) {
    match mutation {
        Mutation::Put { cf, key, value } => batch.put_cf(cf_handle(db, cf), key, value),
        Mutation::Delete { cf, key } => batch.delete_cf(cf_handle(db, cf), key),
    }
}

/// Every result of a command reports the revision after the command.
fn with_revision(result: WriteResult, revision: Revision) -> WriteResult {
    match result {
        WriteResult::Put(put) => WriteResult::Put(PutResult { revision, ..put }),
        WriteResult::Delete(delete) => WriteResult::Delete(DeleteResult { revision, ..delete }),
        WriteResult::Txn(txn) => WriteResult::Txn(TxnResult {
            revision,
            responses: txn
                .responses
                .into_iter()
                .map(|response| match response {
                    TxnOpResult::Put(put) => TxnOpResult::Put(PutResult { revision, ..put }),
                    TxnOpResult::Delete(delete) => {
                        TxnOpResult::Delete(DeleteResult { revision, ..delete })
                    }
                    TxnOpResult::Get(get) => TxnOpResult::Get(GetResult { revision, ..get }),
                    TxnOpResult::Range(range) => {
                        TxnOpResult::Range(RangeResult { revision, ..range })
                    }
                })
                .collect(),
            ..txn
        }),
        other => other,
    }
}

fn op_name(op: &WriteOp) -> &'static str {
    match op {
        WriteOp::Put(_) => "put",
        WriteOp::Delete(_) => "delete",
        WriteOp::Txn(_) => "txn",
        WriteOp::Compact { .. } => "compact",
        WriteOp::Prewrite(_) => "prewrite",
        WriteOp::Commit(_) => "commit",
        WriteOp::Rollback { .. } => "rollback",
        WriteOp::ResolveLocks { .. } => "resolve_locks",
        WriteOp::CheckTxnStatus { .. } => "check_txn_status",
    }
}

struct Writer<'v> {
    inner: VersionWriter<'v, Overlay<'v, RocksView<'v>>>,
    overlay: &'v Overlay<'v, RocksView<'v>>,
    db: &'v DB,
    shard: ShardId,
}

impl Writer<'_> {
    /// Any lock on a key the write changes. One-phase writes never add locks, so the live
    /// database (not the overlay) has every lock the command can meet.
    fn lock_on_write(&self, key: &[u8]) -> Result<Option<LockInfo>> {
        Ok(lock_checks::lock_of(self.db, None, self.shard, key)?.map(|lock| lock.info(key)))
    }

    /// A put or delete lock on a key the write reads or compares: it may commit below the
    /// write's revision and change what was read.
    fn lock_on_read(&self, key: &[u8]) -> Result<Option<LockInfo>> {
        lock_checks::lock_stopping_read(self.db, None, self.shard, key, Revision::LATEST, None)
    }

    /// The first lock that stops the ops of a transaction branch, checked before any op runs.
    fn lock_on_ops(&self, ops: &[TxnOp]) -> Result<Option<LockInfo>> {
        for op in ops {
            let found = match op {
                TxnOp::Put(Put { key, .. }) | TxnOp::Delete(Delete { key, .. }) => {
                    self.lock_on_write(key)?
                }
                TxnOp::Get(get) => self.lock_on_read(&get.key)?,
                TxnOp::Range(range) => lock_checks::range_lock_stopping_read(
                    &RocksView::new(self.db, None),
                    self.shard,
                    &range.start,
                    range.end.as_deref(),
                    Revision::LATEST,
                    None,
                )?,
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self
            .inner
            .current(key)
            .map_err(storage_error)?
            .map(key_value))
    }

    fn put(&mut self, put: &Put) -> Result<PutResult> {
        // The value is read only when the answer or the condition needs it: a plain put needs
        // only the newest version's counters, which the cache may know.
        let needs_previous = put.prev_kv || put.condition.is_some();
        let previous = if needs_previous {
            self.current(&put.key)?
        } else {
            None
        };
        let holds = match &put.condition {
            None => true,
            Some(condition) => condition_holds(condition, previous.as_ref()),
        };
        let prev_kv = if put.prev_kv || !holds {
            previous
        } else {
            None
        };
        if !holds {
            return Ok(PutResult {
                revision: Revision(0),
                succeeded: false,
                prev_kv,
            });
        }
        let before = self.inner.mutations().len();
        self.inner
            .put(&put.key, put.value.clone())
            .map_err(storage_error)?;
        self.overlay.apply(&self.inner.mutations()[before..]);
        Ok(PutResult {
            revision: Revision(0),
            succeeded: true,
            prev_kv,
        })
    }

    fn delete(&mut self, delete: &Delete) -> Result<DeleteResult> {
        let previous = if delete.prev_kv {
            self.current(&delete.key)?
        } else {
            None
        };
        let before = self.inner.mutations().len();
        let deleted = self.inner.delete(&delete.key).map_err(storage_error)?;
        self.overlay.apply(&self.inner.mutations()[before..]);
        Ok(DeleteResult {
            revision: Revision(0),
            deleted: u64::from(deleted),
            prev_kv: if delete.prev_kv { previous } else { None },
        })
    }

    /// The transaction, or the lock that stopped it (on a compared key, or on a key the
    /// chosen branch reads or writes) before anything was written.
    fn txn(&mut self, txn: &Txn) -> Result<std::result::Result<TxnResult, LockInfo>> {
        for compare in &txn.compares {
            if let Some(info) = self.lock_on_read(&compare.key)? {
                return Ok(Err(info));
            }
        }
        let mut succeeded = true;
        for compare in &txn.compares {
            let current = self.current(&compare.key)?;
            if !compare_holds(compare, current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        if let Some(info) = self.lock_on_ops(ops)? {
            return Ok(Err(info));
        }
        // Reads see the earlier ops of the branch (the overlay), as in etcd; their revision
        // is set with the writes' once the command's outcome is known (`with_revision`).
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put(put) => TxnOpResult::Put(self.put(put)?),
                TxnOp::Delete(delete) => TxnOpResult::Delete(self.delete(delete)?),
                TxnOp::Get(get) => TxnOpResult::Get(GetResult {
                    revision: Revision(0),
                    kv: get_at(
                        self.overlay,
                        self.shard,
                        &get.key,
                        Revision::LATEST,
                        get.keys_only,
                    )?,
                }),
                TxnOp::Range(range) => TxnOpResult::Range(range_at(
                    self.overlay,
                    self.shard,
                    range,
                    Revision::LATEST,
                    Revision(0),
                )?),
            });
        }
        Ok(Ok(TxnResult {
            revision: Revision(0),
            succeeded,
            responses,
        }))
    }
}

fn condition_holds(condition: &PutCondition, current: Option<&KeyValue>) -> bool {
    match condition {
        PutCondition::Absent => current.is_none(),
        PutCondition::ValueEquals(expected) => current.is_some_and(|c| &c.value == expected),
        PutCondition::VersionEquals(expected) => current.map_or(0, |c| c.version) == *expected,
        PutCondition::ModRevisionEquals(expected) => {
            current.map_or(0, |c| c.mod_revision.0) == *expected
        }
    }
}

/// A missing key compares as value empty and version/revisions 0 (etcd's rule).
fn compare_holds(compare: &Compare, current: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let ordering = match &compare.target {
        CompareTarget::Value(expected) => {
            let value: &[u8] = current.map_or(&[], |c| c.value.as_slice());
            value.cmp(expected.as_slice())
        }
        CompareTarget::Version(expected) => current.map_or(0, |c| c.version).cmp(expected),
        CompareTarget::CreateRevision(expected) => {
            current.map_or(0, |c| c.create_revision.0).cmp(expected)
        }
        CompareTarget::ModRevision(expected) => {
            current.map_or(0, |c| c.mod_revision.0).cmp(expected)
        }
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Greater => ordering == Ordering::Greater,
        CompareOp::Less => ordering == Ordering::Less,
    }
}
