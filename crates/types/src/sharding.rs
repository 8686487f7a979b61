//! The key-to-shard function. Part of Cairn's on-disk and wire contract: changing it would
//! send keys to shards that do not hold them. It is pinned by the vectors in the tests below.
//!
//! `shard(key) = jump_consistent_hash(key_hash(key), shard_count)` where
//! `key_hash = fmix64(fnv1a_64(key))`: FNV-1a over the key bytes (offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3), then MurmurHash3's 64-bit finalizer so that
//! every input bit affects every output bit (jump hash consumes the high bits first).

use crate::ShardId;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The fixed 64-bit hash of a key's bytes.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    fmix64(hash)
}

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014).
/// Returns a bucket in `0..buckets`; `buckets` must be at least 1.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    assert!(
        buckets > 0,
        "jump_consistent_hash needs at least one bucket"
    );
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < i64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket as u32
}

/// The shard that owns `key` in a cluster of `shard_count` shards.
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    ShardId(u64::from(jump_consistent_hash(key_hash(key), shard_count)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors: if one of these changes, keys move between shards on existing clusters.
    #[test]
    fn key_hash_vectors_are_stable() {
        assert_eq!(key_hash(b""), fmix64(FNV_OFFSET_BASIS));
        let vectors: [(&[u8], u64); 4] = [
            (b"", 0xefd0_1f60_ba99_2926),
            (b"a", 0x82a2_a958_a9be_ce5b),
            (b"hello", 0xe9c5_62c0_fdb2_3244),
            (b"cairn/key/0001", 0x16fd_8f33_130f_a24d),
        ];
        for (key, expected) in vectors {
            assert_eq!(
                key_hash(key),
                expected,
                "key_hash({:?}) = {:#018x}",
                String::from_utf8_lossy(key),
                key_hash(key)
            );
        }
    }

    #[test]
    fn jump_hash_vectors_are_stable() {
        // Computed by an independent Python transcription of the paper's C++ code.
        assert_eq!(jump_consistent_hash(0, 1), 0);
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 1), 0);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 2), 1);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 3), 1);
        assert_eq!(jump_consistent_hash(0xDEAD_10CC, 100), 94);
        assert_eq!(jump_consistent_hash(256, 1024), 520);
        assert_eq!(jump_consistent_hash(u64::MAX, 7), 2);
    }

    #[test]
    fn shard_for_key_vectors_are_stable() {
        let shards: Vec<u64> = (0..8)
            .map(|i| shard_for_key(format!("user/{i}").as_bytes(), 16).0)
            .collect();
        assert_eq!(shards, [15, 10, 10, 9, 9, 9, 10, 8]);
    }

    #[test]
    fn growing_the_bucket_count_moves_few_keys() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| key_hash(&i.to_be_bytes())).collect();
        let moved = keys
            .iter()
            .filter(|k| jump_consistent_hash(**k, 10) != jump_consistent_hash(**k, 11))
            .count();
        // Ideal is 1/11 of the keys; allow generous slack.
        assert!(moved > 500 && moved < 1400, "moved {moved}");
        for k in &keys {
            let before = jump_consistent_hash(*k, 10);
            let after = jump_consistent_hash(*k, 11);
            assert!(
                after == before || after == 10,
                "a key moved between old buckets"
            );
        }
    }

    #[test]
    fn keys_spread_evenly_over_shards() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u32 {
            let key = format!("user/{i}");
            counts[shard_for_key(key.as_bytes(), 16).0 as usize] += 1;
        }
        for count in counts {
            assert!((700..1300).contains(&count), "uneven spread: {counts:?}");
        }
    }
}
