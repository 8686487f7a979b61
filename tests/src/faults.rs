//! Fault injection on a running cluster: pause and resume any process, partition, delay and
//! drop the traffic to nodes (through the proxies of `network`), heal, and force a replica
//! to snapshot and purge its log. These are the primitives the `nemesis` faults are made
//! of; what a test checks afterwards is not decided here.

use crate::process::{ip_of, ProcessId};
use crate::{Cluster, LinkFault, Network};
use cairn_proto::node::v1 as node;
use cairn_types::{NodeId, ShardId};
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// How often `terminate` checks whether the process exited.
const TERMINATE_POLL: Duration = Duration::from_millis(10);

impl Cluster {
    /// Stops a process with SIGSTOP: it holds its sockets and state but does nothing, like a
    /// long GC pause or a frozen VM, until `resume`.
    pub fn pause(&mut self, id: impl Into<ProcessId>) {
        let id = id.into();
        self.signal(id, "-STOP");
        self.process_mut(id).paused = true;
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&mut self, id: impl Into<ProcessId>) {
        let id = id.into();
        self.signal(id, "-CONT");
        self.process_mut(id).paused = false;
    }

    /// Asks a process to stop (SIGTERM) and waits up to `timeout` for it to exit. Returns how
    /// long it took, or `None` if it was still running at `timeout` (it is then killed with
    /// -9, so the test can go on). Start it again with `restart`.
    pub async fn terminate(
        &mut self,
        id: impl Into<ProcessId>,
        timeout: Duration,
    ) -> Option<Duration> {
        let id = id.into();
        self.signal(id, "-TERM");
        let started = Instant::now();
        let process = self.process_mut(id);
        process.paused = false;
        let mut child = process.child.take().expect("the process runs");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let took = started.elapsed();
                tracing::info!(%id, ?took, %status, "process exited after SIGTERM");
                return Some(took);
            }
            if started.elapsed() >= timeout {
                tracing::warn!(%id, ?timeout, "process still running after SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(TERMINATE_POLL).await;
        }
    }

    fn signal(&self, id: ProcessId, signal: &str) {
        let pid = self
            .process(id)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{id} is not running"))
            .id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
        tracing::info!(%id, pid, signal, "signalled process");
    }

    /// The proxies of a cluster started with `ClusterSpec::network_faults`.
    pub fn network(&self) -> &Network {
        self.network
            .as_deref()
            .expect("a cluster started with ClusterSpec::network_faults")
    }

    fn ip(&self, id: ProcessId) -> IpAddr {
        let process = self.process(id);
        ip_of(process.role, process.slot)
    }

    /// Sets the fault of the traffic from process `from` to node `to` (only traffic to nodes
    /// passes a proxy).
    pub fn set_link(&self, from: ProcessId, to: NodeId, fault: LinkFault) {
        self.network()
            .set(self.ip(from), self.ip(ProcessId::Node(to)), fault);
    }

    /// Sets the fault of the traffic from process `from` to the node that `add_node` starts
    /// next, before that node exists: its admin traffic can be held from its first moment.
    pub fn set_link_to_next_node(&self, from: ProcessId, fault: LinkFault) {
        let next = ip_of(crate::Role::Node, self.next_slot(crate::Role::Node));
        self.network().set(self.ip(from), next, fault);
    }

    /// Cuts every link between `side` and `other`, both ways (for the proxied directions:
    /// those that end at a node).
    pub fn partition(&self, side: &[ProcessId], other: &[ProcessId]) {
        self.partition_one_way(side, other);
        self.partition_one_way(other, side);
    }

    /// Cuts the traffic from each of `from` to each of `to` that is a node; the other
    /// direction still flows.
    pub fn partition_one_way(&self, from: &[ProcessId], to: &[ProcessId]) {
        for &a in from {
            for b in to {
                if let ProcessId::Node(b) = b {
                    self.set_link(a, *b, LinkFault::Blackhole);
                }
            }
        }
    }

    /// Every link passes again; held connections are cut so that they reconnect.
    pub fn heal(&self) {
        self.network().heal();
    }

    /// Makes node `id` build a snapshot of `shard` and, with `purge_log`, purge its log up to
    /// it; returns the snapshot index.
    pub async fn trigger_snapshot(
        &self,
        id: NodeId,
        shard: ShardId,
        purge_log: bool,
    ) -> Option<u64> {
        let mut admin = self.admin(id).await?;
        let response = admin
            .trigger_snapshot(node::TriggerSnapshotRequest {
                shard_id: shard.0,
                purge_log,
            })
            .await
            .ok()?;
        Some(response.into_inner().snapshot_index)
    }
}
