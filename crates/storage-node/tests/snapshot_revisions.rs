//! A replica installed from a snapshot answers reads at old revisions exactly as its peers
//! did (issue 15, D62): the snapshot carries every kept version, deletions included, not only
//! the latest state. Real `cairn-node` processes on 127.0.0.x, a static bootstrap.

use cairn_proto::kv::v1 as kv;
use cairn_proto::node::v1 as node;
use cairn_test_harness::{shard_target, wait_for, Cluster, ClusterSpec, WriteIds};
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_cairn-node");
const WAIT: Duration = Duration::from_secs(60);
const SHARD: ShardId = ShardId(0);
const KEYS: usize = 12;
const ROUNDS: usize = 4;

/// One acknowledged change: at `revision`, `key` became `value` (`None`: deleted).
struct Change {
    revision: u64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// The model: every key's value as of `revision`, from the acknowledged changes.
fn state_at(history: &[Change], revision: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut state = BTreeMap::new();
    for change in history.iter().filter(|c| c.revision <= revision) {
        match &change.value {
            Some(value) => state.insert(change.key.clone(), value.clone()),
            None => state.remove(&change.key),
        };
    }
    state
}

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:03}").into_bytes()
}

/// Deletes `key` through the shard's leader, retrying with the same write id.
async fn must_delete(cluster: &Cluster, ids: &mut WriteIds, key: &[u8]) -> u64 {
    let request = node::ShardDeleteRequest {
        target: Some(shard_target(SHARD)),
        request: Some(kv::DeleteRequest {
            key: key.to_vec(),
            write_id: Some(ids.next_id()),
            ..Default::default()
        }),
    };
    wait_for("a delete to be acknowledged", WAIT, || {
        let request = request.clone();
        async move {
            let leader = cluster.leader_of(SHARD).await?;
            let mut client = cluster.kv(leader).await?;
            let response = client.delete(request).await.ok()?.into_inner();
            Some(response.revision)
        }
    })
    .await
}

/// Every key of the shard as node `id` answers a range at `revision` (it must lead).
async fn range_at(cluster: &Cluster, id: NodeId, revision: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut client = cluster.kv(id).await.expect("node answers");
    let response = client
        .range(node::ShardRangeRequest {
            target: Some(shard_target(SHARD)),
            own_start_ts: 0,
            request: Some(kv::RangeRequest {
                limit: 10_000,
                revision,
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|status| panic!("range at {revision} on {id}: {status}"))
        .into_inner();
    assert!(!response.more, "one page holds every key");
    response
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// `key` as node `id` answers a get at `revision` (it must lead).
async fn get_at(cluster: &Cluster, id: NodeId, key: &[u8], revision: u64) -> Option<Vec<u8>> {
    let mut client = cluster.kv(id).await.expect("node answers");
    let mut request = cairn_test_harness::shard_get(SHARD, key, kv::Consistency::Linearizable);
    if let Some(get) = request.request.as_mut() {
        get.revision = revision;
    }
    let response = client
        .get(request)
        .await
        .unwrap_or_else(|status| panic!("get at {revision} on {id}: {status}"))
        .into_inner();
    assert_eq!(response.revision, revision, "served at the asked revision");
    response.kv.map(|kv| kv.value)
}

/// Transfers leadership of the shard to `to` and waits until it leads.
async fn move_leadership(cluster: &Cluster, to: NodeId) {
    let leader = cluster.wait_for_leader(SHARD, WAIT).await;
    if leader != to {
        let mut admin = cluster.admin(leader).await.expect("leader admin");
        admin
            .transfer_leader(node::TransferLeaderRequest {
                shard_id: SHARD.0,
                to_node_id: to.0,
            })
            .await
            .expect("transfer leader");
    }
    wait_for(&format!("{to} to lead {SHARD}"), WAIT, || async {
        (cluster.leader_of(SHARD).await == Some(to)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_installed_from_a_snapshot_answers_old_revision_reads() {
    let mut cluster = ClusterSpec::new(Path::new(BINARY))
        .static_bootstrap()
        .nodes(3)
        .shards(1)
        .start()
        .await;
    let mut ids = WriteIds::new();
    let leader = cluster.wait_for_leader(SHARD, WAIT).await;

    tracing::info!(
        "--- rounds of overwrites and deletes; the revision after each round is a checkpoint"
    );
    let mut history = Vec::new();
    let mut checkpoints = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..KEYS {
            // Every third key is deleted in odd rounds, so the history holds tombstones and
            // keys that come back after one.
            if round % 2 == 1 && i % 3 == 0 {
                let revision = must_delete(&cluster, &mut ids, &key(i)).await;
                history.push(Change {
                    revision,
                    key: key(i),
                    value: None,
                });
                continue;
            }
            let value = format!("round-{round}-key-{i}").into_bytes();
            let response = cluster
                .must_put(SHARD, ids.next_id(), &key(i), &value, WAIT)
                .await;
            history.push(Change {
                revision: response.revision,
                key: key(i),
                value: Some(value),
            });
        }
        checkpoints.push(history.last().expect("a change").revision);
    }
    let first = history.first().expect("a change").revision;
    // Before the first write (revision 0 asks for the latest state, so only when the first
    // write's revision is above 1), and between two writes of the first round.
    if first > 1 {
        checkpoints.insert(0, first - 1);
    }
    checkpoints.push(history[KEYS / 2].revision);

    tracing::info!("--- the leader's answers at every checkpoint match the model");
    for &revision in &checkpoints {
        assert_eq!(
            range_at(&cluster, leader, revision).await,
            state_at(&history, revision),
            "{leader} at revision {revision}"
        );
    }

    tracing::info!("--- every replica snapshots and purges its log");
    let applied = cluster
        .status(leader, SHARD)
        .await
        .expect("leader status")
        .applied_index;
    for id in cluster.node_ids() {
        let mut admin = cluster.admin(id).await.expect("admin");
        admin
            .trigger_snapshot(node::TriggerSnapshotRequest {
                shard_id: SHARD.0,
                purge_log: true,
            })
            .await
            .expect("snapshot");
    }
    let purged = wait_for("the leader to purge its log", WAIT, || async {
        cluster
            .status(leader, SHARD)
            .await
            .map(|s| s.purged_index)
            .filter(|p| *p >= applied)
    })
    .await;

    tracing::info!(
        "--- a fourth node joins: the log before {purged} is gone, so a snapshot seeds it"
    );
    let fourth = cluster.add_node().await;
    let mut admin4 = cluster.admin(fourth).await.expect("node 4 answers");
    admin4
        .create_replica(node::CreateReplicaRequest { shard_id: SHARD.0 })
        .await
        .expect("create replica");
    let mut leader_admin = cluster.admin(leader).await.expect("leader admin");
    leader_admin
        .add_learner(node::AddLearnerRequest {
            shard_id: SHARD.0,
            learner: Some(node::ReplicaMember {
                node_id: fourth.0,
                address: cluster.node(fourth).address.clone(),
            }),
            wait_caught_up: true,
        })
        .await
        .expect("add learner");
    // Node 4 reports its install once it has applied it.
    wait_for("node 4 to report the installed snapshot", WAIT, || async {
        let status = cluster.status(fourth, SHARD).await?;
        (status.snapshot_index >= purged).then_some(())
    })
    .await;
    let mut voters: Vec<u64> = cluster.node_ids().iter().map(|id| id.0).collect();
    voters.sort_unstable();
    leader_admin
        .change_membership(node::ChangeMembershipRequest {
            shard_id: SHARD.0,
            voters,
            retain_as_learners: false,
            remove_learners: vec![],
        })
        .await
        .expect("promote node 4");

    tracing::info!("--- node 4 leads and answers every old revision as the model says");
    move_leadership(&cluster, fourth).await;
    for &revision in &checkpoints {
        assert_eq!(
            range_at(&cluster, fourth, revision).await,
            state_at(&history, revision),
            "{fourth} (installed from a snapshot) at revision {revision}"
        );
    }
    // Every acknowledged change is readable at its own revision and just below it.
    for change in &history {
        assert_eq!(
            get_at(&cluster, fourth, &change.key, change.revision).await,
            change.value,
            "{} at its revision {}",
            String::from_utf8_lossy(&change.key),
            change.revision
        );
        if change.revision == 1 {
            continue; // revision 0 means "the latest"
        }
        let before = state_at(&history, change.revision - 1);
        assert_eq!(
            get_at(&cluster, fourth, &change.key, change.revision - 1).await,
            before.get(&change.key).cloned(),
            "{} just below revision {}",
            String::from_utf8_lossy(&change.key),
            change.revision
        );
    }

    tracing::info!("--- node 4 keeps history for what comes after the snapshot too");
    let value = b"after-the-snapshot".to_vec();
    let response = cluster
        .must_put(SHARD, ids.next_id(), &key(0), &value, WAIT)
        .await;
    history.push(Change {
        revision: response.revision,
        key: key(0),
        value: Some(value),
    });
    for revision in [response.revision - 1, response.revision] {
        assert_eq!(
            range_at(&cluster, fourth, revision).await,
            state_at(&history, revision),
            "{fourth} at revision {revision}"
        );
    }
}
