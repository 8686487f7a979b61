//! The keys a range request covers, resolved as a node resolves them (prefix, start/end,
//! continuation; crates/raft/src/convert.rs), so the gateway can tell which of a
//! transaction's own writes fall into a range it reads.

use cairn_proto::kv::v1 as pb;

/// Keys in `[start, end)`; no `end` means to the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn of(request: &pb::RangeRequest) -> Self {
        let (mut start, end) = if !request.prefix.is_empty() {
            (request.prefix.clone(), prefix_end(&request.prefix))
        } else {
            let end = (!request.end.is_empty()).then(|| request.end.clone());
            (request.start.clone(), end)
        };
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
}
