//! Snapshots as openraft sees them: the file a snapshot is ([`SnapshotFile`]) and the builder
//! openraft asks for one; the files themselves are made and installed by
//! [`crate::snapshot_store`].

use crate::error::Result;
use crate::snapshot_store::{CurrentSnapshot, SnapshotStore};
use crate::type_config::ShardRaftConfig;
use openraft::storage::{RaftSnapshotBuilder, Snapshot};
use std::io;
use std::path::PathBuf;

/// A snapshot as openraft passes it around: the path of a complete snapshot file.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

pub(crate) type ShardSnapshot =
    openraft::type_config::alias::SnapshotOf<ShardRaftConfig, SnapshotFile>;

pub(crate) fn to_snapshot(store: &SnapshotStore, current: CurrentSnapshot) -> ShardSnapshot {
    Snapshot {
        meta: current.meta,
        snapshot: SnapshotFile {
            path: store.dir.join(current.file_name),
        },
    }
}

pub struct ShardSnapshotBuilder {
    pub(crate) snapshots: SnapshotStore,
}

impl RaftSnapshotBuilder<ShardRaftConfig> for ShardSnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<ShardSnapshot, io::Error> {
        let store = self.snapshots.clone();
        let built = blocking(move || store.build()).await?;
        Ok(to_snapshot(&self.snapshots, built))
    }
}

/// Runs blocking storage work off the async runtime, as openraft wants its errors.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, io::Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(io::Error::from),
        Err(join) => Err(io::Error::other(format!("storage task failed: {join}"))),
    }
}
