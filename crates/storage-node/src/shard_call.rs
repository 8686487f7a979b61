//! A shard request as it arrives at the node, converted where it arrives (`TryFrom`): the
//! shard it names, the epoch its sender routed it by, and the request itself. Both parts of
//! the message must be set; a missing one is refused as INVALID_ARGUMENT naming the field,
//! never read as an empty request.
//!
//! Limits depend on the node's configuration, so the request's own fields are validated
//! next, by the `RequestValidator`, and a write becomes a command by [`WriteRequest`].

use crate::error::NodeError;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_raft::command::{WriteId, WriteOp, WriteResult};
use cairn_raft::convert::{InvalidRequest, RequestValidator};
use cairn_types::ShardId;

/// One request for one shard, both parts present.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardCall<R> {
    pub shard: ShardId,
    /// The shard's epoch in the sender's map; 0 skips the check.
    pub epoch: u64,
    pub request: R,
}

macro_rules! shard_call_from {
    ($($message:ty => $request:ty),* $(,)?) => {$(
        impl TryFrom<$message> for ShardCall<$request> {
            type Error = NodeError;

            fn try_from(message: $message) -> Result<Self, NodeError> {
                let target = message.target.ok_or_else(|| NodeError::missing("target"))?;
                let request = message.request.ok_or_else(|| NodeError::missing("request"))?;
                Ok(ShardCall {
                    shard: ShardId(target.shard_id),
                    epoch: target.epoch,
                    request,
                })
            }
        }
    )*};
}

shard_call_from!(
    node_pb::ShardPutRequest => pb::PutRequest,
    node_pb::ShardDeleteRequest => pb::DeleteRequest,
    node_pb::ShardTxnRequest => pb::TxnRequest,
    node_pb::ShardGetRequest => pb::GetRequest,
    node_pb::ShardRangeRequest => pb::RangeRequest,
);

macro_rules! shard_call_of_txn {
    ($($message:ty),* $(,)?) => {$(
        /// A transaction call names its shard beside its own fields: the request is the
        /// message itself, its target taken out.
        impl TryFrom<$message> for ShardCall<$message> {
            type Error = NodeError;

            fn try_from(mut message: $message) -> Result<Self, NodeError> {
                let target = message.target.take().ok_or_else(|| NodeError::missing("target"))?;
                Ok(ShardCall {
                    shard: ShardId(target.shard_id),
                    epoch: target.epoch,
                    request: message,
                })
            }
        }
    )*};
}

shard_call_of_txn!(
    node_pb::PrewriteRequest,
    node_pb::CommitRequest,
    node_pb::RollbackRequest,
    node_pb::CheckTxnStatusRequest,
    node_pb::ResolveLocksRequest,
    node_pb::ScanLocksRequest,
);

/// What the writes (put, delete, txn) differ in; the pipeline they share is
/// `KvService::serve_write`.
pub trait WriteRequest {
    type Response;
    /// Validates the request and turns it into the command the shard applies.
    fn command(
        &self,
        validator: &RequestValidator,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest>;
    /// The answer, when the result is of the request's kind (a write id reused for another
    /// kind of write gets the earlier write's result).
    fn answer(result: WriteResult) -> Option<Self::Response>;
}

impl WriteRequest for pb::PutRequest {
    type Response = pb::PutResponse;
    fn command(
        &self,
        validator: &RequestValidator,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        validator.put_command(self)
    }
    fn answer(result: WriteResult) -> Option<Self::Response> {
        match result {
            WriteResult::Put(result) => Some(result.into()),
            _ => None,
        }
    }
}

impl WriteRequest for pb::DeleteRequest {
    type Response = pb::DeleteResponse;
    fn command(
        &self,
        validator: &RequestValidator,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        validator.delete_command(self)
    }
    fn answer(result: WriteResult) -> Option<Self::Response> {
        match result {
            WriteResult::Delete(result) => Some(result.into()),
            _ => None,
        }
    }
}

impl WriteRequest for pb::TxnRequest {
    type Response = pb::TxnResponse;
    fn command(
        &self,
        validator: &RequestValidator,
    ) -> Result<(Option<WriteId>, WriteOp), InvalidRequest> {
        validator.txn(self)
    }
    fn answer(result: WriteResult) -> Option<Self::Response> {
        match result {
            WriteResult::Txn(result) => Some(result.into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Option<node_pb::ShardTarget> {
        Some(node_pb::ShardTarget {
            shard_id: 3,
            epoch: 7,
        })
    }

    fn missing_field(error: NodeError) -> &'static str {
        match error {
            NodeError::InvalidRequest(InvalidRequest::Field { field, .. }) => field,
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_message_converts() {
        let call = ShardCall::<pb::PutRequest>::try_from(node_pb::ShardPutRequest {
            target: target(),
            request: Some(pb::PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(call.shard, ShardId(3));
        assert_eq!(call.epoch, 7);
        assert_eq!(call.request.key, b"k");
    }

    #[test]
    fn a_missing_body_is_named_not_read_as_an_empty_key() {
        let missing = ShardCall::<pb::PutRequest>::try_from(node_pb::ShardPutRequest {
            target: target(),
            request: None,
        })
        .unwrap_err();
        assert_eq!(missing_field(missing), "request");
        let missing = ShardCall::<pb::GetRequest>::try_from(node_pb::ShardGetRequest {
            target: None,
            request: Some(pb::GetRequest::default()),
            own_start_ts: 0,
        })
        .unwrap_err();
        assert_eq!(missing_field(missing), "target");
        let status = tonic::Status::from(
            ShardCall::<pb::RangeRequest>::try_from(node_pb::ShardRangeRequest {
                target: target(),
                request: None,
                own_start_ts: 0,
            })
            .unwrap_err(),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: must be set");
    }
}
