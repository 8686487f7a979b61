//! What one `apply` call has put in its RocksDB batch and not written yet: the batch, the
//! keys its entries named, the answers and spans waiting for the write. The state machine
//! asks it whether the next entry must see the batch written first ([`PendingApply`]).

use crate::command::{CommandResponse, WriteOp};
use crate::kv::named_keys;
use crate::newest_cache::NewestCache;
use crate::sessions::SessionTable;
use crate::type_config::ShardRaftConfig;
use cairn_mvcc::KnownNewest;
use openraft::EntryPayload;
use rocksdb::WriteBatch;

/// Most entries applied into one RocksDB batch before it is written (and their answers sent).
const APPLY_BATCH_ENTRIES_MAX: usize = 1024;
/// Largest RocksDB batch of applied entries, in bytes; a larger run is written in parts.
const APPLY_BATCH_BYTES_MAX: usize = 4 << 20;

/// Entries applied into a batch that is not written yet, and what they touched.
#[derive(Default)]
pub(crate) struct PendingApply {
    pub(crate) batch: WriteBatch,
    pub(crate) entries: usize,
    /// User keys named by the pending entries' operations (a superset of what they wrote).
    pub(crate) keys: std::collections::HashSet<Vec<u8>>,
    /// Whether a pending entry is a transaction command (prewrite, commit, ...): those change
    /// locks and versions by rules the newest-version cache does not follow.
    pub(crate) txn_commands: bool,
    pub(crate) answers: Vec<(
        openraft::storage::ApplyResponder<ShardRaftConfig>,
        CommandResponse,
    )>,
    /// `raft.apply` spans of sampled entries in the batch, ended once it is written.
    pub(crate) traced: Vec<tracing::Span>,
    /// A compaction point raised by a pending entry: the batch is written synced, then the
    /// point is handed to the compaction filter.
    pub(crate) raised_compaction: Option<cairn_types::Revision>,
}

impl PendingApply {
    /// Whether `entry` may read something the pending batch changes: a key a pending entry
    /// named, a range (which may cover any of them), or the remembered result of a duplicate
    /// (which a pending entry may have just stored). Such an entry is applied after the
    /// pending batch is written.
    ///
    /// A plain put or delete (no condition, no previous value asked for) of a key a pending
    /// one-phase write named needs no write first when the cache knows the key: the cache
    /// already holds the key's newest version as the batch leaves it, and such a write reads
    /// nothing else of the key (no pending entry changed locks). Zipfian workloads name hot
    /// keys in most batches, and each extra RocksDB write cost a trip through its write queue.
    pub(crate) fn must_write_before(
        &self,
        entry: &crate::type_config::Entry,
        sessions: &SessionTable,
        cache: &NewestCache,
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
        let blind_key = match &command.op {
            WriteOp::Put(put) if !put.prev_kv && put.condition.is_none() => Some(&put.key),
            WriteOp::Delete(delete) if !delete.prev_kv => Some(&delete.key),
            _ => None,
        };
        if let Some(key) = blind_key {
            if !self.txn_commands && cache.newest_meta(key).is_some() {
                return false;
            }
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
        self.txn_commands |= command.op.is_txn_command();
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

    pub(crate) fn full(&self) -> bool {
        self.entries >= APPLY_BATCH_ENTRIES_MAX
            || self.batch.size_in_bytes() >= APPLY_BATCH_BYTES_MAX
    }
}
