//! What each public request reads and writes, for the permission check: a write of a key
//! needs write permission; anything that returns a key's value (a get, a range, a put or
//! delete with `prev_kv`, a conditional put, which answers with the key when its condition
//! fails, a transaction's comparisons) needs read permission. A transaction needs every
//! access of both of its branches, whichever runs (as etcd).

use super::key_access;
use cairn_auth::{Access, KeyRange};
use cairn_proto::kv::v1 as pb;

pub type Accesses = Vec<(Access, KeyRange)>;

pub trait RequestAccesses {
    fn accesses(&self) -> Accesses;
}

impl RequestAccesses for pb::PutRequest {
    fn accesses(&self) -> Accesses {
        let mut wanted = vec![key_access(Access::Write, &self.key)];
        if self.prev_kv || self.condition.is_some() {
            wanted.push(key_access(Access::Read, &self.key));
        }
        wanted
    }
}

impl RequestAccesses for pb::DeleteRequest {
    fn accesses(&self) -> Accesses {
        let mut wanted = vec![key_access(Access::Write, &self.key)];
        if self.prev_kv {
            wanted.push(key_access(Access::Read, &self.key));
        }
        wanted
    }
}

impl RequestAccesses for pb::GetRequest {
    fn accesses(&self) -> Accesses {
        vec![key_access(Access::Read, &self.key)]
    }
}

impl RequestAccesses for pb::RangeRequest {
    /// The whole range asked for, whatever page: a range is refused unless all of it may be
    /// read, never filtered (D86).
    fn accesses(&self) -> Accesses {
        let range = if !self.prefix.is_empty() {
            KeyRange::prefix(&self.prefix)
        } else {
            KeyRange {
                start: self.start.clone(),
                end: (!self.end.is_empty()).then(|| self.end.clone()),
            }
        };
        vec![(Access::Read, range)]
    }
}

impl RequestAccesses for pb::TxnRequest {
    fn accesses(&self) -> Accesses {
        let mut wanted: Accesses = self
            .compare
            .iter()
            .map(|compare| key_access(Access::Read, &compare.key))
            .collect();
        for op in self.success.iter().chain(&self.failure) {
            match &op.request {
                Some(pb::request_op::Request::Put(put)) => wanted.extend(put.accesses()),
                Some(pb::request_op::Request::Get(get)) => wanted.extend(get.accesses()),
                Some(pb::request_op::Request::Delete(delete)) => wanted.extend(delete.accesses()),
                Some(pb::request_op::Request::Range(range)) => wanted.extend(range.accesses()),
                None => {}
            }
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(request: pb::request_op::Request) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request),
        }
    }

    #[test]
    fn a_transaction_needs_every_key_of_both_branches_and_its_comparisons() {
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![op(pb::request_op::Request::Put(pb::PutRequest {
                key: b"s".to_vec(),
                ..Default::default()
            }))],
            failure: vec![op(pb::request_op::Request::Range(pb::RangeRequest {
                prefix: b"f/".to_vec(),
                ..Default::default()
            }))],
            write_id: None,
        };
        assert_eq!(
            txn.accesses(),
            vec![
                (Access::Read, KeyRange::key(b"c")),
                (Access::Write, KeyRange::key(b"s")),
                (Access::Read, KeyRange::prefix(b"f/")),
            ]
        );
    }

    #[test]
    fn returning_a_previous_value_needs_read() {
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            prev_kv: true,
            ..Default::default()
        };
        assert!(put
            .accesses()
            .contains(&(Access::Read, KeyRange::key(b"k"))));
        let range = pb::RangeRequest::default();
        assert_eq!(
            range.accesses(),
            vec![(
                Access::Read,
                KeyRange {
                    start: vec![],
                    end: None
                }
            )]
        );
    }
}
