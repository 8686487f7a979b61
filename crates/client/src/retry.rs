//! When a failed attempt is tried again, and how long to pause first.
//!
//! Pure decisions only: the loop that sleeps and rotates endpoints is in `client.rs`.

use crate::error::error_detail;
use cairn_proto::kv::v1::error_detail::Kind;
use rand::Rng;
use std::time::Duration;
use tonic::Code;

/// Whether a call may be sent again after an attempt whose outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryPolicy {
    /// Reads, and writes that carry a write id: a repeat has no further effect.
    Idempotent,
    /// Calls whose repeat could act twice (joining a node allocates an id). Retried only
    /// when the gateway said it is unavailable, which it says before acting.
    NotIdempotent,
}

impl RetryPolicy {
    pub(crate) fn should_retry(self, status: &tonic::Status) -> bool {
        match self {
            RetryPolicy::Idempotent => status_is_retryable(status),
            RetryPolicy::NotIdempotent => {
                status.code() == Code::Unavailable && error_detail(status).is_none()
            }
        }
    }
}

/// True when another attempt (perhaps at another gateway) may succeed where this one failed.
///
/// DEADLINE_EXCEEDED, CANCELLED and UNKNOWN leave a write's outcome unknown; retrying it
/// is safe only because it carries the same write id. Routing details (NotLeader,
/// StaleEpoch, UnknownShard) mean the gateway's shard map is catching up with an election
/// or a move. Everything else (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION such as
/// WriteWindowExceeded, ALREADY_EXISTS, ...) would fail the same way again.
pub(crate) fn status_is_retryable(status: &tonic::Status) -> bool {
    match error_detail(status) {
        Some(Kind::NotLeader(_) | Kind::StaleEpoch(_) | Kind::UnknownShard(_)) => true,
        Some(_) => false,
        None => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ),
    }
}

/// True when the attempt failed to reach the gateway at all (no connection could be
/// opened, so nothing was sent), as opposed to a gateway answering with an error or a call
/// cut off mid-way.
pub(crate) fn is_connection_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Jittered exponential backoff: the pause before retry `n` (0-based) is drawn uniformly
/// from `[cap / 2, cap]`, where `cap = min(max, min * 2^n)`. Half the cap is kept so that
/// pauses still grow; the random half spreads out clients that failed together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        assert!(min <= max, "backoff min {min:?} is above max {max:?}");
        Self { min, max }
    }

    /// The upper bound of the pause before retry `retry` (0-based).
    pub(crate) fn cap(&self, retry: u32) -> Duration {
        // 2^20 times any sensible minimum is past any sensible maximum.
        let factor = 1u32 << retry.min(20);
        self.min.saturating_mul(factor).min(self.max)
    }

    pub(crate) fn pause(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.cap(retry);
        let floor = cap / 2;
        let span_nanos = u64::try_from((cap - floor).as_nanos()).unwrap_or(u64::MAX);
        floor + Duration::from_nanos(rng.random_range(0..=span_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::kv::v1 as proto;
    use prost::Message;

    fn with_detail(code: Code, kind: Kind) -> tonic::Status {
        let detail = proto::ErrorDetail { kind: Some(kind) };
        tonic::Status::with_details(code, "m", detail.encode_to_vec().into())
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
                let pause = backoff.pause(retry, &mut rng);
                assert!(pause >= cap / 2 && pause <= cap, "retry {retry}: {pause:?}");
                assert!(pause >= Duration::from_millis(10) && pause <= Duration::from_secs(1));
            }
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
        let mut rng = rand::rng();
        let pauses: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff.pause(4, &mut rng)).collect();
        assert!(pauses.len() > 1, "every pause was the same");
    }

    #[test]
    fn transient_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
        ] {
            assert!(
                status_is_retryable(&tonic::Status::new(code, "m")),
                "{code:?}"
            );
        }
    }

    #[test]
    fn request_errors_are_never_retried() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unimplemented,
            Code::Aborted,
            Code::OutOfRange,
        ] {
            assert!(
                !status_is_retryable(&tonic::Status::new(code, "m")),
                "{code:?}"
            );
        }
        let window = with_detail(
            Code::FailedPrecondition,
            Kind::WriteWindowExceeded(proto::WriteWindowExceeded {
                client_id: 1,
                sequence: 2,
                oldest_remembered: 3,
            }),
        );
        assert!(!status_is_retryable(&window));
    }

    #[test]
    fn routing_details_are_retried() {
        let not_leader = with_detail(
            Code::FailedPrecondition,
            Kind::NotLeader(proto::NotLeader {
                shard_id: 1,
                leader_node_id: 2,
                leader_address: "n2:7100".into(),
            }),
        );
        assert!(status_is_retryable(&not_leader));
        let unknown = with_detail(
            Code::NotFound,
            Kind::UnknownShard(proto::UnknownShard { shard_id: 4 }),
        );
        assert!(status_is_retryable(&unknown));
        assert!(!RetryPolicy::NotIdempotent.should_retry(&not_leader));
    }

    #[test]
    fn not_idempotent_calls_retry_only_unavailable() {
        let policy = RetryPolicy::NotIdempotent;
        assert!(policy.should_retry(&tonic::Status::unavailable("down")));
        assert!(!policy.should_retry(&tonic::Status::deadline_exceeded("slow")));
        assert!(!policy.should_retry(&tonic::Status::unknown("reset")));
    }
}
