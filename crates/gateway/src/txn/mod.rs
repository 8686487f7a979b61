//! Cross-shard transactions, gateway side (issue 16; docs/transactions.md, D95-D98): the
//! gateway coordinates a two-phase commit (Percolator with a primary lock) over the shards a
//! transaction touches, and resolves the locks of other transactions that its requests meet.
//!
//! The decisions are pure functions, tested without a network: [`plan`] (which path, the
//! request's checks), [`evaluate`] (branch choice and ops over an overlay of the branch's own
//! writes), [`locks`] (primary and lock kinds per shard), [`validation`] (range
//! re-validation), [`resolution`] (what to do about a lock). The async parts only sequence
//! calls: [`coordinator`] (the two-phase commit), [`resolver`] (lock resolution),
//! [`reads`] (reads that resolve locks), [`scanner`] (expired-lock scan and compaction's
//! sweep). This module must not decide anything a node decides: lock rules live in
//! `cairn_mvcc::txn` and are applied by the nodes.

pub mod bounds;
pub mod config;
pub mod coordinator;
pub mod evaluate;
pub mod locks;
pub mod metrics;
pub mod plan;
pub mod reads;
pub mod resolution;
pub mod resolver;
pub mod scanner;
pub mod test_hooks;
pub mod validation;

#[cfg(test)]
mod tests;

pub use config::TxnConfig;
