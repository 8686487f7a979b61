use super::*;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1::shard_kv_server::{ShardKv, ShardKvServer};
use std::sync::Mutex;
use tonic::{Request, Response, Streaming};

/// How the fake node treats one stream, in the order streams are opened.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Answers every item (revision = the put's key as a number): holds results until it
    /// has this many, then sends them in reverse order, as one message.
    AnswerReversedInGroupsOf(usize),
    /// Ends the stream when the first message comes, answering nothing.
    End,
    /// Reads items and never answers.
    Silent,
}

#[derive(Clone)]
struct FakeNode {
    behaviours: Arc<Mutex<Vec<Behaviour>>>,
}

fn not_used<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the fake node only serves Batch"))
}

#[tonic::async_trait]
impl ShardKv for FakeNode {
    type BatchStream =
        tokio_stream::wrappers::ReceiverStream<Result<node_pb::BatchResponse, Status>>;
    async fn put(
        &self,
        _: Request<node_pb::ShardPutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        not_used()
    }
    async fn get(
        &self,
        _: Request<node_pb::ShardGetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        not_used()
    }
    async fn delete(
        &self,
        _: Request<node_pb::ShardDeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        not_used()
    }
    async fn range(
        &self,
        _: Request<node_pb::ShardRangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        not_used()
    }
    async fn txn(
        &self,
        _: Request<node_pb::ShardTxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        not_used()
    }
    async fn prewrite(
        &self,
        _: Request<node_pb::PrewriteRequest>,
    ) -> Result<Response<node_pb::PrewriteResponse>, Status> {
        not_used()
    }
    async fn commit(
        &self,
        _: Request<node_pb::CommitRequest>,
    ) -> Result<Response<node_pb::CommitResponse>, Status> {
        not_used()
    }
    async fn rollback(
        &self,
        _: Request<node_pb::RollbackRequest>,
    ) -> Result<Response<node_pb::RollbackResponse>, Status> {
        not_used()
    }
    async fn check_txn_status(
        &self,
        _: Request<node_pb::CheckTxnStatusRequest>,
    ) -> Result<Response<node_pb::CheckTxnStatusResponse>, Status> {
        not_used()
    }
    async fn resolve_locks(
        &self,
        _: Request<node_pb::ResolveLocksRequest>,
    ) -> Result<Response<node_pb::ResolveLocksResponse>, Status> {
        not_used()
    }
    async fn scan_locks(
        &self,
        _: Request<node_pb::ScanLocksRequest>,
    ) -> Result<Response<node_pb::ScanLocksResponse>, Status> {
        not_used()
    }
    async fn batch(
        &self,
        request: Request<Streaming<node_pb::BatchRequest>>,
    ) -> Result<Response<Self::BatchStream>, Status> {
        let behaviour = {
            let mut behaviours = self.behaviours.lock().unwrap();
            if behaviours.len() > 1 {
                behaviours.remove(0)
            } else {
                behaviours[0]
            }
        };
        let mut inbound = request.into_inner();
        let (out, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok(Some(message)) = inbound.message().await {
                let group = match behaviour {
                    Behaviour::End => return,
                    Behaviour::Silent => continue,
                    Behaviour::AnswerReversedInGroupsOf(group) => group,
                };
                held.extend(message.items.into_iter().map(|item| {
                    let Some(Op::Put(put)) = item.op.and_then(|op| op.op) else {
                        panic!("the tests send puts only");
                    };
                    let key = put.request.unwrap().key;
                    node_pb::BatchItemResult {
                        id: item.id,
                        result: Some(ItemResult::Put(pb::PutResponse {
                            revision: String::from_utf8(key).unwrap().parse().unwrap(),
                            ..Default::default()
                        })),
                    }
                }));
                while held.len() >= group {
                    let results = held.drain(..group).rev().collect();
                    if out
                        .send(Ok(node_pb::BatchResponse { results }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

async fn start_fake(behaviours: Vec<Behaviour>) -> (NodeStream, Arc<StreamStats>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = FakeNode {
        behaviours: Arc::new(Mutex::new(behaviours)),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ShardKvServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let client = cairn_proto::node::v1::shard_kv_client::ShardKvClient::with_interceptor(
        channel,
        crate::router::NodeCall::default(),
    );
    let stats = Arc::new(StreamStats::default());
    (NodeStream::start(address, client, stats.clone()), stats)
}

fn put(key: u64) -> Op {
    Op::Put(node_pb::ShardPutRequest {
        target: None,
        request: Some(pb::PutRequest {
            key: key.to_string().into_bytes(),
            ..Default::default()
        }),
    })
}

fn revision(result: Result<ItemResult, Status>) -> u64 {
    match result {
        Ok(ItemResult::Put(put)) => put.revision,
        other => panic!("expected a put result, got {other:?}"),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_its_own_result_in_whatever_order_the_node_answers() {
    let (stream, stats) = start_fake(vec![Behaviour::AnswerReversedInGroupsOf(20)]).await;
    let calls = (1..=200u64).map(|key| {
        let stream = stream.clone();
        tokio::spawn(async move { (key, stream.call(put(key), soon()).await) })
    });
    for call in futures::future::join_all(calls).await {
        let (key, result) = call.unwrap();
        assert_eq!(revision(result), key);
    }
    assert_eq!(stats.ops.load(Relaxed), 200);
    assert_eq!(
        stats.streams_opened.load(Relaxed),
        1,
        "one stream carries them all"
    );
    let messages = stats.messages.load(Relaxed);
    assert!((1..=200).contains(&messages), "{messages} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_stream_fails_its_ops_as_unavailable_and_the_next_op_opens_another() {
    let (stream, stats) =
        start_fake(vec![Behaviour::End, Behaviour::AnswerReversedInGroupsOf(1)]).await;
    let failed = stream.call(put(1), soon()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed}");
    assert_eq!(revision(stream.call(put(2), soon()).await), 2);
    assert_eq!(stats.streams_opened.load(Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_answering_loses_its_stream_after_the_deadline() {
    let (stream, stats) = start_fake(vec![
        Behaviour::Silent,
        Behaviour::AnswerReversedInGroupsOf(1),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_millis(200);
    let timed_out = stream.call(put(1), deadline).await.unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out}");
    // A sweep after the deadline plus one interval drops the silent stream; until then,
    // ops still go to it and time out, and the ones it carries when dropped fail as
    // unavailable. Try until one is answered, for at most 10 s.
    let give_up = Instant::now() + Duration::from_secs(10);
    let answered = loop {
        let attempt = Instant::now() + Duration::from_millis(300);
        match stream.call(put(2), attempt).await {
            Ok(result) => break result,
            Err(status) if Instant::now() < give_up => assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable),
                "{status}"
            ),
            Err(status) => panic!("the silent stream was never dropped: {status}"),
        }
    };
    assert_eq!(revision(Ok(answered)), 2);
    assert_eq!(stats.streams_opened.load(Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_fails_the_op_as_unavailable() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    let client = cairn_proto::node::v1::shard_kv_client::ShardKvClient::with_interceptor(
        channel,
        crate::router::NodeCall::default(),
    );
    let stream = NodeStream::start(address, client, Arc::default());
    let failed = stream.call(put(1), soon()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed}");
}
