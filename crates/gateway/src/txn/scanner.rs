//! Sweeps of the shards' lock tables (D96):
//! - the expired-lock scan, every `txn.lock_scan_interval_ms` on every gateway: locks past
//!   their TTL are resolved through their primary, so a dead gateway's locks are gone within
//!   about `lock_ttl_ms + lock_scan_interval_ms` plus one round, even if nobody reads them
//!   (a stale lock would otherwise hold back every reader of its key and compaction);
//! - compaction's gate: before the compaction point moves to `R`, every lock with
//!   `start_ts <= R` is resolved (live ones waited for until the request's deadline), so no
//!   transaction whose records compaction may drop is still undecided (D92).

use crate::error::{GatewayError, Result};
use crate::router::{Router, Target};
use crate::txn::metrics::TxnMetrics;
use crate::txn::resolution::{by_transaction, expired, now_ms};
use crate::txn::resolver::LockResolver;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::retry::Backoff;
use cairn_types::ShardId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one sweep of one shard's page of locks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Locks the page held that the sweep was after.
    pub found: u64,
    pub resolved: u64,
    /// Locks of transactions still undecided.
    pub live: u64,
    /// More locks follow the page.
    pub more: bool,
}

pub struct LockSweeper {
    router: Arc<Router>,
    resolver: Arc<LockResolver>,
    metrics: Arc<TxnMetrics>,
    locks_per_shard_max: u32,
    backoff: Backoff,
    /// Where each shard's next expired-lock scan starts (after a page that had more).
    cursors: Mutex<HashMap<ShardId, Vec<u8>>>,
}

impl LockSweeper {
    pub fn new(
        router: Arc<Router>,
        resolver: Arc<LockResolver>,
        metrics: Arc<TxnMetrics>,
        locks_per_shard_max: u32,
        backoff: Backoff,
    ) -> Self {
        Self {
            router,
            resolver,
            metrics,
            locks_per_shard_max,
            backoff,
            cursors: Mutex::default(),
        }
    }

    /// Starts the expired-lock scan, every `interval`; the caller aborts the task at shutdown.
    pub fn start(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                self.scan_once().await;
            }
        })
    }

    /// One expired-lock scan over every shard, one page each; returns the locks resolved.
    pub async fn scan_once(&self) -> u64 {
        let Some(table) = self.router.maps.current() else {
            return 0;
        };
        let deadline = Instant::now() + self.router.request_timeout();
        let (mut expired_found, mut resolved, mut failed) = (0, 0, 0);
        for shard in (0..u64::from(table.shard_count)).map(ShardId) {
            let start = self
                .cursors
                .lock()
                .expect("scan cursors poisoned")
                .get(&shard)
                .cloned()
                .unwrap_or_default();
            match self.sweep(shard, start, 0, true, deadline).await {
                Ok((swept, next)) => {
                    expired_found += swept.found;
                    resolved += swept.resolved;
                    let mut cursors = self.cursors.lock().expect("scan cursors poisoned");
                    match next {
                        Some(next) => cursors.insert(shard, next),
                        None => cursors.remove(&shard),
                    };
                }
                Err(error) => {
                    failed += 1;
                    tracing::debug!(%shard, %error, "expired-lock scan of a shard failed");
                }
            }
        }
        self.metrics.scanned(expired_found, failed);
        if expired_found > 0 {
            tracing::info!(
                expired = expired_found,
                resolved,
                "expired-lock scan resolved locks of transactions whose coordinator went away"
            );
        }
        resolved
    }

    /// Resolves every lock with `start_ts <= revision` on every shard, waiting for live
    /// transactions until `deadline` (compaction's gate).
    pub async fn resolve_up_to(&self, revision: u64, deadline: Instant) -> Result<()> {
        let table = self
            .router
            .maps
            .table(deadline.saturating_duration_since(Instant::now()))
            .await
            .ok_or(GatewayError::NoShardMap)?;
        for shard in (0..u64::from(table.shard_count)).map(ShardId) {
            let mut start = Vec::new();
            let mut round = 0;
            loop {
                let (swept, next) = self
                    .sweep(shard, start.clone(), revision, false, deadline)
                    .await?;
                if swept.live > 0 {
                    let pause = self.backoff.cap(round);
                    if Instant::now() + pause >= deadline {
                        return Err(GatewayError::LockWaitTimedOut {
                            key: format!("(a lock of {shard} at or below revision {revision})"),
                            start_ts: 0,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    round += 1;
                    continue;
                }
                match next {
                    Some(next) => start = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Reads one page of `shard`'s locks from `start` (at most `locks_per_shard_max`, with
    /// `start_ts <= max_start_ts`, 0: any) and resolves those whose transaction is decided
    /// (or, with `only_expired`, those past their TTL by this gateway's clock, asking the
    /// primary to roll back a missing transaction). Returns what it did and where the next
    /// page starts.
    async fn sweep(
        &self,
        shard: ShardId,
        start: Vec<u8>,
        max_start_ts: u64,
        only_expired: bool,
        deadline: Instant,
    ) -> Result<(Swept, Option<Vec<u8>>)> {
        let limit = self.locks_per_shard_max;
        let page = self
            .router
            .call(shard, Target::Leader, deadline, |mut client, target| {
                let request = node_pb::ScanLocksRequest {
                    target: Some(target),
                    start: start.clone(),
                    end: Vec::new(),
                    max_start_ts,
                    limit,
                };
                async move { client.scan_locks(request).await }
            })
            .await?;
        let now = now_ms();
        let wanted: Vec<pb::KeyLocked> = page
            .locks
            .iter()
            .filter(|lock| !only_expired || expired(lock, now))
            .cloned()
            .collect();
        let mut swept = Swept {
            found: wanted.len() as u64,
            more: page.more,
            ..Swept::default()
        };
        for ((primary, start_ts), locks) in by_transaction(&wanted) {
            let rollback_if_missing = locks.iter().any(|lock| expired(lock, now));
            let status = self
                .resolver
                .primary_status(&primary, start_ts, rollback_if_missing, deadline)
                .await?;
            match self
                .resolver
                .apply_decision(shard, &locks, status, deadline)
                .await?
            {
                Some(_) => swept.resolved += locks.len() as u64,
                None => swept.live += locks.len() as u64,
            }
        }
        let next = next_start(&page);
        Ok((swept, next))
    }
}

/// Where the page after `page` starts: just after its last key, when there is more.
fn next_start(page: &node_pb::ScanLocksResponse) -> Option<Vec<u8>> {
    if !page.more {
        return None;
    }
    page.locks.last().map(|lock| {
        let mut after = lock.key.clone();
        after.push(0);
        after
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_starts_just_after_the_last_lock() {
        let lock = |key: &str| pb::KeyLocked {
            key: key.into(),
            ..Default::default()
        };
        let page = node_pb::ScanLocksResponse {
            locks: vec![lock("a"), lock("b")],
            more: true,
        };
        assert_eq!(next_start(&page), Some(b"b\0".to_vec()));
        let last = node_pb::ScanLocksResponse {
            locks: vec![lock("a")],
            more: false,
        };
        assert_eq!(next_start(&last), None);
    }
}
