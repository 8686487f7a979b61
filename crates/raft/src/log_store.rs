//! A shard's Raft log and vote in the node's shared RocksDB.
//!
//! Appends are written without syncing and acknowledged by the [`GroupCommit`] after the next
//! WAL fsync, so one fsync serves appends from every shard. Votes are written with a synced
//! write (rare, and must be durable before the vote is sent). Because all shards share one
//! WAL, writes become durable in the order they were made; that keeps openraft's I/O ordering
//! (vote before later appends, truncate before the appends that replace the tail).

use crate::codec;
use crate::error::StorageError;
use crate::group_commit::GroupCommit;
use crate::keys;
use crate::type_config::{Entry, LogId, NodeAddress, ShardRaftConfig, Vote};
use cairn_types::{NodeId, ShardId};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Membership, OptionalSend};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    shard: ShardId,
    group_commit: GroupCommit,
}

impl LogStore {
    pub fn new(db: Arc<DB>, shard: ShardId, group_commit: GroupCommit) -> Self {
        Self {
            db,
            shard,
            group_commit,
        }
    }

    fn cf_log(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(keys::CF_RAFT_LOG)
            .expect("raft_log column family exists")
    }

    fn cf_state(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(keys::CF_RAFT_STATE)
            .expect("raft_state column family exists")
    }

    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        tag: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self
            .db
            .get_pinned_cf(self.cf_state(), keys::tagged_key(self.shard, tag))?
        {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).map_err(StorageError::corrupt("raft state"))?,
            )),
        }
    }

    /// Whether this shard's replica has ever recorded a vote on this node.
    pub fn has_vote(&self) -> Result<bool, StorageError> {
        Ok(self
            .db
            .get_pinned_cf(
                self.cf_state(),
                keys::tagged_key(self.shard, keys::TAG_VOTE),
            )?
            .is_some())
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(keys::shard_prefix(self.shard).to_vec());
        let upper = keys::shard_upper_bound(self.shard);
        let mut iter = self.db.iterator_cf_opt(
            self.cf_log(),
            options,
            IteratorMode::From(&upper, Direction::Reverse),
        );
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item?;
                Ok(Some(
                    codec::decode(&value).map_err(StorageError::corrupt("raft log"))?,
                ))
            }
        }
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(match end {
            Some(end) => keys::log_key(self.shard, end).to_vec(),
            None => keys::shard_upper_bound(self.shard),
        });
        let start_key = keys::log_key(self.shard, start);
        let iter = self.db.iterator_cf_opt(
            self.cf_log(),
            options,
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let mut entries: Vec<Entry> = Vec::new();
        for item in iter {
            let (key, value) = item?;
            let index = keys::log_index_of(&key)
                .ok_or_else(|| StorageError::Inconsistent("malformed raft log key".into()))?;
            if let Some(previous) = entries.last() {
                if index != previous.index() + 1 {
                    return Err(StorageError::Inconsistent(format!(
                        "{}: hole in the raft log between {} and {index}",
                        self.shard,
                        previous.index()
                    )));
                }
            }
            let entry: Entry = codec::decode(&value).map_err(StorageError::corrupt("raft log"))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogReader<ShardRaftConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.entries(range)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.read_state(keys::TAG_VOTE)?)
    }
}

impl LogStore {
    /// Unsafe recovery (D41): appends, after the last entry, a membership entry that makes
    /// `voter` (at `node`) the shard's only voter, and syncs it. Only while the shard's Raft
    /// instance is stopped: openraft reads the effective membership from the log when it
    /// starts, so the replica comes back as a group of one and elects itself. The entry keeps
    /// the last entry's leader id, so the log stays ordered and no term exceeds the vote.
    pub fn append_forced_membership(
        &self,
        voter: NodeId,
        node: NodeAddress,
    ) -> Result<LogId, StorageError> {
        let last = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => self.read_state::<LogId>(keys::TAG_PURGED)?,
        };
        let last = last.ok_or_else(|| {
            StorageError::Inconsistent(format!(
                "{}: this replica has no log: there is nothing to recover from",
                self.shard
            ))
        })?;
        let log_id = LogId::new(*last.committed_leader_id(), last.index() + 1);
        let membership = Membership::new(
            vec![BTreeSet::from([voter])],
            BTreeMap::from([(voter, node)]),
        )
        .map_err(|error| StorageError::Inconsistent(error.to_string()))?;
        let entry = Entry::new_membership(log_id, membership);
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.put_cf_opt(
            self.cf_log(),
            keys::log_key(self.shard, log_id.index()),
            codec::encode(&entry),
            &options,
        )?;
        Ok(log_id)
    }
}

impl RaftLogStorage<ShardRaftConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<ShardRaftConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_state(keys::TAG_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db
            .put_cf_opt(
                self.cf_state(),
                keys::tagged_key(self.shard, keys::TAG_VOTE),
                codec::encode(vote),
                &options,
            )
            .map_err(StorageError::from)?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-deriving the commit point from the quorum.
        self.db
            .put_cf(
                self.cf_state(),
                keys::tagged_key(self.shard, keys::TAG_COMMITTED),
                codec::encode(&committed),
            )
            .map_err(StorageError::from)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .read_state::<Option<LogId>>(keys::TAG_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<ShardRaftConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut traced = Vec::new();
        for entry in entries {
            if traced.len() < crate::type_config::TRACED_ENTRIES_PER_BATCH_MAX {
                traced.extend(crate::type_config::spans_for_traced([&entry], |entry| {
                    tracing::info_span!(
                        "raft.log_append",
                        shard = self.shard.0,
                        index = entry.index()
                    )
                }));
            }
            batch.put_cf(
                self.cf_log(),
                keys::log_key(self.shard, entry.index()),
                codec::encode(&entry),
            );
        }
        // Written (and so readable) now; durable after the group commit's next fsync.
        self.db.write(batch).map_err(StorageError::from)?;
        self.group_commit
            .after_next_sync(Box::new(move |result| {
                // The spans end once the entries are durable (written and fsynced).
                drop(traced);
                callback.io_completed(result)
            }))
            .await;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf_log(),
            &keys::log_key(self.shard, from)[..],
            &keys::shard_upper_bound(self.shard)[..],
        );
        self.db.write(batch).map_err(StorageError::from)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf_state(),
            keys::tagged_key(self.shard, keys::TAG_PURGED),
            codec::encode(&log_id),
        );
        batch.delete_range_cf(
            self.cf_log(),
            keys::log_key(self.shard, 0),
            keys::log_key(self.shard, log_id.index() + 1),
        );
        self.db.write(batch).map_err(StorageError::from)?;
        Ok(())
    }
}
