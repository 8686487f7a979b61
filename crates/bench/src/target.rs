//! `KvTarget`: the two calls every system under test provides. The runner measures only
//! through this trait, so Cairn and etcd go through the same loop.

use std::future::Future;

/// A failed call; the runner counts these and keeps the first message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{system}: {message}")]
pub struct TargetError {
    pub system: &'static str,
    pub message: String,
}

/// One connection to a system under test. Clones share the connection.
pub trait KvTarget: Clone + Send + Sync + 'static {
    /// Writes `value` under `key`, acknowledged once durable on a quorum.
    fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Reads `key` with the configured consistency; `Ok(false)` when it does not exist.
    fn get(&self, key: Vec<u8>) -> impl Future<Output = Result<bool, TargetError>> + Send;
}
