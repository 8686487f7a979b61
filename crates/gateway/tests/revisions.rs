//! Cluster-wide revisions through the gateway, on a real local cluster: ranges over every
//! shard at one snapshot revision under concurrent writes (compared with a model built from the
//! writes' own revisions), paging at that revision, reads at old revisions that never change,
//! and the typed errors of a revision compacted away or not handed out yet.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_test_harness::{error_detail, Cluster, ClusterSpec};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 4;
const KEYS: u32 = 40;
const PAGE: u64 = 7;

async fn start() -> Cluster {
    let cluster = ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(1)
        .nodes(3)
        .shards(SHARDS)
        .gateways(1)
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    cluster
}

/// One key's acknowledged writes: (revision, value; `None` for a delete).
type KeyHistory = Vec<(u64, Option<Vec<u8>>)>;

/// Every acknowledged write, by key.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<BTreeMap<Vec<u8>, KeyHistory>>>);

impl Writes {
    fn record(&self, key: Vec<u8>, revision: u64, value: Option<Vec<u8>>) {
        self.0
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push((revision, value));
    }

    /// The model's state at revision `at`: each key's latest write at or below it.
    fn state_at(&self, at: u64) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
        let writes = self.0.lock().unwrap();
        writes
            .iter()
            .filter_map(|(key, history)| {
                let (revision, value) = history
                    .iter()
                    .filter(|(revision, _)| *revision <= at)
                    .max_by_key(|(revision, _)| *revision)?;
                value.clone().map(|value| (key.clone(), value, *revision))
            })
            .collect()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("s/{i:03}").into_bytes()
}

/// Writers putting and deleting keys until stopped; every write is acknowledged or the test
/// fails (there are no faults here, so an unknown outcome is a bug).
fn start_writers(
    kv: &KvClient<Channel>,
    writes: &Writes,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4u32)
        .map(|writer| {
            let (mut kv, writes, stop) = (kv.clone(), writes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = key((writer * 7919 + n * 31) % KEYS);
                    if n.is_multiple_of(5) {
                        let response = kv
                            .delete(pb::DeleteRequest {
                                key: key.clone(),
                                ..Default::default()
                            })
                            .await
                            .expect("delete")
                            .into_inner();
                        if response.deleted > 0 {
                            writes.record(key, response.revision, None);
                        }
                    } else {
                        let value = format!("w{writer}-{n}").into_bytes();
                        let response = kv
                            .put(pb::PutRequest {
                                key: key.clone(),
                                value: value.clone(),
                                ..Default::default()
                            })
                            .await
                            .expect("put")
                            .into_inner();
                        writes.record(key, response.revision, Some(value));
                    }
                }
            })
        })
        .collect()
}

/// The prefix `s/` in pages of `PAGE` keys, all at one revision (the first page's, or `at`).
async fn paged_range(kv: &mut KvClient<Channel>, at: u64) -> (u64, Vec<(Vec<u8>, Vec<u8>, u64)>) {
    let mut revision = at;
    let mut continuation = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = kv
            .range(pb::RangeRequest {
                prefix: b"s/".to_vec(),
                limit: PAGE,
                continuation: continuation.clone(),
                revision,
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert!(page.revision != 0 && (revision == 0 || page.revision == revision));
        revision = page.revision;
        seen.extend(
            page.kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value, kv.mod_revision)),
        );
        if !page.more {
            return (revision, seen);
        }
        continuation = page.continuation;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_read_every_shard_at_one_revision_and_old_revisions_never_change() {
    let cluster = start().await;
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    let writes = Writes::default();
    let stop = Arc::new(AtomicBool::new(false));

    tracing::info!("--- page through every shard at one revision while writers run");
    let writers = start_writers(&kv, &writes, &stop);
    let mut snapshots = Vec::new();
    for _ in 0..15 {
        snapshots.push(paged_range(&mut kv, 0).await);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let written: usize = writes.0.lock().unwrap().values().map(Vec::len).sum();
    assert!(written > 50, "the writers made progress: {written} writes");

    tracing::info!("--- every paged range equals the model at its revision");
    for (revision, seen) in &snapshots {
        assert_eq!(
            seen,
            &writes.state_at(*revision),
            "range at revision {revision}"
        );
    }
    let revisions: Vec<u64> = snapshots.iter().map(|(revision, _)| *revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "snapshot revisions rise: {revisions:?}"
    );

    tracing::info!("--- reading at those revisions again gives the same answers");
    for (revision, seen) in &snapshots {
        assert_eq!(&paged_range(&mut kv, *revision).await.1, seen);
        for (key, value, mod_revision) in seen.iter().take(3) {
            let got = kv
                .get(pb::GetRequest {
                    key: key.clone(),
                    revision: *revision,
                    ..Default::default()
                })
                .await
                .expect("get at a revision")
                .into_inner();
            let found = got.kv.expect("the key exists at that revision");
            assert_eq!((&found.value, found.mod_revision), (value, *mod_revision));
            assert_eq!(got.revision, *revision);
        }
    }

    tracing::info!("--- a revision not handed out yet is refused with FutureRevision");
    let latest = paged_range(&mut kv, 0).await.0;
    let future = latest + (1 << 40);
    let status = kv
        .get(pb::GetRequest {
            key: key(1),
            revision: future,
            ..Default::default()
        })
        .await
        .expect_err("a future revision is refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    match error_detail(&status) {
        Some(pb::error_detail::Kind::FutureRevision(detail)) => {
            assert_eq!(detail.requested_revision, future);
            assert!(detail.latest_revision >= latest);
        }
        other => panic!("expected FutureRevision, got {other:?} ({status})"),
    }

    tracing::info!("--- compaction: below the point Compacted, at or above it unchanged");
    let (middle, middle_seen) = snapshots[snapshots.len() / 2].clone();
    let compacted = kv
        .compact(pb::CompactRequest { revision: middle })
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(compacted.compact_revision, middle);
    let (early, _) = snapshots[0];
    // Shards learn the point from their nodes' heartbeats: wait until every shard refuses.
    cairn_test_harness::wait_for(
        "every shard refusing reads below the compaction point",
        WAIT,
        || {
            let mut kv = kv.clone();
            async move {
                let status = kv
                    .range(pb::RangeRequest {
                        prefix: b"s/".to_vec(),
                        revision: early,
                        ..Default::default()
                    })
                    .await
                    .err()?;
                match error_detail(&status) {
                    Some(pb::error_detail::Kind::Compacted(detail))
                        if detail.compact_revision == middle =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(paged_range(&mut kv, middle).await.1, middle_seen);
    let (last, last_seen) = snapshots.last().expect("snapshots").clone();
    assert_eq!(paged_range(&mut kv, last).await.1, last_seen);
    // Every shard, not just one: a count below the point fails as a whole.
    let below = kv
        .range(pb::RangeRequest {
            prefix: b"s/".to_vec(),
            revision: middle - 1,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect_err("below the compaction point");
    assert_eq!(below.code(), tonic::Code::OutOfRange);
}
