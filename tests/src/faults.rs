//! Fault injection on a running cluster: pause and resume any process, partition, delay and
//! drop the traffic to nodes (through the proxies of `network`), heal, and force a replica
//! to snapshot and purge its log. What a test checks afterwards is not decided here.

use crate::{ip_of, Cluster, LinkFault, Network, Role};
use cairn_proto::node::v1 as node;
use std::process::Command;

impl Cluster {
    /// Stops a process with SIGSTOP: it holds its sockets and state but does nothing, like a
    /// long GC pause or a frozen VM, until `resume`.
    pub fn pause(&mut self, role: Role, id: u64) {
        self.signal(role, id, "-STOP");
        self.process_mut(role, id).paused = true;
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&mut self, role: Role, id: u64) {
        self.signal(role, id, "-CONT");
        self.process_mut(role, id).paused = false;
    }

    fn signal(&self, role: Role, id: u64, signal: &str) {
        let process = self.process(role, id);
        let pid = process
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{role:?} {id} is not running"))
            .id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
        tracing::info!(?role, id, pid, signal, "signalled process");
    }

    /// The proxies of a cluster started with `start_with_network_faults`.
    pub fn network(&self) -> &Network {
        self.network
            .as_deref()
            .expect("a cluster started with start_with_network_faults")
    }

    /// Sets the fault of the traffic from process `from` to process `to`. Only traffic to
    /// nodes passes a proxy, so `to` must be a node.
    pub fn set_link(&self, from: (Role, u64), to: (Role, u64), fault: LinkFault) {
        assert_eq!(to.0, Role::Node, "only traffic to nodes is proxied");
        self.network()
            .set(ip_of(from.0, from.1), ip_of(to.0, to.1), fault);
    }

    /// Cuts every link between `side` and `other`, both ways (for the proxied directions:
    /// those that end at a node).
    pub fn partition(&self, side: &[(Role, u64)], other: &[(Role, u64)]) {
        self.partition_one_way(side, other);
        self.partition_one_way(other, side);
    }

    /// Cuts the traffic from each of `from` to each of `to` that is a node; the other
    /// direction still flows.
    pub fn partition_one_way(&self, from: &[(Role, u64)], to: &[(Role, u64)]) {
        for &a in from {
            for &b in to.iter().filter(|b| b.0 == Role::Node) {
                self.set_link(a, b, LinkFault::Blackhole);
            }
        }
    }

    /// Every link passes again; held connections are cut so that they reconnect.
    pub fn heal(&self) {
        self.network().heal();
    }

    /// Makes node `id` build a snapshot of `shard` and, with `purge_log`, purge its log up to
    /// it; returns the snapshot index.
    pub async fn trigger_snapshot(&self, id: u64, shard: u64, purge_log: bool) -> Option<u64> {
        let mut admin = self.admin(id).await?;
        let response = admin
            .trigger_snapshot(node::TriggerSnapshotRequest {
                shard_id: shard,
                purge_log,
            })
            .await
            .ok()?;
        Some(response.into_inner().snapshot_index)
    }
}
