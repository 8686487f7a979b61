//! The coordinator's Prometheus metrics: leadership, nodes by state, shards under-replicated
//! and without quorum, moves in flight and the shard map version (read at each scrape), plus per-RPC metrics.

use crate::coordinator::Coordinator;
use cairn_proto::coordinator::v1 as pb;
use cairn_telemetry::prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use cairn_telemetry::GrpcMetrics;

pub struct CoordinatorMetrics {
    pub registry: Registry,
    pub grpc: GrpcMetrics,
    is_leader: IntGauge,
    nodes: IntGaugeVec,
    under_replicated: IntGauge,
    moves_in_flight: IntGauge,
    map_version: IntGauge,
    shards_without_quorum: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(gauge.clone()))
        .expect("metric names are unique");
    gauge
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let grpc = GrpcMetrics::new(&registry).expect("valid gRPC metric definitions");
        let nodes = IntGaugeVec::new(
            Opts::new("cairn_coordinator_nodes", "Storage nodes by state"),
            &["state"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(nodes.clone()))
            .expect("metric names are unique");
        Self {
            is_leader: gauge(
                &registry,
                "cairn_coordinator_is_leader",
                "1 on the coordinator that leads the group",
            ),
            under_replicated: gauge(
                &registry,
                "cairn_coordinator_under_replicated_shards",
                "Shards short of voters or with a voter on a node that is not up (leader only)",
            ),
            moves_in_flight: gauge(
                &registry,
                "cairn_coordinator_moves_in_flight",
                "Replica moves started and not finished (leader only)",
            ),
            map_version: gauge(
                &registry,
                "cairn_coordinator_shard_map_version",
                "Version of the published shard map (leader only)",
            ),
            shards_without_quorum: gauge(
                &registry,
                "cairn_coordinator_shards_without_quorum",
                "Shards with fewer than a majority of their voters alive and hosting their replica: they accept no writes (leader only; docs/operations.md)",
            ),
            nodes,
            grpc,
            registry,
        }
    }

    pub fn refresh(&self, coordinator: &Coordinator) {
        self.is_leader.set(i64::from(coordinator.is_leader()));
        let stats = coordinator.stats();
        self.under_replicated
            .set(i64::from(stats.under_replicated_shards));
        self.moves_in_flight.set(i64::from(stats.moves_in_flight));
        let without_quorum = if coordinator.is_leader() {
            coordinator.shards_without_quorum().len()
        } else {
            0
        };
        self.shards_without_quorum.set(without_quorum as i64);
        self.nodes.reset();
        if let Some(map) = coordinator.current_map() {
            self.map_version.set(map.version as i64);
            for (state, name) in [
                (pb::NodeState::Up, "up"),
                (pb::NodeState::Suspect, "suspect"),
                (pb::NodeState::Down, "down"),
                (pb::NodeState::Leaving, "leaving"),
                (pb::NodeState::Left, "left"),
            ] {
                let count = map.nodes.iter().filter(|n| n.state == state as i32).count();
                self.nodes.with_label_values(&[name]).set(count as i64);
            }
        }
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
