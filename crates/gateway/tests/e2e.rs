//! End-to-end tests through the gateway on a real local cluster (coordinator, storage nodes,
//! gateways as processes): the public API, cross-shard ranges against a model, several
//! gateways and a gateway restart, and a concurrent workload while a shard leader dies.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_test_harness::{
    error_detail, http_get, metric_value, wait_for, Cluster, ClusterSpec, ProcessId,
};
use cairn_types::NodeId;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 4;

/// A coordinator, `nodes` storage nodes and one gateway; returns once every shard is placed.
async fn start(nodes: u64) -> Cluster {
    let cluster = ClusterSpec::new(Path::new(GATEWAY))
        .nodes(nodes)
        .shards(SHARDS)
        .gateways(1)
        .fast_failure_detection()
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    cluster
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<pb::KeyValue> {
    kv.get(pb::GetRequest {
        key: key.into(),
        ..Default::default()
    })
    .await
    .expect("get")
    .into_inner()
    .kv
}

/// Two keys that live in different shards.
fn keys_in_two_shards() -> (String, String) {
    let shard = |key: &str| cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS);
    let first = "txn/a".to_string();
    let second = (0..1000)
        .map(|i| format!("txn/b{i}"))
        .find(|k| shard(k) != shard(&first))
        .expect("a key elsewhere");
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_works_through_any_gateway() {
    let mut cluster = start(3).await;
    let (mut kv, mut admin) = cluster.gateway_clients(1, WAIT).await;

    tracing::info!("--- put, get, delete");
    let first = kv
        .put(put("hello", "world"))
        .await
        .expect("put")
        .into_inner();
    assert!(first.succeeded);
    let got = get(&mut kv, "hello").await.expect("the key is there");
    assert_eq!((got.value.as_slice(), got.version), (&b"world"[..], 1));
    let deleted = kv
        .delete(pb::DeleteRequest {
            key: "hello".into(),
            prev_kv: true,
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert!(get(&mut kv, "hello").await.is_none());

    tracing::info!("--- compare-and-set and put-if-absent in one shard");
    let absent = pb::PutCondition {
        condition: Some(pb::put_condition::Condition::Absent(true)),
    };
    let created = kv
        .put(pb::PutRequest {
            condition: Some(absent.clone()),
            ..put("lock", "a")
        })
        .await
        .unwrap()
        .into_inner();
    let refused = kv
        .put(pb::PutRequest {
            condition: Some(absent),
            ..put("lock", "b")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.succeeded && !refused.succeeded);
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::Result::Equal as i32,
            key: "lock".into(),
            target: Some(pb::compare::Target::Value("a".into())),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Put(put("lock", "c"))),
        }],
        failure: vec![],
        write_id: None,
    };
    assert!(kv.txn(txn).await.unwrap().into_inner().succeeded);
    assert_eq!(get(&mut kv, "lock").await.unwrap().value, b"c");

    tracing::info!("--- a transaction across shards commits both keys at one revision");
    let (a, b) = keys_in_two_shards();
    let cross = pb::TxnRequest {
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::Put(put(&a, "1"))),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::Put(put(&b, "1"))),
            },
        ],
        ..Default::default()
    };
    let committed = kv.txn(cross).await.expect("a cross-shard txn").into_inner();
    assert!(committed.succeeded);
    let (got_a, got_b) = (
        get(&mut kv, &a).await.expect("a written"),
        get(&mut kv, &b).await.expect("b written"),
    );
    assert_eq!(
        (got_a.value.as_slice(), got_b.value.as_slice()),
        (&b"1"[..], &b"1"[..])
    );
    assert_eq!(
        (got_a.mod_revision, got_b.mod_revision),
        (committed.revision, committed.revision)
    );

    tracing::info!("--- bad input is refused with the limit named");
    let status = kv.put(put(&"k".repeat(5000), "v")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        matches!(error_detail(&status), Some(pb::error_detail::Kind::LimitExceeded(l)) if l.limit == "key_bytes_max")
    );

    tracing::info!("--- cluster status, members and shards through the gateway");
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            status.shard_count,
            status.replication_factor,
            status.node_count,
            status.nodes_up
        ),
        (SHARDS, 3, 3, 3)
    );
    let members = admin
        .members(pb::MembersRequest {})
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(members
        .iter()
        .all(|m| m.state == "up" && m.replica_count == u64::from(SHARDS)));
    let shards = admin
        .shards(pb::ShardsRequest {})
        .await
        .unwrap()
        .into_inner()
        .shards;
    assert_eq!(shards.len(), SHARDS as usize);

    tracing::info!("--- a second gateway, sending unary calls to the nodes (no batch stream), answers the same");
    let second = cluster.add_gateway(&[("CAIRN_BATCH_NODE_REQUESTS", "false")]);
    let (mut kv2, _) = cluster.gateway_clients(second, WAIT).await;
    assert_eq!(get(&mut kv2, "lock").await.unwrap().value, b"c");
    kv2.put(put("from-two", "2")).await.unwrap();
    kv2.put(put("unary", "x")).await.unwrap();
    let unary_txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::Result::Equal as i32,
            key: "unary".into(),
            target: Some(pb::compare::Target::Value("x".into())),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::Put(put("unary", "y"))),
        }],
        ..Default::default()
    };
    assert!(kv2.txn(unary_txn).await.unwrap().into_inner().succeeded);
    let deleted = kv2
        .delete(pb::DeleteRequest {
            key: "unary".into(),
            prev_kv: true,
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.prev_kv.unwrap().value, b"y");
    assert!(get(&mut kv2, "unary").await.is_none());
    let stream_ops = |id: u64| {
        let address = cluster.gateway(id).metrics_address.clone();
        async move {
            let (_, body) = http_get(&address, "/metrics")
                .await
                .expect("gateway /metrics");
            metric_value(&body, "cairn_gateway_node_stream_ops_total").expect("the stream counter")
        }
    };
    assert!(
        stream_ops(1).await >= 8.0,
        "gateway 1 sends over batch streams"
    );
    assert_eq!(stream_ops(2).await, 0.0, "gateway 2 sends unary calls only");

    tracing::info!("--- restarting a gateway loses nothing");
    cluster.restart(ProcessId::Gateway(1));
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let value = wait_for("the restarted gateway to serve", WAIT, || {
        let mut kv = kv.clone();
        async move {
            kv.get(pb::GetRequest {
                key: "from-two".into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .kv
        }
    })
    .await;
    assert_eq!(value.value, b"2");
    assert_eq!(get(&mut kv, "lock").await.unwrap().value, b"c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_across_shards_match_a_model() {
    let cluster = start(3).await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();

    tracing::info!("--- random keys over every shard, some deleted again");
    for _ in 0..300 {
        let key = format!("r/{:04x}", rng.random_range(0..0x2000u32)).into_bytes();
        let value = format!("v{}", rng.random::<u32>()).into_bytes();
        kv.put(pb::PutRequest {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        model.insert(key, value);
    }
    let doomed: Vec<Vec<u8>> = model
        .keys()
        .filter(|_| rng.random_bool(0.2))
        .cloned()
        .collect();
    for key in &doomed {
        kv.delete(pb::DeleteRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        model.remove(key);
    }
    kv.put(put("other/x", "not in the prefix")).await.unwrap();

    tracing::info!("--- paging a prefix with random page sizes returns the model, in order, once");
    for _ in 0..6 {
        let page_size = rng.random_range(1..60u64);
        let mut seen = Vec::new();
        let mut continuation = Vec::new();
        for _ in 0..1000 {
            let page = kv
                .range(pb::RangeRequest {
                    prefix: b"r/".to_vec(),
                    limit: page_size,
                    continuation: continuation.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.kvs.len() as u64 <= page_size);
            seen.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            if !page.more {
                break;
            }
            continuation = page.continuation;
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
        assert_eq!(seen, expected, "page size {page_size}");
    }

    tracing::info!("--- [start, end) ranges, counts and keys-only agree with the model");
    for _ in 0..10 {
        let a = format!("r/{:04x}", rng.random_range(0..0x2000u32)).into_bytes();
        let b = format!("r/{:04x}", rng.random_range(0..0x2000u32)).into_bytes();
        let (start, end) = if a <= b { (a, b) } else { (b, a) };
        let expected: Vec<Vec<u8>> = model
            .range(start.clone()..end.clone())
            .map(|(k, _)| k.clone())
            .collect();
        let page = kv
            .range(pb::RangeRequest {
                start: start.clone(),
                end: end.clone(),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let keys: Vec<Vec<u8>> = page.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(keys, expected);
        assert!(page.kvs.iter().all(|kv| kv.value.is_empty()));
        let counted = kv
            .range(pb::RangeRequest {
                start,
                end,
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(counted.count, expected.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_or_applied_twice_when_a_leader_dies() {
    let mut cluster = start(3).await;
    let (kv, _) = cluster.gateway_clients(1, WAIT).await;

    tracing::info!("--- 8 writers put unique keys through the gateway");
    let stop_at = Instant::now() + Duration::from_secs(8);
    let mut writers = Vec::new();
    for writer in 0..8u32 {
        let mut kv = kv.clone();
        writers.push(tokio::spawn(async move {
            let (mut acknowledged, mut failed) = (Vec::new(), Vec::new());
            let mut i = 0u32;
            while Instant::now() < stop_at {
                let key = format!("w/{writer}/{i:05}");
                match kv.put(put(&key, &format!("{writer}-{i}"))).await {
                    Ok(_) => acknowledged.push(key),
                    Err(_) => failed.push(key),
                }
                i += 1;
            }
            (acknowledged, failed)
        }));
    }

    tracing::info!("--- kill -9 the leader of shard 0 while they write");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cluster.cluster_status().await.expect("status");
    let leader = status
        .shards
        .iter()
        .find(|s| s.shard_id == 0)
        .unwrap()
        .leader_node_id;
    let victim = NodeId(leader);
    cluster.kill(victim);

    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    for writer in writers {
        let (ok, bad) = writer.await.unwrap();
        acknowledged.extend(ok);
        failed.extend(bad);
    }
    tracing::info!(
        acknowledged = acknowledged.len(),
        failed = failed.len(),
        "workload done"
    );
    assert!(
        acknowledged.len() > 100,
        "the workload made progress: {}",
        acknowledged.len()
    );

    tracing::info!("--- every acknowledged write is there, exactly once (version 1)");
    let mut kv = kv.clone();
    for key in &acknowledged {
        let got = get(&mut kv, key)
            .await
            .unwrap_or_else(|| panic!("acknowledged {key} was lost"));
        assert_eq!(got.version, 1, "{key} was applied {} times", got.version);
    }
    for key in &failed {
        if let Some(got) = get(&mut kv, key).await {
            assert_eq!(
                got.version, 1,
                "{key} (outcome unknown) was applied {} times",
                got.version
            );
        }
    }
    let all = kv
        .range(pb::RangeRequest {
            prefix: b"w/".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(all.count as usize >= acknowledged.len());
    assert!(
        all.count as usize <= acknowledged.len() + failed.len(),
        "no write appeared that nobody made"
    );
}

/// Records what the client saw, for the linearizability checker.
fn record(
    client: u64,
    key: &str,
    input: cairn_linearizability::Input,
    call: u64,
    returned: Option<(u64, cairn_linearizability::Output)>,
) -> cairn_linearizability::Operation {
    // This test's own calls do not record revisions: the workload's histories check them.
    cairn_linearizability::Operation {
        client,
        key: key.to_string(),
        input,
        call,
        returned,
        revision: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_while_a_leader_dies() {
    use cairn_linearizability::{Input, Output};
    let mut cluster = start(3).await;
    let (kv, _) = cluster.gateway_clients(1, WAIT).await;
    let keys = ["lin/a", "lin/b", "lin/c"];
    let epoch = Instant::now();
    let now = move || epoch.elapsed().as_micros() as u64;

    tracing::info!("--- 6 clients get, put, compare-and-set and delete 3 keys with unique values");
    let stop_at = Instant::now() + Duration::from_secs(8);
    let mut clients = Vec::new();
    for client in 0..6u64 {
        let mut kv = kv.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(client);
            let mut history = Vec::new();
            let mut last_seen: Option<String> = None;
            let mut n = 0u64;
            while Instant::now() < stop_at {
                n += 1;
                let key = keys[rng.random_range(0..keys.len())];
                let value = format!("c{client}-{n}");
                let call = now();
                let roll = rng.random_range(0..100);
                let operation = if roll < 40 {
                    let result = kv
                        .get(pb::GetRequest {
                            key: key.into(),
                            ..Default::default()
                        })
                        .await;
                    let returned = result.ok().map(|r| {
                        let seen = r
                            .into_inner()
                            .kv
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                        last_seen = seen.clone();
                        (now(), Output::Value(seen))
                    });
                    record(client, key, Input::Get, call, returned)
                } else if roll < 70 {
                    let result = kv.put(put(key, &value)).await;
                    record(
                        client,
                        key,
                        Input::Put(value),
                        call,
                        result.ok().map(|_| (now(), Output::Done)),
                    )
                } else if roll < 90 {
                    let expected = last_seen.clone();
                    let condition = match &expected {
                        None => pb::put_condition::Condition::Absent(true),
                        Some(v) => {
                            pb::put_condition::Condition::ValueEquals(v.clone().into_bytes())
                        }
                    };
                    let request = pb::PutRequest {
                        condition: Some(pb::PutCondition {
                            condition: Some(condition),
                        }),
                        ..put(key, &value)
                    };
                    let result = kv.put(request).await;
                    let returned = result
                        .ok()
                        .map(|r| (now(), Output::Succeeded(r.into_inner().succeeded)));
                    record(
                        client,
                        key,
                        Input::Cas {
                            expected,
                            new: Some(value),
                        },
                        call,
                        returned,
                    )
                } else {
                    let result = kv
                        .delete(pb::DeleteRequest {
                            key: key.into(),
                            ..Default::default()
                        })
                        .await;
                    record(
                        client,
                        key,
                        Input::Delete,
                        call,
                        result.ok().map(|_| (now(), Output::Done)),
                    )
                };
                history.push(operation);
            }
            history
        }));
    }

    tracing::info!("--- kill -9 the leader of the shard of lin/a, then restart it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cluster.cluster_status().await.expect("status");
    let shard = cairn_types::sharding::shard_for_key(b"lin/a", SHARDS).0;
    let leader = status
        .shards
        .iter()
        .find(|s| s.shard_id == shard)
        .unwrap()
        .leader_node_id;
    let victim = NodeId(leader);
    cluster.kill(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(victim);

    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.unwrap());
    }
    let unknown = history.iter().filter(|op| op.returned.is_none()).count();
    tracing::info!(operations = history.len(), unknown, "checking the history");
    assert!(
        history.len() > 200,
        "the clients made progress: {}",
        history.len()
    );
    let checked =
        cairn_test_harness::workload::assert_linearizable(&history, cluster.root(), "leader-dies");
    assert_eq!(checked, history.len());
}
