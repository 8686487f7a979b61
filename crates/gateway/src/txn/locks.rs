//! The locks a two-phase transaction prewrites: which key is the primary, and what each
//! shard's prewrite carries. Pure.
//!
//! - The primary is the smallest written key (byte order): every gateway running the same
//!   request over the same reads picks the same one, and a written key is needed because
//!   its commit record is the transaction's outcome (`ReadOnlyPrimary` otherwise).
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

    /// Every key locked, over all shards.
    pub fn key_count(&self) -> usize {
        self.shards.values().map(Vec::len).sum()
    }
}

/// The locks of an evaluated transaction; `None` when it writes nothing (a read-only
/// transaction takes no locks: its reads at one snapshot are all it needs).
pub fn plan_locks(
    evaluation: &Evaluation,
    shard_of: impl Fn(&[u8]) -> ShardId,
) -> Option<LockPlan> {
    let primary = evaluation.writes.keys().next()?.clone();
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
    for mutation in written.chain(read) {
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
        )
        .unwrap();
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
        assert!(plan_locks(&evaluation(&[], &["0a", "1b"]), shard_of).is_none());
    }
}
