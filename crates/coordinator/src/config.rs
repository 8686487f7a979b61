//! The coordinator's configuration: defaults < TOML file < `CAIRN_*` environment < flags,
//! validated at start with errors that name the field.
//!
//! The coordinator group's Raft settings are the `[raft]` section the storage node has too
//! ([`RaftConfig`], D53). Until 0.2 the flat names they had before (`heartbeat_interval_ms`,
//! `election_timeout_min_ms`, `election_timeout_max_ms`) are still read, over `[raft]`, and
//! each one set is logged as deprecated when the coordinator starts.

use cairn_raft::database::{StorageConfig, StorageEngine};
use cairn_raft::network::TransportConfig;
use cairn_raft::raft_config::RaftConfig;
use cairn_telemetry::{LogConfig, TracingConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorConfig {
    /// This coordinator's id within the coordinator group (1, 2, 3 …); never 0.
    pub member_id: u64,
    /// Address the gRPC server binds, `ip:port`.
    pub listen_address: String,
    /// Folder for the coordinator's RocksDB and snapshots (unused when `storage.engine` is
    /// `memory`).
    pub data_dir: PathBuf,
    /// `storage.engine`: `disk` (durable) or `memory` (a throwaway cluster: the metadata is
    /// lost when the coordinator stops; one member only).
    pub storage: StorageConfig,
    /// Address of the HTTP endpoint with /metrics, /livez and /readyz, `ip:port`; empty
    /// disables it.
    pub metrics_listen_address: String,
    /// Log format and per-module levels.
    pub log: LogConfig,
    /// Trace export (OTLP); off unless `tracing.otlp_endpoint` is set.
    pub tracing: TracingConfig,
    /// Every coordinator as `member_id=host:port`, this one included (1 or 3 members).
    pub members: Vec<String>,
    /// Shards of a new cluster; fixed once the cluster is created.
    pub shard_count: u32,
    /// Replicas per shard of a new cluster; fixed once the cluster is created.
    pub replication_factor: u32,
    /// A node silent for this long is suspect (no new replicas go to it), in milliseconds.
    pub suspect_after_ms: u64,
    /// A node silent for this long is down (its replicas are replaced), in milliseconds.
    pub down_after_ms: u64,
    /// Period of the reconcile loop, in milliseconds.
    pub reconcile_interval_ms: u64,
    /// Most replica moves and leader transfers in flight at once.
    pub moves_in_flight_max: usize,
    /// Allowed difference between the most and least loaded node's replica count.
    pub replica_tolerance: usize,
    /// Allowed difference between the most and least loaded node's leader count.
    pub leader_tolerance: usize,
    /// Longest one call to a storage node's admin service may take, in milliseconds.
    pub admin_timeout_ms: u64,
    /// Raft timing, log compaction and read confirmation of the coordinator group (`[raft]`,
    /// shared with the storage node).
    pub raft: RaftConfig,
    /// Deprecated: `raft.heartbeat_interval_ms`, in milliseconds. Read until 0.2.
    pub heartbeat_interval_ms: Option<u64>,
    /// Deprecated: `raft.election_timeout_min_ms`, in milliseconds. Read until 0.2.
    pub election_timeout_min_ms: Option<u64>,
    /// Deprecated: `raft.election_timeout_max_ms`, in milliseconds. Read until 0.2.
    pub election_timeout_max_ms: Option<u64>,
    /// Local IP that outgoing connections (to the other coordinators and to storage nodes)
    /// are bound to (the source address); unset lets the kernel choose.
    pub outbound_bind_ip: Option<std::net::IpAddr>,
    /// Automatic compaction of old revisions (`[auto_compaction]`); off by default, as etcd.
    pub auto_compaction: crate::compaction::AutoCompaction,
    /// Longest the process takes to exit after SIGTERM, in milliseconds: it hands off what it
    /// leads, drains its gRPC server and closes its storage within it (docs/operations.md).
    pub shutdown_grace_ms: u64,
    /// Transport security (docs/security.md): the certificate this coordinator serves and
    /// presents to the other coordinators and the nodes; off unless `tls.cert_file` is set.
    pub tls: cairn_tls::TlsConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            member_id: 1,
            listen_address: "127.0.0.1:7001".into(),
            data_dir: PathBuf::from("./.cairn-data/coordinator"),
            storage: StorageConfig::default(),
            metrics_listen_address: String::new(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            members: Vec::new(),
            shard_count: 16,
            replication_factor: 3,
            suspect_after_ms: 3_000,
            down_after_ms: 10_000,
            reconcile_interval_ms: 500,
            moves_in_flight_max: 4,
            replica_tolerance: 1,
            leader_tolerance: 1,
            admin_timeout_ms: 10_000,
            raft: RaftConfig::default(),
            heartbeat_interval_ms: None,
            election_timeout_min_ms: None,
            election_timeout_max_ms: None,
            outbound_bind_ip: None,
            auto_compaction: Default::default(),
            shutdown_grace_ms: cairn_telemetry::SHUTDOWN_GRACE_MS_DEFAULT,
            tls: cairn_tls::TlsConfig::default(),
        }
    }
}

/// A setting still read under a name that is going away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeprecatedSetting {
    /// The old name, as in the file (`CAIRN_` + upper case in the environment).
    pub name: &'static str,
    /// The dotted path of the setting that replaces it.
    pub replaced_by: &'static str,
    pub value: u64,
}

impl std::fmt::Display for DeprecatedSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deprecated setting `{}` (CAIRN_{}) is read until 0.2: set `{}` (CAIRN_{}) instead",
            self.name,
            self.name.to_uppercase(),
            self.replaced_by,
            self.replaced_by.replace('.', "__").to_uppercase(),
        )
    }
}

pub use cairn_telemetry::ConfigError;
use cairn_telemetry::{check_socket_address, config_error as bad};

impl CoordinatorConfig {
    /// The coordinator members as (member id, address); the defaults to this member alone.
    pub fn member_list(&self) -> Result<Vec<(u64, String)>, ConfigError> {
        if self.members.is_empty() {
            return Ok(vec![(self.member_id, self.listen_address.clone())]);
        }
        let mut members = Vec::new();
        for member in &self.members {
            let (id, address) = member
                .split_once('=')
                .ok_or_else(|| bad("members", format!("{member:?} is not member_id=host:port")))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| bad("members", format!("{member:?}: id is not a number")))?;
            if id == 0 {
                return Err(bad("members", "member ids start at 1"));
            }
            members.push((id, address.trim().to_string()));
        }
        Ok(members)
    }

    /// The flat Raft settings of before `[raft]` that are set, each with the `[raft]` field
    /// that replaces it and its value.
    pub fn deprecated_raft_settings(&self) -> Vec<DeprecatedSetting> {
        [
            (
                "heartbeat_interval_ms",
                "raft.heartbeat_interval_ms",
                self.heartbeat_interval_ms,
            ),
            (
                "election_timeout_min_ms",
                "raft.election_timeout_min_ms",
                self.election_timeout_min_ms,
            ),
            (
                "election_timeout_max_ms",
                "raft.election_timeout_max_ms",
                self.election_timeout_max_ms,
            ),
        ]
        .into_iter()
        .filter_map(|(name, replaced_by, value)| {
            value.map(|value| DeprecatedSetting {
                name,
                replaced_by,
                value,
            })
        })
        .collect()
    }

    /// The coordinator group's Raft settings in effect: `[raft]`, with a deprecated flat
    /// name's value in place of the field that replaces it.
    pub fn raft_settings(&self) -> RaftConfig {
        let mut raft = self.raft.clone();
        if let Some(value) = self.heartbeat_interval_ms {
            raft.heartbeat_interval_ms = value;
        }
        if let Some(value) = self.election_timeout_min_ms {
            raft.election_timeout_min_ms = value;
        }
        if let Some(value) = self.election_timeout_max_ms {
            raft.election_timeout_max_ms = value;
        }
        raft
    }

    /// Logs a warning for each deprecated setting in use; called once at start-up.
    pub fn warn_of_deprecated_settings(&self) {
        for setting in self.deprecated_raft_settings() {
            tracing::warn!(
                setting = setting.name,
                replaced_by = setting.replaced_by,
                value = setting.value,
                "{setting}"
            );
        }
    }

    pub fn transport(&self) -> TransportConfig {
        TransportConfig {
            outbound_bind_ip: self.outbound_bind_ip,
            ..TransportConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        self.tracing.validate()?;
        self.tls
            .validate()
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
        if self.member_id == 0 {
            return Err(bad("member_id", "must be at least 1"));
        }
        check_socket_address("listen_address", &self.listen_address, false)?;
        check_socket_address("metrics_listen_address", &self.metrics_listen_address, true)?;
        let members = self.member_list()?;
        if !members.iter().any(|(id, _)| *id == self.member_id) {
            return Err(bad("members", "must include this coordinator's member_id"));
        }
        if !(members.len() == 1 || members.len() == 3 || members.len() == 5) {
            return Err(bad("members", "a coordinator group has 1, 3 or 5 members"));
        }
        // A member restarted in memory has lost its Raft vote and log; in a group of three it
        // could vote twice in one term or drop committed metadata. Alone, a restart simply
        // starts a new cluster (D31).
        if self.storage.engine == StorageEngine::Memory && members.len() != 1 {
            return Err(bad(
                "storage.engine",
                "memory is allowed for a single coordinator only: a restarted in-memory member has lost its Raft state",
            ));
        }
        if self.shard_count == 0 || self.shard_count > 65_536 {
            return Err(bad("shard_count", "must be in 1..=65536"));
        }
        if self.replication_factor == 0 || self.replication_factor > 7 {
            return Err(bad("replication_factor", "must be in 1..=7"));
        }
        if self.suspect_after_ms < 2 * self.reconcile_interval_ms {
            return Err(bad(
                "suspect_after_ms",
                "must be at least 2 × reconcile_interval_ms",
            ));
        }
        let retention = &self.auto_compaction;
        if retention.mode == crate::compaction::AutoCompactionMode::Periodic
            && retention.retention_ms < 1_000
        {
            return Err(bad(
                "auto_compaction.retention_ms",
                "must be at least 1000 with mode = \"periodic\"",
            ));
        }
        if retention.mode == crate::compaction::AutoCompactionMode::Revision
            && retention.retention_revisions == 0
        {
            return Err(bad(
                "auto_compaction.retention_revisions",
                "must be at least 1 with mode = \"revision\"",
            ));
        }
        if self.down_after_ms <= self.suspect_after_ms {
            return Err(bad("down_after_ms", "must be above suspect_after_ms"));
        }
        if self.reconcile_interval_ms < 50 {
            return Err(bad("reconcile_interval_ms", "must be at least 50"));
        }
        if self.replica_tolerance == 0 {
            return Err(bad(
                "replica_tolerance",
                "must be at least 1 (0 never settles when replicas do not divide evenly)",
            ));
        }
        if self.leader_tolerance == 0 {
            return Err(bad("leader_tolerance", "must be at least 1"));
        }
        if self.moves_in_flight_max == 0 {
            return Err(bad("moves_in_flight_max", "must be at least 1"));
        }
        if self.admin_timeout_ms < 1_000 {
            return Err(bad("admin_timeout_ms", "must be at least 1000"));
        }
        self.raft_settings().validate().map_err(|error| {
            // A value given under its deprecated name is reported under that name.
            let field = self
                .deprecated_raft_settings()
                .into_iter()
                .find(|setting| setting.replaced_by == error.field)
                .map_or(error.field, |setting| setting.name);
            bad(field, error.rule.to_string())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/config/coordinator.toml is what operators copy: it must load and validate.
    #[test]
    fn the_sample_file_in_deploy_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/coordinator.toml");
        let config: CoordinatorConfig =
            cairn_telemetry::layered_config(&CoordinatorConfig::default(), Some(&path), &[])
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        config.validate().unwrap();
        assert!(!config.metrics_listen_address.is_empty());
        let unknown = cairn_telemetry::unknown_file_keys(&CoordinatorConfig::default(), &path);
        assert!(
            unknown.is_empty(),
            "unknown keys in the sample: {unknown:?}"
        );
        assert_eq!(config.members.len(), 1);
    }

    #[test]
    fn bad_log_and_tracing_values_name_the_field() {
        let mut config = CoordinatorConfig::default();
        config.log.filter = "info,cairn_raft=loudest".into();
        assert_eq!(config.validate().unwrap_err().field, "log.filter");
        let mut config = CoordinatorConfig::default();
        config.tracing.sampling_ratio = 2.0;
        assert_eq!(
            config.validate().unwrap_err().field,
            "tracing.sampling_ratio"
        );
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        CoordinatorConfig::default().validate().unwrap();
        let config = CoordinatorConfig {
            down_after_ms: 1_000,
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "down_after_ms");
        let config = CoordinatorConfig {
            members: vec!["1=127.0.0.1:1".into(), "2=127.0.0.1:2".into()],
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "members");
        let config = CoordinatorConfig {
            replication_factor: 0,
            ..CoordinatorConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "replication_factor");
    }

    #[test]
    fn raft_errors_name_the_raft_field() {
        let mut config = CoordinatorConfig::default();
        config.raft.election_timeout_min_ms = 100;
        assert_eq!(
            config.validate().unwrap_err().field,
            "raft.election_timeout_min_ms"
        );
        let mut config = CoordinatorConfig::default();
        config.raft.heartbeat_interval_ms = 5;
        assert_eq!(
            config.validate().unwrap_err().field,
            "raft.heartbeat_interval_ms"
        );
    }

    fn with_file(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    /// A file written for an earlier release, with the flat Raft names, still sets the
    /// coordinator group's Raft timing, and the old names are not reported as unknown keys.
    #[test]
    fn the_deprecated_flat_raft_names_are_still_read() {
        let (_dir, path) = with_file(
            "heartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\n[raft]\nsnapshot_logs_since_last = 500\n",
        );
        let config: CoordinatorConfig =
            cairn_telemetry::layered_config(&CoordinatorConfig::default(), Some(&path), &[])
                .unwrap();
        config.validate().unwrap();
        let raft = config.raft_settings();
        assert_eq!(
            (
                raft.heartbeat_interval_ms,
                raft.election_timeout_min_ms,
                raft.election_timeout_max_ms,
                raft.snapshot_logs_since_last
            ),
            (100, 500, 1_000, 500)
        );
        assert_eq!(
            config
                .deprecated_raft_settings()
                .iter()
                .map(|setting| (setting.name, setting.replaced_by, setting.value))
                .collect::<Vec<_>>(),
            [
                ("heartbeat_interval_ms", "raft.heartbeat_interval_ms", 100),
                (
                    "election_timeout_min_ms",
                    "raft.election_timeout_min_ms",
                    500
                ),
                (
                    "election_timeout_max_ms",
                    "raft.election_timeout_max_ms",
                    1_000
                ),
            ]
        );
        assert!(
            cairn_telemetry::unknown_file_keys(&CoordinatorConfig::default(), &path).is_empty()
        );

        tracing::info!("--- the new names alone deprecate nothing");
        let (_dir, path) = with_file("[raft]\nheartbeat_interval_ms = 100\n");
        let config: CoordinatorConfig =
            cairn_telemetry::layered_config(&CoordinatorConfig::default(), Some(&path), &[])
                .unwrap();
        assert_eq!(config.raft_settings().heartbeat_interval_ms, 100);
        assert!(config.deprecated_raft_settings().is_empty());
    }

    #[test]
    fn a_rule_broken_under_a_deprecated_name_names_that_name() {
        let config = CoordinatorConfig {
            election_timeout_min_ms: Some(100),
            ..CoordinatorConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field,
            "election_timeout_min_ms"
        );
    }

    /// Everything logged while the guard lives, as text.
    #[derive(Clone, Default)]
    struct CapturedLog(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for CapturedLog {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl CapturedLog {
        fn start(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            tracing::subscriber::set_default(
                tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .finish(),
            )
        }

        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Start-up logs one warning per deprecated name in use, naming its replacement, before
    /// anything else can fail (here: validation, refusing member 0).
    #[tokio::test]
    async fn start_up_warns_of_each_deprecated_name_in_use() {
        let log = CapturedLog::default();
        let guard = log.start();
        let config = CoordinatorConfig {
            member_id: 0,
            heartbeat_interval_ms: Some(100),
            election_timeout_max_ms: Some(3_000),
            ..CoordinatorConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = crate::run_with_listener(config, listener, std::future::pending()).await;
        drop(guard);
        assert!(refused.is_err(), "member 0 is refused");
        let text = log.text();
        let warnings: Vec<&str> = text.lines().filter(|line| line.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{text}");
        assert!(
            warnings[0].contains("`heartbeat_interval_ms` (CAIRN_HEARTBEAT_INTERVAL_MS) is read until 0.2: set `raft.heartbeat_interval_ms` (CAIRN_RAFT__HEARTBEAT_INTERVAL_MS)"),
            "{text}"
        );
        assert!(
            warnings[1].contains("`election_timeout_max_ms`")
                && warnings[1].contains("`raft.election_timeout_max_ms`"),
            "{text}"
        );

        tracing::info!("--- a configuration without them logs no warning");
        let log = CapturedLog::default();
        let guard = log.start();
        let config = CoordinatorConfig {
            member_id: 0,
            ..CoordinatorConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = crate::run_with_listener(config, listener, std::future::pending()).await;
        drop(guard);
        assert!(refused.is_err());
        assert!(!log.text().contains("WARN"), "{}", log.text());
    }
}
