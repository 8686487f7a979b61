//! The cluster test harness: starts real `cairn-node` processes on distinct loopback
//! addresses with data in a temporary folder, kills (-9), pauses (SIGSTOP) and restarts
//! them, partitions, delays and drops their traffic (`network`), records checked histories
//! (`workload`), and offers `wait_for` and `must_*` helpers so that a cluster test reads as
//! phases.
//!
//! It talks to processes only through their gRPC APIs (the `cairn-proto` crate), never
//! through server crates, so it tests what an operator or client would see.

pub mod otlp;
use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use cairn_proto::kv::v1 as kv;
use cairn_proto::kv::v1::cluster_client::ClusterClient;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use prost::Message;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

mod faults;
pub mod network;
mod replicas;
pub mod workload;

pub use network::{LinkFault, Network};

/// Pause between polls of `wait_for`; waiting is always on observable state, this only
/// spaces out the checks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Installs a test log subscriber once (RUST_LOG controls it).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a process of the test cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node,
    Coordinator,
    Gateway,
}

/// One process of the test cluster (a storage node or a coordinator).
pub struct NodeProcess {
    pub role: Role,
    pub id: u64,
    /// The address other processes reach it at (a node's proxy, when the cluster has one).
    pub address: String,
    /// The address it listens on; differs from `address` only behind a proxy.
    pub listen_address: String,
    /// The process's HTTP endpoint: /metrics, /livez, /readyz (same IP, port + 2).
    pub metrics_address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A set of real Cairn processes. Dropping it kills them all.
pub struct Cluster {
    node_binary: PathBuf,
    coordinator_binary: Option<PathBuf>,
    /// Coordinator addresses nodes are started with (empty: static bootstrap).
    coordinator_addresses: Vec<String>,
    root: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    pub shard_count: u32,
    base_port: u16,
    /// The proxies in front of the nodes, in a cluster started with network faults.
    network: Option<Arc<Network>>,
}

/// Picks a port that is free, with the two after it (a proxied node's private port, the
/// metrics endpoint), on every loopback address the cluster may use.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000u16..60_000);
        let free = (1..=12u8).chain(101..=105).chain(151..=153).all(|i| {
            [port, port + 1, port + 2]
                .iter()
                .all(|p| std::net::TcpListener::bind(format!("127.0.0.{i}:{p}")).is_ok())
        });
        if free {
            return port;
        }
    }
    panic!("no free port on 127.0.0.x");
}

/// Node `id` listens on 127.0.0.`id`, coordinator `id` on 127.0.0.`100 + id`, so processes
/// are told apart by address in logs and rules.
fn address_of(role: Role, id: u64, port: u16) -> String {
    assert!((1..=12).contains(&id), "test process ids are 1..=12");
    match role {
        Role::Node => format!("127.0.0.{id}:{port}"),
        Role::Coordinator => format!("127.0.0.{}:{port}", 100 + id),
        Role::Gateway => format!("127.0.0.{}:{port}", 150 + id),
    }
}

/// The loopback IP of a test process: 127.0.0.`id` for node `id`, 127.0.0.`100 + id` for a
/// coordinator, 127.0.0.`150 + id` for a gateway.
pub fn ip_of(role: Role, id: u64) -> IpAddr {
    address_of(role, id, 1)
        .parse::<std::net::SocketAddr>()
        .expect("test address")
        .ip()
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

impl Cluster {
    fn empty(node_binary: &Path, coordinator_binary: Option<&Path>, shard_count: u32) -> Cluster {
        init_logging();
        Cluster {
            node_binary: node_binary.to_path_buf(),
            coordinator_binary: coordinator_binary.map(Path::to_path_buf),
            coordinator_addresses: Vec::new(),
            root: tempfile::Builder::new()
                .prefix("cairn-cluster-")
                .tempdir()
                .expect("temp dir"),
            nodes: Vec::new(),
            shard_count,
            base_port: free_base_port(),
            network: None,
        }
    }

    /// Starts `node_count` nodes (ids 1..=n) with a static bootstrap of `shard_count` shards,
    /// each replicated on every node. `extra_env` is passed to every node (e.g. CAIRN_* tuning).
    pub async fn start(
        binary: &Path,
        node_count: u64,
        shard_count: u32,
        extra_env: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Cluster::empty(binary, None, shard_count);
        let members: Vec<String> = (1..=node_count)
            .map(|id| format!("{id}={}", address_of(Role::Node, id, cluster.base_port)))
            .collect();
        for id in 1..=node_count {
            let mut args = vec![
                format!("--node-id={id}"),
                format!("--bootstrap-shard-count={shard_count}"),
                format!("--bootstrap-members={}", members.join(",")),
            ];
            args.extend(
                extra_env
                    .iter()
                    .map(|(name, value)| format!("env:{name}={value}")),
            );
            cluster.add_process(Role::Node, id, args);
        }
        cluster
    }

    /// Starts `coordinator_count` coordinators (a group of 1 or 3) that create a cluster of
    /// `shard_count` shards with `replication_factor`, and `node_count` nodes that join it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with_coordinators(
        node_binary: &Path,
        coordinator_binary: &Path,
        coordinator_count: u64,
        node_count: u64,
        shard_count: u32,
        replication_factor: u32,
        coordinator_env: &[(&str, &str)],
        node_env: &[(&str, &str)],
    ) -> Cluster {
        Cluster::empty(node_binary, Some(coordinator_binary), shard_count)
            .launch(
                coordinator_count,
                node_count,
                replication_factor,
                coordinator_env,
                node_env,
            )
            .await
    }

    /// Like `start_with_coordinators`, with a proxy in front of every node (see `network`):
    /// `partition`, `set_link` and `heal` then act on the traffic to the nodes. Every process
    /// binds its outgoing connections to its own loopback IP (`outbound_bind_ip`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with_network_faults(
        node_binary: &Path,
        coordinator_binary: &Path,
        coordinator_count: u64,
        node_count: u64,
        shard_count: u32,
        replication_factor: u32,
        coordinator_env: &[(&str, &str)],
        node_env: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = Cluster::empty(node_binary, Some(coordinator_binary), shard_count);
        cluster.network = Some(Network::new());
        cluster
            .launch(
                coordinator_count,
                node_count,
                replication_factor,
                coordinator_env,
                node_env,
            )
            .await
    }

    async fn launch(
        self,
        coordinator_count: u64,
        node_count: u64,
        replication_factor: u32,
        coordinator_env: &[(&str, &str)],
        node_env: &[(&str, &str)],
    ) -> Cluster {
        let mut cluster = self;
        let shard_count = cluster.shard_count;
        cluster.coordinator_addresses = (1..=coordinator_count)
            .map(|id| address_of(Role::Coordinator, id, cluster.base_port))
            .collect();
        let members: Vec<String> = cluster
            .coordinator_addresses
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect();
        for id in 1..=coordinator_count {
            let mut args = vec![
                format!("--member-id={id}"),
                format!("--members={}", members.join(",")),
                format!("--shard-count={shard_count}"),
                format!("--replication-factor={replication_factor}"),
            ];
            args.extend(
                coordinator_env
                    .iter()
                    .map(|(name, value)| format!("env:{name}={value}")),
            );
            cluster.add_process(Role::Coordinator, id, args);
        }
        for id in 1..=node_count {
            cluster.add_node(id, node_env);
        }
        cluster
    }

    /// Starts one more storage node. With coordinators it joins the cluster and gets its id
    /// from them (`id` only picks its address); without, it has node id `id` and hosts
    /// nothing until told to.
    pub fn add_node(&mut self, id: u64, extra_env: &[(&str, &str)]) {
        let mut args: Vec<String> = extra_env
            .iter()
            .map(|(name, value)| format!("env:{name}={value}"))
            .collect();
        if self.coordinator_addresses.is_empty() {
            args.push(format!("--node-id={id}"));
        } else {
            args.push(format!(
                "--coordinators={}",
                self.coordinator_addresses.join(",")
            ));
        }
        self.add_process(Role::Node, id, args);
    }

    fn add_process(&mut self, role: Role, id: u64, mut args: Vec<String>) {
        let address = address_of(role, id, self.base_port);
        let mut listen_address = address.clone();
        if let Some(network) = &self.network {
            let ip = ip_of(role, id);
            args.push(match role {
                Role::Node => format!("env:CAIRN_TRANSPORT__OUTBOUND_BIND_IP={ip}"),
                Role::Coordinator | Role::Gateway => format!("env:CAIRN_OUTBOUND_BIND_IP={ip}"),
            });
            if role == Role::Node {
                // The node listens privately and is reached through its proxy.
                listen_address = address_of(role, id, self.base_port + 1);
                args.push(format!("--advertise-address={address}"));
                network.add_proxy(
                    address.parse().expect("node address"),
                    listen_address.parse().expect("node listen address"),
                );
            }
        }
        let name = match role {
            Role::Node => format!("node-{id}"),
            Role::Coordinator => format!("coordinator-{id}"),
            Role::Gateway => format!("gateway-{id}"),
        };
        let data_dir = self.root.path().join(&name);
        let log_path = self.root.path().join(format!("{name}.log"));
        let metrics_address = address_of(role, id, self.base_port + 2);
        self.nodes.push(NodeProcess {
            role,
            id,
            address,
            listen_address,
            metrics_address,
            data_dir,
            log_path,
            args,
            child: None,
            paused: false,
        });
        self.spawn(role, id);
    }

    fn spawn(&mut self, role: Role, id: u64) {
        let binary = match role {
            Role::Node => self.node_binary.clone(),
            Role::Coordinator => self
                .coordinator_binary
                .clone()
                .expect("a coordinator binary"),
            Role::Gateway => sibling_binary(&self.node_binary, "cairn-gateway"),
        };
        let process = self.process_mut(role, id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log_path)
            .expect("log file");
        let mut command = Command::new(&binary);
        command.arg(format!("--listen-address={}", process.listen_address));
        command.arg(format!(
            "--metrics-listen-address={}",
            process.metrics_address
        ));
        if role != Role::Gateway {
            command.arg(format!("--data-dir={}", process.data_dir.display()));
        }
        command
            .env(
                "RUST_LOG",
                std::env::var("CAIRN_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for arg in &process.args {
            match arg.strip_prefix("env:") {
                Some(pair) => {
                    let (name, value) = pair.split_once('=').expect("env pair");
                    command.env(name, value);
                }
                None => {
                    command.arg(arg);
                }
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        tracing::info!(?role, id, address = %process.address, pid = child.id(), "started process");
        process.child = Some(child);
    }

    fn process(&self, role: Role, id: u64) -> &NodeProcess {
        self.nodes
            .iter()
            .find(|n| n.role == role && n.id == id)
            .unwrap_or_else(|| panic!("no {role:?} {id}"))
    }

    fn process_mut(&mut self, role: Role, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.role == role && n.id == id)
            .unwrap_or_else(|| panic!("no {role:?} {id}"))
    }

    /// Starts gateway `id` (1..=3) pointed at the coordinators.
    pub fn add_gateway(&mut self, id: u64) {
        self.add_gateway_with_env(id, &[]);
    }

    /// Starts gateway `id` (1..=3) with `extra_env` (e.g. CAIRN_* settings).
    pub fn add_gateway_with_env(&mut self, id: u64, extra_env: &[(&str, &str)]) {
        assert!(
            !self.coordinator_addresses.is_empty(),
            "a gateway needs coordinators"
        );
        let mut args = vec![format!(
            "--coordinators={}",
            self.coordinator_addresses.join(",")
        )];
        args.extend(
            extra_env
                .iter()
                .map(|(name, value)| format!("env:{name}={value}")),
        );
        self.add_process(Role::Gateway, id, args);
    }

    pub fn gateway(&self, id: u64) -> &NodeProcess {
        self.process(Role::Gateway, id)
    }

    pub fn kill_gateway(&mut self, id: u64) {
        self.kill_process(Role::Gateway, id);
    }

    pub fn restart_gateway(&mut self, id: u64) {
        self.kill_process(Role::Gateway, id);
        self.spawn(Role::Gateway, id);
    }

    /// Public KV and Cluster clients connected to gateway `id`, once it accepts connections.
    pub async fn gateway_clients(
        &self,
        id: u64,
        timeout: Duration,
    ) -> (KvClient<Channel>, ClusterClient<Channel>) {
        let address = self.gateway(id).address.clone();
        let channel = wait_for(
            &format!("gateway {id} to accept connections"),
            timeout,
            || {
                let address = address.clone();
                async move {
                    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
                        .ok()?
                        .connect_timeout(Duration::from_secs(1))
                        .timeout(Duration::from_secs(30))
                        .connect()
                        .await
                        .ok()
                }
            },
        )
        .await;
        (KvClient::new(channel.clone()), ClusterClient::new(channel))
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        self.process(Role::Node, id)
    }

    /// The cluster's temporary folder (data, logs, failure reports); kept when a test fails.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn coordinator(&self, id: u64) -> &NodeProcess {
        self.process(Role::Coordinator, id)
    }

    /// `kill -9` a storage node: no shutdown code runs, unsynced state is at the kernel's mercy.
    pub fn kill(&mut self, id: u64) {
        self.kill_process(Role::Node, id);
    }

    pub fn kill_coordinator(&mut self, id: u64) {
        self.kill_process(Role::Coordinator, id);
    }

    fn kill_process(&mut self, role: Role, id: u64) {
        let process = self.process_mut(role, id);
        process.paused = false;
        if let Some(mut child) = process.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
            tracing::info!(?role, id, "killed process (SIGKILL)");
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(Role::Node, id);
    }

    pub fn restart_coordinator(&mut self, id: u64) {
        self.kill_coordinator(id);
        self.spawn(Role::Coordinator, id);
    }

    /// Storage nodes that are running, by harness id.
    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Node && n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn running_coordinators(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.role == Role::Coordinator && n.is_running())
            .map(|n| n.id)
            .collect()
    }

    async fn coordinator_client(&self, id: u64) -> Option<CoordinatorClient<Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            self.coordinator(id).address
        ))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10));
        Some(CoordinatorClient::new(endpoint.connect().await.ok()?))
    }

    /// The cluster status from whichever coordinator leads, if one answers.
    /// Waits until the coordinator reports all `shards` placed, each with `voters` voters and
    /// a leader.
    pub async fn wait_for_placement(&self, shards: u32, voters: usize, timeout: Duration) {
        wait_for("every shard placed with a leader", timeout, || async move {
            let status = self.cluster_status().await?;
            (status.shards.len() == shards as usize
                && status
                    .shards
                    .iter()
                    .all(|s| s.voters.len() == voters && s.leader_node_id != 0))
            .then_some(())
        })
        .await;
    }

    pub async fn cluster_status(&self) -> Option<coordinator::ClusterStatusResponse> {
        for id in self.running_coordinators() {
            let Some(mut client) = self.coordinator_client(id).await else {
                continue;
            };
            if let Ok(status) = client
                .cluster_status(coordinator::ClusterStatusRequest {})
                .await
            {
                return Some(status.into_inner());
            }
        }
        None
    }

    /// The cluster status as coordinator `id` answers it (a follower passes it to the leader).
    pub async fn cluster_status_from(&self, id: u64) -> Option<coordinator::ClusterStatusResponse> {
        let mut client = self.coordinator_client(id).await?;
        Some(
            client
                .cluster_status(coordinator::ClusterStatusRequest {})
                .await
                .ok()?
                .into_inner(),
        )
    }

    /// Asks the coordinator leader to drain and remove the node it knows as `node_id`.
    pub async fn leave_cluster(&self, node_id: u64) -> bool {
        for id in self.running_coordinators() {
            let Some(mut client) = self.coordinator_client(id).await else {
                continue;
            };
            if client
                .leave_cluster(coordinator::LeaveClusterRequest { node_id })
                .await
                .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// The harness id of the node the coordinators know as `node_id` (matched by address).
    pub fn harness_id_of(
        &self,
        status: &coordinator::ClusterStatusResponse,
        node_id: u64,
    ) -> Option<u64> {
        let address = &status.nodes.iter().find(|n| n.node_id == node_id)?.address;
        self.nodes
            .iter()
            .find(|n| n.role == Role::Node && &n.address == address)
            .map(|n| n.id)
    }

    /// The node id the coordinators gave the harness node `id` (matched by address).
    pub fn cluster_id_of(
        &self,
        status: &coordinator::ClusterStatusResponse,
        id: u64,
    ) -> Option<u64> {
        let address = &self.node(id).address;
        status
            .nodes
            .iter()
            .find(|n| &n.address == address)
            .map(|n| n.node_id)
    }

    /// The tail of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn channel(&self, id: u64) -> Option<Channel> {
        // Straight to the node, past its proxy: the harness observes, it is never partitioned.
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            self.node(id).listen_address
        ))
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15));
        endpoint.connect().await.ok()
    }

    pub async fn kv(&self, id: u64) -> Option<ShardKvClient<Channel>> {
        Some(ShardKvClient::new(self.channel(id).await?))
    }

    pub async fn admin(&self, id: u64) -> Option<NodeAdminClient<Channel>> {
        Some(NodeAdminClient::new(self.channel(id).await?))
    }

    /// The node's view of its replica of `shard`, if the node answers.
    pub async fn status(&self, id: u64, shard: u64) -> Option<node::ReplicaStatus> {
        let mut admin = self.admin(id).await?;
        let response = admin
            .shard_status(node::ShardStatusRequest {
                shard_id: shard,
                all: false,
            })
            .await
            .ok()?;
        response.into_inner().replicas.into_iter().next()
    }

    /// The node that a running replica reports as leader of `shard`, agreed by that leader.
    pub async fn leader_of(&self, shard: u64) -> Option<u64> {
        // A paused node would hold the call until its timeout; it leads nobody meanwhile.
        let awake = self
            .running_ids()
            .into_iter()
            .filter(|id| !self.node(*id).paused);
        for id in awake {
            if let Some(status) = self.status(id, shard).await {
                if status.role == node::ReplicaRole::Leader as i32 {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The first of `candidates` that reports leading `shard` (paused nodes are skipped).
    pub async fn leader_among(&self, shard: u64, candidates: &[u64]) -> Option<u64> {
        for id in candidates {
            let node = self.node(*id);
            if !node.is_running() || node.paused {
                continue;
            }
            if let Some(status) = self.status(*id, shard).await {
                if status.role == node::ReplicaRole::Leader as i32 {
                    return Some(*id);
                }
            }
        }
        None
    }

    pub async fn wait_for_leader(&self, shard: u64, timeout: Duration) -> u64 {
        wait_for(&format!("a leader of shard {shard}"), timeout, || {
            self.leader_of(shard)
        })
        .await
    }

    /// Puts through whichever node leads the shard, retrying with the same write id on
    /// not-leader, unavailability and unknown outcomes until `timeout`.
    pub async fn must_put(
        &self,
        shard: u64,
        write_id: kv::WriteId,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> kv::PutResponse {
        let request = kv::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            write_id: Some(write_id),
            ..Default::default()
        };
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(leader) = self.leader_of(shard).await {
                if let Some(mut client) = self.kv(leader).await {
                    let put = node::ShardPutRequest {
                        target: Some(node::ShardTarget {
                            shard_id: shard,
                            epoch: 0,
                        }),
                        request: Some(request.clone()),
                    };
                    match client.put(put).await {
                        Ok(response) => return response.into_inner(),
                        Err(status) => last_error = format!("{status}"),
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        panic!("put to shard {shard} not acknowledged within {timeout:?}: {last_error}");
    }

    /// Reads `key` from one node's replica without ReadIndex (what that replica has applied).
    pub async fn local_get(&self, id: u64, shard: u64, key: &[u8]) -> Option<kv::GetResponse> {
        let mut client = self.kv(id).await?;
        let request = shard_get(shard, key, kv::Consistency::Serializable);
        client.get(request).await.ok().map(|r| r.into_inner())
    }

    /// Every key-value of `shard` on one node's replica, in key order (serializable scans).
    pub async fn local_scan(&self, id: u64, shard: u64) -> Option<Vec<kv::KeyValue>> {
        let mut client = self.kv(id).await?;
        let mut out = Vec::new();
        let mut continuation = Vec::new();
        loop {
            let request = node::ShardRangeRequest {
                target: Some(node::ShardTarget {
                    shard_id: shard,
                    epoch: 0,
                }),
                request: Some(kv::RangeRequest {
                    continuation: continuation.clone(),
                    limit: 1000,
                    consistency: kv::Consistency::Serializable as i32,
                    ..Default::default()
                }),
            };
            let page = client.range(request).await.ok()?.into_inner();
            out.extend(page.kvs);
            if !page.more {
                return Some(out);
            }
            continuation = page.continuation;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let running: Vec<(Role, u64)> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| (n.role, n.id))
            .collect();
        for (role, id) in running {
            self.kill_process(role, id);
        }
        if let Some(network) = &self.network {
            network.shutdown();
        }
        if std::thread::panicking() || std::env::var_os("CAIRN_KEEP_TEST_DATA").is_some() {
            let kept =
                std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("cluster data and logs kept in {}", kept.display());
        }
    }
}

/// Decodes the structured error detail of a status.
/// A node-level get of `key` on `shard` (routing epoch not checked).
pub fn shard_get(shard: u64, key: &[u8], consistency: kv::Consistency) -> node::ShardGetRequest {
    node::ShardGetRequest {
        target: Some(node::ShardTarget {
            shard_id: shard,
            epoch: 0,
        }),
        request: Some(kv::GetRequest {
            key: key.to_vec(),
            consistency: consistency as i32,
            keys_only: false,
            revision: 0,
        }),
    }
}

pub fn error_detail(status: &tonic::Status) -> Option<kv::error_detail::Kind> {
    kv::ErrorDetail::decode(status.details()).ok()?.kind
}

/// A fresh write id generator for one simulated client.
pub struct WriteIds {
    client_id: u64,
    next: u64,
}

impl WriteIds {
    pub fn new() -> Self {
        Self {
            client_id: rand::random::<u64>() | 1,
            next: 1,
        }
    }

    pub fn next_id(&mut self) -> kv::WriteId {
        let id = kv::WriteId {
            client_id: self.client_id,
            sequence: self.next,
            first_incomplete_sequence: self.next,
        };
        self.next += 1;
        id
    }
}

impl Default for WriteIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A plain HTTP/1.1 GET (for /metrics and the health endpoints): status and body, or None
/// when the endpoint does not answer within a few seconds.
pub async fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .ok()?
    .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of one un-labelled series in a Prometheus exposition.
pub fn metric_value(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
