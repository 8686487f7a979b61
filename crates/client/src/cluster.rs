//! Cluster calls on `Client`: status, members, shards, join and leave, served by the
//! gateway's `cairn.kv.v1.Cluster` service.

use crate::client::{request, Client, MESSAGE_BYTES_MAX};
use crate::error::Result;
use cairn_proto::kv::v1 as proto;
use cairn_proto::kv::v1::cluster_client::ClusterClient;
use cairn_proto::retry::Idempotency;
use cairn_types::NodeId;
use std::collections::HashMap;
use tonic::transport::Channel;

impl Client {
    /// The cluster's health at a glance.
    pub async fn status(&self) -> Result<proto::StatusResponse> {
        self.call(
            "cluster status",
            Idempotency::Idempotent,
            |channel, remaining| {
                let request = request(proto::StatusRequest {}, remaining);
                async move { cluster(channel).status(request).await }
            },
        )
        .await
    }

    /// Every node the cluster knows, with its state and load.
    pub async fn members(&self) -> Result<Vec<proto::Member>> {
        let response = self
            .call(
                "cluster members",
                Idempotency::Idempotent,
                |channel, remaining| {
                    let request = request(proto::MembersRequest {}, remaining);
                    async move { cluster(channel).members(request).await }
                },
            )
            .await?;
        Ok(response.members)
    }

    /// Every shard's epoch, replicas and leader.
    pub async fn shards(&self) -> Result<proto::ShardsResponse> {
        self.call(
            "cluster shards",
            Idempotency::Idempotent,
            |channel, remaining| {
                let request = request(proto::ShardsRequest {}, remaining);
                async move { cluster(channel).shards(request).await }
            },
        )
        .await
    }

    /// Registers a storage node that will listen at `address`; start it with the returned
    /// id. Retried like a read: the coordinator answers a repeated join of an address whose
    /// node has not started yet with the id the first attempt allocated (D46).
    pub async fn join(
        &self,
        address: impl Into<String>,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeId> {
        let message = proto::JoinRequest {
            address: address.into(),
            labels: labels.into_iter().collect::<HashMap<_, _>>(),
        };
        let response = self
            .call("join", Idempotency::Idempotent, |channel, remaining| {
                let request = request(message.clone(), remaining);
                async move { cluster(channel).join(request).await }
            })
            .await?;
        Ok(NodeId(response.node_id))
    }

    /// Forces `shard`, which lost its quorum, onto the replica on `from`: that replica becomes
    /// the shard's only voter and the shard is re-replicated from it. Writes the lost
    /// replicas acknowledged after the survivor's last log entry are lost: the answer says
    /// where the survivor was (docs/operations.md). Not retried.
    pub async fn unsafe_recover_shard(
        &self,
        shard: u64,
        from: NodeId,
    ) -> Result<proto::UnsafeRecoverShardResponse> {
        let message = proto::UnsafeRecoverShardRequest {
            shard_id: shard,
            from_node_id: from.get(),
            accept_data_loss: true,
        };
        self.call(
            "unsafe recover shard",
            Idempotency::NotIdempotent,
            |channel, remaining| {
                let request = request(message, remaining);
                async move { cluster(channel).unsafe_recover_shard(request).await }
            },
        )
        .await
    }

    /// Starts draining `node`: its replicas move elsewhere, then it is marked left.
    /// Returns whether the node is draining.
    pub async fn leave(&self, node: NodeId) -> Result<bool> {
        let response = self
            .call("leave", Idempotency::Idempotent, |channel, remaining| {
                let request = request(
                    proto::LeaveRequest {
                        node_id: node.get(),
                    },
                    remaining,
                );
                async move { cluster(channel).leave(request).await }
            })
            .await?;
        Ok(response.draining)
    }
}

fn cluster(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}
