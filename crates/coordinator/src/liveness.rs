//! The coordinator's time thresholds: the two liveness settings, and every grace period the
//! leader waits out before it acts on what heartbeats show. The grace periods are derived
//! here and nowhere else, from `suspect_after_ms`, so that they keep their relation to it when
//! it is tuned.

use crate::config::CoordinatorConfig;
use std::time::Duration;

/// Suspicion periods (`suspect_after_ms`) that a condition read from heartbeats must last
/// before the leader deletes a stray replica, drops a move whose learner never appeared, or
/// resumes a stalled creation: longer than heartbeats lag what they report (a replica just
/// created, a learner just added), with a margin, since each of these undoes or redoes work.
pub const CLEANUP_GRACE_SUSPECT_PERIODS: u32 = 2;

/// Liveness thresholds (`suspect_after_ms`, `down_after_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    pub suspect_after: Duration,
    pub down_after: Duration,
}

impl Liveness {
    pub fn of(config: &CoordinatorConfig) -> Self {
        Self {
            suspect_after: Duration::from_millis(config.suspect_after_ms),
            down_after: Duration::from_millis(config.down_after_ms),
        }
    }

    /// The grace periods that follow from these thresholds.
    pub fn grace_periods(self) -> GracePeriods {
        let cleanup = self.suspect_after * CLEANUP_GRACE_SUSPECT_PERIODS;
        GracePeriods {
            missing_voter: self.suspect_after,
            quorum_loss_confirm: self.suspect_after,
            missing_learner: cleanup,
            stray_replica: cleanup,
            stalled_founding: cleanup,
        }
    }
}

/// How long each condition must have held, without a break, before the leader acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracePeriods {
    /// A voter whose node heartbeats without its replica is *missing* (replaced like a voter
    /// on a down node) after this long: several heartbeats, longer than their lag
    /// (`reconcile::missing_for_long`).
    pub missing_voter: Duration,
    /// A shard without quorum counts as lost (D40) after this long: a replica just created
    /// for a new shard is not in its node's heartbeat yet (`quorum::QuorumWatch`).
    pub quorum_loss_confirm: Duration,
    /// A pending move whose learner is not in the membership, or not hosted, is dropped after
    /// more than this (`cleanup::stale_moves`).
    pub missing_learner: Duration,
    /// A replica hosted outside its shard's committed configuration is deleted after more
    /// than this (`cleanup::strays_to_delete`).
    pub stray_replica: Duration,
    /// A creation no replica reported founded is resumed after this long (D51,
    /// `founding::stalled`).
    pub stalled_founding: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_follow_suspect_after() {
        let config = CoordinatorConfig {
            suspect_after_ms: 1_500,
            down_after_ms: 4_000,
            ..CoordinatorConfig::default()
        };
        let liveness = Liveness::of(&config);
        assert_eq!(liveness.suspect_after, Duration::from_millis(1_500));
        assert_eq!(liveness.down_after, Duration::from_millis(4_000));
        let grace = liveness.grace_periods();
        assert_eq!(grace.missing_voter, Duration::from_millis(1_500));
        assert_eq!(grace.quorum_loss_confirm, Duration::from_millis(1_500));
        assert_eq!(grace.missing_learner, Duration::from_millis(3_000));
        assert_eq!(grace.stray_replica, Duration::from_millis(3_000));
        assert_eq!(grace.stalled_founding, Duration::from_millis(3_000));
    }
}
