//! Unit tests of rollback, check-status, resolution, lock-aware reads and compaction.

use super::*;

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
