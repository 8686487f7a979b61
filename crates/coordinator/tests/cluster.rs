//! Coordinator cluster tests with real processes: shards placed on joining nodes, a node
//! killed for good and its replicas replaced, a new node taking its share, a node drained
//! by LeaveCluster, and the coordinator leader lost while metadata and scheduling go on.

use cairn_proto::coordinator::v1 as pb;
use cairn_test_harness::{wait_for, Cluster, ClusterSpec, ProcessId, WriteIds};
use cairn_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const COORDINATOR: &str = env!("CARGO_BIN_EXE_cairn-coordinator");
const WAIT: Duration = Duration::from_secs(90);

/// Fast failure detection for tests: suspect after 1.5 s, down after 3 s.
async fn start(coordinators: u64, nodes: u64, shards: u32) -> Cluster {
    ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(coordinators)
        .nodes(nodes)
        .shards(shards)
        .fast_failure_detection()
        .start()
        .await
}

fn up_nodes(status: &pb::ClusterStatusResponse) -> BTreeSet<u64> {
    status
        .nodes
        .iter()
        .filter(|n| n.state == pb::NodeState::Up as i32)
        .map(|n| n.node_id)
        .collect()
}

/// Every shard has `rf` voters, all on up nodes, a leader, and no move in flight.
fn fully_replicated(status: &pb::ClusterStatusResponse, rf: usize) -> bool {
    let up = up_nodes(status);
    status.shards.len() == status.shard_count as usize
        && status.shards.iter().all(|shard| {
            shard.voters.len() == rf
                && shard.voters.iter().all(|v| up.contains(v))
                && shard.learners.is_empty()
                && shard.leader_node_id != 0
        })
        && status.moves_in_flight == 0
        && status.under_replicated_shards == 0
}

async fn wait_fully_replicated(cluster: &Cluster, what: &str) -> pb::ClusterStatusResponse {
    wait_for(what, WAIT, || async move {
        cluster
            .cluster_status()
            .await
            .filter(|status| fully_replicated(status, 3))
    })
    .await
}

fn replica_counts(status: &pb::ClusterStatusResponse) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = up_nodes(status).into_iter().map(|n| (n, 0)).collect();
    for shard in &status.shards {
        for voter in &shard.voters {
            *counts.entry(*voter).or_default() += 1;
        }
    }
    counts
}

/// Waits until `nodes` nodes hold every shard fully replicated, with replica and leader
/// counts within the default tolerance of 1.
async fn wait_balanced(cluster: &Cluster, nodes: usize) -> pb::ClusterStatusResponse {
    wait_for(
        &format!("replicas and leaders balanced over {nodes} nodes"),
        WAIT,
        || async move {
            let status = cluster.cluster_status().await?;
            let counts = replica_counts(&status);
            let leaders: Vec<usize> = counts
                .keys()
                .map(|node| {
                    status
                        .shards
                        .iter()
                        .filter(|s| s.leader_node_id == *node)
                        .count()
                })
                .collect();
            (counts.len() == nodes
                && fully_replicated(&status, 3)
                && spread(counts.values().copied()) <= 1
                && spread(leaders.iter().copied()) <= 1)
                .then_some(status)
        },
    )
    .await
}

fn spread(counts: impl Iterator<Item = usize> + Clone) -> usize {
    counts.clone().max().unwrap_or(0) - counts.min().unwrap_or(0)
}

/// Writes one key per shard through each shard's leader; returns (shard, key, value).
async fn write_one_key_per_shard(
    cluster: &Cluster,
    shards: u32,
    tag: &str,
) -> Vec<(ShardId, Vec<u8>, Vec<u8>)> {
    let mut ids = WriteIds::new();
    let mut written = Vec::new();
    for shard in (0..u64::from(shards)).map(ShardId) {
        let key = format!("{tag}/shard-{shard}").into_bytes();
        let value = format!("value-{tag}-{shard}").into_bytes();
        cluster
            .must_put(shard, ids.next_id(), &key, &value, WAIT)
            .await;
        written.push((shard, key, value));
    }
    written
}

async fn assert_readable(cluster: &Cluster, written: &[(ShardId, Vec<u8>, Vec<u8>)]) {
    for (shard, key, value) in written {
        let leader = cluster.wait_for_leader(*shard, WAIT).await;
        let got = cluster
            .local_get(leader, *shard, key)
            .await
            .and_then(|r| r.kv)
            .map(|kv| kv.value);
        assert_eq!(
            got.as_ref(),
            Some(value),
            "shard {shard} lost {}",
            String::from_utf8_lossy(key)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_for_good_has_its_replicas_replaced() {
    let mut cluster = start(1, 4, 4).await;

    tracing::info!("--- the coordinator places every shard on 3 of the 4 joined nodes");
    let status = wait_fully_replicated(&cluster, "initial placement").await;
    assert_eq!(status.nodes.len(), 4);
    let written = write_one_key_per_shard(&cluster, 4, "before").await;

    tracing::info!("--- watch the shard map from the coordinator");
    let watched_from = status.map_version;
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cluster.coordinator(1).address
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut watch = pb::coordinator_client::CoordinatorClient::new(channel)
        .watch_shard_map(pb::WatchShardMapRequest {
            after_version: status.map_version,
        })
        .await
        .expect("watch the shard map")
        .into_inner();

    tracing::info!("--- kill -9 a node that holds replicas, for good");
    let victim = status.shards[0].voters[0];
    let killed_at = Instant::now();
    cluster.kill(NodeId(victim));

    let status = wait_for(
        "every shard back to 3 voters without the dead node",
        WAIT,
        || {
            let cluster = &cluster;
            async move {
                cluster.cluster_status().await.filter(|status| {
                    fully_replicated(status, 3)
                        && status.shards.iter().all(|s| !s.voters.contains(&victim))
                })
            }
        },
    )
    .await;
    tracing::info!(elapsed = ?killed_at.elapsed(), "re-replication finished");

    tracing::info!("--- the watch delivered newer maps, ending with the repaired one");
    let mut last_version = watched_from;
    let repaired = tokio::time::timeout(WAIT, async {
        loop {
            let map = watch
                .message()
                .await
                .expect("watch stream")
                .expect("watch stays open");
            assert!(map.version > last_version, "watched versions increase");
            last_version = map.version;
            if map
                .shards
                .iter()
                .all(|s| s.voters.len() == 3 && !s.voters.contains(&victim))
            {
                return map;
            }
        }
    })
    .await
    .expect("a repaired map arrives on the watch");
    assert_eq!(repaired.shard_count, 4);
    let dead = status.nodes.iter().find(|n| n.node_id == victim).unwrap();
    assert_eq!(dead.state, pb::NodeState::Down as i32);

    tracing::info!("--- no acknowledged write was lost, and the shards take new writes");
    assert_readable(&cluster, &written).await;
    let after = write_one_key_per_shard(&cluster, 4, "after").await;
    assert_readable(&cluster, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_gets_its_share_of_replicas_and_leaders() {
    let mut cluster = start(1, 4, 8).await;
    tracing::info!("--- placement settles balanced over the 4 nodes (they join one by one)");
    wait_balanced(&cluster, 4).await;
    let written = write_one_key_per_shard(&cluster, 8, "before").await;

    tracing::info!("--- a fifth node joins: replicas and leaders move to it");
    let joined_at = Instant::now();
    let new_node = cluster.add_node().await;
    let status = wait_balanced(&cluster, 5).await;
    tracing::info!(elapsed = ?joined_at.elapsed(), counts = ?replica_counts(&status), "rebalanced");
    assert!(
        replica_counts(&status)[&new_node.0] >= 4,
        "the new node holds its share"
    );
    assert_readable(&cluster, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_cluster_drains_a_node() {
    let cluster = start(1, 4, 4).await;
    wait_fully_replicated(&cluster, "initial placement").await;
    let written = write_one_key_per_shard(&cluster, 4, "before").await;
    let leaving = cluster.node_ids()[0];

    tracing::info!("--- LeaveCluster: every replica moves off the node, then it is left");
    assert!(cluster.leave_cluster(leaving).await);
    let leaving = leaving.0;
    let status = wait_for("the node drained and left", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster.cluster_status().await.filter(|status| {
                let left = status
                    .nodes
                    .iter()
                    .any(|n| n.node_id == leaving && n.state == pb::NodeState::Left as i32);
                left && fully_replicated(status, 3)
                    && status
                        .shards
                        .iter()
                        .all(|s| !s.voters.contains(&leaving) && !s.learners.contains(&leaving))
            })
        }
    })
    .await;
    assert_eq!(up_nodes(&status).len(), 3);
    let known: BTreeMap<u64, String> = status
        .nodes
        .iter()
        .map(|n| (n.node_id, n.address.clone()))
        .collect();
    wait_for("the drained node to delete its replicas", WAIT, || {
        let cluster = &cluster;
        async move {
            let mut admin = cluster.admin(NodeId(leaving)).await?;
            let replicas = admin
                .shard_status(cairn_proto::node::v1::ShardStatusRequest {
                    shard_id: 0,
                    all: true,
                })
                .await
                .ok()?
                .into_inner()
                .replicas;
            replicas.is_empty().then_some(())
        }
    })
    .await;
    assert_readable(&cluster, &written).await;

    tracing::info!("--- a restarted node keeps its id");
    let mut cluster = cluster;
    let restarted = cluster.node_ids()[1];
    cluster.restart(restarted);
    let restarted_address = cluster.node(restarted).address.clone();
    let restarted_id = known
        .iter()
        .find(|(_, address)| **address == restarted_address)
        .map(|(id, _)| *id)
        .unwrap();
    let status = wait_for("the restarted node to report again", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster.cluster_status().await.filter(|s| {
                s.nodes
                    .iter()
                    .any(|n| n.node_id == restarted_id && n.state == pb::NodeState::Up as i32)
                    && fully_replicated(s, 3)
            })
        }
    })
    .await;
    let after: BTreeMap<u64, String> = status
        .nodes
        .iter()
        .map(|n| (n.node_id, n.address.clone()))
        .collect();
    assert_eq!(after, known, "no node got a new id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_coordinator_leader_loses_no_metadata() {
    let mut cluster = start(3, 4, 4).await;
    let before = wait_fully_replicated(&cluster, "initial placement").await;

    tracing::info!("--- any coordinator answers: a follower passes the request to the leader");
    let follower = (1..=3)
        .find(|id| *id != before.coordinator_leader_id)
        .unwrap();
    let via_follower = cluster
        .cluster_status_from(follower)
        .await
        .expect("a follower answers");
    assert_eq!(
        via_follower.coordinator_leader_id,
        before.coordinator_leader_id
    );
    assert_eq!(via_follower.cluster_id, before.cluster_id);

    tracing::info!("--- kill -9 the coordinator leader");
    let leader = before.coordinator_leader_id;
    assert!(leader != 0);
    cluster.kill(ProcessId::Coordinator(leader));
    let after = wait_for(
        "a new coordinator leader with the same cluster",
        WAIT,
        || {
            let cluster = &cluster;
            async move {
                cluster.cluster_status().await.filter(|s| {
                    s.coordinator_leader_id != 0
                        && s.coordinator_leader_id != leader
                        && s.nodes.len() == 4
                })
            }
        },
    )
    .await;
    assert_eq!(after.cluster_id, before.cluster_id);
    assert_eq!((after.shard_count, after.replication_factor), (4, 3));
    let ids = |s: &pb::ClusterStatusResponse| {
        s.nodes
            .iter()
            .map(|n| (n.node_id, n.address.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(ids(&after), ids(&before), "node ids and addresses survive");
    assert!(
        after.map_version > before.map_version,
        "map versions keep increasing across leaders"
    );

    tracing::info!("--- scheduling goes on: a node killed now is still replaced");
    let status = wait_fully_replicated(&cluster, "placement seen by the new leader").await;
    let victim = status.shards[0].voters[0];
    cluster.kill(NodeId(victim));
    wait_for(
        "re-replication under the new coordinator leader",
        WAIT,
        || {
            let cluster = &cluster;
            async move {
                cluster.cluster_status().await.filter(|s| {
                    fully_replicated(s, 3)
                        && s.shards.iter().all(|shard| !shard.voters.contains(&victim))
                })
            }
        },
    )
    .await;
}

/// Found by the nemesis test `histories_stay_linearizable_when_the_coordinator_leader_dies_during_rebalancing`:
/// openraft gives a restarted leader its term back without an election, so map versions
/// built from the term started again below the ones gateways already had, and gateways
/// ignored every later map (routing to removed replicas until restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_leader_publishes_higher_map_versions() {
    let mut cluster = start(1, 3, 2).await;
    let before = wait_fully_replicated(&cluster, "initial placement").await;
    assert!(before.map_version > 0);

    tracing::info!("--- kill -9 the only coordinator and start it again: it leads the same term");
    cluster.restart(ProcessId::Coordinator(1));
    let after = wait_for("the restarted coordinator to publish a map", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster
                .cluster_status()
                .await
                .filter(|s| s.map_version != 0 && fully_replicated(s, 3))
        }
    })
    .await;
    assert!(
        after.map_version > before.map_version,
        "map versions rise across a restart of the leader: {:#x} then {:#x}",
        before.map_version,
        after.map_version
    );
}

/// `storage.engine = "memory"` (D31): a throwaway cluster serves data, says it is not durable,
/// and a node restarted in memory comes back empty as a new node while the old one's replicas
/// are replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_cluster_serves_data_and_replaces_a_restarted_node() {
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(1)
        .nodes(4)
        .shards(4)
        .fast_failure_detection()
        .env(&[("CAIRN_STORAGE__ENGINE", "memory")])
        .start()
        .await;

    tracing::info!("--- every process reports the memory engine");
    let status = wait_for("placement, with every node's engine reported", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster.cluster_status().await.filter(|status| {
                fully_replicated(status, 3)
                    && status.nodes.len() == 4
                    && status
                        .nodes
                        .iter()
                        .all(|n| n.storage_engine == pb::StorageEngine::Memory as i32)
            })
        }
    })
    .await;
    assert_eq!(
        status.coordinator_storage_engine,
        pb::StorageEngine::Memory as i32
    );
    let some_node = NodeId(status.nodes[0].node_id);
    for (process, address) in [
        (
            "coordinator",
            cluster.coordinator(1).metrics_address.clone(),
        ),
        ("node", cluster.node(some_node).metrics_address.clone()),
    ] {
        let (code, body) = cairn_test_harness::http_get(&address, "/metrics")
            .await
            .unwrap_or_else(|| panic!("{process} /metrics answers"));
        assert_eq!(code, 200);
        assert!(
            body.contains("cairn_storage_engine{engine=\"memory\"} 1"),
            "{process} exports its engine:\n{body}"
        );
    }
    assert!(
        !cluster.node(some_node).data_dir.join("rocksdb").exists(),
        "an in-memory node writes no RocksDB files"
    );

    tracing::info!("--- data is served");
    let written = write_one_key_per_shard(&cluster, 4, "memory").await;
    assert_readable(&cluster, &written).await;

    tracing::info!("--- restart a node that holds replicas: it comes back empty, as a new node");
    let victim = NodeId(status.shards[0].voters[0]);
    let reborn = cluster.restart_as_new_node(victim).await;
    assert!(
        reborn.0 > victim.0,
        "ids are never reused: {reborn} after {victim}"
    );
    wait_for(
        "the old node down and every shard on 3 live voters without it",
        WAIT,
        || {
            let cluster = &cluster;
            async move {
                cluster.cluster_status().await.filter(|status| {
                    let old_down = status
                        .nodes
                        .iter()
                        .any(|n| n.node_id == victim.0 && n.state == pb::NodeState::Down as i32);
                    old_down
                        && fully_replicated(status, 3)
                        && status.shards.iter().all(|s| !s.voters.contains(&victim.0))
                })
            }
        },
    )
    .await;

    tracing::info!("--- nothing acknowledged was lost: the other replicas kept it");
    assert_readable(&cluster, &written).await;
}
