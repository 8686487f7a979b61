//! Opens the node's single RocksDB instance with Cairn's column families.

use crate::error::Result;
use crate::keys::{ALL_COLUMN_FAMILIES, CF_WRITE};
use crate::mvcc_store::{is_version_key, versions_prefix_of, CompactionPoints, WriteFilterFactory};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use std::path::Path;
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

/// Opens the database. `compaction_points` is what the `write` column family's compaction
/// filter drops versions by; the state machines of this database keep it current.
pub fn open_database(
    path: &Path,
    config: &RocksDbConfig,
    compaction_points: Arc<CompactionPoints>,
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
