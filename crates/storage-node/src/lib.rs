//! The Cairn storage node: hosts replicas of many shards in one RocksDB instance and serves
//! the per-shard KV service (for gateways), the admin service (for the coordinator) and the
//! Raft transport (for other nodes).
//!
//! Raft itself lives in `cairn-raft`; this crate composes it with configuration and gRPC and
//! must not name openraft directly.

pub mod admin_service;
pub mod batch;
pub mod config;
pub mod coordinator_client;
pub mod error;
pub mod kv_service;
pub mod metrics;
pub mod node;
pub mod removal;
pub mod server;
pub mod shard_call;
pub mod timestamps;
pub mod txn_metrics;
pub mod txn_service;

pub use config::NodeConfig;
pub use server::{run, run_with_listener};
