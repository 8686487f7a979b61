//! The transaction builder: `Txn::new().when(comparisons).then(ops).otherwise(ops)`.
//!
//! A transaction may name keys of any shards: the gateway commits a transaction whose keys
//! live in one shard in one Raft round, and the others by two-phase commit (docs/client.md,
//! "Transactions"). Nothing here looks at where keys live. Gateways older than cross-shard
//! transactions refuse the second kind with `Error::CrossShardTransaction`.

use crate::conflict::ConflictPolicy;
use crate::options::{GetOptions, RangeOptions};
use cairn_proto::kv::v1 as proto;

/// How a key's current field is compared with the given one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    /// The current field is greater than the given one.
    Greater,
    /// The current field is less than the given one.
    Less,
}

/// Which field of the key is compared, and with what. A missing key has an empty value and
/// version, create_revision and mod_revision 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
}

/// One comparison of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, CompareTarget::Value(value.into()))
    }

    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: u64) -> Self {
        Self::new(key, op, CompareTarget::Version(version))
    }

    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self::new(key, op, CompareTarget::CreateRevision(revision))
    }

    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: u64) -> Self {
        Self::new(key, op, CompareTarget::ModRevision(revision))
    }

    /// The key is absent (its version is 0).
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::version(key, CompareOp::Equal, 0)
    }

    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Self {
            key: key.into(),
            op,
            target,
        }
    }
}

impl From<Compare> for proto::Compare {
    fn from(compare: Compare) -> Self {
        use proto::compare::{Result as Op, Target};
        let op = match compare.op {
            CompareOp::Equal => Op::Equal,
            CompareOp::NotEqual => Op::NotEqual,
            CompareOp::Greater => Op::Greater,
            CompareOp::Less => Op::Less,
        };
        let target = match compare.target {
            CompareTarget::Value(value) => Target::Value(value),
            CompareTarget::Version(version) => Target::Version(version),
            CompareTarget::CreateRevision(revision) => Target::CreateRevision(revision),
            CompareTarget::ModRevision(revision) => Target::ModRevision(revision),
        };
        proto::Compare {
            result: op.into(),
            key: compare.key,
            target: Some(target),
        }
    }
}

/// One operation of a transaction branch. Each sees the earlier operations of its branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        prev_kv: bool,
    },
    Get {
        key: Vec<u8>,
        options: GetOptions,
    },
    Delete {
        key: Vec<u8>,
        prev_kv: bool,
    },
    Range(RangeOptions),
}

impl Op {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
        }
    }

    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Op::Get {
            key: key.into(),
            options: GetOptions::default(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete {
            key: key.into(),
            prev_kv: false,
        }
    }

    pub fn range(options: RangeOptions) -> Self {
        Op::Range(options)
    }
}

impl From<Op> for proto::RequestOp {
    fn from(op: Op) -> Self {
        use proto::request_op::Request;
        let request = match op {
            // Ops inside a transaction carry no write id or condition: the transaction's
            // own write id covers them.
            Op::Put {
                key,
                value,
                prev_kv,
            } => Request::Put(proto::PutRequest {
                key,
                value,
                prev_kv,
                condition: None,
                write_id: None,
            }),
            Op::Get { key, options } => Request::Get(proto::GetRequest {
                key,
                consistency: proto::Consistency::from(options.consistency).into(),
                keys_only: options.keys_only,
                revision: options.revision,
            }),
            Op::Delete { key, prev_kv } => Request::Delete(proto::DeleteRequest {
                key,
                prev_kv,
                write_id: None,
            }),
            Op::Range(options) => Request::Range(options.into()),
        };
        proto::RequestOp {
            request: Some(request),
        }
    }
}

/// A transaction: if every comparison holds, the `then` ops run, otherwise the `otherwise`
/// ops; atomically, at one revision, whatever shards its keys live in. Each op sees the
/// earlier ops of its branch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<Op>,
    failure: Vec<Op>,
    /// Overrides the client's `txn_conflict_policy` for this transaction.
    conflict_policy: Option<ConflictPolicy>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds comparisons; all of them must hold for the `then` branch.
    pub fn when(mut self, compare: impl IntoIterator<Item = Compare>) -> Self {
        self.compare.extend(compare);
        self
    }

    /// Adds ops run when every comparison holds.
    pub fn then(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds ops run when some comparison does not hold.
    pub fn otherwise(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// How this transaction answers a lost race (`Error::Conflict`), instead of the client's
    /// `txn_conflict_policy`; [`ConflictPolicy::never`] leaves every conflict to the caller.
    pub fn on_conflict(mut self, policy: ConflictPolicy) -> Self {
        self.conflict_policy = Some(policy);
        self
    }

    pub(crate) fn conflict_policy(&self) -> Option<ConflictPolicy> {
        self.conflict_policy
    }

    /// The number of comparisons and ops, which the cluster bounds by `txn_ops_max`.
    pub fn len(&self) -> usize {
        self.compare.len() + self.success.len() + self.failure.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire request, without a write id (the client adds it).
    pub(crate) fn into_request(self) -> proto::TxnRequest {
        proto::TxnRequest {
            compare: self.compare.into_iter().map(Into::into).collect(),
            success: self.success.into_iter().map(Into::into).collect(),
            failure: self.failure.into_iter().map(Into::into).collect(),
            write_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_produces_the_wire_request() {
        let request = Txn::new()
            .when([Compare::mod_revision("a", CompareOp::Equal, 7)])
            .then([Op::put("a", "1"), Op::delete("b")])
            .otherwise([Op::get("a")])
            .into_request();
        assert_eq!(request.compare.len(), 1);
        assert_eq!(request.compare[0].result(), proto::compare::Result::Equal);
        assert_eq!(
            request.compare[0].target,
            Some(proto::compare::Target::ModRevision(7))
        );
        assert_eq!(request.success.len(), 2);
        assert!(matches!(
            &request.success[0].request,
            Some(proto::request_op::Request::Put(put)) if put.write_id.is_none() && put.value == b"1"
        ));
        assert!(matches!(
            &request.failure[0].request,
            Some(proto::request_op::Request::Get(get)) if get.key == b"a"
        ));
        assert!(request.write_id.is_none());
    }

    #[test]
    fn keys_of_any_shards_and_a_policy_are_accepted() {
        // Nothing client-side checks where keys live: 64 keys span every shard of any cluster.
        let keys: Vec<String> = (0..64).map(|i| format!("account/{i}")).collect();
        let txn = Txn::new()
            .when(
                keys.iter()
                    .map(|key| Compare::mod_revision(key.as_str(), CompareOp::Less, 100)),
            )
            .then(keys.iter().map(|key| Op::put(key.as_str(), "1")))
            .on_conflict(ConflictPolicy::never());
        assert_eq!(txn.conflict_policy(), Some(ConflictPolicy::never()));
        assert_eq!(txn.len(), 128);
        let request = txn.into_request();
        assert_eq!(request.compare.len(), 64);
        assert_eq!(request.success.len(), 64);
        assert_eq!(Txn::new().conflict_policy(), None);
    }

    #[test]
    fn absent_compares_version_zero() {
        let compare = proto::Compare::from(Compare::absent("k"));
        assert_eq!(compare.target, Some(proto::compare::Target::Version(0)));
        assert_eq!(compare.result(), proto::compare::Result::Equal);
    }
}
