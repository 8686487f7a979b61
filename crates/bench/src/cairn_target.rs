//! Cairn as a [`KvTarget`]: the SDK (`cairn-client`) talking to a gateway.

use crate::target::{KvTarget, TargetError};
use cairn_client::{Client, ClientConfig, Consistency, GetOptions};

/// One SDK client, that is one gRPC connection per gateway address.
#[derive(Clone, Debug)]
pub struct CairnTarget {
    client: Client,
    read: GetOptions,
}

impl CairnTarget {
    /// Connects lazily to `endpoints` (the first one is tried first).
    pub async fn connect(endpoints: Vec<String>, serializable: bool) -> Result<Self, TargetError> {
        let client = Client::connect(ClientConfig::new(endpoints))
            .await
            .map_err(error)?;
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
}

fn error(error: cairn_client::Error) -> TargetError {
    TargetError {
        system: "cairn",
        message: error.to_string(),
    }
}
