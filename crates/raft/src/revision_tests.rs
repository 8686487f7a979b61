//! The shard state machine with oracle timestamps: versions at their timestamps (also out of
//! order across keys), the apply-time refusals, a refused write's retry, compaction, and a
//! snapshot carrying history to another replica.

use crate::command::{
    Command, CommandResponse, CommandRevision, Put, WriteId, WriteOp, WriteResult,
};
use crate::kv::KvView;
use crate::pending_apply::PendingApply;
use crate::sessions::SessionLimits;
use crate::state_machine::{read_compaction, ShardStateMachine};
use crate::type_config::{Entry, LogId};
use cairn_mvcc::Refusal;
use cairn_types::{ClientId, NodeId, Revision, Sequence, ShardId};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use std::path::Path;
use std::sync::Arc;

const SHARD: ShardId = ShardId(4);

fn open(dir: &Path) -> (Arc<rocksdb::DB>, ShardStateMachine) {
    let points = Arc::new(crate::mvcc_store::CompactionPoints::default());
    let db = crate::database::open_database(&dir.join("db"), &Default::default(), points.clone())
        .unwrap();
    let machine = ShardStateMachine::open(
        db.clone(),
        SHARD,
        dir.join("snapshots"),
        SessionLimits::default(),
        points,
    )
    .unwrap();
    (db, machine)
}

/// An entry appended in `log_term` whose timestamp was fetched in `fetched_term`.
fn stamped(
    index: u64,
    log_term: u64,
    fetched_term: u64,
    revision: u64,
    sequence: u64,
    key: &str,
    value: &str,
) -> Entry {
    let command = Command {
        write_id: Some(WriteId {
            client: ClientId(9),
            sequence: Sequence(sequence),
            first_incomplete: Sequence(1),
        }),
        proposed_at_ms: 1,
        op: WriteOp::Put(Put {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
            condition: None,
        }),
        revision: CommandRevision::Timestamp {
            revision: Revision(revision),
            term: fetched_term,
        },
        trace: None,
    };
    Entry::new_normal(log_id(log_term, index), command)
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term,
            node_id: NodeId(1),
        },
        index,
    )
}

fn apply(machine: &mut ShardStateMachine, entry: Entry) -> WriteResult {
    let mut pending = PendingApply::default();
    pending.note(&entry);
    let response = machine.apply_entry(entry, &mut pending).unwrap();
    machine.write_pending(&mut pending).unwrap();
    match response {
        CommandResponse::Write(result) => result,
        CommandResponse::None => panic!("a write answers"),
    }
}

fn value_at(db: &rocksdb::DB, key: &str, at: u64) -> Option<(String, u64)> {
    KvView::new(db, SHARD)
        .get_at(key.as_bytes(), Revision(at), false)
        .unwrap()
        .map(|kv| (String::from_utf8(kv.value).unwrap(), kv.mod_revision.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamped_writes_land_at_their_revisions_and_other_leaderships_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut machine) = open(dir.path());

    tracing::info!("--- writes to different keys may apply out of revision order");
    let WriteResult::Put(first) = apply(&mut machine, stamped(1, 1, 1, 100, 1, "a", "1")) else {
        panic!("a put result");
    };
    assert_eq!(first.revision, Revision(100));
    apply(&mut machine, stamped(2, 1, 1, 50, 2, "b", "1"));
    assert_eq!(value_at(&db, "b", 60), Some(("1".into(), 50)));
    assert_eq!(value_at(&db, "a", 99), None);

    tracing::info!(
        "--- a timestamp fetched in term 1, appended in term 2: refused, not remembered"
    );
    let refused = apply(&mut machine, stamped(3, 2, 1, 200, 3, "a", "2"));
    assert_eq!(
        refused,
        WriteResult::Refused(Refusal::LeadershipChanged {
            fetched_in_term: 1,
            entry_term: 2
        })
    );
    assert_eq!(value_at(&db, "a", u64::MAX), Some(("1".into(), 100)));
    // Its retry (same write id, a new timestamp) is applied, not answered with the refusal.
    let WriteResult::Put(retried) = apply(&mut machine, stamped(4, 2, 2, 300, 3, "a", "2")) else {
        panic!("the retry is applied");
    };
    assert_eq!(retried.revision, Revision(300));

    tracing::info!("--- a revision not above the key's newest version is refused");
    let behind = apply(&mut machine, stamped(5, 2, 2, 250, 4, "a", "3"));
    assert!(matches!(
        behind,
        WriteResult::Refused(Refusal::NotAboveNewest { .. })
    ));
    assert_eq!(value_at(&db, "a", 299), Some(("1".into(), 100)));
    assert_eq!(value_at(&db, "a", 300), Some(("2".into(), 300)));

    tracing::info!("--- compaction to 150, then a snapshot carries the history to another replica");
    let compact = Entry::new_normal(
        log_id(2, 6),
        Command {
            write_id: None,
            proposed_at_ms: 1,
            op: WriteOp::Compact {
                revision: Revision(150),
            },
            revision: CommandRevision::Counted,
            trace: None,
        },
    );
    assert_eq!(
        apply(&mut machine, compact),
        WriteResult::Compacted {
            compact_revision: Revision(150)
        }
    );
    assert_eq!(read_compaction(&db, None, SHARD).unwrap(), Revision(150));
    let built = machine.get_snapshot_builder().await;
    let mut builder = built;
    let snapshot = openraft::storage::RaftSnapshotBuilder::build_snapshot(&mut builder)
        .await
        .unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let (other_db, mut other) = open(other_dir.path());
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    assert_eq!(
        read_compaction(&other_db, None, SHARD).unwrap(),
        Revision(150)
    );
    for (key, at) in [
        ("a", 150),
        ("a", 299),
        ("a", 300),
        ("b", 150),
        ("a", u64::MAX),
    ] {
        assert_eq!(
            value_at(&other_db, key, at),
            value_at(&db, key, at),
            "{key} at {at}"
        );
    }
}

fn txn_entry(index: u64, revision: u64, txn: crate::command::Txn) -> Entry {
    let command = Command {
        write_id: None,
        proposed_at_ms: 1,
        op: WriteOp::Txn(txn),
        revision: CommandRevision::Timestamp {
            revision: Revision(revision),
            term: 1,
        },
        trace: None,
    };
    Entry::new_normal(log_id(1, index), command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_inside_a_transaction_see_the_earlier_ops_of_their_branch() {
    use crate::command::{Delete, Get, Range, Txn, TxnOp, TxnOpResult};
    let dir = tempfile::tempdir().unwrap();
    let (db, mut machine) = open(dir.path());
    apply(&mut machine, stamped(1, 1, 1, 10, 1, "a", "old"));
    apply(&mut machine, stamped(2, 1, 1, 20, 2, "b", "gone"));
    let put = |key: &str, value: &str| {
        TxnOp::Put(Put {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            condition: None,
        })
    };
    let get = |key: &str| {
        TxnOp::Get(Get {
            key: key.into(),
            keys_only: false,
        })
    };
    let txn = Txn {
        compares: Vec::new(),
        success: vec![
            get("a"),
            put("a", "new"),
            get("a"),
            TxnOp::Delete(Delete {
                key: "b".into(),
                prev_kv: true,
            }),
            put("c", "created"),
            TxnOp::Range(Range {
                start: Vec::new(),
                end: None,
                limit: 10,
                keys_only: false,
                count_only: false,
            }),
        ],
        failure: Vec::new(),
    };
    let WriteResult::Txn(result) = apply(&mut machine, txn_entry(3, 30, txn)) else {
        panic!("a transaction result");
    };
    assert!(result.succeeded);
    let value = |kv: &Option<crate::command::KeyValue>| {
        kv.as_ref()
            .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
    };
    let [TxnOpResult::Get(before), TxnOpResult::Put(put_a), TxnOpResult::Get(after), TxnOpResult::Delete(delete_b), TxnOpResult::Put(_), TxnOpResult::Range(range)] =
        &result.responses[..]
    else {
        panic!("six results: {:?}", result.responses);
    };
    assert_eq!(value(&before.kv).as_deref(), Some("old"), "before the put");
    assert_eq!(value(&put_a.prev_kv).as_deref(), Some("old"));
    assert_eq!(value(&after.kv).as_deref(), Some("new"), "after the put");
    assert_eq!(after.kv.as_ref().unwrap().mod_revision, Revision(30));
    assert_eq!(
        after.revision,
        Revision(30),
        "reads report the transaction's revision"
    );
    assert_eq!(value(&delete_b.prev_kv).as_deref(), Some("gone"));
    let seen: Vec<(String, String)> = range
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![("a".into(), "new".into()), ("c".into(), "created".into())],
        "the range sees the put, the delete and the created key"
    );
    // And the database holds exactly that after the batch was written.
    assert_eq!(value_at(&db, "a", u64::MAX), Some(("new".into(), 30)));
    assert_eq!(value_at(&db, "b", u64::MAX), None);
    assert_eq!(value_at(&db, "b", 29), Some(("gone".into(), 20)));
}
