//! The keys a range request covers, resolved as a node resolves them (prefix, start/end,
//! continuation; crates/raft/src/convert.rs), so the gateway can tell which of a
//! transaction's own writes fall into a range it reads, and so that a client's range stops
//! where the key space Cairn reserves begins (`cairn_types::reserved`, D65).

use crate::error::{GatewayError, Result};
use cairn_proto::kv::v1 as pb;
use cairn_types::reserved;

/// Keys in `[start, end)`; no `end` means to the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// A request's bounds before its continuation: its prefix's, or its start and end.
fn bounds(request: &pb::RangeRequest) -> (Vec<u8>, Option<Vec<u8>>) {
    if !request.prefix.is_empty() {
        (request.prefix.clone(), prefix_end(&request.prefix))
    } else {
        let end = (!request.end.is_empty()).then(|| request.end.clone());
        (request.start.clone(), end)
    }
}

/// Keeps a client's range out of the reserved key space: a range that would run into it ends
/// where it begins (written as start and end, which a node reads as the prefix's bounds), and
/// one that starts inside it is refused.
pub fn keep_to_user_keys(request: &mut pb::RangeRequest) -> Result<()> {
    if reserved::is_reserved(&request.continuation) {
        return Err(GatewayError::invalid(
            "continuation",
            reserved::ReservedKey.to_string(),
        ));
    }
    let (start, end) = bounds(request);
    let user_end = reserved::user_range_end(&start, end.as_deref())
        .map_err(|refused| GatewayError::invalid("range", refused.to_string()))?;
    if end.as_deref() != Some(user_end.as_slice()) {
        request.prefix.clear();
        request.start = start;
        request.end = user_end;
    }
    Ok(())
}

impl KeyRange {
    pub fn of(request: &pb::RangeRequest) -> Self {
        let (mut start, end) = bounds(request);
        if !request.continuation.is_empty() {
            // Strictly after the previous page's last key.
            let mut after = request.continuation.clone();
            after.push(0);
            if after > start {
                start = after;
            }
        }
        Self { start, end }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// The first key after every key with `prefix`; `None` when there is none (all `0xff`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_start_end_and_continuation_resolve_as_on_a_node() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        let prefixed = KeyRange::of(&pb::RangeRequest {
            prefix: b"lock/".to_vec(),
            start: b"zzz".to_vec(),
            ..Default::default()
        });
        assert!(prefixed.contains(b"lock/1") && !prefixed.contains(b"lock0"));
        let open = KeyRange::of(&pb::RangeRequest {
            start: b"b".to_vec(),
            ..Default::default()
        });
        assert!(open.contains(b"zz") && !open.contains(b"a"));
        let resumed = KeyRange::of(&pb::RangeRequest {
            start: b"a".to_vec(),
            end: b"z".to_vec(),
            continuation: b"c".to_vec(),
            ..Default::default()
        });
        assert!(!resumed.contains(b"c") && resumed.contains(b"c\0") && !resumed.contains(b"z"));
    }

    #[test]
    fn client_ranges_end_where_the_reserved_keys_begin() {
        let reserved_start = reserved::RESERVED_PREFIX.to_vec();
        let mut everything = pb::RangeRequest::default();
        keep_to_user_keys(&mut everything).unwrap();
        assert_eq!(
            (everything.start.as_slice(), everything.end),
            (&b""[..], reserved_start.clone())
        );
        // A prefix without an end of its own becomes start and end, read the same way.
        let mut high = pb::RangeRequest {
            prefix: b"\xff\xff".to_vec(),
            continuation: b"\xff\xff\x01".to_vec(),
            ..Default::default()
        };
        keep_to_user_keys(&mut high).unwrap();
        assert!(high.prefix.is_empty());
        assert_eq!(high.start, b"\xff\xff");
        assert_eq!(KeyRange::of(&high).end, Some(reserved_start.clone()));
        assert!(KeyRange::of(&high).contains(b"\xff\xff\x02"));
        // A range inside the user keys is left as it was.
        let ordinary = pb::RangeRequest {
            prefix: b"lock/".to_vec(),
            ..Default::default()
        };
        let mut kept = ordinary.clone();
        keep_to_user_keys(&mut kept).unwrap();
        assert_eq!(kept, ordinary);
        let mut inside = pb::RangeRequest {
            start: reserved::txn_record_key(1, 2),
            ..Default::default()
        };
        assert!(keep_to_user_keys(&mut inside).is_err());
        let mut continued_inside = pb::RangeRequest {
            continuation: reserved::txn_record_key(1, 2),
            ..Default::default()
        };
        assert!(keep_to_user_keys(&mut continued_inside).is_err());
    }
}
