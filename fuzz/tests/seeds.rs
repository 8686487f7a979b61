//! The seed corpus: real encodings made by Cairn's own code, a few per target, written to
//! `fuzz/corpus/<target>/` so that the fuzzers start from valid messages and mutate from
//! there. Regenerate them when a format changes (`scripts/fuzz.sh --seeds`, which runs this
//! with `CAIRN_FUZZ_WRITE_SEEDS=1`); without it, this only checks that every target has seeds
//! and that they are the ones this generator makes.
//!
//! Each seed is the target's kind byte followed by the bytes on the wire (see each target's
//! doc comment). Everything here is deterministic: no clocks, no random ids. Inputs that once
//! crashed a target are kept beside the seeds as `regression-*` files, which this leaves alone.

use cairn_auth::{AuthState, Change, KeyRange, Permission, PermissionKind, Role, User, ROOT};
use cairn_fuzz::seed;
use cairn_mvcc::key;
use cairn_mvcc::{Lock, LockOp, WriteRecord};
use cairn_proto::coordinator::v1 as coordinator_pb;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::raft::v1 as raft_pb;
use cairn_raft::command::{
    Command, CommandRevision, Put, PutResult, TxnOpResult, TxnResult, WriteId, WriteOp, WriteResult,
};
use cairn_raft::network::{encode_payload, ENCODING_POSTCARD};
use cairn_raft::sessions::RememberedResult;
use cairn_raft::snapshot_file::{RecordKind, SnapshotHeader, SnapshotWriter};
use cairn_raft::type_config::{
    wire, Entry, LogId, NodeAddress, SnapshotMeta, StoredMembership, Vote,
};
use cairn_types::{codec, ClientId, NodeId, Revision, Sequence, ShardId};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::{
    AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use openraft::Membership;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Seeds = Vec<(&'static str, Vec<u8>)>;

#[test]
fn seed_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = std::env::var_os("CAIRN_FUZZ_WRITE_SEEDS").is_some_and(|v| v == "1");
    for (target, seeds) in [
        ("mvcc_record", mvcc_record()),
        ("raft_payload", raft_payload()),
        ("snapshot_file", snapshot_file()),
        ("node_request", node_request()),
        ("gateway_request", gateway_request()),
        ("auth_token", auth_token()),
        ("auth_message", auth_message()),
        ("coordinator_message", coordinator_message()),
    ] {
        let dir = corpus.join(target);
        if write {
            // Inputs that once crashed a target (`regression-*`) stay; the seeds are made anew.
            std::fs::create_dir_all(&dir).unwrap();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("regression-") {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
        for (name, bytes) in seeds {
            let path: PathBuf = dir.join(name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let committed = std::fs::read(&path).unwrap_or_else(|error| {
                    panic!(
                        "{}: {error} (scripts/fuzz.sh --seeds writes it)",
                        path.display()
                    )
                });
                assert!(
                    committed == bytes,
                    "{} is not what the generator makes now: run scripts/fuzz.sh --seeds",
                    path.display()
                );
            }
        }
    }
}

// ---- mvcc_record ----

fn records() -> Vec<WriteRecord> {
    vec![
        WriteRecord::Put {
            create_revision: Revision(5),
            version: 2,
            value: b"value".to_vec(),
        },
        WriteRecord::Delete,
        WriteRecord::TxnPut {
            start_ts: Revision(3),
            create_revision: Revision(5),
            version: 1,
            value: b"v\x00".to_vec(),
        },
        WriteRecord::TxnDelete {
            start_ts: Revision(3),
        },
        WriteRecord::Rollback,
    ]
}

fn lock(op: LockOp) -> Lock {
    Lock {
        primary: b"primary".to_vec(),
        start_ts: Revision(7),
        ttl_ms: 3_000,
        created_at_ms: 1_000,
        op,
        write_id: Some(codec::encode(&(ClientId(1), Sequence(2)))),
    }
}

/// An entry of the target's stored-shard input: a valid key built from `key` (for a
/// version, its last 8 bytes are the revision), the value framed from `payload`.
fn shard_entry(lock_family: bool, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let flags = 4 | 2 | u8::from(lock_family);
    let mut out = vec![flags, key.len() as u8, payload.len() as u8];
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    out
}

fn version_entry(user_key: &[u8], revision: u64, record: &WriteRecord) -> Vec<u8> {
    let mut key = user_key.to_vec();
    key.extend_from_slice(&revision.to_be_bytes());
    shard_entry(false, &key, &record.encode()[5..])
}

fn mvcc_record() -> Seeds {
    let mut seeds = Seeds::new();
    for (i, record) in records().iter().enumerate() {
        seeds.push((
            ["write-0", "write-1", "write-2", "write-3", "write-4"][i],
            seed(0, &record.encode()),
        ));
    }
    seeds.push(("write-payload", seed(0, &records()[2].encode()[5..])));
    for (name, op) in [
        (
            "lock-put",
            LockOp::Put {
                value: b"v".to_vec(),
            },
        ),
        ("lock-delete", LockOp::Delete),
        ("lock-read", LockOp::Read),
    ] {
        seeds.push((name, seed(1, &lock(op).encode())));
    }
    seeds.push((
        "key-version",
        seed(2, &key::version_key(ShardId(3), b"a\x00b", Revision(9))),
    ));
    seeds.push(("key-lock", seed(2, &key::lock_key(ShardId(3), b"\x00\xff"))));
    let records = records();
    let mut shard = 9u64.to_be_bytes().to_vec();
    for (user_key, revision, record) in [
        (&b"a"[..], 10, &records[0]),
        (b"a", 8, &records[1]),
        (b"a", 6, &records[4]),
        (b"a", 4, &records[0]),
        (b"a", 2, &records[2]),
        (b"a\x00", 9, &records[2]),
        (b"b", 7, &records[3]),
        (b"c", 5, &records[0]),
    ] {
        shard.extend(version_entry(user_key, revision, record));
    }
    shard.extend(shard_entry(true, b"c", &lock(LockOp::Delete).encode()[5..]));
    seeds.push(("shard", seed(3, &shard)));
    seeds
}

// ---- raft_payload ----

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: NodeId(1),
        },
        index,
    )
}

fn vote() -> Vote {
    Vote::new_committed(3, NodeId(1))
}

fn membership() -> Membership<NodeId, NodeAddress> {
    let nodes = BTreeMap::from([
        (
            NodeId(1),
            NodeAddress {
                address: "127.0.0.1:7001".into(),
            },
        ),
        (
            NodeId(2),
            NodeAddress {
                address: "127.0.0.1:7002".into(),
            },
        ),
    ]);
    Membership::new(vec![BTreeSet::from([NodeId(1), NodeId(2)])], nodes).unwrap()
}

fn command() -> Command {
    Command {
        write_id: Some(WriteId {
            client: ClientId(9),
            sequence: Sequence(4),
            first_incomplete: Sequence(2),
        }),
        proposed_at_ms: 1_700_000_000_000,
        op: WriteOp::Put(Put {
            key: b"key".to_vec(),
            value: b"value".to_vec(),
            prev_kv: true,
            condition: None,
        }),
        revision: CommandRevision::Timestamp {
            revision: Revision(42),
            term: 3,
        },
        trace: None,
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::new_normal(log_id(3, 10), command()),
        Entry::new_membership(log_id(3, 11), membership()),
    ]
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(3, 11)),
        last_membership: StoredMembership::new(Some(log_id(3, 11)), membership()),
    }
}

fn raft_payload() -> Seeds {
    let append = wire::AppendEntriesRequest {
        vote: vote(),
        prev_log_id: Some(log_id(3, 9)),
        entries: entries(),
        leader_commit: Some(log_id(3, 9)),
    };
    let append_reply: wire::AppendEntriesReply =
        Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(3, 10))));
    let vote_request: wire::VoteRequest = VoteRequest::new(vote(), Some(log_id(3, 11)));
    let vote_reply: wire::VoteReply = Ok(VoteResponse::new(vote(), Some(log_id(3, 11)), true));
    let transfer: wire::TransferLeaderRequest =
        TransferLeaderRequest::new(vote(), NodeId(2), Some(log_id(3, 11)));
    let transfer_reply: wire::TransferLeaderReply = Ok(Ok(()));
    let header: wire::SnapshotHeader = (vote(), snapshot_meta());
    let snapshot_reply: wire::SnapshotReply = Ok(SnapshotResponse::new(vote()));
    let remembered = RememberedResult::Full(WriteResult::Put(PutResult {
        revision: Revision(42),
        succeeded: true,
        prev_kv: None,
    }));
    vec![
        ("append", seed(0, &encode_payload(&append))),
        ("append-reply", seed(1, &encode_payload(&append_reply))),
        ("vote", seed(2, &encode_payload(&vote_request))),
        ("vote-reply", seed(3, &encode_payload(&vote_reply))),
        ("transfer", seed(4, &encode_payload(&transfer))),
        ("transfer-reply", seed(5, &encode_payload(&transfer_reply))),
        ("snapshot-header", seed(6, &encode_payload(&header))),
        ("snapshot-reply", seed(7, &encode_payload(&snapshot_reply))),
        (
            "envelope",
            seed(
                8,
                &raft_pb::RaftRequest {
                    shard_id: 4,
                    to_node_id: 2,
                    encoding: ENCODING_POSTCARD,
                    payload: encode_payload(&append).into(),
                }
                .encode_to_vec(),
            ),
        ),
        (
            "chunk",
            seed(
                9,
                &raft_pb::SnapshotChunk {
                    shard_id: 4,
                    to_node_id: 2,
                    encoding: ENCODING_POSTCARD,
                    header: encode_payload(&header).into(),
                    data: b"CAIRNSNP".to_vec().into(),
                    done: false,
                }
                .encode_to_vec(),
            ),
        ),
        ("log-entry", seed(10, &codec::encode(&entries()[0]))),
        ("log-membership", seed(10, &codec::encode(&entries()[1]))),
        ("stored-vote", seed(11, &codec::encode(&vote()))),
        (
            "stored-applied",
            seed(12, &codec::encode(&Some(log_id(3, 11)))),
        ),
        (
            "stored-membership",
            seed(
                13,
                &codec::encode(&StoredMembership::new(Some(log_id(3, 11)), membership())),
            ),
        ),
        ("stored-result", seed(14, &codec::encode(&remembered))),
    ]
}

// ---- snapshot_file ----

fn snapshot_file() -> Seeds {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.snap");
    let header = SnapshotHeader {
        shard: ShardId(4),
        snapshot_id: "snap-00000000000000000011".into(),
        last_applied_index: 11,
        revision: Revision(42),
        compact_revision: Revision(7),
    };
    let mut writer = SnapshotWriter::create(&path, &header).unwrap();
    let records = records();
    for (user_key, revision, record) in [(&b"a"[..], 10, &records[0]), (b"b", 9, &records[2])] {
        let key = key::version_key(ShardId(0), user_key, Revision(revision));
        writer
            .record(RecordKind::Version, &key[8..], &record.encode())
            .unwrap();
    }
    let lock_key = key::lock_key(ShardId(0), b"c");
    writer
        .record(
            RecordKind::Lock,
            &lock_key[8..],
            &lock(LockOp::Read).encode(),
        )
        .unwrap();
    writer
        .record(RecordKind::Session, &9u64.to_be_bytes(), b"session")
        .unwrap();
    writer.finish().unwrap();
    let full = std::fs::read(&path).unwrap();
    let empty_path = dir.path().join("empty.snap");
    SnapshotWriter::create(&empty_path, &header)
        .unwrap()
        .finish()
        .unwrap();
    vec![
        ("snapshot", full),
        ("empty", std::fs::read(&empty_path).unwrap()),
    ]
}

// ---- node_request ----

fn target() -> Option<node_pb::ShardTarget> {
    Some(node_pb::ShardTarget {
        shard_id: 2,
        epoch: 5,
    })
}

fn write_id() -> Option<pb::WriteId> {
    Some(pb::WriteId {
        client_id: 9,
        sequence: 4,
        first_incomplete_sequence: 2,
    })
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        write_id: write_id(),
        ..Default::default()
    }
}

fn op(request: pb::request_op::Request) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request),
    }
}

fn txn() -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b"lock/a".to_vec(),
            result: pb::compare::Result::Equal as i32,
            target: Some(pb::compare::Target::Version(0)),
        }],
        success: vec![
            op(pb::request_op::Request::Put(pb::PutRequest {
                key: b"lock/a".to_vec(),
                value: b"me".to_vec(),
                ..Default::default()
            })),
            op(pb::request_op::Request::Range(pb::RangeRequest {
                prefix: b"lock/".to_vec(),
                limit: 10,
                ..Default::default()
            })),
        ],
        failure: vec![op(pb::request_op::Request::Get(pb::GetRequest {
            key: b"lock/a".to_vec(),
            ..Default::default()
        }))],
        write_id: write_id(),
    }
}

fn txn_response() -> pb::TxnResponse {
    pb::TxnResponse::from(TxnResult {
        revision: Revision(42),
        succeeded: true,
        responses: vec![TxnOpResult::Put(PutResult {
            revision: Revision(42),
            succeeded: true,
            prev_kv: None,
        })],
    })
}

fn node_request() -> Seeds {
    use node_pb::shard_op::Op;
    let item = |id: u64, op: Op| node_pb::BatchItem {
        id,
        op: Some(node_pb::ShardOp { op: Some(op) }),
        timeout_ms: 2_000,
        traceparent: if id == 1 {
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
        } else {
            String::new()
        },
    };
    let batch = node_pb::BatchRequest {
        items: vec![
            item(
                1,
                Op::Put(node_pb::ShardPutRequest {
                    target: target(),
                    request: Some(put("k", "v")),
                }),
            ),
            item(
                2,
                Op::Get(node_pb::ShardGetRequest {
                    target: target(),
                    request: Some(pb::GetRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    }),
                    own_start_ts: 0,
                }),
            ),
            item(
                3,
                Op::Delete(node_pb::ShardDeleteRequest {
                    target: target(),
                    request: Some(pb::DeleteRequest {
                        key: b"k".to_vec(),
                        prev_kv: true,
                        write_id: write_id(),
                    }),
                }),
            ),
            item(
                4,
                Op::Txn(node_pb::ShardTxnRequest {
                    target: target(),
                    request: Some(txn()),
                }),
            ),
        ],
    };
    let range = node_pb::ShardRangeRequest {
        target: target(),
        request: Some(pb::RangeRequest {
            start: b"a".to_vec(),
            end: b"z".to_vec(),
            continuation: b"c".to_vec(),
            limit: 100,
            ..Default::default()
        }),
        own_start_ts: 0,
    };
    let mutation = |key: &str, op: node_pb::txn_mutation::Op, value: &str| node_pb::TxnMutation {
        key: key.into(),
        op: op as i32,
        value: value.into(),
    };
    let prewrite = node_pb::PrewriteRequest {
        target: target(),
        start_ts: 40,
        primary: b"a".to_vec(),
        lock_ttl_ms: 3_000,
        mutations: vec![
            mutation("a", node_pb::txn_mutation::Op::Put, "1"),
            mutation("b", node_pb::txn_mutation::Op::Delete, ""),
            mutation("c", node_pb::txn_mutation::Op::Read, ""),
        ],
        write_id: write_id(),
    };
    let commit = node_pb::CommitRequest {
        target: target(),
        start_ts: 40,
        commit_ts: 42,
        keys: vec![b"a".to_vec(), b"b".to_vec()],
        write_id: write_id(),
        result: Some(txn_response()),
    };
    let rollback = node_pb::RollbackRequest {
        target: target(),
        start_ts: 40,
        keys: vec![b"a".to_vec()],
    };
    let resolve = node_pb::ResolveLocksRequest {
        target: target(),
        start_ts: 40,
        keys: vec![b"a".to_vec(), b"c".to_vec()],
        commit_ts: 42,
    };
    let check = node_pb::CheckTxnStatusRequest {
        target: target(),
        start_ts: 40,
        primary: b"a".to_vec(),
        rollback_if_missing: true,
        ..Default::default()
    };
    let scan = node_pb::ScanLocksRequest {
        target: target(),
        start: b"a".to_vec(),
        end: b"z".to_vec(),
        max_start_ts: 50,
        limit: 10,
    };
    vec![
        ("batch", seed(0, &batch.encode_to_vec())),
        ("range", seed(1, &range.encode_to_vec())),
        ("prewrite", seed(2, &prewrite.encode_to_vec())),
        ("commit", seed(3, &commit.encode_to_vec())),
        ("rollback", seed(4, &rollback.encode_to_vec())),
        ("resolve-locks", seed(5, &resolve.encode_to_vec())),
        ("check-txn-status", seed(6, &check.encode_to_vec())),
        ("scan-locks", seed(7, &scan.encode_to_vec())),
        ("txn-result", seed(8, &txn_response().encode_to_vec())),
        ("destination", seed(9, b"7\0cluster-a")),
    ]
}

// ---- gateway_request ----

fn gateway_request() -> Seeds {
    use node_pb::batch_item_result::Result as ItemResult;
    let locked = pb::ErrorDetail {
        kind: Some(pb::error_detail::Kind::KeyLocked(pb::KeyLocked {
            key: b"k".to_vec(),
            primary: b"p".to_vec(),
            start_ts: 40,
            ttl_ms: 3_000,
            created_at_ms: 1_000,
            kind: pb::key_locked::Kind::Put as i32,
        })),
    };
    let answers = node_pb::BatchResponse {
        results: vec![
            node_pb::BatchItemResult {
                id: 1,
                result: Some(ItemResult::Put(pb::PutResponse {
                    revision: 42,
                    succeeded: true,
                    prev_kv: None,
                })),
            },
            node_pb::BatchItemResult {
                id: 2,
                result: Some(ItemResult::Error(node_pb::ItemError {
                    code: tonic::Code::Aborted as i32,
                    message: "key locked".into(),
                    details: locked.encode_to_vec(),
                })),
            },
        ],
    };
    let kv = |key: &str| pb::KeyValue {
        key: key.into(),
        value: b"v".to_vec(),
        create_revision: 3,
        mod_revision: 4,
        version: 1,
    };
    let page = |keys: &[&str], more: bool| pb::ResponseOp {
        response: Some(pb::response_op::Response::Range(pb::RangeResponse {
            revision: 42,
            kvs: keys.iter().map(|key| kv(key)).collect(),
            more,
            continuation: Vec::new(),
            count: keys.len() as u64,
        })),
    };
    let pages = pb::TxnResponse {
        revision: 3,
        succeeded: true,
        responses: vec![page(&["a", "d"], true), page(&["b", "c"], false)],
    };
    vec![
        ("put", seed(0, &put("k", "v").encode_to_vec())),
        (
            "delete",
            seed(
                1,
                &pb::DeleteRequest {
                    key: b"k".to_vec(),
                    prev_kv: true,
                    write_id: None,
                }
                .encode_to_vec(),
            ),
        ),
        (
            "get",
            seed(
                2,
                &pb::GetRequest {
                    key: b"k".to_vec(),
                    revision: 9,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "range-prefix",
            seed(
                3,
                &pb::RangeRequest {
                    prefix: b"\xff\xff".to_vec(),
                    limit: 5,
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "range-bounds",
            seed(
                3,
                &pb::RangeRequest {
                    start: b"a".to_vec(),
                    end: b"m".to_vec(),
                    continuation: b"c".to_vec(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
        ),
        ("txn", seed(4, &txn().encode_to_vec())),
        ("node-answers", seed(5, &answers.encode_to_vec())),
        ("range-pages", seed(6, &pages.encode_to_vec())),
    ]
}

// ---- auth_token ----

fn token_state() -> AuthState {
    let mut state = AuthState {
        enabled: true,
        secret: vec![7; 32],
        revision: 4,
        ..Default::default()
    };
    state.users.insert("alice".into(), User::default());
    state
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

fn auth_token() -> Seeds {
    let token = cairn_auth::token::issue(&token_state(), "alice", 2_000_000).unwrap();
    let (payload, _) = token.split_once('.').unwrap();
    vec![
        ("token", seed(0, token.as_bytes())),
        ("payload", seed(1, &unhex(payload))),
        ("bearer", seed(2, format!("Bearer {token}").as_bytes())),
    ]
}

// ---- auth_message ----

fn auth_state() -> AuthState {
    let mut state = AuthState::default();
    for change in [
        Change::RoleAdd {
            name: "reader".into(),
        },
        Change::RoleGrantPermission {
            role: "reader".into(),
            permission: Permission {
                kind: PermissionKind::Read,
                range: KeyRange::prefix(b"a/"),
            },
        },
        Change::RoleGrantPermission {
            role: "reader".into(),
            permission: Permission {
                kind: PermissionKind::ReadWrite,
                range: KeyRange::from_etcd(b"m", b"p"),
            },
        },
        Change::UserAdd {
            name: ROOT.into(),
            password_hash: Some("hash".into()),
        },
        Change::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        },
        Change::UserAdd {
            name: "alice".into(),
            password_hash: None,
        },
        Change::UserGrantRole {
            user: "alice".into(),
            role: "reader".into(),
        },
        Change::Enable,
    ] {
        state = state.apply(&change).unwrap();
    }
    state.secret = vec![1; 32];
    state.revision = 12;
    state
        .roles
        .entry("empty".into())
        .or_insert_with(Role::default);
    state
}

fn auth_message() -> Seeds {
    use pb::auth_change_request::Op;
    let permission = pb::Permission {
        kind: pb::permission::Kind::Readwrite as i32,
        key: b"a/".to_vec(),
        range_end: b"a0".to_vec(),
    };
    let change = |op: Op, user: &str, role: &str, password: &str| pb::AuthChangeRequest {
        op: op as i32,
        user: user.into(),
        role: role.into(),
        password: password.into(),
        permission: matches!(op, Op::RoleGrantPermission | Op::RoleRevokePermission)
            .then(|| permission.clone()),
    };
    vec![
        (
            "state",
            seed(
                0,
                &coordinator_pb::AuthState::from(&auth_state()).encode_to_vec(),
            ),
        ),
        (
            "user-add",
            seed(1, &change(Op::UserAdd, "bob", "", "secret").encode_to_vec()),
        ),
        (
            "grant-role",
            seed(
                1,
                &change(Op::UserGrantRole, "alice", "reader", "").encode_to_vec(),
            ),
        ),
        (
            "grant-permission",
            seed(
                1,
                &change(Op::RoleGrantPermission, "", "reader", "").encode_to_vec(),
            ),
        ),
        (
            "revoke-permission",
            seed(
                1,
                &change(Op::RoleRevokePermission, "", "reader", "").encode_to_vec(),
            ),
        ),
        ("stored-state", seed(2, &codec::encode(&auth_state()))),
        ("permission", seed(3, &permission.encode_to_vec())),
    ]
}

// ---- coordinator_message ----

fn coordinator_message() -> Seeds {
    let heartbeat = coordinator_pb::HeartbeatRequest {
        node_id: 2,
        address: "127.0.0.1:7002".into(),
        replicas: vec![coordinator_pb::ReplicaReport {
            shard_id: 4,
            role: coordinator_pb::RaftRole::Leader as i32,
            term: 3,
            leader_node_id: 2,
            committed_index: 11,
            applied_index: 11,
            epoch: 12,
            voters: vec![1, 2, 3],
            learners: vec![4],
            approximate_size_bytes: 1 << 20,
        }],
        storage_engine: coordinator_pb::StorageEngine::Disk as i32,
    };
    let join = coordinator_pb::JoinClusterRequest {
        address: "127.0.0.1:7004".into(),
        join_token: "0af7651916cd43dd8448eb211c80319c".into(),
        cluster_id: "cluster-a".into(),
        ..Default::default()
    };
    let record = cairn_coordinator::metadata::ShardRecord {
        id: ShardId(4),
        initial_voters: vec![NodeId(1), NodeId(2), NodeId(3)],
        pending_move: Some(cairn_coordinator::placement::Move {
            to: NodeId(4),
            from: Some(NodeId(1)),
        }),
    };
    vec![
        ("heartbeat", seed(0, &heartbeat.encode_to_vec())),
        ("join", seed(1, &join.encode_to_vec())),
        (
            "shard-record",
            seed(
                2,
                &cairn_coordinator::persisted::encode_shard_record(&record),
            ),
        ),
    ]
}
