//! Everything in Cairn that touches openraft: the shard Raft type configuration, the RocksDB
//! log store and shard state machine, group commit, snapshots, and the gRPC Raft transport.
//!
//! openraft's 0.10 alphas change their API between releases, so no other crate names
//! openraft: upgrading it touches this crate only. This crate knows nothing about how a node
//! is configured or served; the storage node composes these pieces.

pub mod codec;
pub mod command;
pub mod convert;
pub mod convert_txn;
pub mod database;
pub mod error;
pub mod group_commit;
pub mod keys;
pub mod kv;
pub mod latches;
pub mod learner_removal;
pub mod lock_checks;
pub mod log_store;
pub mod mvcc_store;
pub mod network;
pub mod newest_cache;
pub(crate) mod pending_apply;
pub mod raft_config;
pub mod replica;
pub mod replica_status;
#[cfg(test)]
mod revision_tests;
pub mod sessions;
pub mod snapshot_builder;
pub mod snapshot_file;
pub(crate) mod snapshot_store;
pub mod state_machine;
pub mod transport;
pub mod txn_apply;
pub mod type_config;
pub mod versioned;

pub use error::{Result, StorageError};
