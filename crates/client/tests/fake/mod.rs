//! An in-process fake gateway (the `KV` service) that fails on command, shared by the SDK's
//! test binaries. Each binary uses part of it, hence `allow(dead_code)`.
#![allow(dead_code)]

use cairn_client::proto::kv_server::{Kv, KvServer};
use cairn_client::{proto, ClientConfig};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

#[derive(Default)]
pub struct FakeKv {
    /// Errors to answer, one per call, before answering normally.
    pub failures: Mutex<VecDeque<Status>>,
    /// Every write id received by put, in arrival order.
    pub put_write_ids: Mutex<Vec<proto::WriteId>>,
    /// Every transaction received, in arrival order.
    pub txn_requests: Mutex<Vec<proto::TxnRequest>>,
    pub range_calls: Mutex<Vec<proto::RangeRequest>>,
    pub keys: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Put holds each request this long before answering.
    pub put_delay: Duration,
}

impl FakeKv {
    /// A fake that answers these errors first, one per call.
    pub fn failing(failures: impl IntoIterator<Item = Status>) -> Self {
        Self {
            failures: Mutex::new(failures.into_iter().collect()),
            ..Self::default()
        }
    }

    /// The write ids of the transactions received, in arrival order.
    pub fn txn_write_ids(&self) -> Vec<proto::WriteId> {
        self.txn_requests
            .lock()
            .unwrap()
            .iter()
            .map(|request| request.write_id.expect("the SDK sets write ids"))
            .collect()
    }

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

    /// Records the request, then fails as told or answers: the success branch taken when
    /// there are no comparisons, each op answered as if the store were empty.
    async fn txn(
        &self,
        request: Request<proto::TxnRequest>,
    ) -> Result<Response<proto::TxnResponse>, Status> {
        let request = request.into_inner();
        self.txn_requests.lock().unwrap().push(request.clone());
        if let Some(status) = self.next_failure() {
            return Err(status);
        }
        let succeeded = request.compare.is_empty();
        let branch = if succeeded {
            request.success
        } else {
            request.failure
        };
        let revision = 100 + self.txn_requests.lock().unwrap().len() as u64;
        let responses = branch
            .into_iter()
            .map(|op| {
                use proto::request_op::Request as Op;
                use proto::response_op::Response as Answer;
                let response = match op.request {
                    Some(Op::Put(_)) => Answer::Put(proto::PutResponse {
                        revision,
                        succeeded: true,
                        prev_kv: None,
                    }),
                    Some(Op::Get(_)) => Answer::Get(proto::GetResponse { revision, kv: None }),
                    Some(Op::Delete(_)) => Answer::Delete(proto::DeleteResponse {
                        revision,
                        deleted: 0,
                        prev_kv: None,
                    }),
                    Some(Op::Range(_)) | None => Answer::Range(proto::RangeResponse {
                        revision,
                        ..Default::default()
                    }),
                };
                proto::ResponseOp {
                    response: Some(response),
                }
            })
            .collect();
        Ok(Response::new(proto::TxnResponse {
            revision,
            succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        _request: Request<proto::CompactRequest>,
    ) -> Result<Response<proto::CompactResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

pub async fn start(kv: Arc<FakeKv>) -> SocketAddr {
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
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub fn fast_config(endpoints: Vec<String>) -> ClientConfig {
    ClientConfig {
        retry_backoff_min: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(10),
        ..ClientConfig::new(endpoints)
    }
}

pub fn limit_exceeded() -> Status {
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

/// A gateway's answer to a transaction that lost a race on `key`.
pub fn conflict(key: &str) -> Status {
    let detail = proto::ErrorDetail {
        kind: Some(proto::error_detail::Kind::Conflict(proto::Conflict {
            key: key.as_bytes().to_vec(),
            start_revision: 40,
            conflicting_revision: 41,
        })),
    };
    Status::with_details(
        Code::Aborted,
        "transaction conflict",
        detail.encode_to_vec().into(),
    )
}
