//! Command-line arguments and their validation. Every bound a run may use is checked here,
//! before anything connects, with an error that names the flag.

use crate::keys::{key_size_min, KeyDistribution, RECORD_COUNT_MAX};
use crate::workload::Workload;
use cairn_client::TlsConfig;
use clap::Parser;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

pub const KEY_SIZE_MAX: usize = 4_096;
pub const VALUE_SIZE_MAX: usize = 1 << 20;
pub const CONCURRENCY_MAX: usize = 4_096;
/// Longest run or warm-up; a benchmark loop must always stop by itself.
pub const DURATION_SECS_MAX: f64 = 3_600.0;
/// Workload T against etcd without `--shard-count`: the shard count of the Cairn cluster
/// that scripts/bench-compare.sh starts, so that both systems run the same key pairs.
pub const ETCD_SHARD_COUNT_DEFAULT: u32 = 3;
/// The most shards `--shard-count` may name (the cluster's own ceiling is far below).
pub const SHARD_COUNT_MAX: u32 = 1 << 16;
/// Connections opened when `--connections` is not given: at most this many, and never
/// more than the concurrency.
pub const CONNECTIONS_DEFAULT_MAX: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Cairn through a gateway (the SDK).
    Cairn,
    /// etcd v3 (the etcd-client crate).
    Etcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Write every record once, then stop.
    Load,
    /// Run the workload against records loaded earlier.
    Run,
    /// Load, then run.
    All,
}

/// YCSB-style benchmark of Cairn or etcd.
#[derive(Clone, Debug, Parser)]
#[command(name = "cairn-bench", version)]
pub struct BenchArgs {
    /// The system under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Cairn)]
    pub target: TargetKind,
    /// Addresses, comma separated: Cairn gateways (default 127.0.0.1:7000) or etcd members
    /// (default 127.0.0.1:2379). Connection i starts at address i modulo their number.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// A: 50% reads/50% updates, B: 95/5, C: reads only, W: updates only, T: cross-shard
    /// transactions (read two keys on different shards, then write both in one transaction
    /// comparing their mod revisions).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Workload::A)]
    pub workload: Workload,
    /// How records are chosen.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Zipfian)]
    pub distribution: KeyDistribution,
    /// Workload T: the shard count that places keys, so that each transaction's two keys
    /// live on different shards. Cairn: asked of the cluster when not given (and must match
    /// it); etcd: default 3, the shards of scripts/bench-compare.sh's Cairn cluster.
    #[arg(long)]
    pub shard_count: Option<u32>,
    /// Records written by the load phase and touched by the run.
    #[arg(long, default_value_t = 10_000)]
    pub record_count: u64,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Connections shared by the clients (default: min(concurrency, 8)).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Stop the run after this many operations, if that comes before the duration.
    #[arg(long)]
    pub operations: Option<u64>,
    /// Seconds of the same workload before measuring starts (not recorded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Serializable (possibly stale) reads instead of linearizable ones.
    #[arg(long)]
    pub serializable: bool,
    /// Where the JSON result goes: a file path, or `-` for stdout.
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A free-form label copied into the result.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// PEM certificate of the CA that signed the servers' certificates (Cairn gateways or
    /// etcd members): TLS is on when set. As cairnctl's `--cacert`.
    #[arg(long, env = "CAIRN_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// PEM client certificate, for servers that ask for one (with `--key`).
    #[arg(long, env = "CAIRN_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, env = "CAIRN_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {reason}")]
pub struct ArgsError {
    pub flag: &'static str,
    pub reason: String,
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ArgsError {
    ArgsError {
        flag,
        reason: reason.into(),
    }
}

impl BenchArgs {
    /// The endpoints to use: the given ones, or the target's local default.
    pub fn endpoints(&self) -> Vec<String> {
        if !self.endpoints.is_empty() {
            return self.endpoints.clone();
        }
        match self.target {
            TargetKind::Cairn => vec!["127.0.0.1:7000".to_string()],
            TargetKind::Etcd => vec!["127.0.0.1:2379".to_string()],
        }
    }

    pub fn connections(&self) -> usize {
        self.connections
            .unwrap_or_else(|| self.concurrency.min(CONNECTIONS_DEFAULT_MAX))
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_secs)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_secs)
    }

    /// TLS to the servers, from `--cacert`, `--cert` and `--key` (`None`: plaintext). The
    /// files are read when connecting; `validate` checks only that the flags fit together.
    pub fn tls(&self) -> Option<TlsConfig> {
        let ca_file = self.cacert.clone()?;
        let identity = self.cert.clone().zip(self.key.clone());
        Some(TlsConfig { ca_file, identity })
    }

    /// Checks every bound; the error names the flag to fix.
    pub fn validate(&self) -> Result<(), ArgsError> {
        if self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(invalid("endpoints", "an address is empty"));
        }
        if self.record_count == 0 || self.record_count > RECORD_COUNT_MAX {
            return Err(invalid(
                "record-count",
                format!("must be in 1..={RECORD_COUNT_MAX}"),
            ));
        }
        let key_min = key_size_min(self.record_count);
        if self.key_size < key_min || self.key_size > KEY_SIZE_MAX {
            return Err(invalid(
                "key-size",
                format!(
                    "must be in {key_min}..={KEY_SIZE_MAX} for {} records",
                    self.record_count
                ),
            ));
        }
        if self.value_size == 0 || self.value_size > VALUE_SIZE_MAX {
            return Err(invalid(
                "value-size",
                format!("must be in 1..={VALUE_SIZE_MAX}"),
            ));
        }
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return Err(invalid(
                "concurrency",
                format!("must be in 1..={CONCURRENCY_MAX}"),
            ));
        }
        let connections = self.connections();
        if connections == 0 || connections > self.concurrency {
            return Err(invalid(
                "connections",
                "must be at least 1 and at most --concurrency",
            ));
        }
        if !(self.duration_secs > 0.0 && self.duration_secs <= DURATION_SECS_MAX) {
            return Err(invalid(
                "duration-secs",
                format!("must be in (0, {DURATION_SECS_MAX}]"),
            ));
        }
        if !(self.warmup_secs >= 0.0 && self.warmup_secs <= DURATION_SECS_MAX) {
            return Err(invalid(
                "warmup-secs",
                format!("must be in [0, {DURATION_SECS_MAX}]"),
            ));
        }
        if let Some(shards) = self.shard_count {
            if !(2..=SHARD_COUNT_MAX).contains(&shards) {
                return Err(invalid(
                    "shard-count",
                    format!(
                        "must be in 2..={SHARD_COUNT_MAX}: a cross-shard pair needs two shards"
                    ),
                ));
            }
        }
        if self.workload.is_transactional() && self.record_count < 2 {
            return Err(invalid(
                "record-count",
                "workload T needs at least 2 records (one per key of a transaction)",
            ));
        }
        if self.operations == Some(0) {
            return Err(invalid("operations", "must be at least 1"));
        }
        if self.output.trim().is_empty() {
            return Err(invalid("output", "give a path or -"));
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(invalid("key", "--cert needs its --key")),
            (None, Some(_)) => return Err(invalid("cert", "--key needs its --cert")),
            _ => {}
        }
        if self.cert.is_some() && self.cacert.is_none() {
            return Err(invalid(
                "cacert",
                "--cert needs --cacert (the CA that signed the servers' certificates)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["cairn-bench"];
        argv.extend_from_slice(extra);
        BenchArgs::try_parse_from(argv).expect("arguments parse")
    }

    fn flag_of(args: &BenchArgs) -> &'static str {
        args.validate().expect_err("must be refused").flag
    }

    #[test]
    fn defaults_are_valid() {
        let args = parse(&[]);
        args.validate().unwrap();
        assert_eq!(args.endpoints(), vec!["127.0.0.1:7000"]);
        assert_eq!(args.connections(), 8);
        assert_eq!(args.workload, Workload::A);
        let etcd = parse(&["--target", "etcd", "--concurrency", "2"]);
        assert_eq!(etcd.endpoints(), vec!["127.0.0.1:2379"]);
        assert_eq!(etcd.connections(), 2);
    }

    #[test]
    fn endpoints_are_comma_separated() {
        let args = parse(&["--endpoints", "127.0.0.1:1,127.0.0.1:2"]);
        assert_eq!(args.endpoints(), vec!["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn bad_values_name_their_flag() {
        assert_eq!(flag_of(&parse(&["--record-count", "0"])), "record-count");
        // Records 0..=99 999 need 5 digits plus the `k` prefix.
        assert_eq!(
            flag_of(&parse(&["--record-count", "100000", "--key-size", "5"])),
            "key-size"
        );
        parse(&["--record-count", "100000", "--key-size", "6"])
            .validate()
            .unwrap();
        assert_eq!(flag_of(&parse(&["--value-size", "0"])), "value-size");
        assert_eq!(flag_of(&parse(&["--concurrency", "0"])), "concurrency");
        assert_eq!(
            flag_of(&parse(&["--concurrency", "4", "--connections", "5"])),
            "connections"
        );
        assert_eq!(flag_of(&parse(&["--duration-secs", "0"])), "duration-secs");
        assert_eq!(
            flag_of(&parse(&["--duration-secs", "100000"])),
            "duration-secs"
        );
        assert_eq!(flag_of(&parse(&["--warmup-secs=-1"])), "warmup-secs");
        assert_eq!(flag_of(&parse(&["--operations", "0"])), "operations");
        assert_eq!(flag_of(&parse(&["--shard-count", "1"])), "shard-count");
        assert_eq!(
            flag_of(&parse(&["--workload", "T", "--record-count", "1"])),
            "record-count"
        );
        let txn = parse(&["--workload", "t", "--shard-count", "3"]);
        txn.validate().unwrap();
        assert_eq!(txn.workload, Workload::T);
        assert_eq!(txn.shard_count, Some(3));
    }

    #[test]
    fn tls_is_on_with_a_ca_and_the_client_certificate_is_optional() {
        let plain = parse(&[]);
        assert_eq!(plain.tls(), None);
        let server_only = parse(&["--cacert", "ca.pem"]);
        server_only.validate().unwrap();
        assert_eq!(
            server_only.tls(),
            Some(TlsConfig {
                ca_file: "ca.pem".into(),
                identity: None
            })
        );
        let mutual = parse(&[
            "--target", "etcd", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem",
        ]);
        mutual.validate().unwrap();
        assert_eq!(
            mutual.tls().unwrap().identity,
            Some(("c.pem".into(), "k.pem".into()))
        );
        assert_eq!(
            flag_of(&parse(&["--cacert", "ca.pem", "--cert", "c.pem"])),
            "key"
        );
        assert_eq!(
            flag_of(&parse(&["--cacert", "ca.pem", "--key", "k.pem"])),
            "cert"
        );
        assert_eq!(
            flag_of(&parse(&["--cert", "c.pem", "--key", "k.pem"])),
            "cacert"
        );
    }

    #[test]
    fn unknown_workload_is_refused_by_the_parser() {
        assert!(BenchArgs::try_parse_from(["cairn-bench", "--workload", "Z"]).is_err());
        assert_eq!(parse(&["--workload", "C"]).workload, Workload::C);
        assert_eq!(parse(&["--workload", "w"]).workload, Workload::W);
    }
}
