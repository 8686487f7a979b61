//! Conversions of the transaction calls of `cairn.node.v1.ShardKv` (Prewrite, Commit,
//! Rollback, ResolveLocks, CheckTxnStatus) into their commands, validated on receive: keys
//! non-empty, distinct and within `limits.key_bytes_max`, values within
//! `limits.value_bytes_max`, at most `limits.txn_ops_max` keys per call (the whole request
//! is bounded by `limits.request_bytes_max` where it arrives), timestamps set and ordered.
//! Also the remembered `TxnResponse` of a primary's commit, protobuf to domain.

use crate::command::*;
use crate::convert::{InvalidRequest, RequestValidator};
use cairn_mvcc::{LockOp, Resolution};
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_types::Revision;
use std::collections::HashSet;

/// Longest lock TTL a prewrite may ask for, in milliseconds: a lock of a dead coordinator
/// blocks its keys (and compaction) this long.
pub const LOCK_TTL_MS_MAX: u64 = 10 * 60 * 1000;

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest::Field {
        field,
        reason: reason.into(),
    }
}

fn start_ts(start_ts: u64) -> Result<Revision, InvalidRequest> {
    if start_ts == 0 {
        return Err(invalid("start_ts", "must be set"));
    }
    Ok(Revision(start_ts))
}

impl RequestValidator {
    fn txn_key(&self, field: &'static str, key: &[u8]) -> Result<(), InvalidRequest> {
        if key.is_empty() {
            return Err(invalid(field, "key must not be empty"));
        }
        Ok(self.limits.check_key(key)?)
    }

    /// At least one key, at most `txn_ops_max`, each valid, none twice.
    fn txn_keys(&self, field: &'static str, keys: &[Vec<u8>]) -> Result<(), InvalidRequest> {
        if keys.is_empty() {
            return Err(invalid(field, "at least one key"));
        }
        self.limits.check_txn_ops(keys.len())?;
        let mut seen = HashSet::with_capacity(keys.len());
        for key in keys {
            self.txn_key(field, key)?;
            if !seen.insert(key.as_slice()) {
                return Err(invalid(field, "a key appears twice"));
            }
        }
        Ok(())
    }

    pub fn prewrite(&self, request: &node_pb::PrewriteRequest) -> Result<WriteOp, InvalidRequest> {
        let start_ts = start_ts(request.start_ts)?;
        self.txn_key("primary", &request.primary)?;
        if request.lock_ttl_ms == 0 || request.lock_ttl_ms > LOCK_TTL_MS_MAX {
            return Err(invalid(
                "lock_ttl_ms",
                format!("must be between 1 and {LOCK_TTL_MS_MAX}"),
            ));
        }
        let keys: Vec<Vec<u8>> = request.mutations.iter().map(|m| m.key.clone()).collect();
        self.txn_keys("mutations", &keys)?;
        let mut mutations = Vec::with_capacity(request.mutations.len());
        for mutation in &request.mutations {
            let op = match node_pb::txn_mutation::Op::try_from(mutation.op) {
                Ok(node_pb::txn_mutation::Op::Put) => {
                    self.limits.check_value(&mutation.value)?;
                    LockOp::Put {
                        value: mutation.value.clone(),
                    }
                }
                Ok(node_pb::txn_mutation::Op::Delete) => LockOp::Delete,
                Ok(node_pb::txn_mutation::Op::Read) => LockOp::Read,
                Err(_) => {
                    return Err(invalid(
                        "mutations.op",
                        format!("unknown value {}", mutation.op),
                    ))
                }
            };
            if !matches!(op, LockOp::Put { .. }) && !mutation.value.is_empty() {
                return Err(invalid("mutations.value", "only a put carries a value"));
            }
            mutations.push(TxnMutation {
                key: mutation.key.clone(),
                op,
            });
        }
        Ok(WriteOp::Prewrite(Prewrite {
            start_ts,
            primary: request.primary.clone(),
            lock_ttl_ms: request.lock_ttl_ms,
            mutations,
            write_id: self.write_id(request.write_id.as_ref())?,
        }))
    }

    pub fn commit(&self, request: &node_pb::CommitRequest) -> Result<WriteOp, InvalidRequest> {
        let start_ts = start_ts(request.start_ts)?;
        if request.commit_ts <= start_ts.0 {
            return Err(invalid("commit_ts", "must be above start_ts"));
        }
        self.txn_keys("keys", &request.keys)?;
        let write_id = self.write_id(request.write_id.as_ref())?;
        let remember = match (write_id, &request.result) {
            (None, None) => None,
            (Some(write_id), Some(result)) => Some((write_id, txn_result(result)?)),
            (Some(_), None) => return Err(invalid("result", "must be set with write_id")),
            (None, Some(_)) => return Err(invalid("write_id", "must be set with result")),
        };
        Ok(WriteOp::Commit(TxnCommit {
            start_ts,
            commit_ts: Revision(request.commit_ts),
            keys: request.keys.clone(),
            remember,
        }))
    }

    pub fn rollback(&self, request: &node_pb::RollbackRequest) -> Result<WriteOp, InvalidRequest> {
        let start_ts = start_ts(request.start_ts)?;
        self.txn_keys("keys", &request.keys)?;
        Ok(WriteOp::Rollback {
            start_ts,
            keys: request.keys.clone(),
        })
    }

    pub fn resolve_locks(
        &self,
        request: &node_pb::ResolveLocksRequest,
    ) -> Result<WriteOp, InvalidRequest> {
        let start_ts = start_ts(request.start_ts)?;
        self.txn_keys("keys", &request.keys)?;
        let resolution = match request.commit_ts {
            0 => Resolution::Rollback,
            commit_ts if commit_ts <= start_ts.0 => {
                return Err(invalid("commit_ts", "must be 0 or above start_ts"))
            }
            commit_ts => Resolution::Commit {
                commit_ts: Revision(commit_ts),
            },
        };
        Ok(WriteOp::ResolveLocks {
            start_ts,
            keys: request.keys.clone(),
            resolution,
        })
    }

    pub fn check_txn_status(
        &self,
        request: &node_pb::CheckTxnStatusRequest,
    ) -> Result<WriteOp, InvalidRequest> {
        let start_ts = start_ts(request.start_ts)?;
        self.txn_key("primary", &request.primary)?;
        Ok(WriteOp::CheckTxnStatus {
            primary: request.primary.clone(),
            start_ts,
            rollback_if_missing: request.rollback_if_missing,
        })
    }
}

fn key_value(kv: &pb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: Revision(kv.create_revision),
        mod_revision: Revision(kv.mod_revision),
        version: kv.version,
    }
}

/// The answer a primary's commit remembers, as the shard's sessions store answers.
pub fn txn_result(response: &pb::TxnResponse) -> Result<TxnResult, InvalidRequest> {
    let mut responses = Vec::with_capacity(response.responses.len());
    for op in &response.responses {
        responses.push(match &op.response {
            None => return Err(invalid("result.responses", "a response has nothing set")),
            Some(pb::response_op::Response::Put(put)) => TxnOpResult::Put(PutResult {
                revision: Revision(put.revision),
                succeeded: put.succeeded,
                prev_kv: put.prev_kv.as_ref().map(key_value),
            }),
            Some(pb::response_op::Response::Delete(delete)) => TxnOpResult::Delete(DeleteResult {
                revision: Revision(delete.revision),
                deleted: delete.deleted,
                prev_kv: delete.prev_kv.as_ref().map(key_value),
            }),
            Some(pb::response_op::Response::Get(get)) => TxnOpResult::Get(GetResult {
                revision: Revision(get.revision),
                kv: get.kv.as_ref().map(key_value),
            }),
            Some(pb::response_op::Response::Range(range)) => TxnOpResult::Range(RangeResult {
                revision: Revision(range.revision),
                kvs: range.kvs.iter().map(key_value).collect(),
                more: range.more,
                continuation: (!range.continuation.is_empty()).then(|| range.continuation.clone()),
                count: range.count,
            }),
        });
    }
    Ok(TxnResult {
        revision: Revision(response.revision),
        succeeded: response.succeeded,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::Limits;

    fn validator() -> RequestValidator {
        RequestValidator::new(Limits {
            key_bytes_max: 8,
            value_bytes_max: 16,
            txn_ops_max: 2,
            ..Limits::default()
        })
    }

    fn mutation(key: &str, op: node_pb::txn_mutation::Op, value: &str) -> node_pb::TxnMutation {
        node_pb::TxnMutation {
            key: key.into(),
            op: op as i32,
            value: value.into(),
        }
    }

    fn prewrite(mutations: Vec<node_pb::TxnMutation>) -> node_pb::PrewriteRequest {
        node_pb::PrewriteRequest {
            target: None,
            start_ts: 5,
            primary: b"a".to_vec(),
            lock_ttl_ms: 1000,
            mutations,
            write_id: None,
        }
    }

    #[test]
    fn a_prewrite_is_bounded_and_well_formed() {
        let v = validator();
        use node_pb::txn_mutation::Op;
        let good = v
            .prewrite(&prewrite(vec![
                mutation("a", Op::Put, "1"),
                mutation("b", Op::Read, ""),
            ]))
            .unwrap();
        let WriteOp::Prewrite(good) = good else {
            panic!("a prewrite")
        };
        assert_eq!(good.mutations[1].op, LockOp::Read);
        let too_many = v.prewrite(&prewrite(vec![
            mutation("a", Op::Put, "1"),
            mutation("b", Op::Read, ""),
            mutation("c", Op::Delete, ""),
        ]));
        assert!(matches!(
            too_many,
            Err(InvalidRequest::Limit(cairn_types::LimitError {
                limit: "txn_ops_max",
                ..
            }))
        ));
        let twice = v.prewrite(&prewrite(vec![
            mutation("a", Op::Put, "1"),
            mutation("a", Op::Delete, ""),
        ]));
        assert!(matches!(
            twice,
            Err(InvalidRequest::Field {
                field: "mutations",
                ..
            })
        ));
        let value_on_delete = v.prewrite(&prewrite(vec![mutation("a", Op::Delete, "x")]));
        assert!(value_on_delete.is_err());
        let long_value = v.prewrite(&prewrite(vec![mutation("a", Op::Put, &"x".repeat(17))]));
        assert!(long_value.is_err());
        let mut no_ttl = prewrite(vec![mutation("a", Op::Put, "1")]);
        no_ttl.lock_ttl_ms = 0;
        assert!(v.prewrite(&no_ttl).is_err());
        let mut no_start = prewrite(vec![mutation("a", Op::Put, "1")]);
        no_start.start_ts = 0;
        assert!(v.prewrite(&no_start).is_err());
    }

    #[test]
    fn a_commit_is_above_its_start_and_remembers_with_a_write_id_only() {
        let v = validator();
        let commit = |commit_ts, write_id: Option<pb::WriteId>, result| node_pb::CommitRequest {
            target: None,
            start_ts: 5,
            commit_ts,
            keys: vec![b"a".to_vec()],
            write_id,
            result,
        };
        assert!(v.commit(&commit(5, None, None)).is_err());
        assert!(v.commit(&commit(6, None, None)).is_ok());
        let write_id = pb::WriteId {
            client_id: 1,
            sequence: 1,
            first_incomplete_sequence: 1,
        };
        assert!(v.commit(&commit(6, Some(write_id), None)).is_err());
        let result = pb::TxnResponse {
            revision: 6,
            succeeded: true,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::Put(pb::PutResponse {
                    revision: 6,
                    succeeded: true,
                    prev_kv: None,
                })),
            }],
        };
        let WriteOp::Commit(TxnCommit {
            remember: Some((_, remembered)),
            ..
        }) = v
            .commit(&commit(6, Some(write_id), Some(result.clone())))
            .unwrap()
        else {
            panic!("a commit that remembers")
        };
        assert_eq!(pb::TxnResponse::from(remembered), result);
    }

    #[test]
    fn resolve_locks_with_commit_ts_zero_rolls_back() {
        let v = validator();
        let resolve = |commit_ts| node_pb::ResolveLocksRequest {
            target: None,
            start_ts: 5,
            keys: vec![b"a".to_vec()],
            commit_ts,
        };
        assert!(matches!(
            v.resolve_locks(&resolve(0)).unwrap(),
            WriteOp::ResolveLocks {
                resolution: Resolution::Rollback,
                ..
            }
        ));
        assert!(v.resolve_locks(&resolve(3)).is_err());
        assert!(matches!(
            v.resolve_locks(&resolve(9)).unwrap(),
            WriteOp::ResolveLocks {
                resolution: Resolution::Commit {
                    commit_ts: Revision(9)
                },
                ..
            }
        ));
    }
}
