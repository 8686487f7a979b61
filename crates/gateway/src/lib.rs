//! The Cairn gateway: a stateless front door serving the public `cairn.kv.v1` API. It routes
//! every key to `jump_hash(key)` over the shard map it watches from the coordinator, to that
//! shard's leader; fans ranges out over every shard and merges them; coordinates transactions
//! that span shards as a two-phase commit and resolves the locks they leave (`txn`); and
//! retries on not-leader, stale epoch and unavailability with bounded
//! back-off, never applying a write twice (writes carry write ids).
//!
//! It keeps no state beyond caches: run as many as you like behind one address. It must not
//! depend on server crates (no RocksDB, no openraft).

pub mod auth;
pub mod auth_service;
pub mod cluster_service;
pub mod config;
pub mod error;
pub mod kv_service;
pub mod metrics;
pub mod node_stream;
pub mod router;
pub mod routing;
pub mod server;
pub mod txn;
pub mod write_ids;

pub use config::GatewayConfig;
pub use server::{run, run_with_listener};
