//! The per-shard KV service (`cairn.node.v1.ShardKv`) that gateways call.

use crate::batch::{BatchContext, BatchStream};
use crate::error::{NodeError, Result};
use crate::node::Node;
use crate::shard_call::{ShardCall, WriteRequest};
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
    node: Arc<Node>,
    batch: BatchContext,
}

impl KvService {
    pub fn new(node: Arc<Node>, batch: BatchContext) -> Self {
        Self { node, batch }
    }

    /// Where every shard request arrives: checks its size, converts it (both parts must be
    /// set), finds the replica and checks the routing epoch.
    fn arrive<M, R>(&self, message: M) -> Result<(Arc<ShardReplica>, R)>
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
        let proposed_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        match replica.write_op(write_id, op, proposed_at_ms).await? {
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

/// Runs a blocking RocksDB read off the async workers.
async fn read_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| NodeError::Internal(format!("read task failed: {join}")))?
}

fn storage_error(shard: ShardId) -> impl Fn(cairn_raft::StorageError) -> NodeError {
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
        let (replica, get_request): (_, pb::GetRequest) = self.arrive(request.into_inner())?;
        let shard = replica.shard();
        let get = self
            .node
            .validator
            .get(&get_request)
            .map_err(NodeError::from)?;
        if get_request.revision != 0 {
            let at = Revision(get_request.revision);
            self.before_read_at(&replica, at).await?;
            let kv = KvView::new(replica.db(), shard)
                .get_at(&get.key, at, get.keys_only)
                .map_err(storage_error(shard))?;
            replica.check_compaction(at).map_err(NodeError::from)?;
            return Ok(Response::new(GetResult { revision: at, kv }.into()));
        }
        self.before_read(&replica, get_request.consistency).await?;
        // A point read is two lookups, almost always in the memtable or the block cache: it
        // runs on this task, because a hop to the blocking pool (two thread wake-ups) costs
        // more than the read. A block-cache miss holds this worker for one disk read; ranges,
        // which may scan, still go to the blocking pool.
        let db = replica.db();
        let snapshot = db.snapshot();
        let revision = read_revision(db, Some(&snapshot), shard).map_err(storage_error(shard))?;
        let kv = KvView::with_snapshot(db, shard, &snapshot)
            .get(&get.key, get.keys_only)
            .map_err(storage_error(shard))?;
        drop(snapshot);
        Ok(Response::new(GetResult { revision, kv }.into()))
    }

    #[tracing::instrument(name = "node.range", skip_all, fields(shard))]
    async fn range(
        &self,
        request: Request<node_pb::ShardRangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let (replica, range_request): (_, pb::RangeRequest) = self.arrive(request.into_inner())?;
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
                KvView::new(&db, shard)
                    .range_at(&range, at, at)
                    .map_err(storage_error(shard))
            })
            .await?;
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
                .range(&range, revision)
                .map_err(storage_error(shard))
        })
        .await?;
        Ok(Response::new(result.into()))
    }

    // Two-phase commit (issue 16): the contract is in node.proto; the implementation lands
    // with the shard's transaction commands.
    async fn prewrite(
        &self,
        _request: Request<node_pb::PrewriteRequest>,
    ) -> Result<Response<node_pb::PrewriteResponse>, Status> {
        Err(Status::unimplemented("prewrite: not implemented yet"))
    }

    async fn commit(
        &self,
        _request: Request<node_pb::CommitRequest>,
    ) -> Result<Response<node_pb::CommitResponse>, Status> {
        Err(Status::unimplemented("commit: not implemented yet"))
    }

    async fn rollback(
        &self,
        _request: Request<node_pb::RollbackRequest>,
    ) -> Result<Response<node_pb::RollbackResponse>, Status> {
        Err(Status::unimplemented("rollback: not implemented yet"))
    }

    async fn check_txn_status(
        &self,
        _request: Request<node_pb::CheckTxnStatusRequest>,
    ) -> Result<Response<node_pb::CheckTxnStatusResponse>, Status> {
        Err(Status::unimplemented("check_txn_status: not implemented yet"))
    }

    async fn resolve_locks(
        &self,
        _request: Request<node_pb::ResolveLocksRequest>,
    ) -> Result<Response<node_pb::ResolveLocksResponse>, Status> {
        Err(Status::unimplemented("resolve_locks: not implemented yet"))
    }

    async fn scan_locks(
        &self,
        _request: Request<node_pb::ScanLocksRequest>,
    ) -> Result<Response<node_pb::ScanLocksResponse>, Status> {
        Err(Status::unimplemented("scan_locks: not implemented yet"))
    }
}
