//! The layout of an oracle timestamp, which is also a write's revision:
//! `physical << LOGICAL_BITS | logical`, where `physical` is milliseconds since the cluster
//! was created and `logical` counts within one millisecond.
//!
//! Twelve logical bits (4 096 timestamps per millisecond) and milliseconds since the cluster's
//! creation keep every revision below 2^53 for 69 years, so a revision survives a trip
//! through JSON (JavaScript's numbers) unchanged. A timestamp handed out past the logical bits
//! simply carries into the physical part: the oracle allocates timestamps as one counter.

use crate::Revision;

/// Bits of a timestamp that count within one millisecond.
pub const LOGICAL_BITS: u32 = 12;
/// The largest logical part.
pub const LOGICAL_MAX: u64 = (1 << LOGICAL_BITS) - 1;

/// A timestamp taken apart, for logs and for comparing with wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimestampParts {
    /// Milliseconds since the cluster was created.
    pub physical_ms: u64,
    pub logical: u64,
}

impl TimestampParts {
    /// The first timestamp of millisecond `physical_ms`.
    pub fn at_ms(physical_ms: u64) -> Self {
        Self {
            physical_ms,
            logical: 0,
        }
    }

    /// Panics only on a physical time past 2^52 ms (140 000 years), a programmer error.
    pub fn revision(self) -> Revision {
        assert!(
            self.logical <= LOGICAL_MAX,
            "logical part {} too large",
            self.logical
        );
        let physical = self
            .physical_ms
            .checked_shl(LOGICAL_BITS)
            .filter(|shifted| shifted >> LOGICAL_BITS == self.physical_ms)
            .expect("physical milliseconds fit in 52 bits");
        Revision(physical | self.logical)
    }
}

impl From<Revision> for TimestampParts {
    fn from(revision: Revision) -> Self {
        Self {
            physical_ms: revision.0 >> LOGICAL_BITS,
            logical: revision.0 & LOGICAL_MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_order_like_the_revision() {
        let a = TimestampParts {
            physical_ms: 1_000,
            logical: LOGICAL_MAX,
        };
        let b = TimestampParts::at_ms(1_001);
        assert_eq!(TimestampParts::from(a.revision()), a);
        // The logical part carries into the physical one: the two are adjacent revisions.
        assert_eq!(a.revision().0 + 1, b.revision().0);
        // 69 years of milliseconds stay below 2^53.
        let later = TimestampParts::at_ms(69 * 365 * 24 * 3600 * 1000);
        assert!(later.revision().0 < 1 << 53);
    }
}
