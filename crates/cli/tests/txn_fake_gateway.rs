//! `cairnctl txn` as a user runs it (a separate process, stdin piped) against an in-process
//! fake gateway that records the transactions it receives: what is sent for arguments, a file
//! and stdin; etcdctl's output; exit codes; parse errors before anything is sent; a conflict
//! run again.

use cairn_client::proto;
use cairn_client::proto::kv_server::{Kv, KvServer};
use prost::Message;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

const CAIRNCTL: &str = env!("CARGO_BIN_EXE_cairnctl");

/// Answers a transaction whose first comparison is on the key `fail` with its failure branch,
/// any other with its success branch; `conflicts` transactions first lose a race.
#[derive(Default)]
struct FakeKv {
    received: Mutex<Vec<proto::TxnRequest>>,
    conflicts: Mutex<u32>,
}

fn kv(key: &[u8]) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_vec(),
        value: b"stored".to_vec(),
        create_revision: 2,
        mod_revision: 5,
        version: 3,
    }
}

#[tonic::async_trait]
impl Kv for FakeKv {
    async fn txn(
        &self,
        request: Request<proto::TxnRequest>,
    ) -> Result<Response<proto::TxnResponse>, Status> {
        let request = request.into_inner();
        self.received.lock().unwrap().push(request.clone());
        {
            let mut conflicts = self.conflicts.lock().unwrap();
            if *conflicts > 0 {
                *conflicts -= 1;
                let detail = proto::ErrorDetail {
                    kind: Some(proto::error_detail::Kind::Conflict(proto::Conflict {
                        key: b"a".to_vec(),
                        start_revision: 7,
                        conflicting_revision: 8,
                    })),
                };
                return Err(Status::with_details(
                    Code::Aborted,
                    "conflict",
                    detail.encode_to_vec().into(),
                ));
            }
        }
        let succeeded = request.compare.first().is_none_or(|c| c.key != b"fail");
        let branch = if succeeded {
            request.success
        } else {
            request.failure
        };
        use proto::request_op::Request as Op;
        use proto::response_op::Response as Answer;
        let responses = branch
            .into_iter()
            .map(|op| proto::ResponseOp {
                response: Some(match op.request.expect("an op") {
                    Op::Put(_) => Answer::Put(proto::PutResponse {
                        revision: 9,
                        succeeded: true,
                        prev_kv: None,
                    }),
                    Op::Get(get) => Answer::Get(proto::GetResponse {
                        revision: 9,
                        kv: Some(kv(&get.key)),
                    }),
                    Op::Delete(_) => Answer::Delete(proto::DeleteResponse {
                        revision: 9,
                        deleted: 1,
                        prev_kv: None,
                    }),
                    Op::Range(range) => Answer::Range(proto::RangeResponse {
                        revision: 9,
                        kvs: vec![kv(&[range.prefix.as_slice(), b"1"].concat())],
                        ..Default::default()
                    }),
                }),
            })
            .collect();
        Ok(Response::new(proto::TxnResponse {
            revision: 9,
            succeeded,
            responses,
        }))
    }

    async fn put(
        &self,
        _: Request<proto::PutRequest>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn get(
        &self,
        _: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn delete(
        &self,
        _: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn range(
        &self,
        _: Request<proto::RangeRequest>,
    ) -> Result<Response<proto::RangeResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn compact(
        &self,
        _: Request<proto::CompactRequest>,
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

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs cairnctl against `address` with `stdin` piped in.
async fn cairnctl(address: SocketAddr, args: &[&str], stdin: &str) -> Outcome {
    let mut child = tokio::process::Command::new(CAIRNCTL)
        .arg("--endpoints")
        .arg(address.to_string())
        .arg("--timeout")
        .arg("10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairnctl");
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("cairnctl finished in time")
        .expect("cairnctl ran");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn arguments_become_one_transaction_printed_like_etcdctl() {
    let fake = Arc::new(FakeKv::default());
    let address = start(fake.clone()).await;

    let outcome = cairnctl(
        address,
        &[
            "txn",
            "--if",
            r#"mod("a") > "0""#,
            "--if",
            r#"value("b") = "x y""#,
            "--then",
            "put a 1",
            "--then",
            "get b",
            "--else",
            "del a",
        ],
        "",
    )
    .await;

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "SUCCESS\n\nOK\n\nb\nstored\n");
    let received = fake.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let txn = &received[0];
    assert_eq!(txn.compare.len(), 2);
    assert_eq!(txn.compare[0].key, b"a");
    assert_eq!(txn.compare[0].result(), proto::compare::Result::Greater);
    assert_eq!(
        txn.compare[0].target,
        Some(proto::compare::Target::ModRevision(0))
    );
    assert_eq!(
        txn.compare[1].target,
        Some(proto::compare::Target::Value(b"x y".to_vec()))
    );
    assert_eq!((txn.success.len(), txn.failure.len()), (2, 1));
    assert!(txn.write_id.is_some(), "a transaction carries a write id");
}

#[tokio::test]
async fn stdin_in_etcdctl_format_and_failure_exits_4() {
    let fake = Arc::new(FakeKv::default());
    let address = start(fake.clone()).await;
    let script = "value(\"fail\") = \"v\"\n\nput fail w\n\nget fail\nget --prefix p/\n\n";

    let outcome = cairnctl(address, &["txn"], script).await;

    assert_eq!(outcome.code, 4, "{}", outcome.stderr);
    assert_eq!(outcome.stdout, "FAILURE\n\nfail\nstored\n\np/1\nstored\n");
    assert_eq!(
        outcome.stderr.trim_end(),
        "error: a comparison did not hold: the failure requests ran (FAILURE)"
    );
    assert!(
        !outcome.stderr.contains("compares:"),
        "no prompts for a pipe"
    );
    let received = fake.received.lock().unwrap().clone();
    assert!(matches!(
        &received[0].failure[1].request,
        Some(proto::request_op::Request::Range(range)) if range.prefix == b"p/"
    ));
}

#[tokio::test]
async fn a_file_and_json_output() {
    let fake = Arc::new(FakeKv::default());
    let address = start(fake.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transfer.txn");
    std::fs::write(
        &path,
        "# move 10 from a to b\nmod(\"a\") = \"5\"\nmod(\"b\") = \"5\"\n\nput a 90\nput b 110\n",
    )
    .unwrap();

    let outcome = cairnctl(
        address,
        &["-o", "json", "txn", "--file", path.to_str().unwrap()],
        "",
    )
    .await;

    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let document: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(document["succeeded"], true);
    assert_eq!(document["revision"], 9);
    assert_eq!(document["responses"][1]["put"]["revision"], 9);
    assert_eq!(fake.received.lock().unwrap()[0].success.len(), 2);
}

#[tokio::test]
async fn a_parse_error_names_the_line_and_sends_nothing() {
    let fake = Arc::new(FakeKv::default());
    let address = start(fake.clone()).await;

    let outcome = cairnctl(address, &["txn"], "mod(\"a\") > \"0\"\n\nput a 1\nget\n").await;

    assert_eq!(outcome.code, 2);
    assert!(outcome.stdout.is_empty());
    assert!(
        outcome
            .stderr
            .starts_with("error: stdin, line 4: get needs KEY"),
        "{}",
        outcome.stderr
    );
    assert_eq!(outcome.stderr.lines().count(), 1);

    let outcome = cairnctl(
        address,
        &["txn", "--then", "put a 1", "--then", "put b"],
        "",
    )
    .await;
    assert_eq!(outcome.code, 2);
    assert!(
        outcome
            .stderr
            .starts_with("error: --then #2: expected 2 argument(s)"),
        "{}",
        outcome.stderr
    );

    let outcome = cairnctl(address, &["txn", "--file", "/no/such/file.txn"], "").await;
    assert_eq!(outcome.code, 2);
    assert!(
        outcome
            .stderr
            .starts_with("error: cannot read /no/such/file.txn"),
        "{}",
        outcome.stderr
    );
    assert!(fake.received.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_lost_race_is_run_again_and_one_that_keeps_losing_exits_1() {
    let fake = Arc::new(FakeKv {
        conflicts: Mutex::new(1),
        ..FakeKv::default()
    });
    let address = start(fake.clone()).await;
    let outcome = cairnctl(address, &["txn", "--then", "put a 1"], "").await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let ids: Vec<u64> = fake
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|txn| txn.write_id.expect("a write id").sequence)
        .collect();
    assert_eq!(ids, [1, 2], "a second run, as a new write");

    let fake = Arc::new(FakeKv {
        conflicts: Mutex::new(100),
        ..FakeKv::default()
    });
    let address = start(fake.clone()).await;
    let outcome = cairnctl(address, &["txn", "--then", "put a 1"], "").await;
    assert_eq!(outcome.code, 1);
    assert!(
        outcome
            .stderr
            .starts_with("error: transaction conflict on key a"),
        "{}",
        outcome.stderr
    );
    assert_eq!(
        fake.received.lock().unwrap().len(),
        4,
        "the default policy: 4 runs"
    );
}
