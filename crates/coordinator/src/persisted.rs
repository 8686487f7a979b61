//! The on-disk form of shard records (D52): types of their own, with an explicit version,
//! converted to and from the coordinator's working types ([`ShardRecord`], the planner's
//! [`Move`]) here and nowhere else. A planner type can then change without changing what is
//! on disk, and a layout that must change gets a new version instead of a silent
//! reinterpretation.
//!
//! A versioned record is `codec`-framed postcard of `(VERSIONED_MARKER, version, record)`.
//! Records written before D52 have no marker and no version: they are the bare version-1
//! layout, and still decode.
//!
//! This module must do no I/O: `metadata` reads and writes the bytes.

use crate::error::{CoordinatorError, Result};
use crate::metadata::ShardRecord;
use crate::placement::Move;
use cairn_raft::codec;
use cairn_types::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// The version of the shard record layout this coordinator writes.
pub const SHARD_RECORD_VERSION: u32 = 1;

/// The first bytes of every versioned record: ten bytes that each say "more follows", which
/// no postcard varint has (a `u64` takes at most ten bytes, the last without that bit). A
/// record from before versions begins with its shard id as a varint, so the two never
/// collide; and a coordinator from before versions fails to decode a versioned record (its
/// reconcile round fails and acts on nothing) rather than misread it.
const VERSIONED_MARKER: [u8; 10] = [0xFF; 10];

/// What every versioned record begins with.
#[derive(Serialize, Deserialize)]
struct Header {
    marker: [u8; 10],
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    marker: [u8; 10],
    version: u32,
    record: T,
}

/// Version 1 of a shard record; also the layout written before versions existed. Fields are
/// never reordered, retyped or removed: a new layout is a new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecordV1 {
    pub id: ShardId,
    pub initial_voters: Vec<NodeId>,
    pub pending_move: Option<MoveV1>,
}

/// Version 1 of a pending move, inside [`ShardRecordV1`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveV1 {
    pub to: NodeId,
    pub from: Option<NodeId>,
}

impl From<&Move> for MoveV1 {
    fn from(mv: &Move) -> Self {
        MoveV1 {
            to: mv.to,
            from: mv.from,
        }
    }
}

impl From<MoveV1> for Move {
    fn from(mv: MoveV1) -> Self {
        Move {
            to: mv.to,
            from: mv.from,
        }
    }
}

impl From<&ShardRecord> for ShardRecordV1 {
    fn from(record: &ShardRecord) -> Self {
        ShardRecordV1 {
            id: record.id,
            initial_voters: record.initial_voters.clone(),
            pending_move: record.pending_move.as_ref().map(MoveV1::from),
        }
    }
}

impl From<ShardRecordV1> for ShardRecord {
    fn from(record: ShardRecordV1) -> Self {
        ShardRecord {
            id: record.id,
            initial_voters: record.initial_voters,
            pending_move: record.pending_move.map(Move::from),
        }
    }
}

/// The bytes stored under a shard's key: the current version, marked.
pub fn encode_shard_record(record: &ShardRecord) -> Vec<u8> {
    codec::encode(&Versioned {
        marker: VERSIONED_MARKER,
        version: SHARD_RECORD_VERSION,
        record: ShardRecordV1::from(record),
    })
}

/// Reads a shard record of any version this coordinator knows, or one written before
/// versions.
pub fn decode_shard_record(bytes: &[u8]) -> Result<ShardRecord> {
    // A record is at most one of the two: the marker is no varint.
    let versioned = codec::decode::<Header>(bytes)
        .ok()
        .filter(|header| header.marker == VERSIONED_MARKER);
    let record = match versioned.map(|header| header.version) {
        None => codec::decode::<ShardRecordV1>(bytes).map_err(decode_error)?,
        Some(1) => {
            codec::decode::<Versioned<ShardRecordV1>>(bytes)
                .map_err(decode_error)?
                .record
        }
        Some(version) => {
            return Err(CoordinatorError::Internal(format!(
                "metadata: shard record version {version} is newer than this coordinator \
                 reads (up to {SHARD_RECORD_VERSION})"
            )))
        }
    };
    Ok(record.into())
}

fn decode_error(error: codec::CodecError) -> CoordinatorError {
    CoordinatorError::Internal(format!("metadata {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ShardRecord {
        ShardRecord {
            id: ShardId(5),
            initial_voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            pending_move: Some(Move {
                to: NodeId(4),
                from: Some(NodeId(3)),
            }),
        }
    }

    /// What a coordinator from before D52 stored for `record()` (`codec::encode` of its
    /// `ShardRecord`, which held the planner's `Move`): format byte, CRC32, then postcard
    /// of id 5, voters [1, 2, 3], Some(Move { to: 4, from: Some(3) }).
    const BEFORE_VERSIONS: [u8; 14] = [
        0x01, 0x2f, 0x29, 0xa9, 0xb1, 0x05, 0x03, 0x01, 0x02, 0x03, 0x01, 0x04, 0x01, 0x03,
    ];

    #[test]
    fn a_record_written_before_versions_still_decodes() {
        assert_eq!(decode_shard_record(&BEFORE_VERSIONS).unwrap(), record());
        let without_move = ShardRecord {
            pending_move: None,
            ..record()
        };
        assert_eq!(
            decode_shard_record(&codec::encode(&ShardRecordV1::from(&without_move))).unwrap(),
            without_move
        );
    }

    #[test]
    fn records_are_written_with_their_version_and_read_back() {
        let bytes = encode_shard_record(&record());
        let header: Header = codec::decode(&bytes).unwrap();
        assert_eq!(header.marker, VERSIONED_MARKER);
        assert_eq!(header.version, SHARD_RECORD_VERSION);
        assert_eq!(decode_shard_record(&bytes).unwrap(), record());
    }

    /// An older coordinator reads a shard record as the bare version-1 layout: a versioned
    /// record must fail to decode there, never decode as some other shard.
    #[test]
    fn a_versioned_record_is_no_valid_record_of_the_old_layout() {
        let bytes = encode_shard_record(&record());
        assert!(codec::decode::<ShardRecordV1>(&bytes).is_err());
    }

    #[test]
    fn a_newer_version_is_refused_not_misread() {
        let bytes = codec::encode(&Versioned {
            marker: VERSIONED_MARKER,
            version: SHARD_RECORD_VERSION + 1,
            record: ShardRecordV1::from(&record()),
        });
        let error = decode_shard_record(&bytes).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }
}
