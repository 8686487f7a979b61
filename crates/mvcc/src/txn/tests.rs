//! Unit tests of each transaction rule and of each idempotent retry.

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
        shard.prewrite(b"k", lock(b"k", 9, LockOp::Read)),
        Err(TxnError::KeyLocked(_))
    ));
}

#[test]
fn prewrite_after_a_newer_commit_is_a_write_conflict() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    for start in [15, 20] {
        assert_eq!(
            shard.prewrite(b"k", lock(b"k", start, LockOp::Read)),
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

#[test]
fn rollback_removes_the_lock_leaves_a_marker_and_is_idempotent() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 5, 6, b"old");
    shard.prewrite(b"k", lock(b"k", 10, put(b"a"))).unwrap();
    shard.rollback(b"k", 10).unwrap();
    assert_eq!(shard.lock_of(b"k"), None);
    let marker = key::version_key(SHARD, b"k", Revision(10));
    assert_eq!(
        shard.view.families[&ColumnFamily::Write]
            .get(&marker)
            .map(|v| WriteRecord::decode(v).unwrap()),
        Some(WriteRecord::Rollback)
    );
    let again = shard.rules().rollback(b"k", Revision(10)).unwrap().unwrap();
    assert!(again.mutations.is_empty());
    // Readers step over the marker to the older version, in gets and ranges.
    assert_eq!(shard.get(b"k", 10), Ok(Some(b"old".to_vec())));
    let all = RangeBounds {
        start: Vec::new(),
        end: None,
    };
    let options = crate::RangeOptions {
        limit: 10,
        keys_only: false,
        count_only: false,
    };
    let page = MvccReader::new(&shard.view, SHARD)
        .range(&all, Revision(12), options)
        .unwrap();
    assert_eq!(page.versions.len(), 1);
    assert_eq!(page.versions[0].mod_revision, Revision(6));
}

#[test]
fn rollback_of_a_missing_or_foreign_lock_still_leaves_the_marker() {
    let mut shard = Shard::default();
    shard.rollback(b"k", 10).unwrap();
    assert!(matches!(
        shard.prewrite(b"k", lock(b"k", 10, put(b"a"))),
        Err(TxnError::RolledBack { .. })
    ));
    assert_eq!(
        shard.version(b"k", Revision::LATEST.0),
        None,
        "a marker alone is no key"
    );
    shard.prewrite(b"k", lock(b"k", 20, put(b"a"))).unwrap();
    shard.rollback(b"k", 30).unwrap();
    assert_eq!(
        shard.lock_of(b"k").map(|l| l.start_ts),
        Some(Revision(20)),
        "another's lock stays"
    );
}

#[test]
fn rollback_after_commit_is_refused() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 10, 20, b"a");
    assert_eq!(
        shard.rollback(b"k", 10),
        Err(TxnError::AlreadyCommitted {
            key: b"k".to_vec(),
            start_ts: Revision(10),
            commit_ts: Revision(20)
        })
    );
}

#[test]
fn check_status_of_a_live_lock_an_expired_one_and_decided_ones() {
    let mut shard = Shard::default();
    shard.prewrite(b"p", lock(b"p", 10, put(b"a"))).unwrap();
    let Ok(TxnStatus::Locked {
        ttl_remaining_ms,
        lock: info,
    }) = shard.status(b"p", 10, 1_040)
    else {
        panic!("expected Locked");
    };
    assert_eq!((ttl_remaining_ms, info.start_ts), (60, Revision(10)));
    assert!(shard.lock_of(b"p").is_some());
    assert_eq!(shard.status(b"p", 10, 1_100), Ok(TxnStatus::RolledBack));
    assert_eq!(shard.lock_of(b"p"), None);
    assert_eq!(shard.status(b"p", 10, 5_000), Ok(TxnStatus::RolledBack));
    assert!(matches!(
        shard.commit(b"p", 10, 20),
        Err(TxnError::RolledBack { .. })
    ));

    shard.prewrite(b"p", lock(b"p", 30, put(b"b"))).unwrap();
    shard.commit(b"p", 30, 40).unwrap();
    assert_eq!(
        shard.status(b"p", 30, 9_999),
        Ok(TxnStatus::Committed {
            commit_ts: Revision(40)
        })
    );
    // An expired lock can still be committed by its coordinator while nobody rolled it back.
    shard.prewrite(b"p", lock(b"p", 50, put(b"c"))).unwrap();
    assert_eq!(shard.commit(b"p", 50, 60), Ok(Revision(60)));
    assert_eq!(
        shard.status(b"p", 50, 9_999),
        Ok(TxnStatus::Committed {
            commit_ts: Revision(60)
        })
    );
}

#[test]
fn check_status_of_a_transaction_whose_primary_never_arrived() {
    let mut shard = Shard::default();
    let wait = shard
        .rules()
        .check_txn_status(b"p", Revision(10), 0, false, NO_COMPACTION)
        .unwrap();
    assert_eq!(
        wait,
        Err(TxnError::TxnNotFound {
            key: b"p".to_vec(),
            start_ts: Revision(10)
        })
    );
    assert_eq!(shard.status(b"p", 10, 0), Ok(TxnStatus::RolledBack));
    assert!(matches!(
        shard.prewrite(b"p", lock(b"p", 10, put(b"a"))),
        Err(TxnError::RolledBack { .. })
    ));
    let compacted = shard
        .rules()
        .check_txn_status(b"q", Revision(10), 0, true, Revision(10))
        .unwrap();
    assert!(matches!(compacted, Err(TxnError::StatusCompacted { .. })));
}

#[test]
fn check_status_on_a_secondary_is_refused() {
    let mut shard = Shard::default();
    shard.prewrite(b"s", lock(b"p", 10, put(b"a"))).unwrap();
    assert_eq!(
        shard.status(b"s", 10, 0),
        Err(TxnError::NotPrimary {
            key: b"s".to_vec(),
            start_ts: Revision(10),
            primary: b"p".to_vec()
        })
    );
}

#[test]
fn resolve_lock_commits_forward_or_rolls_back() {
    let mut shard = Shard::default();
    shard.prewrite(b"s1", lock(b"p", 10, put(b"a"))).unwrap();
    shard
        .prewrite(b"s2", lock(b"p", 10, LockOp::Delete))
        .unwrap();
    for _ in 0..2 {
        let answer = shard.rules().resolve_lock(
            b"s1",
            Revision(10),
            Resolution::Commit {
                commit_ts: Revision(20),
            },
        );
        shard.apply(answer).unwrap();
        let answer = shard
            .rules()
            .resolve_lock(b"s2", Revision(10), Resolution::Rollback);
        shard.apply(answer).unwrap();
    }
    assert_eq!(shard.get(b"s1", 20), Ok(Some(b"a".to_vec())));
    assert_eq!((shard.lock_of(b"s1"), shard.lock_of(b"s2")), (None, None));
    let answer = shard
        .rules()
        .resolve_lock(b"s1", Revision(10), Resolution::Rollback);
    assert!(matches!(
        shard.apply(answer),
        Err(TxnError::AlreadyCommitted { .. })
    ));
    let answer = shard.rules().resolve_lock(
        b"s2",
        Revision(10),
        Resolution::Commit {
            commit_ts: Revision(20),
        },
    );
    assert!(matches!(
        shard.apply(answer),
        Err(TxnError::RolledBack { .. })
    ));
}

#[test]
fn reads_report_locks_at_or_below_their_revision_only() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 5, 6, b"old");
    shard.prewrite(b"k", lock(b"p", 10, put(b"new"))).unwrap();
    assert_eq!(
        shard.get(b"k", 9),
        Ok(Some(b"old".to_vec())),
        "a later transaction is invisible"
    );
    for at in [10, 11, Revision::LATEST.0] {
        assert!(matches!(
            shard.get(b"k", at),
            Err(TxnError::KeyLocked(LockInfo {
                start_ts: Revision(10),
                ..
            }))
        ));
    }
    shard.commit(b"k", 10, 20).unwrap();
    assert_eq!(shard.get(b"k", 19), Ok(Some(b"old".to_vec())));
    assert_eq!(shard.get(b"k", 20), Ok(Some(b"new".to_vec())));
}

#[test]
fn locks_in_a_range_are_reported_in_key_order_and_bounded() {
    let mut shard = Shard::default();
    shard.prewrite(b"a", lock(b"a", 10, put(b"1"))).unwrap();
    shard.prewrite(b"b", lock(b"a", 10, LockOp::Read)).unwrap();
    shard
        .prewrite(b"c", lock(b"c", 30, LockOp::Delete))
        .unwrap();
    shard.prewrite(b"d", lock(b"d", 12, put(b"4"))).unwrap();
    let reader = MvccReader::new(&shard.view, SHARD);
    let all = RangeBounds {
        start: Vec::new(),
        end: None,
    };
    let keys = |page: LockPage| page.locks.into_iter().map(|l| l.key).collect::<Vec<_>>();
    let at_20 = reader
        .locks_in_range(&all, Revision(20), false, 10)
        .unwrap();
    assert_eq!(keys(at_20), vec![b"a".to_vec(), b"d".to_vec()]);
    let every = reader
        .locks_in_range(&all, Revision::LATEST, true, 2)
        .unwrap();
    assert!(every.more);
    assert_eq!(keys(every), vec![b"a".to_vec(), b"b".to_vec()]);
    let bounded = RangeBounds {
        start: b"b".to_vec(),
        end: Some(b"d".to_vec()),
    };
    assert_eq!(
        keys(
            reader
                .locks_in_range(&bounded, Revision::LATEST, true, 10)
                .unwrap()
        ),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn compaction_drops_rollback_markers_but_keeps_the_version_below() {
    let mut shard = Shard::default();
    shard.committed_put(b"k", 5, 6, b"old");
    shard.rollback(b"k", 10).unwrap();
    let mut filter = CompactionFilter::new(Revision(12), true);
    let decisions: Vec<Decision> = shard
        .view
        .entries(ColumnFamily::Write)
        .map(|(k, v)| filter.decide(k, v))
        .collect();
    assert_eq!(decisions, vec![Decision::Drop, Decision::Keep]);
    // A transactional tombstone is a tombstone.
    shard
        .prewrite(b"k", lock(b"k", 20, LockOp::Delete))
        .unwrap();
    shard.commit(b"k", 20, 21).unwrap();
    let mut filter = CompactionFilter::new(Revision(30), false);
    let decisions: Vec<Decision> = shard
        .view
        .entries(ColumnFamily::Write)
        .map(|(k, v)| filter.decide(k, v))
        .collect();
    assert_eq!(
        decisions,
        vec![
            Decision::KeepObsoleteTombstone,
            Decision::Drop,
            Decision::Drop
        ]
    );
}

#[test]
fn lock_records_round_trip_and_corruption_is_detected() {
    let record = lock(b"p\x00", 7, put(b"v"));
    let mut bytes = record.encode();
    assert_eq!(Lock::decode(&bytes).unwrap(), record);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(Lock::decode(&bytes).is_err());
    assert_eq!(
        key::parse_lock_key(&key::lock_key(SHARD, b"p\x00")).unwrap(),
        b"p\x00"
    );
    assert!(key::parse_lock_key(b"short").is_err());
}
