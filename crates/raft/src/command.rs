//! The shard state machine's commands (what goes into the Raft log) and their results.
//!
//! These are Cairn's domain types. Requests arrive as protobuf and are converted with
//! `TryFrom` in [`crate::convert`], which is where they are validated; everything that reaches
//! the log is known to be well-formed and within limits.

use cairn_trace_context::TraceParent;
use cairn_types::{ClientId, Revision, Sequence};
use serde::{Deserialize, Serialize};

/// Identifies a write for exactly-once application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    pub client: ClientId,
    pub sequence: Sequence,
    /// Every sequence below this one was answered to the client; results may be forgotten.
    pub first_incomplete: Sequence,
}

/// A precondition on a single put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutCondition {
    Absent,
    ValueEquals(Vec<u8>),
    VersionEquals(u64),
    ModRevisionEquals(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub prev_kv: bool,
    pub condition: Option<PutCondition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub key: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    pub key: Vec<u8>,
    pub keys_only: bool,
}

/// Keys in `[start, end)`; `end == None` means to the end of the key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    /// At least 1 and at most `range_keys_max` (a request of 0 means `range_keys_max`; a
    /// larger one is refused by validation).
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put(Put),
    Get(Get),
    Delete(Delete),
    Range(Range),
}

/// Comparisons, then `success` or `failure` ops, applied atomically at one revision. Each op
/// sees the earlier ops of its branch (as in etcd); no key is written twice (validated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put(Put),
    Delete(Delete),
    Txn(Txn),
    /// Raises the shard's compaction point: reads below it are refused and versions only
    /// they could see may be dropped. Proposed by the leader when the cluster's point is
    /// higher than its shard's.
    Compact {
        revision: Revision,
    },
    // Cross-shard transactions (D93): evaluated at apply by `cairn_mvcc::TxnRules`, with the
    // command's `proposed_at_ms` as the clock. New variants go last (the log is postcard).
    /// Locks every mutation's key for the transaction, all or nothing.
    Prewrite(Prewrite),
    /// Commits the transaction's locks on `keys` at `commit_ts`.
    Commit(TxnCommit),
    /// Rolls the transaction back on `keys` (removes its locks, leaves rollback markers).
    Rollback {
        start_ts: Revision,
        keys: Vec<Vec<u8>>,
    },
    /// Carries the primary's decision to the transaction's locks on `keys`.
    ResolveLocks {
        start_ts: Revision,
        keys: Vec<Vec<u8>>,
        resolution: cairn_mvcc::Resolution,
    },
    /// Decides the transaction from its primary: may roll back an expired or missing one.
    CheckTxnStatus {
        primary: Vec<u8>,
        start_ts: Revision,
        rollback_if_missing: bool,
    },
}

/// One key of a prewrite and what the transaction does to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMutation {
    pub key: Vec<u8>,
    pub op: cairn_mvcc::LockOp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prewrite {
    pub start_ts: Revision,
    /// The key whose commit record decides the transaction (in any shard).
    pub primary: Vec<u8>,
    pub lock_ttl_ms: u64,
    /// Distinct keys (validated), at least one.
    pub mutations: Vec<TxnMutation>,
    /// The client's write id: a transaction that already committed under it is answered
    /// with its remembered result and nothing is prewritten. Not the command's `write_id`:
    /// a prewrite is not the write the id stands for, and its result is not remembered.
    pub write_id: Option<WriteId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCommit {
    pub start_ts: Revision,
    pub commit_ts: Revision,
    /// Distinct keys (validated), at least one.
    pub keys: Vec<Vec<u8>>,
    /// On the primary's commit: the client's write id and the response to remember under it
    /// (exactly-once across gateways: a retry's prewrite finds it).
    pub remember: Option<(WriteId, TxnResult)>,
}

impl WriteOp {
    /// Whether this is one of the transaction commands (applied by `crate::txn_apply`).
    pub fn is_txn_command(&self) -> bool {
        matches!(
            self,
            WriteOp::Prewrite(_)
                | WriteOp::Commit(_)
                | WriteOp::Rollback { .. }
                | WriteOp::ResolveLocks { .. }
                | WriteOp::CheckTxnStatus { .. }
        )
    }

    /// The revision at which a transaction command writes versions, if it does: reads at or
    /// above it must wait for it while it is in flight.
    pub fn commit_ts(&self) -> Option<Revision> {
        match self {
            WriteOp::Commit(commit) => Some(commit.commit_ts),
            WriteOp::ResolveLocks {
                resolution: cairn_mvcc::Resolution::Commit { commit_ts },
                ..
            } => Some(*commit_ts),
            _ => None,
        }
    }

    /// The write id whose session record a transaction command reads or writes.
    pub fn txn_write_id(&self) -> Option<WriteId> {
        match self {
            WriteOp::Prewrite(prewrite) => prewrite.write_id,
            WriteOp::Commit(commit) => commit.remember.as_ref().map(|(id, _)| *id),
            _ => None,
        }
    }
}

/// Where a write's revision comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandRevision {
    /// The shard counts its own revisions: the shard's revision + 1. For groups without an
    /// oracle: the coordinator's metadata, a statically bootstrapped node.
    #[default]
    Counted,
    /// A timestamp from the oracle, fetched by the leader of `term` after it latched the
    /// command's keys. Applied only in an entry of that term (`cairn_mvcc::leadership_refusal`).
    Timestamp { revision: Revision, term: u64 },
}

/// One entry of a shard's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub write_id: Option<WriteId>,
    /// The proposing leader's wall clock, in milliseconds since the Unix epoch. Drives the
    /// deterministic expiry of exactly-once sessions (every replica sees the same value).
    pub proposed_at_ms: u64,
    pub op: WriteOp,
    /// The revision the write gets if it changes anything.
    pub revision: CommandRevision,
    /// The proposal's trace, when the request is sampled: every replica's log append and
    /// apply of this entry, and the leader's replication of it, join the request's trace.
    pub trace: Option<TraceParent>,
}

/// A key with its metadata, as stored and as returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub revision: Revision,
    pub succeeded: bool,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub revision: Revision,
    pub deleted: u64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    pub revision: Revision,
    pub kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// When `more`: the last key returned; the next page starts strictly after it.
    pub continuation: Option<Vec<u8>>,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put(PutResult),
    Get(GetResult),
    Delete(DeleteResult),
    Range(RangeResult),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    pub revision: Revision,
    pub succeeded: bool,
    pub responses: Vec<TxnOpResult>,
}

/// The outcome of one applied write command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    Put(PutResult),
    Delete(DeleteResult),
    Txn(TxnResult),
    /// The write's sequence is below what the shard remembers for its client: it may have
    /// been applied before and its result is forgotten, so it was not applied now.
    WindowExceeded {
        oldest_remembered: Sequence,
    },
    /// A retry of a write that was applied, whose result was too large to remember.
    AppliedResultNotRetained,
    /// The write's timestamp could not be applied (nothing was applied, nothing is
    /// remembered): retrying gets a new timestamp.
    Refused(cairn_mvcc::Refusal),
    /// A `Compact` command: the shard's compaction point after it.
    Compacted {
        compact_revision: Revision,
    },
    // Results of the transaction commands (D93); new variants go last (results are
    // remembered in sessions with postcard).
    /// Every mutation is locked; or, when the write id's transaction already committed,
    /// nothing was prewritten and this is its first result.
    Prewritten {
        first_result: Option<TxnResult>,
    },
    /// The keys are committed; the commit timestamp on record (a retry finds the first).
    TxnCommitted {
        commit_ts: Revision,
    },
    TxnRolledBack,
    LocksResolved,
    TxnStatus(cairn_mvcc::TxnStatus),
    /// A transaction rule (or a one-phase write meeting a lock) refused: nothing of the
    /// command was applied, nothing is remembered.
    TxnRefused(cairn_mvcc::TxnError),
}

/// What applying one log entry produced (the Raft response type).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A blank or membership entry.
    #[default]
    None,
    Write(WriteResult),
}

/// The smallest key strictly greater than every key with this prefix, or `None` when no such
/// key exists (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
