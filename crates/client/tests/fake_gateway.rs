//! The SDK's retry loops against an in-process fake gateway that fails on command: retries
//! reuse the write id, refusals are not retried, endpoints rotate, pages are followed.
//! (End-to-end tests against a real cluster live with the cluster test harness.)

mod fake;

use cairn_client::{Client, ClientConfig, Error, RangeOptions};
use fake::{closed_port, fast_config, limit_exceeded, start, FakeKv};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Status};

#[tokio::test]
async fn retries_reuse_the_same_write_id() {
    let kv = Arc::new(FakeKv {
        failures: Mutex::new(VecDeque::from([
            Status::unavailable("leader election"),
            Status::deadline_exceeded("outcome unknown"),
            Status::unknown("stream reset"),
        ])),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let client = Client::connect(fast_config(vec![address.to_string()]))
        .await
        .unwrap();

    let response = client
        .put("k", "v")
        .await
        .expect("the fourth attempt succeeds");

    assert_eq!(response.revision, 11);
    let ids = kv.put_write_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 4, "three failures then one success");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "write ids differ: {ids:?}"
    );
    assert_eq!(ids[0].client_id, client.client_id().get());
    assert_eq!((ids[0].sequence, ids[0].first_incomplete_sequence), (1, 1));

    // The next write has a new sequence and acknowledges the first.
    client.put("k", "w").await.unwrap();
    let last = *kv.put_write_ids.lock().unwrap().last().unwrap();
    assert_eq!((last.sequence, last.first_incomplete_sequence), (2, 2));
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let kv = Arc::new(FakeKv {
        failures: Mutex::new(VecDeque::from([limit_exceeded()])),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let client = Client::connect(fast_config(vec![address.to_string()]))
        .await
        .unwrap();

    let error = client.put("k", "large").await.unwrap_err();

    assert_eq!(
        error,
        Error::LimitExceeded {
            limit: "value_bytes_max".into(),
            max: 4,
            actual: 5
        }
    );
    assert_eq!(
        kv.put_write_ids.lock().unwrap().len(),
        1,
        "retried a refusal"
    );
}

#[tokio::test]
async fn failed_precondition_is_not_retried() {
    let kv = Arc::new(FakeKv {
        failures: Mutex::new(VecDeque::from([Status::failed_precondition("no")])),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let client = Client::connect(fast_config(vec![address.to_string()]))
        .await
        .unwrap();
    let error = client.get("k").await.unwrap_err();
    assert!(matches!(
        error,
        Error::Rejected {
            code: Code::FailedPrecondition,
            ..
        }
    ));
    assert!(kv.failures.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_gateway_is_skipped() {
    let mut keys = BTreeMap::new();
    keys.insert(b"k".to_vec(), b"v".to_vec());
    let kv = Arc::new(FakeKv {
        keys,
        ..FakeKv::default()
    });
    let live = start(kv).await;
    let client = Client::connect(fast_config(vec![
        closed_port().to_string(),
        live.to_string(),
    ]))
    .await
    .unwrap();

    for _ in 0..3 {
        let kv = client.get("k").await.expect("served by the live gateway");
        assert_eq!(kv.map(|kv| kv.value), Some(b"v".to_vec()));
    }
}

#[tokio::test]
async fn attempts_are_bounded() {
    let kv = Arc::new(FakeKv {
        failures: Mutex::new((0..20).map(|_| Status::unavailable("no leader")).collect()),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let config = ClientConfig {
        retry_attempts_max: 4,
        ..fast_config(vec![address.to_string()])
    };
    let client = Client::connect(config).await.unwrap();

    let error = client.get("k").await.unwrap_err();

    assert!(
        matches!(&error, Error::Unavailable(message) if message.contains("4 attempts") && message.contains("no leader")),
        "{error:?}"
    );
    assert_eq!(kv.failures.lock().unwrap().len(), 16, "exactly 4 attempts");
}

#[tokio::test]
async fn a_slow_gateway_times_out() {
    let kv = Arc::new(FakeKv {
        put_delay: Duration::from_secs(5),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..fast_config(vec![address.to_string()])
    };
    let client = Client::connect(config).await.unwrap();
    let started = std::time::Instant::now();

    let error = client.put("k", "v").await.unwrap_err();

    assert_eq!(error, Error::Timeout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn concurrent_writes_acknowledge_only_answered_sequences() {
    let kv = Arc::new(FakeKv {
        put_delay: Duration::from_millis(20),
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let client = Client::connect(fast_config(vec![address.to_string()]))
        .await
        .unwrap();

    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.put(format!("k{i}"), "v").await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("put");
    }

    let ids = kv.put_write_ids.lock().unwrap().clone();
    let mut sequences: Vec<u64> = ids.iter().map(|id| id.sequence).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=32).collect::<Vec<_>>());
    for id in &ids {
        assert!(id.first_incomplete_sequence >= 1);
        assert!(id.first_incomplete_sequence <= id.sequence, "{id:?}");
    }
    // All 32 were in flight together, so none could acknowledge any other.
    assert!(
        ids.iter().all(|id| id.first_incomplete_sequence == 1),
        "{ids:?}"
    );
}

#[tokio::test]
async fn scan_follows_continuations() {
    let keys: BTreeMap<Vec<u8>, Vec<u8>> = (0..5)
        .map(|i| (format!("user/{i}").into_bytes(), b"v".to_vec()))
        .chain([(b"other".to_vec(), b"x".to_vec())])
        .collect();
    let kv = Arc::new(FakeKv {
        keys,
        ..FakeKv::default()
    });
    let address = start(kv.clone()).await;
    let client = Client::connect(fast_config(vec![address.to_string()]))
        .await
        .unwrap();

    let all = client.scan_prefix("user/", 2, 100).await.unwrap();
    let names: Vec<String> = all
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    assert_eq!(names, ["user/0", "user/1", "user/2", "user/3", "user/4"]);
    {
        let calls = kv.range_calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        // Every page after the first is read at the first page's snapshot revision.
        assert_eq!(calls[0].revision, 0);
        assert!(
            calls[1..].iter().all(|call| call.revision == 1_001),
            "{calls:?}"
        );
    }

    let error = client.scan_prefix("user/", 2, 3).await.unwrap_err();
    assert!(matches!(error, Error::InvalidArgument { ref field, .. } if field == "keys_max"));

    let partial = client
        .scan(
            RangeOptions {
                limit: 2,
                ..RangeOptions::for_prefix("user/")
            },
            3,
        )
        .await
        .unwrap();
    assert_eq!(partial.kvs.len(), 3);
    assert!(partial.more);
    assert_eq!(partial.continuation, b"user/2");
}
