//! Which node a call to a node's internal services is meant for (part of the wire contract,
//! like the messages): senders stamp the destination node id and cluster id into gRPC
//! metadata with [`Destination`] (an interceptor), and a node checks them with [`check`]
//! before serving anything. A node never acts on a call meant for another node or cluster
//! that reached it because the address was reused (a replaced machine, a Kubernetes pod that
//! lost its volume): it answers FAILED_PRECONDITION with a `WrongNode` detail, and the sender
//! knows the node it meant is gone from that address (`wrong_node_of`).
//!
//! A call that names no destination is served: tools and tests talk to a node by address.

use crate::kv::v1 as kv;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The node id the call is meant for, in decimal.
pub const DESTINATION_NODE_HEADER: &str = "cairn-destination-node";
/// The cluster id of the cluster the call is meant for.
pub const CLUSTER_ID_HEADER: &str = "cairn-cluster-id";

/// The node a call is meant for. As an interceptor it stamps every call of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    /// 0: not named.
    pub node_id: u64,
    /// Empty: not named (a statically bootstrapped cluster has no cluster id).
    pub cluster_id: String,
}

impl Destination {
    pub fn new(node_id: u64, cluster_id: impl Into<String>) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.into(),
        }
    }

    /// Writes the destination into `metadata` (replacing what was there).
    pub fn stamp(&self, metadata: &mut MetadataMap) {
        if self.node_id != 0 {
            let value: MetadataValue<Ascii> = self
                .node_id
                .to_string()
                .parse()
                .expect("a decimal number is a valid header value");
            metadata.insert(DESTINATION_NODE_HEADER, value);
        }
        // A cluster id is generated ASCII; one that is not cannot be sent and is left out.
        if let Ok(value) = self.cluster_id.parse() {
            if !self.cluster_id.is_empty() {
                metadata.insert(CLUSTER_ID_HEADER, value);
            }
        }
    }
}

impl tonic::service::Interceptor for Destination {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.stamp(request.metadata_mut());
        Ok(request)
    }
}

/// The receiving node's identity, to check calls against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub node_id: u64,
    /// Empty when the node belongs to no named cluster (static bootstrap).
    pub cluster_id: String,
}

/// Why a call was refused: what it named and who received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongNode {
    pub intended_node_id: u64,
    pub intended_cluster_id: String,
    pub node_id: u64,
    pub cluster_id: String,
}

impl std::fmt::Display for WrongNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "request meant for node-{} of cluster {:?} reached node-{} of cluster {:?}: that node is gone from this address",
            self.intended_node_id, self.intended_cluster_id, self.node_id, self.cluster_id
        )
    }
}

impl From<WrongNode> for Status {
    fn from(wrong: WrongNode) -> Status {
        let message = wrong.to_string();
        crate::status::with_detail(
            Code::FailedPrecondition,
            message,
            kv::error_detail::Kind::WrongNode(kv::WrongNode {
                intended_node_id: wrong.intended_node_id,
                intended_cluster_id: wrong.intended_cluster_id,
                node_id: wrong.node_id,
                cluster_id: wrong.cluster_id,
            }),
        )
    }
}

/// Whether a call with `metadata` (and, for Raft messages, the node id `body_node_id` its
/// envelope names; 0 if none) may be served by the node `me`.
///
/// Refused: a named node other than `me`, an unreadable node header, or a named cluster
/// other than `me`'s when `me` has one.
pub fn check(metadata: &MetadataMap, body_node_id: u64, me: &Identity) -> Result<(), WrongNode> {
    let header_node = match metadata.get(DESTINATION_NODE_HEADER) {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or(()),
    };
    let intended_cluster_id = metadata
        .get(CLUSTER_ID_HEADER)
        .map(|value| value.to_str().unwrap_or("<not ASCII>").to_string())
        .unwrap_or_default();
    let refuse = |intended_node_id: u64| WrongNode {
        intended_node_id,
        intended_cluster_id: intended_cluster_id.clone(),
        node_id: me.node_id,
        cluster_id: me.cluster_id.clone(),
    };
    let header_node = header_node.map_err(|()| refuse(0))?;
    for named in [header_node, body_node_id] {
        if named != 0 && named != me.node_id {
            return Err(refuse(named));
        }
    }
    if !intended_cluster_id.is_empty()
        && !me.cluster_id.is_empty()
        && intended_cluster_id != me.cluster_id
    {
        return Err(refuse(header_node.max(body_node_id)));
    }
    Ok(())
}

/// The refusal in `status`, if it is one.
pub fn wrong_node_of(status: &Status) -> Option<kv::WrongNode> {
    match crate::status::detail_of(status)? {
        kv::error_detail::Kind::WrongNode(wrong) => Some(wrong),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Identity {
        Identity {
            node_id: 5,
            cluster_id: "c-1".into(),
        }
    }

    fn stamped(destination: Destination) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        destination.stamp(&mut metadata);
        metadata
    }

    #[test]
    fn a_call_for_this_node_of_this_cluster_is_served() {
        assert_eq!(
            check(&stamped(Destination::new(5, "c-1")), 0, &me()),
            Ok(())
        );
        assert_eq!(
            check(&stamped(Destination::new(5, "c-1")), 5, &me()),
            Ok(())
        );
    }

    #[test]
    fn a_call_that_names_nothing_is_served() {
        assert_eq!(check(&MetadataMap::new(), 0, &me()), Ok(()));
    }

    #[test]
    fn a_call_for_another_node_is_refused_with_a_typed_detail() {
        let refused = check(&stamped(Destination::new(2, "c-1")), 0, &me()).unwrap_err();
        assert_eq!(refused.intended_node_id, 2);
        assert_eq!(refused.node_id, 5);
        let status = Status::from(refused.clone());
        assert_eq!(status.code(), Code::FailedPrecondition);
        let detail = wrong_node_of(&status).expect("a WrongNode detail");
        assert_eq!(detail.intended_node_id, 2);
        assert_eq!(detail.node_id, 5);
        assert_eq!(detail.cluster_id, "c-1");
        assert!(wrong_node_of(&Status::unavailable("x")).is_none());
    }

    #[test]
    fn a_raft_envelope_for_another_node_is_refused_even_without_headers() {
        let refused = check(&MetadataMap::new(), 3, &me()).unwrap_err();
        assert_eq!(refused.intended_node_id, 3);
    }

    #[test]
    fn a_call_for_another_cluster_is_refused() {
        let refused = check(&stamped(Destination::new(5, "c-2")), 0, &me()).unwrap_err();
        assert_eq!(refused.intended_cluster_id, "c-2");
        assert_eq!(refused.cluster_id, "c-1");
        // A node of no named cluster (static bootstrap) checks the node id only.
        let unnamed = Identity {
            node_id: 5,
            cluster_id: String::new(),
        };
        assert_eq!(
            check(&stamped(Destination::new(5, "c-2")), 0, &unnamed),
            Ok(())
        );
    }

    #[test]
    fn an_unreadable_node_header_is_refused() {
        let mut metadata = MetadataMap::new();
        metadata.insert(DESTINATION_NODE_HEADER, "node-5".parse().unwrap());
        assert!(check(&metadata, 0, &me()).is_err());
    }
}
