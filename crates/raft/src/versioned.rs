//! A shard leader's writes at oracle timestamps and reads at a revision.
//!
//! **Write** ([`ShardReplica::write_op`]): register the write as in flight, *then* fetch a
//! timestamp, *then* latch the keys the write names (granted in timestamp order), propose the
//! command carrying the timestamp and the term it was fetched in, and release the latch as
//! soon as the entry's place in the log is fixed. The order matters (see
//! [`crate::latches`]): a write registered after a read at `R` arrived fetches its timestamp
//! after `R` was handed out, so above `R`.
//!
//! **Read at `R`** ([`ShardReplica::read_barrier_at`]): only the leader serves it. It confirms
//! its leadership (lease or ReadIndex, so everything committed is applied), then waits for
//! the writes in flight that may land at or below `R`. After that no write at or below `R`
//! can appear on this shard: later writes fetch later timestamps, and a write latched by an
//! earlier leader is either committed (and applied) already or will be refused at apply.
//! The caller then reads, and checks the compaction point **after** reading
//! ([`ShardReplica::check_compaction`]).

use crate::command::{Command, CommandRevision, WriteId, WriteOp, WriteResult};
use crate::kv::named_keys;
use crate::latches::{InFlight, LatchKeys};
use crate::replica::{ReplicaError, ShardReplica};
use cairn_types::Revision;
use openraft::async_runtime::WatchReceiver;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a node's writes take their timestamps: the timestamp oracle, through the node's
/// batching client. Implemented by the storage node; tests may use a local counter.
pub trait TimestampSource: Send + Sync + 'static {
    /// One timestamp, handed out after this call began, within `timeout`.
    fn timestamp(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Revision, String>> + Send + '_>>;

    /// The highest timestamp this process has seen handed out (0 if none yet): every revision
    /// up to it has been handed out by the oracle.
    fn latest_known(&self) -> Revision;
}

impl ShardReplica {
    pub(crate) fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Proposes a client write and waits until it is applied. With an oracle, the write's
    /// revision is a timestamp fetched after its keys were latched; without one, the shard
    /// counts.
    pub async fn write_op(
        &self,
        write_id: Option<WriteId>,
        op: WriteOp,
        proposed_at_ms: u64,
    ) -> Result<WriteResult, ReplicaError> {
        let command = |revision| Command {
            write_id,
            proposed_at_ms,
            op: op.clone(),
            revision,
            trace: None,
        };
        let Some(timestamps) = self.context.timestamps.clone() else {
            return self.write(command(CommandRevision::Counted)).await;
        };
        if !self.raft.is_leader() {
            return Err(self.not_leader_now());
        }
        let deadline = Instant::now() + self.context.propose_timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let unavailable = |reason: String| ReplicaError::Unavailable {
            shard: self.shard,
            reason,
        };
        let keys = match named_keys(&op) {
            Some(keys) => LatchKeys::keys(keys.into_iter().map(<[u8]>::to_vec).collect()),
            None => LatchKeys::Shard,
        };
        // Registered before the timestamp is fetched: a read at a revision handed out after
        // this point waits for the write until its timestamp is known and above the read's.
        let mut flight = self.latches.register(timestamps.latest_known(), keys);
        // The term is read after registering: the timestamp is fetched under this leadership.
        let term = self.current_term();
        if !self.raft.is_leader() {
            return Err(self.not_leader_now());
        }
        let revision = timestamps
            .timestamp(remaining())
            .await
            .map_err(unavailable)?;
        flight.set_revision(revision);
        let applied = {
            let mut latched = flight
                .latch(remaining())
                .await
                .map_err(|timeout| unavailable(timeout.to_string()))?;
            if !latched.in_order() {
                // A write of these keys at a higher timestamp was proposed first. No other
                // can be while this one holds the latch, so one more timestamp is in order.
                self.counters()
                    .timestamp_refetches
                    .fetch_add(1, Ordering::Relaxed);
                let revision = timestamps
                    .timestamp(remaining())
                    .await
                    .map_err(unavailable)?;
                latched.set_revision(revision);
            }
            let revision = latched.revision();
            let applied = self
                .submit(command(CommandRevision::Timestamp { revision, term }))
                .await?;
            // The entry's place in the log is fixed: later writers of these keys may go.
            // Reads at or above its revision still wait for it (`flight` stays registered
            // until it settles).
            latched.proposed();
            applied
        };
        let result = applied.await;
        if matches!(result, Err(ReplicaError::OutcomeUnknown { .. })) {
            // The entry may still be applied: readers at or above its timestamp must keep
            // waiting for it until it is, or until it no longer can be.
            self.settle_later(flight, term);
        }
        result
    }

    /// Keeps `flight` registered until this replica has applied everything in its log now, or has left
    /// the leadership of `term` (after which the entry is refused if it ever applies), for at
    /// most one more propose timeout.
    pub(crate) fn settle_later(&self, flight: InFlight, term: u64) {
        let raft = self.raft.clone();
        let shard = self.shard;
        let bound = self.context.propose_timeout;
        tokio::spawn(async move {
            let mut metrics = raft.metrics();
            let last_log = metrics.borrow_watched().last_log_index;
            let settled = tokio::time::timeout(bound, async {
                loop {
                    {
                        let now = metrics.borrow_watched();
                        let applied = now.last_applied.as_ref().map(|log_id| log_id.index);
                        if now.current_term != term || applied >= last_log {
                            return;
                        }
                    }
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if settled.is_err() {
                tracing::warn!(%shard, term, "a write of unknown outcome stayed unapplied; reads at its revision stop waiting for it");
            }
            drop(flight);
        });
    }

    /// Before a read at revision `at`: on the leader only, confirms leadership and waits for
    /// the writes in flight that may land at or below `at`.
    pub async fn read_barrier_at(&self, at: Revision) -> Result<(), ReplicaError> {
        if !self.raft.is_leader() {
            return Err(self.not_leader_now());
        }
        self.linearizable_barrier().await?;
        self.latches
            .wait_for_in_flight(at, self.context.read_index_timeout)
            .await
            .map_err(|timeout| ReplicaError::Unavailable {
                shard: self.shard,
                reason: format!("writes at or below {at} still in flight: {timeout}"),
            })
    }

    /// Refuses a revision the cluster has not handed out yet: a read there could still
    /// change. With an oracle, known when this process has seen a timestamp at least as high,
    /// or else asks the oracle for a new one; without, the shard's own revision bounds it.
    pub async fn check_not_future(
        &self,
        at: Revision,
        applied_revision: impl FnOnce() -> Result<Revision, ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let latest = match &self.context.timestamps {
            None => applied_revision()?,
            Some(timestamps) if at <= timestamps.latest_known() => return Ok(()),
            Some(timestamps) => timestamps
                .timestamp(self.context.read_index_timeout)
                .await
                .map_err(|reason| ReplicaError::Unavailable {
                    shard: self.shard,
                    reason,
                })?,
        };
        if at > latest {
            return Err(ReplicaError::FutureRevision {
                shard: self.shard,
                requested: at,
                latest,
            });
        }
        Ok(())
    }

    /// After reading at `at`: refuses the answer if the shard's compaction point is above
    /// `at` now (the versions read may have been dropped while reading).
    pub fn check_compaction(&self, at: Revision) -> Result<(), ReplicaError> {
        let compact_revision = self.context.compaction_points.get(self.shard);
        if at < compact_revision {
            return Err(ReplicaError::Compacted {
                shard: self.shard,
                requested: at,
                compact_revision,
            });
        }
        Ok(())
    }

    /// The compaction point this replica has applied.
    pub fn compact_revision(&self) -> Revision {
        self.context.compaction_points.get(self.shard)
    }

    /// Proposes raising the shard's compaction point to `revision` (a no-op entry if it is
    /// not higher when applied).
    pub async fn propose_compaction(&self, revision: Revision) -> Result<(), ReplicaError> {
        let command = Command {
            write_id: None,
            proposed_at_ms: 0,
            op: WriteOp::Compact { revision },
            revision: CommandRevision::Counted,
            trace: None,
        };
        self.write(command).await.map(|_| ())
    }
}

/// A [`TimestampSource`] that counts in memory, for tests of a single process.
#[derive(Default)]
pub struct LocalTimestamps {
    last: std::sync::atomic::AtomicU64,
}

impl TimestampSource for LocalTimestamps {
    fn timestamp(
        &self,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Revision, String>> + Send + '_>> {
        let next = self.last.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::pin(async move { Ok(Revision(next)) })
    }

    fn latest_known(&self) -> Revision {
        Revision(self.last.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// For callers holding an `Arc`.
pub fn local_timestamps() -> Arc<dyn TimestampSource> {
    Arc::new(LocalTimestamps::default())
}
