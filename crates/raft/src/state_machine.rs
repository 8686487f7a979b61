//! A shard's replicated state machine: the versions of its keys (`write` column family, laid
//! out by `cairn-mvcc`) and its `sessions`, plus its applied log id, membership, revision and
//! compaction point, all in the node's RocksDB.
//!
//! A write's revision is its oracle timestamp, or the shard's revision + 1 in a group without
//! an oracle ([`CommandRevision`]). A timestamped write is refused at apply, deterministically
//! on every replica, when its timestamp was fetched under another leadership than the entry's
//! term or is not above the newest version of a key it names (`cairn_mvcc::Refusal`).
//!
//! One `apply` call (a run of committed entries) is written as few atomic RocksDB writes as
//! possible — usually one — each holding the key changes, the session changes and the new
//! applied log id of whole entries, so the state machine is always at exactly one log
//! position. An entry that must read what an earlier entry of the same run wrote (the same
//! key, a range, a duplicate's remembered result) first writes out what is pending, so every
//! read sees the entries before it. Answers go back only once their entry is written.
//! Applies are not fsynced: the Raft log is, and a replay from the log (or from the
//! last snapshot, whose file is fsynced) restores anything the OS lost.
//!
//! Snapshots are files (see [`crate::snapshot_file`], [`crate::snapshot_store`],
//! [`crate::snapshot_builder`]) built from a
//! RocksDB snapshot, so they are consistent while applies go on, and carry every version
//! compaction kept. Installing one is crash-atomic by redo.

use crate::codec;
use crate::command::{CommandResponse, CommandRevision, WriteOp, WriteResult};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{self, WriteAt};
use crate::mvcc_store::CompactionPoints;
use crate::newest_cache::NewestCache;
use crate::pending_apply::PendingApply;
use crate::sessions::{Admission, RememberedResult, SessionLimits, SessionTable};
use crate::snapshot_builder::{
    blocking, to_snapshot, ShardSnapshot, ShardSnapshotBuilder, SnapshotFile,
};
use crate::snapshot_store::{CurrentSnapshot, SnapshotStore};
use crate::txn_apply::{apply_txn_command, TxnContext};
use crate::type_config::{LogId, ShardRaftConfig, SnapshotMeta, StoredMembership};
use cairn_types::{Revision, ShardId};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{ReadOptions, WriteOptions, DB};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct ShardStateMachine {
    pub(crate) snapshots: SnapshotStore,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The highest revision applied (writes to different keys may apply out of revision
    /// order; each key's versions rise in log order).
    revision: Revision,
    /// Reads below this revision are refused; versions only they could see may be dropped.
    compact_revision: Revision,
    compaction_points: Arc<CompactionPoints>,
    sessions: SessionTable,
    session_limits: SessionLimits,
    counters: Arc<crate::replica::ReplicaCounters>,
    /// The newest version of recently written keys, so plain writes read nothing (issue 19).
    newest: NewestCache,
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

pub(crate) fn read_tag<T: serde::de::DeserializeOwned>(
    db: &DB,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    shard: ShardId,
    tag: &[u8],
) -> Result<Option<T>> {
    let mut options = ReadOptions::default();
    if let Some(snapshot) = snapshot {
        options.set_snapshot(snapshot);
    }
    match db.get_pinned_cf_opt(
        cf(db, keys::CF_SM_STATE),
        keys::tagged_key(shard, tag),
        &options,
    )? {
        None => Ok(None),
        Some(bytes) => Ok(Some(
            codec::decode(&bytes).map_err(StorageError::corrupt("state machine state"))?,
        )),
    }
}

/// The shard's current revision, as seen by `snapshot` (or the live database).
pub fn read_revision(
    db: &DB,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    shard: ShardId,
) -> Result<Revision> {
    Ok(read_tag(db, snapshot, shard, keys::TAG_REVISION)?.unwrap_or_default())
}

/// The shard's applied compaction point, as seen by `snapshot` (or the live database).
pub fn read_compaction(
    db: &DB,
    snapshot: Option<&rocksdb::Snapshot<'_>>,
    shard: ShardId,
) -> Result<Revision> {
    Ok(read_tag(db, snapshot, shard, keys::TAG_COMPACTION)?.unwrap_or_default())
}

impl ShardStateMachine {
    /// Opens the state machine of `shard`, finishing an interrupted snapshot install first.
    /// Blocking: call from a blocking context.
    pub fn open(
        db: Arc<DB>,
        shard: ShardId,
        snapshot_dir: PathBuf,
        session_limits: SessionLimits,
        compaction_points: Arc<CompactionPoints>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let snapshots = SnapshotStore {
            db: db.clone(),
            shard,
            dir: snapshot_dir,
            lock: Arc::new(Mutex::new(())),
            compaction_points: compaction_points.clone(),
        };
        snapshots.remove_temporary_files()?;
        if let Some(marker) = read_tag::<CurrentSnapshot>(&db, None, shard, keys::TAG_INSTALLING)? {
            tracing::warn!(%shard, file = %marker.file_name, "finishing a snapshot install interrupted by a crash");
            snapshots.redo_install(&marker)?;
        }
        let mut machine = Self {
            snapshots,
            last_applied: None,
            membership: StoredMembership::default(),
            revision: Revision(0),
            compact_revision: Revision(0),
            compaction_points,
            sessions: SessionTable::new(shard, session_limits.clone()),
            session_limits,
            counters: Arc::default(),
            newest: NewestCache::default(),
        };
        machine.reload()?;
        Ok(machine)
    }

    fn reload(&mut self) -> Result<()> {
        let db = &self.snapshots.db;
        let shard = self.snapshots.shard;
        self.last_applied =
            read_tag::<Option<LogId>>(db, None, shard, keys::TAG_APPLIED)?.flatten();
        self.membership = read_tag(db, None, shard, keys::TAG_MEMBERSHIP)?.unwrap_or_default();
        self.revision = read_revision(db, None, shard)?;
        self.compact_revision = read_compaction(db, None, shard)?;
        self.compaction_points.reset(shard, self.compact_revision);
        self.sessions = SessionTable::load(db, shard, self.session_limits.clone())?;
        // The versions may be another replica's now (a snapshot was installed).
        self.newest.clear();
        Ok(())
    }

    pub fn shard(&self) -> ShardId {
        self.snapshots.shard
    }

    /// Counts snapshot installs into `counters` (the replica's).
    pub fn counting_into(mut self, counters: Arc<crate::replica::ReplicaCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Applies one entry into `batch`, which the caller writes; returns the response for its
    /// proposer. Reads go to the live database, so the caller must have written every pending
    /// change this entry could read ([`PendingApply::must_write_before`]).
    pub(crate) fn apply_entry(
        &mut self,
        entry: crate::type_config::Entry,
        pending: &mut PendingApply,
    ) -> Result<CommandResponse> {
        let batch = &mut pending.batch;
        let db = self.snapshots.db.clone();
        let shard = self.snapshots.shard;
        let log_id = entry.log_id();
        let state_cf = cf(&db, keys::CF_SM_STATE);
        let response = match entry.payload {
            EntryPayload::Blank => CommandResponse::None,
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                batch.put_cf(
                    state_cf,
                    keys::tagged_key(shard, keys::TAG_MEMBERSHIP),
                    codec::encode(&self.membership),
                );
                CommandResponse::None
            }
            EntryPayload::Normal(command) => {
                self.sessions.tick(&command, batch, &db);
                if let WriteOp::Compact { revision } = command.op {
                    if revision > self.compact_revision {
                        self.compact_revision = revision;
                        batch.put_cf(
                            state_cf,
                            keys::tagged_key(shard, keys::TAG_COMPACTION),
                            codec::encode(&revision),
                        );
                        // Durable before the compaction filter may act on it.
                        pending.raised_compaction = Some(revision);
                    }
                    let result = WriteResult::Compacted {
                        compact_revision: self.compact_revision,
                    };
                    self.last_applied = Some(log_id);
                    return Ok(CommandResponse::Write(result));
                }
                let result = if command.op.is_txn_command() {
                    let context = TxnContext {
                        db: &db,
                        shard,
                        now_ms: command.proposed_at_ms,
                        compact_revision: self.compact_revision,
                    };
                    let applied =
                        apply_txn_command(&context, &command.op, &mut self.sessions, batch)?;
                    // Transaction commands change versions (commits, rollback markers) by
                    // rules the cache does not follow: it forgets what they touched.
                    match kv::named_keys(&command.op) {
                        Some(keys) => keys.into_iter().for_each(|key| self.newest.forget(key)),
                        None => self.newest.clear(),
                    }
                    if let Some(revision) = applied.revision.filter(|r| *r > self.revision) {
                        self.revision = revision;
                    }
                    applied.result
                } else {
                    match self.sessions.admit(&command, &db)? {
                        Admission::Duplicate(RememberedResult::Full(result)) => result,
                        Admission::Duplicate(RememberedResult::TooLarge) => {
                            WriteResult::AppliedResultNotRetained
                        }
                        Admission::WindowExceeded { oldest_remembered } => {
                            WriteResult::WindowExceeded { oldest_remembered }
                        }
                        Admission::New => {
                            let (revision, refusal) = match command.revision {
                                CommandRevision::Counted => (Revision(self.revision.0 + 1), None),
                                CommandRevision::Timestamp { revision, term } => (
                                    revision,
                                    cairn_mvcc::leadership_refusal(term, log_id.leader_id.term),
                                ),
                            };
                            let (result, changed) = match refusal {
                                Some(refusal) => (WriteResult::Refused(refusal), false),
                                None => kv::apply_write(
                                    &db,
                                    shard,
                                    batch,
                                    &command.op,
                                    WriteAt {
                                        revision,
                                        unchanged: self.revision,
                                        compact_revision: self.compact_revision,
                                    },
                                    &mut self.newest,
                                )?,
                            };
                            if changed {
                                self.revision = self.revision.max(revision);
                            }
                            // A refused write was not applied (a timestamp refused, or a lock
                            // met): its retry must be applied, not answered with the refusal.
                            if !matches!(
                                result,
                                WriteResult::Refused(_) | WriteResult::TxnRefused(_)
                            ) {
                                self.sessions.remember(&command, &result, batch, &db);
                            }
                            result
                        }
                    }
                };
                CommandResponse::Write(result)
            }
        };
        self.last_applied = Some(log_id);
        Ok(response)
    }

    /// Writes the pending entries as one atomic batch, then answers their proposers.
    pub(crate) fn write_pending(&self, pending: &mut PendingApply) -> Result<()> {
        if pending.entries == 0 {
            return Ok(());
        }
        let writes: Vec<tracing::Span> = pending
            .traced
            .iter()
            .map(|apply| {
                tracing::info_span!(
                    parent: apply,
                    "rocksdb.write",
                    entries = pending.entries,
                    bytes = pending.batch.size_in_bytes()
                )
            })
            .collect();
        let mut batch = std::mem::take(&mut pending.batch);
        // The applied position and the revision once per batch, not once per entry: the
        // batch is atomic, so they are exact for whatever of it survives a crash (all or
        // nothing), and each entry saved two memtable inserts (issue 19).
        let (db, shard) = (&self.snapshots.db, self.shard());
        let state_cf = cf(db, keys::CF_SM_STATE);
        batch.put_cf(
            state_cf,
            keys::tagged_key(shard, keys::TAG_APPLIED),
            codec::encode(&self.last_applied),
        );
        batch.put_cf(
            state_cf,
            keys::tagged_key(shard, keys::TAG_REVISION),
            codec::encode(&self.revision),
        );
        match pending.raised_compaction.take() {
            None => self.snapshots.db.write(batch)?,
            Some(point) => {
                // The compaction filter drops versions by this point: it must not be lost
                // in a crash after the filter used it, so it is synced first.
                let mut synced = WriteOptions::default();
                synced.set_sync(true);
                self.snapshots.db.write_opt(batch, &synced)?;
                self.compaction_points.raise(self.shard(), point);
                tracing::info!(shard = %self.shard(), compact_revision = %point, "compaction point raised");
            }
        }
        drop(writes);
        pending.entries = 0;
        pending.keys.clear();
        pending.txn_commands = false;
        for (responder, response) in pending.answers.drain(..) {
            responder.send(response);
        }
        pending.traced.clear();
        Ok(())
    }
}

impl RaftStateMachine<ShardRaftConfig> for ShardStateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = ShardSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<ShardRaftConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        // RocksDB writes without fsync take microseconds: done on this task, not worth a
        // thread hop. One write for the run instead of one per entry saves a WAL record and a
        // trip through RocksDB's write queue per entry.
        let failed = |shard: ShardId| {
            move |error: StorageError| {
                tracing::error!(%shard, %error, "applying a committed entry failed; the replica stops");
                io::Error::from(error)
            }
        };
        let shard = self.shard();
        let mut pending = PendingApply::default();
        while let Some((entry, responder)) = entries.try_next().await? {
            if pending.must_write_before(&entry, &self.sessions, &self.newest) {
                self.write_pending(&mut pending).map_err(failed(shard))?;
            }
            let write_after = !pending.note(&entry);
            // A sampled request's entry: `raft.apply` covers applying it into the batch and
            // waiting for the batch's write, which `rocksdb.write` (its child) covers.
            let span = crate::type_config::entry_trace(&entry).map(|parent| {
                let span =
                    tracing::info_span!("raft.apply", shard = shard.0, index = entry.index());
                parent.adopt(&span);
                span
            });
            let response = {
                let _entered = span.as_ref().map(|span| span.enter());
                self.apply_entry(entry, &mut pending)
                    .map_err(failed(shard))?
            };
            if let Some(span) = span {
                if pending.traced.len() < crate::type_config::TRACED_ENTRIES_PER_BATCH_MAX {
                    pending.traced.push(span);
                }
            }
            if let Some(responder) = responder {
                pending.answers.push((responder, response));
            }
            if write_after || pending.full() {
                self.write_pending(&mut pending).map_err(failed(shard))?;
            }
        }
        self.write_pending(&mut pending).map_err(failed(shard))?;
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ShardSnapshotBuilder {
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.snapshots.clone();
        let meta_owned = meta.clone();
        blocking(move || store.install(&meta_owned, &snapshot.path)).await?;
        self.reload().map_err(io::Error::from)?;
        self.counters
            .snapshots_installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<ShardSnapshot>, io::Error> {
        let current = self.snapshots.current().map_err(io::Error::from)?;
        Ok(current.map(|current| to_snapshot(&self.snapshots, current)))
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;
