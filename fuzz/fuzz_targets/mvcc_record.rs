//! The stored-value codec and the MVCC layout (crates/mvcc): write records and lock records as
//! stored (framed postcard), the memcomparable storage keys, and reads over a shard whose
//! stored keys and values are anything at all, as a snapshot from a peer could install them.
//!
//! Holds: nothing panics; a record or key that decodes encodes back to what was read (keys
//! byte for byte, records to a value equal to it); a range and a count of the same keys agree.
//!
//! Input: a kind byte, then
//! - 0: a write record, 1: a lock record (each decoded as stored, and its bytes as the payload
//!   of a valid frame, to get past the checksum);
//! - 2: a storage key (user key, version key, lock key);
//! - 3: a shard's stored entries, each `flags, key length, value length, key, value` (flags:
//!   bit 0 the lock column family, bit 1 frame the value, bit 2 build a valid key from the
//!   key bytes), read back with gets, ranges, lock scans and the compaction filter.

#![no_main]

use cairn_fuzz::split_kind;
use cairn_mvcc::compaction::CompactionFilter;
use cairn_mvcc::key::{self, VersionKey};
use cairn_mvcc::{
    ColumnFamily, Lock, MemoryView, Mutation, MvccReader, RangeBounds, RangeOptions, WriteRecord,
};
use cairn_types::{codec, Revision, ShardId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    match kind {
        0 => {
            write_record(bytes);
            write_record(&codec::frame(bytes));
        }
        1 => {
            lock_record(bytes);
            lock_record(&codec::frame(bytes));
        }
        2 => storage_key(bytes),
        3 => stored_shard(bytes),
        _ => {}
    }
});

fn write_record(bytes: &[u8]) {
    if let Ok(record) = WriteRecord::decode(bytes) {
        assert_eq!(WriteRecord::decode(&record.encode()).unwrap(), record);
        let _ = (
            record.is_delete(),
            record.is_marker(),
            record.txn_start_ts(),
        );
    }
}

fn lock_record(bytes: &[u8]) {
    if let Ok(lock) = Lock::decode(bytes) {
        assert_eq!(Lock::decode(&lock.encode()).unwrap(), lock);
        let _ = (
            lock.expires_at_ms(),
            lock.is_expired(u64::MAX),
            lock.info(b"k"),
        );
    }
}

fn storage_key(bytes: &[u8]) {
    if let Ok((user_key, used)) = key::decode_user_key(bytes) {
        assert_eq!(key::encode_user_key(&user_key), bytes[..used]);
    }
    let shard = bytes
        .get(..key::SHARD_PREFIX_BYTES)
        .map(|prefix| ShardId(u64::from_be_bytes(prefix.try_into().unwrap())));
    if let Ok(parsed) = VersionKey::parse(bytes) {
        if let (Ok(user_key), Some(shard)) = (parsed.user_key(), shard) {
            assert_eq!(key::version_key(shard, &user_key, parsed.revision), bytes);
        }
    }
    if let (Ok(user_key), Some(shard)) = (key::parse_lock_key(bytes), shard) {
        assert_eq!(key::lock_key(shard, &user_key), bytes);
    }
}

const SHARD: ShardId = ShardId(0);

/// Reads the entries of [`stored_shard`]'s input: the user keys named and the view.
fn entries(mut bytes: &[u8]) -> (Vec<Vec<u8>>, MemoryView) {
    let mut view = MemoryView::default();
    let mut user_keys = Vec::new();
    while let [flags, key_len, value_len, rest @ ..] = bytes {
        let (key_len, value_len) = (usize::from(*key_len), usize::from(*value_len));
        if rest.len() < key_len + value_len {
            break;
        }
        let (key, rest) = rest.split_at(key_len);
        let (value, rest) = rest.split_at(value_len);
        bytes = rest;
        let cf = if flags & 1 == 0 {
            ColumnFamily::Write
        } else {
            ColumnFamily::Lock
        };
        let value = if flags & 2 != 0 {
            codec::frame(value)
        } else {
            value.to_vec()
        };
        let key = if flags & 4 == 0 {
            key.to_vec()
        } else {
            match cf {
                ColumnFamily::Lock => {
                    user_keys.push(key.to_vec());
                    key::lock_key(SHARD, key)
                }
                ColumnFamily::Write => {
                    // The last 8 bytes (if any) are the revision.
                    let split = key.len().saturating_sub(8);
                    let (user_key, revision) = key.split_at(split);
                    let mut revision_bytes = [0u8; 8];
                    revision_bytes[8 - revision.len()..].copy_from_slice(revision);
                    user_keys.push(user_key.to_vec());
                    key::version_key(
                        SHARD,
                        user_key,
                        Revision(u64::from_be_bytes(revision_bytes)),
                    )
                }
            }
        };
        view.apply([Mutation::Put { cf, key, value }]);
    }
    (user_keys, view)
}

fn stored_shard(bytes: &[u8]) {
    let (at, bytes) = match bytes.split_first_chunk::<8>() {
        Some((at, rest)) => (Revision(u64::from_be_bytes(*at)), rest),
        None => (Revision::LATEST, bytes),
    };
    let (user_keys, view) = entries(bytes);
    let reader = MvccReader::new(&view, SHARD);
    for user_key in &user_keys {
        let _ = reader.get(user_key, at, false);
        let _ = reader.get(user_key, Revision::LATEST, true);
        let _ = reader.get_checked(user_key, at, false);
        let _ = reader.lock(user_key);
    }
    let everything = RangeBounds {
        start: Vec::new(),
        end: None,
    };
    let options = RangeOptions {
        limit: 3,
        keys_only: false,
        count_only: false,
    };
    let page = reader.range(&everything, at, options);
    let counted = reader.range(
        &everything,
        at,
        RangeOptions {
            count_only: true,
            ..options
        },
    );
    if let (Ok(page), Ok(counted)) = (&page, &counted) {
        assert!(page.versions.len() as u64 <= options.limit);
        assert_eq!(page.count, page.versions.len() as u64);
        if !page.more {
            assert_eq!(counted.count, page.count, "a range and its count agree");
        }
    }
    if let Some(first) = user_keys.first() {
        let bounds = RangeBounds {
            start: first.clone(),
            end: user_keys.last().cloned().filter(|last| last > first),
        };
        let _ = reader.range(&bounds, at, options);
        let _ = reader.locks_in_range(&bounds, at, false, 3);
    }
    let _ = reader.locks_in_range(&everything, Revision::LATEST, true, 3);
    for full in [false, true] {
        let mut filter = CompactionFilter::new(at, full);
        for (key, value) in view.entries(ColumnFamily::Write) {
            let _ = filter.decide(key, value);
        }
    }
}
