//! What to do about a lock a request met (D96). Pure: the async resolver
//! ([`crate::txn::resolver`]) asks the primary and acts on these answers.
//!
//! The primary's status decides: committed -> commit the lock forward at the primary's
//! commit timestamp; rolled back -> roll it back; still locked or not found (the primary's
//! prewrite may still be in flight) -> the lock's transaction is alive, and the request
//! either waits (a plain read or write, which holds no locks itself) or gives up at once
//! with `Conflict` (a transaction that holds locks of its own and could otherwise wait in a
//! cycle; wait-die: only an older transaction waits for a younger one's lock).

use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::check_txn_status_response::Status as Answer;
use cairn_proto::retry::Backoff;
use std::time::Duration;

/// The primary's answer to CheckTxnStatus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrimaryStatus {
    Locked {
        ttl_remaining_ms: u64,
    },
    Committed {
        commit_ts: u64,
    },
    RolledBack,
    /// No lock and no record: the primary's prewrite has not arrived (and the lock met had
    /// not expired, so nothing was rolled back).
    NotFound,
}

impl PrimaryStatus {
    /// The status in an answer; `None` for an answer with no status set.
    pub fn of(answer: &node_pb::CheckTxnStatusResponse) -> Option<Self> {
        Some(match answer.status.as_ref()? {
            Answer::LockedTtlRemainingMs(ttl_remaining_ms) => Self::Locked {
                ttl_remaining_ms: *ttl_remaining_ms,
            },
            Answer::CommittedAt(commit_ts) => Self::Committed {
                commit_ts: *commit_ts,
            },
            Answer::RolledBack(_) => Self::RolledBack,
        })
    }
}

/// How a request treats a live lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Wait for it, within the request's deadline: the request holds no locks.
    Wait,
    /// Give up at once with `Conflict`: the request holds locks of its own.
    Die,
}

/// A transaction's policy towards a lock its prewrite met: an older transaction (smaller
/// `start_ts`) waits for a younger one's lock, a younger one dies (wait-die), so no cycle of
/// transactions waiting for each other's locks can form.
pub fn prewrite_policy(own_start_ts: u64, lock: &pb::KeyLocked) -> WaitPolicy {
    if own_start_ts < lock.start_ts {
        WaitPolicy::Wait
    } else {
        WaitPolicy::Die
    }
}

/// How a request treats every lock it meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRule {
    /// The same policy for every lock.
    Always(WaitPolicy),
    /// Wait-die, for the prewrite of the transaction started at `own_start_ts`.
    WaitDie { own_start_ts: u64 },
}

impl LockRule {
    pub fn policy(self, lock: &pb::KeyLocked) -> WaitPolicy {
        match self {
            LockRule::Always(policy) => policy,
            LockRule::WaitDie { own_start_ts } => prewrite_policy(own_start_ts, lock),
        }
    }
}

/// The next step about a lock, from its primary's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Commit the lock forward at this timestamp, then retry the request.
    Commit { commit_ts: u64 },
    /// Roll the lock back, then retry the request.
    Rollback,
    /// The lock's transaction is alive: pause this long, then retry.
    Wait(Duration),
    /// The lock's transaction is alive and the request must not wait: `Conflict`.
    Conflict,
}

/// The step for a lock met, whose primary answered `status`, on the request's `attempt`-th
/// meeting with locks (0-based), with `remaining` time before its deadline.
pub fn next_step(
    status: PrimaryStatus,
    policy: WaitPolicy,
    attempt: u32,
    backoff: &Backoff,
) -> Step {
    match status {
        PrimaryStatus::Committed { commit_ts } => Step::Commit { commit_ts },
        PrimaryStatus::RolledBack => Step::Rollback,
        PrimaryStatus::Locked { .. } | PrimaryStatus::NotFound if policy == WaitPolicy::Die => {
            Step::Conflict
        }
        PrimaryStatus::Locked { ttl_remaining_ms } => {
            // No point waiting past the lock's expiry: then it can be rolled back. At least a
            // millisecond, so a loop of retries always advances time.
            let until_expiry = Duration::from_millis(ttl_remaining_ms.max(1));
            Step::Wait(backoff.cap(attempt).min(until_expiry))
        }
        PrimaryStatus::NotFound => Step::Wait(backoff.cap(attempt).max(Duration::from_millis(1))),
    }
}

/// Whether a lock has outlived its TTL by `now_ms` (the gateway's clock; the lock's times are
/// the writing leader's). Only used to ask the primary to roll back a transaction whose
/// primary lock is missing: the primary's own lock expires by its leader's clock (D96).
pub fn expired(lock: &pb::KeyLocked, now_ms: u64) -> bool {
    now_ms >= lock.created_at_ms.saturating_add(lock.ttl_ms)
}

/// How long ago a lock was written, by `now_ms`, in milliseconds (0 for a lock from a clock
/// ahead of ours).
pub fn age_ms(lock: &pb::KeyLocked, now_ms: u64) -> u64 {
    now_ms.saturating_sub(lock.created_at_ms)
}

/// The gateway's wall clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Locks grouped by transaction (primary and start timestamp), so that one status check
/// resolves every lock of a transaction that a scan found.
pub fn by_transaction(
    locks: &[pb::KeyLocked],
) -> std::collections::BTreeMap<(Vec<u8>, u64), Vec<&pb::KeyLocked>> {
    let mut groups: std::collections::BTreeMap<(Vec<u8>, u64), Vec<&pb::KeyLocked>> =
        Default::default();
    for lock in locks {
        groups
            .entry((lock.primary.clone(), lock.start_ts))
            .or_default()
            .push(lock);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(20), Duration::from_millis(1000))
    }

    fn lock(start_ts: u64) -> pb::KeyLocked {
        pb::KeyLocked {
            key: b"k".to_vec(),
            primary: b"p".to_vec(),
            start_ts,
            ttl_ms: 3000,
            created_at_ms: 10_000,
            kind: pb::key_locked::Kind::Put as i32,
        }
    }

    #[test]
    fn a_decided_primary_decides_the_lock_whatever_the_policy() {
        for policy in [WaitPolicy::Wait, WaitPolicy::Die] {
            assert_eq!(
                next_step(
                    PrimaryStatus::Committed { commit_ts: 7 },
                    policy,
                    0,
                    &backoff()
                ),
                Step::Commit { commit_ts: 7 }
            );
            assert_eq!(
                next_step(PrimaryStatus::RolledBack, policy, 0, &backoff()),
                Step::Rollback
            );
        }
    }

    #[test]
    fn a_live_primary_is_waited_for_no_longer_than_its_lock_lives() {
        let b = backoff();
        assert_eq!(
            next_step(
                PrimaryStatus::Locked {
                    ttl_remaining_ms: 5
                },
                WaitPolicy::Wait,
                3,
                &b
            ),
            Step::Wait(Duration::from_millis(5))
        );
        assert_eq!(
            next_step(
                PrimaryStatus::Locked {
                    ttl_remaining_ms: 5000
                },
                WaitPolicy::Wait,
                0,
                &b
            ),
            Step::Wait(Duration::from_millis(20))
        );
        assert_eq!(
            next_step(
                PrimaryStatus::Locked {
                    ttl_remaining_ms: 0
                },
                WaitPolicy::Wait,
                0,
                &b
            ),
            Step::Wait(Duration::from_millis(1))
        );
        assert_eq!(
            next_step(PrimaryStatus::NotFound, WaitPolicy::Wait, 1, &b),
            Step::Wait(Duration::from_millis(40))
        );
    }

    #[test]
    fn a_transaction_holding_locks_does_not_wait_for_a_younger_one() {
        assert_eq!(prewrite_policy(10, &lock(20)), WaitPolicy::Wait);
        assert_eq!(prewrite_policy(30, &lock(20)), WaitPolicy::Die);
        let rule = LockRule::WaitDie { own_start_ts: 10 };
        assert_eq!(rule.policy(&lock(20)), WaitPolicy::Wait);
        assert_eq!(rule.policy(&lock(5)), WaitPolicy::Die);
        assert_eq!(
            LockRule::Always(WaitPolicy::Wait).policy(&lock(5)),
            WaitPolicy::Wait
        );
        for status in [
            PrimaryStatus::Locked {
                ttl_remaining_ms: 100,
            },
            PrimaryStatus::NotFound,
        ] {
            assert_eq!(
                next_step(status, WaitPolicy::Die, 0, &backoff()),
                Step::Conflict
            );
        }
    }

    #[test]
    fn expiry_and_age_use_the_locks_creation_time() {
        let held = lock(1);
        assert!(!expired(&held, 12_999));
        assert!(expired(&held, 13_000));
        assert_eq!(age_ms(&held, 10_500), 500);
        assert_eq!(age_ms(&held, 9_000), 0, "a clock behind the leader's");
    }

    #[test]
    fn the_primary_answer_is_read_from_the_oneof() {
        let answer = |status| node_pb::CheckTxnStatusResponse {
            status: Some(status),
        };
        assert_eq!(
            PrimaryStatus::of(&answer(Answer::CommittedAt(9))),
            Some(PrimaryStatus::Committed { commit_ts: 9 })
        );
        assert_eq!(
            PrimaryStatus::of(&answer(Answer::RolledBack(true))),
            Some(PrimaryStatus::RolledBack)
        );
        assert_eq!(
            PrimaryStatus::of(&answer(Answer::LockedTtlRemainingMs(3))),
            Some(PrimaryStatus::Locked {
                ttl_remaining_ms: 3
            })
        );
        assert_eq!(
            PrimaryStatus::of(&node_pb::CheckTxnStatusResponse::default()),
            None
        );
    }

    #[test]
    fn scanned_locks_group_by_transaction() {
        let mut other = lock(2);
        other.key = b"k2".to_vec();
        let mut same = lock(1);
        same.key = b"k3".to_vec();
        let locks = [lock(1), other, same];
        let groups = by_transaction(&locks);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&(b"p".to_vec(), 1)].len(), 2);
    }
}
