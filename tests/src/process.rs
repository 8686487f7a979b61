//! The processes of a test cluster: what they are (`Role`), how a test names one
//! (`ProcessId`), and where each listens.
//!
//! Every process gets its own loopback IP so that logs, proxies and link faults tell them
//! apart by address: the process in slot `s` of a role listens on 127.0.0.`s` (node),
//! 127.0.0.`100 + s` (coordinator) or 127.0.0.`150 + s` (gateway), on the cluster's port.

use cairn_types::NodeId;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

/// Slots of each role: loopback IPs 127.0.0.1-12 (nodes), .101-112 (coordinators) and
/// .151-162 (gateways).
pub(crate) const SLOTS_MAX: u8 = 12;

/// What a process of the test cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Node,
    Coordinator,
    Gateway,
}

/// How a test names a process of the cluster: one kind of id for every role.
///
/// A storage node is named by the node id the cluster gave it (the coordinators at its join,
/// or `--node-id` in a static bootstrap), so the ids a coordinator or a node reports name
/// processes as they are; a coordinator by its member id; a gateway by its number in the
/// test (1, 2, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessId {
    Node(NodeId),
    Coordinator(u64),
    Gateway(u64),
}

impl ProcessId {
    pub fn role(self) -> Role {
        match self {
            ProcessId::Node(_) => Role::Node,
            ProcessId::Coordinator(_) => Role::Coordinator,
            ProcessId::Gateway(_) => Role::Gateway,
        }
    }
}

impl From<NodeId> for ProcessId {
    fn from(node: NodeId) -> Self {
        ProcessId::Node(node)
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessId::Node(id) => write!(f, "node {}", id.0),
            ProcessId::Coordinator(id) => write!(f, "coordinator {id}"),
            ProcessId::Gateway(id) => write!(f, "gateway {id}"),
        }
    }
}

/// One process of the test cluster.
pub struct Process {
    pub role: Role,
    /// Picks the process's loopback IP; also the member id of a coordinator and the number
    /// of a gateway.
    pub(crate) slot: u8,
    /// A node's id, once it has one (a joining node learns it from the coordinators).
    pub(crate) node_id: Option<NodeId>,
    /// The address other processes reach it at (a node's proxy, when the cluster has one).
    pub address: String,
    /// The address it listens on; differs from `address` only behind a proxy.
    pub listen_address: String,
    /// The process's HTTP endpoint: /metrics, /livez, /readyz (same IP, port + 2).
    pub metrics_address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// Command-line arguments beyond the ones every process gets, and environment variables.
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) child: Option<Child>,
    pub(crate) paused: bool,
}

impl Process {
    /// The id a test names this process by; `None` for a node that has not learned its id.
    pub fn id(&self) -> Option<ProcessId> {
        match self.role {
            Role::Node => self.node_id.map(ProcessId::Node),
            Role::Coordinator => Some(ProcessId::Coordinator(u64::from(self.slot))),
            Role::Gateway => Some(ProcessId::Gateway(u64::from(self.slot))),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Running and not stopped by SIGSTOP.
    pub fn is_awake(&self) -> bool {
        self.is_running() && !self.paused
    }

    /// The process's name in file names and logs: `node-1`, `coordinator-2`, `gateway-1`.
    pub(crate) fn name(role: Role, slot: u8) -> String {
        match role {
            Role::Node => format!("node-{slot}"),
            Role::Coordinator => format!("coordinator-{slot}"),
            Role::Gateway => format!("gateway-{slot}"),
        }
    }

    /// The tail of the process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The loopback IP of the process in `slot` of `role`.
pub(crate) fn ip_of(role: Role, slot: u8) -> IpAddr {
    assert!(
        (1..=SLOTS_MAX).contains(&slot),
        "test process slots are 1..={SLOTS_MAX}"
    );
    let last = match role {
        Role::Node => slot,
        Role::Coordinator => 100 + slot,
        Role::Gateway => 150 + slot,
    };
    IpAddr::from([127, 0, 0, last])
}

pub(crate) fn address_of(role: Role, slot: u8, port: u16) -> String {
    format!("{}:{port}", ip_of(role, slot))
}

/// Picks a port that is free, with the two after it (a proxied node's private port, the
/// metrics endpoint), on every loopback address the cluster may use.
pub(crate) fn free_base_port() -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000u16..60_000);
        let free = [Role::Node, Role::Coordinator, Role::Gateway]
            .into_iter()
            .flat_map(|role| (1..=SLOTS_MAX).map(move |slot| ip_of(role, slot)))
            .all(|ip| {
                [port, port + 1, port + 2]
                    .iter()
                    .all(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
            });
        if free {
            return port;
        }
    }
    panic!("no free port on 127.0.0.x");
}

/// The binary `name` next to `sibling` (all workspace binaries share one target folder).
pub fn sibling_binary(sibling: &Path, name: &str) -> PathBuf {
    let path = sibling.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build every binary first (cargo build --workspace --bins)",
        path.display()
    );
    path
}
