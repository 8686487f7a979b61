//! A shard's snapshot files: building one from a RocksDB snapshot of the shard (every version
//! of every key that compaction kept, the sessions, the compaction point), and installing one,
//! crash-atomically, by a redo marker: the file is made durable and a marker is synced before
//! the shard's data is replaced; if the node dies half way, opening the state machine finds
//! the marker and replays the install.

use crate::codec;
use crate::error::{Result, StorageError};
use crate::keys;
use crate::mvcc_store::CompactionPoints;
use crate::snapshot_file::{RecordKind, SnapshotHeader, SnapshotReader, SnapshotWriter};
use crate::state_machine::{read_compaction, read_revision, read_tag};
use crate::type_config::{LogId, SnapshotMeta, StoredMembership};
use cairn_types::ShardId;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest RocksDB batch written while installing a snapshot, in bytes.
const INSTALL_BATCH_BYTES_MAX: usize = 4 << 20;

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("column families are created at open")
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct CurrentSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) file_name: String,
}

/// Shared by the state machine and its snapshot builders: one snapshot directory, one lock
/// around "which snapshot is current".
#[derive(Clone)]
pub(crate) struct SnapshotStore {
    pub(crate) db: Arc<DB>,
    pub(crate) shard: ShardId,
    pub(crate) dir: PathBuf,
    pub(crate) lock: Arc<Mutex<()>>,
    pub(crate) compaction_points: Arc<CompactionPoints>,
}

impl SnapshotStore {
    pub(crate) fn current(&self) -> Result<Option<CurrentSnapshot>> {
        read_tag(&self.db, None, self.shard, keys::TAG_SNAPSHOT)
    }

    pub(crate) fn remove_temporary_files(&self) -> Result<()> {
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
    pub(crate) fn remove_other_snapshots(&self, keep: &str) -> Result<()> {
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
    pub(crate) fn build(&self) -> Result<CurrentSnapshot> {
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
        let iterate = |cf_name: &str| {
            let mut options = ReadOptions::default();
            options.set_snapshot(&snapshot);
            options.set_iterate_upper_bound(keys::shard_upper_bound(self.shard));
            options.set_total_order_seek(true);
            let start = keys::shard_prefix(self.shard);
            db.iterator_cf_opt(
                cf(db, cf_name),
                options,
                IteratorMode::From(&start, Direction::Forward),
            )
        };
        // The iterators pin the files they read. The compaction filter ignores RocksDB
        // snapshots, so the versions they see may already be compacted by a point the
        // snapshot's own state predates: the point read after pinning covers every drop they
        // can see, and the snapshot carries that one (the highest of the two).
        let iterators = [
            (iterate(keys::CF_WRITE), RecordKind::Version),
            (iterate(keys::CF_LOCK), RecordKind::Lock),
            (iterate(keys::CF_SESSIONS), RecordKind::Session),
        ];
        let compact_revision = read_compaction(db, Some(&snapshot), self.shard)?
            .max(self.compaction_points.get(self.shard));
        let header = SnapshotHeader {
            shard: self.shard,
            snapshot_id: file_name.clone(),
            last_applied_index: index,
            revision,
            compact_revision,
        };
        let mut writer = SnapshotWriter::create(&temporary, &header)?;
        for (iterator, kind) in iterators {
            for item in iterator {
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
    pub(crate) fn install(&self, meta: &SnapshotMeta, source: &Path) -> Result<()> {
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
    pub(crate) fn redo_install(&self, marker: &CurrentSnapshot) -> Result<()> {
        let db = &self.db;
        let path = self.dir.join(&marker.file_name);
        let mut reader = SnapshotReader::open(&path)?;
        let revision = reader.header.revision;
        let prefix = keys::shard_prefix(self.shard);
        let upper = keys::shard_upper_bound(self.shard);

        let mut batch = WriteBatch::default();
        for cf_name in [keys::CF_WRITE, keys::CF_LOCK, keys::CF_SESSIONS] {
            batch.delete_range_cf(cf(db, cf_name), &prefix[..], &upper[..]);
        }
        while let Some((kind, key, value)) = reader.next_record()? {
            let cf_name = match kind {
                RecordKind::Version => keys::CF_WRITE,
                RecordKind::Lock => keys::CF_LOCK,
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
            keys::tagged_key(self.shard, keys::TAG_COMPACTION),
            codec::encode(&reader.header.compact_revision),
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
        // The installed versions were compacted by the snapshot's point; the filter may use
        // it only now that it is durable.
        self.compaction_points
            .reset(self.shard, reader.header.compact_revision);
        // Callers hold the snapshot lock (or run at open, before any builder exists).
        self.remove_other_snapshots(&marker.file_name)?;
        Ok(())
    }
}
