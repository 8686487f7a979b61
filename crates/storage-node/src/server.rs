//! Starts a storage node: opens storage, serves gRPC, runs the static bootstrap, and shuts
//! down cleanly when asked.

use crate::admin_service::AdminService;
use crate::batch::BatchContext;
use crate::config::NodeConfig;
use crate::coordinator_client;
use crate::kv_service::KvService;
use crate::metrics::NodeMetrics;
use crate::node::Node;
use cairn_proto::node::v1::node_admin_server::NodeAdminServer;
use cairn_proto::node::v1::shard_kv_server::ShardKvServer;
use cairn_proto::raft::v1::raft_transport_server::RaftTransportServer;
use cairn_raft::transport::RaftTransportService;
use cairn_raft::type_config::NodeAddress;
use cairn_types::{
    NodeId, ShardId, BATCH_ENVELOPE_BYTES, RAFT_MESSAGE_BYTES_MAX, REQUEST_BYTES_MAX_CEILING,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

/// Pause between attempts to found a bootstrap shard whose peers are not up yet.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(500);
/// Attempts before the bootstrap gives up on a shard (about five minutes).
const BOOTSTRAP_ATTEMPTS_MAX: u32 = 600;

/// Runs a storage node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = cairn_telemetry::bind_listener(&config.listen_address).await?;
    run_with_listener(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind port 0 and read the port).
pub async fn run_with_listener(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    config.validate()?;
    // Bad TLS files fail start-up here, naming the file, before anything else happens.
    let server_tls = config.tls.server()?;
    let client_tls = config.tls.client()?;
    if !config.storage.engine.is_durable() {
        tracing::warn!(
            "storage.engine = memory: this node keeps its data in RAM only. Everything it holds is \
             lost when it stops, and it rejoins as a new node; never use it for data that matters"
        );
    }
    // A statically bootstrapped node belongs to no named cluster.
    let mut cluster_id = String::new();
    if let Some(coordinator) = &config.coordinator {
        let joined = coordinator_client::node_id_from_coordinator(
            &config.data_dir,
            config.storage.engine,
            &config.advertise(),
            config.node_id,
            coordinator,
            &client_tls,
        )
        .await?;
        if config.node_id != 0 && config.node_id != joined.node_id {
            anyhow::bail!(
                "configured node_id {} but the coordinator knows this node as {}",
                config.node_id,
                joined.node_id
            );
        }
        config.node_id = joined.node_id;
        cluster_id = joined.cluster_id;
    }
    let node = Node::open(config, cluster_id).await?;
    let metrics = Arc::new(NodeMetrics::new());
    cairn_telemetry::register_info_gauge(
        &metrics.registry,
        "cairn_storage_engine",
        "Where this process keeps its data: engine=\"disk\" (durable) or \"memory\" (lost when it stops).",
        "engine",
        node.storage_engine().as_str(),
    );
    let fsync_duration = metrics.fsync_duration.clone();
    let _ = node
        .group_commit_stats
        .fsync_observer
        .set(Box::new(move |elapsed| {
            fsync_duration.observe(elapsed.as_secs_f64())
        }));
    let (ready_node, scrape_node, scrape_metrics) = (node.clone(), node.clone(), metrics.clone());
    let metrics_endpoint = cairn_telemetry::start_http(
        &node.config.metrics_listen_address,
        metrics.registry.clone(),
        Arc::new(move || crate::metrics::readiness(&ready_node)),
        Arc::new(move || scrape_metrics.refresh(&scrape_node)),
    )
    .await?;
    let heartbeats = node.config.coordinator.clone().map(|coordinator| {
        tokio::spawn(coordinator_client::heartbeat_loop(
            node.clone(),
            node.config.advertise(),
            coordinator,
        ))
    });
    tracing::info!(node_id = %node.node_id(), address = %node.config.listen_address, "storage node serving");

    let bootstrap = tokio::spawn(bootstrap(node.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ShardKvServer<KvService>>().await;
    health.set_serving::<NodeAdminServer<AdminService>>().await;
    health
        .set_serving::<RaftTransportServer<RaftTransportService<Node>>>()
        .await;

    // From the stop signal the node has `shutdown_grace_ms` to exit: it hands off the
    // leadership of its shards while still serving, then drains its gRPC server (batch
    // streams must end for that: they watch `stopping`), then stops its replicas.
    let grace = Duration::from_millis(node.config.shutdown_grace_ms);
    let stop = cairn_telemetry::Stopping::watch(shutdown, grace);
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = {
        let (stop, node) = (stop.clone(), node.clone());
        async move {
            let deadlines = stop.stopped().await;
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "storage node stopping: handing off shard leadership"
            );
            cairn_telemetry::until_deadline(
                "shard leadership hand-off",
                deadlines.handoff,
                node.hand_off_leadership(deadlines.handoff),
            )
            .await;
            tracing::info!("storage node stopping: draining connections");
            let _ = stopping_tx.send(true);
        }
    };
    let batch = BatchContext {
        metrics: metrics.grpc.clone(),
        stopping,
    };
    // One batch message may carry an item of the largest request size plus its envelope.
    let message_bytes_max = (REQUEST_BYTES_MAX_CEILING + BATCH_ENVELOPE_BYTES) as usize;
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(metrics.grpc.layer())
        .layer(cairn_tls::RoleLayer::new(
            server_tls.as_ref().map(|_| role_policy()),
        ))
        .add_service(health_service)
        // Every internal service first checks that the call is meant for this node of this
        // cluster (D35): a reused address never makes a node act on its predecessor's calls.
        .add_service(InterceptedService::new(
            ShardKvServer::new(KvService::new(node.clone(), batch))
                .max_decoding_message_size(message_bytes_max)
                .max_encoding_message_size(message_bytes_max),
            node.destination_check(),
        ))
        .add_service(InterceptedService::new(
            NodeAdminServer::new(AdminService::new(node.clone())),
            node.destination_check(),
        ))
        .add_service(InterceptedService::new(
            RaftTransportServer::new(RaftTransportService::new(
                node.clone(),
                node.config.snapshot_receives_max,
            ))
            .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize)
            .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize),
            node.destination_check(),
        ))
        .serve_with_incoming_shutdown(cairn_tls::incoming(listener, server_tls), shutdown);
    let result = cairn_telemetry::serve_bounded(server, &stop, |d| d.drain)
        .await
        .unwrap_or(Ok(()));
    bootstrap.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    if let Some(heartbeats) = heartbeats {
        heartbeats.abort();
    }
    tracing::info!("storage node stopping: shutting down replicas");
    let exit = stop
        .deadlines()
        .map_or_else(|| std::time::Instant::now() + grace / 5, |d| d.exit);
    cairn_telemetry::until_deadline("replica shutdown", exit, node.shutdown()).await;
    result.map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
}

/// Who may call what on a node when TLS is on (D82): the gateways its data, the
/// coordinators its administration, other nodes its Raft groups.
fn role_policy() -> cairn_tls::RolePolicy {
    use cairn_proto::node::v1::{node_admin_server, shard_kv_server};
    use cairn_proto::raft::v1::raft_transport_server;
    use cairn_tls::Role;
    cairn_tls::RolePolicy::new()
        .allow_anyone("grpc.health.v1.Health")
        .allow(shard_kv_server::SERVICE_NAME, &[Role::Gateway])
        .allow(node_admin_server::SERVICE_NAME, &[Role::Coordinator])
        .allow(raft_transport_server::SERVICE_NAME, &[Role::Node])
}

/// Static bootstrap: host a replica of every shard, and found each group from the member with
/// the lowest node id. Idempotent across restarts.
async fn bootstrap(node: Arc<Node>) {
    let Some(bootstrap) = node.config.bootstrap.clone() else {
        return;
    };
    let members = match node.config.bootstrap_members() {
        Ok(members) => members,
        Err(error) => {
            tracing::error!(%error, "bootstrap skipped");
            return;
        }
    };
    let founder = members.iter().map(|(id, _)| *id).min() == Some(node.node_id().0);
    let membership: BTreeMap<NodeId, NodeAddress> = members
        .into_iter()
        .map(|(id, address)| (NodeId(id), NodeAddress { address }))
        .collect();
    for shard in (0..u64::from(bootstrap.shard_count)).map(ShardId) {
        if let Err(error) = node.create_replica(shard).await {
            tracing::error!(%shard, %error, "bootstrap could not create the replica");
            continue;
        }
        if !founder {
            continue;
        }
        let Some(replica) = cairn_raft::transport::ReplicaDirectory::replica(node.as_ref(), shard)
        else {
            continue;
        };
        for attempt in 1..=BOOTSTRAP_ATTEMPTS_MAX {
            match replica.initialize(membership.clone()).await {
                Ok(true) => {
                    tracing::info!(%shard, "bootstrap founded the shard's raft group");
                    break;
                }
                Ok(false) => break,
                Err(error) if attempt < BOOTSTRAP_ATTEMPTS_MAX => {
                    tracing::debug!(%shard, %error, "bootstrap initialise failed; retrying");
                    tokio::time::sleep(BOOTSTRAP_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(%shard, %error, "bootstrap gave up founding the shard")
                }
            }
        }
    }
}
