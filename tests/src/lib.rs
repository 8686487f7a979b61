//! The cluster test harness: starts real `cairn-node` processes on distinct loopback
//! addresses with data in a temporary folder, kills (-9) and restarts them, and offers
//! `wait_for` and `must_*` helpers so that a cluster test reads as phases.
//!
//! It talks to processes only through their gRPC APIs (the `cairn-proto` crate), never
//! through server crates, so it tests what an operator or client would see.

use cairn_proto::kv::v1 as kv;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use prost::Message;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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

/// One storage node process of the test cluster.
pub struct NodeProcess {
    pub id: u64,
    pub address: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl NodeProcess {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A set of real `cairn-node` processes. Dropping it kills them all.
pub struct Cluster {
    binary: PathBuf,
    root: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    pub shard_count: u32,
    base_port: u16,
}

/// Picks a port that is free on every loopback address the cluster will use.
fn free_base_port(node_slots: u8) -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000u16..60_000);
        let free = (1..=node_slots)
            .all(|i| std::net::TcpListener::bind(format!("127.0.0.{i}:{port}")).is_ok());
        if free {
            return port;
        }
    }
    panic!("no free port on 127.0.0.x");
}

/// Node `id` listens on 127.0.0.`id`, so nodes are told apart by address in logs and rules.
fn address_of(id: u64, port: u16) -> String {
    assert!((1..=250).contains(&id), "test node ids are 1..=250");
    format!("127.0.0.{id}:{port}")
}

impl Cluster {
    /// Starts `node_count` nodes (ids 1..=n) with a static bootstrap of `shard_count` shards,
    /// each replicated on every node. `extra_env` is passed to every node (e.g. CAIRN_* tuning).
    pub async fn start(
        binary: &Path,
        node_count: u64,
        shard_count: u32,
        extra_env: &[(&str, &str)],
    ) -> Cluster {
        init_logging();
        let root = tempfile::Builder::new()
            .prefix("cairn-cluster-")
            .tempdir()
            .expect("temp dir");
        let base_port = free_base_port(8);
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            root,
            nodes: Vec::new(),
            shard_count,
            base_port,
        };
        let members: Vec<String> = (1..=node_count)
            .map(|id| format!("{id}={}", address_of(id, base_port)))
            .collect();
        let mut env_args = Vec::new();
        for (name, value) in extra_env {
            env_args.push(format!("{name}={value}"));
        }
        for id in 1..=node_count {
            let mut args = vec![
                format!("--bootstrap-shard-count={shard_count}"),
                format!("--bootstrap-members={}", members.join(",")),
            ];
            args.extend(env_args.iter().map(|e| format!("env:{e}")));
            cluster.add_node_with_args(id, args);
        }
        cluster
    }

    /// Starts one more node, without bootstrap: it hosts nothing until told to.
    pub fn add_node(&mut self, id: u64, extra_env: &[(&str, &str)]) {
        let args = extra_env
            .iter()
            .map(|(name, value)| format!("env:{name}={value}"))
            .collect();
        self.add_node_with_args(id, args);
    }

    fn add_node_with_args(&mut self, id: u64, args: Vec<String>) {
        let address = address_of(id, self.base_port);
        let data_dir = self.root.path().join(format!("node-{id}"));
        let log_path = self.root.path().join(format!("node-{id}.log"));
        self.nodes.push(NodeProcess {
            id,
            address,
            data_dir,
            log_path,
            args,
            child: None,
        });
        self.spawn(id);
    }

    fn spawn(&mut self, id: u64) {
        let binary = self.binary.clone();
        let node = self.node_mut(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let mut command = Command::new(&binary);
        command
            .arg(format!("--node-id={}", node.id))
            .arg(format!("--listen-address={}", node.address))
            .arg(format!("--data-dir={}", node.data_dir.display()))
            .env(
                "RUST_LOG",
                std::env::var("CAIRN_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for arg in &node.args {
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
        tracing::info!(node = id, address = %node.address, pid = child.id(), "started node");
        node.child = Some(child);
    }

    pub fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// `kill -9`: no shutdown code runs, unsynced state is at the kernel's mercy.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
            tracing::info!(node = id, "killed node (SIGKILL)");
        }
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.spawn(id);
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// The tail of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(&self.node(id).log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn channel(&self, id: u64) -> Option<Channel> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.node(id).address))
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
        for id in self.running_ids() {
            if let Some(status) = self.status(id, shard).await {
                if status.role == node::ReplicaRole::Leader as i32 {
                    return Some(id);
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
        let request = node::ShardGetRequest {
            target: Some(node::ShardTarget {
                shard_id: shard,
                epoch: 0,
            }),
            request: Some(kv::GetRequest {
                key: key.to_vec(),
                consistency: kv::Consistency::Serializable as i32,
                keys_only: false,
            }),
        };
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
        let ids: Vec<u64> = self.running_ids();
        for id in ids {
            self.kill(id);
        }
        if std::thread::panicking() || std::env::var_os("CAIRN_KEEP_TEST_DATA").is_some() {
            let kept =
                std::mem::replace(&mut self.root, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("cluster data and logs kept in {}", kept.display());
        }
    }
}

/// Decodes the structured error detail of a status.
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
