//! Conversions between `cairn.kv.v1` protobuf messages and the domain commands, with every
//! request validated here, on receive: limits enforced, fields checked, prefixes resolved.

use crate::command::*;
use cairn_proto::kv::v1 as pb;
use cairn_types::{ClientId, LimitError, Limits, Sequence};

/// Why a request was refused before reaching Raft.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("invalid {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest::Field {
        field,
        reason: reason.into(),
    }
}

/// Reads inside a transaction see the state the transaction applies to; a revision of their
/// own would read another moment.
fn no_revision_in_txn(revision: u64) -> Result<(), InvalidRequest> {
    if revision != 0 {
        return Err(invalid(
            "revision",
            "a read inside a transaction reads the transaction's state; leave revision 0",
        ));
    }
    Ok(())
}

/// Validates requests against the configured limits.
#[derive(Clone, Debug)]
pub struct RequestValidator {
    pub limits: Limits,
}

impl RequestValidator {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    fn key(&self, field: &'static str, key: &[u8]) -> Result<(), InvalidRequest> {
        if key.is_empty() {
            return Err(invalid(field, "key must not be empty"));
        }
        Ok(self.limits.check_key(key)?)
    }

    pub fn write_id(
        &self,
        write_id: Option<&pb::WriteId>,
    ) -> Result<Option<WriteId>, InvalidRequest> {
        let Some(write_id) = write_id else {
            return Ok(None);
        };
        if write_id.client_id == 0 {
            return Err(invalid("write_id.client_id", "must not be 0"));
        }
        if write_id.sequence == 0 {
            return Err(invalid("write_id.sequence", "must be at least 1"));
        }
        if write_id.first_incomplete_sequence > write_id.sequence {
            return Err(invalid(
                "write_id.first_incomplete_sequence",
                "must not be above sequence",
            ));
        }
        Ok(Some(WriteId {
            client: ClientId(write_id.client_id),
            sequence: Sequence(write_id.sequence),
            first_incomplete: Sequence(write_id.first_incomplete_sequence),
        }))
    }

    pub fn put(&self, request: &pb::PutRequest) -> Result<Put, InvalidRequest> {
        self.key("key", &request.key)?;
        self.limits.check_value(&request.value)?;
        let condition = match request
            .condition
            .as_ref()
            .and_then(|c| c.condition.as_ref())
        {
            None => None,
            Some(pb::put_condition::Condition::Absent(true)) => Some(PutCondition::Absent),
            Some(pb::put_condition::Condition::Absent(false)) => None,
            Some(pb::put_condition::Condition::ValueEquals(value)) => {
                self.limits.check_value(value)?;
                Some(PutCondition::ValueEquals(value.clone()))
            }
            Some(pb::put_condition::Condition::VersionEquals(version)) => {
                Some(PutCondition::VersionEquals(*version))
            }
            Some(pb::put_condition::Condition::ModRevisionEquals(revision)) => {
                Some(PutCondition::ModRevisionEquals(*revision))
            }
        };
        Ok(Put {
            key: request.key.clone(),
            value: request.value.clone(),
            prev_kv: request.prev_kv,
            condition,
        })
    }

    pub fn put_command(
        &self,
        request: &pb::PutRequest,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        Ok((
            self.write_id(request.write_id.as_ref())?,
            WriteOp::Put(self.put(request)?),
        ))
    }

    pub fn delete(&self, request: &pb::DeleteRequest) -> Result<Delete, InvalidRequest> {
        self.key("key", &request.key)?;
        Ok(Delete {
            key: request.key.clone(),
            prev_kv: request.prev_kv,
        })
    }

    pub fn delete_command(
        &self,
        request: &pb::DeleteRequest,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        Ok((
            self.write_id(request.write_id.as_ref())?,
            WriteOp::Delete(self.delete(request)?),
        ))
    }

    pub fn get(&self, request: &pb::GetRequest) -> Result<Get, InvalidRequest> {
        self.key("key", &request.key)?;
        Ok(Get {
            key: request.key.clone(),
            keys_only: request.keys_only,
        })
    }

    /// Resolves prefix / start-end / continuation into one `[start, end)` range.
    pub fn range(&self, request: &pb::RangeRequest) -> Result<Range, InvalidRequest> {
        for (field, bytes) in [
            ("start", &request.start),
            ("end", &request.end),
            ("prefix", &request.prefix),
            ("continuation", &request.continuation),
        ] {
            if !bytes.is_empty() {
                self.limits
                    .check_key(bytes)
                    .map_err(InvalidRequest::Limit)?;
                let _ = field;
            }
        }
        let (mut start, end) = if !request.prefix.is_empty() {
            (request.prefix.clone(), prefix_end(&request.prefix))
        } else {
            let end = (!request.end.is_empty()).then(|| request.end.clone());
            if let Some(end) = &end {
                if end < &request.start {
                    return Err(invalid("end", "must not sort before start"));
                }
            }
            (request.start.clone(), end)
        };
        if !request.continuation.is_empty() {
            // Resume strictly after the last key of the previous page: the smallest key
            // greater than it is the key followed by a zero byte.
            let mut after = request.continuation.clone();
            after.push(0);
            if after > start {
                start = after;
            }
        }
        let limit = match request.limit {
            0 => self.limits.range_keys_max,
            limit => {
                self.limits.check_range_keys(limit)?;
                limit
            }
        };
        Ok(Range {
            start,
            end,
            limit,
            keys_only: request.keys_only,
            count_only: request.count_only,
        })
    }

    pub fn txn(
        &self,
        request: &pb::TxnRequest,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        let ops = request.compare.len() + request.success.len() + request.failure.len();
        self.limits.check_txn_ops(ops)?;
        let compares = request
            .compare
            .iter()
            .map(|compare| self.compare(compare))
            .collect::<Result<Vec<_>, _>>()?;
        let success = self.txn_ops("success", &request.success)?;
        let failure = self.txn_ops("failure", &request.failure)?;
        Ok((
            self.write_id(request.write_id.as_ref())?,
            WriteOp::Txn(Txn {
                compares,
                success,
                failure,
            }),
        ))
    }

    fn compare(&self, compare: &pb::Compare) -> Result<Compare, InvalidRequest> {
        self.key("compare.key", &compare.key)?;
        let op = match pb::compare::Result::try_from(compare.result) {
            Ok(pb::compare::Result::Equal) => CompareOp::Equal,
            Ok(pb::compare::Result::NotEqual) => CompareOp::NotEqual,
            Ok(pb::compare::Result::Greater) => CompareOp::Greater,
            Ok(pb::compare::Result::Less) => CompareOp::Less,
            Err(_) => {
                return Err(invalid(
                    "compare.result",
                    format!("unknown value {}", compare.result),
                ))
            }
        };
        let target = match &compare.target {
            None => return Err(invalid("compare.target", "must be set")),
            Some(pb::compare::Target::Value(value)) => {
                self.limits.check_value(value)?;
                CompareTarget::Value(value.clone())
            }
            Some(pb::compare::Target::Version(v)) => CompareTarget::Version(*v),
            Some(pb::compare::Target::CreateRevision(r)) => CompareTarget::CreateRevision(*r),
            Some(pb::compare::Target::ModRevision(r)) => CompareTarget::ModRevision(*r),
        };
        Ok(Compare {
            key: compare.key.clone(),
            op,
            target,
        })
    }

    fn txn_ops(
        &self,
        field: &'static str,
        ops: &[pb::RequestOp],
    ) -> Result<Vec<TxnOp>, InvalidRequest> {
        let mut written = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            let op = match &op.request {
                None => return Err(invalid(field, "an op has no request set")),
                Some(pb::request_op::Request::Put(put)) => {
                    if put
                        .condition
                        .as_ref()
                        .and_then(|c| c.condition.as_ref())
                        .is_some()
                    {
                        return Err(invalid(
                            field,
                            "a put inside a transaction cannot carry a condition; use compare",
                        ));
                    }
                    TxnOp::Put(self.put(put)?)
                }
                Some(pb::request_op::Request::Delete(delete)) => {
                    TxnOp::Delete(self.delete(delete)?)
                }
                Some(pb::request_op::Request::Get(get)) => {
                    no_revision_in_txn(get.revision)?;
                    TxnOp::Get(self.get(get)?)
                }
                Some(pb::request_op::Request::Range(range)) => {
                    no_revision_in_txn(range.revision)?;
                    TxnOp::Range(self.range(range)?)
                }
            };
            if let TxnOp::Put(Put { key, .. }) | TxnOp::Delete(Delete { key, .. }) = &op {
                if !written.insert(key.clone()) {
                    return Err(invalid(
                        field,
                        "a transaction may write each key at most once",
                    ));
                }
            }
            out.push(op);
        }
        Ok(out)
    }
}

// ---- domain -> protobuf ----

impl From<KeyValue> for pb::KeyValue {
    fn from(kv: KeyValue) -> Self {
        pb::KeyValue {
            key: kv.key,
            create_revision: kv.create_revision.0,
            mod_revision: kv.mod_revision.0,
            version: kv.version,
            value: kv.value,
        }
    }
}

impl From<PutResult> for pb::PutResponse {
    fn from(result: PutResult) -> Self {
        pb::PutResponse {
            revision: result.revision.0,
            succeeded: result.succeeded,
            prev_kv: result.prev_kv.map(Into::into),
        }
    }
}

impl From<DeleteResult> for pb::DeleteResponse {
    fn from(result: DeleteResult) -> Self {
        pb::DeleteResponse {
            revision: result.revision.0,
            deleted: result.deleted,
            prev_kv: result.prev_kv.map(Into::into),
        }
    }
}

impl From<GetResult> for pb::GetResponse {
    fn from(result: GetResult) -> Self {
        pb::GetResponse {
            revision: result.revision.0,
            kv: result.kv.map(Into::into),
        }
    }
}

impl From<RangeResult> for pb::RangeResponse {
    fn from(result: RangeResult) -> Self {
        pb::RangeResponse {
            revision: result.revision.0,
            kvs: result.kvs.into_iter().map(Into::into).collect(),
            more: result.more,
            continuation: result.continuation.unwrap_or_default(),
            count: result.count,
        }
    }
}

impl From<TxnResult> for pb::TxnResponse {
    fn from(result: TxnResult) -> Self {
        pb::TxnResponse {
            revision: result.revision.0,
            succeeded: result.succeeded,
            responses: result
                .responses
                .into_iter()
                .map(|response| pb::ResponseOp {
                    response: Some(match response {
                        TxnOpResult::Put(put) => pb::response_op::Response::Put(put.into()),
                        TxnOpResult::Get(get) => pb::response_op::Response::Get(get.into()),
                        TxnOpResult::Delete(delete) => {
                            pb::response_op::Response::Delete(delete.into())
                        }
                        TxnOpResult::Range(range) => pb::response_op::Response::Range(range.into()),
                    }),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> RequestValidator {
        RequestValidator::new(Limits {
            key_bytes_max: 8,
            value_bytes_max: 16,
            txn_ops_max: 3,
            ..Limits::default()
        })
    }

    #[test]
    fn limits_are_named() {
        let v = validator();
        let err = v
            .put(&pb::PutRequest {
                key: vec![1; 9],
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            err,
            InvalidRequest::Limit(LimitError {
                limit: "key_bytes_max",
                max: 8,
                actual: 9
            })
        );
        let err = v
            .put(&pb::PutRequest {
                key: b"k".to_vec(),
                value: vec![0; 17],
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(
            err,
            InvalidRequest::Limit(LimitError {
                limit: "value_bytes_max",
                ..
            })
        ));
        let op = pb::RequestOp {
            request: Some(pb::request_op::Request::Get(pb::GetRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let err = v
            .txn(&pb::TxnRequest {
                success: vec![op; 4],
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(
            err,
            InvalidRequest::Limit(LimitError {
                limit: "txn_ops_max",
                ..
            })
        ));
    }

    #[test]
    fn empty_key_and_bad_write_id_are_refused() {
        let v = validator();
        assert!(v.get(&pb::GetRequest::default()).is_err());
        let write_id = pb::WriteId {
            client_id: 0,
            sequence: 1,
            first_incomplete_sequence: 0,
        };
        assert!(v.write_id(Some(&write_id)).is_err());
        let write_id = pb::WriteId {
            client_id: 1,
            sequence: 2,
            first_incomplete_sequence: 3,
        };
        assert!(v.write_id(Some(&write_id)).is_err());
    }

    #[test]
    fn prefix_and_continuation_resolve_to_a_range() {
        let v = validator();
        let range = v
            .range(&pb::RangeRequest {
                prefix: b"ab".to_vec(),
                continuation: b"abc".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(range.start, b"abc\0".to_vec());
        assert_eq!(range.end, Some(b"ac".to_vec()));
        assert_eq!(range.limit, Limits::default().range_keys_max);
    }

    #[test]
    fn duplicate_writes_in_a_txn_are_refused() {
        let v = validator();
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let err = v
            .txn(&pb::TxnRequest {
                success: vec![put.clone(), put],
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(
            err,
            InvalidRequest::Field {
                field: "success",
                ..
            }
        ));
    }
}
