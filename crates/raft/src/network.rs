//! The client side of the Raft transport: how a shard's Raft group reaches its peers.
//!
//! Every shard on a node shares one gRPC channel (one HTTP/2 connection) per peer node; each
//! message names its shard. openraft messages travel as postcard bytes inside
//! `cairn.raft.v1` envelopes. Snapshots stream as a sequence of chunks read from the snapshot
//! file, so a shard never has to fit in memory or in one message.

use crate::snapshot_builder::SnapshotFile;
use crate::type_config::{NodeAddress, ShardRaftConfig, SnapshotMeta, Vote};
use cairn_proto::addressing::Destination;
use cairn_proto::raft::v1 as pb;
use cairn_proto::raft::v1::raft_transport_client::RaftTransportClient;
use cairn_types::{NodeId, ShardId};
use openraft::entry::RaftEntry;
use openraft::error::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

type C = ShardRaftConfig;

/// The only payload encoding so far: postcard of openraft's serde types.
pub const ENCODING_POSTCARD: u32 = 1;

pub fn encode_payload<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding into a Vec cannot fail")
}

pub fn decode_payload<T: DeserializeOwned>(encoding: u32, bytes: &[u8]) -> Result<T, String> {
    if encoding != ENCODING_POSTCARD {
        return Err(format!("unknown raft payload encoding {encoding}"));
    }
    postcard::from_bytes(bytes).map_err(|error| format!("undecodable raft payload: {error}"))
}

/// Transport timeouts and sizes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Time allowed to open a connection to a peer, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest a whole snapshot transfer may take, in milliseconds.
    pub snapshot_transfer_timeout_ms: u64,
    /// Size of one snapshot chunk, in bytes.
    pub snapshot_chunk_bytes: usize,
    /// Local IP that outgoing connections to peers are bound to (the source address);
    /// unset lets the kernel choose. For multi-homed hosts, and for the test harness, which
    /// tells links apart by source address.
    pub outbound_bind_ip: Option<std::net::IpAddr>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 2_000,
            snapshot_transfer_timeout_ms: 10 * 60 * 1000,
            snapshot_chunk_bytes: 1 << 20,
            outbound_bind_ip: None,
        }
    }
}

/// One lazily connected channel per peer address, shared by every shard.
#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    config: TransportConfig,
    /// The cluster every message names (empty: none, a static bootstrap).
    cluster_id: Arc<str>,
    /// Plaintext, or mutual TLS with this process's certificate.
    tls: cairn_tls::ClientTls,
}

impl PeerChannels {
    pub fn new(config: TransportConfig) -> Self {
        Self {
            channels: Arc::default(),
            config,
            cluster_id: Arc::from(""),
            tls: cairn_tls::ClientTls::plaintext(),
        }
    }

    /// The same, connecting to peers through `tls`.
    pub fn with_tls(mut self, tls: cairn_tls::ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The same, naming `cluster_id` in every message (see `cairn_proto::addressing`).
    pub fn for_cluster(mut self, cluster_id: &str) -> Self {
        self.cluster_id = Arc::from(cluster_id);
        self
    }

    /// The destination header values of a message to `node`.
    pub fn destination(&self, node: NodeId) -> Destination {
        Destination::new(node.0, &*self.cluster_id)
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    pub fn channel(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| format!("bad peer address {address:?}: {error}"))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = self
            .tls
            .connect_lazy(endpoint, self.config.outbound_bind_ip);
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn client(&self, address: &str) -> Result<RaftTransportClient<Channel>, String> {
        Ok(RaftTransportClient::new(self.channel(address)?)
            .max_decoding_message_size(cairn_types::RAFT_MESSAGE_BYTES_MAX as usize)
            .max_encoding_message_size(cairn_types::RAFT_MESSAGE_BYTES_MAX as usize))
    }
}

/// Creates the per-peer network clients of one shard's Raft group.
pub struct ShardNetworkFactory {
    pub shard: ShardId,
    pub channels: PeerChannels,
    pub counters: Arc<crate::replica::ReplicaCounters>,
}

impl RaftNetworkFactory<C> for ShardNetworkFactory {
    type Network = ShardNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddress) -> ShardNetwork {
        ShardNetwork {
            shard: self.shard,
            target,
            address: node.address.clone(),
            channels: self.channels.clone(),
            counters: self.counters.clone(),
        }
    }
}

pub struct ShardNetwork {
    shard: ShardId,
    target: NodeId,
    address: String,
    channels: PeerChannels,
    counters: Arc<crate::replica::ReplicaCounters>,
}

#[derive(Clone, Copy)]
enum Call {
    Append,
    Vote,
    TransferLeader,
}

fn unreachable(message: impl ToString) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::from_string(message))
}

impl ShardNetwork {
    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        call: Call,
        request: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<C>> {
        let mut client = self.channels.client(&self.address).map_err(unreachable)?;
        let mut envelope = tonic::Request::new(pb::RaftRequest {
            shard_id: self.shard.0,
            to_node_id: self.target.0,
            encoding: ENCODING_POSTCARD,
            payload: encode_payload(request).into(),
        });
        envelope.set_timeout(ttl);
        self.channels
            .destination(self.target)
            .stamp(envelope.metadata_mut());
        let reply = tokio::time::timeout(ttl, async {
            match call {
                Call::Append => client.append_entries(envelope).await,
                Call::Vote => client.vote(envelope).await,
                Call::TransferLeader => client.transfer_leader(envelope).await,
            }
        })
        .await
        .map_err(|_| {
            RPCError::Network(NetworkError::from_string(format!(
                "no reply from {} within {ttl:?}",
                self.target
            )))
        })?
        .map_err(|status| status_to_rpc_error(self.target, status))?
        .into_inner();
        let result: Result<Resp, RaftError<C>> =
            decode_payload(reply.encoding, &reply.payload).map_err(unreachable)?;
        // The only remote error is Fatal: that replica has stopped. Back off and retry.
        result.map_err(|error| {
            unreachable(format!(
                "{} replica on {} stopped: {error}",
                self.shard, self.target
            ))
        })
    }
}

/// What a failed Raft message means for openraft, by the shared classification (D46): a peer
/// that cannot serve it now (down, not hosting the shard yet, gone from its address) is
/// `Unreachable`, which openraft backs off from; any other failure is a `Network` error.
fn status_to_rpc_error(target: NodeId, status: tonic::Status) -> RPCError<C> {
    use cairn_proto::retry::{classify, Cause};
    match classify(&status).cause {
        Cause::NodeGone => {
            // Another node (or cluster) listens at the address `target` had: nothing sent
            // there reaches `target` again. Unreachable backs off; the shard's membership must
            // replace `target` (the coordinator sees it down).
            let wrong = cairn_proto::addressing::wrong_node_of(&status).unwrap_or_default();
            unreachable(format!(
                "{target} is gone from its address: node-{} of cluster {:?} answers there",
                wrong.node_id, wrong.cluster_id
            ))
        }
        Cause::StaleMap
        | Cause::Unavailable
        | Cause::NotSent
        | Cause::ShardNotLeader { .. }
        | Cause::CoordinatorNotLeader { .. } => {
            unreachable(format!("{target}: {}", status.message()))
        }
        Cause::OutcomeUnknown | Cause::Refused | Cause::TxnConflict | Cause::KeyLocked => {
            RPCError::Network(NetworkError::from_string(format!("{target}: {status}")))
        }
    }
}

impl RaftNetworkV2<C> for ShardNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        // Sampled requests among the entries see their replication to this follower.
        let _replicating = crate::type_config::spans_for_traced(&rpc.entries, |entry| {
            tracing::info_span!(
                "raft.replicate",
                shard = self.shard.0,
                peer = self.target.0,
                index = entry.index()
            )
        });
        self.unary(Call::Append, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.unary(Call::Vote, &rpc, option.hard_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.unary(Call::TransferLeader, &request, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<C, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let config = self.channels.config().clone();
        let timeout = Duration::from_millis(config.snapshot_transfer_timeout_ms);
        let send = self.send_snapshot(
            vote,
            snapshot.meta,
            snapshot.snapshot,
            config.snapshot_chunk_bytes,
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = tokio::time::timeout(timeout, send) => match result {
                Ok(result) => {
                    if result.is_ok() {
                        self.counters.snapshots_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    result
                }
                Err(_) => Err(StreamingError::Network(NetworkError::from_string(format!(
                    "snapshot transfer to {} took longer than {timeout:?}", self.target
                )))),
            },
        }
    }
}

impl ShardNetwork {
    async fn send_snapshot(
        &self,
        vote: Vote,
        meta: SnapshotMeta,
        file: SnapshotFile,
        chunk_bytes: usize,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let network_error =
            |message: String| StreamingError::Network(NetworkError::from_string(message));
        let mut client = self
            .channels
            .client(&self.address)
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e)))?;
        let opened = tokio::fs::File::open(&file.path).await.map_err(|error| {
            network_error(format!("open snapshot {}: {error}", file.path.display()))
        })?;
        let header = encode_payload(&(vote, meta));
        let (shard, target) = (self.shard.0, self.target.0);
        // Chunks are read from the file as the stream is polled: at most one chunk in memory.
        let chunks = futures::stream::unfold(
            (opened, Some(header), false),
            move |(mut file, header, done)| async move {
                if done {
                    return None;
                }
                let mut data = vec![0u8; chunk_bytes];
                let mut filled = 0;
                while filled < chunk_bytes {
                    match file.read(&mut data[filled..]).await {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(error) => {
                            tracing::warn!(%error, "reading snapshot file failed; aborting the transfer");
                            return None;
                        }
                    }
                }
                data.truncate(filled);
                let last = filled < chunk_bytes;
                let chunk = pb::SnapshotChunk {
                    shard_id: shard,
                    to_node_id: target,
                    encoding: ENCODING_POSTCARD,
                    header: header.unwrap_or_default().into(),
                    data: data.into(),
                    done: last,
                };
                Some((chunk, (file, None, last)))
            },
        );
        let mut request = tonic::Request::new(chunks);
        self.channels
            .destination(self.target)
            .stamp(request.metadata_mut());
        let reply = client
            .install_snapshot(request)
            .await
            .map_err(|status| match status_to_rpc_error(self.target, status) {
                RPCError::Unreachable(e) => StreamingError::Unreachable(e),
                other => network_error(other.to_string()),
            })?
            .into_inner();
        let result: Result<SnapshotResponse<C>, RaftError<C>> =
            decode_payload(reply.encoding, &reply.payload).map_err(network_error)?;
        result.map_err(|error| StreamingError::Unreachable(Unreachable::from_string(error)))
    }
}
