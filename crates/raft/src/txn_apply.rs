//! The transaction commands (D93) as the shard state machine applies them: each is evaluated
//! by `cairn_mvcc::TxnRules` over the shard's applied state, at apply, on every replica with
//! the same inputs (the clock is the command's `proposed_at_ms`), and its mutations go into
//! the entry's batch, so they are written atomically with it. A rule's refusal is a result
//! ([`WriteResult::TxnRefused`]): nothing of the command is written.
//!
//! A command naming several keys is all or nothing: the first refusal, in the order of the
//! keys, is the answer. The keys are distinct (validated at the node), so the rules for one
//! key never need to see another key's mutations.
//!
//! Exactly-once across gateways rides on the shard's sessions: the primary's `Commit`
//! remembers the client's answer under the client's write id, and a `Prewrite` carrying that
//! write id finds it and prewrites nothing.

use crate::codec;
use crate::command::{Prewrite, TxnCommit, WriteOp, WriteResult};
use crate::error::{Result, StorageError};
use crate::kv::write_mutation;
use crate::mvcc_store::{storage_error, RocksView};
use crate::sessions::{Admission, RememberedResult, SessionTable};
use cairn_mvcc::{ColumnFamily, Lock, Mutation, TxnError, TxnRules};
use cairn_types::{Revision, ShardId};
use rocksdb::{WriteBatch, DB};

/// What one transaction command did.
#[derive(Debug)]
pub(crate) struct TxnApplied {
    pub result: WriteResult,
    /// The revision of the versions it wrote (a commit's `commit_ts`), if it wrote any.
    /// Rollback markers are not versions and do not count.
    pub revision: Option<Revision>,
}

/// The shard's state a command is applied against.
pub(crate) struct TxnContext<'a> {
    pub db: &'a DB,
    pub shard: ShardId,
    /// The proposing leader's clock (`Command::proposed_at_ms`): lock creation and expiry.
    pub now_ms: u64,
    pub compact_revision: Revision,
}

/// Applies one transaction command into `batch`.
pub(crate) fn apply_txn_command(
    context: &TxnContext<'_>,
    op: &WriteOp,
    sessions: &mut SessionTable,
    batch: &mut WriteBatch,
) -> Result<TxnApplied> {
    let view = RocksView::new(context.db, None);
    let rules = TxnRules::new(&view, context.shard);
    let outcome = match op {
        WriteOp::Prewrite(prewrite) => {
            if let Some(answer) = already_answered(context, prewrite, sessions)? {
                return Ok(TxnApplied {
                    result: answer,
                    revision: None,
                });
            }
            prewrite_all(&rules, context, prewrite)?
                .map(|mutations| (WriteResult::Prewritten { first_result: None }, mutations))
        }
        WriteOp::Commit(commit) => commit_all(&rules, commit)?
            .map(|(commit_ts, mutations)| (WriteResult::TxnCommitted { commit_ts }, mutations)),
        WriteOp::Rollback { start_ts, keys } => each_key(keys, |key| {
            Ok(rules
                .rollback(key, *start_ts)
                .map_err(storage_error)?
                .map(|applied| applied.mutations))
        })?
        .map(|mutations| (WriteResult::TxnRolledBack, mutations)),
        WriteOp::ResolveLocks {
            start_ts,
            keys,
            resolution,
        } => each_key(keys, |key| {
            Ok(rules
                .resolve_lock(key, *start_ts, *resolution)
                .map_err(storage_error)?
                .map(|applied| applied.mutations))
        })?
        .map(|mutations| (WriteResult::LocksResolved, mutations)),
        WriteOp::CheckTxnStatus {
            primary,
            start_ts,
            rollback_if_missing,
        } => rules
            .check_txn_status(
                primary,
                *start_ts,
                context.now_ms,
                *rollback_if_missing,
                context.compact_revision,
            )
            .map_err(storage_error)?
            .map(|applied| (WriteResult::TxnStatus(applied.outcome), applied.mutations)),
        other => {
            return Err(StorageError::Inconsistent(format!(
                "not a transaction command: {other:?}"
            )))
        }
    };
    let (result, mutations) = match outcome {
        Ok(done) => done,
        Err(refusal) => {
            return Ok(TxnApplied {
                result: WriteResult::TxnRefused(refusal),
                revision: None,
            })
        }
    };
    let commit_ts = op.commit_ts();
    let mut revision = None;
    for mutation in mutations {
        if let (Mutation::Put { cf, .. }, Some(commit_ts)) = (&mutation, commit_ts) {
            if *cf == ColumnFamily::Write {
                revision = Some(commit_ts);
            }
        }
        write_mutation(context.db, batch, mutation);
    }
    if let WriteOp::Commit(TxnCommit {
        remember: Some((write_id, answer)),
        ..
    }) = op
    {
        // A retried commit finds the answer already there: the first one stays.
        if sessions.admit_id(Some(*write_id), context.db)? == Admission::New {
            sessions.remember_id(
                *write_id,
                &WriteResult::Txn(answer.clone()),
                batch,
                context.db,
            );
        }
    }
    Ok(TxnApplied { result, revision })
}

/// The answer of a prewrite whose write id was seen before: the first result of a
/// transaction that committed under it, or why the id cannot be used.
fn already_answered(
    context: &TxnContext<'_>,
    prewrite: &Prewrite,
    sessions: &SessionTable,
) -> Result<Option<WriteResult>> {
    Ok(match sessions.admit_id(prewrite.write_id, context.db)? {
        Admission::New => None,
        Admission::Duplicate(RememberedResult::Full(WriteResult::Txn(first))) => {
            Some(WriteResult::Prewritten {
                first_result: Some(first),
            })
        }
        // Another kind of write under this id: its result, which the node refuses as a
        // reused write id.
        Admission::Duplicate(RememberedResult::Full(other)) => Some(other),
        Admission::Duplicate(RememberedResult::TooLarge) => {
            Some(WriteResult::AppliedResultNotRetained)
        }
        Admission::WindowExceeded { oldest_remembered } => {
            Some(WriteResult::WindowExceeded { oldest_remembered })
        }
    })
}

type Refusable<T> = std::result::Result<T, TxnError>;

/// Runs `rule` on every key, collecting mutations; stops at the first refusal.
fn each_key(
    keys: &[Vec<u8>],
    mut rule: impl FnMut(&[u8]) -> Result<Refusable<Vec<Mutation>>>,
) -> Result<Refusable<Vec<Mutation>>> {
    let mut mutations = Vec::with_capacity(keys.len() * 2);
    for key in keys {
        match rule(key)? {
            Ok(more) => mutations.extend(more),
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    Ok(Ok(mutations))
}

fn prewrite_all(
    rules: &TxnRules<'_, RocksView<'_>>,
    context: &TxnContext<'_>,
    prewrite: &Prewrite,
) -> Result<Refusable<Vec<Mutation>>> {
    // The primary's lock carries the write id, so whoever finds the lock can tell which
    // client request it belongs to.
    let write_id = prewrite.write_id.map(|id| codec::encode(&id));
    let mut mutations = Vec::with_capacity(prewrite.mutations.len());
    for mutation in &prewrite.mutations {
        let lock = Lock {
            primary: prewrite.primary.clone(),
            start_ts: prewrite.start_ts,
            ttl_ms: prewrite.lock_ttl_ms,
            created_at_ms: context.now_ms,
            op: mutation.op.clone(),
            write_id: if mutation.key == prewrite.primary {
                write_id.clone()
            } else {
                None
            },
        };
        match rules
            .prewrite(&mutation.key, lock, context.compact_revision)
            .map_err(storage_error)?
        {
            Ok(applied) => mutations.extend(applied.mutations),
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    Ok(Ok(mutations))
}

/// Commits every key. A key with neither lock nor record of the transaction was a read lock
/// committed by an earlier attempt (committing one leaves nothing): done, provided another
/// key of the call proves the commit. If none does, `TxnNotFound`.
fn commit_all(
    rules: &TxnRules<'_, RocksView<'_>>,
    commit: &TxnCommit,
) -> Result<Refusable<(Revision, Vec<Mutation>)>> {
    let mut mutations = Vec::with_capacity(commit.keys.len() * 2);
    let mut recorded = None;
    let mut not_found = None;
    for key in &commit.keys {
        match rules
            .commit(key, commit.start_ts, commit.commit_ts)
            .map_err(storage_error)?
        {
            Ok(applied) => {
                recorded = Some(applied.outcome);
                mutations.extend(applied.mutations);
            }
            Err(refusal @ TxnError::TxnNotFound { .. }) => {
                not_found.get_or_insert(refusal);
            }
            Err(refusal) => return Ok(Err(refusal)),
        }
    }
    Ok(match (recorded, not_found) {
        (Some(commit_ts), _) => Ok((commit_ts, mutations)),
        (None, Some(refusal)) => Err(refusal),
        (None, None) => Ok((commit.commit_ts, mutations)),
    })
}

#[cfg(test)]
#[path = "txn_apply_tests.rs"]
mod tests;
