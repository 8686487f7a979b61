//! The SDK against a real cluster with two gateways: the calls an application makes, and a
//! gateway killed under it (the client moves to the other one; nothing is applied twice).

use cairn_client::{Client, ClientConfig, Expectation};
use cairn_test_harness::{wait_for, ClusterSpec, ProcessId};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_reads_and_writes_and_survives_a_gateway_loss() {
    // The SDK has no binary of its own: find the servers next to the test harness's.
    let deps = std::env::current_exe().expect("test binary path");
    let bin_dir = deps.parent().and_then(Path::parent).expect("target dir");
    let mut cluster = ClusterSpec::new(&bin_dir.join("cairn-node"))
        .nodes(3)
        .shards(4)
        .gateways(2)
        .start()
        .await;
    let endpoints = vec![
        cluster.gateway(1).address.clone(),
        cluster.gateway(2).address.clone(),
    ];
    let client = Client::connect(ClientConfig::new(endpoints))
        .await
        .expect("connect");
    wait_for("the cluster to take writes", WAIT, || {
        let client = client.clone();
        async move { client.put("probe", "1").await.ok() }
    })
    .await;

    tracing::info!("--- put, get, compare-and-set, put-if-absent, scan");
    client.put("user/1", "ada").await.unwrap();
    assert_eq!(client.get("user/1").await.unwrap().unwrap().value, b"ada");
    let cas = client
        .compare_and_set("user/1", Expectation::Value(b"ada".to_vec()), "grace")
        .await
        .unwrap();
    assert!(cas.succeeded);
    let stale = client
        .compare_and_set("user/1", Expectation::Value(b"ada".to_vec()), "linus")
        .await
        .unwrap();
    assert!(!stale.succeeded);
    assert_eq!(stale.current.unwrap().value, b"grace");
    assert!(
        client
            .put_if_absent("user/2", "alan")
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !client
            .put_if_absent("user/2", "other")
            .await
            .unwrap()
            .succeeded
    );
    let users = client.scan_prefix("user/", 1, 100).await.unwrap();
    let keys: Vec<_> = users.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"user/1".to_vec(), b"user/2".to_vec()]);

    tracing::info!("--- kill -9 one gateway: the client keeps working through the other");
    cluster.kill(ProcessId::Gateway(1));
    for i in 0..20 {
        client
            .put(format!("after/{i}"), "v")
            .await
            .expect("put through the surviving gateway");
    }
    for i in 0..20 {
        let kv = client
            .get(format!("after/{i}"))
            .await
            .unwrap()
            .expect("written");
        assert_eq!(kv.version, 1, "each put applied once");
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.shard_count, 4);
}
