//! `cairn-bench`: a YCSB-style load generator that measures Cairn and etcd v3 side by side.
//!
//! One workload generator ([`workload`], [`keys`], [`transfer`] for cross-shard
//! transactions) and one measurement ([`runner`], HDR
//! histograms) drive any [`KvTarget`]: Cairn through the SDK and a gateway
//! ([`CairnTarget`]), or etcd through the `etcd-client` crate ([`EtcdTarget`]). Only the two
//! `KvTarget` implementations differ between the systems, so their numbers compare. Both
//! speak TLS when given a CA (`--cacert`, `--cert`, `--key`, as cairnctl), through the same
//! rustls connector (`cairn-tls`), so that the cost of TLS can be measured too ([`tls_cost`]).
//!
//! It is a client program: it must not depend on a server crate, and it measures, it never
//! asserts timings (tests cover only its non-timing logic).

pub mod args;
pub mod cairn_target;
pub mod compare;
pub mod etcd_target;
pub mod keys;
#[cfg(test)]
mod memory_target;
pub mod report;
pub mod runner;
pub mod target;
pub mod tls_cost;
pub mod transfer;
pub mod workload;

pub use args::{ArgsError, BenchArgs, Phase, TargetKind};
pub use cairn_target::CairnTarget;
pub use etcd_target::EtcdTarget;
pub use keys::{KeyChooser, KeyDistribution, ZipfianGenerator};
pub use report::{BenchResult, LatencySummary, LoadSummary};
pub use target::{ErrorKind, KvTarget, PairWrite, TargetError};
pub use transfer::PairChooser;
pub use workload::{OpKind, Workload};
