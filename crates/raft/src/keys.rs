//! The RocksDB layout: column families and key encodings. One RocksDB instance holds every
//! shard replica of a node; every key starts with the shard id (8 bytes, big endian) so that
//! one shard is one contiguous key range in each column family.
//!
//! | column family | key                              | value                        |
//! |---------------|----------------------------------|------------------------------|
//! | `raft_log`    | shard, log index (u64 BE)         | framed `Entry`               |
//! | `raft_state`  | shard, tag                        | vote, purged log id, committed log id |
//! | `write`       | shard, mc(user key), !revision    | framed `cairn_mvcc::WriteRecord` (one per version) |
//! | `lock`        | shard, mc(user key)               | reserved for transaction locks |
//! | `sessions`    | shard, client id, [sequence]      | session head / write result  |
//! | `sm_state`    | shard, tag                        | applied log id, membership, revision, compaction point, snapshot, install marker |
//!
//! The `write` and `lock` layouts belong to `cairn_mvcc` (its `key` module).
//! | `replicas`    | shard                             | replica record (exists = hosted here) |

use cairn_types::{ClientId, Sequence, ShardId};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_STATE: &str = "raft_state";
pub const CF_WRITE: &str = "write";
pub const CF_LOCK: &str = "lock";
pub const CF_SESSIONS: &str = "sessions";
pub const CF_SM_STATE: &str = "sm_state";
pub const CF_REPLICAS: &str = "replicas";

pub const ALL_COLUMN_FAMILIES: [&str; 7] = [
    CF_RAFT_LOG,
    CF_RAFT_STATE,
    CF_WRITE,
    CF_LOCK,
    CF_SESSIONS,
    CF_SM_STATE,
    CF_REPLICAS,
];

pub const TAG_VOTE: &[u8] = b"vote";
pub const TAG_PURGED: &[u8] = b"purged";
pub const TAG_COMMITTED: &[u8] = b"committed";
pub const TAG_APPLIED: &[u8] = b"applied";
pub const TAG_MEMBERSHIP: &[u8] = b"membership";
pub const TAG_REVISION: &[u8] = b"revision";
pub const TAG_COMPACTION: &[u8] = b"compaction";
pub const TAG_SNAPSHOT: &[u8] = b"snapshot";
pub const TAG_INSTALLING: &[u8] = b"installing";

pub fn shard_prefix(shard: ShardId) -> [u8; 8] {
    shard.0.to_be_bytes()
}

/// The first key after every key of `shard`.
pub fn shard_upper_bound(shard: ShardId) -> Vec<u8> {
    let next = shard
        .0
        .checked_add(1)
        .expect("shard ids are below u32::MAX");
    next.to_be_bytes().to_vec()
}

pub fn log_key(shard: ShardId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&shard_prefix(shard));
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

pub fn log_index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(8..16)?.try_into().ok()?))
}

pub fn tagged_key(shard: ShardId, tag: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + tag.len());
    key.extend_from_slice(&shard_prefix(shard));
    key.extend_from_slice(tag);
    key
}

pub fn session_head_key(shard: ShardId, client: ClientId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&shard_prefix(shard));
    key[8..].copy_from_slice(&client.0.to_be_bytes());
    key
}

pub fn session_result_key(shard: ShardId, client: ClientId, sequence: Sequence) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&session_head_key(shard, client));
    key[16..].copy_from_slice(&sequence.0.to_be_bytes());
    key
}

pub fn replica_key(shard: ShardId) -> [u8; 8] {
    shard_prefix(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_sort_by_shard_then_index() {
        assert!(log_key(ShardId(1), u64::MAX) < log_key(ShardId(2), 0));
        assert!(log_key(ShardId(1), 9) < log_key(ShardId(1), 10));
        assert_eq!(log_index_of(&log_key(ShardId(7), 42)), Some(42));
    }
}
