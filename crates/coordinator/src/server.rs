//! Starts a coordinator: its metadata Raft group (one replica in its own RocksDB), the Raft
//! transport to the other coordinators, the coordinator service and the reconcile loop.

use crate::compaction::Compaction;
use crate::config::CoordinatorConfig;
use crate::coordinator::Coordinator;
use crate::metadata::{MetadataStore, METADATA_SHARD};
use crate::metrics::CoordinatorMetrics;
use crate::oracle::{OracleMetrics, TimestampOracle};
use crate::service::CoordinatorService;
use crate::timestamp_allocator::SystemClock;
use cairn_proto::coordinator::v1::coordinator_server::CoordinatorServer;
use cairn_proto::raft::v1::raft_transport_server::RaftTransportServer;
use cairn_raft::database::{open_storage, RocksDbConfig};
use cairn_raft::group_commit::{GroupCommit, GroupCommitLimits, GroupCommitStats};
use cairn_raft::network::PeerChannels;
use cairn_raft::replica::{ReplicaContext, ShardReplica};
use cairn_raft::sessions::SessionLimits;
use cairn_raft::transport::{RaftTransportService, ReplicaDirectory};
use cairn_raft::type_config::NodeAddress;
use cairn_types::{NodeId, ShardId, RAFT_MESSAGE_BYTES_MAX};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Pause between attempts to found the coordinator group while its peers start.
const FOUND_RETRY: Duration = Duration::from_millis(500);

/// The coordinator hosts exactly one replica: the metadata group's.
struct MetadataDirectory {
    member: NodeId,
    replica: Arc<ShardReplica>,
}

impl ReplicaDirectory for MetadataDirectory {
    fn node_id(&self) -> NodeId {
        self.member
    }

    fn replica(&self, shard: ShardId) -> Option<Arc<ShardReplica>> {
        (shard == METADATA_SHARD).then(|| self.replica.clone())
    }
}

/// Who may call what on a coordinator when TLS is on (D82): nodes, gateways and the other
/// coordinators its service; only coordinators its Raft group.
fn role_policy() -> cairn_tls::RolePolicy {
    use cairn_proto::coordinator::v1::coordinator_server;
    use cairn_proto::raft::v1::raft_transport_server;
    use cairn_tls::Role;
    cairn_tls::RolePolicy::new()
        .allow_anyone("grpc.health.v1.Health")
        .allow(
            coordinator_server::SERVICE_NAME,
            &[Role::Node, Role::Gateway, Role::Coordinator],
        )
        .allow(raft_transport_server::SERVICE_NAME, &[Role::Coordinator])
}

pub async fn run(
    config: CoordinatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = cairn_telemetry::bind_listener(&config.listen_address).await?;
    run_with_listener(config, listener, shutdown).await
}

pub async fn run_with_listener(
    config: CoordinatorConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.warn_of_deprecated_settings();
    config.validate()?;
    // Bad TLS files fail start-up here, naming the file, before anything else happens.
    let server_tls = config.tls.server()?;
    let client_tls = config.tls.client()?;
    let member = NodeId(config.member_id);
    let engine = config.storage.engine;
    if !engine.is_durable() {
        tracing::warn!(
            "storage.engine = memory: this coordinator keeps the cluster's metadata in RAM only. \
             When it stops, the cluster is gone: a restart founds a new, empty cluster"
        );
    }
    let data_dir = config.data_dir.clone();
    // The metadata group never compacts its history (it counts its own revisions).
    let compaction_points = Arc::new(cairn_raft::mvcc_store::CompactionPoints::default());
    let points = compaction_points.clone();
    let mut storage = tokio::task::spawn_blocking(move || {
        open_storage(
            engine,
            &data_dir,
            &RocksDbConfig::default(),
            points,
            "coordinator",
        )
    })
    .await??;
    let db = storage.db.clone();
    let group_commit = GroupCommit::start(
        db.clone(),
        GroupCommitLimits {
            sync_wal: engine.is_durable(),
            ..GroupCommitLimits::default()
        },
        Arc::new(GroupCommitStats::default()),
    );
    let channels = PeerChannels::new(config.transport()).with_tls(client_tls.clone());
    let raft = config.raft_settings();
    let raft_config = raft.to_openraft(config.transport().snapshot_transfer_timeout_ms)?;
    let context = Arc::new(ReplicaContext {
        node_id: member,
        db,
        snapshot_root: storage.snapshot_root.clone(),
        channels: channels.clone(),
        group_commit,
        raft_config,
        session_limits: SessionLimits::default(),
        propose_timeout: Duration::from_secs(10),
        read_index_timeout: Duration::from_secs(5),
        // The timestamp oracle confirms its leadership before every answer (D55): by lease
        // unless `raft.linearizable_reads` says otherwise, so that costs no round trip. The
        // vote hold after a restart stays whatever that setting, as on storage nodes, since
        // another member may read by lease (D26, D53).
        linearizable_reads: raft.linearizable_reads,
        hold_votes_after_restart: true,
        compaction_points,
        timestamps: None,
    });
    let replica = Arc::new(ShardReplica::open(context, METADATA_SHARD).await?);
    let members: BTreeMap<NodeId, NodeAddress> = config
        .member_list()?
        .into_iter()
        .map(|(id, address)| (NodeId(id), NodeAddress { address }))
        .collect();
    if members.keys().next() == Some(&member) {
        let replica = replica.clone();
        tokio::spawn(async move {
            loop {
                match replica.initialize(members.clone()).await {
                    Ok(founded) => {
                        if founded {
                            tracing::info!("founded the coordinator group");
                        }
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "founding the coordinator group failed; retrying");
                        tokio::time::sleep(FOUND_RETRY).await;
                    }
                }
            }
        });
    }

    let coordinator = Coordinator::new(
        config.clone(),
        MetadataStore::new(replica.clone()),
        channels,
    )?;
    let reconcile = tokio::spawn(coordinator.clone().run_reconcile());
    let metrics = Arc::new(CoordinatorMetrics::new());
    cairn_telemetry::register_info_gauge(
        &metrics.registry,
        "cairn_storage_engine",
        "Where this process keeps its data: engine=\"disk\" (durable) or \"memory\" (lost when it stops).",
        "engine",
        engine.as_str(),
    );
    let oracle = TimestampOracle::new(
        MetadataStore::new(replica.clone()),
        Arc::new(SystemClock),
        OracleMetrics::new(&metrics.registry),
    );
    let compaction = Compaction::new(MetadataStore::new(replica.clone()), oracle.clone());
    let auto_compaction = tokio::spawn(compaction.clone().run_auto(config.auto_compaction.clone()));
    let (ready, scraped, scrape_metrics) =
        (coordinator.clone(), coordinator.clone(), metrics.clone());
    let metrics_endpoint = cairn_telemetry::start_http(
        &config.metrics_listen_address,
        metrics.registry.clone(),
        // Ready once the coordinator group has a leader (this member or another).
        Arc::new(move || {
            ready
                .leader_id()
                .map(|_| ())
                .ok_or_else(|| "no coordinator leader".to_string())
        }),
        Arc::new(move || scrape_metrics.refresh(&scraped)),
    )
    .await?;
    let directory = Arc::new(MetadataDirectory {
        member,
        replica: replica.clone(),
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CoordinatorServer<CoordinatorService>>()
        .await;
    tracing::info!(member = config.member_id, address = %config.listen_address, "coordinator serving");
    // From the stop signal: hand off leadership, stop serving and stop Raft, then drain the
    // gRPC server, all within `shutdown_grace_ms` (crate::shutdown, D43).
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let stop = cairn_telemetry::Stopping::watch(shutdown, grace);
    let drain_started = {
        let (stop, coordinator, replica) = (stop.clone(), coordinator.clone(), replica.clone());
        let (reconcile, auto_compaction) =
            (reconcile.abort_handle(), auto_compaction.abort_handle());
        async move {
            let deadlines = stop.stopped().await;
            reconcile.abort();
            auto_compaction.abort();
            crate::shutdown::stop(&coordinator, &replica, deadlines).await;
            tracing::info!("coordinator stopping: draining connections");
        }
    };
    let server = tonic::transport::Server::builder()
        .layer(metrics.grpc.layer())
        .layer(cairn_tls::RoleLayer::new(
            server_tls.as_ref().map(|_| role_policy()),
        ))
        .add_service(health_service)
        .add_service(CoordinatorServer::new(
            CoordinatorService::new(coordinator, oracle, compaction).with_tls(client_tls),
        ))
        .add_service(
            RaftTransportServer::new(RaftTransportService::new(directory, 2))
                .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize)
                .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX as usize),
        )
        .serve_with_incoming_shutdown(cairn_tls::incoming(listener, server_tls), drain_started);
    let result = cairn_telemetry::serve_bounded(server, &stop, |d| d.drain)
        .await
        .unwrap_or(Ok(()));
    reconcile.abort();
    auto_compaction.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    let exit = stop
        .deadlines()
        .map_or_else(|| std::time::Instant::now() + grace / 5, |d| d.exit);
    // Already stopped on the way here unless the server failed; stopping twice is harmless.
    cairn_telemetry::until_deadline("coordinator raft shutdown", exit, replica.shutdown()).await;
    storage.remove_scratch();
    result.map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
}
