//! The gateway's public requests and the node answers it reads (crates/gateway: kv_service,
//! txn/plan.rs, txn/bounds.rs, auth/accesses.rs, node_stream.rs, error.rs): a client's request
//! decoded from protobuf, checked as the KV service checks it before anything reaches a node
//! (reserved keys, range bounds, a transaction's form and path, the accesses the permission
//! check asks for) and turned into the op sent to a node; and a node's batch answer, its
//! errors read back as statuses with their details, and range pages merged.
//!
//! Holds: nothing panics; a range is cut to the user keys and resolves to the same bounds on
//! the gateway and on a node; a transaction the gateway accepts is refused by a node only for
//! a size limit or its write id; the path chosen puts every key on its shard; the op sent to a
//! node converts back, on the node, to the same shard and request; merged pages are sorted and
//! within their limit.
//!
//! Input: a kind byte, then a protobuf message: 0 `PutRequest`, 1 `DeleteRequest`,
//! 2 `GetRequest`, 3 `RangeRequest`, 4 `TxnRequest`, 5 a node's `BatchResponse`,
//! 6 `TxnResponse` (its range answers merged as pages).

#![no_main]

use cairn_fuzz::{decode_message, split_kind};
use cairn_gateway::auth::RequestAccesses;
use cairn_gateway::error::GatewayError;
use cairn_gateway::kv_service::{merge_pages, ShardRequest};
use cairn_gateway::txn::bounds::{keep_to_user_keys, KeyRange};
use cairn_gateway::txn::plan::{self, choose_path, Path};
use cairn_gateway::txn::TxnConfig;
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_proto::node::v1::batch_item_result::Result as ItemResult;
use cairn_raft::convert::{InvalidRequest, RequestValidator};
use cairn_storage_node::shard_call::ShardCall;
use cairn_types::{reserved, sharding, Limits, ShardId};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Status};

const RANGE_KEYS_MAX: u64 = 10_000;

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    match kind {
        0 => single::<pb::PutRequest>(bytes),
        1 => single::<pb::DeleteRequest>(bytes),
        2 => single::<pb::GetRequest>(bytes),
        3 => {
            if let Some(request) = decode_message::<pb::RangeRequest>(bytes) {
                range(request);
            }
        }
        4 => {
            if let Some(request) = decode_message::<pb::TxnRequest>(bytes) {
                txn(request);
            }
        }
        5 => {
            if let Some(response) = decode_message::<node_pb::BatchResponse>(bytes) {
                for result in response.results {
                    node_answer(result.result);
                }
            }
        }
        6 => {
            if let Some(response) = decode_message::<pb::TxnResponse>(bytes) {
                merge(response);
            }
        }
        _ => {}
    }
});

/// A put, delete or get: one key, which picks the shard.
fn single<R>(bytes: &[u8])
where
    R: ShardRequest + RequestAccesses + Message + Default + PartialEq + std::fmt::Debug,
    node_pb::shard_op::Op: IntoShardCall<R>,
{
    let Some(request) = decode_message::<R>(bytes) else {
        return;
    };
    assert!(!request.accesses().is_empty());
    let Ok(keys) = request.keys() else {
        return;
    };
    assert_eq!(keys.len(), 1);
    assert!(!keys[0].is_empty() && !reserved::is_reserved(keys[0]));
    sent_to_node(request);
}

/// What a node makes of the op the gateway sends it for `request`: the same shard and request.
fn sent_to_node<R>(request: R)
where
    R: ShardRequest + PartialEq + std::fmt::Debug,
    node_pb::shard_op::Op: IntoShardCall<R>,
{
    let target = node_pb::ShardTarget {
        shard_id: 3,
        epoch: 7,
    };
    let op = request.clone().into_op(target);
    let op = node_pb::ShardOp::decode(node_pb::ShardOp { op: Some(op) }.encode_to_vec().as_slice())
        .expect("an op the gateway encodes decodes")
        .op
        .expect("the op is set");
    let call = op
        .into_shard_call()
        .expect("the node reads the gateway's op");
    assert_eq!((call.shard, call.epoch), (ShardId(3), 7));
    assert_eq!(call.request, request);
}

/// The node's conversion of each kind of op (crates/storage-node/src/shard_call.rs).
trait IntoShardCall<R> {
    fn into_shard_call(self) -> Option<ShardCall<R>>;
}

macro_rules! into_shard_call {
    ($($kind:ident => $request:ty),*) => {$(
        impl IntoShardCall<$request> for node_pb::shard_op::Op {
            fn into_shard_call(self) -> Option<ShardCall<$request>> {
                match self {
                    node_pb::shard_op::Op::$kind(message) => ShardCall::try_from(message).ok(),
                    _ => None,
                }
            }
        }
    )*};
}

into_shard_call!(
    Put => pb::PutRequest,
    Delete => pb::DeleteRequest,
    Get => pb::GetRequest,
    Txn => pb::TxnRequest
);

fn node_validator() -> RequestValidator {
    RequestValidator::new(Limits {
        range_keys_max: RANGE_KEYS_MAX,
        ..Limits::default()
    })
}

fn range(mut request: pb::RangeRequest) {
    if keep_to_user_keys(&mut request).is_err() {
        return;
    }
    assert!(!request.accesses().is_empty());
    let bounds = KeyRange::of(&request);
    let end = bounds
        .end
        .as_deref()
        .expect("a client's range ends where the reserved keys begin");
    assert!(
        end <= reserved::RESERVED_PREFIX,
        "the range stays out of the reserved keys"
    );
    // The node resolves the bounds the gateway forwards to the same keys.
    if let Ok(node_range) = node_validator().range(&request) {
        assert_eq!(
            (node_range.start, node_range.end),
            (bounds.start, bounds.end)
        );
    }
}

fn txn(mut request: pb::TxnRequest) {
    if plan::keep_ranges_to_user_keys(&mut request).is_err() {
        return;
    }
    let _ = request.accesses();
    let _ = plan::record_key(&request);
    let config = TxnConfig::default();
    if plan::validate(&request, &config, RANGE_KEYS_MAX).is_err() {
        return;
    }
    // What the gateway accepts, a node accepts too, but for the sizes only nodes check and
    // the write id, which the node checks (the gateway passes a client's on unchanged).
    if let Err(refusal) = node_validator().txn(&request) {
        match refusal {
            InvalidRequest::Limit(_) => {}
            InvalidRequest::Field { field, .. } => assert!(
                field.starts_with("write_id"),
                "a node refuses a transaction the gateway accepted: {refusal}"
            ),
        }
    }
    let point_keys = plan::point_keys(&request);
    for shard_count in [1, 4] {
        let shard_of = |key: &[u8]| sharding::shard_for_key(key, shard_count);
        match choose_path(&request, shard_count, shard_of) {
            Ok(Path::OnePhase(shard)) => {
                assert!(point_keys
                    .iter()
                    .all(|key| shard_count == 1 || shard_of(key) == shard));
                if request.keys().is_ok() {
                    sent_to_node(request.clone());
                }
            }
            Ok(Path::TwoPhase { shards }) => {
                assert!(shard_count > 1);
                assert!(point_keys.iter().all(|key| shards.contains(&shard_of(key))));
            }
            Err(_) => assert!(point_keys.is_empty()),
        }
    }
}

/// A node's answer to one item, as the gateway's node stream and router read it.
fn node_answer(result: Option<ItemResult>) {
    let Some(result) = result else {
        return;
    };
    let ItemResult::Error(error) = result else {
        return;
    };
    let status = Status::with_details(
        Code::from_i32(error.code),
        error.message,
        error.details.into(),
    );
    let _ = cairn_proto::retry::classify(&status);
    let _ = cairn_proto::retry::never_sent(&status);
    let _ = cairn_proto::status::detail_of(&status);
    let _ = cairn_proto::addressing::wrong_node_of(&status);
    let error = GatewayError::from(status);
    let _ = (
        error.key_locked(),
        error.as_conflict(),
        error.rolled_back(),
        error.txn_not_found(),
    );
    let _ = Status::from(error);
}

fn merge(response: pb::TxnResponse) {
    let pages: Vec<pb::RangeResponse> = response
        .responses
        .into_iter()
        .filter_map(|op| match op.response {
            Some(pb::response_op::Response::Range(page)) => Some(page),
            _ => None,
        })
        .collect();
    let limit = (response.revision % 8) as usize;
    for count_only in [false, true] {
        let merged = merge_pages(pages.clone(), limit, count_only);
        if count_only {
            continue;
        }
        assert!(merged.kvs.len() <= limit);
        assert!(merged.kvs.windows(2).all(|pair| pair[0].key <= pair[1].key));
        assert_eq!(merged.count, merged.kvs.len() as u64);
        if merged.more {
            assert_eq!(
                merged.continuation,
                merged
                    .kvs
                    .last()
                    .map(|kv| kv.key.clone())
                    .unwrap_or_default()
            );
        }
    }
}
