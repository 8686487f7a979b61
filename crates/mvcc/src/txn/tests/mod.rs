//! Unit tests of each transaction rule and of each idempotent retry: prewrite and commit
//! here, rollback, check-status, resolution, lock-aware reads and compaction in
//! [`resolution`].

mod resolution;

use super::*;
use crate::compaction::{CompactionFilter, Decision};
use crate::key;
use crate::record::WriteRecord;
use crate::view::{ColumnFamily, MemoryView};
use crate::RangeBounds;

const SHARD: ShardId = ShardId(3);
const NO_COMPACTION: Revision = Revision(0);
const TTL_MS: u64 = 100;

fn lock(primary: &[u8], start_ts: u64, op: LockOp) -> Lock {
    Lock {
        primary: primary.to_vec(),
        start_ts: Revision(start_ts),
        ttl_ms: TTL_MS,
        created_at_ms: 1_000,
        op,
        write_id: Some(b"w".to_vec()),
    }
}

fn put(value: &[u8]) -> LockOp {
    LockOp::Put {
        value: value.to_vec(),
    }
}

/// A shard's view and the rules applied to it, mutations written as the caller would.
#[derive(Default)]
struct Shard {
    view: MemoryView,
}

impl Shard {
    fn rules(&self) -> TxnRules<'_, MemoryView> {
        TxnRules::new(&self.view, SHARD)
    }

    fn apply<T>(&mut self, answer: TxnResult<Applied<T>>) -> std::result::Result<T, TxnError> {
        let answer = answer.expect("the memory view does not fail");
        answer.map(|applied| {
            self.view.apply(applied.mutations);
            applied.outcome
        })
    }

    fn prewrite(&mut self, key: &[u8], lock: Lock) -> std::result::Result<(), TxnError> {
        let answer = self.rules().prewrite(key, lock, NO_COMPACTION);
        self.apply(answer)
    }

    fn commit(
        &mut self,
        key: &[u8],
        start: u64,
        commit: u64,
    ) -> std::result::Result<Revision, TxnError> {
        let answer = self.rules().commit(key, Revision(start), Revision(commit));
        self.apply(answer)
    }

    fn rollback(&mut self, key: &[u8], start: u64) -> std::result::Result<(), TxnError> {
        let answer = self.rules().rollback(key, Revision(start));
        self.apply(answer)
    }

    fn status(
        &mut self,
        primary: &[u8],
        start: u64,
        now_ms: u64,
    ) -> std::result::Result<TxnStatus, TxnError> {
        let answer =
            self.rules()
                .check_txn_status(primary, Revision(start), now_ms, true, NO_COMPACTION);
        self.apply(answer)
    }

    fn get(&self, key: &[u8], at: u64) -> std::result::Result<Option<Vec<u8>>, TxnError> {
        let reader = MvccReader::new(&self.view, SHARD);
        let answer = reader.get_checked(key, Revision(at), false).unwrap();
        answer.map(|found| found.map(|version| version.value))
    }

    fn version(&self, key: &[u8], at: u64) -> Option<crate::Version> {
        MvccReader::new(&self.view, SHARD)
            .get(key, Revision(at), false)
            .unwrap()
    }

    fn lock_of(&self, key: &[u8]) -> Option<Lock> {
        MvccReader::new(&self.view, SHARD).lock(key).unwrap()
    }

    /// A committed transaction `start..commit` putting `value` on `key` alone.
    fn committed_put(&mut self, key: &[u8], start: u64, commit: u64, value: &[u8]) {
        self.prewrite(key, lock(key, start, put(value))).unwrap();
        assert_eq!(self.commit(key, start, commit), Ok(Revision(commit)));
    }
}

#[test]
fn prewrite_locks_and_a_retry_is_idempotent() {
    let mut shard = Shard::default();
    shard.prewrite(b"k", lock(b"k", 10, put(b"v"))).unwrap();
    assert_eq!(shard.lock_of(b"k"), Some(lock(b"k", 10, put(b"v"))));
    let retry = shard
        .rules()
        .prewrite(b"k", lock(b"k", 10, put(b"v")), NO_COMPACTION)
        .unwrap()
        .unwrap();
    assert!(retry.mutations.is_empty());
}

#[test]
fn a_primary_must_be_written() {
    let mut shard = Shard::default();
    assert_eq!(
        shard.prewrite(b"p", lock(b"p", 10, LockOp::Read)),
        Err(TxnError::ReadOnlyPrimary {
            key: b"p".to_vec(),
            start_ts: Revision(10)
        })
    );
    assert_eq!(shard.lock_of(b"p"), None);
}

#[test]
fn prewrite_meeting_another_lock_reports_it() {
    let mut shard = Shard::default();
    shard.prewrite(b"k", lock(b"p", 10, put(b"v"))).unwrap();
    let Err(TxnError::KeyLocked(info)) = shard.prewrite(b"k", lock(b"k", 11, LockOp::Delete))
    else {
        panic!("expected KeyLocked");
    };
    assert_eq!(
        (
            info.key.as_slice(),
            info.primary.as_slice(),
            info.start_ts,
            info.kind
        ),
        (
            b"k".as_slice(),
            b"p".as_slice(),
            Revision(10),
            LockKind::Put
        )
    );
    // An older start_ts meets it too: one lock per key, whoever came first.
    assert!(matches!(
        shard.prewrite(b"k", lock(b"p", 9, LockOp::Read)),
        Err(TxnError::KeyLocked(_))
    ));
}

#[test]
fn prewrite_after_a_newer_commit_is_a_write_conflict() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    for start in [15, 20] {
        assert_eq!(
            shard.prewrite(b"k", lock(b"p", start, LockOp::Read)),
            Err(TxnError::WriteConflict {
                key: b"k".to_vec(),
                start_ts: Revision(start),
                conflicting_revision: Revision(20),
                conflicting_start_ts: Some(Revision(10)),
            })
        );
    }
    // A version written by a one-phase write conflicts the same way, without a start_ts.
    let mut writer = crate::VersionWriter::new(&shard.view, SHARD, Revision(30));
    writer.put(b"k", b"b".to_vec()).unwrap();
    let mutations = writer.into_mutations();
    shard.view.apply(mutations);
    assert!(matches!(
        shard.prewrite(b"k", lock(b"k", 25, put(b"c"))),
        Err(TxnError::WriteConflict {
            conflicting_revision: Revision(30),
            conflicting_start_ts: None,
            ..
        })
    ));
    shard.prewrite(b"k", lock(b"k", 31, put(b"c"))).unwrap();
}

#[test]
fn prewrite_after_commit_or_rollback_or_compaction_is_refused() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    assert_eq!(
        shard.prewrite(b"k", lock(b"k", 10, put(b"a"))),
        Err(TxnError::AlreadyCommitted {
            key: b"k".to_vec(),
            start_ts: Revision(10),
            commit_ts: Revision(20)
        })
    );
    shard.rollback(b"k", 30).unwrap();
    assert_eq!(
        shard.prewrite(b"k", lock(b"k", 30, put(b"a"))),
        Err(TxnError::RolledBack {
            key: b"k".to_vec(),
            start_ts: Revision(30)
        })
    );
    let refused = shard
        .rules()
        .prewrite(b"k", lock(b"k", 40, put(b"a")), Revision(40))
        .unwrap();
    assert!(matches!(
        refused,
        Err(TxnError::AtOrBelowCompaction {
            compact_revision: Revision(40),
            ..
        })
    ));
    // A rollback marker of another transaction is no conflict.
    shard.prewrite(b"k", lock(b"k", 25, put(b"b"))).unwrap();
}

#[test]
fn commit_writes_versions_like_a_put_and_removes_the_lock() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    assert_eq!(shard.lock_of(b"k"), None);
    let first = shard.version(b"k", 20).unwrap();
    assert_eq!(
        (first.create_revision, first.mod_revision, first.version),
        (Revision(20), Revision(20), 1)
    );
    shard.committed_put(b"k", 30, 40, b"b");
    let second = shard.version(b"k", 40).unwrap();
    assert_eq!(
        (
            second.value.as_slice(),
            second.create_revision,
            second.version
        ),
        (b"b".as_slice(), Revision(20), 2)
    );
    // The stored record remembers the transaction.
    let stored = MvccReader::new(&shard.view, SHARD)
        .record_at(b"k", Revision(40))
        .unwrap();
    assert!(matches!(
        stored,
        Some((
            Revision(40),
            WriteRecord::TxnPut {
                start_ts: Revision(30),
                ..
            }
        ))
    ));
    // A delete: a tombstone, then a put starts a new life.
    shard
        .prewrite(b"k", lock(b"k", 50, LockOp::Delete))
        .unwrap();
    shard.commit(b"k", 50, 60).unwrap();
    assert_eq!(shard.version(b"k", 60), None);
    assert_eq!(shard.version(b"k", 59).unwrap().value, b"b");
    shard.committed_put(b"k", 70, 80, b"c");
    let reborn = shard.version(b"k", 80).unwrap();
    assert_eq!((reborn.create_revision, reborn.version), (Revision(80), 1));
}

#[test]
fn a_retried_commit_answers_the_recorded_commit_ts() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    let retry = shard
        .rules()
        .commit(b"k", Revision(10), Revision(20))
        .unwrap()
        .unwrap();
    assert_eq!(
        retry,
        Applied {
            outcome: Revision(20),
            mutations: Vec::new()
        }
    );
    // Even when the retry carries another timestamp, the record wins.
    assert_eq!(shard.commit(b"k", 10, 25), Ok(Revision(20)));
    shard
        .prewrite(b"d", lock(b"d", 30, LockOp::Delete))
        .unwrap();
    shard.commit(b"d", 30, 40).unwrap();
    assert_eq!(shard.commit(b"d", 30, 40), Ok(Revision(40)));
}

#[test]
fn a_read_lock_commits_to_nothing() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    let before: Vec<_> = shard
        .view
        .entries(ColumnFamily::Write)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    shard.prewrite(b"k", lock(b"p", 30, LockOp::Read)).unwrap();
    assert_eq!(
        shard.get(b"k", 35),
        Ok(Some(b"a".to_vec())),
        "read locks do not block reads"
    );
    shard.commit(b"k", 30, 40).unwrap();
    let after: Vec<_> = shard
        .view
        .entries(ColumnFamily::Write)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(before, after);
    assert_eq!(shard.lock_of(b"k"), None);
    assert!(matches!(
        shard.commit(b"k", 30, 40),
        Err(TxnError::TxnNotFound { .. })
    ));
    let resolved = shard.rules().resolve_lock(
        b"k",
        Revision(30),
        Resolution::Commit {
            commit_ts: Revision(40),
        },
    );
    assert_eq!(shard.apply(resolved), Ok(()));
}

#[test]
fn commit_refusals() {
    let mut shard = Shard::default();
    assert_eq!(
        shard.commit(b"k", 10, 20),
        Err(TxnError::TxnNotFound {
            key: b"k".to_vec(),
            start_ts: Revision(10)
        })
    );
    shard.prewrite(b"k", lock(b"k", 10, put(b"a"))).unwrap();
    assert!(matches!(
        shard.commit(b"k", 10, 10),
        Err(TxnError::CommitNotAboveStart { .. })
    ));
    // Another transaction's lock is not ours: nothing of ours on record.
    assert!(matches!(
        shard.commit(b"k", 11, 20),
        Err(TxnError::TxnNotFound { .. })
    ));
    shard.rollback(b"k", 10).unwrap();
    assert_eq!(
        shard.commit(b"k", 10, 20),
        Err(TxnError::RolledBack {
            key: b"k".to_vec(),
            start_ts: Revision(10)
        })
    );
}

#[test]
fn commit_below_the_newest_version_is_refused() {
    let mut shard = Shard::default();
    shard.prewrite(b"k", lock(b"k", 10, put(b"a"))).unwrap();
    // A one-phase write that ignored the lock (a caller bug) must not make history go back.
    let mut writer = crate::VersionWriter::new(&shard.view, SHARD, Revision(30));
    writer.put(b"k", b"x".to_vec()).unwrap();
    let mutations = writer.into_mutations();
    shard.view.apply(mutations);
    assert_eq!(
        shard.commit(b"k", 10, 20),
        Err(TxnError::NotAboveNewest {
            key: b"k".to_vec(),
            commit_ts: Revision(20),
            newest: Revision(30)
        })
    );
    assert!(shard.lock_of(b"k").is_some());
}

#[test]
fn a_rollback_marker_newer_than_the_commit_does_not_refuse_it() {
    // Another transaction (start 15) rolled back on the key before prewriting it; ours
    // (start 10, lock held) commits at 12 below that marker.
    let mut shard = Shard::default();
    shard.prewrite(b"k", lock(b"k", 10, put(b"a"))).unwrap();
    shard.rollback(b"k", 15).unwrap();
    assert_eq!(shard.commit(b"k", 10, 12), Ok(Revision(12)));
    assert_eq!(shard.get(b"k", 20), Ok(Some(b"a".to_vec())));
}
