//! `cairn-bench`: parses arguments, connects to the system under test, runs the load phase
//! and the measured run, and writes the JSON result.

use anyhow::{Context, Result};
use cairn_bench::args::ETCD_SHARD_COUNT_DEFAULT;
use cairn_bench::report::RESULT_SCHEMA;
use cairn_bench::runner::{self, RunPlan};
use cairn_bench::{
    BenchArgs, BenchResult, CairnTarget, EtcdTarget, KeyChooser, KvTarget, PairChooser, Phase,
    TargetKind,
};
use clap::Parser;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> Result<()> {
    let args = BenchArgs::parse();
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(bench(&args))?;
    let json = serde_json::to_string_pretty(&result)?;
    if args.output == "-" {
        println!("{json}");
    } else {
        std::fs::write(&args.output, json + "\n")
            .with_context(|| format!("writing {}", args.output))?;
    }
    Ok(())
}

async fn bench(args: &BenchArgs) -> Result<BenchResult> {
    let endpoints = args.endpoints();
    let tls = args.tls();
    // Connection i starts at endpoint i (etcd's own benchmark spreads clients the same way).
    let rotated = |i: usize| -> Vec<String> {
        let mut list = endpoints.clone();
        list.rotate_left(i % endpoints.len());
        list
    };
    match args.target {
        TargetKind::Cairn => {
            let mut connections = Vec::new();
            for i in 0..args.connections() {
                connections
                    .push(CairnTarget::connect(rotated(i), args.serializable, tls.clone()).await?);
            }
            let shard_count = if args.workload.is_transactional() {
                let cluster = connections[0]
                    .shard_count()
                    .await
                    .context("asking the cluster for its shard count")?;
                if let Some(given) = args.shard_count {
                    anyhow::ensure!(
                        given == cluster,
                        "--shard-count {given}, but the cluster has {cluster} shards: the pairs \
                         of workload T would not span two shards"
                    );
                }
                Some(cluster)
            } else {
                None
            };
            measure(args, &connections, shard_count).await
        }
        TargetKind::Etcd => {
            let mut connections = Vec::new();
            for i in 0..args.connections() {
                // One member per connection: the etcd client balances over every endpoint it
                // is given, so each gets only its own.
                let endpoint = rotated(i).swap_remove(0);
                connections
                    .push(EtcdTarget::connect(&endpoint, args.serializable, tls.as_ref()).await?);
            }
            let shard_count = args
                .workload
                .is_transactional()
                .then(|| args.shard_count.unwrap_or(ETCD_SHARD_COUNT_DEFAULT));
            measure(args, &connections, shard_count).await
        }
    }
}

/// Loads and runs; `shard_count` places the key pairs of the transactional workload.
async fn measure<T: KvTarget>(
    args: &BenchArgs,
    connections: &[T],
    shard_count: Option<u32>,
) -> Result<BenchResult> {
    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let name = format!(
        "[{:?}{} {} c={}]",
        args.target,
        if args.tls().is_some() { "+tls" } else { "" },
        args.workload.name(),
        args.concurrency
    )
    .to_lowercase();
    let progress = |phase: &str| (!args.quiet).then(|| format!("{name} {phase}"));
    let load = if matches!(args.phase, Phase::Load | Phase::All) {
        let summary = runner::load(
            connections,
            args.record_count,
            args.key_size,
            args.value_size,
            args.concurrency,
            args.seed,
            progress("load"),
        )
        .await;
        anyhow::ensure!(
            summary.errors == 0,
            "{} of {} loads failed",
            summary.errors,
            args.record_count
        );
        Some(summary)
    } else {
        None
    };
    let run = if matches!(args.phase, Phase::Run | Phase::All) {
        let chooser = KeyChooser::new(args.distribution, args.record_count);
        let plan = RunPlan {
            workload: args.workload,
            pairs: shard_count.map(|shard_count| PairChooser {
                chooser: chooser.clone(),
                record_count: args.record_count,
                key_size: args.key_size,
                shard_count,
            }),
            chooser,
            key_size: args.key_size,
            value_size: args.value_size,
            concurrency: args.concurrency,
            warmup: args.warmup(),
            duration: args.duration(),
            operations: args.operations,
            seed: args.seed,
            progress: progress("run"),
        };
        let summary = runner::run(connections, plan).await;
        if let Some(error) = &summary.first_error {
            eprintln!(
                "{name}: {} errors {:?}; first: {error}",
                summary.errors, summary.errors_by_kind
            );
        }
        Some(summary)
    } else {
        None
    };
    Ok(BenchResult {
        schema: RESULT_SCHEMA,
        label: args.label.clone(),
        target: args.target,
        endpoints: args.endpoints(),
        tls: args.tls().is_some(),
        workload: args.workload,
        read_proportion: args.workload.read_proportion(),
        distribution: args.distribution,
        read_consistency: if args.serializable {
            "serializable"
        } else {
            "linearizable"
        },
        record_count: args.record_count,
        key_size: args.key_size,
        value_size: args.value_size,
        concurrency: args.concurrency,
        connections: args.connections(),
        phase: args.phase,
        started_at_unix_ms,
        load,
        run,
    })
}
