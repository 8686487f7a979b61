//! Transaction calls on a node with the timestamp oracle (D93): start and commit timestamps
//! from the oracle, a commit at its `commit_ts` registered in flight like a timestamped write
//! and read at revisions around it, a lock stopping reads at or above its `start_ts` only.
//! A coordinator and one real `cairn-node` process.

use cairn_proto::kv::v1 as kv;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::node::v1 as node;
use cairn_test_harness::{error_detail, shard_target, ClusterSpec, WriteIds};
use cairn_types::ShardId;
use std::path::Path;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_cairn-node");
const WAIT: Duration = Duration::from_secs(60);
const SHARD: ShardId = ShardId(0);

fn get_at(key: &str, revision: u64) -> node::ShardGetRequest {
    node::ShardGetRequest {
        target: Some(shard_target(SHARD)),
        request: Some(kv::GetRequest {
            key: key.into(),
            revision,
            ..Default::default()
        }),
        own_start_ts: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lands_at_its_oracle_commit_ts_and_reads_at_revisions_see_it_whole() {
    cairn_test_harness::init_logging();
    let cluster = ClusterSpec::new(Path::new(BINARY))
        .nodes(1)
        .shards(1)
        .replication_factor(1)
        .start()
        .await;
    let mut ids = WriteIds::new();
    let leader = cluster.wait_for_leader(SHARD, WAIT).await;
    let mut client = cluster.kv(leader).await.expect("the leader answers");

    tracing::info!("--- oracle timestamps from one-phase writes: the old value, then start_ts");
    let before = cluster
        .must_put(SHARD, ids.next_id(), b"k", b"old", WAIT)
        .await
        .revision;
    let start_ts = cluster
        .must_put(SHARD, ids.next_id(), b"clock", b"1", WAIT)
        .await
        .revision;
    assert!(start_ts > before);
    client
        .prewrite(node::PrewriteRequest {
            target: Some(shard_target(SHARD)),
            start_ts,
            primary: b"k".to_vec(),
            lock_ttl_ms: 60_000,
            mutations: vec![node::TxnMutation {
                key: b"k".to_vec(),
                op: node::txn_mutation::Op::Put as i32,
                value: b"new".to_vec(),
            }],
            write_id: None,
        })
        .await
        .expect("prewrite");

    tracing::info!("--- reads at or above start_ts meet the lock, below it do not");
    let locked = client.get(get_at("k", start_ts)).await.unwrap_err();
    assert!(
        matches!(error_detail(&locked), Some(Kind::KeyLocked(_))),
        "{locked}"
    );
    let old = client.get(get_at("k", before)).await.unwrap().into_inner();
    assert_eq!(old.kv.unwrap().value, b"old");

    tracing::info!("--- commit at an oracle timestamp");
    let commit_ts = cluster
        .must_put(SHARD, ids.next_id(), b"clock", b"2", WAIT)
        .await
        .revision;
    let committed = client
        .commit(node::CommitRequest {
            target: Some(shard_target(SHARD)),
            start_ts,
            commit_ts,
            keys: vec![b"k".to_vec()],
            write_id: None,
            result: None,
        })
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(committed.commit_ts, commit_ts);
    let at_commit = client
        .get(get_at("k", commit_ts))
        .await
        .unwrap()
        .into_inner();
    let kv = at_commit.kv.unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (b"new".as_slice(), commit_ts)
    );
    let below = client
        .get(get_at("k", commit_ts - 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(below.kv.unwrap().value, b"old");

    tracing::info!("--- a later one-phase write lands above the commit");
    let after = cluster
        .must_put(SHARD, ids.next_id(), b"k", b"later", WAIT)
        .await
        .revision;
    assert!(after > commit_ts);
}
