//! The key-value semantics of one shard: how a write command changes the `kv` column family
//! and what reads return. Pure with respect to Raft: it reads through a [`KvView`] and
//! writes into a RocksDB `WriteBatch`; the state machine decides when batches are written.

use crate::codec;
use crate::command::*;
use crate::error::{Result, StorageError};
use crate::keys;
use cairn_types::{Revision, ShardId};
use rocksdb::{ColumnFamily, Direction, IteratorMode, ReadOptions, WriteBatch, DB};
use serde::{Deserialize, Serialize};

/// What the `kv` column family stores for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredValue {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: u64,
    pub value: Vec<u8>,
}

impl StoredValue {
    fn into_key_value(self, key: Vec<u8>, keys_only: bool) -> KeyValue {
        KeyValue {
            key,
            value: if keys_only { Vec::new() } else { self.value },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// Reads one shard's keys from the live database.
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

    fn read_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    fn cf(&self) -> &'a ColumnFamily {
        self.db
            .cf_handle(keys::CF_KV)
            .expect("kv column family is created at open")
    }

    fn get_stored(&self, key: &[u8]) -> Result<Option<StoredValue>> {
        match self.db.get_pinned_cf_opt(
            self.cf(),
            keys::kv_key(self.shard, key),
            &self.read_options(),
        )? {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).map_err(StorageError::corrupt("kv"))?,
            )),
        }
    }

    pub fn get(&self, key: &[u8], keys_only: bool) -> Result<Option<KeyValue>> {
        Ok(self
            .get_stored(key)?
            .map(|stored| stored.into_key_value(key.to_vec(), keys_only)))
    }

    /// Keys in the range in ascending order, at most `range.limit` of them (or all of them,
    /// counted, with `count_only`).
    pub fn range(&self, range: &Range, revision: Revision) -> Result<RangeResult> {
        let mut options = self.read_options();
        let upper = match &range.end {
            Some(end) => keys::kv_key(self.shard, end),
            None => keys::shard_upper_bound(self.shard),
        };
        options.set_iterate_upper_bound(upper);
        let start = keys::kv_key(self.shard, &range.start);
        let iter = self.db.iterator_cf_opt(
            self.cf(),
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut result = RangeResult {
            revision,
            ..RangeResult::default()
        };
        for item in iter {
            let (raw_key, raw_value) = item?;
            if range.count_only {
                result.count += 1;
                continue;
            }
            if result.kvs.len() as u64 == range.limit {
                result.more = true;
                result.continuation = result.kvs.last().map(|kv| kv.key.clone());
                break;
            }
            let stored: StoredValue =
                codec::decode(&raw_value).map_err(StorageError::corrupt("kv"))?;
            let user_key = raw_key[8..].to_vec();
            result
                .kvs
                .push(stored.into_key_value(user_key, range.keys_only));
        }
        if !range.count_only {
            result.count = result.kvs.len() as u64;
        }
        Ok(result)
    }
}

/// Applies one write command's op at `next_revision` (the shard revision it gets if it changes
/// anything). Returns the result and whether anything changed.
pub fn apply_write(
    view: &KvView<'_>,
    batch: &mut WriteBatch,
    op: &WriteOp,
    current_revision: Revision,
) -> Result<(WriteResult, bool)> {
    let next_revision = Revision(current_revision.0 + 1);
    let mut writer = Writer {
        view,
        batch,
        next_revision,
        changed: false,
    };
    let result = match op {
        WriteOp::Put(put) => WriteResult::Put(writer.put(put)?),
        WriteOp::Delete(delete) => WriteResult::Delete(writer.delete(delete)?),
        WriteOp::Txn(txn) => WriteResult::Txn(writer.txn(txn, current_revision)?),
    };
    let changed = writer.changed;
    let revision = if changed {
        next_revision
    } else {
        current_revision
    };
    Ok((with_revision(result, revision), changed))
}

/// Every result of a command reports the shard revision after the command.
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
                    read => read,
                })
                .collect(),
            ..txn
        }),
        other => other,
    }
}

struct Writer<'v, 'b> {
    view: &'v KvView<'v>,
    batch: &'b mut WriteBatch,
    next_revision: Revision,
    changed: bool,
}

impl Writer<'_, '_> {
    fn put(&mut self, put: &Put) -> Result<PutResult> {
        let previous = self.view.get_stored(&put.key)?;
        let holds = match &put.condition {
            None => true,
            Some(condition) => condition_holds(condition, previous.as_ref()),
        };
        let prev_kv = if put.prev_kv || !holds {
            previous
                .clone()
                .map(|stored| stored.into_key_value(put.key.clone(), false))
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
        let stored = match previous {
            Some(previous) => StoredValue {
                create_revision: previous.create_revision,
                mod_revision: self.next_revision,
                version: previous.version + 1,
                value: put.value.clone(),
            },
            None => StoredValue {
                create_revision: self.next_revision,
                mod_revision: self.next_revision,
                version: 1,
                value: put.value.clone(),
            },
        };
        self.batch.put_cf(
            self.view.cf(),
            keys::kv_key(self.view.shard, &put.key),
            codec::encode(&stored),
        );
        self.changed = true;
        Ok(PutResult {
            revision: Revision(0),
            succeeded: true,
            prev_kv,
        })
    }

    fn delete(&mut self, delete: &Delete) -> Result<DeleteResult> {
        let previous = self.view.get_stored(&delete.key)?;
        let deleted = u64::from(previous.is_some());
        if previous.is_some() {
            self.batch
                .delete_cf(self.view.cf(), keys::kv_key(self.view.shard, &delete.key));
            self.changed = true;
        }
        let prev_kv = if delete.prev_kv {
            previous.map(|stored| stored.into_key_value(delete.key.clone(), false))
        } else {
            None
        };
        Ok(DeleteResult {
            revision: Revision(0),
            deleted,
            prev_kv,
        })
    }

    fn txn(&mut self, txn: &Txn, current_revision: Revision) -> Result<TxnResult> {
        let mut succeeded = true;
        for compare in &txn.compares {
            let stored = self.view.get_stored(&compare.key)?;
            if !compare_holds(compare, stored.as_ref()) {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put(put) => TxnOpResult::Put(self.put(put)?),
                TxnOp::Delete(delete) => TxnOpResult::Delete(self.delete(delete)?),
                TxnOp::Get(get) => TxnOpResult::Get(GetResult {
                    revision: current_revision,
                    kv: self.view.get(&get.key, get.keys_only)?,
                }),
                TxnOp::Range(range) => {
                    TxnOpResult::Range(self.view.range(range, current_revision)?)
                }
            });
        }
        Ok(TxnResult {
            revision: Revision(0),
            succeeded,
            responses,
        })
    }
}

fn condition_holds(condition: &PutCondition, current: Option<&StoredValue>) -> bool {
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
fn compare_holds(compare: &Compare, current: Option<&StoredValue>) -> bool {
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
