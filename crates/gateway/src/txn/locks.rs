//! The locks a two-phase transaction prewrites: which key is the primary, and what each
//! shard's prewrite carries. Pure.
//!
//! - The primary of a request with a write id is its record key (D97), a reserved key that
//!   only attempts of that request ever lock: a delete lock whose commit record is the
//!   outcome and whose shard keeps the result under the write id. It is locked even when the
//!   chosen branch writes nothing, so that an attempt answering from that branch cannot miss
//!   another attempt that wrote.
//! - Without a write id, the primary is the smallest written key (byte order): a written key
//!   is needed because its commit record is the transaction's outcome (`ReadOnlyPrimary`
//!   otherwise).
//! - A written key gets a put or delete lock carrying the final value.
//! - A key only compared or point-read (or deleted while absent) gets a read lock, which
//!   keeps writers out until the transaction is decided, so what the transaction read at
//!   `start_ts` is still true at `commit_ts` (D91). Keys seen only through a range get no
//!   lock: ranges are re-read at `commit_ts` instead (D95).

use crate::txn::evaluate::{Evaluation, Write};
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::txn_mutation::Op;
use cairn_types::ShardId;
use std::collections::BTreeMap;

/// What one transaction prewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockPlan {
    pub primary: Vec<u8>,
    pub primary_shard: ShardId,
    /// Each shard's mutations, in key order.
    pub shards: BTreeMap<ShardId, Vec<node_pb::TxnMutation>>,
}

impl LockPlan {
    /// The keys of a shard, for its commit or rollback.
    pub fn keys_of(&self, shard: ShardId) -> Vec<Vec<u8>> {
        self.shards
            .get(&shard)
            .map(|mutations| mutations.iter().map(|m| m.key.clone()).collect())
            .unwrap_or_default()
    }

    /// Every shard but the primary's.
    pub fn secondary_shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.shards
            .keys()
            .copied()
            .filter(move |shard| *shard != self.primary_shard)
    }

    /// Whether the primary is a request's record key: then its shard is prewritten before
    /// the others (D97), so an attempt that meets another attempt's lock there holds no
    /// locks while it waits.
    pub fn primary_is_record(&self) -> bool {
        cairn_types::reserved::is_txn_record_key(&self.primary)
    }

    /// Every key locked, over all shards.
    pub fn key_count(&self) -> usize {
        self.shards.values().map(Vec::len).sum()
    }
}

/// The locks of an evaluated transaction whose request has `record_key` (its write id's,
/// when it has one and either branch writes). `None` when nothing is locked: a branch that
/// writes nothing takes no locks (its reads at one snapshot are all it needs), unless the
/// record key must record its answer, and then that is its only lock.
pub fn plan_locks(
    evaluation: &Evaluation,
    shard_of: impl Fn(&[u8]) -> ShardId,
    record_key: Option<Vec<u8>>,
) -> Option<LockPlan> {
    let read_only = evaluation.writes.is_empty();
    let primary = match &record_key {
        Some(record_key) => record_key.clone(),
        None => evaluation.writes.keys().next()?.clone(),
    };
    let record = record_key.map(|key| node_pb::TxnMutation {
        key,
        op: Op::Delete as i32,
        value: Vec::new(),
    });
    let mut shards: BTreeMap<ShardId, Vec<node_pb::TxnMutation>> = BTreeMap::new();
    let written = evaluation.writes.iter().map(|(key, write)| match write {
        Write::Put(value) => node_pb::TxnMutation {
            key: key.clone(),
            op: Op::Put as i32,
            value: value.clone(),
        },
        Write::Delete => node_pb::TxnMutation {
            key: key.clone(),
            op: Op::Delete as i32,
            value: Vec::new(),
        },
    });
    let read = evaluation.reads.iter().map(|key| node_pb::TxnMutation {
        key: key.clone(),
        op: Op::Read as i32,
        value: Vec::new(),
    });
    // A branch that writes nothing needs no read locks: its answer is its snapshot.
    let locked = (!read_only)
        .then(|| written.chain(read))
        .into_iter()
        .flatten();
    for mutation in record.into_iter().chain(locked) {
        shards
            .entry(shard_of(&mutation.key))
            .or_default()
            .push(mutation);
    }
    for mutations in shards.values_mut() {
        mutations.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Some(LockPlan {
        primary_shard: shard_of(&primary),
        primary,
        shards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn shard_of(key: &[u8]) -> ShardId {
        ShardId(u64::from(key[0] - b'0'))
    }

    fn evaluation(writes: &[(&str, Write)], reads: &[&str]) -> Evaluation {
        Evaluation {
            succeeded: true,
            writes: writes
                .iter()
                .map(|(key, write)| (key.as_bytes().to_vec(), write.clone()))
                .collect(),
            reads: reads
                .iter()
                .map(|key| key.as_bytes().to_vec())
                .collect::<BTreeSet<_>>(),
            responses: Vec::new(),
        }
    }

    #[test]
    fn the_primary_is_the_smallest_written_key_and_reads_get_read_locks() {
        let plan = plan_locks(
            &evaluation(
                &[("2b", Write::Put(b"v".to_vec())), ("1z", Write::Delete)],
                &["0a", "2a"],
            ),
            shard_of,
            None,
        )
        .unwrap();
        assert!(!plan.primary_is_record());
        assert_eq!(plan.primary, b"1z");
        assert_eq!(plan.primary_shard, ShardId(1));
        let ops = |shard: u64| -> Vec<(String, i32)> {
            plan.shards[&ShardId(shard)]
                .iter()
                .map(|m| (String::from_utf8(m.key.clone()).unwrap(), m.op))
                .collect()
        };
        assert_eq!(ops(0), [("0a".to_string(), Op::Read as i32)]);
        assert_eq!(ops(1), [("1z".to_string(), Op::Delete as i32)]);
        assert_eq!(
            ops(2),
            [
                ("2a".to_string(), Op::Read as i32),
                ("2b".to_string(), Op::Put as i32)
            ]
        );
        assert_eq!(plan.shards[&ShardId(2)][1].value, b"v");
        assert_eq!(
            plan.secondary_shards().collect::<Vec<_>>(),
            [ShardId(0), ShardId(2)]
        );
        assert_eq!(plan.keys_of(ShardId(2)), [b"2a".to_vec(), b"2b".to_vec()]);
        assert_eq!(plan.key_count(), 4);
    }

    #[test]
    fn a_transaction_that_writes_nothing_takes_no_locks() {
        assert!(plan_locks(&evaluation(&[], &["0a", "1b"]), shard_of, None).is_none());
    }

    /// Record keys live in shard 9 here.
    fn shard_or_record(key: &[u8]) -> ShardId {
        if cairn_types::reserved::is_reserved(key) {
            ShardId(9)
        } else {
            shard_of(key)
        }
    }

    #[test]
    fn with_a_record_key_the_primary_is_the_record_keys_delete_lock() {
        let record = cairn_types::reserved::txn_record_key(5, 6);
        let plan = plan_locks(
            &evaluation(&[("2b", Write::Put(b"v".to_vec()))], &["0a"]),
            shard_or_record,
            Some(record.clone()),
        )
        .unwrap();
        assert!(plan.primary_is_record());
        assert_eq!(
            (plan.primary.clone(), plan.primary_shard),
            (record.clone(), ShardId(9))
        );
        assert_eq!(plan.shards[&ShardId(9)].len(), 1);
        assert_eq!(plan.shards[&ShardId(9)][0].op, Op::Delete as i32);
        assert_eq!(plan.key_count(), 3);
        assert_eq!(
            plan.secondary_shards().collect::<Vec<_>>(),
            [ShardId(0), ShardId(2)]
        );
        // A branch that writes nothing locks only the record key: its reads need no locks.
        let read_only = plan_locks(
            &evaluation(&[], &["0a", "1b"]),
            shard_or_record,
            Some(record.clone()),
        )
        .unwrap();
        assert_eq!(read_only.key_count(), 1);
        assert_eq!(read_only.keys_of(ShardId(9)), [record]);
        assert_eq!(read_only.secondary_shards().count(), 0);
    }
}
