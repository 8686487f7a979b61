//! Reads that resolve the locks they meet: a point read of one key and a range over every
//! shard, at a revision, for the public Range and for a transaction's read phase and range
//! re-validation. A read waits for (or resolves) a lock as its caller's policy says, and
//! is sent again.

use crate::error::{GatewayError, Result};
use crate::router::{Router, Target};
use crate::txn::resolution::LockRule;
use crate::txn::resolver::LockResolver;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_op::Op;
use cairn_types::ShardId;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::Instant;

pub struct Reads {
    pub router: Arc<Router>,
    pub resolver: Arc<LockResolver>,
    pub fanout_max: usize,
}

impl Reads {
    /// `key` as a read at `revision` sees it (the leader serves reads at a revision), its
    /// own transaction's locks (`own_start_ts`, 0: none) skipped.
    pub async fn get_at(
        &self,
        shard: ShardId,
        key: &[u8],
        revision: u64,
        own_start_ts: u64,
        deadline: Instant,
    ) -> Result<Option<pb::KeyValue>> {
        let result = self
            .resolver
            .with_locks(
                deadline,
                own_start_ts,
                LockRule::Always(crate::txn::resolution::WaitPolicy::Wait),
                || {
                    self.router
                        .call_op(shard, Target::Leader, deadline, |target| {
                            Op::Get(node_pb::ShardGetRequest {
                                target: Some(target),
                                request: Some(pb::GetRequest {
                                    key: key.to_vec(),
                                    revision,
                                    ..Default::default()
                                }),
                                own_start_ts,
                            })
                        })
                },
            )
            .await?;
        match result {
            ItemResult::Get(response) => Ok(response.kv),
            other => Err(GatewayError::MismatchedResult {
                op: "get",
                result: crate::kv_service::kind_of(&other),
            }),
        }
    }

    /// One page of `range` from every shard of `shard_count`, each shard's page sorted and
    /// at most the range's limit, read by `target`. Locks met are handled as `rule` says.
    #[allow(clippy::too_many_arguments)]
    pub async fn range_pages(
        &self,
        range: &pb::RangeRequest,
        shard_count: u32,
        target: Target,
        own_start_ts: u64,
        rule: LockRule,
        deadline: Instant,
    ) -> Result<Vec<pb::RangeResponse>> {
        stream::iter((0..u64::from(shard_count)).map(ShardId))
            .map(|shard| async move {
                self.resolver
                    .with_locks(deadline, own_start_ts, rule, || {
                        self.router
                            .call(shard, target, deadline, |mut client, shard_target| {
                                let request = node_pb::ShardRangeRequest {
                                    target: Some(shard_target),
                                    request: Some(range.clone()),
                                    own_start_ts,
                                };
                                async move { client.range(request).await }
                            })
                    })
                    .await
            })
            .buffer_unordered(self.fanout_max)
            .try_collect()
            .await
    }
}
