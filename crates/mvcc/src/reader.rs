//! Which version a read at revision `R` sees: for each key, the newest version whose revision
//! is at most `R`, unless that version is a tombstone. A read at [`Revision::LATEST`] sees
//! the newest version, and costs one seek, as a plain key-value read would.
//!
//! Rollback markers ([`WriteRecord::Rollback`]) are not versions: a read steps over them to
//! the next older record. They are rare (only aborted transactions write them), so the
//! one-seek cost holds for almost every key. This reader does not look at locks; reads that
//! must respect transaction locks go through [`crate::txn`]'s lock checks first.

use crate::error::{MvccError, Result};
use crate::key::{self, VersionKey};
use crate::record::WriteRecord;
use crate::view::{ColumnFamily, Cursor, MvccView};
use cairn_types::{Revision, ShardId};

/// Versions of one key a range scan steps over with `next` before it seeks past the rest:
/// a seek costs several `next`s, but a key with a long history should not be walked.
const SKIP_BY_NEXT_MAX: usize = 4;

/// A key as a read sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Version {
    pub key: Vec<u8>,
    /// Empty when the read asked for keys only.
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: u64,
}

/// Keys in `[start, end)`; `end == None` is the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeBounds {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// One page of a range read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePage {
    pub versions: Vec<Version>,
    /// More visible keys follow the page.
    pub more: bool,
    /// With `count_only`, every visible key in range; otherwise the keys returned.
    pub count: u64,
}

/// What a range read returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many keys (ignored with `count_only`).
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
}

/// Reads one shard's versions through a view.
pub struct MvccReader<'v, V: MvccView> {
    view: &'v V,
    shard: ShardId,
}

pub(crate) fn to_version(
    user_key: Vec<u8>,
    revision: Revision,
    record: WriteRecord,
    keys_only: bool,
) -> Option<Version> {
    match record {
        WriteRecord::Put {
            create_revision,
            version,
            value,
        } => Some(Version {
            key: user_key,
            value: if keys_only { Vec::new() } else { value },
            create_revision,
            mod_revision: revision,
            version,
        }),
        WriteRecord::TxnPut {
            create_revision,
            version,
            value,
            ..
        } => Some(Version {
            key: user_key,
            value: if keys_only { Vec::new() } else { value },
            create_revision,
            mod_revision: revision,
            version,
        }),
        WriteRecord::Delete | WriteRecord::TxnDelete { .. } | WriteRecord::Rollback => None,
    }
}

impl<'v, V: MvccView> MvccReader<'v, V> {
    pub fn new(view: &'v V, shard: ShardId) -> Self {
        Self { view, shard }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub(crate) fn view(&self) -> &'v V {
        self.view
    }

    /// The newest record of `user_key` at or below `at`, with its revision, tombstones
    /// included and rollback markers skipped. One seek, plus a step per marker.
    pub fn record_at(
        &self,
        user_key: &[u8],
        at: Revision,
    ) -> Result<Option<(Revision, WriteRecord)>> {
        let prefix = key::versions_prefix(self.shard, user_key);
        let upper = key::after_versions(&prefix);
        let start = key::seek_key(&prefix, at);
        let mut cursor = self
            .view
            .cursor(ColumnFamily::Write, &start, &upper, true)?;
        cursor.seek(&start)?;
        // The cursor's bounds are this key's versions, so running out means no version. No
        // well-formed storage key lies between them but the key's versions (no encoded key is
        // a prefix of another): any other is corrupt, and must not be read as a version.
        while let Some((storage_key, value)) = cursor.current() {
            if !is_version_of(storage_key, &prefix) {
                return Err(MvccError::corrupt(
                    "key",
                    "a stored key among a key's versions is not one of them",
                ));
            }
            let parsed = VersionKey::parse(storage_key)?;
            let record = WriteRecord::decode(value)?;
            if !record.is_marker() {
                return Ok(Some((parsed.revision, record)));
            }
            cursor.next()?;
        }
        Ok(None)
    }

    /// The key as a read at `at` sees it.
    pub fn get(&self, user_key: &[u8], at: Revision, keys_only: bool) -> Result<Option<Version>> {
        Ok(self
            .record_at(user_key, at)?
            .and_then(|(revision, record)| {
                to_version(user_key.to_vec(), revision, record, keys_only)
            }))
    }

    /// The keys in `bounds` as a read at `at` sees them, in key order.
    pub fn range(
        &self,
        bounds: &RangeBounds,
        at: Revision,
        options: RangeOptions,
    ) -> Result<RangePage> {
        let lower = key::range_start(self.shard, &bounds.start);
        let upper = key::range_end(self.shard, bounds.end.as_deref());
        let mut page = RangePage::default();
        if lower >= upper {
            return Ok(page);
        }
        let mut cursor = self
            .view
            .cursor(ColumnFamily::Write, &lower, &upper, false)?;
        cursor.seek(&lower)?;
        // The cursor is always on the first (newest) version of a key, or past the end.
        while let Some((storage_key, _)) = cursor.current() {
            let parsed = VersionKey::parse(storage_key)?;
            let prefix = parsed.versions_prefix.to_vec();
            if parsed.revision > at {
                // Newer than the read: the version to read, if any, is further on.
                cursor.seek(&key::seek_key(&prefix, at))?;
                match cursor.current() {
                    Some((next_key, _)) if is_version_of(next_key, &prefix) => {}
                    // No version at or below `at`: the cursor is on the next key already.
                    _ => continue,
                }
            }
            // The first record at or below `at` that is not a marker, if the key has one.
            let mut found = None;
            while let Some((storage_key, value)) = cursor.current() {
                if !is_version_of(storage_key, &prefix) {
                    break;
                }
                let record = WriteRecord::decode(value)?;
                if !record.is_marker() {
                    found = Some((VersionKey::parse(storage_key)?.revision, record));
                    break;
                }
                cursor.next()?;
            }
            let Some((revision, record)) = found else {
                // Only markers at or below `at`: the cursor is on the next key already.
                continue;
            };
            if !record.is_delete() {
                if options.count_only {
                    page.count += 1;
                } else if page.versions.len() as u64 == options.limit {
                    page.more = true;
                    break;
                } else {
                    let user_key = VersionKey {
                        versions_prefix: &prefix,
                        revision,
                    }
                    .user_key()?;
                    page.versions
                        .extend(to_version(user_key, revision, record, options.keys_only));
                }
            }
            skip_versions(&mut cursor, &prefix)?;
        }
        if !options.count_only {
            page.count = page.versions.len() as u64;
        }
        Ok(page)
    }
}

fn storage_key_len(versions_prefix: &[u8]) -> usize {
    versions_prefix.len() + key::REVISION_BYTES
}

/// Moves the cursor past every remaining version of the key with this versions prefix.
fn skip_versions<C: Cursor>(cursor: &mut C, prefix: &[u8]) -> Result<()> {
    for _ in 0..SKIP_BY_NEXT_MAX {
        cursor.next()?;
        match cursor.current() {
            Some((storage_key, _)) if is_version_of(storage_key, prefix) => {}
            _ => return Ok(()),
        }
    }
    cursor.seek(&key::after_versions(prefix))
}

fn is_version_of(storage_key: &[u8], prefix: &[u8]) -> bool {
    storage_key.len() == storage_key_len(prefix) && storage_key.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{MemoryView, Mutation};

    /// Found by the `mvcc_record` fuzz target: a stored key inside the bounds of a key's
    /// versions that is not one of them (corrupt, or installed from a bad snapshot) was read
    /// as a version of the key, with a revision taken from its last bytes (a debug assertion
    /// in test builds). It is corrupt data and reads as an error.
    #[test]
    fn a_foreign_key_among_a_keys_versions_is_corrupt_not_a_version() {
        let shard = ShardId(0);
        let mut foreign = key::versions_prefix(shard, b"");
        foreign.extend_from_slice(&[0x0e; 30]);
        let mut view = MemoryView::default();
        view.apply([Mutation::Put {
            cf: ColumnFamily::Write,
            key: foreign,
            value: WriteRecord::Delete.encode(),
        }]);
        let reader = MvccReader::new(&view, shard);
        assert!(reader.get(b"", Revision::LATEST, false).is_err());
        assert!(reader
            .record_at(b"", Revision(0xf1f1_f1f1_f1f1_f1f1))
            .is_err());
        // A well-formed version is still read.
        let mut view = MemoryView::default();
        view.apply([Mutation::Put {
            cf: ColumnFamily::Write,
            key: key::version_key(shard, b"", Revision(3)),
            value: WriteRecord::Delete.encode(),
        }]);
        let reader = MvccReader::new(&view, shard);
        assert_eq!(
            reader.record_at(b"", Revision::LATEST).unwrap(),
            Some((Revision(3), WriteRecord::Delete))
        );
    }

    /// Found by the `mvcc_record` fuzz target (fuzz/corpus/mvcc_record/
    /// regression-skip-versions): five stored versions of a corrupt key, whose user key has no
    /// terminator, made a range read step past them with `after_versions`, which assumes one
    /// (a panic with debug assertions; without, a seek backwards, or an overflow on `0xff`).
    #[test]
    fn a_range_over_many_versions_of_a_corrupt_key_is_an_error() {
        let shard = ShardId(0);
        let mut view = MemoryView::default();
        for revision in 1..=6u64 {
            let mut storage_key = key::shard_prefix(shard).to_vec();
            storage_key.extend_from_slice(b"a\xff");
            storage_key.extend_from_slice(&(!revision).to_be_bytes());
            view.apply([Mutation::Put {
                cf: ColumnFamily::Write,
                key: storage_key,
                value: WriteRecord::Delete.encode(),
            }]);
        }
        let everything = RangeBounds {
            start: Vec::new(),
            end: None,
        };
        let options = RangeOptions {
            limit: 3,
            keys_only: false,
            count_only: true,
        };
        let reader = MvccReader::new(&view, shard);
        assert!(reader
            .range(&everything, Revision::LATEST, options)
            .is_err());
    }
}
