//! The Cairn coordinator: the cluster's brain (like TiKV's PD). It keeps the cluster identity,
//! node membership and liveness, the shard map, and placement: every shard fully replicated
//! over distinct nodes and the cluster balanced, without an operator.
//!
//! Its metadata lives in a Raft group of 1, 3 or 5 coordinators that reuses the shard state
//! machine from `cairn-raft`; only that group's leader schedules. Decisions are pure
//! functions ([`placement`], [`founding`], [`quorum`], [`cleanup`], [`reconcile`]);
//! [`coordinator`] gathers their inputs and carries out the actions. Generated protobuf
//! types stay at the edge: heartbeats are converted where they arrive ([`heartbeat`]), and
//! what is stored has its own versioned types ([`persisted`]).
//! It is also the cluster's timestamp oracle ([`oracle`]): every revision is a timestamp it
//! handed out, and it keeps the cluster's compaction point ([`compaction`]).
//! This crate must not name openraft.

// The service's futures nest the replica's read barrier (lease, then ReadIndex) deeply.
#![recursion_limit = "256"]

pub mod auth_store;
pub mod cleanup;
pub mod compaction;
pub mod config;
pub mod coordinator;
pub mod creation;
pub mod error;
pub mod founding;
pub mod heartbeat;
pub mod join;
pub mod liveness;
pub mod metadata;
pub mod metrics;
pub mod observed;
pub mod oracle;
pub mod persisted;
pub mod placement;
pub mod pod_ordinal;
pub mod quorum;
pub mod reconcile;
pub mod recovery;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod timestamp_allocator;

pub use config::CoordinatorConfig;
pub use server::{run, run_with_listener};
