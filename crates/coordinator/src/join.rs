//! JoinCluster (D50): which node id a joining storage node gets.
//!
//! A node that has an id asks for it back; a node without one gets a new id, never an
//! existing one. A join retried because its answer was lost must get the id its first
//! attempt was given, or every lost answer would leave an unused record behind: the node
//! draws a join token once per start-up and sends it with every attempt, and the token
//! (kept in the replicated metadata, so that a new coordinator leader knows it too) finds
//! that id again. Nothing is matched by address: a node that lost its data comes back at
//! its old address and must not take its old id, whose voters would then host nothing.
//!
//! A node whose data belongs to another cluster is refused before anything is written.

use crate::coordinator::Coordinator;
use crate::error::{CoordinatorError, Result};
use crate::heartbeat::{storage_engine_from_proto, storage_engine_name};
use crate::metadata::NodeRecord;
use cairn_proto::coordinator::v1 as pb;
use cairn_raft::database::StorageEngine;
use cairn_types::NodeId;
use std::collections::BTreeMap;

/// Longest join token accepted, in bytes (a node sends 32 hexadecimal digits).
pub const JOIN_TOKEN_BYTES_MAX: usize = 64;

/// What a join asks for, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// The node's id from before: it gets that record back.
    Known(NodeId),
    /// A new node whose retries carry this token: the first attempt allocates the id, later
    /// ones find it.
    Token(String),
    /// A new node without a token (an older node binary, or a node registered ahead with
    /// `cairnctl join`): a new id on every attempt.
    Anonymous,
}

impl JoinKind {
    /// Checks `request` against the cluster it asks to join (`cluster_id`): an empty
    /// address, a malformed token, or data of another cluster is refused.
    pub fn of(request: &pb::JoinClusterRequest, cluster_id: &str) -> Result<JoinKind> {
        if request.address.is_empty() {
            return Err(CoordinatorError::Invalid {
                field: "address",
                reason: "must be set".into(),
            });
        }
        if !request.cluster_id.is_empty() && request.cluster_id != cluster_id {
            return Err(CoordinatorError::Invalid {
                field: "cluster_id",
                reason: format!(
                    "the node's data belongs to cluster {:?}, these coordinators lead cluster \
                     {cluster_id:?}",
                    request.cluster_id
                ),
            });
        }
        let token = &request.join_token;
        if token.len() > JOIN_TOKEN_BYTES_MAX
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(CoordinatorError::Invalid {
                field: "join_token",
                reason: format!("must be at most {JOIN_TOKEN_BYTES_MAX} letters, digits or '-'"),
            });
        }
        Ok(match (request.node_id, token.is_empty()) {
            (0, true) => JoinKind::Anonymous,
            (0, false) => JoinKind::Token(token.clone()),
            // A node that has an id sends no token; one it sends anyway changes nothing.
            (id, _) => JoinKind::Known(NodeId(id)),
        })
    }
}

/// Draws a join token: 128 random bits, in hexadecimal.
pub fn new_join_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Coordinator {
    pub async fn join(&self, request: pb::JoinClusterRequest) -> Result<pb::JoinClusterResponse> {
        if !self.leader_state().await? {
            return Err(self.not_leader());
        }
        let cluster = self.cluster().await?;
        // Checked before anything is read or written: a node of another cluster must not
        // rewrite the address of the record that has its id here.
        let kind = JoinKind::of(&request, &cluster.cluster_id)?;
        let engine = storage_engine_from_proto(request.storage_engine());
        let metadata = self.metadata.read_all().await?;
        let labels: BTreeMap<String, String> = request
            .labels
            .into_iter()
            .map(|l| (l.key, l.value))
            .collect();
        let id = match kind {
            JoinKind::Known(id) => {
                let record = metadata
                    .nodes
                    .get(&id)
                    .ok_or(CoordinatorError::UnknownNode(id.0))?;
                if record.left {
                    return Err(CoordinatorError::Invalid {
                        field: "node_id",
                        reason: "this node left the cluster".into(),
                    });
                }
                id
            }
            JoinKind::Token(token) => match self.metadata.join_token(&token).await? {
                Some(id) => id,
                None => {
                    let allocated = self.metadata.allocate_node_id().await?;
                    self.metadata.claim_join_token(&token, allocated).await?
                }
            },
            JoinKind::Anonymous => self.metadata.allocate_node_id().await?,
        };
        let existing = metadata.nodes.get(&id);
        if existing.is_some_and(|record| record.left) {
            // Only a token can lead here: the same start-up of a node joining again after
            // it was drained, which it must not.
            return Err(CoordinatorError::Invalid {
                field: "join_token",
                reason: "the node this join created has left the cluster".into(),
            });
        }
        let record = NodeRecord {
            id,
            address: request.address,
            labels,
            leaving: existing.is_some_and(|record| record.leaving),
            left: false,
        };
        // The record may be missing for a claimed token: the leader that claimed it died
        // before writing it.
        if existing != Some(&record) {
            self.metadata.put_node(&record).await?;
        }
        tracing::info!(node = %record.id, address = %record.address, storage_engine = storage_engine_name(engine), "node joined");
        if engine == Some(StorageEngine::Memory) {
            tracing::warn!(node = %record.id, address = %record.address, "node keeps its data in memory: it loses everything when it stops and comes back as a new node");
        }
        Ok(pb::JoinClusterResponse {
            node_id: record.id.0,
            cluster_id: cluster.cluster_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(node_id: u64, token: &str, cluster_id: &str) -> pb::JoinClusterRequest {
        pb::JoinClusterRequest {
            address: "node-1:7101".into(),
            node_id,
            join_token: token.into(),
            cluster_id: cluster_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_without_an_id_is_known_by_its_token_never_by_its_address() {
        let token = new_join_token();
        assert_eq!(token.len(), 32);
        assert_ne!(token, new_join_token(), "one token per start-up");
        assert_eq!(
            JoinKind::of(&request(0, &token, ""), "c1").unwrap(),
            JoinKind::Token(token.clone())
        );
        assert_eq!(
            JoinKind::of(&request(0, "", ""), "c1").unwrap(),
            JoinKind::Anonymous,
            "no token: a new id on every attempt"
        );
        assert_eq!(
            JoinKind::of(&request(7, &token, "c1"), "c1").unwrap(),
            JoinKind::Known(NodeId(7))
        );
    }

    #[test]
    fn a_node_of_another_cluster_or_a_malformed_join_is_refused() {
        let refused =
            |request: pb::JoinClusterRequest, field: &str| match JoinKind::of(&request, "c1") {
                Err(CoordinatorError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected {field} to be refused, got {other:?}"),
            };
        refused(request(7, "", "c2"), "cluster_id");
        refused(request(0, "", "c2"), "cluster_id");
        refused(
            pb::JoinClusterRequest {
                address: String::new(),
                ..request(0, "", "")
            },
            "address",
        );
        refused(
            request(0, &"a".repeat(JOIN_TOKEN_BYTES_MAX + 1), ""),
            "join_token",
        );
        refused(request(0, "no/slashes", ""), "join_token");
        assert!(JoinKind::of(&request(0, &"a".repeat(JOIN_TOKEN_BYTES_MAX), ""), "c1").is_ok());
    }
}
