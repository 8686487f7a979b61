//! What a write at a revision adds to the versions of its keys, and when a revision must be
//! refused.
//!
//! A write at revision `T` adds one version per key it changes, under `mc(key) ++ !T`. Every
//! replica applies the same log, so these rules run on every replica with the same inputs.
//! The one rule that protects readers: **`T` must be above the newest version of every key
//! the command names.** Otherwise a key's `mod_revision` would go backwards in log order, and
//! a read at some `R >= T` already answered could change. The storage node arranges that
//! this never happens to a correct write (key latches taken before the timestamp is fetched,
//! and the leader's term carried in the command); this check makes it a refusal instead of
//! silent corruption if it ever does.

use crate::error::Result;
use crate::key;
use crate::reader::{to_version, MvccReader, Version};
use crate::record::WriteRecord;
use crate::view::{ColumnFamily, Mutation, MvccView};
use cairn_types::{Revision, ShardId};
use std::cell::RefCell;
use std::collections::HashMap;

/// Why a write's revision cannot be applied. Nothing of the command is applied; the client
/// may retry it (it will get a new timestamp).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error(
        "revision {revision} is not above {newest}, the newest version of a key the write names"
    )]
    NotAboveNewest {
        revision: Revision,
        newest: Revision,
    },
    #[error("revision {revision} is not above the compaction point {compact_revision}")]
    AtOrBelowCompaction {
        revision: Revision,
        compact_revision: Revision,
    },
    /// The timestamp was fetched under the leadership of one term and the entry was
    /// appended in another: the latches that protected it were the old leader's, so readers
    /// of the new leader may already have read past it.
    #[error("timestamp fetched in term {fetched_in_term}, entry appended in term {entry_term}")]
    LeadershipChanged {
        fetched_in_term: u64,
        entry_term: u64,
    },
}

/// The apply-time rule for a timestamped entry: it must be appended in the term whose leader
/// latched its keys and fetched its timestamp.
pub fn leadership_refusal(fetched_in_term: u64, entry_term: u64) -> Option<Refusal> {
    (fetched_in_term != entry_term).then_some(Refusal::LeadershipChanged {
        fetched_in_term,
        entry_term,
    })
}

/// A key's newest record and its revision (`None`: the key has no version).
type NewestRecord = Option<(Revision, WriteRecord)>;

/// What a write needs of a key's newest version, without its value: the revision (for the
/// refusal check) and the counters a new version continues. `None` where used: no version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewestMeta {
    pub revision: Revision,
    /// `None` for a tombstone: the key does not exist from `revision` on.
    pub live: Option<LiveMeta>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveMeta {
    pub create_revision: Revision,
    pub version: u64,
}

impl NewestMeta {
    fn of(newest: &NewestRecord) -> Option<NewestMeta> {
        let (revision, record) = newest.as_ref()?;
        let live = match record {
            WriteRecord::Put {
                create_revision,
                version,
                ..
            }
            | WriteRecord::TxnPut {
                create_revision,
                version,
                ..
            } => Some(LiveMeta {
                create_revision: *create_revision,
                version: *version,
            }),
            WriteRecord::Delete | WriteRecord::TxnDelete { .. } | WriteRecord::Rollback => None,
        };
        Some(NewestMeta {
            revision: *revision,
            live,
        })
    }
}

/// Knowledge of keys' newest versions kept outside the view (the storage node's per-shard
/// cache), so that a plain put or delete reads nothing. An answer must be exactly what the view
/// holds: `Some(None)` means the key has no version, `None` that it is not known.
pub trait KnownNewest {
    fn newest_meta(&self, user_key: &[u8]) -> Option<Option<NewestMeta>>;
}

/// Knows nothing: every key is read from the view.
pub struct NothingKnown;

impl KnownNewest for NothingKnown {
    fn newest_meta(&self, _user_key: &[u8]) -> Option<Option<NewestMeta>> {
        None
    }
}

/// Builds the mutations of one command at one revision, reading the versions it replaces.
pub struct VersionWriter<'v, V: MvccView> {
    reader: MvccReader<'v, V>,
    revision: Revision,
    mutations: Vec<Mutation>,
    /// The newest record of each key this writer has read or written, tombstones included.
    /// A put reads its key's newest version for the refusal check, for its condition and
    /// for the new version's counters: one seek serves all three (each seek creates a
    /// RocksDB iterator, the largest cost of a write's apply). Kept true by [`Self::push`],
    /// the only way this writer changes a key.
    newest: RefCell<HashMap<Vec<u8>, NewestRecord>>,
    /// Newest versions known without reading (without values), consulted where no value is
    /// needed; answers are kept in `metas` beside `newest`.
    known: &'v dyn KnownNewest,
    /// What this writer learnt from `known` or wrote, by key: the newest version's metadata
    /// after the command. `newest` wins where both have a key.
    metas: RefCell<HashMap<Vec<u8>, Option<NewestMeta>>>,
}

impl<'v, V: MvccView> VersionWriter<'v, V> {
    pub fn new(view: &'v V, shard: ShardId, revision: Revision) -> Self {
        Self::with_known(view, shard, revision, &NothingKnown)
    }

    /// As `new`, with metadata known outside the view (it must agree with the view).
    pub fn with_known(
        view: &'v V,
        shard: ShardId,
        revision: Revision,
        known: &'v dyn KnownNewest,
    ) -> Self {
        Self {
            reader: MvccReader::new(view, shard),
            revision,
            mutations: Vec::new(),
            newest: RefCell::new(HashMap::new()),
            known,
            metas: RefCell::new(HashMap::new()),
        }
    }

    /// The metadata of `user_key`'s newest version (tombstones included): from what this
    /// writer read or wrote, else from `known`, else read (with its value) from the view.
    pub fn newest_meta(&self, user_key: &[u8]) -> Result<Option<NewestMeta>> {
        if let Some(read) = self.newest.borrow().get(user_key) {
            return Ok(NewestMeta::of(read));
        }
        if let Some(meta) = self.metas.borrow().get(user_key) {
            return Ok(*meta);
        }
        if let Some(meta) = self.known.newest_meta(user_key) {
            self.metas.borrow_mut().insert(user_key.to_vec(), meta);
            return Ok(meta);
        }
        Ok(NewestMeta::of(&self.newest(user_key)?))
    }

    /// Every key this writer read or wrote, with its newest version's metadata after the
    /// command: what a cache of newest versions learns from it once its mutations are written.
    pub fn newest_metas(&self) -> Vec<(Vec<u8>, Option<NewestMeta>)> {
        let newest = self.newest.borrow();
        let metas = self.metas.borrow();
        newest
            .iter()
            .map(|(key, read)| (key.clone(), NewestMeta::of(read)))
            .chain(
                metas
                    .iter()
                    .filter(|(key, _)| !newest.contains_key(*key))
                    .map(|(key, meta)| (key.clone(), *meta)),
            )
            .collect()
    }

    /// The newest record of `user_key` (tombstones included, markers skipped), read once.
    fn newest(&self, user_key: &[u8]) -> Result<NewestRecord> {
        if let Some(known) = self.newest.borrow().get(user_key) {
            return Ok(known.clone());
        }
        let read = self.reader.record_at(user_key, Revision::LATEST)?;
        self.newest
            .borrow_mut()
            .insert(user_key.to_vec(), read.clone());
        Ok(read)
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn reader(&self) -> &MvccReader<'v, V> {
        &self.reader
    }

    /// Checks the command's revision against the keys it names and the compaction point;
    /// `Some` means the whole command must be refused.
    pub fn refusal<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        compact_revision: Revision,
    ) -> Result<Option<Refusal>> {
        if self.revision <= compact_revision {
            return Ok(Some(Refusal::AtOrBelowCompaction {
                revision: self.revision,
                compact_revision,
            }));
        }
        for key in keys {
            if let Some(newest) = self.newest_meta(key)? {
                if newest.revision >= self.revision {
                    return Ok(Some(Refusal::NotAboveNewest {
                        revision: self.revision,
                        newest: newest.revision,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The key as the write finds it (its newest version).
    pub fn current(&self, user_key: &[u8]) -> Result<Option<Version>> {
        Ok(self
            .newest(user_key)?
            .and_then(|(revision, record)| to_version(user_key.to_vec(), revision, record, false)))
    }

    /// Writes `value` as the key's new version: version 1 and `create_revision` = this
    /// revision when the key does not exist, otherwise one more version of it.
    pub fn put(&mut self, user_key: &[u8], value: Vec<u8>) -> Result<()> {
        let live = self.newest_meta(user_key)?.and_then(|meta| meta.live);
        let record = match live {
            Some(current) => WriteRecord::Put {
                create_revision: current.create_revision,
                version: current.version + 1,
                value,
            },
            None => WriteRecord::Put {
                create_revision: self.revision,
                version: 1,
                value,
            },
        };
        self.push(user_key, record);
        Ok(())
    }

    /// Deletes the key if it exists (a tombstone version); returns whether it existed.
    pub fn delete(&mut self, user_key: &[u8]) -> Result<bool> {
        let live = self.newest_meta(user_key)?.and_then(|meta| meta.live);
        if live.is_none() {
            return Ok(false);
        }
        self.push(user_key, WriteRecord::Delete);
        Ok(true)
    }

    fn push(&mut self, user_key: &[u8], record: WriteRecord) {
        self.mutations.push(Mutation::Put {
            cf: ColumnFamily::Write,
            key: key::version_key(self.reader.shard(), user_key, self.revision),
            value: record.encode(),
        });
        self.newest
            .borrow_mut()
            .insert(user_key.to_vec(), Some((self.revision, record)));
    }

    /// Whether anything was written.
    pub fn changed(&self) -> bool {
        !self.mutations.is_empty()
    }

    /// The mutations so far, in order.
    pub fn mutations(&self) -> &[Mutation] {
        &self.mutations
    }

    pub fn into_mutations(self) -> Vec<Mutation> {
        self.mutations
    }
}
