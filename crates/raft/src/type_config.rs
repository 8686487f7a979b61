//! The openraft type configuration of a shard's Raft group.

use crate::command::{Command, CommandResponse, WriteOp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a Raft membership records about a member: where to reach its node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// `host:port` of the node's gRPC server.
    pub address: String,
}

openraft::declare_raft_types!(
    /// Type configuration of every shard's Raft group.
    pub ShardRaftConfig:
        D = Command,
        R = CommandResponse,
        NodeId = cairn_types::NodeId,
        Node = NodeAddress,
);

pub type LogId = openraft::type_config::alias::LogIdOf<ShardRaftConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<ShardRaftConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<ShardRaftConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<ShardRaftConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<ShardRaftConfig>;

/// The Raft transport's messages and answers as their payloads decode ([`crate::network`],
/// [`crate::transport`]): named here so that the fuzz targets, which decode them from any
/// bytes, need not name openraft.
pub mod wire {
    use super::{ShardRaftConfig as C, SnapshotMeta, Vote};
    use openraft::error::RaftError;
    use openraft::raft;

    pub type AppendEntriesRequest = raft::AppendEntriesRequest<C>;
    pub type AppendEntriesReply = Result<raft::AppendEntriesResponse<C>, RaftError<C>>;
    pub type VoteRequest = raft::VoteRequest<C>;
    pub type VoteReply = Result<raft::VoteResponse<C>, RaftError<C>>;
    pub type TransferLeaderRequest = raft::TransferLeaderRequest<C>;
    pub type TransferLeaderReply = Result<raft::TransferLeaderResponse<C>, RaftError<C>>;
    /// What the first chunk of a snapshot stream carries in its header.
    pub type SnapshotHeader = (Vote, SnapshotMeta);
    pub type SnapshotReply = Result<raft::SnapshotResponse<C>, RaftError<C>>;
}

/// Most spans one batch of entries opens for traced entries (log append, replication): a
/// batch of sampled requests must not turn into thousands of spans.
pub(crate) const TRACED_ENTRIES_PER_BATCH_MAX: usize = 8;

/// The trace of a sampled client write carried by `entry`.
pub(crate) fn entry_trace(entry: &Entry) -> Option<cairn_trace_context::TraceParent> {
    match &entry.payload {
        openraft::EntryPayload::Normal(command) => command.trace,
        _ => None,
    }
}

/// One span per traced entry in `entries` (at most [`TRACED_ENTRIES_PER_BATCH_MAX`]), each a
/// child of its request's trace; dropping them ends them.
pub(crate) fn spans_for_traced<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    make_span: impl Fn(&Entry) -> tracing::Span,
) -> Vec<tracing::Span> {
    entries
        .into_iter()
        .filter_map(|entry| entry_trace(entry).map(|parent| (entry, parent)))
        .take(TRACED_ENTRIES_PER_BATCH_MAX)
        .map(|(entry, parent)| {
            let span = make_span(entry);
            parent.adopt(&span);
            span
        })
        .collect()
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            WriteOp::Put(put) => write!(
                f,
                "put({} key bytes, {} value bytes)",
                put.key.len(),
                put.value.len()
            ),
            WriteOp::Delete(delete) => write!(f, "delete({} key bytes)", delete.key.len()),
            WriteOp::Txn(txn) => write!(
                f,
                "txn({} compares, {} success ops, {} failure ops)",
                txn.compares.len(),
                txn.success.len(),
                txn.failure.len()
            ),
            WriteOp::Compact { revision } => write!(f, "compact(to {revision})"),
            WriteOp::Prewrite(prewrite) => write!(
                f,
                "prewrite(start {}, {} keys)",
                prewrite.start_ts,
                prewrite.mutations.len()
            ),
            WriteOp::Commit(commit) => write!(
                f,
                "commit(start {}, at {}, {} keys)",
                commit.start_ts,
                commit.commit_ts,
                commit.keys.len()
            ),
            WriteOp::Rollback { start_ts, keys } => {
                write!(f, "rollback(start {start_ts}, {} keys)", keys.len())
            }
            WriteOp::ResolveLocks {
                start_ts,
                keys,
                resolution,
            } => write!(
                f,
                "resolve_locks(start {start_ts}, {} keys, {resolution:?})",
                keys.len()
            ),
            WriteOp::CheckTxnStatus { start_ts, .. } => {
                write!(f, "check_txn_status(start {start_ts})")
            }
        }
    }
}
