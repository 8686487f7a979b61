//! A first write-throughput probe of one shard: concurrent clients put 256-byte values to the
//! shard's leader for a fixed time, then it prints throughput and latency percentiles.
//! (The full YCSB-style bench tool, side by side with etcd, is `cairn-bench`'s job.)
//!
//! ```sh
//! ./scripts/local-cluster.sh &            # 3 nodes on 127.0.0.1:7101-7103
//! cargo run --example shard_write_load -- --nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
//!     --shard 0 --clients 64 --seconds 20
//! ```

use cairn_proto::kv::v1 as kv;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Flags {
    /// Node addresses, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    nodes: Vec<String>,
    #[arg(long, default_value_t = 0)]
    shard: u64,
    /// Concurrent clients (each waits for its write before the next).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// gRPC connections the clients share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
}

async fn find_leader(nodes: &[String], shard: u64) -> anyhow::Result<String> {
    for address in nodes {
        let Ok(mut admin) = NodeAdminClient::connect(format!("http://{address}")).await else {
            continue;
        };
        let Ok(status) = admin
            .shard_status(node::ShardStatusRequest {
                shard_id: shard,
                all: false,
            })
            .await
        else {
            continue;
        };
        if status
            .into_inner()
            .replicas
            .first()
            .is_some_and(|r| r.role == node::ReplicaRole::Leader as i32)
        {
            return Ok(address.clone());
        }
    }
    anyhow::bail!("no leader found for shard {shard}")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let leader = find_leader(&flags.nodes, flags.shard).await?;
    let mut channels = Vec::new();
    for _ in 0..flags.connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{leader}"))?
                .connect()
                .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(flags.seconds);
    let value = vec![b'x'; flags.value_bytes];
    let mut tasks = Vec::new();
    for client in 0..flags.clients {
        let mut kv_client = ShardKvClient::new(channels[client % channels.len()].clone());
        let value = value.clone();
        let shard = flags.shard;
        let client_id = rand::random::<u64>() | 1;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut sequence = 1u64;
            while Instant::now() < deadline {
                let request = node::ShardPutRequest {
                    target: Some(node::ShardTarget {
                        shard_id: shard,
                        epoch: 0,
                    }),
                    request: Some(kv::PutRequest {
                        key: format!("load/{client}/{}", sequence % 1000).into_bytes(),
                        value: value.clone(),
                        write_id: Some(kv::WriteId {
                            client_id,
                            sequence,
                            first_incomplete_sequence: sequence,
                        }),
                        ..Default::default()
                    }),
                };
                let started = Instant::now();
                match kv_client.put(request).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
                sequence += 1;
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (task_latencies, task_errors) = task.await?;
        latencies.extend(task_latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "shard {} leader {leader}: clients {} value {} B: {:.0} writes/s ({} ok, {errors} errors in {elapsed:.1} s); latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        flags.shard,
        flags.clients,
        flags.value_bytes,
        latencies.len() as f64 / elapsed,
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
