//! The public KV service (`cairn.kv.v1.KV`): routes each request to its shard, gives writes
//! without a write id one of the gateway's, refuses cross-shard transactions, and fans
//! ranges out over every shard at one snapshot revision from the timestamp oracle, merging
//! pages in key order. `Compact` goes to the coordinator.

use crate::router::{Router, Target};
use crate::write_ids::{InFlight, WriteIds};
use cairn_coordinator_client::{CoordinatorClient, TimestampClient};
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_server::Kv;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_op::Op;
use cairn_types::ShardId;
use futures::stream::{self, StreamExt, TryStreamExt};
use prost::Message;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Code, Request, Response, Status};

pub struct KvService {
    router: Arc<Router>,
    write_ids: Arc<WriteIds>,
    range_fanout_max: usize,
    range_keys_max: u64,
    /// Snapshot revisions for ranges.
    timestamps: TimestampClient,
    coordinator: tokio::sync::Mutex<CoordinatorClient>,
}

impl KvService {
    pub fn new(
        router: Arc<Router>,
        range_fanout_max: usize,
        range_keys_max: u64,
        timestamps: TimestampClient,
        coordinator: CoordinatorClient,
    ) -> Self {
        Self {
            router,
            write_ids: WriteIds::new(),
            range_fanout_max,
            range_keys_max,
            timestamps,
            coordinator: tokio::sync::Mutex::new(coordinator),
        }
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

    async fn shard_of(&self, key: &[u8]) -> Result<ShardId, Status> {
        if key.is_empty() {
            return Err(invalid("key", "must not be empty"));
        }
        let table = self
            .router
            .maps
            .table(self.router.request_timeout())
            .await
            .ok_or_else(|| Status::unavailable("no shard map from the coordinators yet"))?;
        Ok(table.shard_for_key(key))
    }

    async fn shard_count(&self) -> Result<u32, Status> {
        let table = self
            .router
            .maps
            .table(self.router.request_timeout())
            .await
            .ok_or_else(|| Status::unavailable("no shard map from the coordinators yet"))?;
        Ok(table.shard_count)
    }
}

fn invalid(field: &str, reason: &str) -> Status {
    let detail = pb::ErrorDetail {
        kind: Some(pb::error_detail::Kind::InvalidArgument(
            pb::InvalidArgument {
                field: field.into(),
                reason: reason.into(),
            },
        )),
    };
    Status::with_details(
        Code::InvalidArgument,
        format!("invalid {field}: {reason}"),
        detail.encode_to_vec().into(),
    )
}

/// A node answered an op with the result of another kind: a bug, not a retriable error.
fn mismatched(op: &str, result: &ItemResult) -> Status {
    let kind = match result {
        ItemResult::Put(_) => "put",
        ItemResult::Get(_) => "get",
        ItemResult::Delete(_) => "delete",
        ItemResult::Txn(_) => "txn",
        ItemResult::Error(_) => "error",
    };
    Status::internal(format!("the node answered a {op} with a {kind} result"))
}

/// Reads at a revision are served by the leader (only it knows the writes in flight).
fn target_for(consistency: i32, revision: u64) -> Target {
    if consistency == pb::Consistency::Serializable as i32 && revision == 0 {
        Target::AnyReplica
    } else {
        Target::Leader
    }
}

/// Every key a transaction touches, or an error for an op that spans the key space.
fn txn_keys(request: &pb::TxnRequest) -> Result<Vec<&[u8]>, Status> {
    let mut keys: Vec<&[u8]> = request.compare.iter().map(|c| c.key.as_slice()).collect();
    for op in request.success.iter().chain(&request.failure) {
        match &op.request {
            Some(pb::request_op::Request::Put(put)) => keys.push(&put.key),
            Some(pb::request_op::Request::Get(get)) => keys.push(&get.key),
            Some(pb::request_op::Request::Delete(delete)) => keys.push(&delete.key),
            Some(pb::request_op::Request::Range(_)) => return Err(invalid("txn", "a range inside a transaction would span every shard; range outside the transaction")),
            None => return Err(invalid("txn", "an op has no request set")),
        }
    }
    Ok(keys)
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(name = "gateway.put", skip_all, fields(shard))]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let mut put = request.into_inner();
        let shard = self.shard_of(&put.key).await?;
        tracing::Span::current().record("shard", shard.0);
        let _in_flight = self.assign_write_id(&mut put.write_id);
        let result = self
            .router
            .call_op(shard, Target::Leader, self.deadline(), |target| {
                Op::Put(node_pb::ShardPutRequest {
                    target: Some(target),
                    request: Some(put.clone()),
                })
            })
            .await?;
        match result {
            ItemResult::Put(response) => Ok(Response::new(response)),
            other => Err(mismatched("put", &other)),
        }
    }

    #[tracing::instrument(name = "gateway.delete", skip_all, fields(shard))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let mut delete = request.into_inner();
        let shard = self.shard_of(&delete.key).await?;
        tracing::Span::current().record("shard", shard.0);
        let _in_flight = self.assign_write_id(&mut delete.write_id);
        let result = self
            .router
            .call_op(shard, Target::Leader, self.deadline(), |target| {
                Op::Delete(node_pb::ShardDeleteRequest {
                    target: Some(target),
                    request: Some(delete.clone()),
                })
            })
            .await?;
        match result {
            ItemResult::Delete(response) => Ok(Response::new(response)),
            other => Err(mismatched("delete", &other)),
        }
    }

    #[tracing::instrument(name = "gateway.get", skip_all, fields(shard))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let get = request.into_inner();
        let shard = self.shard_of(&get.key).await?;
        tracing::Span::current().record("shard", shard.0);
        let result = self
            .router
            .call_op(
                shard,
                target_for(get.consistency, get.revision),
                self.deadline(),
                |target| {
                    Op::Get(node_pb::ShardGetRequest {
                        target: Some(target),
                        request: Some(get.clone()),
                    })
                },
            )
            .await?;
        match result {
            ItemResult::Get(response) => Ok(Response::new(response)),
            other => Err(mismatched("get", &other)),
        }
    }

    #[tracing::instrument(name = "gateway.txn", skip_all, fields(shard))]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let mut txn = request.into_inner();
        let table = self
            .router
            .maps
            .table(self.router.request_timeout())
            .await
            .ok_or_else(|| Status::unavailable("no shard map from the coordinators yet"))?;
        let keys = txn_keys(&txn)?;
        let shards: BTreeSet<ShardId> = keys.iter().map(|key| table.shard_for_key(key)).collect();
        let shard = match shards.len() {
            0 => return Err(invalid("txn", "a transaction needs at least one key")),
            1 => *shards.first().expect("one shard"),
            _ => {
                let detail = pb::ErrorDetail {
                    kind: Some(pb::error_detail::Kind::CrossShardTxn(pb::CrossShardTxn {
                        shard_ids: shards.iter().map(|s| s.0).collect(),
                    })),
                };
                return Err(Status::with_details(
                    Code::InvalidArgument,
                    format!("the transaction's keys live in {} shards; transactions must stay within one shard", shards.len()),
                    detail.encode_to_vec().into(),
                ));
            }
        };
        tracing::Span::current().record("shard", shard.0);
        let _in_flight = self.assign_write_id(&mut txn.write_id);
        let result = self
            .router
            .call_op(shard, Target::Leader, self.deadline(), |target| {
                Op::Txn(node_pb::ShardTxnRequest {
                    target: Some(target),
                    request: Some(txn.clone()),
                })
            })
            .await?;
        match result {
            ItemResult::Txn(response) => Ok(Response::new(response)),
            other => Err(mismatched("txn", &other)),
        }
    }

    #[tracing::instrument(name = "gateway.range", skip_all, fields(shards))]
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let mut range = request.into_inner();
        if range.limit > self.range_keys_max {
            let detail = pb::ErrorDetail {
                kind: Some(pb::error_detail::Kind::LimitExceeded(pb::LimitExceeded {
                    limit: "range_keys_max".into(),
                    max: self.range_keys_max,
                    actual: range.limit,
                })),
            };
            return Err(Status::with_details(
                Code::InvalidArgument,
                format!(
                    "range_keys_max exceeded: {} > {}",
                    range.limit, self.range_keys_max
                ),
                detail.encode_to_vec().into(),
            ));
        }
        if range.limit == 0 {
            range.limit = self.range_keys_max;
        }
        let limit = range.limit as usize;
        let shard_count = self.shard_count().await?;
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
                .map_err(|error| Status::unavailable(error.to_string()))?;
            range.revision = revision.0;
        }
        let target = target_for(range.consistency, range.revision);
        // Keys are hash-partitioned, so any shard may hold keys of any range: ask them all.
        let pages: Vec<pb::RangeResponse> = stream::iter((0..u64::from(shard_count)).map(ShardId))
            .map(|shard| {
                let range = range.clone();
                let router = self.router.clone();
                async move {
                    router
                        .call(shard, target, deadline, |mut client, shard_target| {
                            let request = node_pb::ShardRangeRequest {
                                target: Some(shard_target),
                                request: Some(range.clone()),
                            };
                            async move { client.range(request).await }
                        })
                        .await
                }
            })
            .buffer_unordered(self.range_fanout_max)
            .try_collect()
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
        let revision = request.into_inner().revision;
        if revision == 0 {
            return Err(invalid("revision", "must be at least 1"));
        }
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
        return pb::RangeResponse {
            revision,
            count: pages.iter().map(|p| p.count).sum(),
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

    #[test]
    fn ranges_inside_transactions_are_refused() {
        let txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::Range(pb::RangeRequest::default())),
            }],
            ..Default::default()
        };
        assert_eq!(txn_keys(&txn).unwrap_err().code(), Code::InvalidArgument);
    }
}
