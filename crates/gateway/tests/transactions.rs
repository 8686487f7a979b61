//! Cross-shard transactions through the gateway on a real local cluster (issue 16,
//! docs/transactions.md): atomic commit at one revision, ops that see the earlier ops of their
//! branch, conflicts with the conflicting key (a write between the reads and the prewrite, and
//! a range that changed before the commit), and a gateway that dies between prewrite and commit
//! (the `CAIRN_TEST_CRASH_AFTER_PREWRITE` hook): its locks are resolved within the bound, by
//! readers and by the expired-lock scan, nothing of it is visible, and a retry with the same
//! write id through another gateway commits once and answers the first result ever after; a
//! second attempt of one request while the first is still committing (the
//! `CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS` hook) waits for it at the write id's record key and
//! answers its result.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_test_harness::otlp::start_receiver;
use cairn_test_harness::{error_detail, http_get, metric_value, wait_for, Cluster, WriteIds};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod txn_cluster;

use txn_cluster::*;

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
    let user_keys_locked = left
        .iter()
        .filter(|lock| !cairn_types::reserved::is_reserved(&lock.key))
        .count();
    assert_eq!(user_keys_locked, 2, "both keys locked: {left:?}");
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

/// Sends `txn` through gateway `slow` (which pauses after its prewrites) and, once it has
/// paused, through `kv`: the answers of the first and the second attempt.
async fn two_attempts(
    cluster: &Cluster,
    slow: u64,
    mut slow_kv: KvClient<Channel>,
    kv: &mut KvClient<Channel>,
    txn: &pb::TxnRequest,
) -> (pb::TxnResponse, pb::TxnResponse) {
    let first = tokio::spawn({
        let txn = txn.clone();
        async move { slow_kv.txn(txn).await }
    });
    wait_for_log(cluster, slow, "pausing after prewrite").await;
    let second = kv.txn(txn.clone()).await.expect("second attempt");
    let first = first
        .await
        .expect("first attempt's task")
        .expect("the first attempt answers a result (not Conflict)");
    (first.into_inner(), second.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_of_one_request_apply_once_and_answer_alike_and_reserved_keys_stay_hidden() {
    cairn_test_harness::init_logging();
    let mut cluster = start().await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let a = "dup/a".to_string();
    let b = key_elsewhere("dup/b", &[&a]);
    put(&mut kv, &a, "a0").await;
    let slow = cluster.add_gateway(&[
        (
            "CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS",
            PAUSE_AFTER_PREWRITE_MS,
        ),
        ("CAIRN_TXN__LOCK_TTL_MS", LONG_LOCK_TTL_MS),
    ]);
    let (slow_kv, _) = cluster.gateway_clients(slow, WAIT).await;
    // The compare fails and the failure branch only reads, so each attempt locks nothing but
    // the write id's record key (a request that can write records even a read-only answer).
    // The second meets the first's lock there and waits, then answers the first's result.
    // Without one record key per write id each would answer from its own snapshot (another
    // revision), and a retry could answer "compares failed" while another attempt wrote.
    let write_id = WriteIds::new().next_id();
    let txn = pb::TxnRequest {
        compare: vec![value_is(&a, "not a's value")],
        success: vec![put_op(&b, "never")],
        failure: vec![get_op(&a)],
        write_id: Some(write_id),
    };

    tracing::info!(
        "--- the first attempt prewrites its record key and stalls; a second one through \
         another gateway meets it there"
    );
    let (first, second) = two_attempts(&cluster, slow, slow_kv, &mut kv, &txn).await;
    assert!(!first.succeeded, "{first:?}");
    assert_eq!(get_response(&first.responses[0]).unwrap().value, b"a0");
    assert_eq!(
        second, first,
        "both attempts answer the one result, revision included"
    );
    assert!(
        get(&mut kv, &b).await.is_none(),
        "the success branch never ran"
    );

    tracing::info!(
        "--- an attempt stalled past its locks' TTL, rolled back by the next one, \
                    answers the result the next one committed instead of Conflict"
    );
    let stalled = cluster.add_gateway(&[(
        "CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS",
        PAUSE_AFTER_PREWRITE_MS,
    )]);
    let (stalled_kv, _) = cluster.gateway_clients(stalled, WAIT).await;
    let late = pb::TxnRequest {
        compare: vec![value_is(&a, "a0")],
        success: vec![put_op(&b, "b2")],
        failure: vec![put_op(&b, "compare failed")],
        write_id: Some(WriteIds::new().next_id()),
    };
    let (first, second) = two_attempts(&cluster, stalled, stalled_kv, &mut kv, &late).await;
    assert_eq!(first, second, "both attempts answer the one result");
    let got = get(&mut kv, &b).await.unwrap();
    assert_eq!(
        (got.value.as_slice(), got.version, got.mod_revision),
        (&b"b2"[..], 1, second.revision),
        "applied once"
    );

    tracing::info!("--- a branch that writes nothing records its answer for the retries too");
    let read_only = pb::TxnRequest {
        compare: vec![value_is(&a, "not a's value")],
        success: vec![put_op(&b, "never")],
        failure: vec![get_op(&b)],
        write_id: Some(WriteIds::new().next_id()),
    };
    let answered = kv.txn(read_only.clone()).await.expect("txn").into_inner();
    assert!(!answered.succeeded);
    assert_eq!(get_response(&answered.responses[0]).unwrap().value, b"b2");
    put(&mut kv, &b, "b3").await;
    let retried = kv.txn(read_only).await.expect("retry").into_inner();
    assert_eq!(
        retried, answered,
        "a retry answers the recorded result, not a new read"
    );

    tracing::info!("--- the record keys are Cairn's: clients can neither name nor see them");
    let record_key = cairn_types::reserved::txn_record_key(write_id.client_id, write_id.sequence);
    let refused = kv
        .put(pb::PutRequest {
            key: record_key.clone(),
            value: b"mine".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("a reserved key is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("reserved"), "{refused:?}");
    let everything = kv
        .range(pb::RangeRequest::default())
        .await
        .expect("range over every key")
        .into_inner();
    let keys: Vec<_> = everything.kvs.iter().map(|kv| kv.key.clone()).collect();
    // `a`, `b` and nothing of Cairn's, though three requests committed record keys.
    assert_eq!(keys, [a.as_bytes().to_vec(), b.as_bytes().to_vec()]);
    let inside = kv
        .range(pb::RangeRequest {
            prefix: cairn_types::reserved::RESERVED_PREFIX.to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("a range inside the reserved keys is refused");
    assert_eq!(inside.code(), tonic::Code::InvalidArgument, "{inside:?}");
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
    let write_id = WriteIds::new().next_id();
    // The primary is the write id's record key, whose shard may be a fourth one.
    let record_key = cairn_types::reserved::txn_record_key(write_id.client_id, write_id.sequence);
    let mut shards: BTreeSet<String> = [&a, &b, &c]
        .iter()
        .map(|key| shard(key).0.to_string())
        .collect();
    shards.insert(
        cairn_types::sharding::shard_for_key(&record_key, SHARDS)
            .0
            .to_string(),
    );

    tracing::info!("--- a transaction over three shards");
    let committed = kv
        .txn(pb::TxnRequest {
            compare: vec![],
            success: vec![put_op(&a, "1"), put_op(&b, "1"), put_op(&c, "1")],
            failure: vec![],
            write_id: Some(write_id),
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(committed.succeeded);

    tracing::info!("--- its trace shows a prewrite and a commit on each of its shards");
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
