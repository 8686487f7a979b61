//! Bounded shutdown, the same for every binary: from the stop signal, a process has
//! `shutdown_grace_ms` to hand off what it leads, drain its gRPC server and close its storage;
//! what is still open at the end of a phase is dropped, so the process always exits in time
//! (Kubernetes kills it with SIGKILL after its grace period anyway, and a process that hangs
//! there turns every rolling upgrade into a crash).
//!
//! The grace period is split into phases with fixed shares, so that a slow first phase never
//! eats the time the last one needs: hand-off until 40 %, drain until 80 %, close until 100 %.

use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Default `shutdown_grace_ms` of every process: it exits within this long after SIGTERM.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;
/// Smallest allowed `shutdown_grace_ms`: a leadership hand-off needs a few heartbeats.
pub const SHUTDOWN_GRACE_MS_MIN: u64 = 1_000;

/// The deadlines of one shutdown, fixed when the stop signal arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownDeadlines {
    pub signalled: Instant,
    /// End of the leadership hand-off.
    pub handoff: Instant,
    /// End of the gRPC drain: connections still open are dropped.
    pub drain: Instant,
    /// End of everything: storage is closed by then.
    pub exit: Instant,
}

impl ShutdownDeadlines {
    pub fn new(signalled: Instant, grace: Duration) -> Self {
        Self {
            signalled,
            handoff: signalled + grace * 2 / 5,
            drain: signalled + grace * 4 / 5,
            exit: signalled + grace,
        }
    }
}

/// Tells every part of a process that it was asked to stop; cheap to clone.
#[derive(Clone, Debug)]
pub struct Stopping {
    receiver: watch::Receiver<Option<ShutdownDeadlines>>,
}

impl Stopping {
    /// Starts watching `signal` (usually [`crate::shutdown_signal`]); the deadlines count
    /// from the moment it resolves.
    pub fn watch(signal: impl Future<Output = ()> + Send + 'static, grace: Duration) -> Self {
        let (sender, receiver) = watch::channel(None);
        tokio::spawn(async move {
            signal.await;
            let _ = sender.send(Some(ShutdownDeadlines::new(Instant::now(), grace)));
            // Keep the sender alive: a dropped sender reads as "never stopping" to `stopped`.
            sender.closed().await;
        });
        Self { receiver }
    }

    /// The deadlines, once the stop signal came.
    pub fn deadlines(&self) -> Option<ShutdownDeadlines> {
        *self.receiver.borrow()
    }

    pub fn is_stopping(&self) -> bool {
        self.deadlines().is_some()
    }

    /// Resolves when the stop signal comes, with its deadlines.
    pub async fn stopped(&self) -> ShutdownDeadlines {
        let mut receiver = self.receiver.clone();
        loop {
            if let Some(deadlines) = *receiver.borrow_and_update() {
                return deadlines;
            }
            if receiver.changed().await.is_err() {
                // The watcher task is gone (the runtime is stopping): never resolves.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Drives a gRPC server future `serve` whose own shutdown future is `drain_started`, until it
/// returns or `drain_deadline` passes once the drain began; then gives up on the connections
/// still open (dropping the server future closes them). Returns the server's result, or
/// `None` when the drain was cut short.
pub async fn serve_bounded<F, T>(
    serve: F,
    stopping: &Stopping,
    drain_deadline: impl Fn(ShutdownDeadlines) -> Instant,
) -> Option<T>
where
    F: Future<Output = T>,
{
    tokio::select! {
        result = serve => Some(result),
        deadline = async {
            let deadlines = stopping.stopped().await;
            let deadline = drain_deadline(deadlines);
            tokio::time::sleep_until(deadline.into()).await;
            deadline
        } => {
            tracing::warn!(
                late_by_ms = deadline.elapsed().as_millis() as u64,
                "connections still open at the end of the drain; closing them"
            );
            None
        }
    }
}

/// Runs `step` until `deadline`; logs and gives up past it. Returns whether it finished.
pub async fn until_deadline(what: &str, deadline: Instant, step: impl Future<Output = ()>) -> bool {
    match tokio::time::timeout_at(deadline.into(), step).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                what,
                "shutdown step ran out of time; skipping the rest of it"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_the_grace_period_in_order() {
        let start = Instant::now();
        let deadlines = ShutdownDeadlines::new(start, Duration::from_secs(5));
        assert_eq!(deadlines.handoff - start, Duration::from_secs(2));
        assert_eq!(deadlines.drain - start, Duration::from_secs(4));
        assert_eq!(deadlines.exit - start, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_server_that_never_drains_is_cut_off_at_its_deadline() {
        let (signal, fire) = tokio::sync::oneshot::channel::<()>();
        let stopping = Stopping::watch(
            async move {
                let _ = fire.await;
            },
            Duration::from_millis(500),
        );
        assert!(!stopping.is_stopping());
        signal.send(()).expect("receiver alive");
        let started = Instant::now();
        let result = serve_bounded(std::future::pending::<()>(), &stopping, |d| d.drain).await;
        assert_eq!(result, None);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(2),
            "cut off after {elapsed:?}"
        );
        assert!(stopping.is_stopping());
    }

    #[tokio::test]
    async fn a_server_that_finishes_returns_its_result() {
        let stopping = Stopping::watch(std::future::pending(), Duration::from_secs(5));
        let result = serve_bounded(async { 7 }, &stopping, |d| d.drain).await;
        assert_eq!(result, Some(7));
    }
}
