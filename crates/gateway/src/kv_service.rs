//! The public KV service (`cairn.kv.v1.KV`): routes each request to its shard, gives writes
//! without a write id one of the gateway's, runs a transaction over one shard as that shard's
//! command and over several as a two-phase commit it coordinates (`crate::txn`), fans ranges
//! out over every shard at one snapshot revision from the timestamp oracle, merging pages in
//! key order, and resolves the other transactions' locks its requests meet. `Compact`
//! resolves the locks at or below the revision, then goes to the coordinator.

use crate::auth::{AuthGate, RequestAccesses};
use crate::error::{GatewayError, Result};
use crate::router::{Router, Target};
use crate::routing::RoutingTable;
use crate::txn::bounds::keep_to_user_keys;
use crate::txn::coordinator::Coordinator;
use crate::txn::metrics::TxnMetrics;
use crate::txn::plan::{choose_path, keep_ranges_to_user_keys, validate, Path};
use crate::txn::reads::Reads;
use crate::txn::resolution::{LockRule, WaitPolicy};
use crate::txn::resolver::LockResolver;
use crate::txn::scanner::LockSweeper;
use crate::txn::TxnConfig;
use crate::write_ids::{InFlight, WriteIds};
use cairn_coordinator_client::{CoordinatorClient, TimestampClient};
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_server::Kv;
use cairn_proto::retry::Backoff;
use cairn_types::ShardId;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};

mod shard_request;
pub(crate) use shard_request::kind_of;
#[doc(hidden)]
pub use shard_request::ShardRequest;

/// What the KV service needs besides the router: limits, the oracle, the coordinator, the
/// auth gate and the transaction settings.
pub struct KvServiceParts {
    pub range_fanout_max: usize,
    pub range_keys_max: u64,
    /// Snapshot revisions for ranges, start and commit timestamps of transactions.
    pub timestamps: TimestampClient,
    pub coordinator: CoordinatorClient,
    pub auth: Arc<AuthGate>,
    pub txn: TxnConfig,
    pub txn_metrics: Arc<TxnMetrics>,
    /// The pacing of waits for other transactions' locks (the router's back-off).
    pub backoff: Backoff,
}

pub struct KvService {
    router: Arc<Router>,
    write_ids: Arc<WriteIds>,
    range_keys_max: u64,
    /// Snapshot revisions for ranges.
    timestamps: TimestampClient,
    coordinator: tokio::sync::Mutex<CoordinatorClient>,
    auth: Arc<AuthGate>,
    txn_config: TxnConfig,
    resolver: Arc<LockResolver>,
    reads: Arc<Reads>,
    transactions: Coordinator,
    sweeper: Arc<LockSweeper>,
}

impl KvService {
    pub fn new(router: Arc<Router>, parts: KvServiceParts) -> Self {
        let metrics = parts.txn_metrics;
        let resolver = Arc::new(LockResolver::new(
            router.clone(),
            parts.backoff,
            metrics.clone(),
        ));
        let reads = Arc::new(Reads {
            router: router.clone(),
            resolver: resolver.clone(),
            fanout_max: parts.range_fanout_max,
        });
        let sweeper = Arc::new(LockSweeper::new(
            router.clone(),
            resolver.clone(),
            metrics.clone(),
            parts.txn.lock_scan_locks_max,
            parts.backoff,
        ));
        let transactions = Coordinator {
            router: router.clone(),
            resolver: resolver.clone(),
            reads: reads.clone(),
            timestamps: parts.timestamps.clone(),
            config: parts.txn.clone(),
            range_keys_max: parts.range_keys_max,
            metrics,
        };
        Self {
            router,
            write_ids: WriteIds::new(),
            range_keys_max: parts.range_keys_max,
            timestamps: parts.timestamps,
            coordinator: tokio::sync::Mutex::new(parts.coordinator),
            auth: parts.auth,
            txn_config: parts.txn,
            resolver,
            reads,
            transactions,
            sweeper,
        }
    }

    /// The expired-lock scan and compaction's lock sweep.
    pub fn sweeper(&self) -> Arc<LockSweeper> {
        self.sweeper.clone()
    }

    /// Gives a write without a write id one of the gateway's, so the gateway's own retries
    /// are applied once; the returned guard keeps it in flight until the answer is sent.
    fn assign_write_id(&self, write_id: &mut Option<pb::WriteId>) -> Option<InFlight> {
        if write_id.is_some() {
            return None;
        }
        let in_flight = self.write_ids.begin();
        *write_id = Some(in_flight.write_id);
        Some(in_flight)
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.router.request_timeout()
    }

    /// The current routing table, waiting (up to the request timeout) for the first map.
    async fn table(&self) -> Result<Arc<RoutingTable>> {
        self.router
            .maps
            .table(self.router.request_timeout())
            .await
            .ok_or(GatewayError::NoShardMap)
    }

    /// The one shard every key of `request` lives in.
    async fn shard_of<R: ShardRequest>(&self, request: &R) -> Result<ShardId> {
        let keys = request.keys()?;
        let table = self.table().await?;
        let shards: BTreeSet<ShardId> = keys.iter().map(|key| table.shard_for_key(key)).collect();
        match shards.len() {
            // A transaction of range ops only, on a cluster of one shard.
            0 if table.shard_count == 1 => Ok(ShardId(0)),
            0 => Err(GatewayError::invalid(
                "txn",
                "a transaction needs at least one key",
            )),
            1 => Ok(*shards.first().expect("one shard")),
            _ => Err(GatewayError::CrossShardTxn {
                shards: shards.into_iter().collect(),
            }),
        }
    }

    /// The pipeline of every single-shard request (put, delete, get, txn): validate, find
    /// its shard, give a write a write id, send it with the router's retries, and check that
    /// the answer is of the request's kind.
    async fn serve<R: ShardRequest + RequestAccesses>(
        &self,
        request: Request<R>,
    ) -> std::result::Result<Response<R::Response>, Status> {
        // Before anything reaches a node: a refused request writes nothing.
        self.auth
            .authorize(&request, &request.get_ref().accesses())
            .await?;
        Ok(self.serve_authorized(request.into_inner()).await?)
    }

    async fn serve_authorized<R: ShardRequest>(
        &self,
        mut request: R,
    ) -> Result<Response<R::Response>> {
        let shard = self.shard_of(&request).await?;
        tracing::Span::current().record("shard", shard.0);
        let _in_flight = request
            .write_id_mut()
            .and_then(|write_id| self.assign_write_id(write_id));
        let deadline = self.deadline();
        // A plain request holds no locks: it waits for the live ones it meets.
        let result = self
            .resolver
            .with_locks(deadline, 0, LockRule::Always(WaitPolicy::Wait), || {
                self.router
                    .call_op(shard, request.target(), deadline, |target| {
                        request.clone().into_op(target)
                    })
            })
            .await?;
        Ok(Response::new(R::response(result).map_err(|other| {
            GatewayError::MismatchedResult {
                op: R::NAME,
                result: shard_request::kind_of(&other),
            }
        })?))
    }
}

impl KvService {
    /// A transaction: one shard's command when its keys allow (the one-phase path), else
    /// the two-phase commit this gateway coordinates (D95).
    async fn serve_txn(&self, mut txn: pb::TxnRequest) -> Result<Response<pb::TxnResponse>> {
        validate(&txn, &self.txn_config, self.range_keys_max)?;
        let table = self.table().await?;
        let path = choose_path(&txn, table.shard_count, |key| table.shard_for_key(key))?;
        match path {
            Path::OnePhase(shard) => {
                let span = tracing::Span::current();
                span.record("path", "one_phase");
                span.record("shard", shard.0);
                let response = self.serve_authorized(txn).await?;
                self.transactions.metrics.committed("one_phase");
                Ok(response)
            }
            Path::TwoPhase { shards } => {
                let span = tracing::Span::current();
                span.record("path", "two_phase");
                span.record("shards", shards.len());
                let _in_flight = self.assign_write_id(&mut txn.write_id);
                let response = self.transactions.run(&txn, &table, self.deadline()).await?;
                Ok(Response::new(response))
            }
        }
    }
}

/// Reads at a revision are served by the leader (only it knows the writes in flight).
fn target_for(consistency: i32, revision: u64) -> Target {
    if consistency == pb::Consistency::Serializable as i32 && revision == 0 {
        Target::AnyReplica
    } else {
        Target::Leader
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(name = "gateway.put", skip_all, fields(shard))]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        self.serve(request).await
    }

    #[tracing::instrument(name = "gateway.delete", skip_all, fields(shard))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.serve(request).await
    }

    #[tracing::instrument(name = "gateway.get", skip_all, fields(shard))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.serve(request).await
    }

    #[tracing::instrument(name = "gateway.txn", skip_all, fields(shard, path, start_ts, shards))]
    async fn txn(
        &self,
        mut request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        // Cut off first, so that a range "to the end" needs permission on the user keys only.
        keep_ranges_to_user_keys(request.get_mut())?;
        self.auth
            .authorize(&request, &request.get_ref().accesses())
            .await?;
        Ok(self.serve_txn(request.into_inner()).await?)
    }

    #[tracing::instrument(name = "gateway.range", skip_all, fields(shards))]
    async fn range(
        &self,
        mut request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        // Cut off first, so that a range "to the end" needs permission on the user keys only.
        keep_to_user_keys(request.get_mut())?;
        self.auth
            .authorize(&request, &request.get_ref().accesses())
            .await?;
        let mut range = request.into_inner();
        if range.limit > self.range_keys_max {
            return Err(GatewayError::LimitExceeded {
                limit: "range_keys_max",
                max: self.range_keys_max,
                actual: range.limit,
            }
            .into());
        }
        if range.limit == 0 {
            range.limit = self.range_keys_max;
        }
        let limit = range.limit as usize;
        let shard_count = self.table().await?.shard_count;
        tracing::Span::current().record("shards", shard_count);
        let deadline = self.deadline();
        // A linearizable range reads every shard at one snapshot revision taken now: it sees
        // every write acknowledged before it began, and no shard shows a moment another
        // does not. Its pages continue at the revision the caller passes back.
        if range.revision == 0 && range.consistency != pb::Consistency::Serializable as i32 {
            let revision = self
                .timestamps
                .timestamp(self.router.request_timeout())
                .await
                .map_err(GatewayError::from)?;
            range.revision = revision.0;
        }
        let target = target_for(range.consistency, range.revision);
        // Keys are hash-partitioned, so any shard may hold keys of any range: ask them all.
        let pages = self
            .reads
            .range_pages(
                &range,
                shard_count,
                target,
                0,
                LockRule::Always(WaitPolicy::Wait),
                deadline,
            )
            .await?;
        let mut merged = merge_pages(pages, limit, range.count_only);
        if range.revision != 0 {
            merged.revision = range.revision;
        }
        Ok(Response::new(merged))
    }

    #[tracing::instrument(name = "gateway.compact", skip_all)]
    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        self.auth.authorize_admin(&request, "compact").await?;
        let revision = request.into_inner().revision;
        if revision == 0 {
            return Err(GatewayError::invalid("revision", "must be at least 1").into());
        }
        // No transaction at or below the point may stay undecided once its records may go
        // (D92, D96).
        self.sweeper
            .resolve_up_to(revision, self.deadline())
            .await?;
        let answer = self.coordinator.lock().await.compact(revision).await?;
        Ok(Response::new(pb::CompactResponse {
            compact_revision: answer.compact_revision,
        }))
    }
}

/// Merges per-shard pages (each sorted, each at most `limit` keys) into one page of at most
/// `limit` keys in key order. The continuation is the last key returned: every shard resumes
/// strictly after it, so the next page starts exactly where this one ended.
pub fn merge_pages(
    pages: Vec<pb::RangeResponse>,
    limit: usize,
    count_only: bool,
) -> pb::RangeResponse {
    // Without a snapshot revision (a serializable range), the highest shard revision.
    let revision = pages.iter().map(|p| p.revision).max().unwrap_or(0);
    if count_only {
        // Saturating: the counts are nodes' answers, and a sum that overflows must not panic
        // the gateway (fuzz/corpus/gateway_request/regression-count-overflow).
        return pb::RangeResponse {
            revision,
            count: pages
                .iter()
                .fold(0u64, |total, page| total.saturating_add(page.count)),
            ..Default::default()
        };
    }
    let any_more = pages.iter().any(|p| p.more);
    let mut kvs: Vec<pb::KeyValue> = pages.into_iter().flat_map(|p| p.kvs).collect();
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let more = any_more || kvs.len() > limit;
    kvs.truncate(limit);
    let continuation = if more {
        kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let count = kvs.len() as u64;
    pb::RangeResponse {
        revision,
        kvs,
        more,
        continuation,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str) -> pb::KeyValue {
        pb::KeyValue {
            key: key.into(),
            ..Default::default()
        }
    }

    fn page(keys: &[&str], more: bool, revision: u64) -> pb::RangeResponse {
        pb::RangeResponse {
            revision,
            kvs: keys.iter().map(|k| kv(k)).collect(),
            more,
            ..Default::default()
        }
    }

    #[test]
    fn pages_merge_in_key_order_and_continue_after_the_last_key() {
        let merged = merge_pages(
            vec![page(&["a", "d", "e"], true, 4), page(&["b", "c"], false, 9)],
            3,
            false,
        );
        let keys: Vec<_> = merged
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(merged.more);
        assert_eq!(merged.continuation, b"c");
        assert_eq!(merged.revision, 9);

        let last = merge_pages(vec![page(&["x"], false, 1), page(&[], false, 1)], 3, false);
        assert!(!last.more && last.continuation.is_empty());
        assert_eq!(last.count, 1);
    }

    #[test]
    fn counts_add_up() {
        let pages = vec![
            pb::RangeResponse {
                count: 3,
                ..Default::default()
            },
            pb::RangeResponse {
                count: 4,
                ..Default::default()
            },
        ];
        assert_eq!(merge_pages(pages, 10, true).count, 7);
    }

    /// A node's count near `u64::MAX` (a bug or a bad node) added to another overflowed, a
    /// panic in builds with overflow checks; the sum saturates.
    #[test]
    fn counts_that_overflow_saturate() {
        let page = pb::RangeResponse {
            count: u64::MAX,
            ..Default::default()
        };
        assert_eq!(
            merge_pages(vec![page.clone(), page], 10, true).count,
            u64::MAX
        );
    }
}
