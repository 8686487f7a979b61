//! The write path: a command proposed to the shard's Raft group, answered once applied.

use super::{request_child, ReplicaError, ShardReplica};
use crate::command::{Command, CommandResponse, WriteResult};
use openraft::error::RaftError;
use std::sync::atomic::Ordering;
use tracing::Instrument;

impl ShardReplica {
    /// Proposes `command` and waits until it is applied; returns the state machine's result.
    pub async fn write(&self, command: Command) -> Result<WriteResult, ReplicaError> {
        self.submit(command).await?.await
    }

    /// Hands `command` to Raft and returns once its place in the log order is fixed (Raft
    /// appends proposals in the order it receives them); the returned future waits until it
    /// is applied. A writer that must order its entry before a later one (the key latches of
    /// timestamped writes) can let the later one go as soon as this returns.
    pub async fn submit(
        &self,
        mut command: Command,
    ) -> Result<
        impl std::future::Future<Output = Result<WriteResult, ReplicaError>> + '_,
        ReplicaError,
    > {
        let timeout = self.context.propose_timeout;
        // The span covers the log append, replication to a quorum and the apply; a sampled
        // request's entry carries it so replicas' spans for this entry join the same trace.
        let span = request_child(|| tracing::info_span!("raft.propose", shard = self.shard.0));
        command.trace = cairn_trace_context::TraceParent::of(&span);
        self.counters.proposals.fetch_add(1, Ordering::Relaxed);
        let (responder, applied) = openraft::impls::ProgressResponder::complete_only();
        let submitted_at = tokio::time::Instant::now();
        if let Err(fatal) = self.raft.client_write_ff(command, Some(responder)).await {
            self.counters
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed);
            return Err(self.fatal(fatal));
        }
        Ok(async move {
            let response = tokio::time::timeout_at(submitted_at + timeout, applied)
                .instrument(span)
                .await
                .map_err(|_| ReplicaError::OutcomeUnknown {
                    shard: self.shard,
                    reason: format!("not applied within {timeout:?}"),
                })
                .and_then(|answered| {
                    // Raft drops the responder only when it stops: the entry may be in the log.
                    answered.map_err(|_| ReplicaError::OutcomeUnknown {
                        shard: self.shard,
                        reason: "raft stopped before answering".into(),
                    })
                })
                .and_then(|written| {
                    written.map_err(|error| self.write_error(RaftError::APIError(error)))
                })
                .inspect_err(|_| {
                    self.counters
                        .proposals_failed
                        .fetch_add(1, Ordering::Relaxed);
                })?;
            match response.data {
                CommandResponse::Write(result) => Ok(result),
                CommandResponse::None => Err(ReplicaError::Stopped {
                    shard: self.shard,
                    reason: "state machine returned no result for a write".into(),
                }),
            }
        })
    }
}
