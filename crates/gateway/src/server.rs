//! Starts a gateway: the shard-map watch, the router, and the public gRPC services.

use crate::auth::AuthGate;
use crate::auth_service::AuthService;
use crate::cluster_service::ClusterService;
use crate::config::GatewayConfig;
use crate::kv_service::{KvService, KvServiceParts};
use crate::metrics::GatewayMetrics;
use crate::router::Router;
use crate::routing::ShardMaps;
use cairn_coordinator_client::{CoordinatorClient, TimestampClient, TimestampClientConfig};
use cairn_proto::kv::v1::auth_server::AuthServer;
use cairn_proto::kv::v1::cluster_server::ClusterServer;
use cairn_proto::kv::v1::kv_server::KvServer;
use cairn_proto::retry::Backoff;
use cairn_types::REQUEST_BYTES_MAX_CEILING;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = cairn_telemetry::bind_listener(&config.listen_address).await?;
    run_with_listener(config, listener, shutdown).await
}

pub async fn run_with_listener(
    config: GatewayConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    // Bad TLS files fail start-up here, naming the file, before anything else happens.
    let public_tls = config.public_tls.server(&config.tls)?;
    let client_tls = config.tls.client()?;
    let coordinator_timeout = Duration::from_millis(config.coordinator_timeout_ms);
    let maps = ShardMaps::start(
        config.coordinators.clone(),
        coordinator_timeout,
        client_tls.clone(),
    );
    let router = Router::new(
        maps,
        Duration::from_millis(config.request_timeout_ms),
        config.attempts_max,
        Duration::from_millis(config.backoff_min_ms),
        Duration::from_millis(config.backoff_max_ms),
        config.outbound_bind_ip,
        config.batch_node_requests,
    );
    let coordinator_client = || {
        CoordinatorClient::new(config.coordinators.clone(), coordinator_timeout)
            .with_tls(client_tls.clone())
    };
    let auth = AuthGate::start(
        coordinator_client(),
        Duration::from_millis(config.auth_refresh_interval_ms),
        Duration::from_millis(config.request_timeout_ms),
        Duration::from_millis(config.auth_state_max_staleness_ms),
    );
    let metrics = Arc::new(GatewayMetrics::new());
    let txn_metrics = Arc::new(crate::txn::metrics::TxnMetrics::new(&metrics.registry));
    let (ready, scraped, scrape_metrics) = (router.clone(), router.clone(), metrics.clone());
    let metrics_endpoint = cairn_telemetry::start_http(
        &config.metrics_listen_address,
        metrics.registry.clone(),
        // Ready once it has a shard map to route by.
        Arc::new(move || {
            ready
                .maps
                .current()
                .map(|_| ())
                .ok_or_else(|| crate::error::GatewayError::NoShardMap.to_string())
        }),
        Arc::new(move || scrape_metrics.refresh(&scraped)),
    )
    .await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<ClusterServer<ClusterService>>().await;
    health.set_serving::<AuthServer<AuthService>>().await;
    tracing::info!(address = %config.listen_address, "gateway serving");
    let message_bytes_max = REQUEST_BYTES_MAX_CEILING as usize;
    // From the stop signal the gateway drains its connections for most of
    // `shutdown_grace_ms`, then drops the ones still open and exits.
    let stop =
        cairn_telemetry::Stopping::watch(shutdown, Duration::from_millis(config.shutdown_grace_ms));
    let drain_started = {
        let stop = stop.clone();
        async move {
            stop.stopped().await;
            tracing::info!("gateway stopping: draining connections");
        }
    };
    let kv_service = KvService::new(
        router,
        KvServiceParts {
            range_fanout_max: config.range_fanout_max,
            range_keys_max: config.range_keys_max,
            timestamps: TimestampClient::start(TimestampClientConfig {
                coordinators: config.coordinators.clone(),
                requests_in_flight_max: config.timestamp_requests_in_flight_max,
                rpc_timeout: coordinator_timeout,
                outbound_bind_ip: None,
                tls: client_tls.clone(),
            }),
            coordinator: coordinator_client(),
            auth: auth.clone(),
            txn: config.txn.clone(),
            txn_metrics,
            backoff: Backoff::new(
                Duration::from_millis(config.backoff_min_ms),
                Duration::from_millis(config.backoff_max_ms),
            ),
        },
    );
    // Every gateway scans for expired locks: a dead gateway's locks are resolved within
    // about lock_ttl_ms + lock_scan_interval_ms even if no request meets them (D96).
    let lock_scan = kv_service
        .sweeper()
        .start(Duration::from_millis(config.txn.lock_scan_interval_ms));
    let server = tonic::transport::Server::builder()
        .layer(metrics.grpc.layer())
        .add_service(health_service)
        .add_service(
            KvServer::new(kv_service)
                .max_decoding_message_size(message_bytes_max)
                .max_encoding_message_size(message_bytes_max),
        )
        .add_service(ClusterServer::new(ClusterService::new(
            config.coordinators.clone(),
            coordinator_timeout,
            client_tls.clone(),
            auth.clone(),
        )))
        .add_service(AuthServer::new(AuthService::new(
            auth,
            coordinator_client(),
            Duration::from_millis(config.auth_token_ttl_ms),
            config.auth_plaintext_allowed,
        )))
        // The public port: TLS when configured, with the client-certificate policy of
        // `public_tls.client_auth`; any verified client may call (roles are for Cairn's own
        // processes). The peer's identity rides in each request for authentication (D84),
        // which the services check against users and roles (D85-D89).
        .serve_with_incoming_shutdown(cairn_tls::incoming(listener, public_tls), drain_started);
    let result = cairn_telemetry::serve_bounded(server, &stop, |d| d.drain)
        .await
        .unwrap_or(Ok(()));
    lock_scan.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    result.map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
}
