//! The steps of the model test: what a coordinator, a resolver, a one-phase writer or a
//! reader does, checked against the model as it goes.

use super::*;
use cairn_mvcc::compaction::{CompactionFilter, Decision};
use cairn_mvcc::key::{self, VersionKey};
use cairn_mvcc::{Lock, MvccReader, RangeBounds, RangeOptions, Resolution, VersionWriter};

impl World {
    pub(super) fn step(&mut self, action: Action) {
        let t = action.txn % self.txns.len();
        match action.kind {
            Step::Drive => {
                // The coordinator's next step, so that many transactions get all the way.
                let txn = &self.txns[t];
                let kind = if txn.start_ts.is_none() {
                    Step::Begin
                } else if let Some(op) = txn.prewrite_ok.iter().position(|ok| !ok) {
                    return self.step(Action {
                        kind: Step::Prewrite,
                        op,
                        ..action
                    });
                } else if !txn.primary_acked {
                    Step::CommitPrimary
                } else {
                    Step::CommitSecondary
                };
                self.step(Action { kind, ..action });
            }
            Step::Begin => {
                if self.txns[t].start_ts.is_none() {
                    let start = self.timestamp();
                    self.txns[t].start_ts = Some(start);
                }
            }
            Step::Prewrite => {
                let txn = &self.txns[t];
                let Some(start) = txn.start_ts else { return };
                let op = action.op % txn.spec.ops.len();
                let key = txn.spec.ops[op].0;
                let lock = Lock {
                    primary: KEYS[txn.primary()].to_vec(),
                    start_ts: Revision(start),
                    ttl_ms: txn.spec.ttl_ms,
                    created_at_ms: self.now_ms,
                    op: txn.lock_op(op),
                    write_id: Some(vec![t as u8]),
                };
                let answer = self
                    .rules(key)
                    .prewrite(KEYS[key], lock, Revision(self.compact));
                match self.apply(answer) {
                    Ok(()) => self.txns[t].prewrite_ok[op] = true,
                    Err(TxnError::AlreadyCommitted { .. }) => {
                        assert!(matches!(self.txns[t].decided, Some(Decided::Committed(_))));
                    }
                    Err(TxnError::RolledBack { .. }) => {
                        assert!(!self.txns[t].primary_acked);
                    }
                    Err(TxnError::KeyLocked(_) | TxnError::WriteConflict { .. }) => {}
                    Err(TxnError::AtOrBelowCompaction { .. }) => assert!(start <= self.compact),
                    Err(other) => panic!("prewrite: {other}"),
                }
            }
            Step::CommitPrimary => {
                let txn = &self.txns[t];
                if txn.aborted || !txn.prewrite_ok.iter().all(|ok| *ok) {
                    return;
                }
                let commit = match txn.commit_ts {
                    Some(commit) => commit,
                    None => {
                        let commit = self.timestamp();
                        self.txns[t].commit_ts = Some(commit);
                        commit
                    }
                };
                let txn = &self.txns[t];
                let (primary, start) = (txn.primary(), txn.start_ts.expect("begun"));
                let answer =
                    self.rules(primary)
                        .commit(KEYS[primary], Revision(start), Revision(commit));
                match self.apply(answer) {
                    Ok(recorded) => {
                        assert_eq!(recorded, Revision(commit));
                        self.txns[t].primary_acked = true;
                        self.decide(t, Decided::Committed(commit));
                    }
                    Err(TxnError::RolledBack { .. }) => self.decide(t, Decided::RolledBack),
                    // Its lock is gone (committed or rolled back) and compaction dropped the
                    // record that said which: the outcome is unknown here, not changed.
                    Err(TxnError::TxnNotFound { .. }) if start <= self.compact => {}
                    Err(other) => panic!("commit of a prewritten primary: {other}"),
                }
            }
            Step::CommitSecondary => {
                let txn = &self.txns[t];
                if !txn.primary_acked {
                    return;
                }
                let op = action.op % txn.spec.ops.len();
                let (key, start, commit) = (
                    txn.spec.ops[op].0,
                    txn.start_ts.expect("begun"),
                    txn.commit_ts.expect("taken"),
                );
                let answer = self.rules(key).resolve_lock(
                    KEYS[key],
                    Revision(start),
                    Resolution::Commit {
                        commit_ts: Revision(commit),
                    },
                );
                self.apply(answer)
                    .expect("a secondary of a committed transaction commits");
            }
            Step::Abort => {
                let txn = &mut self.txns[t];
                let Some(start) = txn.start_ts else { return };
                if txn.commit_ts.is_some() {
                    return;
                }
                txn.aborted = true;
                let op = action.op % txn.spec.ops.len();
                let key = txn.spec.ops[op].0;
                let answer = self.rules(key).rollback(KEYS[key], Revision(start));
                self.apply(answer)
                    .expect("an uncommitted transaction rolls back");
                if op == 0 {
                    self.decide(t, Decided::RolledBack);
                }
            }
            Step::CheckStatus => {
                if self.txns[t].start_ts.is_some() {
                    let _ = self.status(t, action.param.is_multiple_of(4));
                }
            }
            Step::Resolve => {
                let Some(start) = self.txns[t].start_ts else {
                    return;
                };
                let resolution = match self.status(t, action.param.is_multiple_of(4)) {
                    Ok(TxnStatus::Committed { commit_ts }) => Resolution::Commit { commit_ts },
                    Ok(TxnStatus::RolledBack) => Resolution::Rollback,
                    _ => return,
                };
                let txn = &self.txns[t];
                let key = txn.spec.ops[action.op % txn.spec.ops.len()].0;
                let answer = self
                    .rules(key)
                    .resolve_lock(KEYS[key], Revision(start), resolution);
                self.apply(answer).expect("resolution follows the primary");
            }
            Step::OnePhase => {
                let key = action.op % KEYS.len();
                let reader = MvccReader::new(&self.view, shard_of(key));
                if reader.lock(KEYS[key]).unwrap().is_some() {
                    return; // the storage node refuses (or resolves) first
                }
                let revision = self.timestamp();
                let mut writer = VersionWriter::new(&self.view, shard_of(key), Revision(revision));
                assert_eq!(
                    writer.refusal([KEYS[key]], Revision(self.compact)).unwrap(),
                    None
                );
                let value = (!action.param.is_multiple_of(3)).then(|| vec![0xee, revision as u8]);
                let changed = match &value {
                    Some(value) => {
                        writer.put(KEYS[key], value.clone()).unwrap();
                        true
                    }
                    None => writer.delete(KEYS[key]).unwrap(),
                };
                let mutations = writer.into_mutations();
                for mutation in &mutations {
                    if let Mutation::Put {
                        key: storage_key,
                        value,
                        ..
                    } = mutation
                    {
                        self.check_fresh_version(storage_key, value);
                    }
                }
                self.view.apply(mutations);
                if changed {
                    self.model.entry(key).or_default().insert(
                        revision,
                        Committed {
                            value,
                            start: revision,
                        },
                    );
                }
            }
            Step::Read => {
                let at = self
                    .clock
                    .saturating_sub(action.param % 8)
                    .max(self.compact);
                let key = action.op % KEYS.len();
                self.read(key, at);
            }
            Step::ReadRange => {
                let at = self
                    .clock
                    .saturating_sub(action.param % 8)
                    .max(self.compact);
                let shard = SHARDS[action.op % 2];
                let reader = MvccReader::new(&self.view, shard);
                let all = RangeBounds {
                    start: Vec::new(),
                    end: None,
                };
                let locks = reader
                    .locks_in_range(&all, Revision(at), false, 10)
                    .unwrap();
                for lock in &locks.locks {
                    assert!(lock.start_ts.0 <= at);
                }
                if locks.locks.is_empty() {
                    let options = RangeOptions {
                        limit: 10,
                        keys_only: false,
                        count_only: false,
                    };
                    let page = reader.range(&all, Revision(at), options).unwrap();
                    let expected: Vec<Version> = (0..KEYS.len())
                        .filter(|k| shard_of(*k) == shard)
                        .filter_map(|k| self.expected(k, at))
                        .map(|version| (version.key.clone(), version))
                        .collect::<BTreeMap<_, _>>()
                        .into_values()
                        .collect();
                    assert_eq!(page.versions, expected, "range of {shard} at {at}");
                }
            }
            Step::Tick => self.now_ms += action.param % 10,
            Step::Compact => self.compact(action.param),
        }
    }

    /// Compacts both shards at a point below every lock (and never lower than before).
    fn compact(&mut self, param: u64) {
        let below_locks = self
            .view
            .entries(ColumnFamily::Lock)
            .map(|(_, value)| Lock::decode(value).unwrap().start_ts.0 - 1)
            .min()
            .unwrap_or(self.clock);
        let point = below_locks.saturating_sub(param % 4).max(self.compact);
        self.compact = point;
        let full = param & 4 == 0;
        let mut filter = CompactionFilter::new(Revision(point), full);
        let mut dropped = Vec::new();
        let mut obsolete = Vec::new();
        for (storage_key, value) in self.view.entries(ColumnFamily::Write) {
            match filter.decide(storage_key, value) {
                Decision::Keep => {}
                Decision::Drop => dropped.push(storage_key.clone()),
                Decision::KeepObsoleteTombstone => obsolete.push(storage_key.clone()),
            }
        }
        self.view
            .apply(dropped.into_iter().map(|key| Mutation::Delete {
                cf: ColumnFamily::Write,
                key,
            }));
        // The caller's clean-up of an obsolete tombstone: it and every older version.
        for low in obsolete {
            let prefix = VersionKey::parse(&low).unwrap().versions_prefix.to_vec();
            let high = key::after_versions(&prefix);
            self.view.retain(ColumnFamily::Write, |k, _| {
                !(k.as_slice() >= low.as_slice() && k.as_slice() < high.as_slice())
            });
        }
    }
}
