//! The cluster test harness: starts real Cairn processes (coordinators, storage nodes,
//! gateways) on distinct loopback addresses with data in a temporary folder, as a
//! `ClusterSpec` describes them; kills (-9), pauses (SIGSTOP) and restarts them, partitions,
//! delays and drops their traffic (`network`); names its faults as `nemesis` types and runs
//! fault-injection `Scenario`s over recorded, checked histories (`workload`); and offers
//! `wait_for` and `must_*` helpers so that a cluster test reads as phases.
//!
//! Every process is named by one kind of id, `ProcessId`: a storage node by the node id the
//! cluster gave it, so the ids a coordinator or a node reports name processes directly.
//!
//! It talks to processes only through their gRPC APIs (the `cairn-proto` crate), never
//! through server crates, so it tests what an operator or client would see.

pub mod bank;
mod cluster;
pub mod config_reference;
mod faults;
mod hosting;
pub mod list_append;
pub mod mutex;
pub mod nemesis;
pub mod network;
mod observe;
pub mod otlp;
mod process;
mod replicas;
mod requests;
mod scenario;
mod spec;
mod tls;
pub mod workload;

pub use cluster::Cluster;
pub use nemesis::Nemesis;
pub use network::{LinkFault, Network};
pub use observe::lazy_channel;
pub use process::{sibling_binary, Process, ProcessId, Role};
pub use requests::{error_detail, http_get, metric_value, shard_get, shard_target, WriteIds};
pub use scenario::{longest_stall, Profile, Scenario, SCENARIO_WAIT};
pub use spec::ClusterSpec;
pub use tls::{foreign_certificates, ClusterCertificates};

use std::future::Future;
use std::time::{Duration, Instant};

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
