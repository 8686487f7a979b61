//! The one retry loop every call goes through.
//!
//! A call tries the gateway that answered last, and on a retryable failure moves to the
//! next one after a jittered pause, until it succeeds, hits a non-retryable error, runs out
//! of attempts (`retry_attempts_max`) or out of time (`request_timeout`).

use super::Client;
use crate::error::{one_line, Error, Result};
use cairn_proto::retry::{classify, never_sent, Backoff, Idempotency, Retry};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::Instrument;

/// What the attempts of one call met, beyond its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    /// Some attempt failed in a way that leaves unknown whether it acted (a timeout, a broken
    /// connection, `UNAVAILABLE` from a gateway that may have forwarded it): a write it
    /// carried may have been applied, whatever later attempts answered.
    pub(crate) outcome_unknown: bool,
}

impl Client {
    /// Runs `attempt` against the gateways until it succeeds, fails in a way a call of its
    /// `idempotency` may not repeat (`cairn_proto::retry::classify`), or runs out of attempts
    /// or time. `attempt` gets a channel and the time left.
    ///
    /// The call runs in a `cairn.client` span (a child of the caller's span); requests built
    /// with [`request`] carry its trace context to the gateway.
    ///
    /// With credentials configured, every attempt carries the client's token; a call refused
    /// as UNAUTHENTICATED (the token expired, or the password changed) authenticates again
    /// and runs once more (nothing ran: the gateway checks credentials first).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        self.call_until(
            what,
            idempotency,
            deadline,
            &mut Attempts::default(),
            attempt,
        )
        .await
    }

    /// As [`Client::call`], with the deadline given (a transaction's runs share one) and
    /// what the attempts met recorded in `attempts`.
    pub(crate) async fn call_until<T, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        deadline: Instant,
        attempts: &mut Attempts,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let span = tracing::info_span!(
            "cairn.client",
            otel.name = %format_args!("cairn.client.{what}"),
            otel.kind = "client",
            rpc.method = what,
        );
        async {
            let token = self.token(false).await?;
            let first = self
                .call_with_retries(
                    what,
                    idempotency,
                    deadline,
                    attempts,
                    &mut attempt,
                    token.clone(),
                )
                .await;
            match first {
                Err(Error::Rejected {
                    code: tonic::Code::Unauthenticated,
                    ..
                }) if token.is_some() => {
                    let token = self.token(true).await?;
                    self.call_with_retries(what, idempotency, deadline, attempts, attempt, token)
                        .await
                }
                other => other,
            }
        }
        .instrument(span)
        .await
    }

    /// As [`Client::call`], sending no token (to authenticate).
    pub(crate) async fn call_without_token<T, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        self.call_with_retries(
            what,
            idempotency,
            deadline,
            &mut Attempts::default(),
            attempt,
            None,
        )
        .await
    }

    async fn call_with_retries<T, F, Fut>(
        &self,
        what: &'static str,
        idempotency: Idempotency,
        deadline: Instant,
        attempts: &mut Attempts,
        mut attempt: F,
        token: Option<String>,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let config = &self.inner.config;
        let gateways = &self.inner.gateways;
        let backoff = Backoff::new(config.retry_backoff_min, config.retry_backoff_max);
        let mut index = self.inner.preferred.load(Ordering::Relaxed) % gateways.len();
        let mut connection_failures = 0;
        let mut last: Option<tonic::Status> = None;
        for attempt_number in 0..config.retry_attempts_max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.deadline_error(what, attempt_number, connection_failures, last));
            }
            let gateway = &gateways[index];
            let call = crate::auth::with_token(token.clone(), || {
                attempt(gateway.channel.clone(), remaining)
            });
            let outcome = tokio::time::timeout(remaining, call).await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => {
                    attempts.outcome_unknown = true;
                    return Err(self.deadline_error(
                        what,
                        attempt_number + 1,
                        connection_failures,
                        last,
                    ));
                }
            };
            let verdict = classify(&status);
            if verdict.retry == Retry::IfIdempotent {
                attempts.outcome_unknown = true;
            }
            if !verdict.allows(idempotency) {
                return Err(Error::from_status(status));
            }
            if never_sent(&status) {
                connection_failures += 1;
            }
            tracing::debug!(
                what,
                gateway = %gateway.address,
                attempt = attempt_number + 1,
                code = ?status.code(),
                message = status.message(),
                "attempt failed; trying the next gateway"
            );
            last = Some(status);
            index = (index + 1) % gateways.len();
            self.inner.preferred.store(index, Ordering::Relaxed);
            if attempt_number + 1 < config.retry_attempts_max {
                let pause = backoff.pause(attempt_number as u32);
                let remaining = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(remaining)).await;
            }
        }
        let attempts = config.retry_attempts_max;
        let last = last.expect("at least one attempt was made");
        Err(self.exhausted(what, attempts, connection_failures, &last))
    }

    /// Out of attempts. When no attempt reached a gateway, the message says so, since the
    /// fix (start the cluster, correct the addresses) differs from waiting out an election.
    fn exhausted(
        &self,
        what: &str,
        attempts: usize,
        connection_failures: usize,
        last: &tonic::Status,
    ) -> Error {
        if connection_failures == attempts {
            return Error::Unavailable(format!(
                "cannot reach any gateway at {} after {attempts} attempts: {}",
                self.inner.config.endpoints.join(","),
                one_line(last.message())
            ));
        }
        let cause = match Error::from_status(last.clone()) {
            Error::Unavailable(message) => message,
            other => other.to_string(),
        };
        Error::Unavailable(format!(
            "{what} did not succeed in {attempts} attempts; last error: {cause}"
        ))
    }

    /// Out of time. If no attempt ever reached a gateway, nothing can have been applied,
    /// and "unreachable" is the useful answer rather than "outcome unknown".
    fn deadline_error(
        &self,
        what: &str,
        attempts: usize,
        connection_failures: usize,
        last: Option<tonic::Status>,
    ) -> Error {
        match last {
            Some(last) if attempts > 0 && connection_failures == attempts => {
                self.exhausted(what, attempts, connection_failures, &last)
            }
            _ => Error::Timeout,
        }
    }
}
