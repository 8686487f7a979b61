//! The model test's checks: reads against the model, no history rewritten, and the final
//! state once every lock is resolved.

use super::*;
use cairn_mvcc::key::{self, VersionKey};
use cairn_mvcc::{Lock, MvccReader, Resolution, WriteRecord};

impl World {
    pub(super) fn check_fresh_version(&self, storage_key: &[u8], value: &[u8]) {
        let parsed = VersionKey::parse(storage_key).unwrap();
        let existing = self.view.families.get(&ColumnFamily::Write);
        assert!(
            existing.is_none_or(|map| !map.contains_key(storage_key)),
            "a record is overwritten at {}",
            parsed.revision
        );
        if WriteRecord::decode(value).unwrap().is_marker() {
            return;
        }
        for (other, other_value) in self.view.entries(ColumnFamily::Write) {
            let other_parsed = VersionKey::parse(other).unwrap();
            if other_parsed.versions_prefix == parsed.versions_prefix
                && !WriteRecord::decode(other_value).unwrap().is_marker()
            {
                assert!(
                    other_parsed.revision < parsed.revision,
                    "history goes back: {} written after {}",
                    parsed.revision,
                    other_parsed.revision
                );
            }
        }
    }

    /// A read at `at`: the model's answer, or a lock that may hide a commit at or below `at`.
    pub(super) fn read(&mut self, key: usize, at: u64) -> Option<Option<Version>> {
        let reader = MvccReader::new(&self.view, shard_of(key));
        match reader.get_checked(KEYS[key], Revision(at), false).unwrap() {
            Ok(found) => {
                assert_eq!(found, self.expected(key, at), "key {key} at {at}");
                self.answered.push((key, at, found.clone()));
                Some(found)
            }
            Err(TxnError::KeyLocked(lock)) => {
                assert!(lock.start_ts.0 <= at);
                assert_eq!(lock.key, KEYS[key]);
                None
            }
            Err(other) => panic!("read: {other}"),
        }
    }

    /// The locks of the transaction started at `start`, on both shards.
    pub(super) fn locks_of(&self, start: u64) -> Vec<Vec<u8>> {
        self.view
            .entries(ColumnFamily::Lock)
            .filter(|(_, value)| Lock::decode(value).unwrap().start_ts == Revision(start))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Every coordinator is gone: time passes, and a resolver settles every transaction.
    pub(super) fn resolve_everything(&mut self) {
        self.now_ms += 1_000_000;
        for t in 0..self.txns.len() {
            let Some(start) = self.txns[t].start_ts else {
                continue;
            };
            let resolution = match self.status(t, true) {
                Ok(TxnStatus::Committed { commit_ts }) => Resolution::Commit { commit_ts },
                Ok(TxnStatus::RolledBack) => Resolution::Rollback,
                // No lock of it is left (checked by `status`): nothing to resolve.
                Err(TxnError::StatusCompacted { .. }) => continue,
                other => panic!("txn {t} undecided after every lock expired: {other:?}"),
            };
            for (key, _) in self.txns[t].spec.ops.clone() {
                let answer = self
                    .rules(key)
                    .resolve_lock(KEYS[key], Revision(start), resolution);
                self.apply(answer).expect("resolution follows the primary");
            }
        }
    }

    pub(super) fn check_final_state(&mut self) {
        assert_eq!(
            self.view.entries(ColumnFamily::Lock).count(),
            0,
            "locks remain"
        );
        for txn in &self.txns {
            let Some(start) = txn.start_ts else { continue };
            for (key, kind) in &txn.spec.ops {
                let found = self
                    .view
                    .entries(ColumnFamily::Write)
                    .filter(|(storage_key, _)| {
                        storage_key.starts_with(&key::versions_prefix(shard_of(*key), KEYS[*key]))
                    })
                    .filter_map(|(storage_key, value)| {
                        let record = WriteRecord::decode(value).unwrap();
                        (record.txn_start_ts() == Some(Revision(start)))
                            .then(|| VersionKey::parse(storage_key).unwrap().revision.0)
                    })
                    .collect::<Vec<_>>();
                let expected = match (txn.decided, kind) {
                    (Some(Decided::Committed(commit)), Kind::Put | Kind::Delete) => vec![commit],
                    _ => vec![],
                };
                // A commit record at or below the compaction point may be gone: the reads
                // at or above the point, checked below, are what must stay whole.
                let compacted = expected
                    .first()
                    .is_some_and(|commit| *commit <= self.compact);
                assert!(
                    found == expected || (compacted && found.is_empty()),
                    "txn {} on key {key}: all or nothing, found {found:?}, expected {expected:?}",
                    txn.index
                );
            }
            // Conflicts: nothing else committed on its keys between its start and commit.
            if let Some(Decided::Committed(commit)) = txn.decided {
                for (key, _) in &txn.spec.ops {
                    for (revision, other) in self.model.get(key).into_iter().flatten() {
                        if other.start != start {
                            assert!(
                                !(start < *revision && *revision < commit),
                                "txn {} ({start}..{commit}) missed a commit at {revision} on key {key}",
                                txn.index
                            );
                        }
                    }
                }
            }
        }
        let answered = std::mem::take(&mut self.answered);
        let compact = self.compact;
        for (key, at, answer) in answered.into_iter().filter(|(_, at, _)| *at >= compact) {
            assert_eq!(
                self.read(key, at),
                Some(answer),
                "read of key {key} at {at} changed"
            );
        }
        for at in self.compact..=self.clock + 1 {
            for key in 0..KEYS.len() {
                assert!(
                    self.read(key, at).is_some(),
                    "no lock is left to block a read"
                );
            }
        }
    }
}
