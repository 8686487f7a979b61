//! Generated protobuf and gRPC code for every Cairn service.
//!
//! The `.proto` files in the top-level `proto/` folder are the contract; this crate only
//! compiles them. Conversions to domain types live with the domain types' owners, so that
//! validation happens once, on receive. This crate must not depend on any other Cairn crate.
//! Besides the generated code it holds what is part of the same contract: `addressing`, the
//! metadata every call to a node's internal services carries; `status`, the structured
//! `ErrorDetail` a status carries; and `retry`, what a status means for sending the call again
//! (one classification and one back-off for every caller, D46). It is the lowest crate that
//! sees both `tonic::Status` and `ErrorDetail`, and every caller already depends on it.

pub mod addressing;
pub mod retry;
pub mod status;

pub mod kv {
    pub mod v1 {
        tonic::include_proto!("cairn.kv.v1");
    }
}

pub mod node {
    pub mod v1 {
        tonic::include_proto!("cairn.node.v1");
    }
}

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("cairn.raft.v1");
    }
}

pub mod coordinator {
    pub mod v1 {
        tonic::include_proto!("cairn.coordinator.v1");
    }
}
