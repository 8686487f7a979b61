//! The storage node's transaction calls (issue 16, D93, D94) end to end over gRPC against one
//! in-process node: prewrite then commit with the answer remembered under the write id, a
//! read and a one-phase write stopped by a lock, an expired transaction rolled back by
//! check-status and its secondary resolved, lock scans, and the refusals' codes and details.

use cairn_proto::kv::v1 as kv;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::check_txn_status_response::Status as TxnStatus;
use cairn_proto::node::v1::txn_mutation::Op;
use cairn_test_harness::{error_detail, wait_for};
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

fn put(key: &str, value: &str) -> node::TxnMutation {
    node::TxnMutation {
        key: key.into(),
        op: Op::Put as i32,
        value: value.into(),
    }
}

fn prewrite_request(
    start_ts: u64,
    primary: &str,
    lock_ttl_ms: u64,
    mutations: Vec<node::TxnMutation>,
    write_id: Option<kv::WriteId>,
) -> node::PrewriteRequest {
    node::PrewriteRequest {
        target: target(SHARD),
        start_ts,
        primary: primary.into(),
        lock_ttl_ms,
        mutations,
        write_id,
    }
}

async fn get(
    node: &mut TestNode,
    key: &str,
    own_start_ts: u64,
) -> Result<Option<kv::KeyValue>, tonic::Status> {
    node.kv
        .get(node::ShardGetRequest {
            target: target(SHARD),
            request: Some(kv::GetRequest {
                key: key.into(),
                ..Default::default()
            }),
            own_start_ts,
        })
        .await
        .map(|response| response.into_inner().kv)
}

async fn one_phase_put(node: &mut TestNode, key: &str, value: &str) -> Result<u64, tonic::Status> {
    node.kv
        .put(node::ShardPutRequest {
            target: target(SHARD),
            request: Some(kv::PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
        })
        .await
        .map(|response| response.into_inner().revision)
}

async fn scan(node: &mut TestNode, max_start_ts: u64, limit: u32) -> node::ScanLocksResponse {
    node.kv
        .scan_locks(node::ScanLocksRequest {
            target: target(SHARD),
            start: vec![],
            end: vec![],
            max_start_ts,
            limit,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn check_status(
    node: &mut TestNode,
    primary: &str,
    start_ts: u64,
    rollback_if_missing: bool,
) -> Result<TxnStatus, tonic::Status> {
    node.kv
        .check_txn_status(node::CheckTxnStatusRequest {
            target: target(SHARD),
            primary: primary.into(),
            start_ts,
            rollback_if_missing,
        })
        .await
        .map(|response| response.into_inner().status.expect("a status"))
}

fn key_locked(status: &tonic::Status) -> kv::KeyLocked {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status}");
    match error_detail(status) {
        Some(Kind::KeyLocked(lock)) => lock,
        other => panic!("expected KeyLocked, got {other:?} ({status})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prewrite_then_commit_is_exactly_once_and_locks_stop_reads_and_writes() {
    let mut node = start_node(|_| {}).await;
    one_phase_put(&mut node, "acct/a", "10").await.unwrap();
    let write_id = kv::WriteId {
        client_id: 77,
        sequence: 1,
        first_incomplete_sequence: 1,
    };

    tracing::info!("--- prewrite acct/a (primary) and acct/b at 100");
    let prewritten = node
        .kv
        .prewrite(prewrite_request(
            100,
            "acct/a",
            60_000,
            vec![put("acct/a", "7"), put("acct/b", "3")],
            Some(write_id),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prewritten.first_result, None);

    tracing::info!("--- a latest read meets the lock; the transaction's own read does not");
    let lock = key_locked(&get(&mut node, "acct/a", 0).await.unwrap_err());
    assert_eq!(lock.key, b"acct/a");
    assert_eq!(lock.primary, b"acct/a");
    assert_eq!(lock.start_ts, 100);
    assert_eq!(lock.ttl_ms, 60_000);
    assert_eq!(lock.kind, kv::key_locked::Kind::Put as i32);
    let own = get(&mut node, "acct/a", 100).await.unwrap().unwrap();
    assert_eq!(own.value, b"10");
    tracing::info!("--- a one-phase write of a locked key is refused with the lock");
    let refused = one_phase_put(&mut node, "acct/b", "x").await.unwrap_err();
    assert_eq!(key_locked(&refused).key, b"acct/b");

    tracing::info!("--- the locks as a scan sees them, bounded and filtered");
    let all = scan(&mut node, 0, 0).await;
    let keys: Vec<&[u8]> = all.locks.iter().map(|lock| lock.key.as_slice()).collect();
    assert_eq!(keys, [b"acct/a".as_slice(), b"acct/b"]);
    assert!(!all.more);
    let first = scan(&mut node, 0, 1).await;
    assert_eq!(first.locks.len(), 1);
    assert!(first.more);
    assert!(scan(&mut node, 99, 0).await.locks.is_empty());

    tracing::info!("--- commit at 200 with the answer to remember");
    let answer = kv::TxnResponse {
        revision: 200,
        succeeded: true,
        responses: vec![],
    };
    let committed = node
        .kv
        .commit(node::CommitRequest {
            target: target(SHARD),
            start_ts: 100,
            commit_ts: 200,
            keys: vec![b"acct/a".to_vec(), b"acct/b".to_vec()],
            write_id: Some(write_id),
            result: Some(answer.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.commit_ts, 200);
    let a = get(&mut node, "acct/a", 0).await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (b"7".as_slice(), 200));
    assert_eq!(
        get(&mut node, "acct/b", 0).await.unwrap().unwrap().value,
        b"3"
    );
    assert!(scan(&mut node, 0, 0).await.locks.is_empty());

    tracing::info!(
        "--- the same request retried (another gateway): the first answer, nothing locked"
    );
    let retried = node
        .kv
        .prewrite(prewrite_request(
            300,
            "acct/a",
            60_000,
            vec![put("acct/a", "0"), put("acct/b", "0")],
            Some(write_id),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retried.first_result, Some(answer));
    assert!(scan(&mut node, 0, 0).await.locks.is_empty());

    tracing::info!("--- a transaction that started before the commit conflicts");
    let conflict = node
        .kv
        .prewrite(prewrite_request(
            150,
            "acct/a",
            60_000,
            vec![put("acct/a", "1")],
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::Aborted);
    assert_eq!(
        error_detail(&conflict),
        Some(Kind::Conflict(kv::Conflict {
            key: b"acct/a".to_vec(),
            start_revision: 150,
            conflicting_revision: 200,
        }))
    );

    tracing::info!("--- bad input is named");
    let empty = node
        .kv
        .prewrite(prewrite_request(400, "acct/a", 60_000, vec![], None))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transaction_is_rolled_back_and_its_secondary_resolved() {
    let mut node = start_node(|_| {}).await;

    tracing::info!("--- a live transaction: locked, with its time left");
    node.kv
        .prewrite(prewrite_request(
            500,
            "m",
            60_000,
            vec![put("m", "1")],
            None,
        ))
        .await
        .unwrap();
    match check_status(&mut node, "m", 500, false).await.unwrap() {
        TxnStatus::LockedTtlRemainingMs(left) => assert!(left > 0 && left <= 60_000),
        other => panic!("expected locked, got {other:?}"),
    }
    node.kv
        .rollback(node::RollbackRequest {
            target: target(SHARD),
            start_ts: 500,
            keys: vec![b"m".to_vec()],
        })
        .await
        .unwrap();
    assert_eq!(
        check_status(&mut node, "m", 500, false).await.unwrap(),
        TxnStatus::RolledBack(true)
    );

    tracing::info!("--- a transaction whose coordinator died: its 1 ms locks expire");
    node.kv
        .prewrite(prewrite_request(
            600,
            "x",
            1,
            vec![put("x", "1"), put("y", "2")],
            None,
        ))
        .await
        .unwrap();
    wait_for(
        "check-status to roll the expired primary back",
        Duration::from_secs(10),
        || {
            let mut kv = node.kv.clone();
            async move {
                let status = kv
                    .check_txn_status(node::CheckTxnStatusRequest {
                        target: target(SHARD),
                        primary: b"x".to_vec(),
                        start_ts: 600,
                        rollback_if_missing: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (status == TxnStatus::RolledBack(true)).then_some(())
            }
        },
    )
    .await;
    assert_eq!(get(&mut node, "x", 0).await.unwrap(), None);
    let secondary = key_locked(&get(&mut node, "y", 0).await.unwrap_err());
    assert_eq!(
        (secondary.primary.as_slice(), secondary.start_ts),
        (b"x".as_slice(), 600)
    );

    tracing::info!("--- the reader resolves the secondary by the primary's answer");
    node.kv
        .resolve_locks(node::ResolveLocksRequest {
            target: target(SHARD),
            start_ts: 600,
            keys: vec![b"y".to_vec()],
            commit_ts: 0,
        })
        .await
        .unwrap();
    assert_eq!(get(&mut node, "y", 0).await.unwrap(), None);
    one_phase_put(&mut node, "y", "free").await.unwrap();
    assert!(scan(&mut node, 0, 0).await.locks.is_empty());

    tracing::info!("--- the late commit of the dead coordinator is refused");
    let late = node
        .kv
        .commit(node::CommitRequest {
            target: target(SHARD),
            start_ts: 600,
            commit_ts: 700,
            keys: vec![b"x".to_vec()],
            write_id: None,
            result: None,
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::Aborted);
    assert_eq!(
        error_detail(&late),
        Some(Kind::TxnRolledBack(kv::TxnRolledBack {
            key: b"x".to_vec(),
            start_ts: 600,
        }))
    );

    tracing::info!("--- a primary nobody prewrote: not found, or rolled back when asked");
    let missing = check_status(&mut node, "z", 800, false).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(matches!(error_detail(&missing), Some(Kind::TxnNotFound(_))));
    assert_eq!(
        check_status(&mut node, "z", 800, true).await.unwrap(),
        TxnStatus::RolledBack(true)
    );
    node.stop().await;
}
