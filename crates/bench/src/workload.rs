//! The workloads this bench runs: the YCSB core read/update mixes, and cross-shard
//! transactions (T).

use rand::Rng;
use serde::Serialize;

/// A workload: what fraction of operations read and what fraction update existing records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Workload {
    /// YCSB A, update heavy: 50% reads, 50% updates.
    A,
    /// YCSB B, read mostly: 95% reads, 5% updates.
    B,
    /// YCSB C, read only.
    C,
    /// Write only: 100% updates.
    W,
    /// Cross-shard transactions: read two keys that live on different shards, then write
    /// both in one transaction that compares their mod revisions with the ones read (etcd's
    /// STM shape); a transaction whose comparisons failed is read and run again.
    T,
}

/// One operation of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
    /// Read two keys, write both in one transaction (workload T).
    Txn,
}

impl Workload {
    /// The fraction of operations that are plain reads, in `0.0..=1.0` (0 for T, whose
    /// operations all read and write).
    pub fn read_proportion(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W | Workload::T => 0.0,
        }
    }

    /// True for the transaction workload, whose operations need a pair of keys on different
    /// shards.
    pub fn is_transactional(self) -> bool {
        self == Workload::T
    }

    /// Draws the next operation.
    pub fn next_op<R: Rng + ?Sized>(self, rng: &mut R) -> OpKind {
        if self.is_transactional() {
            return OpKind::Txn;
        }
        // Exact for the read-only and write-only mixes, so they never issue the other kind.
        match self.read_proportion() {
            p if p >= 1.0 => OpKind::Read,
            p if p <= 0.0 => OpKind::Update,
            p if rng.random::<f64>() < p => OpKind::Read,
            _ => OpKind::Update,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "A",
            Workload::B => "B",
            Workload::C => "C",
            Workload::W => "W",
            Workload::T => "T",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn read_fraction(workload: Workload, draws: usize) -> f64 {
        let mut rng = SmallRng::seed_from_u64(7);
        let reads = (0..draws)
            .filter(|_| workload.next_op(&mut rng) == OpKind::Read)
            .count();
        reads as f64 / draws as f64
    }

    #[test]
    fn mixes_match_their_proportions() {
        let draws = 200_000;
        for workload in [Workload::A, Workload::B] {
            let observed = read_fraction(workload, draws);
            let expected = workload.read_proportion();
            assert!(
                (observed - expected).abs() < 0.01,
                "workload {workload:?}: {observed} reads, expected {expected}"
            );
        }
    }

    #[test]
    fn read_only_and_write_only_are_exact() {
        assert_eq!(read_fraction(Workload::C, 10_000), 1.0);
        assert_eq!(read_fraction(Workload::W, 10_000), 0.0);
        let mut rng = SmallRng::seed_from_u64(1);
        assert!((0..1_000).all(|_| Workload::T.next_op(&mut rng) == OpKind::Txn));
    }
}
