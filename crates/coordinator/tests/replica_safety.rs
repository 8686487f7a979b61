//! Replica safety at the edges of a node's life, with real processes: a node that lost its
//! data and comes back at its old address after a coordinator leader change gets a new id
//! (D50), and shard creations interrupted by a node that stops answering are resumed (D51),
//! on the same voters when it comes back, on other nodes when it is gone for good.

use cairn_proto::coordinator::v1 as pb;
use cairn_test_harness::{wait_for, Cluster, ClusterSpec, LinkFault, ProcessId};
use cairn_types::NodeId;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const COORDINATOR: &str = env!("CARGO_BIN_EXE_cairn-coordinator");
const WAIT: Duration = Duration::from_secs(90);
/// How long interrupted creations may take to be resumed and founded: the founding grace
/// (2 × suspect_after = 3 s here), down_after (3 s) for a node gone for good, a few
/// reconcile rounds and elections.
const RESUME_WAIT: Duration = Duration::from_secs(45);

/// Every shard has 3 voters, all in `live`, a leader among them, and nothing in flight.
fn replicated_on(status: &pb::ClusterStatusResponse, live: &BTreeSet<u64>) -> bool {
    status.shards.len() == status.shard_count as usize
        && status.shards.iter().all(|shard| {
            shard.voters.len() == 3
                && shard.voters.iter().all(|v| live.contains(v))
                && shard.learners.is_empty()
                && live.contains(&shard.leader_node_id)
        })
        && status.moves_in_flight == 0
        && status.under_replicated_shards == 0
}

async fn wait_replicated_on(
    cluster: &Cluster,
    live: &BTreeSet<u64>,
    timeout: Duration,
    what: &str,
) -> pb::ClusterStatusResponse {
    wait_for(what, timeout, || async move {
        cluster
            .cluster_status()
            .await
            .filter(|status| replicated_on(status, live))
    })
    .await
}

fn ids(nodes: &[NodeId]) -> BTreeSet<u64> {
    nodes.iter().map(|n| n.0).collect()
}

/// The bug the rendered-pods test found: the join gave an empty node the old id of a record
/// at its address that the coordinator leader had not heard from, and a leader elected after
/// the node died never had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_back_after_a_coordinator_leader_change_gets_a_new_id() {
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(3)
        .nodes(3)
        .shards(4)
        .fast_failure_detection()
        .start()
        .await;
    let before = wait_replicated_on(
        &cluster,
        &ids(&cluster.node_ids()),
        WAIT,
        "initial placement",
    )
    .await;

    tracing::info!("--- a node dies with its data, and the coordinator leader with it");
    let victim = cluster.node_ids()[1];
    cluster.kill(victim);
    let leader = before.coordinator_leader_id;
    cluster.restart(ProcessId::Coordinator(leader));
    wait_for("a coordinator leader again", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster
                .cluster_status()
                .await
                .filter(|s| s.coordinator_leader_id != 0)
        }
    })
    .await;

    tracing::info!("--- the node starts again at its address with an empty data folder");
    // `replace_node` asserts that the node did not get its old id back.
    let reborn = cluster.replace_node(victim).await;
    let live: BTreeSet<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != victim)
        .map(|id| id.0)
        .collect();
    assert!(live.contains(&reborn.0));

    tracing::info!("--- every replica of the old id is replaced on the new one");
    let status = wait_replicated_on(&cluster, &live, WAIT, "every shard on the live nodes").await;
    let old = status
        .nodes
        .iter()
        .find(|n| n.node_id == victim.0)
        .expect("the old id stays known");
    assert_eq!(old.state, pb::NodeState::Down as i32);
    assert_eq!(old.replica_count, 0);
}

/// Starts 2 nodes (too few to create any shard), holds every call of the coordinator to the
/// third node, starts it, and waits until every shard's creation has been tried with it as
/// a voter: the replica on it cannot be created, so no shard is founded.
async fn start_with_creations_interrupted() -> (Cluster, NodeId) {
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(1)
        .nodes(2)
        .shards(4)
        .fast_failure_detection()
        .network_faults()
        // An admin call held by the partition fails after 2 s instead of 11.
        .coordinator_env(&[("CAIRN_ADMIN_TIMEOUT_MS", "1000")])
        .start()
        .await;
    cluster.set_link_to_next_node(ProcessId::Coordinator(1), LinkFault::Blackhole);
    let unreachable = cluster.add_node().await;
    tracing::info!(%unreachable, "--- the coordinator creates every shard on a node it cannot reach");
    wait_for(
        "every shard created with the unreachable node",
        WAIT,
        || {
            let cluster = &cluster;
            async move {
                cluster.cluster_status().await.filter(|status| {
                    status.shards.len() == 4
                        && status.shards.iter().all(|shard| {
                            shard.voters.contains(&unreachable.0) && shard.leader_node_id == 0
                        })
                })
            }
        },
    )
    .await;
    (cluster, unreachable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_shard_creations_are_resumed_on_the_same_voters() {
    let (cluster, _) = start_with_creations_interrupted().await;

    tracing::info!("--- the node answers again: the creations are driven on to the end");
    let healed_at = Instant::now();
    cluster.heal();
    wait_replicated_on(
        &cluster,
        &ids(&cluster.node_ids()),
        RESUME_WAIT,
        "every shard founded on its first voters",
    )
    .await;
    tracing::info!(elapsed = ?healed_at.elapsed(), "every shard founded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_shard_creations_move_to_other_nodes_when_a_voter_is_gone() {
    let (mut cluster, unreachable) = start_with_creations_interrupted().await;

    tracing::info!("--- the node dies for good and another one joins");
    let killed_at = Instant::now();
    cluster.kill(unreachable);
    cluster.add_node().await;
    let live: BTreeSet<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|id| *id != unreachable)
        .map(|id| id.0)
        .collect();
    wait_replicated_on(
        &cluster,
        &live,
        RESUME_WAIT,
        "every shard founded on the live nodes",
    )
    .await;
    tracing::info!(elapsed = ?killed_at.elapsed(), "every shard founded");
}
