//! `cairn-gateway`: parses configuration, starts logging, runs the gateway.

use cairn_gateway::GatewayConfig;
use clap::Parser;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: allocation-heavy gRPC paths spent ~13 % of their CPU in
/// glibc's malloc, free and arena locks (docs/benchmarks/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-gateway",
    about = "Cairn gateway: the public KV API",
    version
)]
struct Flags {
    /// TOML configuration file (optional); CAIRN_* environment variables and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC listen address, ip:port.
    #[arg(long)]
    listen_address: Option<String>,
    /// Coordinator addresses, comma separated host:port (DNS names allowed).
    #[arg(long, value_delimiter = ',')]
    coordinators: Option<Vec<String>>,
    /// HTTP endpoint for /metrics, /livez and /readyz, ip:port.
    #[arg(long)]
    metrics_listen_address: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn load(flags: &Flags) -> anyhow::Result<GatewayConfig> {
    let mut gateway: GatewayConfig = cairn_telemetry::layered_config(
        &GatewayConfig::default(),
        flags.config.as_deref(),
        &["coordinators"],
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    if let Some(address) = &flags.listen_address {
        gateway.listen_address = address.clone();
    }
    if let Some(coordinators) = &flags.coordinators {
        gateway.coordinators = coordinators.clone();
    }
    if let Some(address) = &flags.metrics_listen_address {
        gateway.metrics_listen_address = address.clone();
    }
    gateway.validate()?;
    Ok(gateway)
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let gateway = load(&flags)?;
    if flags.check_config {
        println!("{gateway:#?}");
        println!("configuration OK");
        return Ok(());
    }
    let mut builder = match gateway.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if gateway.worker_threads > 1 {
        builder.worker_threads(gateway.worker_threads);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(serve(gateway))
}

async fn serve(gateway: cairn_gateway::GatewayConfig) -> anyhow::Result<()> {
    let telemetry = cairn_telemetry::init_telemetry(
        &gateway.log,
        &gateway.tracing,
        "cairn-gateway",
        &gateway.listen_address,
    )
    .map_err(|error| anyhow::anyhow!(error))?;
    let result = cairn_gateway::run(gateway, cairn_telemetry::shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}
