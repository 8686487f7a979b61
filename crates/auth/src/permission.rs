//! Permissions on keys, prefixes and ranges, and whether a set of them covers an access.
//!
//! A range access is permitted only when the permitted ranges together cover all of it, as
//! etcd does (D86): a range is refused, never filtered, so a client never takes a partial
//! answer for the whole.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a request does to a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// What a permission grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PermissionKind {
    Read,
    Write,
    ReadWrite,
}

impl PermissionKind {
    pub fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (PermissionKind::ReadWrite, _)
                | (PermissionKind::Read, Access::Read)
                | (PermissionKind::Write, Access::Write)
        )
    }
}

impl fmt::Display for PermissionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PermissionKind::Read => "read",
            PermissionKind::Write => "write",
            PermissionKind::ReadWrite => "readwrite",
        })
    }
}

/// Keys in `[start, end)`; `end == None` runs to the end of the key space. A single key `k`
/// is `[k, k\0)`: the smallest key after `k` is `k` followed by a zero byte.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn key(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Every key beginning with `prefix` (all keys for an empty prefix).
    pub fn prefix(prefix: &[u8]) -> Self {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// etcd's convention, which the protocol keeps: an empty `range_end` is the key alone,
    /// `"\0"` every key from `key` on, anything else `[key, range_end)`.
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::key(key),
            [0] => KeyRange {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// The inverse of [`KeyRange::from_etcd`]: `(key, range_end)`.
    pub fn to_etcd(&self) -> (Vec<u8>, Vec<u8>) {
        match &self.end {
            None => (self.start.clone(), vec![0]),
            Some(_) if self.is_single_key() => (self.start.clone(), Vec::new()),
            Some(end) => (self.start.clone(), end.clone()),
        }
    }

    fn is_single_key(&self) -> bool {
        matches!(&self.end, Some(end) if end.len() == self.start.len() + 1
            && end.starts_with(&self.start) && end.last() == Some(&0))
    }

    /// Holds no key at all.
    pub fn is_empty(&self) -> bool {
        matches!(&self.end, Some(end) if *end <= self.start)
    }

    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |bytes: &[u8]| String::from_utf8_lossy(bytes).escape_debug().to_string();
        if self.is_single_key() {
            return write!(f, "key \"{}\"", show(&self.start));
        }
        if let Some(end) = &self.end {
            if Some(end.clone()) == prefix_end(&self.start) && !self.start.is_empty() {
                return write!(f, "prefix \"{}\"", show(&self.start));
            }
            return write!(f, "range [\"{}\", \"{}\")", show(&self.start), show(end));
        }
        write!(f, "range [\"{}\", end of key space)", show(&self.start))
    }
}

/// The first key after every key beginning with `prefix`; `None` when there is none (the
/// prefix is empty or all 0xff bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// One grant of a role.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermissionKind,
    pub range: KeyRange,
}

/// Whether the ranges of `permitted` together cover all of `wanted`. An empty `wanted`
/// needs nothing.
pub fn covers<'a>(permitted: impl IntoIterator<Item = &'a KeyRange>, wanted: &KeyRange) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let mut ranges: Vec<&KeyRange> = permitted.into_iter().filter(|r| !r.is_empty()).collect();
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    // From the wanted start, jump to the furthest end of the permitted ranges that start at
    // or before the cursor, until the wanted end is passed or no range reaches further.
    let mut cursor: &[u8] = &wanted.start;
    let mut reach: Option<&[u8]> = None;
    let mut next = 0;
    loop {
        if wanted.end.as_deref().is_some_and(|end| cursor >= end) {
            return true;
        }
        while let Some(range) = ranges.get(next).filter(|r| r.start.as_slice() <= cursor) {
            match range.end.as_deref() {
                // Runs to the end of the key space: covers everything from the cursor on.
                None => return true,
                Some(end) => reach = Some(reach.map_or(end, |r| r.max(end))),
            }
            next += 1;
        }
        match reach {
            Some(end) if end > cursor => cursor = end,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(start: &str, end: Option<&str>) -> KeyRange {
        KeyRange {
            start: start.into(),
            end: end.map(Into::into),
        }
    }

    #[test]
    fn a_prefix_covers_its_keys_and_ranges_inside_it_only() {
        let a = [KeyRange::prefix(b"a/")];
        assert!(covers(&a, &KeyRange::key(b"a/x")));
        assert!(covers(&a, &KeyRange::prefix(b"a/")));
        assert!(covers(&a, &KeyRange::prefix(b"a/b")));
        assert!(!covers(&a, &KeyRange::key(b"b/x")));
        assert!(!covers(&a, &KeyRange::key(b"a")));
        assert!(!covers(&a, &KeyRange::prefix(b"a")));
        assert!(!covers(&a, &range("a/", None)));
    }

    #[test]
    fn adjacent_and_overlapping_ranges_join() {
        let parts = [
            range("a", Some("c")),
            range("c", Some("e")),
            range("b", Some("d")),
        ];
        assert!(covers(&parts, &range("a", Some("e"))));
        assert!(!covers(&parts, &range("a", Some("f"))));
        let gap = [range("a", Some("c")), range("d", Some("e"))];
        assert!(!covers(&gap, &range("a", Some("e"))));
        assert!(covers(&[range("", None)], &range("", None)));
        assert!(!covers(&[range("a", None)], &range("", None)));
    }

    #[test]
    fn an_empty_range_needs_nothing() {
        assert!(covers(&[], &range("b", Some("a"))));
        assert!(!covers(&[], &KeyRange::key(b"")));
    }

    #[test]
    fn etcd_range_ends_round_trip() {
        for (key, end) in [("k", ""), ("k", "\0"), ("a", "b")] {
            let range = KeyRange::from_etcd(key.as_bytes(), end.as_bytes());
            assert_eq!(range.to_etcd(), (key.into(), end.into()));
        }
        assert_eq!(KeyRange::from_etcd(b"k", b""), KeyRange::key(b"k"));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(KeyRange::prefix(b"a/").to_string(), "prefix \"a/\"");
        assert_eq!(KeyRange::key(b"a/x").to_string(), "key \"a/x\"");
    }

    /// Every key of up to 3 bytes over {0, a, b, c}: every range boundary the strategies
    /// below can draw (keys over {a, b} of up to 2 bytes, a key followed by 0, a prefix's
    /// end). Each uncovered stretch of a wanted range begins at such a boundary, so checking
    /// these keys is exact.
    fn all_keys() -> Vec<Vec<u8>> {
        let mut keys = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..3 {
            let next: Vec<Vec<u8>> = last
                .iter()
                .flat_map(|k: &Vec<u8>| {
                    [0u8, b'a', b'b', b'c'].map(|c| {
                        let mut k = k.clone();
                        k.push(c);
                        k
                    })
                })
                .collect();
            keys.extend(next.iter().cloned());
            last = next;
        }
        keys
    }

    fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..3)
    }

    fn range_strategy() -> impl Strategy<Value = KeyRange> {
        prop_oneof![
            key_strategy().prop_map(|k| KeyRange::key(&k)),
            key_strategy().prop_map(|k| KeyRange::prefix(&k)),
            (key_strategy(), proptest::option::of(key_strategy()))
                .prop_map(|(start, end)| KeyRange { start, end }),
        ]
    }

    proptest! {
        /// Coverage agrees with checking key by key.
        #[test]
        fn coverage_matches_checking_every_key(
            permitted in proptest::collection::vec(range_strategy(), 0..4),
            wanted in range_strategy(),
        ) {
            let brute = all_keys()
                .iter()
                .filter(|k| wanted.contains_key(k))
                .all(|k| permitted.iter().any(|r| r.contains_key(k)));
            prop_assert_eq!(covers(&permitted, &wanted), brute);
        }
    }
}
