//! The fault vocabulary of the fault-injection tests, in the style of etcd's robustness
//! failpoints: a `Nemesis` is one fault that can be injected into a running cluster and
//! healed again. A new kind of fault is one small type implementing it; a scenario strikes
//! with any of them (`Scenario::strike`), and `random_fault` draws from all of them.

use crate::network::LinkFault;
use crate::process::{ProcessId, Role};
use crate::Cluster;
use cairn_types::NodeId;
use rand::Rng;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a healed gateway may take to accept connections again.
const GATEWAY_RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// A boxed future, so that `Nemesis` stays usable as `dyn Nemesis`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One fault: what it does to the cluster, and how it is undone.
pub trait Nemesis: fmt::Debug + Send {
    /// Strikes the cluster.
    fn inject<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()>;

    /// Undoes the fault, and returns once what it struck can serve again as far as the
    /// fault itself is concerned (a restarted gateway accepts connections). Recovery of the
    /// cluster (elections, catch-up) is for the test to wait on.
    fn heal<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()>;
}

/// `kill -9` a process; healed by restarting it on its data.
#[derive(Clone, Copy, Debug)]
pub struct Kill(pub ProcessId);

impl Nemesis for Kill {
    fn inject<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move { cluster.kill(self.0) })
    }

    fn heal<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            cluster.restart(self.0);
            if let ProcessId::Gateway(number) = self.0 {
                cluster
                    .gateway_clients(number, GATEWAY_RESTART_TIMEOUT)
                    .await;
            }
        })
    }
}

/// SIGSTOP a process (a long GC pause, a frozen VM); healed by SIGCONT, after which it
/// carries on believing what it believed before (that it leads, for one).
#[derive(Clone, Copy, Debug)]
pub struct Pause(pub ProcessId);

impl Nemesis for Pause {
    fn inject<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move { cluster.pause(self.0) })
    }

    fn heal<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move { cluster.resume(self.0) })
    }
}

/// Cuts the traffic from one group of processes to another (both ways, or one way); only
/// traffic to nodes passes a proxy, so links to other processes are left alone. Healed by
/// letting every link pass again.
#[derive(Clone, Debug)]
pub struct Partition {
    pub from: Vec<ProcessId>,
    pub to: Vec<ProcessId>,
    pub both_ways: bool,
}

impl Partition {
    /// Node `id` cut off from every other node and every gateway.
    pub fn isolate(cluster: &Cluster, id: NodeId) -> Self {
        Partition {
            from: vec![id.into()],
            to: cluster.others_of(id),
            both_ways: true,
        }
    }

    /// Node `id` cut off from the other nodes; gateways still reach it.
    pub fn from_peers(cluster: &Cluster, id: NodeId) -> Self {
        Partition {
            from: vec![id.into()],
            to: cluster.peers_of(id),
            both_ways: true,
        }
    }

    /// Nothing node `id` sends arrives; it still hears everyone.
    pub fn cannot_send(cluster: &Cluster, id: NodeId) -> Self {
        Partition {
            from: vec![id.into()],
            to: cluster.others_of(id),
            both_ways: false,
        }
    }

    /// Nothing reaches node `id`; what it sends still arrives.
    pub fn cannot_receive(cluster: &Cluster, id: NodeId) -> Self {
        Partition {
            from: cluster.others_of(id),
            to: vec![id.into()],
            both_ways: false,
        }
    }
}

impl Nemesis for Partition {
    fn inject<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.both_ways {
                cluster.partition(&self.from, &self.to);
            } else {
                cluster.partition_one_way(&self.from, &self.to);
            }
        })
    }

    fn heal<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move { cluster.heal() })
    }
}

/// Faults on single links (delays, losses); healed by letting every link pass again.
#[derive(Clone, Debug)]
pub struct LinkFaults(pub Vec<(ProcessId, NodeId, LinkFault)>);

impl LinkFaults {
    /// Every link from one of `sources` to a node (other than itself) slow by `delay` or
    /// lossy (`drop_probability` of chunks cut), the sources taking turns.
    pub fn slow_and_lossy(
        cluster: &Cluster,
        sources: &[ProcessId],
        delay: Duration,
        drop_probability: f64,
    ) -> Self {
        let mut links = Vec::new();
        for (i, from) in sources.iter().enumerate() {
            let fault = if i % 2 == 0 {
                LinkFault::Delay(delay)
            } else {
                LinkFault::Drop(drop_probability)
            };
            for to in cluster.node_ids() {
                if *from != ProcessId::Node(to) {
                    links.push((*from, to, fault));
                }
            }
        }
        LinkFaults(links)
    }
}

impl Nemesis for LinkFaults {
    fn inject<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for (from, to, fault) in &self.0 {
                cluster.set_link(*from, *to, *fault);
            }
        })
    }

    fn heal<'a>(&'a mut self, cluster: &'a mut Cluster) -> BoxFuture<'a, ()> {
        Box::pin(async move { cluster.heal() })
    }
}

/// One fault drawn at random from the vocabulary: a node killed, paused, isolated or unable
/// to send, every link between nodes slow or lossy, or a gateway killed.
pub fn random_fault(cluster: &Cluster, rng: &mut impl Rng) -> Box<dyn Nemesis> {
    let nodes = cluster.node_ids();
    let node = nodes[rng.random_range(0..nodes.len())];
    let gateways = cluster.ids_of(Role::Gateway);
    let choices = if gateways.is_empty() { 5 } else { 6 };
    match rng.random_range(0..choices) {
        0 => Box::new(Kill(node.into())),
        1 => Box::new(Pause(node.into())),
        2 => Box::new(Partition::isolate(cluster, node)),
        3 => Box::new(Partition::cannot_send(cluster, node)),
        4 => {
            let sources: Vec<ProcessId> = nodes.into_iter().map(ProcessId::Node).collect();
            Box::new(LinkFaults::slow_and_lossy(
                cluster,
                &sources,
                Duration::from_millis(30),
                0.05,
            ))
        }
        _ => Box::new(Kill(gateways[rng.random_range(0..gateways.len())])),
    }
}
