//! The shard state machine applying transaction commands: prewrite and commit through the
//! log, exactly-once through the write id's session record, one-phase writes and reads
//! stopped by locks (and not by their own or by read locks), check-status deciding an
//! expired primary, resolution of a secondary.

use crate::command::*;
use crate::kv::KvView;
use crate::pending_apply::PendingApply;
use crate::sessions::SessionLimits;
use crate::state_machine::{read_revision, ShardStateMachine};
use crate::type_config::{Entry, LogId};
use cairn_mvcc::{LockInfo, LockKind, LockOp, Resolution, TxnError, TxnStatus};
use cairn_types::{ClientId, NodeId, Revision, Sequence, ShardId};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use std::path::Path;
use std::sync::Arc;

const SHARD: ShardId = ShardId(6);
const NOW_MS: u64 = 1_000_000;

struct Shard {
    _dir: tempfile::TempDir,
    db: Arc<rocksdb::DB>,
    machine: ShardStateMachine,
    index: u64,
}

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

impl Shard {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (db, machine) = open(dir.path());
        Self {
            _dir: dir,
            db,
            machine,
            index: 0,
        }
    }

    /// Applies `op` as one entry proposed at `at_ms`, as a run of one entry.
    fn apply_at(&mut self, op: WriteOp, at_ms: u64) -> WriteResult {
        self.index += 1;
        let command = Command {
            write_id: None,
            proposed_at_ms: at_ms,
            op,
            revision: CommandRevision::Counted,
            trace: None,
        };
        let entry = Entry::new_normal(
            LogId::new(
                LeaderId {
                    term: 1,
                    node_id: NodeId(1),
                },
                self.index,
            ),
            command,
        );
        let mut pending = PendingApply::default();
        pending.note(&entry);
        let response = self.machine.apply_entry(entry, &mut pending).unwrap();
        self.machine.write_pending(&mut pending).unwrap();
        match response {
            CommandResponse::Write(result) => result,
            CommandResponse::None => panic!("a command answers"),
        }
    }

    fn apply(&mut self, op: WriteOp) -> WriteResult {
        self.apply_at(op, NOW_MS)
    }

    fn read(&self, key: &str, at: Revision, own: Option<u64>) -> Result<Option<String>, LockInfo> {
        let snapshot = self.db.snapshot();
        KvView::with_snapshot(&self.db, SHARD, &snapshot)
            .get_checked(key.as_bytes(), at, false, own.map(Revision))
            .unwrap()
            .map(|kv| kv.map(|kv| String::from_utf8(kv.value).unwrap()))
    }

    fn revision(&self) -> Revision {
        read_revision(&self.db, None, SHARD).unwrap()
    }
}

fn prewrite(start_ts: u64, primary: &str, mutations: &[(&str, LockOp)]) -> WriteOp {
    WriteOp::Prewrite(Prewrite {
        start_ts: Revision(start_ts),
        primary: primary.into(),
        lock_ttl_ms: 3_000,
        mutations: mutations
            .iter()
            .map(|(key, op)| TxnMutation {
                key: (*key).into(),
                op: op.clone(),
            })
            .collect(),
        write_id: None,
    })
}

fn put_value(value: &str) -> LockOp {
    LockOp::Put {
        value: value.into(),
    }
}

fn commit(start_ts: u64, commit_ts: u64, keys: &[&str]) -> TxnCommit {
    TxnCommit {
        start_ts: Revision(start_ts),
        commit_ts: Revision(commit_ts),
        keys: keys.iter().map(|key| key.as_bytes().to_vec()).collect(),
        remember: None,
    }
}

fn one_phase_put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put(Put {
        key: key.into(),
        value: value.into(),
        prev_kv: false,
        condition: None,
    })
}

fn locked_key(result: WriteResult) -> Vec<u8> {
    match result {
        WriteResult::TxnRefused(TxnError::KeyLocked(info)) => info.key,
        other => panic!("expected KeyLocked, got {other:?}"),
    }
}

#[test]
fn prewrite_then_commit_makes_every_key_visible_at_commit_ts() {
    let mut shard = Shard::new();
    assert!(matches!(
        shard.apply(one_phase_put("a", "old")),
        WriteResult::Put(_)
    ));

    tracing::info!("--- prewrite a (primary) and b at 10");
    let result = shard.apply(prewrite(
        10,
        "a",
        &[("a", put_value("1")), ("b", LockOp::Delete)],
    ));
    assert_eq!(result, WriteResult::Prewritten { first_result: None });
    assert_eq!(shard.revision(), Revision(1), "locks are not versions");

    tracing::info!("--- reads at or above 10 and at the latest stop; below 10 and its own do not");
    assert_eq!(
        shard
            .read("a", Revision::LATEST, None)
            .unwrap_err()
            .start_ts,
        Revision(10)
    );
    assert_eq!(
        shard.read("a", Revision(10), None).unwrap_err().kind,
        LockKind::Put
    );
    assert_eq!(shard.read("a", Revision(9), None), Ok(Some("old".into())));
    assert_eq!(
        shard.read("a", Revision::LATEST, Some(10)),
        Ok(Some("old".into()))
    );
    assert_eq!(
        shard
            .read("b", Revision::LATEST, Some(11))
            .unwrap_err()
            .kind,
        LockKind::Delete
    );

    tracing::info!("--- a one-phase write of a locked key is refused and not applied");
    assert_eq!(locked_key(shard.apply(one_phase_put("a", "x"))), b"a");
    assert_eq!(shard.read("a", Revision(9), None), Ok(Some("old".into())));

    tracing::info!("--- a prewrite of another transaction meets the lock");
    assert_eq!(
        locked_key(shard.apply(prewrite(11, "b", &[("b", put_value("2"))]))),
        b"b"
    );

    tracing::info!("--- commit at 20: versions at 20, locks gone, the shard's revision is 20");
    assert_eq!(
        shard.apply(WriteOp::Commit(commit(10, 20, &["a", "b"]))),
        WriteResult::TxnCommitted {
            commit_ts: Revision(20)
        }
    );
    assert_eq!(shard.revision(), Revision(20));
    assert_eq!(
        shard.read("a", Revision::LATEST, None),
        Ok(Some("1".into()))
    );
    assert_eq!(shard.read("a", Revision(19), None), Ok(Some("old".into())));
    assert_eq!(shard.read("b", Revision::LATEST, None), Ok(None));

    tracing::info!("--- a retried commit answers the same commit_ts and writes nothing more");
    assert_eq!(
        shard.apply(WriteOp::Commit(commit(10, 25, &["a", "b"]))),
        WriteResult::TxnCommitted {
            commit_ts: Revision(20)
        }
    );
    tracing::info!("--- one-phase writes go again");
    assert!(matches!(
        shard.apply(one_phase_put("a", "2")),
        WriteResult::Put(_)
    ));
}

#[test]
fn the_primary_commit_remembers_the_answer_and_a_retried_prewrite_finds_it() {
    let mut shard = Shard::new();
    let write_id = WriteId {
        client: ClientId(42),
        sequence: Sequence(3),
        first_incomplete: Sequence(1),
    };
    let answer = TxnResult {
        revision: Revision(20),
        succeeded: true,
        responses: vec![TxnOpResult::Put(PutResult {
            revision: Revision(20),
            succeeded: true,
            prev_kv: None,
        })],
    };
    let with_id = |start_ts| match prewrite(start_ts, "a", &[("a", put_value("1"))]) {
        WriteOp::Prewrite(prewrite) => WriteOp::Prewrite(Prewrite {
            write_id: Some(write_id),
            ..prewrite
        }),
        _ => unreachable!(),
    };
    assert_eq!(
        shard.apply(with_id(10)),
        WriteResult::Prewritten { first_result: None }
    );
    let mut primary_commit = commit(10, 20, &["a"]);
    primary_commit.remember = Some((write_id, answer.clone()));
    assert_eq!(
        shard.apply(WriteOp::Commit(primary_commit.clone())),
        WriteResult::TxnCommitted {
            commit_ts: Revision(20)
        }
    );

    tracing::info!("--- another gateway retries the request: its prewrite gets the first answer");
    assert_eq!(
        shard.apply(with_id(30)),
        WriteResult::Prewritten {
            first_result: Some(answer.clone())
        }
    );
    assert_eq!(
        shard.read("a", Revision::LATEST, None),
        Ok(Some("1".into())),
        "nothing was prewritten"
    );

    tracing::info!("--- a one-phase transaction retried under the same id gets it too");
    let mut duplicate = Command {
        write_id: Some(write_id),
        proposed_at_ms: NOW_MS,
        op: WriteOp::Txn(Txn {
            compares: vec![],
            success: vec![],
            failure: vec![],
        }),
        revision: CommandRevision::Counted,
        trace: None,
    };
    shard.index += 1;
    duplicate.proposed_at_ms += 1;
    let entry = Entry::new_normal(
        LogId::new(
            LeaderId {
                term: 1,
                node_id: NodeId(1),
            },
            shard.index,
        ),
        duplicate,
    );
    let mut pending = PendingApply::default();
    pending.note(&entry);
    let response = shard.machine.apply_entry(entry, &mut pending).unwrap();
    shard.machine.write_pending(&mut pending).unwrap();
    assert_eq!(
        response,
        CommandResponse::Write(WriteResult::Txn(answer.clone()))
    );

    tracing::info!("--- the record survives a restart (it is in the sessions column family)");
    let Shard {
        _dir: dir,
        db,
        machine,
        index,
    } = shard;
    drop(machine);
    drop(db);
    let (db, machine) = open(dir.path());
    let mut shard = Shard {
        _dir: dir,
        db,
        machine,
        index,
    };
    assert_eq!(
        shard.apply(with_id(40)),
        WriteResult::Prewritten {
            first_result: Some(answer)
        }
    );
}

#[test]
fn read_locks_stop_one_phase_writers_but_not_readers() {
    let mut shard = Shard::new();
    shard.apply(one_phase_put("c", "v"));
    shard.apply(prewrite(
        10,
        "a",
        &[("a", put_value("1")), ("c", LockOp::Read)],
    ));
    assert_eq!(
        shard.read("c", Revision::LATEST, None),
        Ok(Some("v".into()))
    );
    assert_eq!(locked_key(shard.apply(one_phase_put("c", "w"))), b"c");

    let compare = |key: &str| Compare {
        key: key.into(),
        op: CompareOp::Greater,
        target: CompareTarget::Version(0),
    };
    tracing::info!(
        "--- a one-phase transaction may compare a read-locked key, not a put-locked one"
    );
    let reads_c = shard.apply(WriteOp::Txn(Txn {
        compares: vec![compare("c")],
        success: vec![TxnOp::Get(Get {
            key: b"c".to_vec(),
            keys_only: false,
        })],
        failure: vec![],
    }));
    assert!(matches!(
        reads_c,
        WriteResult::Txn(TxnResult {
            succeeded: true,
            ..
        })
    ));
    let compares_a = shard.apply(WriteOp::Txn(Txn {
        compares: vec![compare("a")],
        success: vec![],
        failure: vec![],
    }));
    assert_eq!(locked_key(compares_a), b"a");
    tracing::info!(
        "--- ... nor write a read-locked key in its chosen branch, nor range over a put lock"
    );
    let writes_c = shard.apply(WriteOp::Txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Put(Put {
            key: b"c".to_vec(),
            value: b"w".to_vec(),
            prev_kv: false,
            condition: None,
        })],
        failure: vec![],
    }));
    assert_eq!(locked_key(writes_c), b"c");
    let ranges = shard.apply(WriteOp::Txn(Txn {
        compares: vec![],
        success: vec![TxnOp::Range(Range {
            start: b"a".to_vec(),
            end: None,
            limit: 10,
            keys_only: false,
            count_only: false,
        })],
        failure: vec![],
    }));
    assert_eq!(locked_key(ranges), b"a");
    assert_eq!(
        shard.read("c", Revision::LATEST, None),
        Ok(Some("v".into()))
    );
}

#[test]
fn an_expired_primary_is_rolled_back_by_check_status_and_its_secondary_resolved() {
    let mut shard = Shard::new();
    shard.apply_at(
        prewrite(10, "a", &[("a", put_value("1")), ("b", put_value("2"))]),
        NOW_MS,
    );
    let check = |rollback_if_missing| WriteOp::CheckTxnStatus {
        primary: b"a".to_vec(),
        start_ts: Revision(10),
        rollback_if_missing,
    };
    assert!(matches!(
        shard.apply_at(check(false), NOW_MS + 1_000),
        WriteResult::TxnStatus(TxnStatus::Locked {
            ttl_remaining_ms: 2_000,
            ..
        })
    ));
    assert_eq!(
        shard.apply_at(check(false), NOW_MS + 3_000),
        WriteResult::TxnStatus(TxnStatus::RolledBack)
    );
    tracing::info!("--- decided: the answer stays, a late prewrite or commit is refused");
    assert_eq!(
        shard.apply(check(false)),
        WriteResult::TxnStatus(TxnStatus::RolledBack)
    );
    assert!(matches!(
        shard.apply(WriteOp::Commit(commit(10, 20, &["a"]))),
        WriteResult::TxnRefused(TxnError::RolledBack { .. })
    ));
    assert!(matches!(
        shard.apply(prewrite(10, "a", &[("a", put_value("1"))])),
        WriteResult::TxnRefused(TxnError::RolledBack { .. })
    ));
    tracing::info!("--- the secondary is resolved by rollback; its key is free again");
    assert_eq!(locked_key(shard.apply(one_phase_put("b", "x"))), b"b");
    assert_eq!(
        shard.apply(WriteOp::ResolveLocks {
            start_ts: Revision(10),
            keys: vec![b"b".to_vec()],
            resolution: Resolution::Rollback,
        }),
        WriteResult::LocksResolved
    );
    assert!(matches!(
        shard.apply(one_phase_put("b", "x")),
        WriteResult::Put(_)
    ));
    assert_eq!(shard.read("a", Revision::LATEST, None), Ok(None));

    tracing::info!("--- a primary never prewritten: not found, or rolled back when asked to");
    let missing = |rollback_if_missing| WriteOp::CheckTxnStatus {
        primary: b"z".to_vec(),
        start_ts: Revision(50),
        rollback_if_missing,
    };
    assert!(matches!(
        shard.apply(missing(false)),
        WriteResult::TxnRefused(TxnError::TxnNotFound { .. })
    ));
    assert_eq!(
        shard.apply(missing(true)),
        WriteResult::TxnStatus(TxnStatus::RolledBack)
    );
}

#[test]
fn a_prewrite_is_all_or_nothing_and_resolution_commits_forward() {
    let mut shard = Shard::new();
    shard.apply(prewrite(10, "b", &[("b", put_value("1"))]));
    tracing::info!("--- the second mutation meets a lock: the first is not locked either");
    assert_eq!(
        locked_key(shard.apply(prewrite(
            12,
            "a",
            &[("a", put_value("1")), ("b", LockOp::Delete)]
        ))),
        b"b"
    );
    assert_eq!(shard.read("a", Revision::LATEST, None), Ok(None));
    assert!(matches!(
        shard.apply(one_phase_put("a", "free")),
        WriteResult::Put(_)
    ));

    tracing::info!("--- a commit of the primary elsewhere, carried here by resolution");
    assert_eq!(
        shard.apply(WriteOp::ResolveLocks {
            start_ts: Revision(10),
            keys: vec![b"b".to_vec()],
            resolution: Resolution::Commit {
                commit_ts: Revision(30)
            },
        }),
        WriteResult::LocksResolved
    );
    assert_eq!(shard.revision(), Revision(30));
    assert_eq!(shard.read("b", Revision(30), None), Ok(Some("1".into())));
    assert_eq!(shard.read("b", Revision(29), None), Ok(None));

    tracing::info!("--- a write conflict: a version at or after start_ts");
    assert!(matches!(
        shard.apply(prewrite(25, "b", &[("b", put_value("2"))])),
        WriteResult::TxnRefused(TxnError::WriteConflict { .. })
    ));
}
