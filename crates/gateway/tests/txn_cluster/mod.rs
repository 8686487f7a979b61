//! The cluster and the small request builders the cross-shard transaction tests share: a
//! 3-node, 4-shard cluster with short lock lifetimes, keys placed on chosen shards, and what the
//! nodes hold (every lock, asked of each shard's leader).

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::kv::v1::request_op::Request;
use cairn_proto::kv::v1::response_op::Response;
use cairn_proto::node::v1 as node_pb;
use cairn_test_harness::{error_detail, shard_target, wait_for, Cluster, ClusterSpec};
use cairn_types::ShardId;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
pub const WAIT: Duration = Duration::from_secs(90);
pub const SHARDS: u32 = 4;
/// Short lock lifetimes, so that the test waits seconds, not the defaults' five.
pub const LOCK_TTL_MS: u64 = 2_000;
pub const LOCK_SCAN_INTERVAL_MS: u64 = 1_000;
/// Lock TTL + scan interval + a generous round: the bound on a dead gateway's locks.
pub const RESOLVED_WITHIN: Duration =
    Duration::from_millis(LOCK_TTL_MS + LOCK_SCAN_INTERVAL_MS + 5_000);
pub const PAUSE_BEFORE_PREWRITE_MS: &str = "3000";
/// Past `LOCK_TTL_MS` (another party may roll the paused transaction back), and long enough
/// for a test to see the pause in the gateway's log and act while it lasts.
pub const PAUSE_AFTER_PREWRITE_MS: &str = "3000";
/// A lock TTL well past `PAUSE_AFTER_PREWRITE_MS`, for a gateway whose paused transaction
/// nobody may roll back.
pub const LONG_LOCK_TTL_MS: &str = "20000";

pub async fn start() -> Cluster {
    start_with(&[]).await
}

/// The cluster, every process with `env` too.
pub async fn start_with(env: &[(&str, &str)]) -> Cluster {
    let ttl = LOCK_TTL_MS.to_string();
    let scan = LOCK_SCAN_INTERVAL_MS.to_string();
    let cluster = ClusterSpec::new(Path::new(GATEWAY))
        .nodes(3)
        .shards(SHARDS)
        .gateways(1)
        .env(env)
        .gateway_env(&[
            ("CAIRN_TXN__LOCK_TTL_MS", ttl.as_str()),
            ("CAIRN_TXN__LOCK_SCAN_INTERVAL_MS", scan.as_str()),
        ])
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    cluster
}

pub fn shard(key: &str) -> ShardId {
    cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS)
}

/// A key with `prefix` in a shard other than those of `others`.
pub fn key_elsewhere(prefix: &str, others: &[&str]) -> String {
    (0..1000)
        .map(|i| format!("{prefix}{i}"))
        .find(|key| others.iter().all(|other| shard(other) != shard(key)))
        .expect("a key in another shard")
}

pub fn put_op(key: &str, value: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

pub fn get_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Get(pb::GetRequest {
            key: key.into(),
            ..Default::default()
        })),
    }
}

pub fn prefix_op(prefix: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Request::Range(pb::RangeRequest {
            prefix: prefix.into(),
            ..Default::default()
        })),
    }
}

pub fn value_is(key: &str, value: &str) -> pb::Compare {
    pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.into(),
        target: Some(pb::compare::Target::Value(value.into())),
    }
}

pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    kv.put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .revision
}

pub async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<pb::KeyValue> {
    kv.get(pb::GetRequest {
        key: key.into(),
        ..Default::default()
    })
    .await
    .expect("get")
    .into_inner()
    .kv
}

pub fn get_response(response: &pb::ResponseOp) -> Option<&pb::KeyValue> {
    match &response.response {
        Some(Response::Get(get)) => get.kv.as_ref(),
        other => panic!("not a get response: {other:?}"),
    }
}

pub fn range_keys(response: &pb::ResponseOp) -> Vec<(String, String)> {
    match &response.response {
        Some(Response::Range(range)) => range
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key.clone()).unwrap(),
                    String::from_utf8(kv.value.clone()).unwrap(),
                )
            })
            .collect(),
        other => panic!("not a range response: {other:?}"),
    }
}

/// The key a `Conflict` answer names.
pub fn conflict_key(status: &tonic::Status) -> String {
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    match error_detail(status) {
        Some(Kind::Conflict(conflict)) => String::from_utf8(conflict.key).unwrap(),
        other => panic!("not a conflict: {other:?} ({status:?})"),
    }
}

/// Waits until gateway `number`'s log shows `text`.
pub async fn wait_for_log(cluster: &Cluster, number: u64, text: &str) {
    let path = cluster.gateway(number).log_path.clone();
    wait_for(&format!("gateway {number} to log {text:?}"), WAIT, || {
        let path = path.clone();
        async move {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|log| log.contains(text))
                .map(|_| ())
        }
    })
    .await;
}

/// Every lock on every shard, asked of each shard's leader.
pub async fn locks_in_cluster(cluster: &Cluster) -> Option<Vec<pb::KeyLocked>> {
    let mut all = Vec::new();
    for shard in (0..u64::from(SHARDS)).map(ShardId) {
        let leader = cluster.leader_of(shard).await?;
        let mut client = cluster.kv(leader).await?;
        let page = client
            .scan_locks(node_pb::ScanLocksRequest {
                target: Some(shard_target(shard)),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        all.extend(page.locks);
    }
    Some(all)
}
