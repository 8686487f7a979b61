//! The server side of the Raft transport: routes each incoming Raft message to the named
//! shard's replica on this node.

use crate::network::{decode_payload, encode_payload, ENCODING_POSTCARD};
use crate::replica::ShardReplica;
use crate::snapshot_builder::SnapshotFile;
use crate::type_config::{ShardRaftConfig, SnapshotMeta, Vote};
use cairn_proto::raft::v1 as pb;
use cairn_proto::raft::v1::raft_transport_server::RaftTransport;
use cairn_types::{NodeId, ShardId};
use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest,
};
use openraft::storage::Snapshot;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

type C = ShardRaftConfig;

/// How the transport finds this node's replicas.
pub trait ReplicaDirectory: Send + Sync + 'static {
    fn node_id(&self) -> NodeId;
    fn replica(&self, shard: ShardId) -> Option<Arc<ShardReplica>>;
}

pub struct RaftTransportService<D> {
    directory: Arc<D>,
    /// Bounds concurrent snapshot receives (each holds a file and disk bandwidth).
    snapshot_receives: Arc<Semaphore>,
}

impl<D: ReplicaDirectory> RaftTransportService<D> {
    pub fn new(directory: Arc<D>, concurrent_snapshot_receives_max: usize) -> Self {
        Self {
            directory,
            snapshot_receives: Arc::new(Semaphore::new(concurrent_snapshot_receives_max)),
        }
    }

    fn replica(&self, shard: u64, to_node: u64) -> Result<Arc<ShardReplica>, Status> {
        // The node's server checks the destination headers (and the cluster) before this;
        // the envelope names the node too, so a message is refused even without headers.
        let me = cairn_proto::addressing::Identity {
            node_id: self.directory.node_id().0,
            cluster_id: String::new(),
        };
        cairn_proto::addressing::check(&tonic::metadata::MetadataMap::new(), to_node, &me)?;
        self.directory.replica(ShardId(shard)).ok_or_else(|| {
            // Not hosted here (yet): the sender backs off (see network.rs).
            cairn_proto::status::with_detail(
                tonic::Code::NotFound,
                format!(
                    "shard-{shard} has no replica on {}",
                    self.directory.node_id()
                ),
                cairn_proto::kv::v1::error_detail::Kind::UnknownShard(
                    cairn_proto::kv::v1::UnknownShard { shard_id: shard },
                ),
            )
        })
    }

    fn open<T: DeserializeOwned>(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<(Arc<ShardReplica>, T), Status> {
        let request = request.into_inner();
        let replica = self.replica(request.shard_id, request.to_node_id)?;
        let message =
            decode_payload(request.encoding, &request.payload).map_err(Status::invalid_argument)?;
        Ok((replica, message))
    }
}

fn reply<T: serde::Serialize>(value: &T) -> Response<pb::RaftReply> {
    Response::new(pb::RaftReply {
        encoding: ENCODING_POSTCARD,
        payload: encode_payload(value).into(),
    })
}

#[tonic::async_trait]
impl<D: ReplicaDirectory> RaftTransport for RaftTransportService<D> {
    async fn append_entries(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let (replica, message): (_, AppendEntriesRequest<C>) = self.open(request)?;
        Ok(reply(&replica.raft().append_entries(message).await))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let (replica, message): (_, VoteRequest<C>) = self.open(request)?;
        if let Some(remaining) = replica.refuses_votes(message.leadership_transfer) {
            // The candidate counts an error as a vote not granted and tries again later.
            return Err(Status::unavailable(format!(
                "{} on {} reopened recently and votes again in {remaining:?} (a lease it may have granted before the restart must run out first)",
                replica.shard(),
                self.directory.node_id()
            )));
        }
        Ok(reply(&replica.raft().vote(message).await))
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let (replica, message): (_, TransferLeaderRequest<C>) = self.open(request)?;
        let result: Result<TransferLeaderResponse<C>, RaftError<C>> = replica
            .raft()
            .handle_transfer_leader(message)
            .await
            .map_err(RaftError::Fatal);
        Ok(reply(&result))
    }

    async fn read_index(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let request = request.into_inner();
        let replica = self.replica(request.shard_id, request.to_node_id)?;
        Ok(Response::new(pb::RaftReply {
            encoding: ENCODING_POSTCARD,
            payload: replica.serve_read_index().await.into(),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let replica = self.replica(first.shard_id, first.to_node_id)?;
        let (vote, meta): (Vote, SnapshotMeta) =
            decode_payload(first.encoding, &first.header).map_err(Status::invalid_argument)?;
        let _permit = self
            .snapshot_receives
            .clone()
            .try_acquire_owned()
            .map_err(|_| Status::resource_exhausted("too many snapshot transfers in progress"))?;

        let dir = replica.snapshot_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("snapshot dir: {e}")))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("incoming-{nanos}.tmp"));
        let received = receive_file(&path, first, &mut chunks).await;
        let result = match received {
            Ok(bytes) => {
                tracing::info!(shard = %replica.shard(), bytes, "received snapshot; installing");
                let snapshot = Snapshot {
                    meta,
                    snapshot: SnapshotFile { path: path.clone() },
                };
                let result: Result<SnapshotResponse<C>, RaftError<C>> = replica
                    .raft()
                    .install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(RaftError::Fatal);
                Ok(reply(&result))
            }
            Err(status) => Err(status),
        };
        // Installed snapshots were renamed away; anything left is refused or partial.
        let _ = tokio::fs::remove_file(&path).await;
        result
    }
}

async fn receive_file(
    path: &std::path::Path,
    first: pb::SnapshotChunk,
    chunks: &mut Streaming<pb::SnapshotChunk>,
) -> Result<u64, Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut bytes = first.data.len() as u64;
    file.write_all(&first.data).await.map_err(io)?;
    let mut done = first.done;
    while !done {
        let Some(chunk) = chunks.message().await? else {
            return Err(Status::aborted(
                "snapshot stream ended before its last chunk",
            ));
        };
        file.write_all(&chunk.data).await.map_err(io)?;
        bytes += chunk.data.len() as u64;
        done = chunk.done;
    }
    file.sync_all().await.map_err(io)?;
    Ok(bytes)
}
