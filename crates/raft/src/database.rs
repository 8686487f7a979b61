//! Opens the node's single RocksDB instance with Cairn's column families, on disk or, for
//! throwaway clusters, entirely in memory (`storage.engine`, D31).

use crate::error::{Result, StorageError};
use crate::keys::{ALL_COLUMN_FAMILIES, CF_WRITE};
use crate::mvcc_store::{is_version_key, versions_prefix_of, CompactionPoints, WriteFilterFactory};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The node's RocksDB handle, named so that other crates need not depend on rocksdb.
pub type Db = DB;

/// RocksDB tuning that an operator may change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RocksDbConfig {
    /// Shared block cache, in bytes.
    pub block_cache_bytes: usize,
    /// Size of one memtable, in bytes.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
}

impl Default for RocksDbConfig {
    fn default() -> Self {
        Self {
            block_cache_bytes: 256 << 20,
            write_buffer_bytes: 64 << 20,
            background_jobs: 2,
        }
    }
}

/// Where a process keeps its RocksDB: `disk` (durable, the default) or `memory`
/// (RocksDB's in-memory file system: no disk, no fsync, and everything is gone when the
/// process stops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    #[default]
    Disk,
    Memory,
}

impl StorageEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageEngine::Disk => "disk",
            StorageEngine::Memory => "memory",
        }
    }

    pub fn is_durable(self) -> bool {
        self == StorageEngine::Disk
    }
}

impl std::fmt::Display for StorageEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StorageEngine {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "disk" => Ok(StorageEngine::Disk),
            "memory" => Ok(StorageEngine::Memory),
            other => Err(format!(
                "{other:?} is not a storage engine (disk or memory)"
            )),
        }
    }
}

/// The `[storage]` settings of a node or a coordinator.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `disk` or `memory`; see [`StorageEngine`].
    pub engine: StorageEngine,
}

/// A process's opened storage: the database and the folder its snapshot files go to.
pub struct OpenStorage {
    pub engine: StorageEngine,
    pub db: Arc<DB>,
    pub snapshot_root: PathBuf,
    /// In memory mode, the private folder that holds the snapshot files (snapshots are files
    /// outside RocksDB); removed when this is dropped or [`OpenStorage::remove_scratch`] runs.
    scratch: Option<ScratchFolder>,
}

impl OpenStorage {
    /// Deletes the in-memory mode's snapshot folder (nothing on disk mode). Call it once the
    /// replicas have stopped.
    pub fn remove_scratch(&mut self) {
        self.scratch.take();
    }
}

/// A folder in RAM (`/dev/shm` when it is writable, else the temporary folder) that lives as
/// long as this value.
struct ScratchFolder(PathBuf);

impl ScratchFolder {
    fn create(process: &str) -> std::io::Result<Self> {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() && is_writable(shm) {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        remove_stale_scratch_folders(&parent);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = parent.join(format!("cairn-{process}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

/// Removes the scratch folders of in-memory processes that are gone (killed with `kill -9`,
/// so their `Drop` never ran): `cairn-<process>-<pid>-<nanos>` whose pid no longer runs. A
/// reused pid only keeps a dead folder a little longer. Linux only (it asks `/proc`).
fn remove_stale_scratch_folders(parent: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(scratch_folder_pid) else {
            continue;
        };
        if !proc.join(pid.to_string()).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed the snapshot folder of a stopped in-memory process")
                }
                Err(error) => {
                    tracing::debug!(path = %entry.path().display(), %error, "could not remove a stale snapshot folder")
                }
            }
        }
    }
}

/// The pid in a scratch folder's name `cairn-<process>-<pid>-<nanos>`.
fn scratch_folder_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cairn-")?;
    let mut parts = rest.rsplitn(3, '-');
    let nanos = parts.next()?;
    let pid = parts.next()?;
    let process = parts.next()?;
    if process.is_empty() || nanos.parse::<u128>().is_err() {
        return None;
    }
    pid.parse().ok()
}

fn is_writable(folder: &Path) -> bool {
    std::fs::metadata(folder).is_ok_and(|metadata| !metadata.permissions().readonly())
}

impl Drop for ScratchFolder {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), %error, "could not remove the in-memory mode's snapshot folder");
        }
    }
}

/// Opens the storage of one process (`process` names it in the memory mode's scratch folder,
/// e.g. `node` or `coordinator`). On disk: `<data_dir>/rocksdb` and `<data_dir>/snapshots`.
/// In memory: RocksDB on its in-memory file system and snapshots in a private RAM folder;
/// `data_dir` is not touched.
pub fn open_storage(
    engine: StorageEngine,
    data_dir: &Path,
    config: &RocksDbConfig,
    compaction_points: Arc<CompactionPoints>,
    process: &str,
) -> Result<OpenStorage> {
    match engine {
        StorageEngine::Disk => {
            std::fs::create_dir_all(data_dir).map_err(|error| {
                StorageError::Io(std::io::Error::new(
                    error.kind(),
                    format!("creating {}: {error}", data_dir.display()),
                ))
            })?;
            Ok(OpenStorage {
                engine,
                db: open_database(&data_dir.join("rocksdb"), config, compaction_points)?,
                snapshot_root: data_dir.join("snapshots"),
                scratch: None,
            })
        }
        StorageEngine::Memory => {
            let env = rocksdb::Env::mem_env()?;
            let db = open_database_in(
                Path::new("/cairn-memory/rocksdb"),
                config,
                compaction_points,
                Some(&env),
            )?;
            let scratch = ScratchFolder::create(process).map_err(|error| {
                StorageError::Io(std::io::Error::new(
                    error.kind(),
                    format!("creating the in-memory mode's snapshot folder: {error}"),
                ))
            })?;
            Ok(OpenStorage {
                engine,
                db,
                snapshot_root: scratch.0.join("snapshots"),
                scratch: Some(scratch),
            })
        }
    }
}

/// Opens (or creates) the database at `path` on disk. `compaction_points` is what the
/// `write` column family's compaction filter drops versions by; the state machines of this
/// database keep it current.
pub fn open_database(
    path: &Path,
    config: &RocksDbConfig,
    compaction_points: Arc<CompactionPoints>,
) -> Result<Arc<DB>> {
    open_database_in(path, config, compaction_points, None)
}

fn open_database_in(
    path: &Path,
    config: &RocksDbConfig,
    compaction_points: Arc<CompactionPoints>,
    env: Option<&rocksdb::Env>,
) -> Result<Arc<DB>> {
    let cache = rocksdb::Cache::new_lru_cache(config.block_cache_bytes);
    let mut block = rocksdb::BlockBasedOptions::default();
    block.set_block_cache(&cache);
    block.set_bloom_filter(10.0, false);

    let mut cf_options = Options::default();
    cf_options.set_block_based_table_factory(&block);
    cf_options.set_write_buffer_size(config.write_buffer_bytes);
    cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);

    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_max_background_jobs(config.background_jobs);
    // Every column family shares one WAL; a flush of one must not leave another's recent
    // writes only in a WAL that gets deleted.
    options.set_atomic_flush(true);
    options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    if let Some(env) = env {
        options.set_env(env);
    }

    // Versions: a read seeks within one key's versions, so Bloom filters on the key without
    // its revision (the prefix) let a read skip files as a point lookup would; old versions
    // go by the compaction filter.
    let mut write_options = cf_options.clone();
    write_options.set_prefix_extractor(rocksdb::SliceTransform::create(
        "cairn.versions_prefix",
        versions_prefix_of,
        Some(is_version_key),
    ));
    write_options.set_memtable_prefix_bloom_ratio(0.1);
    write_options.set_compaction_filter_factory(WriteFilterFactory {
        points: compaction_points,
    });

    let descriptors: Vec<ColumnFamilyDescriptor> = ALL_COLUMN_FAMILIES
        .iter()
        .filter(|name| **name != CF_WRITE)
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options.clone()))
        .chain([ColumnFamilyDescriptor::new(CF_WRITE, write_options)])
        .collect();
    let db = DB::open_cf_descriptors(&options, path, descriptors)?;
    Ok(Arc::new(db))
}

/// Sizes an operator graphs, per column family, from RocksDB's properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnFamilyStats {
    pub name: &'static str,
    pub sst_bytes: u64,
    pub memtable_bytes: u64,
    pub pending_compaction_bytes: u64,
}

pub fn column_family_stats(db: &DB) -> Vec<ColumnFamilyStats> {
    let property = |cf, name: &str| {
        db.property_int_value_cf(cf, name)
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    ALL_COLUMN_FAMILIES
        .iter()
        .filter_map(|name| db.cf_handle(name).map(|cf| (*name, cf)))
        .map(|(name, cf)| ColumnFamilyStats {
            name,
            sst_bytes: property(cf, "rocksdb.total-sst-files-size"),
            memtable_bytes: property(cf, "rocksdb.cur-size-all-mem-tables"),
            pending_compaction_bytes: property(cf, "rocksdb.estimate-pending-compaction-bytes"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_commit::{GroupCommit, GroupCommitLimits, GroupCommitStats};

    /// The memory engine writes nothing under the data folder, keeps what is written while it
    /// is open, completes group commits without an fsync (RocksDB refuses SyncWAL on its
    /// in-memory WAL), and removes its snapshot folder when closed.
    #[tokio::test(flavor = "current_thread")]
    async fn the_memory_engine_touches_no_disk_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node");
        let storage = open_storage(
            StorageEngine::Memory,
            &data_dir,
            &RocksDbConfig::default(),
            Arc::new(CompactionPoints::default()),
            "test",
        )
        .unwrap();
        assert!(!data_dir.exists(), "the data folder stays untouched");
        let cf = storage.db.cf_handle(crate::keys::CF_RAFT_LOG).unwrap();
        assert!(
            storage.db.cf_handle(CF_WRITE).is_some(),
            "the versions column family exists"
        );
        storage.db.put_cf(cf, b"k", b"v").unwrap();
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        storage
            .db
            .put_cf_opt(cf, b"synced", b"v", &synced)
            .expect("synced writes are accepted in memory");
        assert_eq!(
            storage.db.get_cf(cf, b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );

        let committer = GroupCommit::start(
            storage.db.clone(),
            GroupCommitLimits {
                sync_wal: false,
                ..GroupCommitLimits::default()
            },
            std::sync::Arc::new(GroupCommitStats::default()),
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        committer
            .after_next_sync(Box::new(move |result| {
                let _ = sender.send(result);
            }))
            .await;
        receiver.await.unwrap().expect("the append completes");

        let scratch = storage.snapshot_root.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&storage.snapshot_root).unwrap();
        assert!(scratch.exists());
        drop(storage);
        assert!(!scratch.exists(), "the snapshot folder is removed");
    }

    #[test]
    fn scratch_folder_names_carry_their_pid() {
        assert_eq!(
            scratch_folder_pid("cairn-node-4242-1796142776229343699"),
            Some(4242)
        );
        assert_eq!(
            scratch_folder_pid("cairn-coordinator-7-1796142776229343699"),
            Some(7)
        );
        assert_eq!(scratch_folder_pid("cairn-node-x-1"), None);
        assert_eq!(scratch_folder_pid("faketime_shm_22627"), None);
        assert_eq!(scratch_folder_pid("cairn-node-12"), None);
    }

    #[test]
    fn engines_parse_from_their_names() {
        assert_eq!("memory".parse::<StorageEngine>(), Ok(StorageEngine::Memory));
        assert_eq!("disk".parse::<StorageEngine>(), Ok(StorageEngine::Disk));
        assert!("tmpfs".parse::<StorageEngine>().is_err());
        assert!(StorageEngine::default().is_durable());
    }
}
