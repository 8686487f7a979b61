//! openraft's storage conformance suite against Cairn's RocksDB log store and shard state
//! machine. Every test store shares its RocksDB with two neighbouring shards that already
//! hold log entries, so the suite also proves that shards do not see each other's keys.

use cairn_raft::database::{open_database, RocksDbConfig};
use cairn_raft::group_commit::{GroupCommit, GroupCommitLimits, GroupCommitStats};
use cairn_raft::log_store::LogStore;
use cairn_raft::sessions::SessionLimits;
use cairn_raft::state_machine::ShardStateMachine;
use cairn_raft::type_config::{Entry, LogId, ShardRaftConfig};
use cairn_types::{NodeId, ShardId};
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

struct RocksDbStoreBuilder;

fn storage_error(error: impl std::fmt::Display) -> StorageError<ShardRaftConfig> {
    StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Write,
        std::io::Error::other(error.to_string()),
    )
}

impl StoreBuilder<ShardRaftConfig, LogStore, ShardStateMachine, tempfile::TempDir>
    for RocksDbStoreBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, ShardStateMachine), StorageError<ShardRaftConfig>>
    {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let db = open_database(
            &dir.path().join("db"),
            &RocksDbConfig::default(),
            Default::default(),
        )
        .map_err(storage_error)?;
        let group_commit = GroupCommit::start(
            db.clone(),
            GroupCommitLimits::default(),
            Arc::new(GroupCommitStats::default()),
        );
        for neighbour in [ShardId(0), ShardId(2)] {
            let mut store = LogStore::new(db.clone(), neighbour, group_commit.clone());
            let entries: Vec<Entry> = (0..5)
                .map(|index| {
                    Entry::new_blank(LogId::new(
                        LeaderId {
                            term: 9,
                            node_id: NodeId(9),
                        },
                        index,
                    ))
                })
                .collect();
            store.blocking_append(entries).await?;
        }
        let shard = ShardId(1);
        let log_store = LogStore::new(db.clone(), shard, group_commit);
        let state_machine = ShardStateMachine::open(
            db,
            shard,
            dir.path().join("snapshots"),
            SessionLimits::default(),
            Default::default(),
        )
        .map_err(storage_error)?;
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(RocksDbStoreBuilder)
        .await
        .expect("openraft storage suite");
}
