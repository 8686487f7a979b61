//! Running a transaction, and running it again when it lost a race: [`ConflictPolicy`] and
//! [`Client::txn`].
//!
//! Two retry loops nest here, and they differ in what they send (D99):
//!
//! - The transport loop ([`Client::call`]) repeats one *run* of the transaction, with the
//!   same write id, when an attempt's outcome is unknown (a timeout, a gateway gone
//!   mid-call). The cluster applies a write id once, so such a repeat answers the first
//!   attempt's result if that one committed.
//! - The conflict loop here starts a *new run* when a run was answered `Error::Conflict`: the
//!   transaction read or compared a key that another write changed after its snapshot, and
//!   the gateway rolled it back, so it applied nothing. The new run takes a new write id: it
//!   is a new evaluation of the comparisons at a new snapshot, which may choose the other
//!   branch and answer differently, and nothing under the old id needs remembering. The old
//!   id leaves the in-flight set, so the shards may forget it.
//!
//! One case is not re-run: a `Conflict` answered after an attempt of the same run whose
//! outcome is unknown. That earlier attempt may still have committed (the conflict may even
//! be with it), so the conflict proves nothing was applied only when every attempt of the
//! run was answered. The caller gets `Error::Unavailable` saying the transaction may have
//! been applied, as for any write whose outcome is unknown.

use crate::client::{kv, request, Attempts, Client};
use crate::error::{Error, Result};
use crate::txn::Txn;
use cairn_proto::kv::v1 as proto;
use cairn_proto::retry::{Backoff, Idempotency};
use std::time::Duration;
use tokio::time::Instant;

/// The most runs a conflict policy may allow; past this a loop hides a hot spot for too long
/// rather than reporting it.
pub const CONFLICT_ATTEMPTS_MAX_CEILING: u32 = 100;

/// How [`Client::txn`] answers `Error::Conflict`: run the transaction again, up to
/// `max_attempts` runs in all, after a jittered pause that grows with each run. Every run,
/// pauses included, fits in the client's `request_timeout`; when the next pause would not,
/// the last `Conflict` is returned.
///
/// Set it for every transaction of a client (`ClientConfig::txn_conflict_policy`) or for one
/// ([`Txn::on_conflict`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictPolicy {
    /// Most runs of the transaction, the first included; 1 never runs it again. Default 4.
    pub max_attempts: u32,
    /// The pause before re-run `n` (0-based) is drawn from `[cap / 2, cap]` with
    /// `cap = min(max, min * 2^n)`. Default 10 ms to 500 ms.
    pub backoff: Backoff,
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Backoff {
                min: Duration::from_millis(10),
                max: Duration::from_millis(500),
            },
        }
    }
}

impl ConflictPolicy {
    /// Never runs a transaction again: the first `Conflict` is the caller's, e.g. to read
    /// afresh before deciding what to write.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The default back-off with this many runs at most.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            ..Self::default()
        }
    }

    /// Checks the bounds; the error names `field` (where the policy was set).
    pub fn validate(&self, field: &str) -> Result<()> {
        let invalid = |name: &str, reason: String| Error::InvalidArgument {
            field: format!("{field}.{name}"),
            reason,
        };
        if self.max_attempts == 0 || self.max_attempts > CONFLICT_ATTEMPTS_MAX_CEILING {
            return Err(invalid(
                "max_attempts",
                format!("must be in 1..={CONFLICT_ATTEMPTS_MAX_CEILING}"),
            ));
        }
        if self.backoff.min.is_zero() {
            return Err(invalid("backoff.min", "must be greater than zero".into()));
        }
        if self.backoff.max < self.backoff.min {
            return Err(invalid(
                "backoff.max",
                "must be at least backoff.min".into(),
            ));
        }
        Ok(())
    }
}

impl Client {
    /// Runs a transaction over keys of any shards: if every comparison holds, the `then` ops,
    /// otherwise the `otherwise` ops, atomically at one revision.
    ///
    /// A run that lost a race (`Error::Conflict`) is run again under the transaction's
    /// [`ConflictPolicy`] (its own, else the client's), each time with a new write id; see
    /// the module documentation for why. Every other error is returned as it comes.
    pub async fn txn(&self, txn: Txn) -> Result<proto::TxnResponse> {
        let (policy, field) = match txn.conflict_policy() {
            Some(policy) => (policy, "conflict_policy"),
            None => (self.config().txn_conflict_policy, "txn_conflict_policy"),
        };
        policy.validate(field)?;
        let deadline = Instant::now() + self.config().request_timeout;
        let message = txn.into_request();
        let mut run: u32 = 0;
        loop {
            run += 1;
            let mut attempts = Attempts::default();
            let result = {
                let write = self.begin_write();
                let mut message = message.clone();
                message.write_id = Some(write.id().into());
                self.call_until(
                    "txn",
                    Idempotency::Idempotent,
                    deadline,
                    &mut attempts,
                    |channel, remaining| {
                        let request = request(message.clone(), remaining);
                        async move { kv(channel).txn(request).await }
                    },
                )
                .await
                // The write id is released here: this run is answered.
            };
            let conflict = match result {
                Err(conflict @ Error::Conflict { .. }) => conflict,
                other => return other,
            };
            if attempts.outcome_unknown {
                return Err(Error::Unavailable(format!(
                    "{conflict}; but an earlier attempt of the same transaction timed out or \
                     was cut off, and it may have been applied: read its keys before running \
                     it again"
                )));
            }
            if run >= policy.max_attempts {
                return Err(conflict);
            }
            let pause = policy.backoff.pause(run - 1);
            if Instant::now() + pause >= deadline {
                return Err(conflict);
            }
            tracing::debug!(run, ?pause, error = %conflict, "transaction conflicted; running it again");
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid_and_bounded() {
        let policy = ConflictPolicy::default();
        policy.validate("p").unwrap();
        assert!(policy.max_attempts > 1 && policy.max_attempts <= CONFLICT_ATTEMPTS_MAX_CEILING);
        assert_eq!(ConflictPolicy::never().max_attempts, 1);
        assert_eq!(ConflictPolicy::attempts(7).max_attempts, 7);
    }

    #[test]
    fn validate_names_the_field() {
        let field_of = |policy: ConflictPolicy| match policy.validate("txn_conflict_policy") {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            field_of(ConflictPolicy::attempts(0)),
            "txn_conflict_policy.max_attempts"
        );
        assert_eq!(
            field_of(ConflictPolicy::attempts(CONFLICT_ATTEMPTS_MAX_CEILING + 1)),
            "txn_conflict_policy.max_attempts"
        );
        let zero = ConflictPolicy {
            backoff: Backoff {
                min: Duration::ZERO,
                max: Duration::from_millis(1),
            },
            ..ConflictPolicy::default()
        };
        assert_eq!(field_of(zero), "txn_conflict_policy.backoff.min");
        let inverted = ConflictPolicy {
            backoff: Backoff {
                min: Duration::from_millis(2),
                max: Duration::from_millis(1),
            },
            ..ConflictPolicy::default()
        };
        assert_eq!(field_of(inverted), "txn_conflict_policy.backoff.max");
    }
}
