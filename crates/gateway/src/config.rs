//! The gateway's configuration: defaults < TOML file < `CAIRN_*` environment < flags.

use cairn_telemetry::{LogConfig, TracingConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Address the public gRPC server binds, `ip:port`.
    pub listen_address: String,
    /// Coordinator addresses, `host:port` (DNS names allowed).
    pub coordinators: Vec<String>,
    /// Address of the HTTP endpoint with /metrics, /livez and /readyz, `ip:port`; empty
    /// disables it.
    pub metrics_listen_address: String,
    /// Log format and per-module levels.
    pub log: LogConfig,
    /// Trace export (OTLP); off unless `tracing.otlp_endpoint` is set.
    pub tracing: TracingConfig,
    /// Longest a client request may take in the gateway, retries included, in milliseconds.
    pub request_timeout_ms: u64,
    /// Most attempts per shard request (not-leader redirects and retries included).
    pub attempts_max: u32,
    /// Retry back-off bounds, in milliseconds (doubling, with jitter).
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Most shards a range asks at the same time.
    pub range_fanout_max: usize,
    /// Page size of a range that asks for no limit, and the largest allowed.
    pub range_keys_max: u64,
    /// Longest one call to a coordinator may take, in milliseconds.
    pub coordinator_timeout_ms: u64,
    /// Local IP that connections to storage nodes are bound to (the source address); unset
    /// lets the kernel choose.
    pub outbound_bind_ip: Option<std::net::IpAddr>,
    /// Threads that serve requests: 0 means one per CPU core; 1 runs the gateway on a
    /// single-threaded runtime (no work stealing or cross-thread wake-ups: the cheapest per
    /// request; scale out with more gateways).
    pub worker_threads: usize,
    /// Send Put, Get, Delete and Txn to each storage node over one long-lived batch stream
    /// (many requests per message) instead of one unary call each. Off is the fallback, and
    /// the baseline to compare with.
    pub batch_node_requests: bool,
    /// Requests for snapshot revisions (of ranges) to the timestamp oracle outstanding at
    /// once; ranges that arrive meanwhile leave together in the next request.
    pub timestamp_requests_in_flight_max: usize,
    /// Longest the process takes to exit after SIGTERM, in milliseconds: it hands off what it
    /// leads, drains its gRPC server and closes its storage within it (docs/operations.md).
    pub shutdown_grace_ms: u64,
    /// Transport security (docs/security.md): the certificate this gateway presents to the
    /// coordinators and nodes (mutual TLS), and by default serves to clients; off unless
    /// `tls.cert_file` is set.
    pub tls: cairn_tls::TlsConfig,
    /// The public port's own certificate and client-certificate policy (`[public_tls]`).
    pub public_tls: cairn_tls::PublicTlsConfig,
    /// How often the gateway asks the coordinator whether users, roles or the auth switch
    /// changed, in milliseconds: a change is in force here at most this long (plus one call)
    /// after the coordinator acknowledged it (docs/security.md).
    pub auth_refresh_interval_ms: u64,
    /// How long a token from `Authenticate` is accepted, in milliseconds.
    pub auth_token_ttl_ms: u64,
    /// While auth is on, how long the gateway keeps deciding requests by an auth state the
    /// coordinator has not confirmed, in milliseconds; past it requests are refused with
    /// UNAVAILABLE until a coordinator answers again, so a revoked permission never outlives
    /// this bound on a gateway cut off from the coordinators (docs/security.md, D66).
    pub auth_state_max_staleness_ms: u64,
    /// Accept `auth enable` over a plaintext connection (passwords and tokens then cross the
    /// network in clear). Off: turn TLS on at the public port first (D67).
    pub auth_plaintext_allowed: bool,
    /// Cross-shard transactions (`[txn]`): lock lifetime, the expired-lock scan, limits.
    pub txn: crate::txn::TxnConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1:7000".into(),
            coordinators: vec!["127.0.0.1:7001".into()],
            metrics_listen_address: String::new(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            request_timeout_ms: 10_000,
            attempts_max: 10,
            backoff_min_ms: 20,
            backoff_max_ms: 1_000,
            range_fanout_max: 64,
            range_keys_max: 10_000,
            coordinator_timeout_ms: 5_000,
            outbound_bind_ip: None,
            worker_threads: 0,
            batch_node_requests: true,
            timestamp_requests_in_flight_max: 2,
            shutdown_grace_ms: cairn_telemetry::SHUTDOWN_GRACE_MS_DEFAULT,
            tls: cairn_tls::TlsConfig::default(),
            public_tls: cairn_tls::PublicTlsConfig::default(),
            auth_refresh_interval_ms: 500,
            auth_token_ttl_ms: 300_000,
            auth_state_max_staleness_ms: 30_000,
            auth_plaintext_allowed: false,
            txn: crate::txn::TxnConfig::default(),
        }
    }
}

/// Bounds of `auth_refresh_interval_ms`: often enough to poll cheaply, rarely enough that a
/// revoked permission still ends within the documented 10 s at the slowest.
pub const AUTH_REFRESH_INTERVAL_MS_MIN: u64 = 50;
pub const AUTH_REFRESH_INTERVAL_MS_MAX: u64 = 10_000;
/// Longest `auth_state_max_staleness_ms`: an hour (the bound must bound something).
pub const AUTH_STATE_MAX_STALENESS_MS_MAX: u64 = 3_600_000;
/// Shortest token lifetime: a client must get to use its token.
pub const AUTH_TOKEN_TTL_MS_MIN: u64 = 1_000;
/// Longest token lifetime: a day (a stolen token must lapse; clients renew before expiry).
pub const AUTH_TOKEN_TTL_MS_MAX: u64 = 86_400_000;

pub use cairn_telemetry::ConfigError;
use cairn_telemetry::{check_socket_address, config_error as bad};

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        self.tracing.validate()?;
        self.tls
            .validate()
            .and_then(|()| self.public_tls.validate(&self.tls))
            .map_err(|problem| bad(&problem.field, problem.reason))?;
        if self.shutdown_grace_ms < cairn_telemetry::SHUTDOWN_GRACE_MS_MIN {
            return Err(bad(
                "shutdown_grace_ms",
                format!(
                    "must be at least {}",
                    cairn_telemetry::SHUTDOWN_GRACE_MS_MIN
                ),
            ));
        }
        check_socket_address("listen_address", &self.listen_address, false)?;
        check_socket_address("metrics_listen_address", &self.metrics_listen_address, true)?;
        if self.coordinators.is_empty() {
            return Err(bad("coordinators", "must list at least one coordinator"));
        }
        if self.request_timeout_ms < 100 {
            return Err(bad("request_timeout_ms", "must be at least 100"));
        }
        if self.worker_threads > 1024 {
            return Err(bad(
                "worker_threads",
                "must be in 0..=1024 (0: one per CPU core)",
            ));
        }
        if self.attempts_max == 0 || self.attempts_max > 100 {
            return Err(bad("attempts_max", "must be in 1..=100"));
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err(bad(
                "backoff_max_ms",
                "backoff_min_ms must be at least 1 and at most backoff_max_ms",
            ));
        }
        if self.timestamp_requests_in_flight_max == 0 {
            return Err(bad(
                "timestamp_requests_in_flight_max",
                "must be at least 1",
            ));
        }
        if self.range_fanout_max == 0 {
            return Err(bad("range_fanout_max", "must be at least 1"));
        }
        if self.range_keys_max == 0 {
            return Err(bad("range_keys_max", "must be at least 1"));
        }
        if self.coordinator_timeout_ms < 100 {
            return Err(bad("coordinator_timeout_ms", "must be at least 100"));
        }
        if !(AUTH_REFRESH_INTERVAL_MS_MIN..=AUTH_REFRESH_INTERVAL_MS_MAX)
            .contains(&self.auth_refresh_interval_ms)
        {
            return Err(bad(
                "auth_refresh_interval_ms",
                format!(
                    "must be in {AUTH_REFRESH_INTERVAL_MS_MIN}..={AUTH_REFRESH_INTERVAL_MS_MAX}"
                ),
            ));
        }
        if !(AUTH_TOKEN_TTL_MS_MIN..=AUTH_TOKEN_TTL_MS_MAX).contains(&self.auth_token_ttl_ms) {
            return Err(bad(
                "auth_token_ttl_ms",
                format!("must be in {AUTH_TOKEN_TTL_MS_MIN}..={AUTH_TOKEN_TTL_MS_MAX}"),
            ));
        }
        // At least two refreshes and a coordinator call, so one slow answer refuses nothing.
        let staleness_min = 2 * self.auth_refresh_interval_ms + self.coordinator_timeout_ms;
        if !(staleness_min..=AUTH_STATE_MAX_STALENESS_MS_MAX)
            .contains(&self.auth_state_max_staleness_ms)
        {
            return Err(bad(
                "auth_state_max_staleness_ms",
                format!(
                    "must be in {staleness_min}..={AUTH_STATE_MAX_STALENESS_MS_MAX} (at least \
                     2 x auth_refresh_interval_ms + coordinator_timeout_ms)"
                ),
            ));
        }
        self.txn.validate_with(self.request_timeout_ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/config/gateway.toml is what operators copy: it must load and validate.
    #[test]
    fn the_sample_file_in_deploy_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/gateway.toml");
        let config: GatewayConfig =
            cairn_telemetry::layered_config(&GatewayConfig::default(), Some(&path), &[])
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        config.validate().unwrap();
        assert!(!config.metrics_listen_address.is_empty());
        let unknown = cairn_telemetry::unknown_file_keys(&GatewayConfig::default(), &path);
        assert!(
            unknown.is_empty(),
            "unknown keys in the sample: {unknown:?}"
        );
        assert_eq!(config.coordinators.len(), 1);
    }

    #[test]
    fn bad_log_and_tracing_values_name_the_field() {
        let mut config = GatewayConfig::default();
        config.log.filter = "info,cairn_raft=loudest".into();
        assert_eq!(config.validate().unwrap_err().field, "log.filter");
        let mut config = GatewayConfig::default();
        config.tracing.sampling_ratio = 2.0;
        assert_eq!(
            config.validate().unwrap_err().field,
            "tracing.sampling_ratio"
        );
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        GatewayConfig::default().validate().unwrap();
        let config = GatewayConfig {
            worker_threads: 1025,
            ..GatewayConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "worker_threads");
        GatewayConfig {
            worker_threads: 1,
            ..GatewayConfig::default()
        }
        .validate()
        .unwrap();
        let config = GatewayConfig {
            coordinators: vec![],
            ..GatewayConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "coordinators");
        let config = GatewayConfig {
            backoff_min_ms: 50,
            backoff_max_ms: 10,
            ..GatewayConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "backoff_max_ms");
    }
}
