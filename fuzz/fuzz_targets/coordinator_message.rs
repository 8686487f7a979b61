//! The coordinator's decoders (crates/coordinator: heartbeat.rs, join.rs, persisted.rs): a
//! node's heartbeat and join request, converted and checked where they arrive, and a shard
//! record as the coordinator reads it back from its metadata (either layout, D52).
//!
//! Holds: nothing panics; a heartbeat that converts keeps its node, replicas and their shard
//! ids valid; a join names a known id, a well-formed token or neither; a shard record that
//! decodes is written and read back unchanged.
//!
//! Input: a kind byte, then 0 a `HeartbeatRequest`, 1 a `JoinClusterRequest` (protobuf), 2 a
//! stored shard record (as stored and as a valid frame's payload).

#![no_main]

use cairn_coordinator::heartbeat::Heartbeat;
use cairn_coordinator::join::{JoinKind, JOIN_TOKEN_BYTES_MAX};
use cairn_coordinator::persisted::{decode_shard_record, encode_shard_record};
use cairn_fuzz::{decode_message, split_kind};
use cairn_proto::coordinator::v1 as pb;
use cairn_types::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    match kind {
        0 => {
            if let Some(request) = decode_message::<pb::HeartbeatRequest>(bytes) {
                let replicas = request.replicas.len();
                let node = request.node_id;
                if let Ok(heartbeat) = Heartbeat::try_from(request) {
                    assert_eq!(heartbeat.node.0, node);
                    assert_ne!(node, 0);
                    assert_eq!(heartbeat.replicas.len(), replicas);
                    assert!(heartbeat
                        .replicas
                        .iter()
                        .all(|replica| replica.shard.is_valid()));
                    let _ = heartbeat.replicas.iter().map(|r| r.is_leader()).count();
                }
            }
        }
        1 => {
            if let Some(request) = decode_message::<pb::JoinClusterRequest>(bytes) {
                for cluster in ["", "cluster-a", request.cluster_id.as_str()] {
                    match JoinKind::of(&request, cluster) {
                        Ok(JoinKind::Known(node)) => assert_eq!(node.0, request.node_id),
                        Ok(JoinKind::Token(token)) => {
                            assert!(!token.is_empty() && token.len() <= JOIN_TOKEN_BYTES_MAX)
                        }
                        Ok(JoinKind::Anonymous) => assert!(request.join_token.is_empty()),
                        Err(_) => {}
                    }
                }
            }
        }
        2 => {
            for stored in [bytes.to_vec(), codec::frame(bytes)] {
                if let Ok(record) = decode_shard_record(&stored) {
                    let again = decode_shard_record(&encode_shard_record(&record))
                        .expect("a written shard record reads back");
                    assert_eq!(again, record);
                }
            }
        }
        _ => {}
    }
});
