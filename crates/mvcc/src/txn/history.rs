//! What a key's `write` records say about one transaction: did it commit here (and when), was
//! it rolled back here, and was anything committed at or after its `start_ts`.

use crate::error::Result;
use crate::key::{self, VersionKey};
use crate::record::WriteRecord;
use crate::view::{ColumnFamily, Cursor, MvccView};
use cairn_types::{Revision, ShardId};

/// The records of one key at or above one `start_ts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TxnTrace {
    /// The transaction's own commit record on this key, at this `commit_ts`.
    pub committed_at: Option<Revision>,
    /// A `Rollback` marker at `start_ts`.
    pub rolled_back: bool,
    /// The newest version (not a marker) at or above `start_ts` written by something other
    /// than this transaction, with that writer's `start_ts` if it was a transaction.
    pub newest_other: Option<(Revision, Option<Revision>)>,
    /// A version (not a marker) sits exactly at `start_ts`: a marker cannot be written there.
    /// Oracle timestamps are unique, so this only happens to data older than the oracle.
    pub version_at_start: bool,
}

/// Walks the key's records from the newest down to `start_ts`. A commit's revision is above
/// its `start_ts`, so the transaction's own commit record, if any, is among them. The walk
/// is as long as the key's history since `start_ts`: short for the transactions that ask
/// (live ones, or ones whose locks are met), since locks block further writes to the key.
pub(crate) fn trace<V: MvccView>(
    view: &V,
    shard: ShardId,
    user_key: &[u8],
    start_ts: Revision,
) -> Result<TxnTrace> {
    let prefix = key::versions_prefix(shard, user_key);
    let lower = key::seek_key(&prefix, Revision::LATEST);
    // Exclusive upper bound just below `start_ts` in storage order (`!start_ts + 1`).
    let upper = match start_ts.0.checked_sub(1) {
        Some(below) => key::seek_key(&prefix, Revision(below)),
        None => key::after_versions(&prefix),
    };
    let mut cursor = view.cursor(ColumnFamily::Write, &lower, &upper, true)?;
    cursor.seek(&lower)?;
    let mut trace = TxnTrace::default();
    while let Some((storage_key, value)) = cursor.current() {
        let revision = VersionKey::parse(storage_key)?.revision;
        let record = WriteRecord::decode(value)?;
        match record.txn_start_ts() {
            _ if record.is_marker() => trace.rolled_back |= revision == start_ts,
            Some(writer_start) if writer_start == start_ts && revision > start_ts => {
                trace.committed_at = Some(revision);
            }
            writer_start => {
                trace.version_at_start |= revision == start_ts;
                if trace.newest_other.is_none() {
                    trace.newest_other = Some((revision, writer_start));
                }
            }
        }
        cursor.next()?;
    }
    Ok(trace)
}
