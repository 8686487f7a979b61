//! The SDK's retry loop against an in-process fake gateway that fails on command: retries
//! reuse the write id, refusals are not retried, endpoints rotate, pages are followed.
//! (End-to-end tests against a real cluster live with the cluster test harness.)

use cairn_client::proto::kv_server::{Kv, KvServer};
use cairn_client::{proto, Client, ClientConfig, Error, RangeOptions};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

#[derive(Default)]
struct FakeKv {
    /// Errors to answer, one per call, before answering normally.
    failures: Mutex<VecDeque<Status>>,
    /// Every write id received by put, in arrival order.
    put_write_ids: Mutex<Vec<proto::WriteId>>,
    range_calls: Mutex<Vec<proto::RangeRequest>>,
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Put holds each request this long before answering.
    put_delay: Duration,
}

impl FakeKv {
    fn next_failure(&self) -> Option<Status> {
        self.failures.lock().unwrap().pop_front()
    }
}

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn put(
        &self,
        request: Request<proto::PutRequest>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        let write_id = request
            .into_inner()
            .write_id
            .expect("the SDK sets write ids");
        self.put_write_ids.lock().unwrap().push(write_id);
        if !self.put_delay.is_zero() {
            tokio::time::sleep(self.put_delay).await;
        }
        if let Some(status) = self.next_failure() {
            return Err(status);
        }
        Ok(Response::new(proto::PutResponse {
            revision: 10 + write_id.sequence,
            succeeded: true,
            prev_kv: None,
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        if let Some(status) = self.next_failure() {
            return Err(status);
        }
        let key = request.into_inner().key;
        let kv = self.keys.get(&key).map(|value| proto::KeyValue {
            key: key.clone(),
            value: value.clone(),
            version: 1,
            create_revision: 1,
            mod_revision: 1,
        });
        Ok(Response::new(proto::GetResponse { revision: 1, kv }))
    }

    async fn delete(
        &self,
        _request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    /// Serves `keys` by prefix, `limit` at a time, resuming after `continuation`.
    async fn range(
        &self,
        request: Request<proto::RangeRequest>,
    ) -> Result<Response<proto::RangeResponse>, Status> {
        let request = request.into_inner();
        self.range_calls.lock().unwrap().push(request.clone());
        let matching: Vec<_> = self
            .keys
            .iter()
            .filter(|(key, _)| key.starts_with(&request.prefix))
            .filter(|(key, _)| request.continuation.is_empty() || **key > request.continuation)
            .collect();
        let limit = if request.limit == 0 {
            usize::MAX
        } else {
            request.limit as usize
        };
        let kvs: Vec<_> = matching
            .iter()
            .take(limit)
            .map(|(key, value)| proto::KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
                version: 1,
                create_revision: 1,
                mod_revision: 1,
            })
            .collect();
        let more = matching.len() > kvs.len();
        let continuation = if more {
            kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        // Like a gateway: a range without a revision is read at a new snapshot revision.
        let revision = if request.revision == 0 {
            1_000 + self.range_calls.lock().unwrap().len() as u64
        } else {
            request.revision
        };
        Ok(Response::new(proto::RangeResponse {
            revision,
            kvs,
            more,
            continuation,
            count: 0,
        }))
    }

    async fn txn(
        &self,
        _request: Request<proto::TxnRequest>,
    ) -> Result<Response<proto::TxnResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn compact(
        &self,
        _request: Request<proto::CompactRequest>,
    ) -> Result<Response<proto::CompactResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

async fn start(kv: Arc<FakeKv>) -> SocketAddr {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).expect("bind a free port");
    let address = incoming.local_addr().expect("bound address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::from_arc(kv))
            .serve_with_incoming(incoming),
    );
    address
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn fast_config(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig {
        retry_backoff_min: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(10),
        ..ClientConfig::new(endpoints)
    }
}

fn limit_exceeded() -> Status {
    let detail = proto::ErrorDetail {
        kind: Some(proto::error_detail::Kind::LimitExceeded(
            proto::LimitExceeded {
                limit: "value_bytes_max".into(),
                max: 4,
                actual: 5,
            },
        )),
    };
    Status::with_details(
        Code::InvalidArgument,
        "value too large",
        detail.encode_to_vec().into(),
    )
}

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
