//! The node's source of write timestamps: the coordinator's timestamp oracle, through one
//! batching client shared by every shard on the node (one `GetTimestamps` request carries the
//! writes of all of them).

use cairn_coordinator_client::{TimestampClient, TimestampClientConfig};
use cairn_raft::versioned::TimestampSource;
use cairn_types::Revision;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub struct NodeTimestamps {
    client: TimestampClient,
    /// The highest timestamp this node has been handed.
    latest: AtomicU64,
}

impl NodeTimestamps {
    pub fn start(config: TimestampClientConfig) -> Self {
        Self {
            client: TimestampClient::start(config),
            latest: AtomicU64::new(0),
        }
    }

    pub fn client(&self) -> &TimestampClient {
        &self.client
    }
}

impl TimestampSource for NodeTimestamps {
    fn timestamp(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Revision, String>> + Send + '_>> {
        Box::pin(async move {
            let revision = self
                .client
                .timestamp(timeout)
                .await
                .map_err(|error| error.to_string())?;
            self.latest.fetch_max(revision.0, Ordering::Relaxed);
            Ok(revision)
        })
    }

    fn latest_known(&self) -> Revision {
        Revision(self.latest.load(Ordering::Relaxed))
    }
}
