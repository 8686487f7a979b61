//! A running test cluster: starting, killing and restarting its processes, and finding them
//! by `ProcessId`. What the harness reads from the processes is in `observe`, what it does to
//! them beyond kill and restart in `faults`.

use crate::network::Network;
use crate::process::{address_of, free_base_port, ip_of, Process, ProcessId, Role, SLOTS_MAX};
use crate::tls::ClusterCertificates;
use crate::{init_logging, wait_for, ClusterSpec};
use cairn_proto::node::v1 as node;
use cairn_types::NodeId;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// How long a started node may take to answer with its node id (a joining node first waits
/// for the coordinators to elect a leader).
const NODE_START_TIMEOUT: Duration = Duration::from_secs(90);

/// A set of real Cairn processes. Dropping it kills them all.
pub struct Cluster {
    pub(crate) spec: ClusterSpec,
    root: tempfile::TempDir,
    base_port: u16,
    /// Coordinator addresses nodes and gateways are started with (empty: static bootstrap).
    coordinator_addresses: Vec<String>,
    pub(crate) processes: Vec<Process>,
    /// The proxies in front of the nodes, in a cluster started with network faults.
    pub(crate) network: Option<Arc<Network>>,
    /// The certificates of a cluster started with TLS.
    tls: Option<ClusterCertificates>,
}

impl Cluster {
    pub(crate) async fn start(spec: ClusterSpec) -> Cluster {
        init_logging();
        let base_port = free_base_port();
        let coordinator_addresses = (1..=spec.coordinators)
            .map(|member| address_of(Role::Coordinator, slot(member), base_port))
            .collect();
        let mut cluster = Cluster {
            network: spec.network_faults.then(Network::new),
            tls: None,
            root: tempfile::Builder::new()
                .prefix("cairn-cluster-")
                .tempdir()
                .expect("temp dir"),
            base_port,
            coordinator_addresses,
            processes: Vec::new(),
            spec,
        };
        if cluster.spec.tls {
            cluster.tls = Some(ClusterCertificates::write(&cluster.root.path().join("tls")));
        }
        let members: Vec<String> = cluster
            .coordinator_addresses
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect();
        for member in 1..=cluster.spec.coordinators {
            let args = vec![
                format!("--member-id={member}"),
                format!("--members={}", members.join(",")),
                format!("--shard-count={}", cluster.spec.shard_count),
                format!("--replication-factor={}", cluster.spec.replication_factor),
            ];
            cluster.add_process(Role::Coordinator, slot(member), args, &[]);
        }
        let nodes = cluster.spec.nodes;
        let slots: Vec<u8> = (1..=nodes).map(slot).collect();
        for &node in &slots {
            cluster.spawn_node(node, nodes);
        }
        for node in slots {
            cluster.learn_node_id(node).await;
        }
        for _ in 0..cluster.spec.gateways {
            cluster.add_gateway(&[]);
        }
        cluster
    }

    /// Starts one more storage node and returns its node id once it answers. With
    /// coordinators it joins the cluster; in a static bootstrap it hosts nothing until told
    /// to.
    pub async fn add_node(&mut self) -> NodeId {
        let node = self.next_slot(Role::Node);
        self.spawn_node(node, 0);
        self.learn_node_id(node).await
    }

    /// The certificates of a cluster started with `ClusterSpec::tls`.
    pub fn certificates(&self) -> Option<&ClusterCertificates> {
        self.tls.as_ref()
    }

    /// How the harness connects to the processes: with its own certificate in a TLS
    /// cluster, plaintext otherwise.
    pub fn client_tls(&self) -> cairn_tls::ClientTls {
        self.tls.as_ref().map_or_else(
            cairn_tls::ClientTls::plaintext,
            ClusterCertificates::harness,
        )
    }

    /// Starts one more storage node with `extra_env` on top of the spec's settings, and
    /// returns without waiting for it to join (for a node that must not get in).
    pub fn start_node_unchecked(&mut self, extra_env: &[(&str, &str)]) -> &Process {
        let slot = self.next_slot(Role::Node);
        let args = vec![format!(
            "--coordinators={}",
            self.coordinator_addresses.join(",")
        )];
        self.add_process(Role::Node, slot, args, extra_env);
        self.process_in(Role::Node, slot)
    }

    /// Starts one more gateway, with the spec's gateway settings and `extra_env`; returns its
    /// number. Connect with `gateway_clients`.
    pub fn add_gateway(&mut self, extra_env: &[(&str, &str)]) -> u64 {
        assert!(
            !self.coordinator_addresses.is_empty(),
            "a gateway needs coordinators"
        );
        let gateway = self.next_slot(Role::Gateway);
        let args = vec![format!(
            "--coordinators={}",
            self.coordinator_addresses.join(",")
        )];
        self.add_process(Role::Gateway, gateway, args, extra_env);
        u64::from(gateway)
    }

    /// Spawns the node in `slot`; a static bootstrap's founding nodes (`founders` > 0) list
    /// nodes 1..=founders as the members of every shard.
    fn spawn_node(&mut self, slot: u8, founders: u64) {
        let mut args = Vec::new();
        if !self.coordinator_addresses.is_empty() {
            args.push(format!(
                "--coordinators={}",
                self.coordinator_addresses.join(",")
            ));
        } else {
            args.push(format!("--node-id={slot}"));
            if founders > 0 {
                let members: Vec<String> = (1..=founders)
                    .map(|id| {
                        let address = address_of(Role::Node, self::slot(id), self.base_port);
                        format!("{id}={address}")
                    })
                    .collect();
                args.push(format!("--bootstrap-shard-count={}", self.spec.shard_count));
                args.push(format!("--bootstrap-members={}", members.join(",")));
            }
        }
        self.add_process(Role::Node, slot, args, &[]);
    }

    /// Waits until the node in `slot` answers, and records the node id it reports.
    async fn learn_node_id(&mut self, node_slot: u8) -> NodeId {
        let listen_address = self
            .process_in(Role::Node, node_slot)
            .listen_address
            .clone();
        let name = Process::name(Role::Node, node_slot);
        let tls = self.client_tls();
        let id = wait_for(
            &format!("{name} to answer with its node id"),
            NODE_START_TIMEOUT,
            || {
                let (listen_address, tls) = (listen_address.clone(), tls.clone());
                async move {
                    let mut admin = crate::observe::admin_client(&tls, &listen_address).await?;
                    let response = admin
                        .shard_status(node::ShardStatusRequest {
                            shard_id: 0,
                            all: true,
                        })
                        .await
                        .ok()?;
                    Some(NodeId(response.into_inner().node_id)).filter(|id| id.0 != 0)
                }
            },
        )
        .await;
        if self.coordinator_addresses.is_empty() {
            assert_eq!(
                id,
                NodeId(u64::from(node_slot)),
                "{name} runs with its --node-id"
            );
        }
        tracing::info!(%name, node_id = id.0, "node answers");
        self.process_in_mut(Role::Node, node_slot).node_id = Some(id);
        id
    }

    pub(crate) fn next_slot(&self, role: Role) -> u8 {
        let slot = self
            .processes
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.slot)
            .max()
            .unwrap_or(0)
            + 1;
        assert!(slot <= SLOTS_MAX, "at most {SLOTS_MAX} processes of a role");
        slot
    }

    fn add_process(&mut self, role: Role, slot: u8, mut args: Vec<String>, extra: &[(&str, &str)]) {
        let address = address_of(role, slot, self.base_port);
        let mut listen_address = address.clone();
        let mut env = self.spec.env_for(role);
        if let Some(tls) = &self.tls {
            // The test's own settings (in `env` and `extra`) come later and win.
            let mut with_tls = tls.env_for(role);
            with_tls.append(&mut env);
            env = with_tls;
        }
        env.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        if let Some(network) = &self.network {
            let ip = ip_of(role, slot).to_string();
            env.push(match role {
                Role::Node => ("CAIRN_TRANSPORT__OUTBOUND_BIND_IP".into(), ip),
                Role::Coordinator | Role::Gateway => ("CAIRN_OUTBOUND_BIND_IP".into(), ip),
            });
            if role == Role::Node {
                // The node listens privately and is reached through its proxy.
                listen_address = address_of(role, slot, self.base_port + 1);
                args.push(format!("--advertise-address={address}"));
                network.add_proxy(
                    address.parse().expect("node address"),
                    listen_address.parse().expect("node listen address"),
                );
            }
        }
        let name = Process::name(role, slot);
        self.processes.push(Process {
            role,
            slot,
            node_id: None,
            data_dir: self.root.path().join(&name),
            log_path: self.root.path().join(format!("{name}.log")),
            metrics_address: address_of(role, slot, self.base_port + 2),
            address,
            listen_address,
            args,
            env,
            child: None,
            paused: false,
        });
        self.spawn(role, slot);
    }

    fn spawn(&mut self, role: Role, slot: u8) {
        let binary = self.spec.binary(role);
        let process = self.process_in_mut(role, slot);
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
            .args(&process.args)
            .env(
                "RUST_LOG",
                std::env::var("CAIRN_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .envs(process.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let name = Process::name(role, slot);
        tracing::info!(%name, address = %process.address, pid = child.id(), "started process");
        process.child = Some(child);
    }

    /// `kill -9` a process: no shutdown code runs, unsynced state is at the kernel's mercy.
    pub fn kill(&mut self, id: impl Into<ProcessId>) {
        let id = id.into();
        let process = self.process_mut(id);
        process.paused = false;
        if let Some(mut child) = process.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
            tracing::info!(%id, "killed process (SIGKILL)");
        }
    }

    /// Sets an environment variable (a `CAIRN_*` setting) of one process for its next start:
    /// a test that needs a setting changed part-way restarts the process after this.
    pub fn set_env(&mut self, id: impl Into<ProcessId>, name: &str, value: &str) {
        let env = &mut self.process_mut(id.into()).env;
        env.retain(|(set, _)| set != name);
        env.push((name.to_string(), value.to_string()));
    }

    /// Kills the process (if it runs) and starts it again on the same data; a node keeps
    /// its node id. Returns at once: wait on what the test needs of it.
    pub fn restart(&mut self, id: impl Into<ProcessId>) {
        let id = id.into();
        self.kill(id);
        let (role, slot) = {
            let process = self.process(id);
            (process.role, process.slot)
        };
        self.spawn(role, slot);
    }

    /// Restarts a storage node that comes back under a new node id (an in-memory node, or
    /// one whose data folder was wiped): waits until it answers and records its new id, by
    /// which the test names it from then on.
    pub async fn restart_as_new_node(&mut self, id: NodeId) -> NodeId {
        self.kill(id);
        let slot = self.process(id).slot;
        self.process_in_mut(Role::Node, slot).node_id = None;
        self.spawn(Role::Node, slot);
        let new_id = self.learn_node_id(slot).await;
        assert_ne!(new_id, id, "the node came back under its old id");
        new_id
    }

    /// Replaces a storage node as an operator replaces a failed machine (or Kubernetes a pod
    /// that lost its volume): `kill -9`, its data folder deleted, and a fresh node started at
    /// the same address. Returns the new node's id once it answers.
    pub async fn replace_node(&mut self, id: NodeId) -> NodeId {
        self.kill(id);
        let (slot, data_dir) = {
            let process = self.process(id);
            (process.slot, process.data_dir.clone())
        };
        match std::fs::remove_dir_all(&data_dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("cannot wipe {}: {error}", data_dir.display()),
        }
        tracing::info!(%id, data_dir = %data_dir.display(), "wiped the node's data folder");
        self.process_in_mut(Role::Node, slot).node_id = None;
        self.spawn(Role::Node, slot);
        let new_id = self.learn_node_id(slot).await;
        assert_ne!(new_id, id, "a wiped node came back under its old id");
        new_id
    }

    /// The process of node `id`, if one runs under that id (a replaced node's old id names
    /// none).
    pub fn node_process(&self, id: NodeId) -> Option<&Process> {
        self.processes
            .iter()
            .find(|p| p.id() == Some(ProcessId::Node(id)))
    }

    pub fn process(&self, id: impl Into<ProcessId>) -> &Process {
        let id = id.into();
        self.processes
            .iter()
            .find(|p| p.id() == Some(id))
            .unwrap_or_else(|| panic!("no {id} in the cluster"))
    }

    pub(crate) fn process_mut(&mut self, id: impl Into<ProcessId>) -> &mut Process {
        let id = id.into();
        self.processes
            .iter_mut()
            .find(|p| p.id() == Some(id))
            .unwrap_or_else(|| panic!("no {id} in the cluster"))
    }

    fn process_in(&self, role: Role, slot: u8) -> &Process {
        self.processes
            .iter()
            .find(|p| p.role == role && p.slot == slot)
            .expect("a started process")
    }

    fn process_in_mut(&mut self, role: Role, slot: u8) -> &mut Process {
        self.processes
            .iter_mut()
            .find(|p| p.role == role && p.slot == slot)
            .expect("a started process")
    }

    pub fn node(&self, id: NodeId) -> &Process {
        self.process(id)
    }

    pub fn coordinator(&self, member: u64) -> &Process {
        self.process(ProcessId::Coordinator(member))
    }

    pub fn gateway(&self, number: u64) -> &Process {
        self.process(ProcessId::Gateway(number))
    }

    /// Every process started so far (running or not), in start order.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter()
    }

    /// The ids of the processes of `role` started so far (running or not).
    pub fn ids_of(&self, role: Role) -> Vec<ProcessId> {
        self.processes
            .iter()
            .filter(|p| p.role == role)
            .filter_map(Process::id)
            .collect()
    }

    /// The numbers of the gateways started so far (running or not).
    pub fn gateway_numbers(&self) -> Vec<u64> {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Gateway)
            .map(|p| u64::from(p.slot))
            .collect()
    }

    /// Every storage node started so far (running or not), by node id.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Node)
            .filter_map(|p| p.node_id)
            .collect()
    }

    /// The storage nodes that are running.
    pub fn running_nodes(&self) -> Vec<NodeId> {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Node && p.is_running())
            .filter_map(|p| p.node_id)
            .collect()
    }

    /// The member ids of the coordinators that are running.
    pub fn running_coordinators(&self) -> Vec<u64> {
        self.processes
            .iter()
            .filter(|p| p.role == Role::Coordinator && p.is_running())
            .map(|p| u64::from(p.slot))
            .collect()
    }

    /// The nodes other than `id`: its Raft peers.
    pub fn peers_of(&self, id: NodeId) -> Vec<ProcessId> {
        self.node_ids()
            .into_iter()
            .filter(|node| *node != id)
            .map(ProcessId::Node)
            .collect()
    }

    /// Every node but `id`, and every gateway: all that talks to node `id`.
    pub fn others_of(&self, id: NodeId) -> Vec<ProcessId> {
        let mut others = self.peers_of(id);
        others.extend(self.ids_of(Role::Gateway));
        others
    }

    pub fn shard_count(&self) -> u32 {
        self.spec.shard_count
    }

    pub fn replication_factor(&self) -> u32 {
        self.spec.replication_factor
    }

    /// The cluster's temporary folder (data, logs, failure reports); kept when a test fails.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
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

/// The slot of the `n`th process of a role.
fn slot(n: u64) -> u8 {
    u8::try_from(n)
        .ok()
        .filter(|slot| (1..=SLOTS_MAX).contains(slot))
        .unwrap_or_else(|| panic!("test process numbers are 1..={SLOTS_MAX}, not {n}"))
}
