//! The gateway's Prometheus metrics: retries by cause and the shard map version it routes
//! by (read at each scrape), plus per-RPC metrics.

use crate::router::Router;
use cairn_telemetry::prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use cairn_telemetry::GrpcMetrics;
use std::sync::atomic::Ordering::Relaxed;

pub struct GatewayMetrics {
    pub registry: Registry,
    pub grpc: GrpcMetrics,
    retries: IntCounterVec,
    map_version: IntGauge,
    stream_ops: IntCounter,
    stream_messages: IntCounter,
    streams_opened: IntCounter,
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let grpc = GrpcMetrics::new(&registry).expect("valid gRPC metric definitions");
        let retries = IntCounterVec::new(
            Opts::new(
                "cairn_gateway_retries_total",
                "Shard requests retried, by cause",
            ),
            &["cause"],
        )
        .expect("valid metric definition");
        let map_version = IntGauge::new(
            "cairn_gateway_shard_map_version",
            "Version of the shard map the gateway routes by",
        )
        .expect("valid metric definition");
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::new(name, help).expect("valid metric definition");
            registry
                .register(Box::new(counter.clone()))
                .expect("metric names are unique");
            counter
        };
        let stream_ops = counter(
            "cairn_gateway_node_stream_ops_total",
            "Requests sent to storage nodes over batch streams",
        );
        let stream_messages = counter(
            "cairn_gateway_node_stream_messages_total",
            "Batch stream messages sent to storage nodes (ops / messages = mean batch size)",
        );
        let streams_opened = counter(
            "cairn_gateway_node_streams_opened_total",
            "Batch streams opened to storage nodes (one per node, more after reconnects)",
        );
        registry
            .register(Box::new(retries.clone()))
            .expect("metric names are unique");
        registry
            .register(Box::new(map_version.clone()))
            .expect("metric names are unique");
        Self {
            registry,
            grpc,
            retries,
            map_version,
            stream_ops,
            stream_messages,
            streams_opened,
        }
    }

    pub fn refresh(&self, router: &Router) {
        for (cause, total) in [
            ("not_leader", router.stats.not_leader.load(Relaxed)),
            ("stale_map", router.stats.stale_map.load(Relaxed)),
            ("unavailable", router.stats.unavailable.load(Relaxed)),
        ] {
            let counter = self.retries.with_label_values(&[cause]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let stats = &router.stream_stats;
        for (counter, total) in [
            (&self.stream_ops, stats.ops.load(Relaxed)),
            (&self.stream_messages, stats.messages.load(Relaxed)),
            (&self.streams_opened, stats.streams_opened.load(Relaxed)),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.map_version.set(
            router
                .maps
                .current()
                .map_or(0, |table| table.version as i64),
        );
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
