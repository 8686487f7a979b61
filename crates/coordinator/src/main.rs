//! `cairn-coordinator`: parses configuration, starts logging, runs the coordinator.

use cairn_coordinator::CoordinatorConfig;
use clap::Parser;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: allocation-heavy gRPC paths spent ~13 % of their CPU in
/// glibc's malloc, free and arena locks (docs/benchmarks/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "cairn-coordinator", about = "Cairn coordinator", version)]
struct Flags {
    /// TOML configuration file (optional); CAIRN_* environment variables and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This coordinator's member id (>= 1).
    #[arg(long)]
    member_id: Option<u64>,
    /// Take the member id from a StatefulSet pod's name: `<set>-N` is member N+1 (the Helm
    /// chart passes `$(POD_NAME)`); conflicts with --member-id.
    #[arg(long, conflicts_with = "member_id", value_name = "POD_NAME")]
    member_id_from_ordinal: Option<String>,
    /// gRPC listen address, ip:port.
    #[arg(long)]
    listen_address: Option<String>,
    /// Data folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Storage engine: `disk` (durable, the default) or `memory` (a throwaway process that
    /// keeps nothing when it stops).
    #[arg(long)]
    storage_engine: Option<cairn_raft::database::StorageEngine>,
    /// Every coordinator, comma separated `member_id=host:port`.
    #[arg(long, value_delimiter = ',')]
    members: Option<Vec<String>>,
    /// Shards of a new cluster.
    #[arg(long)]
    shard_count: Option<u32>,
    /// Replicas per shard of a new cluster.
    #[arg(long)]
    replication_factor: Option<u32>,
    /// HTTP endpoint for /metrics, /livez and /readyz, ip:port.
    #[arg(long)]
    metrics_listen_address: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn load(flags: &Flags) -> anyhow::Result<CoordinatorConfig> {
    let mut coordinator: CoordinatorConfig = cairn_telemetry::layered_config(
        &CoordinatorConfig::default(),
        flags.config.as_deref(),
        &["members"],
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    if let Some(id) = flags.member_id {
        coordinator.member_id = id;
    }
    if let Some(name) = &flags.member_id_from_ordinal {
        coordinator.member_id = cairn_coordinator::pod_ordinal::member_id_from_ordinal(name)?;
    }
    if let Some(address) = &flags.listen_address {
        coordinator.listen_address = address.clone();
    }
    if let Some(dir) = &flags.data_dir {
        coordinator.data_dir = dir.clone();
    }
    if let Some(engine) = flags.storage_engine {
        coordinator.storage.engine = engine;
    }
    if let Some(members) = &flags.members {
        coordinator.members = members.clone();
    }
    if let Some(count) = flags.shard_count {
        coordinator.shard_count = count;
    }
    if let Some(factor) = flags.replication_factor {
        coordinator.replication_factor = factor;
    }
    if let Some(address) = &flags.metrics_listen_address {
        coordinator.metrics_listen_address = address.clone();
    }
    coordinator.validate()?;
    Ok(coordinator)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let coordinator = load(&flags)?;
    if flags.check_config {
        let deprecated = coordinator.deprecated_raft_settings();
        for setting in &deprecated {
            eprintln!("warning: {setting}");
        }
        println!("{coordinator:#?}");
        if !deprecated.is_empty() {
            // `raft` above is the table as written; the deprecated names apply over it.
            println!("raft in effect: {:#?}", coordinator.raft_settings());
        }
        println!("configuration OK");
        return Ok(());
    }
    let telemetry = cairn_telemetry::init_telemetry(
        &coordinator.log,
        &coordinator.tracing,
        "cairn-coordinator",
        &coordinator.listen_address,
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    let result = cairn_coordinator::run(coordinator, cairn_telemetry::shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}
