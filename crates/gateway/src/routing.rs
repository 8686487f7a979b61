//! The gateway's picture of where shards live: the coordinator's shard map, kept current by a
//! watch (with a fetch as fallback), turned into a routing table.

use cairn_coordinator_client::CoordinatorClient;
use cairn_proto::coordinator::v1 as pb;
use cairn_types::ShardId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Pause before re-opening a watch that ended or failed.
const WATCH_RETRY: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, Default)]
pub struct ShardRoute {
    pub epoch: u64,
    pub leader: Option<u64>,
    /// Voters that host their replica (the map's missing voters left out).
    pub voters: Vec<u64>,
}

/// A node to send a call to: its id, which the call names (D35), and its address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAt {
    pub node_id: u64,
    pub address: String,
}

/// One version of the shard map, indexed for routing.
#[derive(Clone, Debug, Default)]
pub struct RoutingTable {
    pub version: u64,
    pub shard_count: u32,
    pub cluster_id: String,
    shards: Vec<ShardRoute>,
    addresses: HashMap<u64, String>,
}

impl RoutingTable {
    pub fn from_map(map: &pb::ShardMap) -> Self {
        let mut shards = vec![ShardRoute::default(); map.shard_count as usize];
        for shard in &map.shards {
            if let Some(route) = shards.get_mut(shard.shard_id as usize) {
                *route = ShardRoute {
                    epoch: shard.epoch,
                    leader: (shard.leader_node_id != 0).then_some(shard.leader_node_id),
                    voters: shard
                        .voters
                        .iter()
                        .copied()
                        .filter(|voter| !shard.missing_voters.contains(voter))
                        .collect(),
                };
            }
        }
        let addresses = map
            .nodes
            .iter()
            .map(|n| (n.node_id, n.address.clone()))
            .collect();
        Self {
            version: map.version,
            shard_count: map.shard_count,
            cluster_id: map.cluster_id.clone(),
            shards,
            addresses,
        }
    }

    pub fn shard_for_key(&self, key: &[u8]) -> ShardId {
        cairn_types::sharding::shard_for_key(key, self.shard_count)
    }

    pub fn route(&self, shard: ShardId) -> Option<&ShardRoute> {
        self.shards.get(shard.0 as usize)
    }

    pub fn address(&self, node: u64) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    pub fn leader_address(&self, shard: ShardId) -> Option<&str> {
        self.address(self.route(shard)?.leader?)
    }

    /// The address of some voter of `shard` (for serializable reads), chosen by `pick`.
    pub fn replica_address(&self, shard: ShardId, pick: usize) -> Option<&str> {
        self.address(self.replica(shard, pick)?)
    }

    fn replica(&self, shard: ShardId, pick: usize) -> Option<u64> {
        let voters = &self.route(shard)?.voters;
        if voters.is_empty() {
            return None;
        }
        Some(voters[pick % voters.len()])
    }

    fn node_at(&self, node_id: u64) -> Option<NodeAt> {
        Some(NodeAt {
            node_id,
            address: self.address(node_id)?.to_string(),
        })
    }

    /// The leader of `shard`, if the map knows one.
    pub fn leader_node(&self, shard: ShardId) -> Option<NodeAt> {
        self.node_at(self.route(shard)?.leader?)
    }

    /// Some voter of `shard` that hosts its replica, chosen by `pick`.
    pub fn replica_node(&self, shard: ShardId, pick: usize) -> Option<NodeAt> {
        self.node_at(self.replica(shard, pick)?)
    }
}

/// The current routing table, shared by every request; refreshed by a background watch.
#[derive(Clone)]
pub struct ShardMaps {
    receiver: watch::Receiver<Option<Arc<RoutingTable>>>,
    sender: Arc<watch::Sender<Option<Arc<RoutingTable>>>>,
    coordinators: Vec<String>,
    coordinator_timeout: Duration,
    /// How the gateway reaches coordinators and nodes: plaintext or mutual TLS.
    pub tls: cairn_tls::ClientTls,
}

impl ShardMaps {
    /// Starts the watch task.
    pub fn start(
        coordinators: Vec<String>,
        coordinator_timeout: Duration,
        tls: cairn_tls::ClientTls,
    ) -> Self {
        let (sender, receiver) = watch::channel(None);
        let maps = Self {
            receiver,
            sender: Arc::new(sender),
            coordinators,
            coordinator_timeout,
            tls,
        };
        tokio::spawn(maps.clone().watch_forever());
        maps
    }

    fn offer(&self, map: &pb::ShardMap) {
        self.sender.send_if_modified(|current| {
            let newer = current
                .as_ref()
                .is_none_or(|table| map.version > table.version);
            if newer {
                tracing::debug!(version = map.version, "shard map updated");
                *current = Some(Arc::new(RoutingTable::from_map(map)));
            }
            newer
        });
    }

    async fn watch_forever(self) {
        let mut client =
            CoordinatorClient::new(self.coordinators.clone(), self.coordinator_timeout)
                .with_tls(self.tls.clone());
        loop {
            let after = self.current().map_or(0, |table| table.version);
            match client.watch_shard_map(after).await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(map)) => self.offer(&map),
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(%status, "shard map watch ended; reconnecting");
                            break;
                        }
                    }
                },
                Err(status) => tracing::warn!(%status, "cannot watch the shard map; retrying"),
            }
            tokio::time::sleep(WATCH_RETRY).await;
        }
    }

    pub fn current(&self) -> Option<Arc<RoutingTable>> {
        self.receiver.borrow().clone()
    }

    /// Fetches the map now (after a stale-epoch or not-leader answer), best effort.
    pub async fn refresh(&self) {
        let mut client =
            CoordinatorClient::new(self.coordinators.clone(), self.coordinator_timeout)
                .with_tls(self.tls.clone());
        match tokio::time::timeout(self.coordinator_timeout, client.shard_map()).await {
            Ok(Ok(map)) => self.offer(&map),
            Ok(Err(status)) => tracing::debug!(%status, "shard map refresh failed"),
            Err(_) => tracing::debug!("shard map refresh timed out"),
        }
    }

    /// The routing table, waiting up to `timeout` for the first one.
    pub async fn table(&self, timeout: Duration) -> Option<Arc<RoutingTable>> {
        // Every request asks; once a map is there, answer without arming a timer.
        if let Some(table) = self.current() {
            return Some(table);
        }
        let mut receiver = self.receiver.clone();
        let ready = tokio::time::timeout(timeout, receiver.wait_for(|table| table.is_some())).await;
        match ready {
            Ok(Ok(table)) => table.clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keys_to_leaders_and_voters() {
        let map = pb::ShardMap {
            version: 7,
            cluster_id: "c".into(),
            shard_count: 2,
            shards: vec![
                pb::ShardInfo {
                    shard_id: 0,
                    epoch: 3,
                    voters: vec![1, 2, 3],
                    learners: vec![],
                    leader_node_id: 2,
                    // Node 3 heartbeats without the replica: never a read target.
                    missing_voters: vec![3],
                },
                pb::ShardInfo {
                    shard_id: 1,
                    epoch: 4,
                    voters: vec![1],
                    learners: vec![],
                    leader_node_id: 0,
                    missing_voters: vec![],
                },
            ],
            nodes: vec![
                pb::NodeInfo {
                    node_id: 1,
                    address: "a:1".into(),
                    ..Default::default()
                },
                pb::NodeInfo {
                    node_id: 2,
                    address: "b:2".into(),
                    ..Default::default()
                },
            ],
        };
        let table = RoutingTable::from_map(&map);
        assert_eq!(table.leader_address(ShardId(0)), Some("b:2"));
        assert_eq!(table.leader_address(ShardId(1)), None, "no leader known");
        assert_eq!(table.route(ShardId(1)).unwrap().epoch, 4);
        assert_eq!(table.replica_address(ShardId(0), 0), Some("a:1"));
        assert_eq!(table.replica_address(ShardId(0), 1), Some("b:2"));
        assert_eq!(table.replica_address(ShardId(0), 2), Some("a:1"));
        assert_eq!(
            table.leader_node(ShardId(0)),
            Some(NodeAt {
                node_id: 2,
                address: "b:2".into()
            })
        );
        assert_eq!(table.cluster_id, "c");
        assert_eq!(
            table.shard_for_key(b"user/0"),
            cairn_types::sharding::shard_for_key(b"user/0", 2)
        );
    }
}
