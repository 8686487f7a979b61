//! A shard that lost two of its three replicas (issue 14, D40, D41), with real processes and
//! `cairnctl` as an operator runs it: the cluster status names the shard and its survivor,
//! `cairnctl unsafe recover-shard` brings it back from the survivor, writes work again, and
//! the coordinator re-replicates it to three replicas, checked on the nodes themselves.

use cairn_proto::coordinator::v1 as pb;
use cairn_test_harness::{sibling_binary, wait_for, ClusterSpec, WriteIds};
use cairn_types::{NodeId, ShardId};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const COORDINATOR: &str = env!("CARGO_BIN_EXE_cairn-coordinator");
const WAIT: Duration = Duration::from_secs(90);

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cairnctl(gateway: &str, args: &[&str]) -> Outcome {
    let output = Command::new(sibling_binary(Path::new(COORDINATOR), "cairnctl"))
        .arg("--endpoints")
        .arg(gateway)
        .arg("--timeout")
        .arg("20s")
        .args(args)
        .output()
        .expect("run cairnctl");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn lost(status: &pb::ClusterStatusResponse, shard: ShardId) -> Option<&pb::ShardWithoutQuorum> {
    status
        .shards_without_quorum
        .iter()
        .find(|lost| lost.shard_id == shard.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_recovery_brings_back_a_shard_that_lost_two_of_three_replicas() {
    cairn_test_harness::init_logging();
    let mut cluster = ClusterSpec::new(Path::new(COORDINATOR))
        .coordinators(1)
        .nodes(5)
        .shards(2)
        .gateways(1)
        .fast_failure_detection()
        .start()
        .await;
    let status = cluster.wait_for_placement(WAIT).await;
    let shard = ShardId(0);
    let voters: Vec<NodeId> = status
        .shards
        .iter()
        .find(|s| s.shard_id == shard.0)
        .expect("shard 0 is placed")
        .voters
        .iter()
        .copied()
        .map(NodeId)
        .collect();
    let (survivor, lost_nodes) = (voters[0], [voters[1], voters[2]]);
    assert!(
        status.shards_without_quorum.is_empty(),
        "a healthy cluster has no shard without quorum"
    );

    tracing::info!(%survivor, "--- write a key and wait until the survivor has it");
    let mut ids = WriteIds::new();
    cluster
        .must_put(shard, ids.next_id(), b"before", b"1", WAIT)
        .await;
    wait_for("the survivor to apply the write", WAIT, || {
        let cluster = &cluster;
        async move {
            cluster
                .local_get(survivor, shard, b"before")
                .await
                .and_then(|response| response.kv)
        }
    })
    .await;

    tracing::info!(
        ?lost_nodes,
        "--- kill -9 two of the shard's three replicas, for good"
    );
    for node in lost_nodes {
        cluster.kill(node);
    }

    tracing::info!("--- the coordinator reports the shard without quorum, with its survivor");
    let status = wait_for("shard 0 reported without quorum", WAIT, || {
        let cluster = &cluster;
        async move {
            let status = cluster.cluster_status().await?;
            lost(&status, shard).is_some().then_some(status)
        }
    })
    .await;
    let loss = lost(&status, shard).expect("reported");
    assert_eq!(loss.surviving_voters, vec![survivor.0]);
    assert_eq!(
        loss.voters.iter().copied().collect::<BTreeSet<_>>(),
        voters.iter().map(|n| n.0).collect::<BTreeSet<_>>()
    );
    let gateway = cluster.gateway(1).address.clone();
    let shown = cairnctl(&gateway, &["cluster", "status"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown.stdout.contains("NO QUORUM") && shown.stdout.contains("shard 0 (voters"),
        "{}",
        shown.stdout
    );
    let metrics = cairn_test_harness::http_get(&cluster.coordinator(1).metrics_address, "/metrics")
        .await
        .expect("the coordinator serves metrics")
        .1;
    assert!(
        cairn_test_harness::metric_value(&metrics, "cairn_coordinator_shards_without_quorum")
            .is_some_and(|value| value >= 1.0),
        "the gauge counts the shard"
    );

    tracing::info!("--- refusals: without the flag, from a lost voter");
    let shard_arg = shard.0.to_string();
    let unconfirmed = cairnctl(
        &gateway,
        &[
            "unsafe",
            "recover-shard",
            &shard_arg,
            "--from-node",
            &survivor.0.to_string(),
        ],
    );
    assert_eq!(
        unconfirmed.code, 2,
        "the flag is required: {}",
        unconfirmed.stderr
    );
    let wrong_node = cairnctl(
        &gateway,
        &[
            "unsafe",
            "recover-shard",
            &shard_arg,
            "--from-node",
            &lost_nodes[0].0.to_string(),
            "--yes-i-may-lose-acknowledged-writes",
        ],
    );
    assert_ne!(wrong_node.code, 0, "a lost voter is no survivor");
    assert!(
        wrong_node.stderr.contains("not a surviving voter"),
        "{}",
        wrong_node.stderr
    );

    tracing::info!(%survivor, "--- cairnctl unsafe recover-shard from the survivor");
    let recovered = cairnctl(
        &gateway,
        &[
            "unsafe",
            "recover-shard",
            &shard_arg,
            "--from-node",
            &survivor.0.to_string(),
            "--yes-i-may-lose-acknowledged-writes",
        ],
    );
    assert_eq!(recovered.code, 0, "{}", recovered.stderr);
    assert!(
        recovered
            .stdout
            .contains(&format!("recovered from node {}", survivor.0))
            && recovered.stdout.contains("MAY BE LOST"),
        "{}",
        recovered.stdout
    );

    tracing::info!("--- writes work again, and the old data is there");
    cluster
        .must_put(shard, ids.next_id(), b"after", b"2", WAIT)
        .await;
    assert!(cluster
        .local_get(survivor, shard, b"before")
        .await
        .and_then(|response| response.kv)
        .is_some());

    tracing::info!("--- the shard is re-replicated to three replicas, as the nodes report it");
    let running: BTreeSet<NodeId> = cluster.running_nodes().into_iter().collect();
    wait_for("shard 0 back at three voters that host it", WAIT, || {
        let (cluster, running) = (&cluster, &running);
        async move {
            let status = cluster.cluster_status().await?;
            if lost(&status, shard).is_some() {
                return None;
            }
            let info = status.shards.iter().find(|s| s.shard_id == shard.0)?;
            let voters: BTreeSet<NodeId> = info.voters.iter().copied().map(NodeId).collect();
            if voters.len() != 3 || !voters.is_subset(running) || !info.learners.is_empty() {
                return None;
            }
            for voter in &voters {
                let replica = cluster.status(*voter, shard).await?;
                let reported: BTreeSet<NodeId> =
                    replica.voters.iter().copied().map(NodeId).collect();
                if reported != voters {
                    return None;
                }
                cluster
                    .local_get(*voter, shard, b"after")
                    .await
                    .and_then(|response| response.kv)?;
            }
            Some(())
        }
    })
    .await;
}
