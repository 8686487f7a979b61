//! The per-shard KV service (`cairn.node.v1.ShardKv`) that gateways call.

use crate::batch::{BatchContext, BatchStream};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::shard_call::{ShardCall, WriteRequest};
use crate::txn_metrics::{LockMetBy, TxnCall};
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::shard_kv_server::ShardKv;
use cairn_raft::command::{GetResult, WriteId, WriteOp, WriteResult};
use cairn_raft::kv::KvView;
use cairn_raft::replica::ShardReplica;
use cairn_raft::state_machine::read_revision;
use cairn_raft::transport::ReplicaDirectory;
use cairn_types::{Revision, ShardId};
use prost::Message;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub struct KvService {
    pub(crate) node: Arc<Node>,
    batch: BatchContext,
}

impl KvService {
    pub fn new(node: Arc<Node>, batch: BatchContext) -> Self {
        Self { node, batch }
    }

    /// Where every shard request arrives: checks its size, converts it (both parts must be
    /// set), finds the replica and checks the routing epoch.
    pub(crate) fn arrive<M, R>(&self, message: M) -> Result<(Arc<ShardReplica>, R)>
    where
        M: Message + TryInto<ShardCall<R>, Error = NodeError>,
    {
        self.node
            .validator
            .limits
            .check_request_bytes(message.encoded_len())
            .map_err(|limit| NodeError::InvalidRequest(limit.into()))?;
        let call: ShardCall<R> = message.try_into()?;
        let shard = call.shard;
        tracing::Span::current().record("shard", shard.0);
        let replica = self
            .node
            .replica(shard)
            .ok_or(NodeError::UnknownShard(shard))?;
        if call.epoch != 0 {
            let current = replica.epoch();
            if call.epoch < current {
                return Err(NodeError::StaleEpoch {
                    shard,
                    requested: call.epoch,
                    current,
                });
            }
        }
        Ok((replica, call.request))
    }

    /// The pipeline of every write (put, delete, txn): arrive, become a command, be applied,
    /// and answer with the result of the request's kind.
    async fn serve_write<M, R>(&self, message: M) -> Result<R::Response>
    where
        M: Message + TryInto<ShardCall<R>, Error = NodeError>,
        R: WriteRequest,
    {
        let (replica, request) = self.arrive::<M, R>(message)?;
        let (write_id, op) = request.command(&self.node.validator)?;
        R::answer(self.write(&replica, write_id, op).await?).ok_or(NodeError::WriteIdReused)
    }

    async fn write(
        &self,
        replica: &ShardReplica,
        write_id: Option<WriteId>,
        op: WriteOp,
    ) -> Result<WriteResult> {
        match replica.write_op(write_id, op, now_ms()).await? {
            WriteResult::WindowExceeded { oldest_remembered } => {
                let write_id = write_id.expect("only writes with an id can exceed the window");
                Err(NodeError::WriteWindowExceeded {
                    client_id: write_id.client.0,
                    sequence: write_id.sequence,
                    oldest_remembered,
                })
            }
            WriteResult::AppliedResultNotRetained => Err(NodeError::AppliedResultNotRetained),
            WriteResult::Refused(refusal) => Err(NodeError::Refused(refusal)),
            WriteResult::TxnRefused(refusal) => {
                self.node.txn_counters.lock_met(LockMetBy::Write);
                Err(NodeError::Txn(refusal))
            }
            result => Ok(result),
        }
    }

    async fn before_read(&self, replica: &ShardReplica, consistency: i32) -> Result<()> {
        match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Serializable) => Ok(()),
            Ok(pb::Consistency::Linearizable) => Ok(replica.linearizable_barrier().await?),
            Err(_) => Err(NodeError::InvalidRequest(
                cairn_raft::convert::InvalidRequest::Field {
                    field: "consistency",
                    reason: format!("unknown value {consistency}"),
                },
            )),
        }
    }
}

impl KvService {
    /// Before a read at revision `at`: refuses a revision not handed out yet or already
    /// compacted, then on the leader waits until no write at or below `at` can still appear.
    async fn before_read_at(&self, replica: &ShardReplica, at: Revision) -> Result<()> {
        let shard = replica.shard();
        let db = replica.db().clone();
        replica
            .check_not_future(at, || {
                read_revision(&db, None, shard)
                    .map_err(|source| cairn_raft::replica::ReplicaError::Storage { shard, source })
            })
            .await?;
        replica.check_compaction(at)?;
        Ok(replica.read_barrier_at(at).await?)
    }
}

/// This node's wall clock in milliseconds since the Unix epoch: a proposing leader's time,
/// carried in its commands.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A read stopped by a transaction's lock (counted as a lock met by a read).
fn read_locked(node: &Node, info: cairn_mvcc::LockInfo) -> NodeError {
    node.txn_counters.lock_met(LockMetBy::Read);
    NodeError::Txn(cairn_mvcc::TxnError::KeyLocked(info))
}

/// `own_start_ts` of a shard read: 0 is none.
fn own_start(own_start_ts: u64) -> Option<Revision> {
    (own_start_ts != 0).then_some(Revision(own_start_ts))
}

/// Runs a blocking RocksDB read off the async workers.
pub(crate) async fn read_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| NodeError::Internal(format!("read task failed: {join}")))?
}

pub(crate) fn storage_error(shard: ShardId) -> impl Fn(cairn_raft::StorageError) -> NodeError {
    move |source| NodeError::Replica(cairn_raft::replica::ReplicaError::Storage { shard, source })
}

#[tonic::async_trait]
impl ShardKv for KvService {
    type BatchStream = BatchStream;

    async fn batch(
        &self,
        request: Request<Streaming<node_pb::BatchRequest>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        Ok(Response::new(crate::batch::start(
            self.clone(),
            &self.batch,
            request.into_inner(),
        )))
    }

    #[tracing::instrument(name = "node.put", skip_all, fields(shard))]
    async fn put(
        &self,
        request: Request<node_pb::ShardPutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(
            self.serve_write::<_, pb::PutRequest>(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(name = "node.delete", skip_all, fields(shard))]
    async fn delete(
        &self,
        request: Request<node_pb::ShardDeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        Ok(Response::new(
            self.serve_write::<_, pb::DeleteRequest>(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(name = "node.txn", skip_all, fields(shard))]
    async fn txn(
        &self,
        request: Request<node_pb::ShardTxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(
            self.serve_write::<_, pb::TxnRequest>(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(name = "node.get", skip_all, fields(shard))]
    async fn get(
        &self,
        request: Request<node_pb::ShardGetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        let own = own_start(request.own_start_ts);
        let (replica, get_request): (_, pb::GetRequest) = self.arrive(request)?;
        let shard = replica.shard();
        let get = self
            .node
            .validator
            .get(&get_request)
            .map_err(NodeError::from)?;
        if get_request.revision != 0 {
            let at = Revision(get_request.revision);
            self.before_read_at(&replica, at).await?;
            let db = replica.db();
            let snapshot = db.snapshot();
            let kv = KvView::with_snapshot(db, shard, &snapshot)
                .get_checked(&get.key, at, get.keys_only, own)
                .map_err(storage_error(shard))?
                .map_err(|info| read_locked(&self.node, info))?;
            drop(snapshot);
            replica.check_compaction(at).map_err(NodeError::from)?;
            return Ok(Response::new(GetResult { revision: at, kv }.into()));
        }
        self.before_read(&replica, get_request.consistency).await?;
        // A point read is a lock lookup and a seek, almost always in the memtable or the
        // block cache: it runs on this task, because a hop to the blocking pool (two thread
        // wake-ups) costs more than the read. A block-cache miss holds this worker for one
        // disk read; ranges, which may scan, still go to the blocking pool. At the latest
        // revision every put or delete lock stops the read (D94): its transaction may have
        // committed elsewhere already.
        let db = replica.db();
        let snapshot = db.snapshot();
        let revision = read_revision(db, Some(&snapshot), shard).map_err(storage_error(shard))?;
        let kv = KvView::with_snapshot(db, shard, &snapshot)
            .get_checked(&get.key, Revision::LATEST, get.keys_only, own)
            .map_err(storage_error(shard))?
            .map_err(|info| read_locked(&self.node, info))?;
        drop(snapshot);
        Ok(Response::new(GetResult { revision, kv }.into()))
    }

    #[tracing::instrument(name = "node.range", skip_all, fields(shard))]
    async fn range(
        &self,
        request: Request<node_pb::ShardRangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        let own = own_start(request.own_start_ts);
        let (replica, range_request): (_, pb::RangeRequest) = self.arrive(request)?;
        let shard = replica.shard();
        let range = self
            .node
            .validator
            .range(&range_request)
            .map_err(NodeError::from)?;
        if range_request.revision != 0 {
            let at = Revision(range_request.revision);
            self.before_read_at(&replica, at).await?;
            let db = replica.db().clone();
            let result = read_blocking(move || {
                let snapshot = db.snapshot();
                KvView::with_snapshot(&db, shard, &snapshot)
                    .range_checked(&range, at, at, own)
                    .map_err(storage_error(shard))
            })
            .await?
            .map_err(|info| read_locked(&self.node, info))?;
            replica.check_compaction(at).map_err(NodeError::from)?;
            return Ok(Response::new(result.into()));
        }
        self.before_read(&replica, range_request.consistency)
            .await?;
        let db = replica.db().clone();
        let result = read_blocking(move || {
            let snapshot = db.snapshot();
            let revision =
                read_revision(&db, Some(&snapshot), shard).map_err(storage_error(shard))?;
            KvView::with_snapshot(&db, shard, &snapshot)
                .range_checked(&range, Revision::LATEST, revision, own)
                .map_err(storage_error(shard))
        })
        .await?
        .map_err(|info| read_locked(&self.node, info))?;
        Ok(Response::new(result.into()))
    }

    // Two-phase commit (issue 16, D93): `crate::txn_service`.
    #[tracing::instrument(name = "node.prewrite", skip_all, fields(shard))]
    async fn prewrite(
        &self,
        request: Request<node_pb::PrewriteRequest>,
    ) -> Result<Response<node_pb::PrewriteResponse>, Status> {
        let answer = self.serve_prewrite(request.into_inner()).await;
        Ok(Response::new(self.counted(TxnCall::Prewrite, answer)?))
    }

    #[tracing::instrument(name = "node.commit", skip_all, fields(shard))]
    async fn commit(
        &self,
        request: Request<node_pb::CommitRequest>,
    ) -> Result<Response<node_pb::CommitResponse>, Status> {
        let answer = self.serve_commit(request.into_inner()).await;
        Ok(Response::new(self.counted(TxnCall::Commit, answer)?))
    }

    #[tracing::instrument(name = "node.rollback", skip_all, fields(shard))]
    async fn rollback(
        &self,
        request: Request<node_pb::RollbackRequest>,
    ) -> Result<Response<node_pb::RollbackResponse>, Status> {
        let answer = self.serve_rollback(request.into_inner()).await;
        Ok(Response::new(self.counted(TxnCall::Rollback, answer)?))
    }

    #[tracing::instrument(name = "node.check_txn_status", skip_all, fields(shard))]
    async fn check_txn_status(
        &self,
        request: Request<node_pb::CheckTxnStatusRequest>,
    ) -> Result<Response<node_pb::CheckTxnStatusResponse>, Status> {
        let answer = self.serve_check_txn_status(request.into_inner()).await;
        Ok(Response::new(
            self.counted(TxnCall::CheckTxnStatus, answer)?,
        ))
    }

    #[tracing::instrument(name = "node.resolve_locks", skip_all, fields(shard))]
    async fn resolve_locks(
        &self,
        request: Request<node_pb::ResolveLocksRequest>,
    ) -> Result<Response<node_pb::ResolveLocksResponse>, Status> {
        let answer = self.serve_resolve_locks(request.into_inner()).await;
        Ok(Response::new(self.counted(TxnCall::ResolveLocks, answer)?))
    }

    #[tracing::instrument(name = "node.scan_locks", skip_all, fields(shard))]
    async fn scan_locks(
        &self,
        request: Request<node_pb::ScanLocksRequest>,
    ) -> Result<Response<node_pb::ScanLocksResponse>, Status> {
        let answer = self.serve_scan_locks(request.into_inner()).await;
        Ok(Response::new(self.counted(TxnCall::ScanLocks, answer)?))
    }
}
