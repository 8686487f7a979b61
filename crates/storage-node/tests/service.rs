//! The storage node's KV and admin services, end to end over gRPC against one in-process
//! node: data model, conditions, transactions, exactly-once writes, and every bad input.

use cairn_proto::kv::v1 as kv;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::node::v1 as node;
use cairn_test_harness::{error_detail, wait_for, WriteIds};
use std::time::Duration;
use tonic::Code;

mod support;
use support::{start_node, TestNode, SHARD};

fn target(shard: u64) -> Option<node::ShardTarget> {
    Some(node::ShardTarget {
        shard_id: shard,
        epoch: 0,
    })
}

fn put_request(key: &str, value: &str) -> kv::PutRequest {
    kv::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

async fn put(
    node: &mut TestNode,
    request: kv::PutRequest,
) -> Result<kv::PutResponse, tonic::Status> {
    node.kv
        .put(node::ShardPutRequest {
            target: target(SHARD),
            request: Some(request),
        })
        .await
        .map(|r| r.into_inner())
}

async fn get(node: &mut TestNode, key: &str) -> Option<kv::KeyValue> {
    let request = kv::GetRequest {
        key: key.into(),
        ..Default::default()
    };
    node.kv
        .get(node::ShardGetRequest {
            target: target(SHARD),
            request: Some(request),
            own_start_ts: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .kv
}

async fn range(
    node: &mut TestNode,
    request: kv::RangeRequest,
) -> Result<kv::RangeResponse, tonic::Status> {
    node.kv
        .range(node::ShardRangeRequest {
            target: target(SHARD),
            request: Some(request),
            own_start_ts: 0,
        })
        .await
        .map(|r| r.into_inner())
}

async fn txn(
    node: &mut TestNode,
    request: kv::TxnRequest,
) -> Result<kv::TxnResponse, tonic::Status> {
    node.kv
        .txn(node::ShardTxnRequest {
            target: target(SHARD),
            request: Some(request),
        })
        .await
        .map(|r| r.into_inner())
}

fn condition(condition: kv::put_condition::Condition) -> Option<kv::PutCondition> {
    Some(kv::PutCondition {
        condition: Some(condition),
    })
}

fn limit_of(status: &tonic::Status) -> String {
    match error_detail(status) {
        Some(Kind::LimitExceeded(limit)) => limit.limit,
        other => panic!("expected a LimitExceeded detail, got {other:?} ({status})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_track_versions_and_revisions() {
    let mut node = start_node(|_| {}).await;

    tracing::info!("--- first put creates the key at revision 1");
    let first = put(&mut node, put_request("k", "v1")).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.revision, 1);
    let kv = get(&mut node, "k").await.unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
        (&b"v1"[..], 1, 1, 1)
    );

    tracing::info!(
        "--- second put bumps version and mod_revision, keeps create_revision, returns prev"
    );
    let second = put(
        &mut node,
        kv::PutRequest {
            prev_kv: true,
            ..put_request("k", "v2")
        },
    )
    .await
    .unwrap();
    assert_eq!(second.revision, 2);
    assert_eq!(second.prev_kv.unwrap().value, b"v1");
    let kv = get(&mut node, "k").await.unwrap();
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
        (&b"v2"[..], 2, 1, 2)
    );

    tracing::info!("--- delete removes it; deleting again changes nothing");
    let delete = |prev_kv| node::ShardDeleteRequest {
        target: target(SHARD),
        request: Some(kv::DeleteRequest {
            key: "k".into(),
            prev_kv,
            write_id: None,
        }),
    };
    let deleted = node.kv.delete(delete(true)).await.unwrap().into_inner();
    assert_eq!((deleted.deleted, deleted.revision), (1, 3));
    assert_eq!(deleted.prev_kv.unwrap().value, b"v2");
    assert!(get(&mut node, "k").await.is_none());
    let again = node.kv.delete(delete(false)).await.unwrap().into_inner();
    assert_eq!((again.deleted, again.revision), (0, 3));

    tracing::info!("--- a re-created key starts over at version 1");
    put(&mut node, put_request("k", "v3")).await.unwrap();
    let kv = get(&mut node, "k").await.unwrap();
    assert_eq!((kv.version, kv.create_revision), (1, 4));

    tracing::info!("--- shards keep separate revisions");
    let other = node
        .kv
        .put(node::ShardPutRequest {
            target: target(1),
            request: Some(put_request("k", "other")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.revision, 1);
    assert_eq!(get(&mut node, "k").await.unwrap().value, b"v3");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_conditions_implement_cas_and_put_if_absent() {
    use kv::put_condition::Condition;
    let mut node = start_node(|_| {}).await;

    tracing::info!("--- put-if-absent succeeds once");
    let created = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::Absent(true)),
            ..put_request("lock", "a")
        },
    )
    .await
    .unwrap();
    assert!(created.succeeded);
    let refused = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::Absent(true)),
            ..put_request("lock", "b")
        },
    )
    .await
    .unwrap();
    assert!(!refused.succeeded);
    assert_eq!(
        refused.prev_kv.unwrap().value,
        b"a",
        "a failed condition returns the current key"
    );
    assert_eq!(
        refused.revision, created.revision,
        "a failed condition writes nothing"
    );
    assert_eq!(get(&mut node, "lock").await.unwrap().value, b"a");

    tracing::info!("--- compare-and-set on value");
    let wrong = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::ValueEquals("zzz".into())),
            ..put_request("lock", "c")
        },
    )
    .await
    .unwrap();
    assert!(!wrong.succeeded);
    let right = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::ValueEquals("a".into())),
            ..put_request("lock", "c")
        },
    )
    .await
    .unwrap();
    assert!(right.succeeded);

    tracing::info!("--- compare-and-set on version and on mod_revision");
    let current = get(&mut node, "lock").await.unwrap();
    assert_eq!(current.version, 2);
    let stale = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::VersionEquals(1)),
            ..put_request("lock", "d")
        },
    )
    .await
    .unwrap();
    assert!(!stale.succeeded);
    let by_version = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::VersionEquals(2)),
            ..put_request("lock", "d")
        },
    )
    .await
    .unwrap();
    assert!(by_version.succeeded);
    let stale = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::ModRevisionEquals(current.mod_revision)),
            ..put_request("lock", "e")
        },
    )
    .await
    .unwrap();
    assert!(!stale.succeeded);
    let by_revision = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::ModRevisionEquals(by_version.revision)),
            ..put_request("lock", "e")
        },
    )
    .await
    .unwrap();
    assert!(by_revision.succeeded);
    assert_eq!(get(&mut node, "lock").await.unwrap().value, b"e");

    tracing::info!("--- version 0 means absent");
    let absent = put(
        &mut node,
        kv::PutRequest {
            condition: condition(Condition::VersionEquals(0)),
            ..put_request("new", "x")
        },
    )
    .await
    .unwrap();
    assert!(absent.succeeded);
    node.stop().await;
}

fn op_put(key: &str, value: &str) -> kv::RequestOp {
    kv::RequestOp {
        request: Some(kv::request_op::Request::Put(put_request(key, value))),
    }
}

fn op_get(key: &str) -> kv::RequestOp {
    kv::RequestOp {
        request: Some(kv::request_op::Request::Get(kv::GetRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn compare_version(key: &str, result: kv::compare::Result, version: u64) -> kv::Compare {
    kv::Compare {
        result: result as i32,
        key: key.into(),
        target: Some(kv::compare::Target::Version(version)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_atomic_and_choose_a_branch() {
    let mut node = start_node(|_| {}).await;
    put(&mut node, put_request("balance", "10")).await.unwrap();

    tracing::info!("--- comparisons hold: success ops run at one revision");
    let response = txn(
        &mut node,
        kv::TxnRequest {
            compare: vec![
                compare_version("balance", kv::compare::Result::Equal, 1),
                compare_version("audit", kv::compare::Result::Equal, 0),
            ],
            success: vec![
                op_put("balance", "7"),
                op_put("audit", "-3"),
                op_get("balance"),
            ],
            failure: vec![op_put("conflict", "1")],
            write_id: None,
        },
    )
    .await
    .unwrap();
    assert!(response.succeeded);
    assert_eq!(
        response.revision, 2,
        "one revision for the whole transaction"
    );
    assert_eq!(response.responses.len(), 3);
    match &response.responses[2].response {
        Some(kv::response_op::Response::Get(get)) => {
            assert_eq!(
                get.kv.as_ref().unwrap().value,
                b"7",
                "a read sees the earlier ops of its transaction branch"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    let balance = get(&mut node, "balance").await.unwrap();
    let audit = get(&mut node, "audit").await.unwrap();
    assert_eq!((balance.mod_revision, audit.mod_revision), (2, 2));
    assert!(get(&mut node, "conflict").await.is_none());

    tracing::info!("--- a comparison fails: failure ops run instead");
    let response = txn(
        &mut node,
        kv::TxnRequest {
            compare: vec![compare_version("balance", kv::compare::Result::Equal, 1)],
            success: vec![op_put("balance", "0")],
            failure: vec![op_put("conflict", "1")],
            write_id: None,
        },
    )
    .await
    .unwrap();
    assert!(!response.succeeded);
    assert_eq!(get(&mut node, "balance").await.unwrap().value, b"7");
    assert_eq!(get(&mut node, "conflict").await.unwrap().value, b"1");

    tracing::info!("--- value and greater/less comparisons");
    let response = txn(
        &mut node,
        kv::TxnRequest {
            compare: vec![
                kv::Compare {
                    result: kv::compare::Result::Equal as i32,
                    key: "balance".into(),
                    target: Some(kv::compare::Target::Value("7".into())),
                },
                kv::Compare {
                    result: kv::compare::Result::Greater as i32,
                    key: "balance".into(),
                    target: Some(kv::compare::Target::ModRevision(1)),
                },
                kv::Compare {
                    result: kv::compare::Result::Less as i32,
                    key: "balance".into(),
                    target: Some(kv::compare::Target::CreateRevision(2)),
                },
                kv::Compare {
                    result: kv::compare::Result::NotEqual as i32,
                    key: "missing".into(),
                    target: Some(kv::compare::Target::Value("x".into())),
                },
            ],
            success: vec![op_put("ok", "1")],
            failure: vec![],
            write_id: None,
        },
    )
    .await
    .unwrap();
    assert!(response.succeeded);

    tracing::info!("--- writing one key twice in a transaction is refused");
    let status = txn(
        &mut node,
        kv::TxnRequest {
            success: vec![op_put("a", "1"), op_put("a", "2")],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(get(&mut node, "a").await.is_none());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_page_with_continuations() {
    let mut node = start_node(|_| {}).await;
    for i in 0..10 {
        put(&mut node, put_request(&format!("a/{i}"), &format!("{i}")))
            .await
            .unwrap();
    }
    for i in 0..3 {
        put(&mut node, put_request(&format!("b/{i}"), "b"))
            .await
            .unwrap();
    }

    tracing::info!("--- a prefix paged three at a time returns every key once, in order");
    let mut keys = Vec::new();
    let mut continuation = Vec::new();
    loop {
        let page = range(
            &mut node,
            kv::RangeRequest {
                prefix: "a/".into(),
                limit: 3,
                continuation: continuation.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(page.kvs.len() <= 3);
        keys.extend(
            page.kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).unwrap()),
        );
        if !page.more {
            break;
        }
        continuation = page.continuation;
    }
    let expected: Vec<String> = (0..10).map(|i| format!("a/{i}")).collect();
    assert_eq!(keys, expected);

    tracing::info!("--- [start, end), keys only, count only");
    let page = range(
        &mut node,
        kv::RangeRequest {
            start: "a/5".into(),
            end: "b/1".into(),
            keys_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got: Vec<String> = page
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    assert_eq!(got, ["a/5", "a/6", "a/7", "a/8", "a/9", "b/0"]);
    assert!(page
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    let counted = range(
        &mut node,
        kv::RangeRequest {
            prefix: "b/".into(),
            count_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((counted.count, counted.kvs.len()), (3, 0));
    let everything = range(&mut node, kv::RangeRequest::default()).await.unwrap();
    assert_eq!(everything.kvs.len(), 13);
    assert_eq!(everything.revision, 13);

    tracing::info!("--- serializable reads are served locally too");
    let local = range(
        &mut node,
        kv::RangeRequest {
            prefix: "b/".into(),
            consistency: kv::Consistency::Serializable as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(local.kvs.len(), 3);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() {
    let mut node = start_node(|config| config.sessions.results_per_client_max = 4).await;
    let mut ids = WriteIds::new();

    tracing::info!("--- the same write id twice: one application, the first answer twice");
    let id = ids.next_id();
    let request = kv::PutRequest {
        write_id: Some(id),
        ..put_request("counter", "1")
    };
    let first = put(&mut node, request.clone()).await.unwrap();
    let retry = put(&mut node, request).await.unwrap();
    assert_eq!(first, retry);
    let kv = get(&mut node, "counter").await.unwrap();
    assert_eq!(kv.version, 1, "the retry must not apply again");

    tracing::info!("--- a retried transaction is not re-evaluated");
    let id = ids.next_id();
    let txn_request = kv::TxnRequest {
        compare: vec![compare_version("counter", kv::compare::Result::Equal, 1)],
        success: vec![op_put("counter", "2")],
        failure: vec![],
        write_id: Some(id),
    };
    let first = txn(&mut node, txn_request.clone()).await.unwrap();
    assert!(first.succeeded);
    let retry = txn(&mut node, txn_request).await.unwrap();
    assert_eq!(
        first, retry,
        "a re-evaluation would have failed the comparison"
    );
    assert_eq!(get(&mut node, "counter").await.unwrap().version, 2);

    tracing::info!("--- a write id reused for another kind of operation is refused");
    let delete = node::ShardDeleteRequest {
        target: target(SHARD),
        request: Some(kv::DeleteRequest {
            key: "counter".into(),
            prev_kv: false,
            write_id: Some(id),
        }),
    };
    let status = node.kv.delete(delete).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(get(&mut node, "counter").await.is_some());

    tracing::info!(
        "--- results beyond the window are forgotten; their retry is refused, not applied"
    );
    let mut unacknowledged = WriteIds::new();
    let oldest = unacknowledged.next_id();
    let keep_first_incomplete = |mut id: kv::WriteId| {
        id.first_incomplete_sequence = oldest.sequence;
        id
    };
    put(
        &mut node,
        kv::PutRequest {
            write_id: Some(oldest),
            ..put_request("w", "0")
        },
    )
    .await
    .unwrap();
    for i in 1..=5 {
        let id = keep_first_incomplete(unacknowledged.next_id());
        put(
            &mut node,
            kv::PutRequest {
                write_id: Some(id),
                ..put_request("w", &i.to_string())
            },
        )
        .await
        .unwrap();
    }
    let status = put(
        &mut node,
        kv::PutRequest {
            write_id: Some(oldest),
            ..put_request("w", "0")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        matches!(error_detail(&status), Some(Kind::WriteWindowExceeded(w)) if w.sequence == oldest.sequence)
    );
    assert_eq!(get(&mut node, "w").await.unwrap().value, b"5");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_named_error_and_changes_nothing() {
    let mut node = start_node(|config| {
        config.limits.key_bytes_max = 16;
        config.limits.value_bytes_max = 64;
        config.limits.request_bytes_max = 512;
        config.limits.txn_ops_max = 20;
        config.limits.range_keys_max = 100;
    })
    .await;

    tracing::info!("--- key, value, transaction and page limits are named");
    let status = put(&mut node, put_request(&"k".repeat(17), "v"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), limit_of(&status)),
        (Code::InvalidArgument, "key_bytes_max".into())
    );
    let status = put(&mut node, put_request("k", &"v".repeat(65)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), limit_of(&status)),
        (Code::InvalidArgument, "value_bytes_max".into())
    );
    let ops = (0..21).map(|i| op_get(&format!("k{i}"))).collect();
    let status = txn(
        &mut node,
        kv::TxnRequest {
            success: ops,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), limit_of(&status)),
        (Code::InvalidArgument, "txn_ops_max".into())
    );
    let status = range(
        &mut node,
        kv::RangeRequest {
            limit: 101,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), limit_of(&status)),
        (Code::InvalidArgument, "range_keys_max".into())
    );

    tracing::info!("--- the request size limit is named");
    // Ten puts of 60-byte values: each op within limits, the request (~700 bytes) is not.
    let ops = (0..10)
        .map(|i| op_put(&format!("k{i}"), &"v".repeat(60)))
        .collect();
    let status = txn(
        &mut node,
        kv::TxnRequest {
            success: ops,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), limit_of(&status)),
        (Code::InvalidArgument, "request_bytes_max".into())
    );

    tracing::info!("--- malformed requests say which field is wrong");
    let status = put(&mut node, put_request("", "v")).await.unwrap_err();
    assert!(matches!(error_detail(&status), Some(Kind::InvalidArgument(f)) if f.field == "key"));
    let bad_id = kv::WriteId {
        client_id: 0,
        sequence: 1,
        first_incomplete_sequence: 1,
    };
    let status = put(
        &mut node,
        kv::PutRequest {
            write_id: Some(bad_id),
            ..put_request("k", "v")
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error_detail(&status), Some(Kind::InvalidArgument(f)) if f.field == "write_id.client_id")
    );
    let status = range(
        &mut node,
        kv::RangeRequest {
            start: "b".into(),
            end: "a".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = node
        .kv
        .get(node::ShardGetRequest {
            target: None,
            request: None,
            own_start_ts: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    tracing::info!("--- a missing body is named, not read as an empty key");
    let status = node
        .kv
        .put(node::ShardPutRequest {
            target: target(SHARD),
            request: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        matches!(error_detail(&status), Some(Kind::InvalidArgument(f)) if f.field == "request"),
        "{status:?}"
    );

    tracing::info!("--- an unknown shard is its own error");
    let status = node
        .kv
        .put(node::ShardPutRequest {
            target: target(99),
            request: Some(put_request("k", "v")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(matches!(error_detail(&status), Some(Kind::UnknownShard(s)) if s.shard_id == 99));

    tracing::info!("--- a stale epoch is refused with the current one");
    let learner = node::ReplicaMember {
        node_id: 7,
        address: "127.0.0.1:1".into(),
    };
    let epoch = node
        .admin
        .add_learner(node::AddLearnerRequest {
            shard_id: SHARD,
            learner: Some(learner),
            wait_caught_up: false,
        })
        .await
        .unwrap()
        .into_inner()
        .epoch;
    assert!(epoch > 1);
    let status = node
        .kv
        .put(node::ShardPutRequest {
            target: Some(node::ShardTarget {
                shard_id: SHARD,
                epoch: 1,
            }),
            request: Some(put_request("k", "v")),
        })
        .await
        .unwrap_err();
    assert!(matches!(error_detail(&status), Some(Kind::StaleEpoch(s)) if s.current_epoch == epoch));
    let current = node::ShardTarget {
        shard_id: SHARD,
        epoch,
    };
    node.kv
        .put(node::ShardPutRequest {
            target: Some(current),
            request: Some(put_request("k", "v")),
        })
        .await
        .unwrap();

    tracing::info!("--- nothing above changed the data except the last put");
    let everything = range(&mut node, kv::RangeRequest::default()).await.unwrap();
    let keys: Vec<_> = everything.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"k".to_vec()]);
    node.stop().await;
}

/// A plain HTTP/1.1 GET; returns (status code, body).
async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints_report_the_node() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let metrics_address = address.clone();
    let mut node = start_node(move |config| config.metrics_listen_address = metrics_address).await;
    put(&mut node, put_request("k", "v")).await.unwrap();

    tracing::info!("--- /livez and /readyz answer 200 once every replica has a leader");
    assert_eq!(http_get(&address, "/livez").await.0, 200);
    // Ready also means applied up to the commit index, which a replica reaches just after
    // the write's answer (another entry, e.g. the leader's compaction-point proposal, may
    // still be applying): wait for it rather than sample once.
    wait_for("/readyz to answer 200", Duration::from_secs(10), || async {
        (http_get(&address, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    tracing::info!("--- /metrics has the per-RPC, per-shard, group commit and RocksDB series");
    let (status, text) = http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"cairn_grpc_requests_total{code="0",method="/cairn.node.v1.ShardKv/Put"} 1"#,
        "cairn_grpc_request_duration_seconds_bucket",
        r#"cairn_shard_is_leader{shard="0"} 1"#,
        r#"cairn_shard_term{shard="1"}"#,
        "cairn_shard_applied_index",
        "cairn_shard_replication_lag_entries",
        "cairn_node_replicas 2",
        "cairn_group_commit_fsyncs_total",
        "cairn_group_commit_appends_total",
        r#"cairn_rocksdb_sst_bytes{cf="write"}"#,
        "cairn_rocksdb_pending_compaction_bytes",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    let fsyncs: u64 = text
        .lines()
        .find(|line| line.starts_with("cairn_group_commit_fsyncs_total "))
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|value| value.parse().ok())
        .expect("fsync counter");
    assert!(fsyncs >= 1, "the put was fsynced");
    node.stop().await;
}

/// Opens a batch stream to `node`; items go in through the returned sender.
async fn open_batch(
    node: &mut TestNode,
) -> (
    tokio::sync::mpsc::UnboundedSender<node::BatchRequest>,
    tonic::Streaming<node::BatchResponse>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let inbound = node
        .kv
        .batch(tokio_stream::wrappers::UnboundedReceiverStream::new(
            receiver,
        ))
        .await
        .expect("the node opens a batch stream")
        .into_inner();
    (sender, inbound)
}

fn item(id: u64, op: node::shard_op::Op) -> node::BatchItem {
    node::BatchItem {
        id,
        op: Some(node::ShardOp { op: Some(op) }),
        timeout_ms: 5_000,
        traceparent: String::new(),
    }
}

/// Reads results until `count` have come, keyed by item id.
async fn batch_results(
    inbound: &mut tonic::Streaming<node::BatchResponse>,
    count: usize,
) -> std::collections::HashMap<u64, node::batch_item_result::Result> {
    let mut results = std::collections::HashMap::new();
    while results.len() < count {
        let response = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("results within 10 s")
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        for result in response.results {
            let previous = results.insert(result.id, result.result.expect("a result is set"));
            assert!(previous.is_none(), "item {} answered twice", result.id);
        }
    }
    results
}

fn item_error(result: &node::batch_item_result::Result) -> tonic::Status {
    match result {
        node::batch_item_result::Result::Error(error) => tonic::Status::with_details(
            Code::from_i32(error.code),
            error.message.clone(),
            error.details.clone().into(),
        ),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_stream_answers_every_item_as_its_unary_call_would() {
    use node::batch_item_result::Result as R;
    use node::shard_op::Op;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_address = format!("127.0.0.1:{port}");
    let scrape_address = metrics_address.clone();
    let mut node = start_node(move |config| config.metrics_listen_address = metrics_address).await;
    let (sender, mut inbound) = open_batch(&mut node).await;
    let put_op = |key: &str, value: &str| {
        Op::Put(node::ShardPutRequest {
            target: target(SHARD),
            request: Some(put_request(key, value)),
        })
    };

    tracing::info!("--- one message, many items: successes and per-item errors, matched by id");
    sender
        .send(node::BatchRequest {
            items: vec![
                item(1, put_op("a", "1")),
                item(2, put_op("b", "2")),
                item(
                    3,
                    Op::Put(node::ShardPutRequest {
                        target: target(99),
                        request: Some(put_request("c", "3")),
                    }),
                ),
                node::BatchItem {
                    op: None,
                    ..item(4, put_op("unused", "x"))
                },
                item(5, put_op("", "empty key")),
            ],
        })
        .unwrap();
    let results = batch_results(&mut inbound, 5).await;
    let (R::Put(a), R::Put(b)) = (&results[&1], &results[&2]) else {
        panic!("puts a and b succeed: {results:?}");
    };
    assert_ne!(a.revision, b.revision, "two writes, two revisions");
    let unknown = item_error(&results[&3]);
    assert_eq!(unknown.code(), Code::NotFound, "{unknown}");
    assert!(
        matches!(error_detail(&unknown), Some(Kind::UnknownShard(_))),
        "{unknown:?}"
    );
    assert_eq!(item_error(&results[&4]).code(), Code::InvalidArgument);
    let empty_key = item_error(&results[&5]);
    assert_eq!(empty_key.code(), Code::InvalidArgument, "{empty_key}");
    assert!(
        matches!(error_detail(&empty_key), Some(Kind::InvalidArgument(_))),
        "{empty_key:?}"
    );

    tracing::info!("--- reads, deletes and transactions on the same stream see the writes");
    sender
        .send(node::BatchRequest {
            items: vec![
                item(
                    10,
                    Op::Get(node::ShardGetRequest {
                        target: target(SHARD),
                        own_start_ts: 0,
                        request: Some(kv::GetRequest {
                            key: "a".into(),
                            ..Default::default()
                        }),
                    }),
                ),
                item(
                    11,
                    Op::Delete(node::ShardDeleteRequest {
                        target: target(SHARD),
                        request: Some(kv::DeleteRequest {
                            key: "b".into(),
                            prev_kv: true,
                            ..Default::default()
                        }),
                    }),
                ),
                item(
                    12,
                    Op::Txn(node::ShardTxnRequest {
                        target: target(SHARD),
                        request: Some(kv::TxnRequest {
                            compare: vec![compare_version("a", kv::compare::Result::Equal, 1)],
                            success: vec![op_put("t", "from txn")],
                            ..Default::default()
                        }),
                    }),
                ),
            ],
        })
        .unwrap();
    let results = batch_results(&mut inbound, 3).await;
    let R::Get(got) = &results[&10] else {
        panic!("get a: {results:?}")
    };
    assert_eq!(got.kv.as_ref().unwrap().value, b"1");
    let R::Delete(deleted) = &results[&11] else {
        panic!("delete b: {results:?}")
    };
    assert_eq!(deleted.deleted, 1);
    assert_eq!(deleted.prev_kv.as_ref().unwrap().value, b"2");
    let R::Txn(txn_result) = &results[&12] else {
        panic!("txn: {results:?}")
    };
    assert!(txn_result.succeeded);
    assert_eq!(get(&mut node, "t").await.unwrap().value, b"from txn");

    tracing::info!("--- each item is counted under the method it stands for");
    let (status, text) = http_get(&scrape_address, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"cairn_grpc_requests_total{code="0",method="/cairn.node.v1.ShardKv/Put"} 2"#,
        r#"cairn_grpc_requests_total{code="5",method="/cairn.node.v1.ShardKv/Put"} 1"#,
        r#"cairn_grpc_requests_total{code="0",method="/cairn.node.v1.ShardKv/Txn"} 1"#,
        r#"cairn_grpc_requests_total{code="0",method="/cairn.node.v1.ShardKv/Delete"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }

    tracing::info!(
        "--- a message with more items than the limit ends the stream with a named error"
    );
    let too_many = (0..1025)
        .map(|id| item(100 + id, put_op("x", "y")))
        .collect();
    sender.send(node::BatchRequest { items: too_many }).unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an answer within 10 s")
        .expect_err("the stream ends with an error");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("1024"), "{refused}");
    assert!(get(&mut node, "x").await.is_none(), "no item of it ran");

    tracing::info!("--- shutting the node down ends an idle stream, and the node stops");
    let (_idle_sender, mut idle) = open_batch(&mut node).await;
    let _ = node.stop.take().expect("running").send(());
    let ended = tokio::time::timeout(Duration::from_secs(15), idle.message())
        .await
        .expect("the node ends its batch streams when shutting down");
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(20), &mut node.server)
        .await
        .expect("the node stops although a batch stream was open")
        .expect("the server task")
        .expect("the node stops cleanly");
}

/// A call stamped for another node (a replaced node's successor at its address) is refused
/// on every service with a WrongNode detail, and does nothing (D35).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_meant_for_another_node_are_refused_and_do_nothing() {
    use cairn_proto::addressing::{wrong_node_of, Destination};
    fn stamped<T>(destination: Destination, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        destination.stamp(request.metadata_mut());
        request
    }
    let mut node = start_node(|_| {}).await;

    let refused = node
        .admin
        .remove_replica(stamped(
            Destination::new(2, ""),
            node::RemoveReplicaRequest {
                shard_id: SHARD,
                excluded_at_epoch: u64::MAX,
            },
        ))
        .await
        .expect_err("a RemoveReplica meant for node 2 is refused by node 1");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let wrong = wrong_node_of(&refused).expect("a WrongNode detail");
    assert_eq!((wrong.intended_node_id, wrong.node_id), (2, 1));
    let status = node
        .admin
        .shard_status(node::ShardStatusRequest {
            shard_id: SHARD,
            all: false,
        })
        .await
        .expect("the replica is still there");
    assert_eq!(status.into_inner().replicas.len(), 1);

    let refused = node
        .kv
        .put(stamped(
            Destination::new(7, ""),
            node::ShardPutRequest {
                target: target(SHARD),
                request: Some(put_request("fenced", "no")),
            },
        ))
        .await
        .expect_err("a put meant for node 7 is refused");
    assert!(wrong_node_of(&refused).is_some(), "{refused}");

    tracing::info!("--- the same calls naming node 1 are served");
    node.kv
        .put(stamped(
            Destination::new(1, ""),
            node::ShardPutRequest {
                target: target(SHARD),
                request: Some(put_request("fenced", "yes")),
            },
        ))
        .await
        .expect("a put meant for node 1 is served");
    let get = node
        .kv
        .get(node::ShardGetRequest {
            target: target(SHARD),
            own_start_ts: 0,
            request: Some(kv::GetRequest {
                key: b"fenced".to_vec(),
                ..Default::default()
            }),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(get.kv.map(|kv| kv.value), Some(b"yes".to_vec()));
    node.stop().await;
}
