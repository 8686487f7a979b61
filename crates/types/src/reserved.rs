//! The key space Cairn keeps for itself (D65): every key that starts with four `0xFF` bytes.
//! Clients may not name such a key, and a range is cut off where the space begins, so nothing
//! of it is ever visible through the public API. Because the prefix is all `0xFF`, a key is
//! reserved exactly when it sorts at or after the prefix: the user key space is the range
//! `["", RESERVED_PREFIX)`.
//!
//! What lives there: a two-phase transaction's record key (`txn_record_key`), which the
//! transaction with that write id locks as its primary, so that every attempt of one client
//! request meets the same lock and finds its result on the same shard (D97).

/// The first bytes of every reserved key.
pub const RESERVED_PREFIX: &[u8] = &[0xff; 4];

/// What follows the prefix in a transaction's record key.
const TXN_RECORD_TAG: &[u8] = b"txn/";

/// The length of a transaction's record key: prefix, tag, client id and sequence.
pub const TXN_RECORD_KEY_LEN: usize = RESERVED_PREFIX.len() + TXN_RECORD_TAG.len() + 16;

/// Whether `key` is in the reserved key space.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The record key of the client request with this write id: the primary of its two-phase
/// transaction. A pure function of the id, so every attempt and every gateway agree on it.
pub fn txn_record_key(client_id: u64, sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(TXN_RECORD_KEY_LEN);
    key.extend_from_slice(RESERVED_PREFIX);
    key.extend_from_slice(TXN_RECORD_TAG);
    key.extend_from_slice(&client_id.to_be_bytes());
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

/// Whether `key` is a transaction's record key.
pub fn is_txn_record_key(key: &[u8]) -> bool {
    key.len() == TXN_RECORD_KEY_LEN
        && key[RESERVED_PREFIX.len()..].starts_with(TXN_RECORD_TAG)
        && is_reserved(key)
}

/// Why a client's key or range was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedKey;

impl std::fmt::Display for ReservedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "keys starting with {} are reserved for Cairn",
            RESERVED_PREFIX.escape_ascii()
        )
    }
}

/// A key a client names: refused when reserved.
pub fn check_user_key(key: &[u8]) -> Result<(), ReservedKey> {
    if is_reserved(key) {
        Err(ReservedKey)
    } else {
        Ok(())
    }
}

/// The end of a client's range `[start, end)` (`end` `None`: to the end of the key space),
/// cut off where the reserved space begins: an end past the prefix, or none, becomes the
/// prefix; an end below it is kept. A range that starts in the reserved space is refused.
pub fn user_range_end(start: &[u8], end: Option<&[u8]>) -> Result<Vec<u8>, ReservedKey> {
    check_user_key(start)?;
    Ok(match end {
        Some(end) if end <= RESERVED_PREFIX => end.to_vec(),
        _ => RESERVED_PREFIX.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_reserved_exactly_when_it_sorts_at_or_after_the_prefix() {
        for key in [
            &b""[..],
            b"a",
            b"\xff",
            b"\xff\xff\xff",
            b"\xff\xff\xff\xfe\xff",
            b"\xff\xff\xff\xff",
            b"\xff\xff\xff\xff\x00",
            b"\xff\xff\xff\xff\xff\xff",
        ] {
            assert_eq!(is_reserved(key), key >= RESERVED_PREFIX, "{key:?}");
        }
    }

    #[test]
    fn record_keys_are_reserved_distinct_per_write_id_and_recognised() {
        let key = txn_record_key(7, 9);
        assert!(is_reserved(&key) && is_txn_record_key(&key));
        assert_eq!(key.len(), TXN_RECORD_KEY_LEN);
        assert_ne!(key, txn_record_key(7, 10));
        assert_ne!(key, txn_record_key(8, 9));
        assert_eq!(key, txn_record_key(7, 9));
        assert!(!is_txn_record_key(b"txn/"));
        assert!(!is_txn_record_key(&[0xff; TXN_RECORD_KEY_LEN]));
        assert!(check_user_key(&key).is_err());
        assert!(check_user_key(b"\xff\xff\xff").is_ok());
    }

    #[test]
    fn ranges_stop_where_the_reserved_space_begins() {
        let prefix = RESERVED_PREFIX.to_vec();
        // An end below the prefix, or the prefix itself: unchanged.
        assert_eq!(user_range_end(b"a", Some(b"b")), Ok(b"b".to_vec()));
        assert_eq!(
            user_range_end(b"a", Some(b"\xff\xff\xff")),
            Ok(b"\xff\xff\xff".to_vec())
        );
        assert_eq!(user_range_end(b"a", Some(&prefix)), Ok(prefix.clone()));
        // To the end of the key space, or an end past the prefix: cut at the prefix.
        assert_eq!(user_range_end(b"", None), Ok(prefix.clone()));
        assert_eq!(
            user_range_end(b"a", Some(b"\xff\xff\xff\xff\x00")),
            Ok(prefix.clone())
        );
        assert_eq!(
            user_range_end(b"\xff\xff", Some(&[0xff; 8])),
            Ok(prefix.clone())
        );
        // Starting inside it: refused.
        assert_eq!(user_range_end(&prefix, None), Err(ReservedKey));
        assert_eq!(
            user_range_end(&txn_record_key(1, 1), Some(&[0xff; 40])),
            Err(ReservedKey)
        );
        assert!(ReservedKey.to_string().contains("\\xff\\xff\\xff\\xff"));
    }
}
