//! Cairn's shared vocabulary: typed ids, the key-to-shard function, and request limits.
//!
//! Everything here is pure: no I/O, no async, no RocksDB, no gRPC. Every other crate may
//! depend on this one, so it must stay small and dependency-light.

mod ids;
mod limits;
pub use limits::{BATCH_ENVELOPE_BYTES, RAFT_MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX_CEILING};
pub mod sharding;

pub use ids::{ClientId, NodeId, Revision, Sequence, ShardId};
pub use limits::{LimitError, Limits};
