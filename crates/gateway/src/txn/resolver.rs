//! Lock resolution for every gateway path that meets another transaction's lock (D96): a
//! node refuses with `KeyLocked`, the gateway asks the lock's primary (`CheckTxnStatus` on
//! the primary's shard), commits the lock forward or rolls it back (`ResolveLocks` on the
//! key's shard), or waits for a live transaction (bounded by the request's deadline, paced
//! by the router's back-off) and sends the request again. What to do is
//! [`crate::txn::resolution`]'s pure answer.

use crate::error::{GatewayError, Result};
use crate::router::{Router, Target};
use crate::txn::metrics::TxnMetrics;
use crate::txn::resolution::{self, next_step, LockRule, PrimaryStatus, Step, WaitPolicy};
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::retry::Backoff;
use cairn_types::ShardId;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Most locks one request meets and handles before it gives up, whatever its deadline: each
/// meeting either resolves a lock or waits at least a millisecond, so this only stops a bug
/// from spinning.
pub const LOCK_MEETINGS_MAX: u32 = 10_000;

/// A locked key as an error shows it: Cairn's record keys (D65) by what they are, since the
/// client can neither name nor read them.
pub fn shown_key(key: &[u8]) -> String {
    if cairn_types::reserved::is_reserved(key) {
        "(the record of a transaction still running: another attempt of the request)".into()
    } else {
        key.escape_ascii().to_string()
    }
}

pub struct LockResolver {
    router: Arc<Router>,
    backoff: Backoff,
    pub metrics: Arc<TxnMetrics>,
}

impl LockResolver {
    pub fn new(router: Arc<Router>, backoff: Backoff, metrics: Arc<TxnMetrics>) -> Self {
        Self {
            router,
            backoff,
            metrics,
        }
    }

    async fn shard_of(&self, key: &[u8]) -> Result<ShardId> {
        let table = self
            .router
            .maps
            .table(self.router.request_timeout())
            .await
            .ok_or(GatewayError::NoShardMap)?;
        Ok(table.shard_for_key(key))
    }

    /// The status of the transaction `start_ts` as its primary records it. With
    /// `rollback_if_missing`, a primary with neither lock nor record is rolled back.
    pub async fn primary_status(
        &self,
        primary: &[u8],
        start_ts: u64,
        rollback_if_missing: bool,
        deadline: Instant,
    ) -> Result<PrimaryStatus> {
        let shard = self.shard_of(primary).await?;
        let answer = self
            .router
            .call(shard, Target::Leader, deadline, |mut client, target| {
                let request = node_pb::CheckTxnStatusRequest {
                    target: Some(target),
                    primary: primary.to_vec(),
                    start_ts,
                    rollback_if_missing,
                };
                async move { client.check_txn_status(request).await }
            })
            .await;
        match answer {
            Ok(answer) => PrimaryStatus::of(&answer).ok_or_else(|| {
                GatewayError::Upstream(tonic::Status::internal(
                    "CheckTxnStatus answered without a status",
                ))
            }),
            Err(error) if error.txn_not_found() => Ok(PrimaryStatus::NotFound),
            Err(error) => Err(error),
        }
    }

    /// Commits (`commit_ts` > 0) or rolls back (`commit_ts` = 0) the transaction `start_ts`'s
    /// locks on `keys`, all of one shard.
    pub async fn resolve_keys(
        &self,
        shard: ShardId,
        start_ts: u64,
        keys: Vec<Vec<u8>>,
        commit_ts: u64,
        deadline: Instant,
    ) -> Result<()> {
        self.router
            .call(shard, Target::Leader, deadline, |mut client, target| {
                let request = node_pb::ResolveLocksRequest {
                    target: Some(target),
                    start_ts,
                    keys: keys.clone(),
                    commit_ts,
                };
                async move { client.resolve_locks(request).await }
            })
            .await?;
        Ok(())
    }

    /// Acts on the primary's decision for locks of one transaction found on `shard`;
    /// `None` when the transaction is still undecided. The primary's own lock is decided by
    /// the status check itself.
    pub async fn apply_decision(
        &self,
        shard: ShardId,
        locks: &[&pb::KeyLocked],
        status: PrimaryStatus,
        deadline: Instant,
    ) -> Result<Option<&'static str>> {
        let (commit_ts, resolution) = match status {
            PrimaryStatus::Committed { commit_ts } => (commit_ts, "commit"),
            PrimaryStatus::RolledBack => (0, "rollback"),
            PrimaryStatus::Locked { .. } | PrimaryStatus::NotFound => return Ok(None),
        };
        let Some(first) = locks.first() else {
            return Ok(Some(resolution));
        };
        let keys: Vec<Vec<u8>> = locks
            .iter()
            .filter(|lock| lock.key != lock.primary)
            .map(|lock| lock.key.clone())
            .collect();
        if !keys.is_empty() {
            self.resolve_keys(shard, first.start_ts, keys, commit_ts, deadline)
                .await?;
        }
        let oldest = locks
            .iter()
            .map(|lock| lock.created_at_ms)
            .min()
            .unwrap_or(0);
        self.metrics.resolved(
            resolution,
            locks.len() as u64,
            resolution::now_ms().saturating_sub(oldest),
        );
        tracing::debug!(
            %shard,
            start_ts = first.start_ts,
            locks = locks.len(),
            resolution,
            "resolved locks of another transaction"
        );
        Ok(Some(resolution))
    }

    /// Handles one lock a request met (its `attempt`-th, 0-based): resolves it, waits for it,
    /// or refuses with `Conflict` as `policy` says. `Ok` means: send the request again.
    /// `own_start_ts` is the caller's transaction (0 for a plain request), for the error.
    pub async fn handle(
        &self,
        lock: &pb::KeyLocked,
        policy: WaitPolicy,
        attempt: u32,
        own_start_ts: u64,
        deadline: Instant,
    ) -> Result<()> {
        let expired = resolution::expired(lock, resolution::now_ms());
        let status = self
            .primary_status(&lock.primary, lock.start_ts, expired, deadline)
            .await?;
        match next_step(status, policy, attempt, &self.backoff) {
            Step::Commit { .. } | Step::Rollback => {
                let shard = self.shard_of(&lock.key).await?;
                self.apply_decision(shard, &[lock], status, deadline)
                    .await?;
                Ok(())
            }
            Step::Wait(pause) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if pause >= remaining {
                    return Err(GatewayError::LockWaitTimedOut {
                        key: shown_key(&lock.key),
                        start_ts: lock.start_ts,
                    });
                }
                tokio::time::sleep(pause).await;
                self.metrics.waited(pause);
                Ok(())
            }
            Step::Conflict => Err(GatewayError::Conflict {
                key: lock.key.clone(),
                start_revision: own_start_ts,
                conflicting_revision: 0,
                reason: format!(
                    "locked by the live transaction started at {}",
                    lock.start_ts
                ),
            }),
        }
    }

    /// Runs `request` until it is not refused with `KeyLocked`, handling each lock it meets
    /// as `rule` says for that lock, within `deadline`.
    pub async fn with_locks<T, F, Fut>(
        &self,
        deadline: Instant,
        own_start_ts: u64,
        rule: LockRule,
        mut request: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        for attempt in 0..LOCK_MEETINGS_MAX {
            let error = match request().await {
                Ok(done) => return Ok(done),
                Err(error) => error,
            };
            let Some(lock) = error.key_locked() else {
                return Err(error);
            };
            if Instant::now() >= deadline {
                return Err(GatewayError::LockWaitTimedOut {
                    key: shown_key(&lock.key),
                    start_ts: lock.start_ts,
                });
            }
            let span = tracing::debug_span!("gateway.lock", start_ts = lock.start_ts, attempt);
            self.handle(&lock, rule.policy(&lock), attempt, own_start_ts, deadline)
                .instrument(span)
                .await?;
        }
        Err(GatewayError::LockWaitTimedOut {
            key: "(many)".into(),
            start_ts: 0,
        })
    }
}
