//! What cluster a test wants, built up by name instead of by position:
//!
//! ```ignore
//! let cluster = ClusterSpec::new(Path::new(env!("CARGO_BIN_EXE_cairn-gateway")))
//!     .nodes(3)
//!     .shards(4)
//!     .gateways(1)
//!     .fast_failure_detection()
//!     .start()
//!     .await;
//! ```

use crate::process::{sibling_binary, Role};
use crate::Cluster;
use std::path::{Path, PathBuf};

/// How often the coordinators reconcile in a test cluster: fast, so placement settles in
/// seconds.
const RECONCILE_INTERVAL_MS: &str = "200";
/// How often a test cluster's nodes heartbeat.
const HEARTBEAT_INTERVAL_MS: &str = "300";
/// With `fast_failure_detection`: a node silent this long is suspect...
const SUSPECT_AFTER_MS: &str = "1500";
/// ...and this long is down (its replicas are replaced).
const DOWN_AFTER_MS: &str = "3000";

/// A test cluster to start: which processes, how many shards, and their settings.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub(crate) binaries: PathBuf,
    pub(crate) coordinators: u64,
    pub(crate) nodes: u64,
    pub(crate) gateways: u64,
    pub(crate) shard_count: u32,
    pub(crate) replication_factor: u32,
    pub(crate) network_faults: bool,
    pub(crate) tls: bool,
    env: Vec<(Option<Role>, String, String)>,
}

impl ClusterSpec {
    /// One coordinator, three storage nodes that join it, no gateway, four shards of three
    /// replicas; the coordinators reconcile every 200 ms and the nodes heartbeat every
    /// 300 ms. `binary` is any binary of the workspace (e.g. `env!("CARGO_BIN_EXE_cairn-node")`):
    /// the others are built into the same folder.
    pub fn new(binary: &Path) -> Self {
        ClusterSpec {
            binaries: sibling_binary(binary, "cairn-node"),
            coordinators: 1,
            nodes: 3,
            gateways: 0,
            shard_count: 4,
            replication_factor: 3,
            network_faults: false,
            tls: false,
            env: Vec::new(),
        }
    }

    /// No coordinator: node `n` gets node id `n` and the nodes found every shard on all of
    /// them (`--bootstrap-members`).
    pub fn static_bootstrap(mut self) -> Self {
        self.coordinators = 0;
        self
    }

    /// A coordinator group of `count` members (1 or 3).
    pub fn coordinators(mut self, count: u64) -> Self {
        self.coordinators = count;
        self
    }

    pub fn nodes(mut self, count: u64) -> Self {
        self.nodes = count;
        self
    }

    /// Gateways started with the cluster, numbered 1..=count.
    pub fn gateways(mut self, count: u64) -> Self {
        self.gateways = count;
        self
    }

    pub fn shards(mut self, count: u32) -> Self {
        self.shard_count = count;
        self
    }

    pub fn replication_factor(mut self, count: u32) -> Self {
        self.replication_factor = count;
        self
    }

    /// Nodes are suspected after 1.5 s without a heartbeat and declared down (their
    /// replicas replaced) after 3 s, so fault tests see repairs within seconds.
    pub fn fast_failure_detection(self) -> Self {
        self.coordinator_env(&[
            ("CAIRN_SUSPECT_AFTER_MS", SUSPECT_AFTER_MS),
            ("CAIRN_DOWN_AFTER_MS", DOWN_AFTER_MS),
        ])
    }

    /// A proxy in front of every node (see `network`): `partition`, `set_link` and `heal`
    /// then act on the traffic to the nodes. Every process binds its outgoing connections to
    /// its own loopback IP (`outbound_bind_ip`), so a proxy knows each connection's link.
    pub fn network_faults(mut self) -> Self {
        self.network_faults = true;
        self
    }

    /// Mutual TLS everywhere: a CA and a certificate per role are written into the cluster's
    /// folder, every process gets its `[tls]` settings, and the harness's own calls present a
    /// certificate of roles coordinator and gateway (see `Cluster::tls_files`).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Environment variables (e.g. `CAIRN_*` settings) for every process.
    pub fn env(self, env: &[(&str, &str)]) -> Self {
        self.env_of(None, env)
    }

    pub fn coordinator_env(self, env: &[(&str, &str)]) -> Self {
        self.env_of(Some(Role::Coordinator), env)
    }

    pub fn node_env(self, env: &[(&str, &str)]) -> Self {
        self.env_of(Some(Role::Node), env)
    }

    pub fn gateway_env(self, env: &[(&str, &str)]) -> Self {
        self.env_of(Some(Role::Gateway), env)
    }

    fn env_of(mut self, role: Option<Role>, env: &[(&str, &str)]) -> Self {
        self.env.extend(
            env.iter()
                .map(|(name, value)| (role, name.to_string(), value.to_string())),
        );
        self
    }

    /// The environment a process of `role` is started with: the test timing first, then
    /// the test's own settings (which win over it).
    pub(crate) fn env_for(&self, role: Role) -> Vec<(String, String)> {
        let timing: &[(&str, &str)] = match role {
            Role::Coordinator => &[("CAIRN_RECONCILE_INTERVAL_MS", RECONCILE_INTERVAL_MS)],
            // A static bootstrap's nodes have no coordinator section to time.
            Role::Node if self.coordinators > 0 => &[(
                "CAIRN_COORDINATOR__HEARTBEAT_INTERVAL_MS",
                HEARTBEAT_INTERVAL_MS,
            )],
            Role::Node | Role::Gateway => &[],
        };
        timing
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .chain(
                self.env
                    .iter()
                    .filter(|(only, _, _)| only.is_none_or(|only| only == role))
                    .map(|(_, name, value)| (name.clone(), value.clone())),
            )
            .collect()
    }

    pub(crate) fn binary(&self, role: Role) -> PathBuf {
        let name = match role {
            Role::Node => "cairn-node",
            Role::Coordinator => "cairn-coordinator",
            Role::Gateway => "cairn-gateway",
        };
        sibling_binary(&self.binaries, name)
    }

    /// Starts the cluster: coordinators, then nodes (returns once each node answers with
    /// its node id), then gateways. Placement and elections go on in the background: wait
    /// for them with `wait_for_placement` / `wait_for_leader`.
    pub async fn start(self) -> Cluster {
        Cluster::start(self).await
    }
}
