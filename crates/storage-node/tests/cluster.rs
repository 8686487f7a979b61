//! Cluster tests with real `cairn-node` processes on 127.0.0.x: replication, the leader
//! killed with -9, a restarted node catching up, and a replica added after the log was
//! purged catching up by snapshot.

use cairn_proto::kv::v1 as kv;
use cairn_proto::node::v1 as node;
use cairn_test_harness::{shard_target, wait_for, Cluster, ClusterSpec, WriteIds};
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_cairn-node");
const WAIT: Duration = Duration::from_secs(60);

/// Three nodes of a static bootstrap (node ids 1, 2, 3), each holding every one of `shards`.
async fn start(shards: u32, env: &[(&str, &str)]) -> Cluster {
    ClusterSpec::new(Path::new(BINARY))
        .static_bootstrap()
        .nodes(3)
        .shards(shards)
        .env(env)
        .start()
        .await
}

fn key(shard: ShardId, i: usize) -> Vec<u8> {
    format!("s{}/key/{i:05}", shard.0).into_bytes()
}

/// Writes `count` keys to `shard`; returns what was acknowledged.
async fn write_keys(
    cluster: &Cluster,
    ids: &mut WriteIds,
    shard: ShardId,
    from: usize,
    count: usize,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut acknowledged = BTreeMap::new();
    for i in from..from + count {
        let value = format!("value-{i}").into_bytes();
        cluster
            .must_put(shard, ids.next_id(), &key(shard, i), &value, WAIT)
            .await;
        acknowledged.insert(key(shard, i), value);
    }
    acknowledged
}

async fn applied_index(cluster: &Cluster, id: NodeId, shard: ShardId) -> Option<u64> {
    Some(cluster.status(id, shard).await?.applied_index)
}

/// Waits until `id` has applied at least everything the leader has committed now.
async fn wait_caught_up(cluster: &Cluster, id: NodeId, shard: ShardId) {
    let leader = cluster.wait_for_leader(shard, WAIT).await;
    let target = cluster
        .status(leader, shard)
        .await
        .expect("leader status")
        .committed_index;
    wait_for(
        &format!("{id} to apply {shard} up to {target}"),
        WAIT,
        || async move { (applied_index(cluster, id, shard).await? >= target).then_some(()) },
    )
    .await;
}

async fn assert_replica_holds(
    cluster: &Cluster,
    id: NodeId,
    shard: ShardId,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let scan = cluster
        .local_scan(id, shard)
        .await
        .unwrap_or_else(|| panic!("{id} did not answer a scan"));
    let actual: BTreeMap<Vec<u8>, Vec<u8>> =
        scan.into_iter().map(|kv| (kv.key, kv.value)).collect();
    for (key, value) in expected {
        assert_eq!(
            actual.get(key),
            Some(value),
            "{id} {shard} lost acknowledged key {}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{id} {shard} holds unexpected keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_survives_leader_kill_and_the_old_leader_catches_up() {
    let mut cluster = start(2, &[]).await;
    let mut ids = WriteIds::new();
    let shards = [ShardId(0), ShardId(1)];

    tracing::info!("--- every shard elects a leader");
    for shard in shards {
        cluster.wait_for_leader(shard, WAIT).await;
    }

    tracing::info!("--- acknowledged writes reach every replica");
    let mut expected: BTreeMap<ShardId, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    for shard in shards {
        expected.insert(shard, write_keys(&cluster, &mut ids, shard, 0, 40).await);
    }
    for id in cluster.node_ids() {
        for shard in shards {
            wait_caught_up(&cluster, id, shard).await;
            assert_replica_holds(&cluster, id, shard, &expected[&shard]).await;
        }
    }

    tracing::info!("--- kill -9 the leader of shard 0");
    let old_leader = cluster.wait_for_leader(ShardId(0), WAIT).await;
    cluster.kill(old_leader);
    let new_leader = wait_for("a new leader of shard 0", WAIT, || {
        let cluster = &cluster;
        async move {
            let leader = cluster.leader_of(ShardId(0)).await;
            leader.filter(|id| *id != old_leader)
        }
    })
    .await;
    tracing::info!(%old_leader, %new_leader, "leadership moved");

    tracing::info!("--- writes continue and nothing acknowledged is lost");
    let more = write_keys(&cluster, &mut ids, ShardId(0), 40, 40).await;
    expected.get_mut(&ShardId(0)).unwrap().extend(more);
    let mut client = cluster.kv(new_leader).await.expect("new leader answers");
    for (key, value) in &expected[&ShardId(0)] {
        let response = client
            .get(linearizable_get(ShardId(0), key))
            .await
            .expect("linearizable get")
            .into_inner();
        assert_eq!(response.kv.map(|kv| kv.value).as_ref(), Some(value));
    }

    tracing::info!("--- the old leader restarts and catches up");
    cluster.restart(old_leader);
    for shard in shards {
        wait_caught_up(&cluster, old_leader, shard).await;
        assert_replica_holds(&cluster, old_leader, shard, &expected[&shard]).await;
    }
    let status = cluster.status(old_leader, ShardId(0)).await.unwrap();
    assert_ne!(
        status.role,
        node::ReplicaRole::Leader as i32,
        "the new leader keeps leading (no disruption)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_after_the_log_was_purged_catches_up_by_snapshot() {
    let mut cluster = start(1, &[]).await;
    let mut ids = WriteIds::new();
    let shard = ShardId(0);
    let leader = cluster.wait_for_leader(shard, WAIT).await;

    tracing::info!("--- write, then snapshot and purge the log on every replica");
    let mut expected = write_keys(&cluster, &mut ids, shard, 0, 150).await;
    for id in cluster.node_ids() {
        wait_caught_up(&cluster, id, shard).await;
        let mut admin = cluster.admin(id).await.expect("admin");
        let snapshot = admin
            .trigger_snapshot(node::TriggerSnapshotRequest {
                shard_id: 0,
                purge_log: true,
            })
            .await
            .expect("snapshot")
            .into_inner();
        assert!(
            snapshot.snapshot_index >= 150,
            "snapshot covers the writes: {}",
            snapshot.snapshot_index
        );
    }
    let purged = wait_for("the leader to purge its log", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster
                .status(leader, shard)
                .await
                .map(|s| s.purged_index)
                .filter(|p| *p >= 150)
        }
    })
    .await;

    tracing::info!("--- a fourth node joins as a learner: logs before {purged} are gone, so it needs the snapshot");
    let fourth = cluster.add_node().await;
    let new_address = cluster.node(fourth).address.clone();
    let mut admin4 = cluster.admin(fourth).await.expect("node 4 answers");
    admin4
        .create_replica(node::CreateReplicaRequest { shard_id: 0 })
        .await
        .expect("create replica");
    let mut leader_admin = cluster.admin(leader).await.expect("leader admin");
    leader_admin
        .add_learner(node::AddLearnerRequest {
            shard_id: 0,
            learner: Some(node::ReplicaMember {
                node_id: fourth.0,
                address: new_address,
            }),
            wait_caught_up: true,
        })
        .await
        .expect("add learner");
    wait_caught_up(&cluster, fourth, shard).await;
    let status = cluster.status(fourth, shard).await.unwrap();
    assert!(
        status.snapshot_index >= purged,
        "node 4 was seeded by a snapshot (snapshot index {})",
        status.snapshot_index
    );
    assert_eq!(status.role, node::ReplicaRole::Learner as i32);
    assert_replica_holds(&cluster, fourth, shard, &expected).await;

    tracing::info!(
        "--- promote node 4 and remove node 3: the shard stays writable and node 4 keeps up"
    );
    let replaced = if leader == NodeId(3) {
        NodeId(2)
    } else {
        NodeId(3)
    };
    tracing::info!("--- node 3 refuses to delete its replica while it is a voter (D36)");
    let mut removed_admin = cluster.admin(replaced).await.expect("removed node admin");
    let refused = removed_admin
        .remove_replica(node::RemoveReplicaRequest {
            shard_id: 0,
            excluded_at_epoch: 0,
        })
        .await
        .expect_err("a voter's replica is not deleted");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    assert!(cluster.status(replaced, shard).await.is_some());

    let voters: Vec<u64> = (1..=4).filter(|id| *id != replaced.0).collect();
    let epoch = leader_admin
        .change_membership(node::ChangeMembershipRequest {
            shard_id: 0,
            voters: voters.clone(),
            retain_as_learners: false,
            remove_learners: vec![],
        })
        .await
        .expect("change membership")
        .into_inner()
        .epoch;
    assert!(epoch > 1);
    expected.extend(write_keys(&cluster, &mut ids, shard, 150, 20).await);
    wait_caught_up(&cluster, fourth, shard).await;
    assert_replica_holds(&cluster, fourth, shard, &expected).await;
    let status = cluster.status(fourth, shard).await.unwrap();
    assert_eq!(status.voters, voters);
    assert!(
        status.role == node::ReplicaRole::Leader as i32
            || status.role == node::ReplicaRole::Follower as i32,
        "the promoted replica is a voter: {status:?}"
    );
    // The committed configuration at `epoch` excludes node 3, whatever its own log holds.
    removed_admin
        .remove_replica(node::RemoveReplicaRequest {
            shard_id: 0,
            excluded_at_epoch: epoch,
        })
        .await
        .expect("remove replica");
    assert!(
        cluster.status(replaced, shard).await.is_none(),
        "the removed node no longer hosts the shard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_follower_name_the_leader() {
    let cluster = start(1, &[]).await;
    let leader = cluster.wait_for_leader(ShardId(0), WAIT).await;
    let follower = *cluster.node_ids().iter().find(|id| **id != leader).unwrap();
    // A follower learns of a new leader from its first message, which may come after the
    // leader reports itself, and of the leader's address from the membership entry in the
    // log, which may come after that (Raft records the leader's vote before appending the
    // entries of the same message): only then can it name both.
    let leader_log = cluster
        .status(leader, ShardId(0))
        .await
        .expect("the leader reports its replica")
        .last_log_index;
    wait_for(
        "the follower to know the leader and its log",
        WAIT,
        || async {
            let status = cluster.status(follower, ShardId(0)).await?;
            (status.leader_node_id == leader.0 && status.last_log_index >= leader_log).then_some(())
        },
    )
    .await;
    let mut client = cluster.kv(follower).await.expect("follower answers");
    let request = node::ShardPutRequest {
        target: Some(shard_target(ShardId(0))),
        request: Some(kv::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
    };
    let status = client.put(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    match cairn_test_harness::error_detail(&status) {
        Some(kv::error_detail::Kind::NotLeader(hint)) => {
            assert_eq!(hint.leader_node_id, leader.0);
            assert_eq!(hint.leader_address, cluster.node(leader).address);
        }
        other => panic!("expected a NotLeader detail, got {other:?}"),
    }

    tracing::info!("--- a follower serves a linearizable read after confirming the read index");
    cluster
        .must_put(ShardId(0), WriteIds::new().next_id(), b"fresh", b"1", WAIT)
        .await;
    let response = client
        .get(linearizable_get(ShardId(0), b"fresh"))
        .await
        .expect("follower linearizable read")
        .into_inner();
    assert_eq!(response.kv.map(|kv| kv.value), Some(b"1".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_every_node() {
    let mut cluster = start(2, &[]).await;
    let mut ids = WriteIds::new();
    let shards = [ShardId(0), ShardId(1)];
    for shard in shards {
        cluster.wait_for_leader(shard, WAIT).await;
    }

    tracing::info!("--- acknowledged writes on both shards, then kill -9 every node at once");
    let mut expected: BTreeMap<ShardId, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    for shard in shards {
        expected.insert(shard, write_keys(&cluster, &mut ids, shard, 0, 60).await);
    }
    for id in cluster.node_ids() {
        cluster.kill(id);
    }

    tracing::info!(
        "--- restart: every acknowledged write is there, and the shards take writes again"
    );
    for id in cluster.node_ids() {
        cluster.restart(id);
    }
    for shard in shards {
        cluster.wait_for_leader(shard, WAIT).await;
        let more = write_keys(&cluster, &mut ids, shard, 60, 5).await;
        expected.get_mut(&shard).unwrap().extend(more);
        for id in cluster.node_ids() {
            wait_caught_up(&cluster, id, shard).await;
            assert_replica_holds(&cluster, id, shard, &expected[&shard]).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request() {
    let cluster = start(1, &[]).await;
    let shard = ShardId(0);
    let leader = cluster.wait_for_leader(shard, WAIT).await;
    let target = *cluster.node_ids().iter().find(|id| **id != leader).unwrap();
    cluster
        .must_put(shard, WriteIds::new().next_id(), b"before", b"1", WAIT)
        .await;

    tracing::info!("--- transfer leadership of shard 0 from node {leader} to node {target}");
    let mut admin = cluster.admin(leader).await.expect("leader admin");
    admin
        .transfer_leader(node::TransferLeaderRequest {
            shard_id: 0,
            to_node_id: target.0,
        })
        .await
        .expect("transfer leader");
    wait_for(&format!("node {target} to lead shard 0"), WAIT, || {
        let cluster = &cluster;
        async move { (cluster.leader_of(shard).await == Some(target)).then_some(()) }
    })
    .await;

    tracing::info!("--- the new leader serves writes and still has the old data");
    cluster
        .must_put(shard, WriteIds::new().next_id(), b"after", b"2", WAIT)
        .await;
    let before = cluster
        .local_get(target, shard, b"before")
        .await
        .expect("new leader answers");
    assert_eq!(before.kv.map(|kv| kv.value), Some(b"1".to_vec()));

    tracing::info!("--- asking a follower to transfer names the leader instead");
    let mut follower_admin = cluster.admin(leader).await.expect("old leader admin");
    let status = follower_admin
        .transfer_leader(node::TransferLeaderRequest {
            shard_id: 0,
            to_node_id: leader.0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

fn linearizable_get(shard: ShardId, key: &[u8]) -> node::ShardGetRequest {
    cairn_test_harness::shard_get(shard, key, kv::Consistency::Linearizable)
}

/// D26: with both followers stopped, the leader still serves linearizable reads while its
/// lease runs (a quorum acknowledged it less than `election_timeout_max_ms` ago; ReadIndex
/// would need the stopped followers), and refuses them once the lease has lapsed. With
/// `linearizable_reads = "read_index"` the same read needs the followers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_reads_by_its_lease_until_it_lapses() {
    // A 10 s lease keeps the first read well inside it even on a slow machine; a read that
    // needs a quorum gives up after 1 s.
    let timing = [
        ("CAIRN_RAFT__ELECTION_TIMEOUT_MIN_MS", "5000"),
        ("CAIRN_RAFT__ELECTION_TIMEOUT_MAX_MS", "10000"),
        ("CAIRN_READ_INDEX_TIMEOUT_MS", "1000"),
    ];
    for (policy, lease_reads) in [("lease", true), ("read_index", false)] {
        let mut env = timing.to_vec();
        env.push(("CAIRN_RAFT__LINEARIZABLE_READS", policy));
        let mut cluster = start(1, &env).await;
        let leader = cluster.wait_for_leader(ShardId(0), WAIT).await;
        cluster
            .must_put(ShardId(0), WriteIds::new().next_id(), b"k", b"1", WAIT)
            .await;
        let followers: Vec<NodeId> = cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let mut client = cluster.kv(leader).await.expect("leader answers");
        // The put above was acknowledged by a quorum just now: the lease is fresh.
        let paused_at = std::time::Instant::now();
        for id in &followers {
            cluster.pause(*id);
        }
        let read = client.get(linearizable_get(ShardId(0), b"k")).await;
        let elapsed = paused_at.elapsed();
        if lease_reads {
            let response = read
                .unwrap_or_else(|status| {
                    panic!("read inside the lease ({elapsed:?} after the followers stopped) failed: {status}")
                })
                .into_inner();
            assert_eq!(response.kv.map(|kv| kv.value), Some(b"1".to_vec()));

            tracing::info!("--- reads go on by lease, then stop when it lapses (no quorum)");
            // The lease is 10 s and the leader reads by it for 90 % of that, counted from a
            // quorum acknowledgement just before the pause: reads are served until about 9 s
            // and refused after, with ReadIndex giving up after 1 s.
            let refused = loop {
                let asked = paused_at.elapsed();
                match client.get(linearizable_get(ShardId(0), b"k")).await {
                    Ok(response) => {
                        assert_eq!(
                            response.into_inner().kv.map(|kv| kv.value),
                            Some(b"1".to_vec())
                        );
                        assert!(
                            asked < Duration::from_secs(10),
                            "served a read {asked:?} after the followers stopped, past the 10 s lease"
                        );
                    }
                    Err(status) => break (asked, status),
                }
                // Paces the reads; the loop ends on the first refusal.
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let (asked, status) = refused;
            assert!(
                asked >= Duration::from_secs(5),
                "refused {asked:?} after the followers stopped, well inside the lease: {status}"
            );
            // Unavailable (no quorum confirmed the read index), or FailedPrecondition with a
            // NotLeader detail if the leader has already stepped down.
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition
                ),
                "{status}"
            );
        } else {
            let status = read.expect_err("ReadIndex needs a quorum and the followers are stopped");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
        }
        for id in &followers {
            cluster.resume(*id);
        }
        let response = client
            .get(linearizable_get(ShardId(0), b"k"))
            .await
            .expect("with the followers back, reads succeed")
            .into_inner();
        assert_eq!(response.kv.map(|kv| kv.value), Some(b"1".to_vec()));
    }
}
