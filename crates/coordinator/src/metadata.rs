//! The coordinator's replicated metadata: cluster identity, node records, shard records and
//! id allocation, stored as keys of one Raft group that reuses the shard key-value state
//! machine (as PD keeps its metadata in an embedded etcd). Only the group's leader writes.
//!
//! | key                | value          |
//! |--------------------|----------------|
//! | `cluster`          | `ClusterInfo`  |
//! | `ids/node`         | last node id allocated (u64) |
//! | `nodes/<id:020>`   | `NodeRecord`   |
//! | `shards/<id:010>`  | `ShardRecord`, stored as `persisted::ShardRecordV1` (D52) |
//! | `founding/<id:010>` | `Founding`: the shard's creation is under way (D51) |
//! | `joins/<token>`    | the node id given to the join that sent this join token (D50) |
//! | `leadership`       | term of the last leadership that began (u64); its revision is that leadership's map generation |
//! | `tso/window`       | the timestamp oracle's persisted window: physical ms (since the cluster's creation) below which timestamps may have been handed out (u64) |
//! | `compaction`       | the cluster's compaction point (a revision, u64) |

use crate::error::{CoordinatorError, Result};
use crate::persisted;
use crate::placement::Move;
use cairn_raft::codec;
use cairn_raft::command::{Command, Delete, Put, PutCondition, Range, WriteOp, WriteResult};
use cairn_raft::kv::KvView;
use cairn_raft::replica::ShardReplica;
use cairn_types::{NodeId, ShardId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The coordinator group's single "shard" in its own RocksDB.
pub const METADATA_SHARD: ShardId = ShardId(0);
/// Attempts of a compare-and-set before giving up (contention means a leader change).
const CAS_ATTEMPTS_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub shard_count: u32,
    pub replication_factor: u32,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// LeaveCluster was called: its replicas move away.
    pub leaving: bool,
    /// Holds nothing any more; the id stays taken.
    pub left: bool,
}

/// A shard's record as the coordinator works with it; stored as
/// `persisted::ShardRecordV1` (D52).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardRecord {
    pub id: ShardId,
    /// The voters the shard was created with (until heartbeats report its membership).
    pub initial_voters: Vec<NodeId>,
    /// A replica move the coordinator started and has not finished.
    pub pending_move: Option<Move>,
}

/// A shard's creation under way (D51): written before its initial voters are recorded and
/// removed once a replica reports the group's committed configuration. Kept apart from
/// `ShardRecord` so that records written by older coordinators still decode, and so that a
/// shard created by one (no `Founding`) is never taken for one that was never initialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Founding {
    /// The voters chosen for the shard (its `initial_voters`).
    pub voters: Vec<NodeId>,
    /// Whether InitializeShard may have been sent: from then on the group may exist on any
    /// of `voters`, and only these voters may ever found it.
    pub initialize_sent: bool,
}

/// Everything the metadata holds, read at one point.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub cluster: Option<ClusterInfo>,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub shards: BTreeMap<ShardId, ShardRecord>,
    /// Shards whose creation is under way.
    pub founding: BTreeMap<ShardId, Founding>,
}

impl Metadata {
    /// The record of `shard`, or an empty one for a shard not recorded yet: what a write to
    /// the shard's record starts from.
    pub fn shard_record(&self, shard: ShardId) -> ShardRecord {
        self.shards.get(&shard).cloned().unwrap_or(ShardRecord {
            id: shard,
            ..ShardRecord::default()
        })
    }

    /// The address `node` registered, or empty for a node not recorded.
    pub fn address_of(&self, node: NodeId) -> String {
        self.nodes
            .get(&node)
            .map(|record| record.address.clone())
            .unwrap_or_default()
    }
}

pub fn node_key(id: NodeId) -> Vec<u8> {
    format!("nodes/{:020}", id.0).into_bytes()
}

pub fn shard_key(id: ShardId) -> Vec<u8> {
    format!("shards/{:010}", id.0).into_bytes()
}

pub fn founding_key(id: ShardId) -> Vec<u8> {
    format!("founding/{:010}", id.0).into_bytes()
}

/// The key of a join token; the token was checked by `join::JoinKind::of`.
pub fn join_token_key(token: &str) -> Vec<u8> {
    format!("joins/{token}").into_bytes()
}

const CLUSTER_KEY: &[u8] = b"cluster";
const NODE_ID_KEY: &[u8] = b"ids/node";
const LEADERSHIP_KEY: &[u8] = b"leadership";
const TIMESTAMP_WINDOW_KEY: &[u8] = b"tso/window";
const COMPACTION_KEY: &[u8] = b"compaction";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone)]
pub struct MetadataStore {
    replica: Arc<ShardReplica>,
}

impl MetadataStore {
    pub fn new(replica: Arc<ShardReplica>) -> Self {
        Self { replica }
    }

    pub fn replica(&self) -> &Arc<ShardReplica> {
        &self.replica
    }

    async fn write(&self, op: WriteOp) -> Result<WriteResult> {
        let command = Command {
            write_id: None,
            proposed_at_ms: now_ms(),
            op,
            revision: Default::default(),
            trace: None,
        };
        Ok(self.replica.write(command).await?)
    }

    /// Puts `value` under `key`, only if the key's mod_revision is still `expected` (0 =
    /// absent). Returns whether it was written.
    async fn compare_and_put<T: Serialize>(
        &self,
        key: &[u8],
        expected: u64,
        value: &T,
    ) -> Result<bool> {
        Ok(self
            .compare_and_put_revision(key, expected, value)
            .await?
            .is_some())
    }

    /// As [`Self::compare_and_put`], returning the key's new mod_revision when written.
    async fn compare_and_put_revision<T: Serialize>(
        &self,
        key: &[u8],
        expected: u64,
        value: &T,
    ) -> Result<Option<u64>> {
        let put = Put {
            key: key.to_vec(),
            value: codec::encode(value),
            prev_kv: false,
            condition: Some(PutCondition::ModRevisionEquals(expected)),
        };
        match self.write(WriteOp::Put(put)).await? {
            WriteResult::Put(result) => Ok(result.succeeded.then_some(result.revision.0)),
            other => Err(CoordinatorError::Internal(format!(
                "unexpected result {other:?}"
            ))),
        }
    }

    async fn put<T: Serialize>(&self, key: &[u8], value: &T) -> Result<()> {
        self.put_encoded(key, codec::encode(value)).await
    }

    async fn put_encoded(&self, key: &[u8], value: Vec<u8>) -> Result<()> {
        let put = Put {
            key: key.to_vec(),
            value,
            prev_kv: false,
            condition: None,
        };
        self.write(WriteOp::Put(put)).await?;
        Ok(())
    }

    /// Reads one key linearizably: (value, mod_revision).
    async fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<(T, u64)>> {
        self.replica.linearizable_barrier().await?;
        let view = KvView::new(self.replica.db(), METADATA_SHARD);
        let Some(kv) = view.get(key, false).map_err(CoordinatorError::storage)? else {
            return Ok(None);
        };
        let value = codec::decode(&kv.value)
            .map_err(|e| CoordinatorError::Internal(format!("metadata {e}")))?;
        Ok(Some((value, kv.mod_revision.0)))
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<T>> {
        self.scan_with(prefix, |bytes| {
            codec::decode(bytes).map_err(|e| CoordinatorError::Internal(format!("metadata {e}")))
        })
    }

    /// Every value under `prefix`, decoded by `decode`.
    fn scan_with<T>(&self, prefix: &[u8], decode: impl Fn(&[u8]) -> Result<T>) -> Result<Vec<T>> {
        let range = Range {
            start: prefix.to_vec(),
            end: cairn_raft::command::prefix_end(prefix),
            limit: u64::MAX,
            keys_only: false,
            count_only: false,
        };
        let view = KvView::new(self.replica.db(), METADATA_SHARD);
        let result = view
            .range(&range, cairn_types::Revision(0))
            .map_err(CoordinatorError::storage)?;
        result.kvs.iter().map(|kv| decode(&kv.value)).collect()
    }

    /// Reads everything, linearizably.
    pub async fn read_all(&self) -> Result<Metadata> {
        self.replica.linearizable_barrier().await?;
        let view = KvView::new(self.replica.db(), METADATA_SHARD);
        let cluster = match view
            .get(CLUSTER_KEY, false)
            .map_err(CoordinatorError::storage)?
        {
            Some(kv) => Some(
                codec::decode(&kv.value)
                    .map_err(|e| CoordinatorError::Internal(format!("metadata {e}")))?,
            ),
            None => None,
        };
        let nodes: Vec<NodeRecord> = self.scan(b"nodes/")?;
        let shards: Vec<ShardRecord> =
            self.scan_with(b"shards/", persisted::decode_shard_record)?;
        let founding: Vec<(ShardId, Founding)> = self.scan(b"founding/")?;
        Ok(Metadata {
            cluster,
            nodes: nodes.into_iter().map(|n| (n.id, n)).collect(),
            shards: shards.into_iter().map(|s| (s.id, s)).collect(),
            founding: founding.into_iter().collect(),
        })
    }

    /// Creates the cluster identity if there is none yet; returns the one in force (a
    /// restarted coordinator with different settings keeps the original shard count).
    pub async fn ensure_cluster(
        &self,
        shard_count: u32,
        replication_factor: u32,
    ) -> Result<ClusterInfo> {
        if let Some((cluster, _)) = self.get::<ClusterInfo>(CLUSTER_KEY).await? {
            return Ok(cluster);
        }
        let cluster = ClusterInfo {
            cluster_id: format!("{:016x}", rand::random::<u64>()),
            shard_count,
            replication_factor,
            created_at_ms: now_ms(),
        };
        self.compare_and_put(CLUSTER_KEY, 0, &cluster).await?;
        let (cluster, _) = self
            .get::<ClusterInfo>(CLUSTER_KEY)
            .await?
            .ok_or_else(|| CoordinatorError::Internal("cluster identity vanished".into()))?;
        tracing::info!(cluster_id = %cluster.cluster_id, shard_count = cluster.shard_count,
            replication_factor = cluster.replication_factor, "cluster identity in force");
        Ok(cluster)
    }

    /// Records that a leadership begins; returns the revision of that write, which is higher
    /// than the revision of every leadership that began before it, in any term, also when
    /// the same coordinator restarts and leads the same term again.
    pub async fn begin_leadership(&self, term: u64) -> Result<u64> {
        let put = Put {
            key: LEADERSHIP_KEY.to_vec(),
            value: codec::encode(&term),
            prev_kv: false,
            condition: None,
        };
        match self.write(WriteOp::Put(put)).await? {
            WriteResult::Put(result) => Ok(result.revision.0),
            other => Err(CoordinatorError::Internal(format!(
                "unexpected result {other:?}"
            ))),
        }
    }

    /// The cluster identity, if it was created.
    pub async fn cluster_info(&self) -> Result<Option<ClusterInfo>> {
        Ok(self.get(CLUSTER_KEY).await?.map(|(cluster, _)| cluster))
    }

    /// The oracle's persisted window and the revision to compare against when replacing it
    /// (both 0 when none was ever stored). Linearizable.
    pub async fn timestamp_window(&self) -> Result<(u64, u64)> {
        Ok(self
            .get::<u64>(TIMESTAMP_WINDOW_KEY)
            .await?
            .unwrap_or((0, 0)))
    }

    /// Stores the oracle's window if it was not changed since `expected_revision`; returns
    /// the new revision to compare against, or `None` if another writer got there first.
    pub async fn store_timestamp_window(
        &self,
        expected_revision: u64,
        window: u64,
    ) -> Result<Option<u64>> {
        self.compare_and_put_revision(TIMESTAMP_WINDOW_KEY, expected_revision, &window)
            .await
    }

    /// The cluster's compaction point and its revision for compare-and-set (0, 0 if never
    /// compacted). Linearizable.
    pub async fn compaction(&self) -> Result<(u64, u64)> {
        Ok(self.get::<u64>(COMPACTION_KEY).await?.unwrap_or((0, 0)))
    }

    /// Stores a new compaction point if the stored one was not changed since
    /// `expected_revision`; returns whether it was written.
    pub async fn store_compaction(&self, expected_revision: u64, revision: u64) -> Result<bool> {
        self.compare_and_put(COMPACTION_KEY, expected_revision, &revision)
            .await
    }

    /// Allocates a node id never handed out before.
    pub async fn allocate_node_id(&self) -> Result<NodeId> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (last, revision) = self.get::<u64>(NODE_ID_KEY).await?.unwrap_or((0, 0));
            let next = last + 1;
            if self.compare_and_put(NODE_ID_KEY, revision, &next).await? {
                return Ok(NodeId(next));
            }
        }
        Err(CoordinatorError::Unavailable(
            "node id allocation kept conflicting".into(),
        ))
    }

    pub async fn put_node(&self, record: &NodeRecord) -> Result<()> {
        self.put(&node_key(record.id), record).await
    }

    pub async fn put_shard(&self, record: &ShardRecord) -> Result<()> {
        self.put_encoded(
            &shard_key(record.id),
            persisted::encode_shard_record(record),
        )
        .await
    }

    pub async fn put_founding(&self, shard: ShardId, founding: &Founding) -> Result<()> {
        self.put(&founding_key(shard), &(shard, founding.clone()))
            .await
    }

    /// Forgets a shard's creation: its group exists and reports its own configuration.
    pub async fn delete_founding(&self, shard: ShardId) -> Result<()> {
        let delete = Delete {
            key: founding_key(shard),
            prev_kv: false,
        };
        self.write(WriteOp::Delete(delete)).await?;
        Ok(())
    }

    /// The node id given to the join that sent `token`, if any. Linearizable.
    pub async fn join_token(&self, token: &str) -> Result<Option<NodeId>> {
        Ok(self
            .get::<NodeId>(&join_token_key(token))
            .await?
            .map(|(id, _)| id))
    }

    /// Gives `token` the node id `id` unless another attempt of the same join got there
    /// first; returns the id the token holds now (a concurrent retry of one join gets one
    /// id, and the other allocated id is never used).
    pub async fn claim_join_token(&self, token: &str, id: NodeId) -> Result<NodeId> {
        if self.compare_and_put(&join_token_key(token), 0, &id).await? {
            return Ok(id);
        }
        self.join_token(token)
            .await?
            .ok_or_else(|| CoordinatorError::Internal("a claimed join token vanished".into()))
    }
}
