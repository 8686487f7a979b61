//! A shard's replicated state machine: the `kv` and `sessions` column families of one shard,
//! plus its applied log id, membership and revision, all in the node's RocksDB.
//!
//! Each applied entry is one atomic RocksDB write holding the key changes, the session
//! changes and the new applied log id, so the state machine is always at exactly one log
//! position. Applies are not fsynced: the Raft log is, and a replay from the log (or from the
//! last snapshot, whose file is fsynced) restores anything the OS lost.
//!
//! Snapshots are files (see [`crate::snapshot_file`]) built from a RocksDB snapshot, so they
//! are consistent while applies go on. Installing one is crash-atomic by redo: the file is
//! made durable and a marker is synced before the shard's keys are replaced; if the node
//! dies half way, opening the state machine finds the marker and replays the install.

use crate::codec;
use crate::command::{CommandResponse, WriteResult};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::kv::{self, KvView};
use crate::sessions::{Admission, RememberedResult, SessionLimits, SessionTable};
use crate::snapshot_file::{RecordKind, SnapshotHeader, SnapshotReader, SnapshotWriter};
use crate::type_config::{LogId, ShardRaftConfig, SnapshotMeta, StoredMembership};
use cairn_types::{Revision, ShardId};
use futures::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest RocksDB batch written while installing a snapshot, in bytes.
const INSTALL_BATCH_BYTES_MAX: usize = 4 << 20;

/// A snapshot as openraft passes it around: the path of a complete snapshot file.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file_name: String,
}

/// Shared by the state machine and its snapshot builders: one snapshot directory, one lock
/// around "which snapshot is current".
#[derive(Clone)]
struct SnapshotStore {
    db: Arc<DB>,
    shard: ShardId,
    dir: PathBuf,
    lock: Arc<Mutex<()>>,
}

pub struct ShardStateMachine {
    snapshots: SnapshotStore,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: Revision,
    sessions: SessionTable,
    session_limits: SessionLimits,
    counters: Arc<crate::replica::ReplicaCounters>,
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
}

fn read_tag<T: serde::de::DeserializeOwned>(
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

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl ShardStateMachine {
    /// Opens the state machine of `shard`, finishing an interrupted snapshot install first.
    /// Blocking: call from a blocking context.
    pub fn open(
        db: Arc<DB>,
        shard: ShardId,
        snapshot_dir: PathBuf,
        session_limits: SessionLimits,
    ) -> Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let snapshots = SnapshotStore {
            db: db.clone(),
            shard,
            dir: snapshot_dir,
            lock: Arc::new(Mutex::new(())),
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

    /// Applies one entry as one atomic write; returns the response for its proposer.
    /// `traced`: the entry belongs to a sampled request (a `raft.apply` span is entered).
    fn apply_entry(
        &mut self,
        entry: crate::type_config::Entry,
        traced: bool,
    ) -> Result<CommandResponse> {
        let db = self.snapshots.db.clone();
        let shard = self.snapshots.shard;
        let log_id = entry.log_id();
        let mut batch = WriteBatch::default();
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
                self.sessions.tick(&command, &mut batch, &db);
                let result = match self.sessions.admit(&command, &db)? {
                    Admission::Duplicate(RememberedResult::Full(result)) => result,
                    Admission::Duplicate(RememberedResult::TooLarge) => {
                        WriteResult::AppliedResultNotRetained
                    }
                    Admission::WindowExceeded { oldest_remembered } => {
                        WriteResult::WindowExceeded { oldest_remembered }
                    }
                    Admission::New => {
                        let view = KvView::new(&db, shard);
                        let (result, changed) =
                            kv::apply_write(&view, &mut batch, &command.op, self.revision)?;
                        if changed {
                            self.revision = Revision(self.revision.0 + 1);
                            batch.put_cf(
                                state_cf,
                                keys::tagged_key(shard, keys::TAG_REVISION),
                                codec::encode(&self.revision),
                            );
                        }
                        self.sessions.remember(&command, &result, &mut batch, &db);
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
        // Only a traced entry's apply is worth this span's cost.
        let _write = traced
            .then(|| tracing::info_span!("rocksdb.write", bytes = batch.size_in_bytes()).entered());
        db.write(batch)?;
        Ok(response)
    }
}

impl SnapshotStore {
    fn current(&self) -> Result<Option<CurrentSnapshot>> {
        read_tag(&self.db, None, self.shard, keys::TAG_SNAPSHOT)
    }

    fn remove_temporary_files(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Removes every snapshot file but `keep`. Called with `lock` held.
    fn remove_other_snapshots(&self, keep: &str) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".snap") && name != keep {
                // A replication stream that opened it keeps reading its (unlinked) inode.
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes a snapshot of the shard as of now and makes it current (unless a newer one
    /// already is). Blocking.
    fn build(&self) -> Result<CurrentSnapshot> {
        // Held for the whole build: an install cannot run half way under it (the build would
        // capture a half-replaced shard) nor lose its file to the build's clean-up.
        let _guard = self.lock.lock().expect("snapshot lock poisoned");
        let db = &self.db;
        let snapshot = db.snapshot();
        let last_applied =
            read_tag::<Option<LogId>>(db, Some(&snapshot), self.shard, keys::TAG_APPLIED)?
                .flatten();
        let membership: StoredMembership =
            read_tag(db, Some(&snapshot), self.shard, keys::TAG_MEMBERSHIP)?.unwrap_or_default();
        let revision = read_revision(db, Some(&snapshot), self.shard)?;
        let index = last_applied.as_ref().map_or(0, |log_id| log_id.index());
        let file_name = format!("snap-{index:020}-{}.snap", now_nanos());
        let temporary = self.dir.join(format!("building-{}.tmp", now_nanos()));
        let header = SnapshotHeader {
            shard: self.shard,
            snapshot_id: file_name.clone(),
            last_applied_index: index,
            revision,
        };
        let mut writer = SnapshotWriter::create(&temporary, &header)?;
        for (cf_name, kind) in [
            (keys::CF_KV, RecordKind::Kv),
            (keys::CF_SESSIONS, RecordKind::Session),
        ] {
            let mut options = ReadOptions::default();
            options.set_snapshot(&snapshot);
            options.set_iterate_upper_bound(keys::shard_upper_bound(self.shard));
            let start = keys::shard_prefix(self.shard);
            for item in db.iterator_cf_opt(
                cf(db, cf_name),
                options,
                IteratorMode::From(&start, Direction::Forward),
            ) {
                let (key, value) = item?;
                writer.record(kind, &key[8..], &value)?;
            }
        }
        let records = writer.finish()?;
        drop(snapshot);
        std::fs::rename(&temporary, self.dir.join(&file_name))?;
        sync_dir(&self.dir)?;

        let built = CurrentSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
            },
            file_name,
        };
        if let Some(current) = self.current()? {
            if current.meta.last_log_id >= built.meta.last_log_id {
                std::fs::remove_file(self.dir.join(&built.file_name))?;
                return Ok(current);
            }
        }
        // Synced before the previous snapshot file goes, so the pointer never names a deleted file.
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db.put_cf_opt(
            cf(db, keys::CF_SM_STATE),
            keys::tagged_key(self.shard, keys::TAG_SNAPSHOT),
            codec::encode(&built),
            &synced,
        )?;
        self.remove_other_snapshots(&built.file_name)?;
        tracing::info!(shard = %self.shard, index, records, file = %built.file_name, "built snapshot");
        Ok(built)
    }

    /// Replaces the shard's state with the snapshot file `source`. Blocking.
    fn install(&self, meta: &SnapshotMeta, source: &Path) -> Result<()> {
        // Held from the marker to the new pointer; see `build`.
        let _guard = self.lock.lock().expect("snapshot lock poisoned");
        let (header, records) = SnapshotReader::verify(source)?;
        if header.shard != self.shard {
            return Err(StorageError::Snapshot(format!(
                "snapshot of {} offered to {}",
                header.shard, self.shard
            )));
        }
        // The file must be ours and durable before the marker points at it.
        let index = meta.last_log_id.as_ref().map_or(0, |log_id| log_id.index());
        let owned_name = source
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| {
                source.parent() == Some(self.dir.as_path()) && name.starts_with("snap-")
            });
        let file_name = match owned_name {
            Some(name) => name,
            None => {
                let name = format!("snap-{index:020}-{}.snap", now_nanos());
                if source.parent() == Some(self.dir.as_path()) {
                    std::fs::rename(source, self.dir.join(&name))?;
                } else {
                    std::fs::copy(source, self.dir.join(&name))?;
                    std::fs::File::open(self.dir.join(&name))?.sync_all()?;
                }
                sync_dir(&self.dir)?;
                name
            }
        };
        let marker = CurrentSnapshot {
            meta: meta.clone(),
            file_name,
        };
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db.put_cf_opt(
            cf(&self.db, keys::CF_SM_STATE),
            keys::tagged_key(self.shard, keys::TAG_INSTALLING),
            codec::encode(&marker),
            &synced,
        )?;
        self.redo_install(&marker)?;
        tracing::info!(shard = %self.shard, index, records, "installed snapshot");
        Ok(())
    }

    /// Replaces the shard's keys and sessions with the marker's snapshot. Idempotent.
    fn redo_install(&self, marker: &CurrentSnapshot) -> Result<()> {
        let db = &self.db;
        let path = self.dir.join(&marker.file_name);
        let mut reader = SnapshotReader::open(&path)?;
        let revision = reader.header.revision;
        let prefix = keys::shard_prefix(self.shard);
        let upper = keys::shard_upper_bound(self.shard);

        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(db, keys::CF_KV), &prefix[..], &upper[..]);
        batch.delete_range_cf(cf(db, keys::CF_SESSIONS), &prefix[..], &upper[..]);
        while let Some((kind, key, value)) = reader.next_record()? {
            let cf_name = match kind {
                RecordKind::Kv => keys::CF_KV,
                RecordKind::Session => keys::CF_SESSIONS,
            };
            batch.put_cf(cf(db, cf_name), keys::tagged_key(self.shard, &key), value);
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES_MAX {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        let state_cf = cf(db, keys::CF_SM_STATE);
        batch.put_cf(
            state_cf,
            keys::tagged_key(self.shard, keys::TAG_APPLIED),
            codec::encode(&marker.meta.last_log_id),
        );
        batch.put_cf(
            state_cf,
            keys::tagged_key(self.shard, keys::TAG_MEMBERSHIP),
            codec::encode(&marker.meta.last_membership),
        );
        batch.put_cf(
            state_cf,
            keys::tagged_key(self.shard, keys::TAG_REVISION),
            codec::encode(&revision),
        );
        batch.put_cf(
            state_cf,
            keys::tagged_key(self.shard, keys::TAG_SNAPSHOT),
            codec::encode(marker),
        );
        batch.delete_cf(state_cf, keys::tagged_key(self.shard, keys::TAG_INSTALLING));
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        db.write_opt(batch, &synced)?;
        // Callers hold the snapshot lock (or run at open, before any builder exists).
        self.remove_other_snapshots(&marker.file_name)?;
        Ok(())
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
        while let Some((entry, responder)) = entries.try_next().await? {
            let span = crate::type_config::entry_trace(&entry).map(|parent| {
                let span = tracing::info_span!(
                    "raft.apply",
                    shard = self.shard().0,
                    index = entry.index()
                );
                parent.adopt(&span);
                span
            });
            let _entered = span.as_ref().map(|span| span.enter());
            // A RocksDB write of one entry takes microseconds (no fsync): not worth a thread hop.
            let response = self.apply_entry(entry, span.is_some()).map_err(|error| {
                tracing::error!(shard = %self.shard(), %error, "applying a committed entry failed; the replica stops");
                io::Error::from(error)
            })?;
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
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
    use crate::type_config::Entry;
    use cairn_types::NodeId;
    use openraft::impls::leader_id_adv::LeaderId;

    fn open(dir: &Path) -> (Arc<DB>, ShardStateMachine) {
        let db = crate::database::open_database(&dir.join("db"), &Default::default()).unwrap();
        let machine = ShardStateMachine::open(
            db.clone(),
            ShardId(3),
            dir.join("snapshots"),
            SessionLimits::default(),
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
            source.apply_entry(put_entry(index, key), false).unwrap();
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
            target.apply_entry(put_entry(1, "old-1"), false).unwrap();
            target.apply_entry(put_entry(2, "old-2"), false).unwrap();
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
            db.delete_cf(cf(&db, keys::CF_KV), keys::kv_key(ShardId(3), b"old-1"))
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
        source.apply_entry(put_entry(1, "new"), false).unwrap();
        let built = source.snapshots.build().unwrap();
        let path = source_dir.path().join("snapshots").join(&built.file_name);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        let corrupt = source_dir.path().join("corrupt.snap");
        std::fs::write(&corrupt, bytes).unwrap();

        let target_dir = tempfile::tempdir().unwrap();
        let (db, mut target) = open(target_dir.path());
        target.apply_entry(put_entry(1, "kept"), false).unwrap();
        let result = target
            .install_snapshot(&built.meta, SnapshotFile { path: corrupt })
            .await;
        assert!(result.is_err());
        assert_eq!(keys_of(&db), [b"kept".to_vec()]);
    }
}
