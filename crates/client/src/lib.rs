//! The async Rust SDK for Cairn.
//!
//! A [`Client`] talks to one or more gateways over the public `cairn.kv.v1` API (`KV`,
//! `Cluster` and `Auth` services). It:
//!
//! - **retries safely**: transient failures (a gateway down, a leader election, a timeout
//!   whose outcome is unknown) are retried on the next gateway with jittered exponential
//!   backoff, bounded by `retry_attempts_max` and `request_timeout`. Every write carries a
//!   [`WriteId`] that stays the same across its retries, so the cluster applies it exactly
//!   once. Requests the cluster refused (bad argument, limit, failed precondition) are not
//!   retried.
//! - **runs transactions over any keys**: [`Client::txn`] commits atomically whatever shards
//!   the keys live in, and runs a transaction again when it lost a race
//!   ([`Error::Conflict`]) under a [`ConflictPolicy`] the caller sets.
//! - **returns typed errors**: [`Error`] is decoded from the gateway's structured
//!   `ErrorDetail`, never from message text, and [`Error::is_retryable`] says whether the
//!   same call may succeed later.
//! - **authenticates**: with [`ClientConfig::credentials`] it exchanges the user name and
//!   password for a token and sends it with every request, renewing it before it expires;
//!   a client certificate (`tls`) names the user otherwise (docs/security.md).
//! - takes plain Rust types (`impl Into<Vec<u8>>`) as arguments and returns the generated
//!   protobuf types (re-exported as [`proto`]) where those are the simplest answer.
//!
//! It depends on the protocol (`cairn-proto`) and the shared vocabulary (`cairn-types`)
//! only: it must never depend on a server crate, so that applications can embed it cheaply.
//!
//! ```no_run
//! use cairn_client::{Client, ClientConfig, Compare, CompareOp, Expectation, Op, Txn};
//!
//! # async fn example() -> cairn_client::Result<()> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7000"])).await?;
//!
//! client.put("user/1", "ada").await?;
//! if let Some(kv) = client.get("user/1").await? {
//!     println!("version {} holds {:?}", kv.version, String::from_utf8_lossy(&kv.value));
//! }
//!
//! // Optimistic concurrency: write only if nobody changed the key since version 1.
//! let outcome = client
//!     .compare_and_set("user/1", Expectation::Version(1), "ada lovelace")
//!     .await?;
//! assert!(outcome.succeeded || outcome.current.is_some());
//!
//! // A transaction over keys of any shards; a lost race is run again (`ConflictPolicy`).
//! let response = client
//!     .txn(
//!         Txn::new()
//!             .when([Compare::value("user/1", CompareOp::Equal, "ada lovelace")])
//!             .then([Op::put("user/1", "countess"), Op::put("audit/user/1", "renamed")])
//!             .otherwise([Op::get("user/1")]),
//!     )
//!     .await?;
//! println!("txn succeeded: {}", response.succeeded);
//!
//! for kv in client.scan_prefix("user/", 500, 10_000).await? {
//!     println!("{}", String::from_utf8_lossy(&kv.key));
//! }
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod cluster;
mod config;
mod conflict;
mod error;
mod options;
mod txn;
mod write_id;

/// The generated `cairn.kv.v1` protobuf types, used in responses.
pub use cairn_proto::kv::v1 as proto;

/// The jittered exponential back-off of every Cairn retry loop, used by [`ConflictPolicy`].
pub use cairn_proto::retry::Backoff;
pub use cairn_types::{ClientId, NodeId, Sequence};
pub use client::{Client, ScanResult};
pub use config::{ClientConfig, Credentials, TlsConfig, RETRY_ATTEMPTS_MAX_CEILING};
pub use conflict::{ConflictPolicy, CONFLICT_ATTEMPTS_MAX_CEILING};
pub use error::{Error, Result};
pub use options::{
    CasOutcome, Consistency, DeleteOptions, Expectation, GetOptions, PutCondition, PutOptions,
    RangeOptions,
};
/// The gRPC status code carried by [`Error::Rejected`].
pub use tonic::Code;
pub use txn::{Compare, CompareOp, CompareTarget, Op, Txn};
pub use write_id::WriteId;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[test]
    fn client_is_shareable() {
        assert_send_sync_clone::<Client>();
    }
}
