//! What the harness reads from a running cluster, through the same gRPC APIs an operator or
//! a client uses: the coordinators' cluster status, a node's view of its replicas, shard
//! leaders, reads of one replica, and writes that must be acknowledged.
//!
//! The harness's own calls to a node go straight to its listen address, past its proxy: the
//! observer is never partitioned.

use crate::requests::shard_target;
use crate::{wait_for, Cluster, POLL_INTERVAL};
use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use cairn_proto::kv::v1 as kv;
use cairn_proto::kv::v1::cluster_client::ClusterClient;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use cairn_tls::ClientTls;
use cairn_types::{NodeId, ShardId};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long the harness waits for a connection to a process.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Per-call timeouts: a coordinator answers status at once; a node's call may wait for a
/// ReadIndex or a proposal; a gateway's may retry across a leader change.
const COORDINATOR_CALL_TIMEOUT: Duration = Duration::from_secs(10);
const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(15);
const GATEWAY_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys per page of `local_scan`.
const SCAN_PAGE_KEYS: u64 = 1000;

/// A channel to `address`, through `tls` (the harness's certificate in a TLS cluster).
async fn connect(tls: &ClientTls, address: &str, call_timeout: Duration) -> Option<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(call_timeout);
    tls.connect(endpoint, None).await.ok()
}

/// A channel to `address` that connects on its first call (so a test can watch the call be
/// refused), with `tls`'s settings: 2 s to connect, 10 s per call.
pub fn lazy_channel(tls: &ClientTls, address: &str) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a loopback address")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    tls.connect_lazy(endpoint, None)
}

pub(crate) async fn admin_client(
    tls: &ClientTls,
    address: &str,
) -> Option<NodeAdminClient<Channel>> {
    Some(NodeAdminClient::new(
        connect(tls, address, NODE_CALL_TIMEOUT).await?,
    ))
}

impl Cluster {
    async fn coordinator_client(&self, member: u64) -> Option<CoordinatorClient<Channel>> {
        let address = &self.coordinator(member).address;
        Some(CoordinatorClient::new(
            connect(&self.client_tls(), address, COORDINATOR_CALL_TIMEOUT).await?,
        ))
    }

    /// The cluster status from whichever coordinator answers first (a follower passes the
    /// request to the leader).
    pub async fn cluster_status(&self) -> Option<coordinator::ClusterStatusResponse> {
        for member in self.running_coordinators() {
            if let Some(status) = self.cluster_status_from(member).await {
                return Some(status);
            }
        }
        None
    }

    /// The cluster status as coordinator `member` answers it.
    pub async fn cluster_status_from(
        &self,
        member: u64,
    ) -> Option<coordinator::ClusterStatusResponse> {
        let mut client = self.coordinator_client(member).await?;
        let response = client
            .cluster_status(coordinator::ClusterStatusRequest {})
            .await
            .ok()?;
        Some(response.into_inner())
    }

    /// Waits until the coordinators report every shard placed on as many voters as the
    /// replication factor, each with a leader.
    pub async fn wait_for_placement(
        &self,
        timeout: Duration,
    ) -> coordinator::ClusterStatusResponse {
        let (shards, voters) = (
            self.shard_count() as usize,
            self.replication_factor() as usize,
        );
        wait_for("every shard placed with a leader", timeout, || async move {
            let status = self.cluster_status().await?;
            (status.shards.len() == shards
                && status
                    .shards
                    .iter()
                    .all(|s| s.voters.len() == voters && s.leader_node_id != 0))
            .then_some(status)
        })
        .await
    }

    /// Waits for placement, then until every shard has a leader that the nodes themselves
    /// report (the coordinators' view may lag).
    pub async fn wait_for_every_leader(&self, timeout: Duration) {
        self.wait_for_placement(timeout).await;
        for shard in 0..u64::from(self.shard_count()) {
            self.wait_for_leader(ShardId(shard), timeout).await;
        }
    }

    /// Asks the coordinator leader to drain and remove node `id`.
    pub async fn leave_cluster(&self, id: NodeId) -> bool {
        for member in self.running_coordinators() {
            let Some(mut client) = self.coordinator_client(member).await else {
                continue;
            };
            let request = coordinator::LeaveClusterRequest { node_id: id.0 };
            if client.leave_cluster(request).await.is_ok() {
                return true;
            }
        }
        false
    }

    /// Public KV and Cluster clients connected to gateway `number`, once it accepts
    /// connections.
    pub async fn gateway_clients(
        &self,
        number: u64,
        timeout: Duration,
    ) -> (KvClient<Channel>, ClusterClient<Channel>) {
        let address = self.gateway(number).address.clone();
        let tls = self.client_tls();
        let channel = wait_for(
            &format!("gateway {number} to accept connections"),
            timeout,
            || connect(&tls, &address, GATEWAY_CALL_TIMEOUT),
        )
        .await;
        (KvClient::new(channel.clone()), ClusterClient::new(channel))
    }

    pub async fn kv(&self, id: NodeId) -> Option<ShardKvClient<Channel>> {
        let address = &self.node(id).listen_address;
        Some(ShardKvClient::new(
            connect(&self.client_tls(), address, NODE_CALL_TIMEOUT).await?,
        ))
    }

    pub async fn admin(&self, id: NodeId) -> Option<NodeAdminClient<Channel>> {
        admin_client(&self.client_tls(), &self.node(id).listen_address).await
    }

    /// Node `id`'s view of its replica of `shard`, if the node answers.
    pub async fn status(&self, id: NodeId, shard: ShardId) -> Option<node::ReplicaStatus> {
        let mut admin = self.admin(id).await?;
        let response = admin
            .shard_status(node::ShardStatusRequest {
                shard_id: shard.0,
                all: false,
            })
            .await
            .ok()?;
        response.into_inner().replicas.into_iter().next()
    }

    /// The node whose replica reports leading `shard`, asking every awake node.
    pub async fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        self.leader_among(shard, &self.running_nodes()).await
    }

    /// The first of `candidates` that reports leading `shard`. Paused nodes are skipped: one
    /// would hold the call until its timeout, and it leads nobody meanwhile.
    pub async fn leader_among(&self, shard: ShardId, candidates: &[NodeId]) -> Option<NodeId> {
        for id in candidates {
            if !self.node(*id).is_awake() {
                continue;
            }
            if let Some(status) = self.status(*id, shard).await {
                if status.role == node::ReplicaRole::Leader as i32 {
                    return Some(*id);
                }
            }
        }
        None
    }

    pub async fn wait_for_leader(&self, shard: ShardId, timeout: Duration) -> NodeId {
        wait_for(&format!("a leader of {shard}"), timeout, || {
            self.leader_of(shard)
        })
        .await
    }

    /// Puts through whichever node leads the shard, retrying with the same write id on
    /// not-leader, unavailability and unknown outcomes until `timeout`.
    pub async fn must_put(
        &self,
        shard: ShardId,
        write_id: kv::WriteId,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> kv::PutResponse {
        let request = node::ShardPutRequest {
            target: Some(shard_target(shard)),
            request: Some(kv::PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                write_id: Some(write_id),
                ..Default::default()
            }),
        };
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(leader) = self.leader_of(shard).await {
                if let Some(mut client) = self.kv(leader).await {
                    match client.put(request.clone()).await {
                        Ok(response) => return response.into_inner(),
                        Err(status) => last_error = format!("{status}"),
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!("put to {shard} not acknowledged within {timeout:?}: {last_error}");
    }

    /// Reads `key` from node `id`'s replica without ReadIndex (what that replica has
    /// applied).
    pub async fn local_get(
        &self,
        id: NodeId,
        shard: ShardId,
        key: &[u8],
    ) -> Option<kv::GetResponse> {
        let mut client = self.kv(id).await?;
        let request = crate::shard_get(shard, key, kv::Consistency::Serializable);
        client.get(request).await.ok().map(|r| r.into_inner())
    }

    /// Every key-value of `shard` on node `id`'s replica, in key order (serializable scans).
    pub async fn local_scan(&self, id: NodeId, shard: ShardId) -> Option<Vec<kv::KeyValue>> {
        let mut client = self.kv(id).await?;
        let mut out = Vec::new();
        let mut continuation = Vec::new();
        loop {
            let request = node::ShardRangeRequest {
                target: Some(shard_target(shard)),
                request: Some(kv::RangeRequest {
                    continuation: continuation.clone(),
                    limit: SCAN_PAGE_KEYS,
                    consistency: kv::Consistency::Serializable as i32,
                    ..Default::default()
                }),
                // Not inside a transaction: no lock of its own to look past.
                own_start_ts: 0,
            };
            let page = client.range(request).await.ok()?.into_inner();
            out.extend(page.kvs);
            if !page.more {
                return Some(out);
            }
            continuation = page.continuation;
        }
    }
}
