//! Which versions compaction may drop once a shard's compaction point is `C`.
//!
//! Reads below `C` are refused (`Compacted`), so a version is needed only if some read at
//! `R >= C` can see it: every version above `C`, and for each key the newest version at or
//! below `C` — unless that one is a tombstone, which no read sees. Everything older is garbage.
//!
//! RocksDB runs this as a compaction filter, which sees the versions of a key newest first but
//! only those in the files being compacted: a newer version may sit in another level. So the
//! filter keeps the first version at or below `C` it meets for each key, and drops only the
//! older ones after it. A tombstone it meets first may be dropped only when the compaction
//! covers every file (nothing older can hide below it); otherwise it is kept and reported
//! ([`Decision::KeepObsoleteTombstone`]) so the caller can remove it and every older version
//! of that key with a range delete, outside the compaction. Not every version at or below
//! `C`: a newer one the compaction did not see may be the one reads need.
//!
//! Transactions: `TxnPut` and `TxnDelete` are versions like `Put` and `Delete`. A `Rollback`
//! marker at or below `C` is dropped and does not count as the version reads need: its only
//! use is to refuse a late prewrite at its `start_ts`, and a prewrite at or below `C` is
//! refused anyway. (Dropping commit records at or below `C` can lose a transaction's outcome:
//! the compaction point must stay below every lock's `start_ts`, see `docs/mvcc.md`.)

use crate::key::VersionKey;
use crate::record::WriteRecord;
use cairn_types::Revision;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Keep,
    Drop,
    /// A tombstone at or below `C` that no read can see, kept because older versions may
    /// remain in files this compaction does not cover.
    KeepObsoleteTombstone,
}

/// The filter's state over one compaction's stream of `write` keys, in order.
pub struct CompactionFilter {
    compact_revision: Revision,
    /// The compaction covers every file of the column family.
    full: bool,
    /// The versions prefix of the key whose versions are being visited.
    current_key: Vec<u8>,
    /// A version at or below `C` of the current key was already met (kept or dropped).
    met_at_or_below: bool,
}

impl CompactionFilter {
    pub fn new(compact_revision: Revision, full: bool) -> Self {
        Self {
            compact_revision,
            full,
            current_key: Vec::new(),
            met_at_or_below: false,
        }
    }

    /// Decides for one `write` entry. A key or value that does not parse is kept: compaction
    /// never deletes what it does not understand.
    pub fn decide(&mut self, storage_key: &[u8], value: &[u8]) -> Decision {
        let Ok(parsed) = VersionKey::parse(storage_key) else {
            return Decision::Keep;
        };
        if parsed.versions_prefix != self.current_key.as_slice() {
            self.current_key.clear();
            self.current_key.extend_from_slice(parsed.versions_prefix);
            self.met_at_or_below = false;
        }
        if parsed.revision > self.compact_revision {
            return Decision::Keep;
        }
        if self.met_at_or_below {
            return Decision::Drop;
        }
        let record = WriteRecord::decode(value);
        if matches!(record, Ok(WriteRecord::Rollback)) {
            return Decision::Drop;
        }
        self.met_at_or_below = true;
        match record {
            Ok(record) if record.is_delete() && self.full => Decision::Drop,
            Ok(record) if record.is_delete() => Decision::KeepObsoleteTombstone,
            _ => Decision::Keep,
        }
    }
}
