//! What the MVCC rules read from (a sorted snapshot of the column families) and what they ask
//! the caller to write.

use crate::error::Result;
use std::collections::BTreeMap;
use std::ops::Bound;

/// The column families the MVCC layer owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnFamily {
    /// Versions of keys: `shard, mc(key), !revision` -> [`crate::WriteRecord`].
    Write,
    /// Transaction locks, one per key: `shard, mc(key)` -> [`crate::txn::Lock`].
    Lock,
}

impl ColumnFamily {
    pub const ALL: [ColumnFamily; 2] = [ColumnFamily::Write, ColumnFamily::Lock];

    /// The RocksDB column family name.
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Write => "write",
            ColumnFamily::Lock => "lock",
        }
    }
}

/// A change the caller writes, with every other mutation of the same command, atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put {
        cf: ColumnFamily,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: ColumnFamily,
        key: Vec<u8>,
    },
}

/// A position in one column family, between `lower` (inclusive) and `upper` (exclusive).
pub trait Cursor {
    /// Moves to the first key at or after `key` (within the bounds).
    fn seek(&mut self, key: &[u8]) -> Result<()>;
    /// Moves to the next key.
    fn next(&mut self) -> Result<()>;
    /// The current key and value, or `None` past the last key in bounds.
    fn current(&self) -> Option<(&[u8], &[u8])>;
}

/// A consistent, sorted snapshot of the MVCC column families.
pub trait MvccView {
    type Cursor<'a>: Cursor
    where
        Self: 'a;

    /// A cursor over `[lower, upper)`, not yet positioned. `point` says that every key the
    /// cursor will visit starts with `lower` minus its revision suffix (one key's versions),
    /// which lets RocksDB use its prefix Bloom filters.
    fn cursor(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: &[u8],
        point: bool,
    ) -> Result<Self::Cursor<'_>>;
}

/// An in-memory view, for tests and models: the same rules over a `BTreeMap`.
#[derive(Clone, Debug, Default)]
pub struct MemoryView {
    pub families: BTreeMap<ColumnFamily, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryView {
    pub fn apply(&mut self, mutations: impl IntoIterator<Item = Mutation>) {
        for mutation in mutations {
            match mutation {
                Mutation::Put { cf, key, value } => {
                    self.families.entry(cf).or_default().insert(key, value);
                }
                Mutation::Delete { cf, key } => {
                    self.families.entry(cf).or_default().remove(&key);
                }
            }
        }
    }

    /// Every stored entry of `cf`, in order.
    pub fn entries(&self, cf: ColumnFamily) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.families
            .get(&cf)
            .into_iter()
            .flat_map(|map| map.iter())
    }

    /// Keeps only the entries of `cf` for which `keep` says so.
    pub fn retain(&mut self, cf: ColumnFamily, keep: impl FnMut(&Vec<u8>, &mut Vec<u8>) -> bool) {
        if let Some(map) = self.families.get_mut(&cf) {
            map.retain(keep);
        }
    }
}

pub struct MemoryCursor<'a> {
    map: Option<&'a BTreeMap<Vec<u8>, Vec<u8>>>,
    lower: Vec<u8>,
    upper: Vec<u8>,
    current: Option<(&'a [u8], &'a [u8])>,
}

impl MemoryCursor<'_> {
    fn position(&mut self, from: Bound<&[u8]>) {
        let from = match from {
            Bound::Included(key) if key < self.lower.as_slice() => {
                Bound::Included(self.lower.as_slice())
            }
            other => other,
        };
        self.current = self.map.and_then(|map| {
            map.range::<[u8], _>((from, Bound::Excluded(self.upper.as_slice())))
                .next()
                .map(|(key, value)| (key.as_slice(), value.as_slice()))
        });
    }
}

impl Cursor for MemoryCursor<'_> {
    fn seek(&mut self, key: &[u8]) -> Result<()> {
        if key >= self.upper.as_slice() {
            self.current = None;
            return Ok(());
        }
        let key = key.to_vec();
        self.position(Bound::Included(&key));
        Ok(())
    }

    fn next(&mut self) -> Result<()> {
        if let Some((key, _)) = self.current {
            self.position(Bound::Excluded(key));
        }
        Ok(())
    }

    fn current(&self) -> Option<(&[u8], &[u8])> {
        self.current
    }
}

impl MvccView for MemoryView {
    type Cursor<'a> = MemoryCursor<'a>;

    fn cursor(
        &self,
        cf: ColumnFamily,
        lower: &[u8],
        upper: &[u8],
        _point: bool,
    ) -> Result<MemoryCursor<'_>> {
        Ok(MemoryCursor {
            map: self.families.get(&cf),
            lower: lower.to_vec(),
            upper: upper.to_vec(),
            current: None,
        })
    }
}
