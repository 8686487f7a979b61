//! The storage node's configuration: one serde struct, layered defaults < TOML file <
//! `CAIRN_*` environment < command-line flags, validated at start with errors that name
//! the field. Every field is documented with its unit in `docs/configuration.md`.

use crate::coordinator_client::CoordinatorClientConfig;
use cairn_raft::database::{RocksDbConfig, StorageConfig, StorageEngine};
use cairn_raft::network::TransportConfig;
use cairn_raft::raft_config::{RaftConfig, RaftConfigError};
use cairn_raft::sessions::SessionLimits;
use cairn_telemetry::{LogConfig, TracingConfig};
use cairn_types::Limits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// This node's id; permanent, never 0, unique in the cluster.
    pub node_id: u64,
    /// Address the gRPC server binds, `host:port`.
    pub listen_address: String,
    /// Address other processes use to reach this node (registered with the coordinator);
    /// defaults to listen_address.
    pub advertise_address: Option<String>,
    /// The coordinators to join and heartbeat; without it the node runs standalone (static
    /// bootstrap or admin calls only).
    pub coordinator: Option<CoordinatorClientConfig>,
    /// Folder for the RocksDB instance, snapshot files and the node id (unused when
    /// `storage.engine` is `memory`).
    pub data_dir: PathBuf,
    /// `storage.engine`: `disk` (durable) or `memory` (a throwaway node that keeps nothing
    /// when it stops and rejoins as a new node; needs a coordinator).
    pub storage: StorageConfig,
    /// Address of the HTTP endpoint with /metrics, /livez and /readyz, `ip:port`; empty
    /// disables it.
    pub metrics_listen_address: String,
    pub log: LogConfig,
    /// Trace export (OTLP); off unless `tracing.otlp_endpoint` is set.
    pub tracing: TracingConfig,
    pub limits: Limits,
    /// Raft timing, log compaction and read confirmation of every shard on this node
    /// (`[raft]`, shared with the coordinator).
    pub raft: RaftConfig,
    pub transport: TransportConfig,
    pub sessions: SessionLimits,
    pub rocksdb: RocksDbConfig,
    /// Longest a write waits to be committed and applied, in milliseconds.
    pub propose_timeout_ms: u64,
    /// Longest a linearizable read waits for its read index, in milliseconds.
    pub read_index_timeout_ms: u64,
    /// Most WAL-fsync waiters queued at once (back-pressure beyond it).
    pub group_commit_queue_max: usize,
    /// Most appends completed by one WAL fsync.
    pub group_commit_batch_max: usize,
    /// Most snapshots received at the same time.
    pub snapshot_receives_max: usize,
    /// Static bootstrap, used until a coordinator places shards: when set, the node hosts a
    /// replica of every shard `0..shard_count`, and the member with the lowest id founds each
    /// shard's Raft group with all members as voters.
    pub bootstrap: Option<BootstrapConfig>,
    /// Longest the process takes to exit after SIGTERM, in milliseconds: it hands off what it
    /// leads, drains its gRPC server and closes its storage within it (docs/operations.md).
    pub shutdown_grace_ms: u64,
    /// Transport security (docs/security.md): the certificate this node serves and presents
    /// to the coordinators and its peers; off unless `tls.cert_file` is set.
    pub tls: cairn_tls::TlsConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapConfig {
    pub shard_count: u32,
    /// Every founding member as `node_id=host:port`, this node included.
    pub members: Vec<String>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            shard_count: 8,
            members: Vec::new(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            listen_address: "127.0.0.1:7101".into(),
            advertise_address: None,
            coordinator: None,
            data_dir: PathBuf::from("./.cairn-data/node"),
            storage: StorageConfig::default(),
            metrics_listen_address: String::new(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            limits: Limits::default(),
            raft: RaftConfig::default(),
            transport: TransportConfig::default(),
            sessions: SessionLimits::default(),
            rocksdb: RocksDbConfig::default(),
            propose_timeout_ms: 10_000,
            read_index_timeout_ms: 5_000,
            group_commit_queue_max: 16_384,
            group_commit_batch_max: 4_096,
            snapshot_receives_max: 2,
            bootstrap: None,
            shutdown_grace_ms: cairn_telemetry::SHUTDOWN_GRACE_MS_DEFAULT,
            tls: cairn_tls::TlsConfig::default(),
        }
    }
}

pub use cairn_telemetry::ConfigError;
use cairn_telemetry::{check_socket_address, config_error as bad};

impl NodeConfig {
    pub fn advertise(&self) -> String {
        self.advertise_address
            .clone()
            .unwrap_or_else(|| self.listen_address.clone())
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
        match &self.coordinator {
            None if self.node_id == 0 => {
                return Err(bad(
                    "node_id",
                    "must be at least 1 (or configure coordinator.addresses to be given one)",
                ));
            }
            Some(coordinator) => {
                if coordinator.addresses.is_empty() {
                    return Err(bad(
                        "coordinator.addresses",
                        "must list at least one coordinator",
                    ));
                }
                if coordinator.heartbeat_interval_ms < 100
                    || coordinator.heartbeat_interval_ms > 60_000
                {
                    return Err(bad(
                        "coordinator.heartbeat_interval_ms",
                        "must be in 100..=60000",
                    ));
                }
                if coordinator.rpc_timeout_ms < 100 {
                    return Err(bad("coordinator.rpc_timeout_ms", "must be at least 100"));
                }
                if coordinator.timestamp_requests_in_flight_max == 0 {
                    return Err(bad(
                        "coordinator.timestamp_requests_in_flight_max",
                        "must be at least 1",
                    ));
                }
                if self.bootstrap.is_some() {
                    return Err(bad(
                        "bootstrap",
                        "a node with a coordinator is placed by it; remove bootstrap",
                    ));
                }
            }
            None => {}
        }
        if self.storage.engine == StorageEngine::Memory {
            // A restarted in-memory node has lost its Raft vote and log: under its old id it
            // could vote twice in one term or forget acknowledged writes. It must come back as
            // a new node, which only a coordinator can make it (D31).
            if self.coordinator.is_none() {
                return Err(bad(
                    "storage.engine",
                    "memory needs coordinator.addresses: a restarted in-memory node must rejoin as a new node",
                ));
            }
            if self.node_id != 0 {
                return Err(bad(
                    "node_id",
                    "must be 0 with storage.engine = memory: an in-memory node gets a new id each time it starts",
                ));
            }
        }
        check_socket_address("listen_address", &self.listen_address, false)?;
        check_socket_address("metrics_listen_address", &self.metrics_listen_address, true)?;
        self.limits
            .validate()
            .map_err(|reason| bad("limits", reason))?;
        self.raft.validate().map_err(raft_error)?;
        if self.propose_timeout_ms == 0 {
            return Err(bad("propose_timeout_ms", "must be at least 1"));
        }
        if self.read_index_timeout_ms == 0 {
            return Err(bad("read_index_timeout_ms", "must be at least 1"));
        }
        if self.transport.connect_timeout_ms == 0 {
            return Err(bad("transport.connect_timeout_ms", "must be at least 1"));
        }
        if self.transport.snapshot_transfer_timeout_ms < 1_000 {
            return Err(bad(
                "transport.snapshot_transfer_timeout_ms",
                "must be at least 1000",
            ));
        }
        self.raft
            .validate_append_bytes(self.limits.request_bytes_max)
            .map_err(raft_error)?;
        if self.transport.snapshot_chunk_bytes < 4096
            || self.transport.snapshot_chunk_bytes > 16 << 20
        {
            return Err(bad(
                "transport.snapshot_chunk_bytes",
                "must be in 4096..=16777216",
            ));
        }
        if self.group_commit_batch_max == 0 {
            return Err(bad("group_commit_batch_max", "must be at least 1"));
        }
        if self.group_commit_queue_max < self.group_commit_batch_max {
            return Err(bad(
                "group_commit_queue_max",
                "must be at least group_commit_batch_max",
            ));
        }
        if self.snapshot_receives_max == 0 {
            return Err(bad("snapshot_receives_max", "must be at least 1"));
        }
        if self.sessions.session_ttl_ms < 10 * self.propose_timeout_ms {
            return Err(bad(
                "sessions.session_ttl_ms",
                "must be at least 10 × propose_timeout_ms, so a retried write is recognised",
            ));
        }
        if self.sessions.results_per_client_max == 0 {
            return Err(bad("sessions.results_per_client_max", "must be at least 1"));
        }
        if self.sessions.sessions_max == 0 {
            return Err(bad("sessions.sessions_max", "must be at least 1"));
        }
        if self.sessions.result_bytes_max < 1024 {
            return Err(bad("sessions.result_bytes_max", "must be at least 1024"));
        }
        if self.rocksdb.background_jobs < 1 {
            return Err(bad("rocksdb.background_jobs", "must be at least 1"));
        }
        if self.rocksdb.write_buffer_bytes < 1 << 20 {
            return Err(bad(
                "rocksdb.write_buffer_bytes",
                "must be at least 1048576",
            ));
        }
        if let Some(bootstrap) = &self.bootstrap {
            if bootstrap.shard_count == 0 {
                return Err(bad("bootstrap.shard_count", "must be at least 1"));
            }
            let members = self.bootstrap_members()?;
            if !members.iter().any(|(id, _)| *id == self.node_id) {
                return Err(bad("bootstrap.members", "must include this node's node_id"));
            }
        }
        Ok(())
    }

    /// The bootstrap members as (node id, address), parsed from `id=host:port`.
    pub fn bootstrap_members(&self) -> Result<Vec<(u64, String)>, ConfigError> {
        let Some(bootstrap) = &self.bootstrap else {
            return Ok(Vec::new());
        };
        let mut members = Vec::new();
        for member in &bootstrap.members {
            let (id, address) = member.split_once('=').ok_or_else(|| {
                bad(
                    "bootstrap.members",
                    format!("{member:?} is not node_id=host:port"),
                )
            })?;
            let id: u64 = id.trim().parse().map_err(|_| {
                bad(
                    "bootstrap.members",
                    format!("{member:?}: node id is not a number"),
                )
            })?;
            if id == 0 {
                return Err(bad("bootstrap.members", "node ids start at 1"));
            }
            members.push((id, address.trim().to_string()));
        }
        if members.is_empty() {
            return Err(bad("bootstrap.members", "must list at least one member"));
        }
        Ok(members)
    }
}

/// A broken `[raft]` rule, reported like the node's own fields.
fn raft_error(error: RaftConfigError) -> ConfigError {
    bad(error.field, error.rule.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/config/node.toml is what operators copy: it must load and validate.
    #[test]
    fn the_sample_file_in_deploy_config_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/node.toml");
        let config: NodeConfig =
            cairn_telemetry::layered_config(&NodeConfig::default(), Some(&path), &[])
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        config.validate().unwrap();
        assert!(!config.metrics_listen_address.is_empty());
        let unknown = cairn_telemetry::unknown_file_keys(&NodeConfig::default(), &path);
        assert!(
            unknown.is_empty(),
            "unknown keys in the sample: {unknown:?}"
        );
        assert_eq!(config.coordinator.map(|c| c.labels.len()), Some(1));
    }

    #[test]
    fn bad_log_and_tracing_values_name_the_field() {
        let mut config = NodeConfig::default();
        config.log.filter = "info,cairn_raft=loudest".into();
        assert_eq!(config.validate().unwrap_err().field, "log.filter");
        let mut config = NodeConfig::default();
        config.tracing.sampling_ratio = 2.0;
        assert_eq!(
            config.validate().unwrap_err().field,
            "tracing.sampling_ratio"
        );
    }

    fn valid() -> NodeConfig {
        NodeConfig {
            node_id: 1,
            ..NodeConfig::default()
        }
    }

    #[test]
    fn defaults_with_an_id_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let err = NodeConfig::default().validate().unwrap_err();
        assert_eq!(err.field, "node_id");
        let mut config = valid();
        config.raft.election_timeout_min_ms = 100;
        assert_eq!(
            config.validate().unwrap_err().field,
            "raft.election_timeout_min_ms"
        );
        let mut config = valid();
        config.listen_address = "nowhere".into();
        assert_eq!(config.validate().unwrap_err().field, "listen_address");
        let mut config = valid();
        config.bootstrap = Some(BootstrapConfig {
            shard_count: 2,
            members: vec!["2=127.0.0.1:1".into()],
        });
        assert_eq!(config.validate().unwrap_err().field, "bootstrap.members");
    }

    #[test]
    fn memory_engine_needs_a_coordinator_and_no_fixed_id() {
        let mut config = valid();
        config.storage.engine = StorageEngine::Memory;
        assert_eq!(config.validate().unwrap_err().field, "storage.engine");
        config.coordinator = Some(CoordinatorClientConfig {
            addresses: vec!["127.0.0.1:7001".into()],
            ..CoordinatorClientConfig::default()
        });
        assert_eq!(config.validate().unwrap_err().field, "node_id");
        config.node_id = 0;
        config.validate().unwrap();
    }
}
