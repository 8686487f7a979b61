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
        }
    }
}
