//! Cross-shard transactions through the gateway on a real local cluster (issue 16,
//! docs/transactions.md): atomic commit at one revision, ops that see the earlier ops of their
//! branch, conflicts with the conflicting key (a write between the reads and the prewrite, and
//! a range that changed before the commit), and a gateway that dies between prewrite and commit
//! (the `CAIRN_TEST_CRASH_AFTER_PREWRITE` hook): its locks are resolved within the bound, by
//! readers and by the expired-lock scan, nothing of it is visible, and a retry with the same
//! write id through another gateway commits once and answers the first result ever after.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::kv::v1::request_op::Request;
use cairn_proto::kv::v1::response_op::Response;
use cairn_proto::node::v1 as node_pb;
use cairn_test_harness::otlp::start_receiver;
use cairn_test_harness::{
    error_detail, http_get, metric_value, shard_target, wait_for, Cluster, ClusterSpec, WriteIds,
};
use cairn_types::ShardId;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 4;
/// Short lock lifetimes, so that the test waits seconds, not the defaults' five.
const LOCK_TTL_MS: u64 = 2_000;
const LOCK_SCAN_INTERVAL_MS: u64 = 1_000;
/// Lock TTL + scan interval + a generous round: the bound on a dead gateway's locks.
const RESOLVED_WITHIN: Duration =
    Duration::from_millis(LOCK_TTL_MS + LOCK_SCAN_INTERVAL_MS + 5_000);
const PAUSE_BEFORE_PREWRITE_MS: &str = "3000";

async fn start() -> Cluster {
    start_with(&[]).await
}

/// The cluster, every process with `env` too.
async fn start_with(env: &[(&str, &str)]) -> Cluster {
    let ttl = LOCK_TTL_MS.to_string();
    let scan = LOCK_SCAN_INTERVAL_MS.to_string();
    let cluster = ClusterSpec::new(Path::new(GATEWAY))
        .nodes(3)
        .shards(SHARDS)
        .gateways(1)
        .env(env)
        .gateway_env(&[
            ("CAIRN_TXN__LOCK_TTL_MS", ttl.as_str()),
            ("CAIRN_TXN__LOCK_SCAN_INTERVAL_MS", scan.as_str()),
        ])
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    cluster
}

fn shard(key: &str) -> ShardId {
    cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS)
}

/// A key with `prefix` in a shard other than those of `others`.
fn key_elsewhere(prefix: &str, others: &[&str]) -> String {
    (0..1000)
        .map(|i| format!("{prefix}{i}"))
        .find(|key| others.iter().all(|other| shard(other) != shard(key)))
        .expect("a key in another shard")
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn get_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Get(pb::GetRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

fn prefix_op(prefix: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Range(pb::RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        })),
    }
}

fn value_is(key: &str, value: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.into(),
        target: Some(pb::compare::Target::Value(value.into())),
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    kv.put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .revision
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

fn get_response(response: &pb::ResponseOp) -> Option<&pb::KeyValue> {
    match &response.response {
        Some(Response::Get(get)) => get.kv.as_ref(),
        other => panic!("not a get response: {other:?}"),
    }
}

fn range_keys(response: &pb::ResponseOp) -> Vec<(String, String)> {
    match &response.response {
        Some(Response::Range(range)) => range
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.clone()).unwrap(),
                    String::from_utf8(kv.value.clone()).unwrap(),
                )
            })
            .collect(),
        other => panic!("not a range response: {other:?}"),
    }
}

/// The key a `Conflict` answer names.
fn conflict_key(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    match error_detail(status) {
        Some(Kind::Conflict(conflict)) => String::from_utf8(conflict.key).unwrap(),
        other => panic!("not a conflict: {other:?} ({status:?})"),
    }
}

/// Waits until gateway `number`'s log shows `text`.
async fn wait_for_log(cluster: &Cluster, number: u64, text: &str) {
    let path = cluster.gateway(number).log_path.clone();
    wait_for(&format!("gateway {number} to log {text:?}"), WAIT, || {
        let path = path.clone();
        async move {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|log| log.contains(text))
                .map(|_| ())
        }
    })
    .await;
}

/// Every lock on every shard, asked of each shard's leader.
async fn locks_in_cluster(cluster: &Cluster) -> Option<Vec<pb::KeyLocked>> {
    let mut all = Vec::new();
    for shard in (0..u64::from(SHARDS)).map(ShardId) {
        let leader = cluster.leader_of(shard).await?;
        let mut client = cluster.kv(leader).await?;
        let page = client
            .scan_locks(node_pb::ScanLocksRequest {
                target: Some(shard_target(shard)),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        all.extend(page.locks);
    }
    Some(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_transactions_are_atomic_see_their_own_ops_and_conflict() {
    cairn_test_harness::init_logging();
    let mut cluster = start().await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let a = "t/a".to_string();
    let b = key_elsewhere("t/b", &[&a]);

    tracing::info!("--- a transaction over two shards commits both keys at one revision");
    put(&mut kv, &a, "a0").await;
    put(&mut kv, &b, "b0").await;
    let txn = pb::TxnRequest {
        compare: vec![value_is(&a, "a0")],
        success: vec![
            get_op(&a),
            put_op(&a, "a1"),
            get_op(&a),
            put_op(&b, "b1"),
            prefix_op("t/"),
        ],
        failure: vec![get_op(&a)],
        write_id: None,
    };
    let committed = kv.txn(txn).await.expect("cross-shard txn").into_inner();
    assert!(committed.succeeded);
    let revision = committed.revision;

    tracing::info!("--- its ops saw the earlier ops of their branch");
    let before = get_response(&committed.responses[0]).expect("a existed");
    assert_eq!(before.value, b"a0");
    let after = get_response(&committed.responses[2]).expect("a after the put");
    assert_eq!(
        (after.value.as_slice(), after.mod_revision, after.version),
        (&b"a1"[..], revision, 2)
    );
    assert_eq!(
        range_keys(&committed.responses[4]),
        [(a.clone(), "a1".to_string()), (b.clone(), "b1".to_string())]
    );
    let (got_a, got_b) = (
        get(&mut kv, &a).await.unwrap(),
        get(&mut kv, &b).await.unwrap(),
    );
    assert_eq!(
        (got_a.value.as_slice(), got_b.value.as_slice()),
        (&b"a1"[..], &b"b1"[..])
    );
    assert_eq!(
        (got_a.mod_revision, got_b.mod_revision),
        (revision, revision)
    );

    tracing::info!("--- a failed compare runs the failure branch and changes nothing");
    let failed = kv
        .txn(pb::TxnRequest {
            compare: vec![value_is(&a, "a0")],
            success: vec![put_op(&a, "never"), put_op(&b, "never")],
            failure: vec![get_op(&a), get_op(&b)],
            write_id: None,
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(!failed.succeeded);
    assert_eq!(get_response(&failed.responses[1]).unwrap().value, b"b1");
    assert_eq!(get(&mut kv, &a).await.unwrap().mod_revision, revision);

    tracing::info!(
        "--- a write between a transaction's reads and its prewrite: Conflict on that key"
    );
    let slow = cluster.add_gateway(&[(
        "CAIRN_TEST_PAUSE_BEFORE_PREWRITE_MS",
        PAUSE_BEFORE_PREWRITE_MS,
    )]);
    let (mut slow_kv, _) = cluster.gateway_clients(slow, WAIT).await;
    let racing_txn = pb::TxnRequest {
        compare: vec![value_is(&a, "a1")],
        success: vec![put_op(&a, "a2"), put_op(&b, "b2")],
        failure: vec![],
        write_id: None,
    };
    let racing = tokio::spawn(async move { slow_kv.txn(racing_txn).await });
    wait_for_log(&cluster, slow, "pausing before prewrite").await;
    let sneaked = put(&mut kv, &b, "sneaked").await;
    let status = racing
        .await
        .unwrap()
        .expect_err("the transaction lost the race");
    assert_eq!(conflict_key(&status), b);
    assert_eq!(
        get(&mut kv, &a).await.unwrap().value,
        b"a1",
        "nothing of it applied"
    );
    assert_eq!(get(&mut kv, &b).await.unwrap().mod_revision, sneaked);

    tracing::info!("--- a range that changes before the commit: Conflict (etcd's mutex recipe)");
    let holder = key_elsewhere("holder/", &[]);
    let (mut slow_kv, _) = cluster.gateway_clients(slow, WAIT).await;
    let log_before = std::fs::read_to_string(&cluster.gateway(slow).log_path).unwrap_or_default();
    let pauses_before = log_before.matches("pausing before prewrite").count();
    let holder_key = holder.clone();
    let racing = tokio::spawn(async move {
        slow_kv
            .txn(pb::TxnRequest {
                compare: vec![],
                success: vec![prefix_op("mutex/"), put_op(&holder_key, "me")],
                failure: vec![],
                write_id: None,
            })
            .await
    });
    let path = cluster.gateway(slow).log_path.clone();
    wait_for("the second pause", WAIT, || {
        let path = path.clone();
        async move {
            let log = std::fs::read_to_string(&path).ok()?;
            (log.matches("pausing before prewrite").count() > pauses_before).then_some(())
        }
    })
    .await;
    put(&mut kv, "mutex/other", "holds it").await;
    let status = racing.await.unwrap().expect_err("the range changed");
    assert_eq!(conflict_key(&status), "mutex/other");
    assert!(
        get(&mut kv, &holder).await.is_none(),
        "nothing of it applied"
    );

    tracing::info!("--- no lock is left behind");
    let locks = wait_for("every shard to answer ScanLocks", WAIT, || {
        locks_in_cluster(&cluster)
    })
    .await;
    assert!(locks.is_empty(), "locks left: {locks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_after_prewrite_leaves_nothing_and_a_retry_commits_once() {
    cairn_test_harness::init_logging();
    let mut cluster = start().await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let a = "crash/a".to_string();
    let b = key_elsewhere("crash/b", &[&a]);
    put(&mut kv, &a, "a0").await;
    put(&mut kv, &b, "b0").await;
    let doomed = cluster.add_gateway(&[("CAIRN_TEST_CRASH_AFTER_PREWRITE", "1")]);
    let (mut doomed_kv, _) = cluster.gateway_clients(doomed, WAIT).await;
    // If the compare is evaluated again after the first attempt committed, it fails: only the
    // write id's record can make a retry answer `succeeded` again.
    let write_id = WriteIds::new().next_id();
    let txn = pb::TxnRequest {
        compare: vec![value_is(&a, "a0")],
        success: vec![put_op(&a, "a1"), put_op(&b, "b1")],
        failure: vec![get_op(&a)],
        write_id: Some(write_id),
    };

    tracing::info!("--- the gateway dies between prewrite and commit");
    let crashed_at = Instant::now();
    let lost = doomed_kv.txn(txn.clone()).await;
    assert!(lost.is_err(), "the gateway should have died: {lost:?}");
    wait_for_log(&cluster, doomed, "aborting after prewrite").await;

    tracing::info!("--- nothing of it is visible: a reader resolves its locks within the bound");
    assert_eq!(get(&mut kv, &a).await.unwrap().value, b"a0");
    assert_eq!(get(&mut kv, &b).await.unwrap().value, b"b0");
    assert!(
        crashed_at.elapsed() < RESOLVED_WITHIN,
        "reads waited {:?} for the dead gateway's locks",
        crashed_at.elapsed()
    );

    tracing::info!("--- the retry with the same write id through another gateway commits once");
    let first = kv.txn(txn.clone()).await.expect("retry").into_inner();
    assert!(first.succeeded);
    let again = kv
        .txn(txn.clone())
        .await
        .expect("second retry")
        .into_inner();
    assert_eq!(again, first, "a retry answers the first result");
    let got = get(&mut kv, &a).await.unwrap();
    assert_eq!(
        (got.value.as_slice(), got.version),
        (&b"a1"[..], 2),
        "applied once"
    );
    assert_eq!(get(&mut kv, &b).await.unwrap().mod_revision, first.revision);

    tracing::info!("--- locks nobody reads are resolved by the expired-lock scan");
    let doomed = cluster.add_gateway(&[("CAIRN_TEST_CRASH_AFTER_PREWRITE", "1")]);
    let (mut doomed_kv, _) = cluster.gateway_clients(doomed, WAIT).await;
    let c = "scan/c".to_string();
    let d = key_elsewhere("scan/d", &[&c]);
    let crashed_at = Instant::now();
    let lost = doomed_kv
        .txn(pb::TxnRequest {
            compare: vec![],
            success: vec![put_op(&c, "c1"), put_op(&d, "d1")],
            failure: vec![],
            write_id: None,
        })
        .await;
    assert!(lost.is_err(), "the gateway should have died: {lost:?}");
    let left = wait_for("the dead gateway's locks on the nodes", WAIT, || async {
        locks_in_cluster(&cluster)
            .await
            .filter(|locks| !locks.is_empty())
    })
    .await;
    assert_eq!(left.len(), 2, "both keys locked: {left:?}");
    wait_for(
        "the scan to resolve the dead gateway's locks",
        RESOLVED_WITHIN,
        || async { locks_in_cluster(&cluster).await.filter(Vec::is_empty) },
    )
    .await;
    tracing::info!(elapsed = ?crashed_at.elapsed(), "locks resolved");
    let (_, metrics) = http_get(&cluster.gateway(1).metrics_address, "/metrics")
        .await
        .expect("gateway metrics");
    let found =
        metric_value(&metrics, "cairn_gateway_lock_scan_expired_locks_total").unwrap_or(0.0);
    // One lock at least: resolving one through the primary may remove the primary's own lock
    // (check-status rolls an expired primary back) before the scan reaches its shard.
    assert!(found >= 1.0, "the scan found none of the locks: {found}");
    assert!(get(&mut kv, &c).await.is_none() && get(&mut kv, &d).await.is_none());

    tracing::info!("--- compaction past a dead gateway's live locks resolves them first");
    let doomed = cluster.add_gateway(&[("CAIRN_TEST_CRASH_AFTER_PREWRITE", "1")]);
    let (mut doomed_kv, _) = cluster.gateway_clients(doomed, WAIT).await;
    let e = "compact/e".to_string();
    let f = key_elsewhere("compact/f", &[&e]);
    let lost = doomed_kv
        .txn(pb::TxnRequest {
            compare: vec![],
            success: vec![put_op(&e, "e1"), put_op(&f, "f1")],
            failure: vec![],
            write_id: None,
        })
        .await;
    assert!(lost.is_err(), "the gateway should have died: {lost:?}");
    let after_crash = put(&mut kv, "compact/marker", "m").await;
    let compacted = kv
        .compact(pb::CompactRequest {
            revision: after_crash,
        })
        .await
        .expect("compaction waits for the locks, then compacts")
        .into_inner();
    assert!(compacted.compact_revision >= after_crash);
    let locks = wait_for("every shard to answer ScanLocks", WAIT, || {
        locks_in_cluster(&cluster)
    })
    .await;
    assert!(locks.is_empty(), "compaction passed locks: {locks:?}");
    assert!(get(&mut kv, &e).await.is_none() && get(&mut kv, &f).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_phase_transaction_is_one_trace_with_prewrite_and_commit_on_every_shard() {
    cairn_test_harness::init_logging();
    let (receiver, endpoint) = start_receiver("127.0.0.1:0").await;
    let cluster = start_with(&[
        ("CAIRN_TRACING__OTLP_ENDPOINT", endpoint.as_str()),
        ("CAIRN_TRACING__SAMPLING_RATIO", "1.0"),
        ("CAIRN_TRACING__EXPORT_INTERVAL_MS", "100"),
    ])
    .await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let a = "traced/a".to_string();
    let b = key_elsewhere("traced/b", &[&a]);
    let c = key_elsewhere("traced/c", &[&a, &b]);
    let shards: BTreeSet<String> = [&a, &b, &c]
        .iter()
        .map(|key| shard(key).0.to_string())
        .collect();

    tracing::info!("--- a transaction over three shards");
    let committed = kv
        .txn(pb::TxnRequest {
            compare: vec![],
            success: vec![put_op(&a, "1"), put_op(&b, "1"), put_op(&c, "1")],
            failure: vec![],
            write_id: None,
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(committed.succeeded);

    tracing::info!("--- its trace shows a prewrite and a commit on each of the three shards");
    let shards_of = |spans: &[cairn_test_harness::otlp::ReceivedSpan], name: &str| {
        spans
            .iter()
            .filter(|span| span.service == "cairn-gateway" && span.name == name)
            .filter_map(|span| span.attributes.get("shard").cloned())
            .collect::<BTreeSet<String>>()
    };
    wait_for(
        "prewrite and commit spans of every shard in one trace",
        WAIT,
        || {
            let receiver = receiver.clone();
            let shards = shards.clone();
            async move {
                let spans = receiver.spans.lock().unwrap().clone();
                let txn = spans
                    .iter()
                    .find(|span| span.service == "cairn-gateway" && span.name == "gateway.txn")?;
                let trace: Vec<_> = spans
                    .iter()
                    .filter(|span| span.trace_id == txn.trace_id)
                    .cloned()
                    .collect();
                let node_prewrites = trace
                    .iter()
                    .filter(|span| span.service == "cairn-node" && span.name == "node.prewrite")
                    .count();
                (shards_of(&trace, "gateway.txn.prewrite") == shards
                    && shards_of(&trace, "gateway.txn.commit") == shards
                    && node_prewrites >= 3)
                    .then_some(())
            }
        },
    )
    .await;
}

const ACCOUNTS: usize = 6;
const BALANCE: i64 = 100;

fn account(i: usize) -> String {
    format!("acct/{i}")
}

fn balance_of(kv: Option<&pb::KeyValue>) -> i64 {
    kv.map(|kv| {
        String::from_utf8_lossy(&kv.value)
            .parse()
            .expect("a balance")
    })
    .unwrap_or(0)
}

/// One transfer of `amount` from `from` to `to`, as a cross-shard transaction guarded by the
/// mod revisions read; `true` once it committed, `false` if it lost a race (and changed
/// nothing).
async fn transfer(kv: &mut KvClient<Channel>, from: &str, to: &str, amount: i64) -> bool {
    let (Some(source), Some(target)) = (get(kv, from).await, get(kv, to).await) else {
        panic!("accounts exist");
    };
    let revision_is = |key: &str, revision: u64| pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.into(),
        target: Some(pb::compare::Target::ModRevision(revision)),
    };
    let answer = kv
        .txn(pb::TxnRequest {
            compare: vec![
                revision_is(from, source.mod_revision),
                revision_is(to, target.mod_revision),
            ],
            success: vec![
                put_op(from, &(balance_of(Some(&source)) - amount).to_string()),
                put_op(to, &(balance_of(Some(&target)) + amount).to_string()),
            ],
            failure: vec![],
            write_id: None,
        })
        .await;
    match answer {
        Ok(answer) => answer.into_inner().succeeded,
        Err(status) if status.code() == tonic::Code::Aborted => {
            assert!(
                matches!(error_detail(&status), Some(Kind::Conflict(_))),
                "{status:?}"
            );
            false
        }
        Err(status) => panic!("transfer failed without a fault: {status:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cross_shard_transfers_never_show_half_a_transfer() {
    cairn_test_harness::init_logging();
    let cluster = start().await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    for i in 0..ACCOUNTS {
        put(&mut kv, &account(i), &BALANCE.to_string()).await;
    }
    let total = BALANCE * ACCOUNTS as i64;
    let until = Instant::now() + Duration::from_secs(5);

    tracing::info!("--- four clients transfer between accounts of different shards");
    let writers: Vec<_> = (0..4usize)
        .map(|writer| {
            let mut kv = kv.clone();
            tokio::spawn(async move {
                let (mut committed, mut lost) = (0u32, 0u32);
                let mut round = writer;
                while Instant::now() < until {
                    let from = account(round % ACCOUNTS);
                    let to = account((round * 7 + 1) % ACCOUNTS);
                    round += 1;
                    if from == to {
                        continue;
                    }
                    if transfer(&mut kv, &from, &to, (round % 5) as i64 + 1).await {
                        committed += 1;
                    } else {
                        lost += 1;
                    }
                }
                (committed, lost)
            })
        })
        .collect();

    tracing::info!("--- meanwhile, snapshot reads of every account always add up");
    let mut reads = 0;
    while Instant::now() < until {
        let range = kv
            .range(pb::RangeRequest {
                prefix: "acct/".into(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let sum: i64 = range.kvs.iter().map(|kv| balance_of(Some(kv))).sum();
        assert_eq!(
            sum, total,
            "a range at {} saw half a transfer",
            range.revision
        );
        // A read-only transaction over every shard: snapshot reads at one timestamp.
        let snapshot = kv
            .txn(pb::TxnRequest {
                compare: vec![],
                success: (0..ACCOUNTS).map(|i| get_op(&account(i))).collect(),
                failure: vec![],
                write_id: None,
            })
            .await
            .expect("read-only txn")
            .into_inner();
        let sum: i64 = snapshot
            .responses
            .iter()
            .map(|response| balance_of(get_response(response)))
            .sum();
        assert_eq!(
            sum, total,
            "a read-only txn at {} saw half a transfer",
            snapshot.revision
        );
        reads += 1;
    }
    let mut committed = 0;
    for writer in writers {
        let (done, lost) = writer.await.unwrap();
        tracing::info!(done, lost, "writer finished");
        committed += done;
    }
    tracing::info!(committed, reads, "transfers and reads");
    assert!(committed >= 10, "the transfers made progress: {committed}");
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        sum += balance_of(get(&mut kv, &account(i)).await.as_ref());
    }
    assert_eq!(sum, total);
    let locks = wait_for("every shard to answer ScanLocks", WAIT, || {
        locks_in_cluster(&cluster)
    })
    .await;
    assert!(locks.is_empty(), "locks left: {locks:?}");
}
