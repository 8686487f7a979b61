//! Property test of the transaction rules against a model.
//!
//! Several transactions over a few keys on two shards run random interleavings of the
//! protocol's steps, as coordinators that may stall, retry or die would issue them: prewrites
//! (also late and repeated), commits of the primary and then of secondaries, aborts,
//! check-status on the primary, lock resolution by others, one-phase writes (which, as the
//! storage node must, stay off locked keys), reads at any revision already handed out, and
//! time passing so locks expire, and compaction (never past a lock, as the coordinator must
//! ensure) with reads refused below its point. Every step's mutations are applied to one `MemoryView`.
//!
//! The model is the committed history only: when a transaction's primary decides "committed
//! at `c`", all its writes enter the model at `c`. Checked along the way and at the end:
//! - a read at `R` returns the model's value at `R` or reports a lock with `start_ts <= R`
//!   (so never half a transaction), and gives the same answer again after everything else;
//! - no write lands at or below a key's newest version, and no record is overwritten;
//! - once the primary answers committed or rolled back, every later answer agrees (or, once
//!   compaction passed the transaction and none of its locks is left, "compacted");
//! - after all locks are resolved: none remain, each transaction is all or nothing, and no
//!   transaction committed while another write to one of its keys (read or written)
//!   committed between its `start_ts` and its `commit_ts` (the conflict rule that makes
//!   point reads serializable).

use cairn_mvcc::{
    ColumnFamily, LockOp, MemoryView, Mutation, TxnError, TxnResult, TxnRules, TxnStatus, Version,
};
use cairn_types::{Revision, ShardId};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[path = "txn_model/checks.rs"]
mod checks;
#[path = "txn_model/steps.rs"]
mod steps;

const KEYS: [&[u8]; 4] = [b"a", b"a\x00", b"b", b"\xff"];
const SHARDS: [ShardId; 2] = [ShardId(1), ShardId(2)];

fn shard_of(key: usize) -> ShardId {
    SHARDS[key % 2]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
    Read,
}

#[derive(Clone, Debug)]
struct TxnSpec {
    /// Distinct keys; the first is the primary, and a write.
    ops: Vec<(usize, Kind)>,
    ttl_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decided {
    Committed(u64),
    RolledBack,
}

#[derive(Debug)]
struct TxnState {
    spec: TxnSpec,
    index: usize,
    start_ts: Option<u64>,
    prewrite_ok: Vec<bool>,
    /// The coordinator's commit timestamp, taken once all prewrites succeeded.
    commit_ts: Option<u64>,
    /// The coordinator gave up (it will never commit).
    aborted: bool,
    /// The coordinator saw its primary commit succeed.
    primary_acked: bool,
    decided: Option<Decided>,
}

impl TxnState {
    fn value(&self, op: usize) -> Vec<u8> {
        vec![self.index as u8, op as u8]
    }

    fn lock_op(&self, op: usize) -> LockOp {
        match self.spec.ops[op].1 {
            Kind::Put => LockOp::Put {
                value: self.value(op),
            },
            Kind::Delete => LockOp::Delete,
            Kind::Read => LockOp::Read,
        }
    }

    fn primary(&self) -> usize {
        self.spec.ops[0].0
    }
}

/// One committed write in the model: its commit revision, value (`None` deletes), and the
/// transaction's start (the revision itself for a one-phase write).
#[derive(Clone, Debug)]
struct Committed {
    value: Option<Vec<u8>>,
    start: u64,
}

#[derive(Default)]
struct World {
    view: MemoryView,
    /// The oracle: the last timestamp handed out.
    clock: u64,
    now_ms: u64,
    txns: Vec<TxnState>,
    /// Per key, the committed history by commit revision.
    model: BTreeMap<usize, BTreeMap<u64, Committed>>,
    /// The compaction point: reads below it are refused, versions below it may be gone.
    compact: u64,
    /// Reads answered with a value: (key, revision, answer).
    answered: Vec<(usize, u64, Option<Version>)>,
}

impl World {
    fn timestamp(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn rules(&self, key: usize) -> TxnRules<'_, MemoryView> {
        TxnRules::new(&self.view, shard_of(key))
    }

    /// Applies a rule's mutations after checking that they never rewrite history.
    fn apply<T>(&mut self, answer: TxnResult<cairn_mvcc::Applied<T>>) -> Result<T, TxnError> {
        let applied = answer.expect("the memory view does not fail")?;
        for mutation in &applied.mutations {
            if let Mutation::Put {
                cf: ColumnFamily::Write,
                key: storage_key,
                value,
            } = mutation
            {
                self.check_fresh_version(storage_key, value);
            }
        }
        self.view.apply(applied.mutations);
        Ok(applied.outcome)
    }

    /// Records what the primary answered about transaction `t`; it must never change.
    fn decide(&mut self, t: usize, decided: Decided) {
        let txn = &mut self.txns[t];
        match txn.decided {
            Some(before) => assert_eq!(before, decided, "txn {t} changed its outcome"),
            None => {
                txn.decided = Some(decided);
                if let Decided::Committed(commit) = decided {
                    let start = txn.start_ts.expect("begun");
                    for (op, (key, kind)) in txn.spec.ops.iter().enumerate() {
                        let value = match kind {
                            Kind::Put => Some(txn.value(op)),
                            Kind::Delete => None,
                            Kind::Read => continue,
                        };
                        self.model
                            .entry(*key)
                            .or_default()
                            .insert(commit, Committed { value, start });
                    }
                }
            }
        }
    }

    fn expected(&self, key: usize, at: u64) -> Option<Version> {
        let history = self.model.get(&key)?;
        let visible: Vec<(&u64, &Committed)> = history.range(..=at).collect();
        let (last_revision, last) = visible.last()?;
        let value = last.value.clone()?;
        let life: Vec<&u64> = visible
            .iter()
            .rev()
            .take_while(|(_, c)| c.value.is_some())
            .map(|(r, _)| *r)
            .collect();
        Some(Version {
            key: KEYS[key].to_vec(),
            value,
            create_revision: Revision(**life.last().expect("the last put")),
            mod_revision: Revision(**last_revision),
            version: life.len() as u64,
        })
    }

    fn status(&mut self, t: usize, rollback_if_missing: bool) -> Result<TxnStatus, TxnError> {
        let txn = &self.txns[t];
        let (primary, start) = (txn.primary(), txn.start_ts.expect("begun"));
        let answer = self.rules(primary).check_txn_status(
            KEYS[primary],
            Revision(start),
            self.now_ms,
            rollback_if_missing,
            Revision(self.compact),
        );
        let status = self.apply(answer);
        match &status {
            Ok(TxnStatus::Committed { commit_ts }) => {
                self.decide(t, Decided::Committed(commit_ts.0))
            }
            Ok(TxnStatus::RolledBack) => self.decide(t, Decided::RolledBack),
            Ok(TxnStatus::Locked { .. }) => assert_eq!(self.txns[t].decided, None),
            Err(TxnError::TxnNotFound { .. }) => assert!(!rollback_if_missing),
            Err(TxnError::StatusCompacted { .. }) => {
                // Compaction never passes a lock, so nobody can need this answer any more.
                assert!(start <= self.compact);
                assert!(self.locks_of(start).is_empty());
            }
            Err(other) => panic!("check-status of txn {t}: {other}"),
        }
        status
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Drive,
    Begin,
    Prewrite,
    CommitPrimary,
    CommitSecondary,
    Abort,
    CheckStatus,
    Resolve,
    OnePhase,
    Read,
    ReadRange,
    Tick,
    Compact,
}

#[derive(Clone, Copy, Debug)]
struct Action {
    kind: Step,
    txn: usize,
    op: usize,
    param: u64,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => Just(Step::Drive),
        1 => Just(Step::Begin),
        5 => Just(Step::Prewrite),
        3 => Just(Step::CommitPrimary),
        3 => Just(Step::CommitSecondary),
        1 => Just(Step::Abort),
        2 => Just(Step::CheckStatus),
        2 => Just(Step::Resolve),
        1 => Just(Step::OnePhase),
        3 => Just(Step::Read),
        1 => Just(Step::ReadRange),
        3 => Just(Step::Tick),
        1 => Just(Step::Compact),
    ]
}

fn txn_strategy() -> impl Strategy<Value = TxnSpec> {
    let kind = prop_oneof![Just(Kind::Put), Just(Kind::Delete), Just(Kind::Read)];
    (prop::collection::vec((0..KEYS.len(), kind), 1..4), 1u64..60).prop_map(|(raw, ttl_ms)| {
        let mut ops: Vec<(usize, Kind)> = Vec::new();
        for (key, kind) in raw {
            if ops.iter().all(|(k, _)| *k != key) {
                ops.push((key, kind));
            }
        }
        if ops[0].1 == Kind::Read {
            ops[0].1 = Kind::Put;
        }
        TxnSpec { ops, ttl_ms }
    })
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(
        (step_strategy(), 0usize..8, 0usize..8, any::<u64>()).prop_map(|(kind, txn, op, param)| {
            Action {
                kind,
                txn,
                op,
                param,
            }
        }),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn transactions_are_atomic_serializable_and_decided_once(
        specs in prop::collection::vec(txn_strategy(), 2..5),
        actions in actions(),
    ) {
        let mut world = World {
            txns: specs
                .into_iter()
                .enumerate()
                .map(|(index, spec)| TxnState {
                    prewrite_ok: vec![false; spec.ops.len()],
                    spec,
                    index,
                    start_ts: None,
                    commit_ts: None,
                    aborted: false,
                    primary_acked: false,
                    decided: None,
                })
                .collect(),
            ..World::default()
        };
        for action in actions {
            world.step(action);
        }
        world.resolve_everything();
        world.check_final_state();
    }
}
