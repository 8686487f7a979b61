//! What a replica shares with the other replicas of its node: storage, transport, group
//! commit, openraft's configuration and the limits its operations run under.

use crate::group_commit::GroupCommit;
use crate::mvcc_store::CompactionPoints;
use crate::network::PeerChannels;
use crate::raft_config::LinearizableReads;
use crate::sessions::SessionLimits;
use crate::versioned::TimestampSource;
use cairn_types::NodeId;
use rocksdb::DB;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything a replica shares with the other replicas of its node.
pub struct ReplicaContext {
    pub node_id: NodeId,
    pub db: Arc<DB>,
    /// Each shard keeps its snapshot files in `<snapshot_root>/shard-<id>/`.
    pub snapshot_root: PathBuf,
    pub channels: PeerChannels,
    pub group_commit: GroupCommit,
    pub raft_config: Arc<openraft::Config>,
    pub session_limits: SessionLimits,
    /// Longest a proposal waits to be applied.
    pub propose_timeout: Duration,
    /// Longest a linearizable read waits for its read index.
    pub read_index_timeout: Duration,
    /// How a leader confirms it may serve a linearizable read (D26).
    pub linearizable_reads: LinearizableReads,
    /// Whether a replica reopened with a vote on disk stays out of elections for one lease
    /// (D26). Storage nodes: always, whatever their own `linearizable_reads`, because a peer
    /// may lead by lease. The coordinator's group reads by lease too (its oracle fences by it).
    pub hold_votes_after_restart: bool,
    /// The node's compaction points, shared with the database's compaction filter.
    pub compaction_points: Arc<CompactionPoints>,
    /// The timestamp oracle writes take their revisions from; `None` for groups that count
    /// their own revisions (the coordinator's metadata, a statically bootstrapped node).
    pub timestamps: Option<Arc<dyn TimestampSource>>,
}
