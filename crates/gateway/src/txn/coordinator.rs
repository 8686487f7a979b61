//! The gateway as a cross-shard transaction's coordinator (docs/transactions.md, D95-D97):
//! read at `start_ts`, choose the branch, prewrite every shard, take `commit_ts`, re-read
//! ranges, commit the primary (which decides), then the secondaries. The decisions are the
//! pure functions of the sibling modules; this file only sequences the calls.

use crate::error::{GatewayError, Result};
use crate::kv_service::merge_pages;
use crate::router::{Router, Target};
use crate::routing::RoutingTable;
use crate::txn::config::TxnConfig;
use crate::txn::evaluate::{branch, branch_reads, compare_keys, compares_hold, evaluate, Snapshot};
use crate::txn::locks::{plan_locks, LockPlan};
use crate::txn::metrics::TxnMetrics;
use crate::txn::plan::{point_keys, record_key};
use crate::txn::reads::Reads;
use crate::txn::resolution::{LockRule, WaitPolicy};
use crate::txn::resolver::LockResolver;
use crate::txn::validation::first_difference;
use crate::txn::{bounds::KeyRange, test_hooks};
use cairn_coordinator_client::TimestampClient;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_types::ShardId;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

pub struct Coordinator {
    pub router: Arc<Router>,
    pub resolver: Arc<LockResolver>,
    pub reads: Arc<Reads>,
    pub timestamps: TimestampClient,
    pub config: TxnConfig,
    pub range_keys_max: u64,
    pub metrics: Arc<TxnMetrics>,
}

impl Coordinator {
    async fn timestamp(&self) -> Result<u64> {
        Ok(self
            .timestamps
            .timestamp(self.router.request_timeout())
            .await?
            .0)
    }

    /// Runs a validated transaction over several shards as a two-phase commit; `txn` carries
    /// its write id. Errors name the client's keys, never Cairn's record key (D65).
    pub async fn run(
        &self,
        txn: &pb::TxnRequest,
        table: &RoutingTable,
        deadline: Instant,
    ) -> Result<pb::TxnResponse> {
        self.two_phase(txn, table, deadline)
            .await
            .map_err(|error| without_record_key(error, txn))
    }

    async fn two_phase(
        &self,
        txn: &pb::TxnRequest,
        table: &RoutingTable,
        deadline: Instant,
    ) -> Result<pb::TxnResponse> {
        let start_ts = self.timestamp().await?;
        tracing::Span::current().record("start_ts", start_ts);
        let compared = self
            .read_keys(compare_keys(txn), start_ts, table, deadline)
            .await?;
        let mut snapshot = Snapshot {
            revision: start_ts,
            keys: compared,
            ranges: BTreeMap::new(),
        };
        let chosen = branch(txn, compares_hold(txn, &snapshot)?);
        let (mut keys, ranges) = branch_reads(chosen);
        keys.retain(|key| !snapshot.keys.contains_key(key));
        let (branch_keys, range_pages) = tokio::join!(
            self.read_keys(keys, start_ts, table, deadline),
            self.read_ranges(
                &ranges,
                start_ts,
                0,
                LockRule::Always(WaitPolicy::Wait),
                table,
                deadline
            ),
        );
        snapshot.keys.extend(branch_keys?);
        snapshot.ranges = range_pages?;
        let planned = evaluate(txn, &snapshot, start_ts, self.range_keys_max)?;
        // Exactly-once (D97): a request that can write locks its write id's record key as its
        // primary, whichever branch this attempt took, so every attempt meets the others there
        // and the first to commit records the answer the others then give.
        let Some(plan) = plan_locks(&planned, |key| table.shard_for_key(key), record_key(txn))
        else {
            // Nothing written and nothing to record: reads at one snapshot are the whole
            // transaction.
            self.metrics.committed("read_only");
            return Ok(planned.response(start_ts));
        };
        let read_only = planned.writes.is_empty();
        tracing::Span::current().record("shards", plan.shards.len());
        test_hooks::before_prewrite().await;
        let write_id = txn.write_id;
        match self.prewrite(&plan, start_ts, write_id, deadline).await {
            Ok(None) => {}
            Ok(Some(first)) => {
                // Another attempt of this request committed: nothing of this one may stay.
                self.rollback(&plan, start_ts).await;
                return Ok(first);
            }
            Err(error) => {
                self.rollback(&plan, start_ts).await;
                if matches!(error, GatewayError::Conflict { .. }) {
                    self.metrics.conflict("prewrite");
                }
                return self
                    .settle(&plan, start_ts, write_id, error, deadline)
                    .await;
            }
        }
        test_hooks::after_prewrite().await;
        let commit_ts = match self.timestamp().await {
            Ok(commit_ts) => commit_ts,
            Err(error) => {
                self.rollback(&plan, start_ts).await;
                return Err(error);
            }
        };
        let response = if read_only {
            // The branch wrote nothing: its answer is its reads at `start_ts`, and the record
            // key's commit only records that answer for the other attempts.
            planned.response(start_ts)
        } else {
            if let Err(error) = self
                .validate_ranges(&ranges, &snapshot, start_ts, commit_ts, table, deadline)
                .await
            {
                self.rollback(&plan, start_ts).await;
                if matches!(error, GatewayError::Conflict { .. }) {
                    self.metrics.conflict("validate");
                }
                return self
                    .settle(&plan, start_ts, write_id, error, deadline)
                    .await;
            }
            evaluate(txn, &snapshot, commit_ts, self.range_keys_max)?.response(commit_ts)
        };
        if let Err(error) = self
            .commit_primary(&plan, start_ts, commit_ts, write_id, &response, deadline)
            .await
        {
            return self
                .settle(&plan, start_ts, write_id, error, deadline)
                .await;
        }
        self.metrics
            .committed(if read_only { "read_only" } else { "two_phase" });
        self.commit_secondaries(plan, start_ts, commit_ts);
        Ok(response)
    }

    /// The answer of an attempt that lost with `error` after it rolled back, once the record
    /// key says whether another attempt of the same request won (D97). A `Conflict` tells
    /// the client that the request applied nothing, which is only true if no other attempt
    /// commits it: one may hold the record key now (it rolled this attempt back when its
    /// locks outlived their TTL, or took the key after this attempt's rollback). So the
    /// record key is prewritten again at this attempt's `start_ts`, waiting for any lock there:
    /// the session answers the other attempt's result if it committed; else this attempt's
    /// rollback marker refuses it, and the conflict stands. Other errors pass unchanged.
    async fn settle(
        &self,
        plan: &LockPlan,
        start_ts: u64,
        write_id: Option<pb::WriteId>,
        error: GatewayError,
        deadline: Instant,
    ) -> Result<pb::TxnResponse> {
        if !plan.primary_is_record() || !matches!(error, GatewayError::Conflict { .. }) {
            return Err(error);
        }
        let probe = [node_pb::TxnMutation {
            key: plan.primary.clone(),
            op: node_pb::txn_mutation::Op::Delete as i32,
            value: Vec::new(),
        }];
        let answer = self
            .prewrite_shard(
                plan.primary_shard,
                &plan.primary,
                &probe,
                start_ts,
                write_id,
                LockRule::Always(WaitPolicy::Wait),
                deadline,
            )
            .await;
        match answer {
            Ok(Some(first)) => {
                tracing::debug!(start_ts, "another attempt of the request committed it");
                Ok(first)
            }
            Ok(None) => {
                // Locked after all (this attempt's rollback of the record key did not get
                // through): undo that too.
                self.rollback(plan, start_ts).await;
                Err(error)
            }
            Err(_) => Err(error),
        }
    }

    /// Reads `keys` at `start_ts`, resolving the locks met (waiting for live ones).
    async fn read_keys(
        &self,
        keys: BTreeSet<Vec<u8>>,
        start_ts: u64,
        table: &RoutingTable,
        deadline: Instant,
    ) -> Result<BTreeMap<Vec<u8>, Option<pb::KeyValue>>> {
        let reads: Vec<Result<(Vec<u8>, Option<pb::KeyValue>)>> = stream::iter(keys)
            .map(|key| async move {
                let kv = self
                    .reads
                    .get_at(table.shard_for_key(&key), &key, start_ts, 0, deadline)
                    .await?;
                Ok((key, kv))
            })
            .buffer_unordered(self.config.shards_in_flight_max)
            .collect()
            .await;
        reads.into_iter().collect()
    }

    /// Reads each range op at `revision` over every shard, merged into one page each.
    async fn read_ranges(
        &self,
        ranges: &[(usize, &pb::RangeRequest)],
        revision: u64,
        own_start_ts: u64,
        rule: LockRule,
        table: &RoutingTable,
        deadline: Instant,
    ) -> Result<BTreeMap<usize, pb::RangeResponse>> {
        let mut pages = BTreeMap::new();
        for (index, range) in ranges {
            let mut request = (*range).clone();
            request.revision = revision;
            if request.limit == 0 {
                request.limit = self.range_keys_max;
            }
            let limit = request.limit as usize;
            let shard_pages = self
                .reads
                .range_pages(
                    &request,
                    table.shard_count,
                    Target::Leader,
                    own_start_ts,
                    rule,
                    deadline,
                )
                .await?;
            let mut page = merge_pages(shard_pages, limit, request.count_only);
            page.revision = revision;
            pages.insert(*index, page);
        }
        Ok(pages)
    }

    /// Re-reads every range at `commit_ts`, past the transaction's own locks: any change
    /// since `start_ts` is a write the transaction did not see (D95). Another live
    /// transaction's lock in the range is a conflict, not a wait: this transaction holds
    /// locks, and waiting could close a cycle.
    async fn validate_ranges(
        &self,
        ranges: &[(usize, &pb::RangeRequest)],
        snapshot: &Snapshot,
        start_ts: u64,
        commit_ts: u64,
        table: &RoutingTable,
        deadline: Instant,
    ) -> Result<()> {
        if ranges.is_empty() {
            return Ok(());
        }
        let now = self
            .read_ranges(
                ranges,
                commit_ts,
                start_ts,
                LockRule::Always(WaitPolicy::Die),
                table,
                deadline,
            )
            .await?;
        for (index, range) in ranges {
            let before = &snapshot.ranges[index];
            let after = &now[index];
            if let Some(key) = first_difference(before, after, &KeyRange::of(range).start) {
                return Err(GatewayError::Conflict {
                    key,
                    start_revision: start_ts,
                    conflicting_revision: 0,
                    reason: "a range the transaction read changed before it committed".into(),
                });
            }
        }
        Ok(())
    }

    /// Prewrites every shard's locks: the record key's shard first when the primary is a
    /// record key (D97), so that an attempt meeting another attempt's lock there waits for
    /// it holding no locks of its own; the rest in parallel. `Some(first result)` when
    /// another attempt of the request already committed.
    async fn prewrite(
        &self,
        plan: &LockPlan,
        start_ts: u64,
        write_id: Option<pb::WriteId>,
        deadline: Instant,
    ) -> Result<Option<pb::TxnResponse>> {
        // Holding locks, a transaction must not wait for a younger one's (wait-die, D96).
        let holding_locks = LockRule::WaitDie {
            own_start_ts: start_ts,
        };
        if !plan.primary_is_record() {
            let every_shard: Vec<ShardId> = plan.shards.keys().copied().collect();
            return self
                .prewrite_shards(
                    plan,
                    &every_shard,
                    start_ts,
                    write_id,
                    holding_locks,
                    deadline,
                )
                .await;
        }
        // The first shard's prewrite is all or nothing, so this attempt holds no locks while
        // it waits: it may wait for any lock, another attempt's on the record key included.
        let primary = [plan.primary_shard];
        let holding_none = LockRule::Always(WaitPolicy::Wait);
        if let Some(first) = self
            .prewrite_shards(plan, &primary, start_ts, write_id, holding_none, deadline)
            .await?
        {
            return Ok(Some(first));
        }
        let secondaries: Vec<ShardId> = plan.secondary_shards().collect();
        self.prewrite_shards(
            plan,
            &secondaries,
            start_ts,
            write_id,
            holding_locks,
            deadline,
        )
        .await
    }

    /// Prewrites the locks of `shards` in parallel. The primary's shard carries the write id.
    async fn prewrite_shards(
        &self,
        plan: &LockPlan,
        shards: &[ShardId],
        start_ts: u64,
        write_id: Option<pb::WriteId>,
        rule: LockRule,
        deadline: Instant,
    ) -> Result<Option<pb::TxnResponse>> {
        // Built here rather than in a `map` over the borrowed map's entries, whose closure
        // over references the compiler cannot prove `Send` for every lifetime.
        let mut prewrites = Vec::with_capacity(shards.len());
        for shard in shards {
            let Some(mutations) = plan.shards.get(shard) else {
                continue;
            };
            let primary = *shard == plan.primary_shard;
            let span = tracing::info_span!(
                "gateway.txn.prewrite",
                shard = shard.0,
                keys = mutations.len(),
                primary
            );
            let write_id = write_id.filter(|_| primary);
            prewrites.push(
                self.prewrite_shard(
                    *shard,
                    &plan.primary,
                    mutations,
                    start_ts,
                    write_id,
                    rule,
                    deadline,
                )
                .instrument(span),
            );
        }
        let results: Vec<Result<Option<pb::TxnResponse>>> = stream::iter(prewrites)
            .buffer_unordered(self.config.shards_in_flight_max)
            .collect()
            .await;
        let mut first = None;
        let mut failure: Option<GatewayError> = None;
        for result in results {
            match result {
                Ok(Some(result)) => first = Some(result),
                Ok(None) => {}
                // A conflict says more than any other failure: it is the answer.
                Err(error) => {
                    if failure
                        .as_ref()
                        .is_none_or(|kept| !matches!(kept, GatewayError::Conflict { .. }))
                    {
                        failure = Some(error);
                    }
                }
            }
        }
        match (first, failure) {
            (Some(first), _) => Ok(Some(first)),
            (None, Some(error)) => Err(error),
            (None, None) => Ok(None),
        }
    }

    /// Prewrites `mutations` on `shard`, handling the locks met as `rule` says.
    #[allow(clippy::too_many_arguments)]
    async fn prewrite_shard(
        &self,
        shard: ShardId,
        primary: &[u8],
        mutations: &[node_pb::TxnMutation],
        start_ts: u64,
        write_id: Option<pb::WriteId>,
        rule: LockRule,
        deadline: Instant,
    ) -> Result<Option<pb::TxnResponse>> {
        let answer = self
            .resolver
            .with_locks(deadline, start_ts, rule, || {
                self.router
                    .call(shard, Target::Leader, deadline, |mut client, target| {
                        let request = node_pb::PrewriteRequest {
                            target: Some(target),
                            start_ts,
                            primary: primary.to_vec(),
                            lock_ttl_ms: self.config.lock_ttl_ms,
                            mutations: mutations.to_vec(),
                            write_id,
                        };
                        async move { client.prewrite(request).await }
                    })
            })
            .await;
        match answer {
            Ok(answer) => Ok(answer.first_result),
            Err(error) => Err(conflict_of(error, start_ts)),
        }
    }

    /// Commits the primary's shard: the transaction's outcome. Rolled back meanwhile (its
    /// locks outlived their TTL and someone decided): `Conflict`. No answer: the outcome is
    /// unknown, and the client must retry with the same write id (never `Conflict`, which
    /// would invite a new attempt of a transaction that may have committed).
    async fn commit_primary(
        &self,
        plan: &LockPlan,
        start_ts: u64,
        commit_ts: u64,
        write_id: Option<pb::WriteId>,
        response: &pb::TxnResponse,
        deadline: Instant,
    ) -> Result<()> {
        let committed = commit_shard(
            &self.router,
            plan.primary_shard,
            plan.keys_of(plan.primary_shard),
            start_ts,
            commit_ts,
            write_id,
            // Remembered under the write id, so only with one.
            write_id.map(|_| response.clone()),
            deadline,
        )
        .await;
        match committed {
            Ok(()) => Ok(()),
            Err(error) if error.rolled_back().is_some() => {
                self.metrics.conflict("commit");
                self.rollback(plan, start_ts).await;
                Err(GatewayError::Conflict {
                    key: plan.primary.clone(),
                    start_revision: start_ts,
                    conflicting_revision: 0,
                    reason: "the transaction was rolled back by another party (its locks \
                             outlived txn.lock_ttl_ms)"
                        .into(),
                })
            }
            Err(error) => {
                self.metrics.outcome_unknown();
                tracing::warn!(
                    start_ts,
                    commit_ts,
                    %error,
                    "the primary's commit got no answer: outcome unknown"
                );
                Err(GatewayError::CommitOutcomeUnknown {
                    reason: error.to_string(),
                })
            }
        }
    }

    /// Commits the other shards in the background: the transaction is decided, and a reader
    /// that meets one of these locks first commits it forward through the primary.
    fn commit_secondaries(&self, plan: LockPlan, start_ts: u64, commit_ts: u64) {
        let router = self.router.clone();
        let in_flight_max = self.config.shards_in_flight_max;
        let deadline = Instant::now() + router.request_timeout();
        let work = async move {
            let plan = &plan;
            let router = &router;
            stream::iter(plan.secondary_shards())
                .map(|shard| async move {
                    let committed = commit_shard(
                        router,
                        shard,
                        plan.keys_of(shard),
                        start_ts,
                        commit_ts,
                        None,
                        None,
                        deadline,
                    )
                    .await;
                    if let Err(error) = committed {
                        tracing::warn!(
                            %shard,
                            start_ts,
                            %error,
                            "committing a secondary shard failed; readers will resolve its locks"
                        );
                    }
                })
                .buffer_unordered(in_flight_max)
                .collect::<Vec<()>>()
                .await;
        };
        tokio::spawn(work.in_current_span());
    }

    /// Rolls the transaction back on every shard it prewrote (or tried to), in parallel,
    /// best effort: what stays behind expires and is resolved by readers or the scan.
    async fn rollback(&self, plan: &LockPlan, start_ts: u64) {
        let deadline = Instant::now() + self.router.request_timeout();
        stream::iter(plan.shards.keys().copied())
            .map(|shard| async move {
                let keys = plan.keys_of(shard);
                let rolled = self
                    .router
                    .call(shard, Target::Leader, deadline, |mut client, target| {
                        let request = node_pb::RollbackRequest {
                            target: Some(target),
                            start_ts,
                            keys: keys.clone(),
                        };
                        async move { client.rollback(request).await }
                    })
                    .await;
                if let Err(error) = rolled {
                    tracing::warn!(%shard, start_ts, %error, "rolling back a shard failed; its locks will expire");
                }
            })
            .buffer_unordered(self.config.shards_in_flight_max)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Commits one shard's keys of the transaction.
#[allow(clippy::too_many_arguments)]
async fn commit_shard(
    router: &Router,
    shard: ShardId,
    keys: Vec<Vec<u8>>,
    start_ts: u64,
    commit_ts: u64,
    write_id: Option<pb::WriteId>,
    result: Option<pb::TxnResponse>,
    deadline: Instant,
) -> Result<()> {
    let span = tracing::info_span!(
        "gateway.txn.commit",
        shard = shard.0,
        keys = keys.len(),
        primary = write_id.is_some()
    );
    router
        .call(shard, Target::Leader, deadline, |mut client, target| {
            let request = node_pb::CommitRequest {
                target: Some(target),
                start_ts,
                commit_ts,
                keys: keys.clone(),
                write_id,
                result: result.clone(),
            };
            async move { client.commit(request).await }
        })
        .instrument(span)
        .await?;
    Ok(())
}

/// `error` with the client's first key where it named Cairn's record key (D65): the client
/// can neither name nor read that key, so it would learn nothing from it.
fn without_record_key(error: GatewayError, txn: &pb::TxnRequest) -> GatewayError {
    match error {
        GatewayError::Conflict {
            key,
            start_revision,
            conflicting_revision,
            reason,
        } if cairn_types::reserved::is_reserved(&key) => GatewayError::Conflict {
            key: point_keys(txn)
                .first()
                .map(|key| key.to_vec())
                .unwrap_or_default(),
            start_revision,
            conflicting_revision,
            reason,
        },
        other => other,
    }
}

/// A prewrite's refusal as the client sees it: a newer version or a rollback of this
/// transaction is a `Conflict`; anything else passes.
fn conflict_of(error: GatewayError, start_ts: u64) -> GatewayError {
    if let Some(conflict) = error.as_conflict() {
        return conflict;
    }
    if let Some(rolled) = error.rolled_back() {
        return GatewayError::Conflict {
            key: rolled.key,
            start_revision: start_ts,
            conflicting_revision: 0,
            reason: "the transaction was rolled back by another party before its prewrite".into(),
        };
    }
    error
}
