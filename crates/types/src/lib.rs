//! Cairn's shared vocabulary: typed ids, the key-to-shard function, request limits, the
//! framed storage encoding, the layout of revisions as oracle timestamps, and the key space
//! Cairn reserves for itself.
//!
//! Everything here is pure: no I/O, no async, no RocksDB, no gRPC. Every other crate may
//! depend on this one, so it must stay small and dependency-light.

pub mod codec;
mod ids;
mod limits;
pub mod reserved;
mod timestamp;
pub use limits::{BATCH_ENVELOPE_BYTES, RAFT_MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX_CEILING};
pub mod sharding;

pub use ids::{ClientId, NodeId, Revision, Sequence, ShardId};
pub use limits::{LimitError, Limits};
pub use timestamp::{TimestampParts, LOGICAL_BITS, LOGICAL_MAX};
