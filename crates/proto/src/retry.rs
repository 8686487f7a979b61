//! What a failed call's status says about sending it again: the one classification every
//! Cairn caller uses (the SDK, the gateway's router, the coordinator client, the Raft
//! network), and the one back-off they pause with (D46).
//!
//! [`classify`] reads the status's `ErrorDetail` first and its code only when it has none. It
//! answers two questions: *may* the call go again ([`Retry`], which depends on whether the
//! call is idempotent), and *why* it failed ([`Cause`]), which tells a router where to go
//! next (the leader a hint names, a refreshed shard map, another endpoint). Pure decisions
//! only: the loops that sleep, rotate endpoints and count are the callers'.

use crate::kv::v1::error_detail::Kind;
use crate::status::detail_of;
use rand::Rng;
use std::time::Duration;
use tonic::{Code, Status};

/// Whether a call can be repeated without acting twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads; writes that carry a write id (the shard applies an id once); calls the server
    /// makes idempotent itself (JoinCluster finds the record a lost answer created).
    Idempotent,
    /// A repeat could act twice (forcing a shard onto a survivor): sent again only when the
    /// first attempt certainly did not act.
    NotIdempotent,
}

/// On what condition a call that failed this way may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// It would fail the same way again (the request is wrong or not allowed).
    Never,
    /// The server refused before acting (or nothing was sent): any call may go again.
    Always,
    /// Whether the attempt acted is unknown: only an idempotent call may go again.
    IfIdempotent,
}

impl Retry {
    pub fn allows(self, idempotency: Idempotency) -> bool {
        match self {
            Retry::Never => false,
            Retry::Always => true,
            Retry::IfIdempotent => idempotency == Idempotency::Idempotent,
        }
    }
}

/// Why an attempt failed, as far as the next attempt's routing is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The request was refused for what it asks (invalid, over a limit, a write window
    /// passed, a revision compacted, ...).
    Refused,
    /// No connection could be opened: nothing was sent.
    NotSent,
    /// The server is not serving now: down, stopping, a replica stopped, an election.
    Unavailable,
    /// The call was cut off or ran out of time: whether it acted is unknown.
    OutcomeUnknown,
    /// The replica that answered does not lead its shard; `leader` when it knows who does.
    ShardNotLeader { leader: Option<LeaderHint> },
    /// The coordinator that answered does not lead; `leader_address` when it knows who does.
    CoordinatorNotLeader { leader_address: Option<String> },
    /// The caller's shard map is behind the cluster (a stale epoch, a shard not on that node).
    StaleMap,
    /// The node the call was meant for is gone from the address it was sent to.
    NodeGone,
    /// A transaction lost a race and applied nothing (`Conflict`): the caller may run it
    /// again as a new attempt, under its own conflict policy. Never repeated by transport
    /// retries, which would only meet the same conflict.
    TxnConflict,
    /// Another transaction's lock stopped the request (`KeyLocked`, internal): the gateway
    /// resolves the lock through its primary, then sends the request again.
    KeyLocked,
}

/// Where a `NotLeader` answer says a shard's leader is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    /// 0 when the answer named an address only.
    pub node_id: u64,
    pub address: String,
}

impl Cause {
    /// The address of the leader an answer named, shard or coordinator.
    pub fn leader_address(&self) -> Option<&str> {
        match self {
            Cause::ShardNotLeader {
                leader: Some(leader),
            } => Some(leader.address.as_str()),
            Cause::CoordinatorNotLeader {
                leader_address: Some(address),
            } => Some(address.as_str()),
            _ => None,
        }
    }
}

/// The classification of one failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub retry: Retry,
    pub cause: Cause,
}

impl Verdict {
    /// Whether a call of this idempotency may be sent again.
    pub fn allows(&self, idempotency: Idempotency) -> bool {
        self.retry.allows(idempotency)
    }
}

/// Classifies a failed attempt's status. The table (and why) is in docs/architecture.md
/// ("Errors and retries") and D46; `tests::the_table` spells it out.
pub fn classify(status: &Status) -> Verdict {
    let verdict = |retry, cause| Verdict { retry, cause };
    if let Some(kind) = detail_of(status) {
        return match kind {
            // A leader may be demoted with the write already in its log, which its successor
            // can still commit: the outcome is unknown.
            Kind::NotLeader(hint) => verdict(
                Retry::IfIdempotent,
                Cause::ShardNotLeader {
                    leader: (!hint.leader_address.is_empty()).then_some(LeaderHint {
                        node_id: hint.leader_node_id,
                        address: hint.leader_address,
                    }),
                },
            ),
            // Sent only from a coordinator's leadership check, before acting (D47).
            Kind::CoordinatorNotLeader(hint) => verdict(
                Retry::Always,
                Cause::CoordinatorNotLeader {
                    leader_address: (!hint.leader_address.is_empty())
                        .then_some(hint.leader_address),
                },
            ),
            // Checked before the request is served.
            Kind::StaleEpoch(_) | Kind::UnknownShard(_) => verdict(Retry::Always, Cause::StaleMap),
            Kind::WrongNode(_) => verdict(Retry::Always, Cause::NodeGone),
            Kind::Conflict(_) => verdict(Retry::Never, Cause::TxnConflict),
            Kind::KeyLocked(_) => verdict(Retry::Never, Cause::KeyLocked),
            Kind::InvalidArgument(_)
            | Kind::TxnRolledBack(_)
            | Kind::TxnNotFound(_)
            | Kind::LimitExceeded(_)
            | Kind::CrossShardTxn(_)
            | Kind::WriteWindowExceeded(_)
            | Kind::Compacted(_)
            | Kind::FutureRevision(_) => verdict(Retry::Never, Cause::Refused),
        };
    }
    if never_sent(status) {
        return verdict(Retry::Always, Cause::NotSent);
    }
    match status.code() {
        // gRPC: "not always safe to retry non-idempotent operations". Cairn's own UNAVAILABLE
        // answers include a gateway that gave up after attempts of unknown outcome.
        Code::Unavailable => verdict(Retry::IfIdempotent, Cause::Unavailable),
        // ABORTED: a concurrency conflict in gRPC's vocabulary. No Cairn request path sends
        // it today; a repeat re-runs the whole request, which only an idempotent call may.
        Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
            verdict(Retry::IfIdempotent, Cause::OutcomeUnknown)
        }
        _ => verdict(Retry::Never, Cause::Refused),
    }
}

/// True when the attempt failed to open a connection at all (so nothing was sent), as
/// opposed to a server answering with an error or a call cut off mid-way.
pub fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Jittered exponential back-off: the pause before retry `n` (0-based) is drawn uniformly
/// from `[cap / 2, cap]`, where `cap = min(max, min * 2^n)`. Half the cap is kept so that
/// pauses still grow; the random half spreads out callers that failed together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        assert!(min <= max, "backoff min {min:?} is above max {max:?}");
        Self { min, max }
    }

    /// The upper bound of the pause before retry `retry` (0-based).
    pub fn cap(&self, retry: u32) -> Duration {
        // 2^20 times any sensible minimum is past any sensible maximum.
        let factor = 1u32 << retry.min(20);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The pause before retry `retry`, drawn with `rng`.
    pub fn pause_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.cap(retry);
        let floor = cap / 2;
        let span_nanos = u64::try_from((cap - floor).as_nanos()).unwrap_or(u64::MAX);
        floor + Duration::from_nanos(rng.random_range(0..=span_nanos))
    }

    /// The pause before retry `retry`, drawn with the thread's generator.
    pub fn pause(&self, retry: u32) -> Duration {
        self.pause_with(retry, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::v1 as kv;
    use crate::status::with_detail;
    use Idempotency::{Idempotent, NotIdempotent};

    fn not_leader(address: &str) -> Kind {
        Kind::NotLeader(kv::NotLeader {
            shard_id: 3,
            leader_node_id: 2,
            leader_address: address.into(),
        })
    }

    /// Every row: the status, then the verdict, then whether an idempotent and a
    /// non-idempotent call may go again.
    #[test]
    fn the_table() {
        let coordinator_not_leader = |address: &str| {
            Kind::CoordinatorNotLeader(kv::CoordinatorNotLeader {
                leader_id: 1,
                leader_address: address.into(),
            })
        };
        let refused_details = [
            Kind::InvalidArgument(kv::InvalidArgument::default()),
            Kind::LimitExceeded(kv::LimitExceeded::default()),
            Kind::CrossShardTxn(kv::CrossShardTxn::default()),
            Kind::WriteWindowExceeded(kv::WriteWindowExceeded::default()),
            Kind::Compacted(kv::Compacted::default()),
            Kind::FutureRevision(kv::FutureRevision::default()),
            Kind::TxnRolledBack(kv::TxnRolledBack::default()),
            Kind::TxnNotFound(kv::TxnNotFound::default()),
        ];
        let mut rows: Vec<(Status, Retry, Cause)> = vec![
            (
                with_detail(Code::FailedPrecondition, "m", not_leader("n2:7100")),
                Retry::IfIdempotent,
                Cause::ShardNotLeader {
                    leader: Some(LeaderHint {
                        node_id: 2,
                        address: "n2:7100".into(),
                    }),
                },
            ),
            (
                with_detail(Code::FailedPrecondition, "m", not_leader("")),
                Retry::IfIdempotent,
                Cause::ShardNotLeader { leader: None },
            ),
            (
                with_detail(
                    Code::FailedPrecondition,
                    "m",
                    coordinator_not_leader("c1:7200"),
                ),
                Retry::Always,
                Cause::CoordinatorNotLeader {
                    leader_address: Some("c1:7200".into()),
                },
            ),
            (
                with_detail(Code::FailedPrecondition, "m", coordinator_not_leader("")),
                Retry::Always,
                Cause::CoordinatorNotLeader {
                    leader_address: None,
                },
            ),
            (
                with_detail(
                    Code::FailedPrecondition,
                    "m",
                    Kind::StaleEpoch(kv::StaleEpoch::default()),
                ),
                Retry::Always,
                Cause::StaleMap,
            ),
            (
                with_detail(
                    Code::NotFound,
                    "m",
                    Kind::UnknownShard(kv::UnknownShard::default()),
                ),
                Retry::Always,
                Cause::StaleMap,
            ),
            (
                with_detail(
                    Code::FailedPrecondition,
                    "m",
                    Kind::WrongNode(kv::WrongNode::default()),
                ),
                Retry::Always,
                Cause::NodeGone,
            ),
            (
                Status::unavailable("m"),
                Retry::IfIdempotent,
                Cause::Unavailable,
            ),
            (
                with_detail(Code::Aborted, "m", Kind::Conflict(kv::Conflict::default())),
                Retry::Never,
                Cause::TxnConflict,
            ),
            (
                with_detail(
                    Code::FailedPrecondition,
                    "m",
                    Kind::KeyLocked(kv::KeyLocked::default()),
                ),
                Retry::Never,
                Cause::KeyLocked,
            ),
        ];
        for code in [
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Aborted,
        ] {
            rows.push((
                Status::new(code, "m"),
                Retry::IfIdempotent,
                Cause::OutcomeUnknown,
            ));
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unimplemented,
            Code::OutOfRange,
            Code::DataLoss,
            Code::Unauthenticated,
        ] {
            rows.push((Status::new(code, "m"), Retry::Never, Cause::Refused));
        }
        for kind in refused_details {
            // The detail decides, whatever the code.
            rows.push((
                with_detail(Code::Unavailable, "m", kind),
                Retry::Never,
                Cause::Refused,
            ));
        }
        for (status, retry, cause) in rows {
            let verdict = classify(&status);
            assert_eq!(verdict, Verdict { retry, cause }, "{status:?}");
            let (idempotent, not_idempotent) = match retry {
                Retry::Never => (false, false),
                Retry::Always => (true, true),
                Retry::IfIdempotent => (true, false),
            };
            assert_eq!(verdict.allows(Idempotent), idempotent, "{status:?}");
            assert_eq!(verdict.allows(NotIdempotent), not_idempotent, "{status:?}");
        }
    }

    #[test]
    fn undecodable_details_fall_back_to_the_code() {
        let status = Status::with_details(Code::Unavailable, "m", vec![0xff, 0xff, 0xff].into());
        assert_eq!(classify(&status).cause, Cause::Unavailable);
    }

    #[test]
    fn leader_addresses_are_read_from_either_hint() {
        let shard = classify(&with_detail(
            Code::FailedPrecondition,
            "m",
            not_leader("n2"),
        ));
        assert_eq!(shard.cause.leader_address(), Some("n2"));
        let none = classify(&with_detail(Code::FailedPrecondition, "m", not_leader("")));
        assert_eq!(none.cause.leader_address(), None);
        assert_eq!(Cause::StaleMap.leader_address(), None);
    }

    #[tokio::test]
    async fn a_refused_connection_was_never_sent() {
        // Nothing listens on port 1: the connection is refused before anything is sent.
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let mut client = crate::kv::v1::kv_client::KvClient::new(channel);
        let status = client
            .get(crate::kv::v1::GetRequest::default())
            .await
            .expect_err("nothing listens there");
        assert!(never_sent(&status), "{status:?}");
        assert_eq!(
            classify(&status),
            Verdict {
                retry: Retry::Always,
                cause: Cause::NotSent
            }
        );
        assert!(!never_sent(&Status::unavailable("m")));
    }

    #[test]
    fn backoff_stays_within_bounds_and_grows() {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut rng = rand::rng();
        assert_eq!(backoff.cap(0), Duration::from_millis(20));
        assert_eq!(backoff.cap(1), Duration::from_millis(40));
        assert_eq!(backoff.cap(5), Duration::from_millis(640));
        assert_eq!(backoff.cap(6), Duration::from_secs(1));
        assert_eq!(backoff.cap(u32::MAX), Duration::from_secs(1));
        for retry in 0..64 {
            let cap = backoff.cap(retry);
            for _ in 0..100 {
                let pause = backoff.pause_with(retry, &mut rng);
                assert!(pause >= cap / 2 && pause <= cap, "retry {retry}: {pause:?}");
                assert!(pause >= Duration::from_millis(10) && pause <= Duration::from_secs(1));
            }
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let pauses: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff.pause(4)).collect();
        assert!(pauses.len() > 1, "every pause was the same");
    }
}
