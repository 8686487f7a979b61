//! Range re-validation: a transaction that read a range at `start_ts` commits only if the
//! range reads the same at `commit_ts` (its own locks skipped, its own writes not yet
//! there). A key that appeared, vanished or changed between the two reads means a write
//! committed in between that the transaction did not see: it must not commit on that stale
//! read (etcd's mutex recipe reads a prefix and puts in one transaction; under snapshot
//! isolation two holders could both see the prefix empty). Pure.

use cairn_proto::kv::v1 as pb;

/// The first key where the two reads of one range differ, or `None` when they agree. A
/// counted range that changed names `range_start` (a count names no key).
pub fn first_difference(
    before: &pb::RangeResponse,
    after: &pb::RangeResponse,
    range_start: &[u8],
) -> Option<Vec<u8>> {
    let mut old = before.kvs.iter();
    let mut new = after.kvs.iter();
    loop {
        match (old.next(), new.next()) {
            (None, None) => break,
            (Some(kv), None) | (None, Some(kv)) => return Some(kv.key.clone()),
            (Some(a), Some(b)) => {
                if a.key != b.key {
                    return Some(a.key.clone().min(b.key.clone()));
                }
                // A changed value or a delete-and-recreate shows in these; compared without
                // values, which a keys-only range did not fetch.
                if (a.mod_revision, a.create_revision, a.version)
                    != (b.mod_revision, b.create_revision, b.version)
                {
                    return Some(a.key.clone());
                }
            }
        }
    }
    if before.count != after.count || before.more != after.more {
        return Some(range_start.to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::tests::kv;

    fn page(keys: &[(&str, u64)]) -> pb::RangeResponse {
        pb::RangeResponse {
            kvs: keys
                .iter()
                .map(|(key, rev)| kv(key, "v", *rev, 1))
                .collect(),
            count: keys.len() as u64,
            ..Default::default()
        }
    }

    #[test]
    fn equal_reads_agree() {
        let read = page(&[("a", 1), ("b", 2)]);
        assert_eq!(first_difference(&read, &read.clone(), b""), None);
    }

    #[test]
    fn an_appeared_key_is_named() {
        assert_eq!(
            first_difference(&page(&[("a", 1)]), &page(&[("a", 1), ("b", 5)]), b""),
            Some(b"b".to_vec())
        );
        assert_eq!(
            first_difference(&page(&[("b", 1)]), &page(&[("a", 7), ("b", 1)]), b""),
            Some(b"a".to_vec())
        );
    }

    #[test]
    fn a_vanished_or_changed_key_is_named() {
        assert_eq!(
            first_difference(&page(&[("a", 1), ("b", 2)]), &page(&[("a", 1)]), b""),
            Some(b"b".to_vec())
        );
        assert_eq!(
            first_difference(&page(&[("a", 1)]), &page(&[("a", 9)]), b""),
            Some(b"a".to_vec())
        );
    }

    #[test]
    fn a_changed_count_names_the_range_start() {
        let before = pb::RangeResponse {
            count: 3,
            ..Default::default()
        };
        let after = pb::RangeResponse {
            count: 4,
            ..Default::default()
        };
        assert_eq!(
            first_difference(&before, &after, b"lock/"),
            Some(b"lock/".to_vec())
        );
    }
}
