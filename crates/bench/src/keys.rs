//! Which record an operation touches: uniform or (scrambled) zipfian over the loaded
//! records, and how a record number becomes key bytes.

use rand::Rng;
use serde::Serialize;

/// YCSB's default skew.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// A prime larger than any allowed record count: multiplying by it modulo the record count
/// is a bijection, which spreads the hot zipfian ranks over the key space (and so over
/// shards) without changing how often each rank is drawn.
const SCRAMBLE_PRIME: u128 = 2_147_483_647;

/// The most records a run may use (below `SCRAMBLE_PRIME`, so the scramble stays a bijection).
pub const RECORD_COUNT_MAX: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    Uniform,
    Zipfian,
}

/// Zipfian ranks in `0..n` (rank 0 the most popular), after Gray et al., "Quickly generating
/// billion-record synthetic databases" (SIGMOD 1994), as YCSB's `ZipfianGenerator` does.
#[derive(Clone, Debug)]
pub struct ZipfianGenerator {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl ZipfianGenerator {
    /// # Panics
    /// When `items` is 0 or `theta` is not in `(0, 1)`: callers validate arguments first.
    pub fn new(items: u64, theta: f64) -> Self {
        assert!(items > 0, "a zipfian generator needs at least one item");
        assert!(theta > 0.0 && theta < 1.0, "theta must be in (0, 1)");
        let zeta_n = zeta(items, theta);
        let zeta_2 = zeta(2.min(items), theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Self {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// Draws a rank in `0..items`.
    pub fn next_rank<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if self.items > 1 && uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }

    pub fn items(&self) -> u64 {
        self.items
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Chooses record numbers in `0..record_count`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform { record_count: u64 },
    Zipfian(ZipfianGenerator),
}

impl KeyChooser {
    /// # Panics
    /// When `record_count` is 0 or above [`RECORD_COUNT_MAX`].
    pub fn new(distribution: KeyDistribution, record_count: u64) -> Self {
        assert!(
            record_count > 0 && record_count <= RECORD_COUNT_MAX,
            "record_count out of range"
        );
        match distribution {
            KeyDistribution::Uniform => KeyChooser::Uniform { record_count },
            KeyDistribution::Zipfian => {
                KeyChooser::Zipfian(ZipfianGenerator::new(record_count, ZIPFIAN_THETA))
            }
        }
    }

    /// The next record number.
    pub fn next_record<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform { record_count } => rng.random_range(0..*record_count),
            KeyChooser::Zipfian(generator) => scramble(generator.next_rank(rng), generator.items),
        }
    }
}

/// Maps a zipfian rank to a record number, bijectively on `0..items`.
pub fn scramble(rank: u64, items: u64) -> u64 {
    ((rank as u128 * SCRAMBLE_PRIME) % items as u128) as u64
}

/// The digits of the largest record number: the shortest key that can hold every record.
pub fn key_size_min(record_count: u64) -> usize {
    1 + record_count.saturating_sub(1).max(1).ilog10() as usize + 1
}

/// The key of a record: `k` followed by the zero-padded record number, `key_size` bytes long.
pub fn record_key(record: u64, key_size: usize) -> Vec<u8> {
    let width = key_size - 1;
    format!("k{record:0width$}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn zipfian_ranks_stay_in_range_and_fall_with_rank() {
        let items = 1_000;
        let generator = ZipfianGenerator::new(items, ZIPFIAN_THETA);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u64; items as usize];
        let draws = 500_000;
        for _ in 0..draws {
            let rank = generator.next_rank(&mut rng);
            assert!(rank < items);
            counts[rank as usize] += 1;
        }
        // P(rank k) is proportional to 1/(k+1)^theta: rank 0 about twice rank 1, ten times rank 9.
        let ratio_1 = counts[0] as f64 / counts[1] as f64;
        let ratio_9 = counts[0] as f64 / counts[9] as f64;
        assert!((1.8..2.2).contains(&ratio_1), "p0/p1 = {ratio_1}");
        assert!((8.5..11.5).contains(&ratio_9), "p0/p9 = {ratio_9}");
        // The head is heavy: the top 10% of ranks get well over half of the draws.
        let head: u64 = counts[..100].iter().sum();
        assert!(head as f64 / draws as f64 > 0.6, "head share {head}");
        // And the tail is still reached.
        assert!(counts[500..].iter().any(|&c| c > 0));
    }

    #[test]
    fn zipfian_rank_zero_share_matches_theory() {
        let items = 10_000;
        let generator = ZipfianGenerator::new(items, ZIPFIAN_THETA);
        let mut rng = SmallRng::seed_from_u64(2);
        let draws = 400_000;
        let zeros = (0..draws)
            .filter(|_| generator.next_rank(&mut rng) == 0)
            .count();
        let expected = 1.0 / zeta(items, ZIPFIAN_THETA);
        let observed = zeros as f64 / draws as f64;
        assert!(
            (observed - expected).abs() < expected * 0.05,
            "observed {observed}, expected {expected}"
        );
    }

    #[test]
    fn tiny_zipfian_works() {
        let mut rng = SmallRng::seed_from_u64(3);
        for items in [1, 2, 3] {
            let generator = ZipfianGenerator::new(items, ZIPFIAN_THETA);
            for _ in 0..1_000 {
                assert!(generator.next_rank(&mut rng) < items);
            }
        }
    }

    #[test]
    fn scramble_is_a_permutation() {
        for items in [1u64, 7, 1_000, 4_096] {
            let mut seen = vec![false; items as usize];
            for rank in 0..items {
                let record = scramble(rank, items);
                assert!(!seen[record as usize], "{record} twice for {items} items");
                seen[record as usize] = true;
            }
        }
    }

    #[test]
    fn uniform_covers_the_range() {
        let chooser = KeyChooser::new(KeyDistribution::Uniform, 10);
        let mut rng = SmallRng::seed_from_u64(4);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[chooser.next_record(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn keys_have_the_requested_size() {
        assert_eq!(record_key(42, 8), b"k0000042".to_vec());
        assert_eq!(record_key(999, 4), b"k999".to_vec());
        assert_eq!(key_size_min(1_000), 4);
        assert_eq!(key_size_min(1_001), 5);
        assert_eq!(key_size_min(1), 2);
        assert_eq!(record_key(999_999, key_size_min(1_000_000)).len(), 7);
    }
}
