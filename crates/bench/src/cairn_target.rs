//! Cairn as a [`KvTarget`]: the SDK (`cairn-client`) talking to a gateway.

use crate::target::{ErrorKind, KvTarget, PairWrite, TargetError};
use cairn_client::{
    Client, ClientConfig, Compare, CompareOp, ConflictPolicy, Consistency, Error, GetOptions, Op,
    TlsConfig, Txn,
};

/// One SDK client, that is one gRPC connection per gateway address.
#[derive(Clone, Debug)]
pub struct CairnTarget {
    client: Client,
    read: GetOptions,
}

impl CairnTarget {
    /// Connects lazily to `endpoints` (the first one is tried first), through TLS when
    /// `tls` is given.
    ///
    /// Transactions run under `ConflictPolicy::never()`: a lost race comes back to the
    /// runner, which reads the keys again as it does for etcd (the SDK's own re-run would
    /// send the same stale comparisons), and is counted.
    pub async fn connect(
        endpoints: Vec<String>,
        serializable: bool,
        tls: Option<TlsConfig>,
    ) -> Result<Self, TargetError> {
        let config = ClientConfig {
            txn_conflict_policy: ConflictPolicy::never(),
            tls,
            ..ClientConfig::new(endpoints)
        };
        let client = Client::connect(config).await.map_err(error)?;
        let consistency = if serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        Ok(Self {
            client,
            read: GetOptions {
                consistency,
                keys_only: false,
                revision: 0,
            },
        })
    }

    /// The cluster's number of shards, which places keys (`cairn_types::sharding`).
    pub async fn shard_count(&self) -> Result<u32, TargetError> {
        let status = self.client.status().await.map_err(error)?;
        Ok(status.shard_count)
    }
}

impl KvTarget for CairnTarget {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TargetError> {
        self.client.put(key, value).await.map(|_| ()).map_err(error)
    }

    async fn get(&self, key: Vec<u8>) -> Result<bool, TargetError> {
        self.client
            .get_with(key, self.read)
            .await
            .map(|found| found.is_some())
            .map_err(error)
    }

    async fn read_revision(&self, key: Vec<u8>) -> Result<u64, TargetError> {
        self.client
            .get(key)
            .await
            .map(|found| found.map_or(0, |kv| kv.mod_revision))
            .map_err(error)
    }

    async fn write_pair_if_unchanged(&self, pair: [PairWrite; 2]) -> Result<bool, TargetError> {
        let [a, b] = pair;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(a.key.clone(), CompareOp::Equal, a.read_revision),
                Compare::mod_revision(b.key.clone(), CompareOp::Equal, b.read_revision),
            ])
            .then([Op::put(a.key, a.value), Op::put(b.key, b.value)]);
        self.client
            .txn(txn)
            .await
            .map(|response| response.succeeded)
            .map_err(error)
    }
}

fn error(error: Error) -> TargetError {
    let kind = match &error {
        Error::Conflict { .. } => ErrorKind::Conflict,
        Error::CrossShardTransaction { .. } => ErrorKind::CrossShardTxn,
        Error::Timeout => ErrorKind::Timeout,
        Error::Unavailable(_) | Error::Transport(_) => ErrorKind::Unavailable,
        Error::InvalidArgument { .. }
        | Error::LimitExceeded { .. }
        | Error::WriteWindowExceeded { .. }
        | Error::Compacted { .. }
        | Error::FutureRevision { .. }
        | Error::NotFound(_)
        | Error::Rejected { .. } => ErrorKind::Rejected,
    };
    TargetError {
        system: "cairn",
        kind,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_kind() {
        let kind = |e: Error| error(e).kind;
        assert_eq!(
            kind(Error::CrossShardTransaction { shards: vec![0, 2] }),
            ErrorKind::CrossShardTxn
        );
        assert_eq!(
            kind(Error::Conflict {
                key: b"k".to_vec(),
                start_revision: 1,
                conflicting_revision: 2
            }),
            ErrorKind::Conflict
        );
        assert_eq!(kind(Error::Timeout), ErrorKind::Timeout);
        assert_eq!(kind(Error::Unavailable("x".into())), ErrorKind::Unavailable);
        assert_eq!(
            kind(Error::InvalidArgument {
                field: "txn".into(),
                reason: "r".into()
            }),
            ErrorKind::Rejected
        );
    }
}
