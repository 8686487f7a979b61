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
//! Snapshots are files (see [`crate::snapshot_file`], [`crate::snapshot_store`]) built from a
//! RocksDB snapshot, so they are consistent while applies go on, and carry every version
//! compaction kept. Installing one is crash-atomic by redo.

use crate::codec;
use crate::command::{CommandResponse, CommandRevision, WriteOp, WriteResult};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{self, named_keys, WriteAt};
use crate::mvcc_store::CompactionPoints;
use crate::sessions::{Admission, RememberedResult, SessionLimits, SessionTable};
use crate::snapshot_store::{CurrentSnapshot, SnapshotStore};
use crate::type_config::{LogId, ShardRaftConfig, SnapshotMeta, StoredMembership};
use cairn_types::{Revision, ShardId};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions, DB};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Most entries applied into one RocksDB batch before it is written (and their answers sent).
const APPLY_BATCH_ENTRIES_MAX: usize = 1024;
/// Largest RocksDB batch of applied entries, in bytes; a larger run is written in parts.
const APPLY_BATCH_BYTES_MAX: usize = 4 << 20;

/// A snapshot as openraft passes it around: the path of a complete snapshot file.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

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
                    batch.put_cf(
                        state_cf,
                        keys::tagged_key(shard, keys::TAG_APPLIED),
                        codec::encode(&self.last_applied),
                    );
                    return Ok(CommandResponse::Write(result));
                }
                let result = match self.sessions.admit(&command, &db)? {
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
                            )?,
                        };
                        if changed {
                            self.revision = self.revision.max(revision);
                            batch.put_cf(
                                state_cf,
                                keys::tagged_key(shard, keys::TAG_REVISION),
                                codec::encode(&self.revision),
                            );
                        }
                        // A refused write was not applied: its retry must be applied, not
                        // answered with the refusal.
                        if !matches!(result, WriteResult::Refused(_)) {
                            self.sessions.remember(&command, &result, batch, &db);
                        }
                        result
                    }
                };
                CommandResponse::Write(result)
            }
        };
        self.last_applied = Some(log_id);
        batch.put_cf(
            state_cf,
            keys::tagged_key(shard, keys::TAG_APPLIED),
            codec::encode(&self.last_applied),
        );
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
        let batch = std::mem::take(&mut pending.batch);
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
        for (responder, response) in pending.answers.drain(..) {
            responder.send(response);
        }
        pending.traced.clear();
        Ok(())
    }
}

/// Entries applied into a batch that is not written yet, and what they touched.
#[derive(Default)]
pub(crate) struct PendingApply {
    batch: WriteBatch,
    entries: usize,
    /// User keys named by the pending entries' operations (a superset of what they wrote).
    keys: std::collections::HashSet<Vec<u8>>,
    answers: Vec<(
        openraft::storage::ApplyResponder<ShardRaftConfig>,
        CommandResponse,
    )>,
    /// `raft.apply` spans of sampled entries in the batch, ended once it is written.
    traced: Vec<tracing::Span>,
    /// A compaction point raised by a pending entry: the batch is written synced, then the
    /// point is handed to the compaction filter.
    raised_compaction: Option<cairn_types::Revision>,
}

impl PendingApply {
    /// Whether `entry` may read something the pending batch changes: a key a pending entry
    /// named, a range (which may cover any of them), or the remembered result of a duplicate
    /// (which a pending entry may have just stored). Such an entry is applied after the
    /// pending batch is written.
    fn must_write_before(
        &self,
        entry: &crate::type_config::Entry,
        sessions: &SessionTable,
    ) -> bool {
        if self.entries == 0 {
            return false;
        }
        let EntryPayload::Normal(command) = &entry.payload else {
            return false;
        };
        if sessions.is_remembered(command) {
            return true;
        }
        match named_keys(&command.op) {
            Some(keys) => keys.iter().any(|key| self.keys.contains(*key)),
            None => true,
        }
    }

    /// Records what `entry` touched; `false` when it named a range, after which the batch is
    /// written at once so no later entry has to reason about it.
    pub(crate) fn note(&mut self, entry: &crate::type_config::Entry) -> bool {
        self.entries += 1;
        let EntryPayload::Normal(command) = &entry.payload else {
            return true;
        };
        match named_keys(&command.op) {
            Some(keys) => {
                for key in keys {
                    if !self.keys.contains(key) {
                        self.keys.insert(key.to_vec());
                    }
                }
                true
            }
            None => false,
        }
    }

    fn full(&self) -> bool {
        self.entries >= APPLY_BATCH_ENTRIES_MAX
            || self.batch.size_in_bytes() >= APPLY_BATCH_BYTES_MAX
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, io::Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(io::Error::from),
        Err(join) => Err(io::Error::other(format!("storage task failed: {join}"))),
    }
}

type ShardSnapshot = openraft::type_config::alias::SnapshotOf<ShardRaftConfig, SnapshotFile>;

fn to_snapshot(store: &SnapshotStore, current: CurrentSnapshot) -> ShardSnapshot {
    Snapshot {
        meta: current.meta,
        snapshot: SnapshotFile {
            path: store.dir.join(current.file_name),
        },
    }
}

pub struct ShardSnapshotBuilder {
    snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<ShardRaftConfig> for ShardSnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<ShardSnapshot, io::Error> {
        let store = self.snapshots.clone();
        let built = blocking(move || store.build()).await?;
        Ok(to_snapshot(&self.snapshots, built))
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
            if pending.must_write_before(&entry, &self.sessions) {
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
mod tests {
    use super::*;
    use crate::command::{Command, Put, WriteOp};
    use crate::kv::KvView;
    use crate::type_config::Entry;
    use cairn_types::NodeId;
    use openraft::impls::leader_id_adv::LeaderId;
    use std::path::Path;

    fn open(dir: &Path) -> (Arc<DB>, ShardStateMachine) {
        let db = crate::database::open_database(
            &dir.join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let machine = ShardStateMachine::open(
            db.clone(),
            ShardId(3),
            dir.join("snapshots"),
            SessionLimits::default(),
            Arc::default(),
        )
        .unwrap();
        (db, machine)
    }

    fn put_entry(index: u64, key: &str) -> Entry {
        let command = Command {
            write_id: None,
            proposed_at_ms: 1,
            op: WriteOp::Put(Put {
                key: key.into(),
                value: b"v".to_vec(),
                prev_kv: false,
                condition: None,
            }),
            revision: Default::default(),
            trace: None,
        };
        Entry::new_normal(
            LogId::new(
                LeaderId {
                    term: 1,
                    node_id: NodeId(1),
                },
                index,
            ),
            command,
        )
    }

    /// Applies one entry as its own batch, as a run of one entry would be.
    fn apply_now(machine: &mut ShardStateMachine, entry: Entry) -> CommandResponse {
        let mut pending = PendingApply::default();
        pending.note(&entry);
        let response = machine.apply_entry(entry, &mut pending).unwrap();
        machine.write_pending(&mut pending).unwrap();
        response
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(
            LeaderId {
                term: 1,
                node_id: NodeId(1),
            },
            index,
        )
    }

    fn command_entry(index: u64, sequence: Option<u64>, op: WriteOp) -> Entry {
        let write_id = sequence.map(|sequence| crate::command::WriteId {
            client: cairn_types::ClientId(7),
            sequence: cairn_types::Sequence(sequence),
            first_incomplete: cairn_types::Sequence(1),
        });
        let command = Command {
            write_id,
            proposed_at_ms: 1,
            op,
            revision: Default::default(),
            trace: None,
        };
        Entry::new_normal(log_id(index), command)
    }

    fn put_op(key: &str, value: &str) -> WriteOp {
        WriteOp::Put(Put {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
            condition: None,
        })
    }

    #[tokio::test]
    async fn a_run_of_entries_reads_what_earlier_entries_of_the_run_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut machine) = open(dir.path());
        let range_txn = WriteOp::Txn(crate::command::Txn {
            compares: vec![],
            success: vec![
                crate::command::TxnOp::Range(crate::command::Range {
                    start: vec![],
                    end: None,
                    limit: 10,
                    keys_only: true,
                    count_only: false,
                }),
                crate::command::TxnOp::Put(Put {
                    key: b"c".to_vec(),
                    value: b"3".to_vec(),
                    prev_kv: false,
                    condition: None,
                }),
            ],
            failure: vec![],
        });
        let run = vec![
            command_entry(1, Some(1), put_op("a", "1")),
            command_entry(2, None, put_op("b", "1")),
            // The same key again: must see version 1 written by entry 1.
            command_entry(3, Some(2), put_op("a", "2")),
            // A retry of sequence 2 in the same run: answered from the session, not applied.
            command_entry(4, Some(2), put_op("a", "2")),
            command_entry(5, None, range_txn),
            command_entry(6, None, put_op("b", "2")),
        ];
        let stream = futures::stream::iter(run.into_iter().map(|entry| Ok((entry, None))));
        machine.apply(stream).await.unwrap();

        let view = KvView::new(&db, ShardId(3));
        let a = view.get(b"a", false).unwrap().unwrap();
        assert_eq!(
            (a.version, a.create_revision, a.mod_revision),
            (2, Revision(1), Revision(3))
        );
        let b = view.get(b"b", false).unwrap().unwrap();
        assert_eq!(
            (b.version, b.create_revision, b.mod_revision),
            (2, Revision(2), Revision(5))
        );
        assert_eq!(
            view.get(b"c", false).unwrap().unwrap().mod_revision,
            Revision(4)
        );
        // Five changing commands: the retry changed nothing.
        assert_eq!(read_revision(&db, None, ShardId(3)).unwrap(), Revision(5));
        assert_eq!(machine.last_applied, Some(log_id(6)));

        // Everything reached the database: a reopened machine agrees.
        drop(machine);
        let reopened = ShardStateMachine::open(
            db.clone(),
            ShardId(3),
            dir.path().join("snapshots"),
            SessionLimits::default(),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(reopened.last_applied, Some(log_id(6)));
        assert_eq!(reopened.revision, Revision(5));
    }

    fn keys_of(db: &DB) -> Vec<Vec<u8>> {
        let range = crate::command::Range {
            start: vec![],
            end: None,
            limit: 1000,
            keys_only: true,
            count_only: false,
        };
        KvView::new(db, ShardId(3))
            .range(&range, Revision(0))
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }

    /// A node that dies in the middle of installing a snapshot finishes the install when it
    /// opens the state machine again: no mix of old and new keys survives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_snapshot_install_is_redone_on_open() {
        let source_dir = tempfile::tempdir().unwrap();
        let (source_db, mut source) = open(source_dir.path());
        for (index, key) in [(1, "a"), (2, "b"), (3, "c")] {
            apply_now(&mut source, put_entry(index, key));
        }
        let built = source.snapshots.build().unwrap();
        assert_eq!(
            keys_of(&source_db),
            [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );

        tracing::info!(
            "--- the target has other keys, and crashes after the marker and a partial delete"
        );
        let target_dir = tempfile::tempdir().unwrap();
        {
            let (db, mut target) = open(target_dir.path());
            apply_now(&mut target, put_entry(1, "old-1"));
            apply_now(&mut target, put_entry(2, "old-2"));
            std::fs::copy(
                source_dir.path().join("snapshots").join(&built.file_name),
                target.snapshots.dir.join(&built.file_name),
            )
            .unwrap();
            let marker = CurrentSnapshot {
                meta: built.meta.clone(),
                file_name: built.file_name.clone(),
            };
            db.put_cf(
                cf(&db, keys::CF_SM_STATE),
                keys::tagged_key(ShardId(3), keys::TAG_INSTALLING),
                codec::encode(&marker),
            )
            .unwrap();
            db.delete_cf(
                cf(&db, keys::CF_WRITE),
                cairn_mvcc::key::version_key(ShardId(3), b"old-1", Revision(1)),
            )
            .unwrap();
            db.flush_wal(true).unwrap();
        }

        tracing::info!("--- reopening finishes the install");
        let (db, mut target) = open(target_dir.path());
        assert_eq!(keys_of(&db), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let (applied, _) = target.applied_state().await.unwrap();
        assert_eq!(applied, built.meta.last_log_id);
        assert_eq!(read_revision(&db, None, ShardId(3)).unwrap(), Revision(3));
        assert!(
            read_tag::<CurrentSnapshot>(&db, None, ShardId(3), keys::TAG_INSTALLING)
                .unwrap()
                .is_none()
        );
        let current = target
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("the installed snapshot is current");
        assert_eq!(current.meta, built.meta);
    }

    /// A corrupt snapshot is refused before anything is replaced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_snapshot_is_refused_without_touching_the_shard() {
        let source_dir = tempfile::tempdir().unwrap();
        let (_, mut source) = open(source_dir.path());
        apply_now(&mut source, put_entry(1, "new"));
        let built = source.snapshots.build().unwrap();
        let path = source_dir.path().join("snapshots").join(&built.file_name);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        let corrupt = source_dir.path().join("corrupt.snap");
        std::fs::write(&corrupt, bytes).unwrap();

        let target_dir = tempfile::tempdir().unwrap();
        let (db, mut target) = open(target_dir.path());
        apply_now(&mut target, put_entry(1, "kept"));
        let result = target
            .install_snapshot(&built.meta, SnapshotFile { path: corrupt })
            .await;
        assert!(result.is_err());
        assert_eq!(keys_of(&db), [b"kept".to_vec()]);
    }
}
