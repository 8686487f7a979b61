//! What the gateway's single-shard requests (put, delete, get, txn) differ in: which keys pick
//! their shard, which replica serves them, whether they carry a write id, and how they travel
//! to a node. The pipeline they share is `KvService::serve`.

use super::target_for;
use crate::error::{GatewayError, Result};
use crate::router::Target;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_proto::node::v1::shard_op::Op;

/// Public (hidden from the docs) only for the fuzz target, which checks a request's
/// conversion into the op sent to a node; the pipeline is the only other user.
pub trait ShardRequest: Clone + Send + Sync + 'static {
    type Response: Send;
    /// The request's name in errors.
    const NAME: &'static str;
    /// The keys that pick the request's shard; refuses a request no shard can serve.
    fn keys(&self) -> Result<Vec<&[u8]>>;
    /// Which replica serves it: the leader, unless a read allows another.
    fn target(&self) -> Target {
        Target::Leader
    }
    /// The write id of a write; `None` for a read.
    fn write_id_mut(&mut self) -> Option<&mut Option<pb::WriteId>>;
    /// The request as one op for the shard `target` names.
    fn into_op(self, target: node_pb::ShardTarget) -> Op;
    /// The answer, or the result back when it is of another kind.
    fn response(result: ItemResult) -> std::result::Result<Self::Response, ItemResult>;
}

/// A single key: not empty, and not in the reserved key space.
fn key(key: &[u8]) -> Result<Vec<&[u8]>> {
    crate::txn::plan::user_key(key)?;
    Ok(vec![key])
}

/// The kind of a node's result, for an error that names it.
pub(crate) fn kind_of(result: &ItemResult) -> &'static str {
    match result {
        ItemResult::Put(_) => "put",
        ItemResult::Get(_) => "get",
        ItemResult::Delete(_) => "delete",
        ItemResult::Txn(_) => "txn",
        ItemResult::Error(_) => "error",
    }
}

/// One `ShardRequest` impl: `$kind` names both the node op (`Op::$kind` carrying a
/// `node_pb::$shard_request`) and the result it answers with (`ItemResult::$kind`), so only
/// what a request differs in is written out: its keys, its write id and, for a read, its
/// target.
macro_rules! shard_request {
    ($request:ty => $response:ty, $name:literal, $kind:ident($shard_request:ident) {
        $($differs:tt)*
    }) => {
        impl ShardRequest for $request {
            type Response = $response;
            const NAME: &'static str = $name;
            $($differs)*
            // A get carries more (`own_start_ts`, 0 for a plain request) than the others.
            #[allow(clippy::needless_update)]
            fn into_op(self, target: node_pb::ShardTarget) -> Op {
                Op::$kind(node_pb::$shard_request {
                    target: Some(target),
                    request: Some(self),
                    ..Default::default()
                })
            }
            fn response(result: ItemResult) -> std::result::Result<Self::Response, ItemResult> {
                match result {
                    ItemResult::$kind(response) => Ok(response),
                    other => Err(other),
                }
            }
        }
    };
}

shard_request!(pb::PutRequest => pb::PutResponse, "put", Put(ShardPutRequest) {
    fn keys(&self) -> Result<Vec<&[u8]>> {
        key(&self.key)
    }
    fn write_id_mut(&mut self) -> Option<&mut Option<pb::WriteId>> {
        Some(&mut self.write_id)
    }
});

shard_request!(pb::DeleteRequest => pb::DeleteResponse, "delete", Delete(ShardDeleteRequest) {
    fn keys(&self) -> Result<Vec<&[u8]>> {
        key(&self.key)
    }
    fn write_id_mut(&mut self) -> Option<&mut Option<pb::WriteId>> {
        Some(&mut self.write_id)
    }
});

shard_request!(pb::GetRequest => pb::GetResponse, "get", Get(ShardGetRequest) {
    fn keys(&self) -> Result<Vec<&[u8]>> {
        key(&self.key)
    }
    /// A read may be served by a follower, as its consistency and revision allow.
    fn target(&self) -> Target {
        target_for(self.consistency, self.revision)
    }
    fn write_id_mut(&mut self) -> Option<&mut Option<pb::WriteId>> {
        None
    }
});

shard_request!(pb::TxnRequest => pb::TxnResponse, "txn", Txn(ShardTxnRequest) {
    /// Every key the transaction names outside its ranges. Only a transaction the one-phase
    /// path chose comes here (`crate::txn::plan::choose_path`): its keys are of one shard,
    /// and it has a range op only when the cluster has one shard.
    fn keys(&self) -> Result<Vec<&[u8]>> {
        if self
            .success
            .iter()
            .chain(&self.failure)
            .any(|op| op.request.is_none())
        {
            return Err(GatewayError::invalid("txn", "an op has no request set"));
        }
        Ok(crate::txn::plan::point_keys(self))
    }
    fn write_id_mut(&mut self) -> Option<&mut Option<pb::WriteId>> {
        Some(&mut self.write_id)
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transactions_keys_leave_its_ranges_out() {
        let txn = pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(pb::request_op::Request::Range(pb::RangeRequest::default())),
                },
                pb::RequestOp {
                    request: Some(pb::request_op::Request::Get(pb::GetRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            ..Default::default()
        };
        assert_eq!(txn.keys().unwrap(), vec![b"k".as_slice()]);
        let empty_op = pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert!(matches!(
            empty_op.keys(),
            Err(GatewayError::InvalidArgument { field: "txn", .. })
        ));
    }

    #[test]
    fn an_empty_key_is_refused_before_routing() {
        let put = pb::PutRequest::default();
        assert!(matches!(
            put.keys(),
            Err(GatewayError::InvalidArgument { field: "key", .. })
        ));
        let get = pb::GetRequest {
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert_eq!(get.keys().unwrap(), vec![b"k".as_slice()]);
    }

    #[test]
    fn writes_carry_write_ids_and_reads_do_not() {
        assert!(pb::PutRequest::default().write_id_mut().is_some());
        assert!(pb::DeleteRequest::default().write_id_mut().is_some());
        assert!(pb::TxnRequest::default().write_id_mut().is_some());
        assert!(pb::GetRequest::default().write_id_mut().is_none());
    }

    #[test]
    fn an_answer_of_another_kind_is_given_back() {
        let other = ItemResult::Get(pb::GetResponse::default());
        let back = <pb::PutRequest as ShardRequest>::response(other).unwrap_err();
        assert_eq!(kind_of(&back), "get");
    }
}
