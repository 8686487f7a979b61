//! `cairn-node`: parses configuration, starts logging, and runs the storage node.

use cairn_storage_node::config::{BootstrapConfig, NodeConfig};
use clap::Parser;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: allocation-heavy gRPC paths spent ~13 % of their CPU in
/// glibc's malloc, free and arena locks (docs/benchmarks/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "cairn-node", about = "Cairn storage node", version)]
struct Flags {
    /// TOML configuration file (optional); CAIRN_* environment variables and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's permanent id (>= 1).
    #[arg(long)]
    node_id: Option<u64>,
    /// gRPC listen address, ip:port.
    #[arg(long)]
    listen_address: Option<String>,
    /// Address other processes use to reach this node.
    #[arg(long)]
    advertise_address: Option<String>,
    /// Coordinator addresses, comma separated host:port (DNS names allowed).
    #[arg(long, value_delimiter = ',')]
    coordinators: Option<Vec<String>>,
    /// Node labels, comma separated key=value (e.g. zone=a); an empty value sets no label.
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    /// HTTP endpoint for /metrics, /livez and /readyz, ip:port.
    #[arg(long)]
    metrics_listen_address: Option<String>,
    /// Data folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage engine: `disk` (durable, the default) or `memory` (a throwaway process that
    /// keeps nothing when it stops).
    #[arg(long)]
    storage_engine: Option<cairn_raft::database::StorageEngine>,
    /// Static bootstrap: number of shards to host.
    #[arg(long)]
    bootstrap_shard_count: Option<u32>,
    /// Static bootstrap members, comma separated `id=host:port`.
    #[arg(long, value_delimiter = ',')]
    bootstrap_members: Option<Vec<String>>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn load(flags: &Flags) -> anyhow::Result<NodeConfig> {
    let mut node: NodeConfig =
        cairn_telemetry::layered_config(&NodeConfig::default(), flags.config.as_deref(), &[])
            .map_err(|error| anyhow::anyhow!(error))?;
    if let Some(id) = flags.node_id {
        node.node_id = id;
    }
    if let Some(address) = &flags.listen_address {
        node.listen_address = address.clone();
    }
    if let Some(address) = &flags.advertise_address {
        node.advertise_address = Some(address.clone());
    }
    if let Some(addresses) = &flags.coordinators {
        node.coordinator
            .get_or_insert_with(Default::default)
            .addresses = addresses.clone();
    }
    if let Some(labels) = &flags.labels {
        let coordinator = node.coordinator.get_or_insert_with(Default::default);
        for label in labels {
            let (key, value) = label.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("invalid configuration: labels: {label:?} is not key=value")
            })?;
            // An empty value sets no label: the Helm chart passes `zone=$(ZONE)` from the pod's
            // topology label, which is empty where Kubernetes does not copy it (D72), and an
            // empty zone would put every node in one zone instead of none.
            if value.trim().is_empty() {
                continue;
            }
            coordinator
                .labels
                .insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    if let Some(address) = &flags.metrics_listen_address {
        node.metrics_listen_address = address.clone();
    }
    if let Some(dir) = &flags.data_dir {
        node.data_dir = dir.clone();
    }
    if let Some(engine) = flags.storage_engine {
        node.storage.engine = engine;
    }
    if flags.bootstrap_shard_count.is_some() || flags.bootstrap_members.is_some() {
        let mut bootstrap = node.bootstrap.clone().unwrap_or_default();
        if let Some(count) = flags.bootstrap_shard_count {
            bootstrap.shard_count = count;
        }
        if let Some(members) = &flags.bootstrap_members {
            bootstrap.members = members.clone();
        }
        node.bootstrap = Some(BootstrapConfig { ..bootstrap });
    }
    node.validate()?;
    Ok(node)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let node = load(&flags)?;
    if flags.check_config {
        println!("{node:#?}");
        println!("configuration OK");
        return Ok(());
    }
    let telemetry =
        cairn_telemetry::init_telemetry(&node.log, &node.tracing, "cairn-node", &node.advertise())
            .map_err(|error| anyhow::anyhow!(error))?;
    let result = cairn_storage_node::run(node, cairn_telemetry::shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}
