//! The coordinator's configuration: defaults < TOML file < `CAIRN_*` environment < flags,
//! validated at start with errors that name the field.

use cairn_raft::database::{StorageConfig, StorageEngine};
use cairn_raft::network::TransportConfig;
use cairn_raft::replica::RaftTiming;
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
    /// Raft timing of the coordinator group.
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
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
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            outbound_bind_ip: None,
            auto_compaction: Default::default(),
            shutdown_grace_ms: cairn_telemetry::SHUTDOWN_GRACE_MS_DEFAULT,
            tls: cairn_tls::TlsConfig::default(),
        }
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

    pub fn raft_timing(&self) -> RaftTiming {
        RaftTiming {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 64,
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
        self.raft_timing()
            .to_openraft(self.transport().snapshot_transfer_timeout_ms)
            .map_err(|reason| bad("election_timeout_min_ms", reason))?;
        if self.election_timeout_min_ms < 3 * self.heartbeat_interval_ms {
            return Err(bad(
                "election_timeout_min_ms",
                "must be at least 3 × heartbeat_interval_ms",
            ));
        }
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
}
