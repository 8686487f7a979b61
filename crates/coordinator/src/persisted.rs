//! The on-disk form of shard records (D52): types of their own, converted to and from the
//! coordinator's working types ([`ShardRecord`], the planner's [`Move`]) here and nowhere
//! else. A planner type can then change without changing what is on disk.
//!
//! This release still WRITES the unmarked version-1 layout, byte for byte what coordinators
//! from before D52 wrote and read, so a rollback or a mixed group during a rolling upgrade
//! keeps placing. It READS both that layout and the marked, versioned one
//! (`codec`-framed postcard of `(VERSIONED_MARKER, version, record)`), so that a later
//! release, once every coordinator it may run beside or roll back to reads the marked form,
//! can switch to writing it.
//!
//! This module must do no I/O: `metadata` reads and writes the bytes.

use crate::error::{CoordinatorError, Result};
use crate::metadata::ShardRecord;
use crate::placement::Move;
use cairn_raft::codec;
use cairn_types::{NodeId, ShardId};
use serde::{Deserialize, Serialize};

/// The newest version of the shard record layout this coordinator reads. It writes version 1
/// unmarked (see [`encode_shard_record`]).
pub const SHARD_RECORD_VERSION: u32 = 1;

/// The first bytes of every versioned record: ten bytes that each say "more follows", which
/// no postcard varint has (a `u64` takes at most ten bytes, the last without that bit). An
/// unmarked record begins with its shard id as a varint, so the two never collide; and a
/// coordinator from before D52 fails to decode a versioned record (its reconcile round fails
/// and acts on nothing) rather than misread it. That is why this release does not write it.
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

/// Version 1 of a shard record: the layout written before versions existed, and still the one
/// written unmarked. Its serde layout must stay byte for byte that of the old `ShardRecord`
/// (a test decodes what [`encode_shard_record`] writes with a copy of the old definition).
/// Fields are never reordered, retyped or removed: a new layout is a new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecordV1 {
    pub id: ShardId,
    pub initial_voters: Vec<NodeId>,
    pub pending_move: Option<MoveV1>,
}

/// Version 1 of a pending move, inside [`ShardRecordV1`]: the layout of the old planner `Move`.
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

/// The bytes stored under a shard's key: version 1 unmarked, the encoding every coordinator,
/// older ones included, reads. Writing the marked form waits for a release that may assume
/// no coordinator older than D52 runs beside it or is rolled back to (D52).
pub fn encode_shard_record(record: &ShardRecord) -> Vec<u8> {
    codec::encode(&ShardRecordV1::from(record))
}

/// Reads a shard record in the unmarked version-1 layout or in the marked form of any
/// version this coordinator knows.
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

    fn without_move() -> ShardRecord {
        ShardRecord {
            pending_move: None,
            ..record()
        }
    }

    /// The stored types of a coordinator from before D52, copied as they were: its
    /// `metadata::ShardRecord` held the planner's `Move`.
    mod before_versions {
        use cairn_types::{NodeId, ShardId};
        use serde::{Deserialize, Serialize};

        #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Move {
            pub to: NodeId,
            pub from: Option<NodeId>,
        }

        #[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub struct ShardRecord {
            pub id: ShardId,
            pub initial_voters: Vec<NodeId>,
            pub pending_move: Option<Move>,
        }
    }

    /// What a coordinator from before D52 stored for `record()` (`codec::encode` of its
    /// `ShardRecord`): format byte, CRC32, then postcard of id 5, voters [1, 2, 3],
    /// Some(Move { to: 4, from: Some(3) }).
    const BEFORE_VERSIONS: [u8; 14] = [
        0x01, 0x2f, 0x29, 0xa9, 0xb1, 0x05, 0x03, 0x01, 0x02, 0x03, 0x01, 0x04, 0x01, 0x03,
    ];

    /// The marked form a later release may write.
    fn marked(version: u32, record: &ShardRecord) -> Vec<u8> {
        codec::encode(&Versioned {
            marker: VERSIONED_MARKER,
            version,
            record: ShardRecordV1::from(record),
        })
    }

    #[test]
    fn a_record_written_before_versions_still_decodes() {
        assert_eq!(decode_shard_record(&BEFORE_VERSIONS).unwrap(), record());
        let old = before_versions::ShardRecord {
            id: ShardId(5),
            initial_voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            pending_move: None,
        };
        assert_eq!(
            decode_shard_record(&codec::encode(&old)).unwrap(),
            without_move()
        );
    }

    /// Rollback safety: a coordinator from before D52 reads what this one writes.
    #[test]
    fn records_are_written_in_the_layout_older_coordinators_read() {
        assert_eq!(encode_shard_record(&record()), BEFORE_VERSIONS);
        assert_eq!(
            codec::decode::<before_versions::ShardRecord>(&encode_shard_record(&record())).unwrap(),
            before_versions::ShardRecord {
                id: ShardId(5),
                initial_voters: vec![NodeId(1), NodeId(2), NodeId(3)],
                pending_move: Some(before_versions::Move {
                    to: NodeId(4),
                    from: Some(NodeId(3)),
                }),
            }
        );
        assert_eq!(
            codec::decode::<before_versions::ShardRecord>(&encode_shard_record(&without_move()))
                .unwrap()
                .pending_move,
            None
        );
    }

    #[test]
    fn records_read_back_what_they_wrote() {
        for record in [record(), without_move()] {
            assert_eq!(
                decode_shard_record(&encode_shard_record(&record)).unwrap(),
                record
            );
        }
    }

    /// So that a later release may switch to writing the marked form.
    #[test]
    fn the_marked_form_decodes() {
        for record in [record(), without_move()] {
            let bytes = marked(SHARD_RECORD_VERSION, &record);
            let header: Header = codec::decode(&bytes).unwrap();
            assert_eq!(header.marker, VERSIONED_MARKER);
            assert_eq!(decode_shard_record(&bytes).unwrap(), record);
        }
    }

    /// An older coordinator reads a shard record as the bare version-1 layout: a marked
    /// record must fail to decode there, never decode as some other shard.
    #[test]
    fn a_marked_record_is_no_valid_record_of_the_old_layout() {
        let bytes = marked(SHARD_RECORD_VERSION, &record());
        assert!(codec::decode::<before_versions::ShardRecord>(&bytes).is_err());
    }

    #[test]
    fn a_newer_version_is_refused_not_misread() {
        let bytes = marked(SHARD_RECORD_VERSION + 1, &record());
        let error = decode_shard_record(&bytes).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }
}
