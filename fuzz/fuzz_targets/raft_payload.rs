//! Raft payloads (crates/raft): what a node decodes from its peers (the postcard payloads of
//! `cairn.raft.v1` envelopes: append-entries, vote and leader-transfer requests and their
//! answers, a snapshot stream's header) and what it reads back from its Raft log and state
//! (framed postcard: log entries with their commands, the vote, memberships, remembered
//! session results).
//!
//! Holds: nothing panics; what decodes re-encodes to bytes that decode to the same encoding.
//!
//! Input: a kind byte, then
//! - 0..=7: an envelope's payload, read by `network::decode_payload` as kind 0 append-entries
//!   request, 1 its answer, 2 vote request, 3 its answer, 4 leader-transfer request, 5 its
//!   answer, 6 snapshot header, 7 snapshot answer;
//! - 8: a `RaftRequest` envelope (protobuf), its payload read as an append-entries request;
//! - 9: a `SnapshotChunk` (protobuf), its header read as a snapshot header;
//! - 10..=14: a stored value, as stored and as the payload of a valid frame: 10 a log entry,
//!   11 a vote, 12 the last applied log id, 13 a membership, 14 a remembered session result.

#![no_main]

use cairn_fuzz::{assert_payload_stable, assert_stored_stable, decode_message, split_kind};
use cairn_proto::raft::v1 as pb;
use cairn_raft::network::{decode_payload, ENCODING_POSTCARD};
use cairn_raft::sessions::RememberedResult;
use cairn_raft::type_config::{wire, Entry, LogId, StoredMembership, Vote};
use cairn_types::codec;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    match kind {
        0 => payload::<wire::AppendEntriesRequest>(bytes),
        1 => payload::<wire::AppendEntriesReply>(bytes),
        2 => payload::<wire::VoteRequest>(bytes),
        3 => payload::<wire::VoteReply>(bytes),
        4 => payload::<wire::TransferLeaderRequest>(bytes),
        5 => payload::<wire::TransferLeaderReply>(bytes),
        6 => payload::<wire::SnapshotHeader>(bytes),
        7 => payload::<wire::SnapshotReply>(bytes),
        8 => {
            if let Some(envelope) = decode_message::<pb::RaftRequest>(bytes) {
                envelope_payload::<wire::AppendEntriesRequest>(
                    envelope.encoding,
                    &envelope.payload,
                );
            }
        }
        9 => {
            if let Some(chunk) = decode_message::<pb::SnapshotChunk>(bytes) {
                envelope_payload::<wire::SnapshotHeader>(chunk.encoding, &chunk.header);
            }
        }
        10 => {
            for entry in stored::<Entry>(bytes) {
                // An entry's description (its command's) goes to logs.
                let _ = entry.to_string();
            }
        }
        11 => drop(stored::<Vote>(bytes)),
        12 => drop(stored::<Option<LogId>>(bytes)),
        13 => drop(stored::<StoredMembership>(bytes)),
        14 => drop(stored::<RememberedResult>(bytes)),
        _ => {}
    }
});

fn payload<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    envelope_payload::<T>(ENCODING_POSTCARD, bytes);
}

fn envelope_payload<T: Serialize + DeserializeOwned>(encoding: u32, bytes: &[u8]) {
    if let Ok(value) = decode_payload::<T>(encoding, bytes) {
        assert_payload_stable(&value);
    }
}

/// Decodes `bytes` as stored and as a valid frame's payload; what decoded.
fn stored<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
    [bytes.to_vec(), codec::frame(bytes)]
        .iter()
        .filter_map(|stored| codec::decode::<T>(stored).ok())
        .inspect(assert_stored_stable)
        .collect()
}
