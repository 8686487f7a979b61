//! etcd v3 as a [`KvTarget`], through the `etcd-client` crate.

use crate::target::{ErrorKind, KvTarget, PairWrite, TargetError};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use std::time::Duration;

/// One etcd client connection. Reads are linearizable unless `serializable` (etcd's
/// default `Range` is linearizable, as Cairn's `Get` is).
#[derive(Clone)]
pub struct EtcdTarget {
    kv: KvClient,
    serializable: bool,
}

impl EtcdTarget {
    pub async fn connect(endpoints: Vec<String>, serializable: bool) -> Result<Self, TargetError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(error)?;
        Ok(Self {
            kv: client.kv_client(),
            serializable,
        })
    }
}

impl KvTarget for EtcdTarget {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TargetError> {
        // A clone shares the channel; the generated client needs `&mut self`.
        let mut kv = self.kv.clone();
        kv.put(key, value, None).await.map(|_| ()).map_err(error)
    }

    async fn get(&self, key: Vec<u8>) -> Result<bool, TargetError> {
        let mut kv = self.kv.clone();
        let options = self
            .serializable
            .then(|| GetOptions::new().with_serializable());
        kv.get(key, options)
            .await
            .map(|response| !response.kvs().is_empty())
            .map_err(error)
    }

    async fn read_revision(&self, key: Vec<u8>) -> Result<u64, TargetError> {
        let mut kv = self.kv.clone();
        let response = kv.get(key, None).await.map_err(error)?;
        Ok(response
            .kvs()
            .first()
            .map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0)))
    }

    async fn write_pair_if_unchanged(&self, pair: [PairWrite; 2]) -> Result<bool, TargetError> {
        let [a, b] = pair;
        let revision = |read: u64| i64::try_from(read).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(a.key.clone(), CompareOp::Equal, revision(a.read_revision)),
                Compare::mod_revision(b.key.clone(), CompareOp::Equal, revision(b.read_revision)),
            ])
            .and_then([
                TxnOp::put(a.key, a.value, None),
                TxnOp::put(b.key, b.value, None),
            ]);
        let mut kv = self.kv.clone();
        kv.txn(txn)
            .await
            .map(|response| response.succeeded())
            .map_err(error)
    }
}

fn error(error: etcd_client::Error) -> TargetError {
    let kind = match &error {
        // gRPC codes by number: etcd-client's tonic may differ from the workspace's.
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            4 => ErrorKind::Timeout,
            14 => ErrorKind::Unavailable,
            3 | 5 | 6 | 7 | 8 | 9 | 11 => ErrorKind::Rejected,
            _ => ErrorKind::Other,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Other,
    };
    TargetError {
        system: "etcd",
        kind,
        message: error.to_string(),
    }
}
