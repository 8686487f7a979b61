//! The operation of the cross-shard transaction workload (T): choose two records on different
//! shards, read both, write both in one transaction that compares their mod revisions with
//! the ones read (etcd's STM shape), and read again when another writer got there first.
//!
//! A record's shard is Cairn's own placement, `cairn_types::sharding::shard_for_key` over the
//! cluster's shard count (jump hash of the key), so every pair is a cross-shard transaction
//! on Cairn. etcd runs the same pairs, chosen with the same shard count: the two systems see
//! the same keys.

use crate::keys::{record_key, KeyChooser};
use crate::target::{ErrorKind, KvTarget, PairWrite, TargetError};
use cairn_types::sharding::shard_for_key;
use rand::Rng;

/// Most runs of one transaction whose keys keep changing between its read and its write;
/// then the operation fails as `contended`.
pub const TXN_RUNS_MAX: u32 = 16;

/// Draws of the second record before falling back to a scan: with `s` shards a draw lands
/// on another shard with probability about `(s - 1) / s`, so 64 draws all failing is rare.
const DRAWS_MAX: usize = 64;
/// Records scanned after the draws, so that a pair is found even with a skewed chooser.
const SCAN_RECORDS_MAX: u64 = 1 << 16;

/// Chooses two records that live on different shards.
#[derive(Clone, Debug)]
pub struct PairChooser {
    pub chooser: KeyChooser,
    pub record_count: u64,
    pub key_size: usize,
    pub shard_count: u32,
}

impl PairChooser {
    pub fn shard_of(&self, record: u64) -> u64 {
        shard_for_key(&record_key(record, self.key_size), self.shard_count).get()
    }

    /// Two records on different shards, the first drawn by the chooser, the second drawn
    /// until its shard differs (then scanned for); `None` when no record within reach lives
    /// on another shard (one shard, or very few records).
    pub fn next_pair<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<(u64, u64)> {
        if self.shard_count < 2 || self.record_count < 2 {
            return None;
        }
        let first = self.chooser.next_record(rng);
        let shard = self.shard_of(first);
        for _ in 0..DRAWS_MAX {
            let second = self.chooser.next_record(rng);
            if self.shard_of(second) != shard {
                return Some((first, second));
            }
        }
        (1..self.record_count.min(SCAN_RECORDS_MAX))
            .map(|offset| (first + offset) % self.record_count)
            .find(|second| self.shard_of(*second) != shard)
            .map(|second| (first, second))
    }
}

/// What the runs of one operation met before it finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Runs whose comparisons failed: a key changed between the read and the write.
    pub compare_failures: u64,
    /// Runs refused as lost races (Cairn's `Conflict`).
    pub conflicts: u64,
}

/// One operation: reads the two records' mod revisions, then writes both values in one
/// transaction if neither changed; runs again (reading afresh) while it lost a race, at most
/// [`TXN_RUNS_MAX`] runs. Any other failure ends it.
pub async fn transfer<T: KvTarget>(
    target: &T,
    pair: (Vec<u8>, Vec<u8>),
    values: (Vec<u8>, Vec<u8>),
    tally: &mut Tally,
) -> Result<(), TargetError> {
    let (a, b) = pair;
    for _ in 0..TXN_RUNS_MAX {
        let read_a = target.read_revision(a.clone()).await?;
        let read_b = target.read_revision(b.clone()).await?;
        let writes = [
            PairWrite {
                key: a.clone(),
                read_revision: read_a,
                value: values.0.clone(),
            },
            PairWrite {
                key: b.clone(),
                read_revision: read_b,
                value: values.1.clone(),
            },
        ];
        match target.write_pair_if_unchanged(writes).await {
            Ok(true) => return Ok(()),
            Ok(false) => tally.compare_failures += 1,
            Err(error) if error.kind == ErrorKind::Conflict => tally.conflicts += 1,
            Err(error) => return Err(error),
        }
    }
    Err(TargetError {
        system: "bench",
        kind: ErrorKind::Contended,
        message: format!("the keys changed between read and write in each of {TXN_RUNS_MAX} runs"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyDistribution;
    use crate::memory_target::MemoryTarget;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn pairs(distribution: KeyDistribution, record_count: u64, shard_count: u32) -> PairChooser {
        PairChooser {
            chooser: KeyChooser::new(distribution, record_count),
            record_count,
            key_size: 16,
            shard_count,
        }
    }

    #[test]
    fn pairs_span_two_shards() {
        let mut rng = SmallRng::seed_from_u64(9);
        for distribution in [KeyDistribution::Uniform, KeyDistribution::Zipfian] {
            for shard_count in [2, 3, 8] {
                let chooser = pairs(distribution, 1_000, shard_count);
                let mut shards_seen = std::collections::BTreeSet::new();
                for _ in 0..2_000 {
                    let (a, b) = chooser.next_pair(&mut rng).expect("a pair");
                    assert!(a < 1_000 && b < 1_000);
                    let (sa, sb) = (chooser.shard_of(a), chooser.shard_of(b));
                    assert_ne!(sa, sb, "records {a} and {b} share shard {sa}");
                    shards_seen.extend([sa, sb]);
                }
                assert_eq!(
                    shards_seen.len(),
                    shard_count as usize,
                    "every shard is used"
                );
            }
        }
    }

    #[test]
    fn the_shard_is_cairns_placement() {
        let chooser = pairs(KeyDistribution::Uniform, 10, 4);
        assert_eq!(
            chooser.shard_of(7),
            shard_for_key(b"k000000000000007", 4).get()
        );
    }

    fn values() -> (Vec<u8>, Vec<u8>) {
        (b"va".to_vec(), b"vb".to_vec())
    }

    fn keys() -> (Vec<u8>, Vec<u8>) {
        (b"a".to_vec(), b"b".to_vec())
    }

    #[tokio::test]
    async fn a_transfer_writes_both_keys_at_one_revision() {
        let target = MemoryTarget::default();
        target.put(b"a".to_vec(), b"1".to_vec()).await.unwrap();
        let mut tally = Tally::default();
        transfer(&target, keys(), values(), &mut tally)
            .await
            .unwrap();
        assert_eq!(tally, Tally::default());
        assert_eq!(target.mod_revision(b"a"), 2);
        assert_eq!(target.mod_revision(b"b"), 2);
    }

    #[tokio::test]
    async fn a_lost_race_is_read_again_and_counted() {
        let target = MemoryTarget::interfered(3);
        let mut tally = Tally::default();
        transfer(&target, keys(), values(), &mut tally)
            .await
            .unwrap();
        assert_eq!(tally.compare_failures, 3);
        assert_eq!(target.transactions(), 4);
    }

    #[tokio::test]
    async fn endless_races_give_up_as_contended() {
        let target = MemoryTarget::interfered(u32::MAX);
        let mut tally = Tally::default();
        let error = transfer(&target, keys(), values(), &mut tally)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Contended);
        assert_eq!(tally.compare_failures, u64::from(TXN_RUNS_MAX));

        let target = MemoryTarget::refusing(ErrorKind::Conflict);
        let mut tally = Tally::default();
        let error = transfer(&target, keys(), values(), &mut tally)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Contended);
        assert_eq!(tally.conflicts, u64::from(TXN_RUNS_MAX));
    }

    #[tokio::test]
    async fn a_refusal_ends_the_operation_at_once() {
        let target = MemoryTarget::refusing(ErrorKind::CrossShardTxn);
        let mut tally = Tally::default();
        let error = transfer(&target, keys(), values(), &mut tally)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::CrossShardTxn);
        assert_eq!(target.transactions(), 1);
        assert_eq!(tally, Tally::default());
    }

    #[test]
    fn impossible_pairs_are_none() {
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(
            pairs(KeyDistribution::Uniform, 100, 1).next_pair(&mut rng),
            None
        );
        assert_eq!(
            pairs(KeyDistribution::Uniform, 1, 3).next_pair(&mut rng),
            None
        );
    }
}
