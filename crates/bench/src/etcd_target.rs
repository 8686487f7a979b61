//! etcd v3 as a [`KvTarget`], through the `etcd-client` crate.

use crate::target::{KvTarget, TargetError};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
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
}

fn error(error: etcd_client::Error) -> TargetError {
    TargetError {
        system: "etcd",
        message: error.to_string(),
    }
}
