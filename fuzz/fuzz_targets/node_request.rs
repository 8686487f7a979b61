//! A storage node's internal requests (crates/storage-node/src/shard_call.rs, batch.rs,
//! crates/raft/src/convert.rs, convert_txn.rs): what gateways send to `cairn.node.v1.ShardKv`,
//! decoded from protobuf, split into shard and request (`ShardCall`), and validated into the
//! command a shard would propose (`RequestValidator`), under the default limits and under
//! tight ones.
//!
//! Holds: nothing panics; a refusal maps to a status; a validated write keeps to the limits
//! and its command survives the Raft log's encoding unchanged; a remembered transaction
//! result converts back to the response it came from.
//!
//! Input: a kind byte, then a protobuf message: 0 `BatchRequest` (put, get, delete and txn
//! items, with their `traceparent`), 1 `ShardRangeRequest`, 2 `PrewriteRequest`,
//! 3 `CommitRequest`, 4 `RollbackRequest`, 5 `ResolveLocksRequest`, 6 `CheckTxnStatusRequest`,
//! 7 `ScanLocksRequest`, 8 `cairn.kv.v1.TxnResponse` (a commit's remembered result), 9 the
//! destination headers of an internal call (`cairn_proto::addressing`: node, a 0 byte, cluster).

#![no_main]

use cairn_fuzz::{assert_payload_stable, decode_message, split_kind};
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::shard_op::Op;
use cairn_raft::command::{Command, CommandRevision, TxnOp, WriteId, WriteOp};
use cairn_raft::convert::{InvalidRequest, RequestValidator};
use cairn_raft::convert_txn::txn_result;
use cairn_storage_node::error::NodeError;
use cairn_storage_node::shard_call::{ShardCall, WriteRequest};
use cairn_trace_context::TraceParent;
use cairn_types::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    let validators = [
        RequestValidator::new(Limits::default()),
        RequestValidator::new(Limits {
            key_bytes_max: 4,
            value_bytes_max: 8,
            txn_ops_max: 3,
            request_bytes_max: 64,
            range_keys_max: 2,
        }),
    ];
    for validator in &validators {
        match kind {
            0 => {
                if let Some(batch) = decode_message::<node_pb::BatchRequest>(bytes) {
                    for item in batch.items {
                        let trace = TraceParent::parse(&item.traceparent);
                        if let Some(parent) = trace {
                            assert_eq!(TraceParent::parse(&parent.to_string()), trace);
                        }
                        batch_op(validator, item.op.and_then(|op| op.op), trace);
                    }
                }
            }
            1 => {
                if let Some(call) = shard_call::<_, pb::RangeRequest>(decode_message::<
                    node_pb::ShardRangeRequest,
                >(bytes))
                {
                    if let Ok(range) = refused(validator.range(&call.request)) {
                        let limits = &validator.limits;
                        assert!(range.limit >= 1 && range.limit <= limits.range_keys_max);
                    }
                }
            }
            2 => txn_call(validator, bytes, RequestValidator::prewrite),
            3 => txn_call(validator, bytes, RequestValidator::commit),
            4 => txn_call(validator, bytes, RequestValidator::rollback),
            5 => txn_call(validator, bytes, RequestValidator::resolve_locks),
            6 => txn_call(validator, bytes, RequestValidator::check_txn_status),
            7 => drop(shard_call::<_, node_pb::ScanLocksRequest>(
                decode_message::<node_pb::ScanLocksRequest>(bytes),
            )),
            8 => {
                if let Some(response) = decode_message::<pb::TxnResponse>(bytes) {
                    if let Ok(result) = txn_result(&response) {
                        assert_eq!(pb::TxnResponse::from(result), response);
                    }
                }
            }
            9 => destination(bytes),
            _ => {}
        }
    }
});

/// The destination headers every internal call carries (`cairn_proto::addressing`): the
/// input up to its first 0 byte is the node header's value, the rest the cluster header's.
fn destination(bytes: &[u8]) {
    use cairn_proto::addressing::{check, Identity, CLUSTER_ID_HEADER, DESTINATION_NODE_HEADER};
    use tonic::metadata::{MetadataMap, MetadataValue};
    let (node, cluster) = match bytes.iter().position(|&byte| byte == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    let mut metadata = MetadataMap::new();
    for (header, value) in [
        (DESTINATION_NODE_HEADER, node),
        (CLUSTER_ID_HEADER, cluster),
    ] {
        if let Ok(value) = MetadataValue::try_from(value) {
            if !value.is_empty() {
                metadata.insert(header, value);
            }
        }
    }
    let me = Identity {
        node_id: 7,
        cluster_id: "cluster-a".into(),
    };
    for body_node_id in [0, 7, 8] {
        match check(&metadata, body_node_id, &me) {
            Ok(()) => assert!(body_node_id == 0 || body_node_id == me.node_id),
            Err(wrong) => drop(tonic::Status::from(wrong)),
        }
    }
}

/// The shard call of `message`, or `None` when the message did not decode or is refused
/// (with a status, as the service would answer).
fn shard_call<M, R>(message: Option<M>) -> Option<ShardCall<R>>
where
    M: TryInto<ShardCall<R>, Error = NodeError>,
{
    match message?.try_into() {
        Ok(call) => Some(call),
        Err(error) => {
            let _ = tonic::Status::from(error);
            None
        }
    }
}

/// `result`, its refusal turned into the status the service answers with.
fn refused<T>(result: Result<T, InvalidRequest>) -> Result<T, ()> {
    result.map_err(|error| drop(tonic::Status::from(NodeError::from(error))))
}

fn batch_op(validator: &RequestValidator, op: Option<Op>, trace: Option<TraceParent>) {
    match op {
        Some(Op::Put(message)) => write(
            validator,
            shard_call::<_, pb::PutRequest>(Some(message)),
            trace,
        ),
        Some(Op::Delete(message)) => write(
            validator,
            shard_call::<_, pb::DeleteRequest>(Some(message)),
            trace,
        ),
        Some(Op::Txn(message)) => write(
            validator,
            shard_call::<_, pb::TxnRequest>(Some(message)),
            trace,
        ),
        Some(Op::Get(message)) => {
            if let Some(call) = shard_call::<_, pb::GetRequest>(Some(message)) {
                if let Ok(get) = refused(validator.get(&call.request)) {
                    assert!(!get.key.is_empty());
                    assert!(validator.limits.check_key(&get.key).is_ok());
                }
            }
        }
        None => {}
    }
}

fn write<R: WriteRequest>(
    validator: &RequestValidator,
    call: Option<ShardCall<R>>,
    trace: Option<TraceParent>,
) {
    let Some(call) = call else {
        return;
    };
    if let Ok((write_id, op)) = refused(call.request.command(validator)) {
        check_write(validator, write_id, op, trace);
    }
}

fn txn_call<M>(
    validator: &RequestValidator,
    bytes: &[u8],
    validate: fn(&RequestValidator, &M) -> Result<WriteOp, InvalidRequest>,
) where
    M: prost::Message
        + Default
        + PartialEq
        + std::fmt::Debug
        + TryInto<ShardCall<M>, Error = NodeError>,
{
    if let Some(call) = shard_call::<M, M>(decode_message::<M>(bytes)) {
        if let Ok(op) = refused(validate(validator, &call.request)) {
            assert!(op.is_txn_command());
            check_write(validator, None, op, None);
        }
    }
}

/// What every validated write must be: keys not empty and within the limit, values within
/// theirs, and a command that the Raft log stores and reads back unchanged.
fn check_write(
    validator: &RequestValidator,
    write_id: Option<WriteId>,
    op: WriteOp,
    trace: Option<TraceParent>,
) {
    let limits = &validator.limits;
    let key_ok = |key: &[u8]| !key.is_empty() && limits.check_key(key).is_ok();
    match &op {
        WriteOp::Put(put) => {
            assert!(key_ok(&put.key));
            assert!(limits.check_value(&put.value).is_ok());
        }
        WriteOp::Delete(delete) => assert!(key_ok(&delete.key)),
        WriteOp::Txn(txn) => {
            let ops = txn.compares.len() + txn.success.len() + txn.failure.len();
            assert!(limits.check_txn_ops(ops).is_ok());
            for op in txn.success.iter().chain(&txn.failure) {
                match op {
                    TxnOp::Put(put) => assert!(key_ok(&put.key) && put.condition.is_none()),
                    TxnOp::Delete(delete) => assert!(key_ok(&delete.key)),
                    TxnOp::Get(get) => assert!(key_ok(&get.key)),
                    TxnOp::Range(range) => assert!(range.limit >= 1),
                }
            }
        }
        WriteOp::Prewrite(prewrite) => {
            assert!(key_ok(&prewrite.primary));
            assert!(!prewrite.mutations.is_empty());
            assert!(prewrite
                .mutations
                .iter()
                .all(|mutation| key_ok(&mutation.key)));
        }
        WriteOp::Commit(commit) => {
            assert!(commit.commit_ts > commit.start_ts);
            assert!(!commit.keys.is_empty() && commit.keys.iter().all(|key| key_ok(key)));
        }
        _ => {}
    }
    if let Some(write_id) = write_id {
        assert!(write_id.first_incomplete <= write_id.sequence);
    }
    let command = Command {
        write_id,
        proposed_at_ms: 1,
        op,
        revision: CommandRevision::Counted,
        trace,
    };
    let _ = command.to_string();
    assert_payload_stable(&command);
    let encoded = cairn_raft::network::encode_payload(&command);
    let decoded: Command =
        cairn_raft::network::decode_payload(cairn_raft::network::ENCODING_POSTCARD, &encoded)
            .expect("a command decodes");
    assert_eq!(
        decoded, command,
        "a command survives the Raft log's encoding"
    );
}
