//! The cluster's compaction point: below it, reads fail with `Compacted` and shards may drop
//! old versions. The coordinator keeps it in its metadata; storage nodes learn it from their
//! heartbeat responses, and each shard leader proposes it to its shard's log, so every replica
//! applies it at the same log position.
//!
//! It moves by `Compact(revision)` (an operator, `cairnctl compact`) or by the automatic
//! compaction loop, with etcd's two modes:
//!
//! - `periodic`: keep `retention_ms` of history. Every `retention_ms / 10` (at most an hour),
//!   compact to the first revision of the millisecond `retention_ms` ago. Revisions are
//!   timestamps, so the revision of a moment is known without sampling it.
//! - `revision`: every five minutes, compact to `latest − retention_revisions`. Revisions are
//!   timestamps with 4 096 per millisecond, so this keeps `retention_revisions / 4 096` ms
//!   of history whatever the write rate; it is here for etcd's vocabulary, `periodic` is the
//!   mode to use.

use crate::error::{CoordinatorError, Result};
use crate::metadata::MetadataStore;
use crate::oracle::TimestampOracle;
use cairn_types::{Revision, TimestampParts};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Attempts of the compaction point's compare-and-set (contention means a leader change).
const CAS_ATTEMPTS_MAX: usize = 8;
/// Period of the `revision` mode, as etcd's.
const REVISION_MODE_PERIOD: Duration = Duration::from_secs(300);
/// Longest period of the `periodic` mode.
const PERIODIC_PERIOD_MAX: Duration = Duration::from_secs(3_600);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoCompactionMode {
    /// Only `Compact` requests move the compaction point.
    #[default]
    Off,
    /// Keep `retention_ms` of history.
    Periodic,
    /// Keep `retention_revisions` revision numbers of history.
    Revision,
}

/// Automatic compaction settings (`[auto_compaction]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoCompaction {
    pub mode: AutoCompactionMode,
    /// History kept by `periodic`, in milliseconds.
    pub retention_ms: u64,
    /// Revision numbers kept by `revision`.
    pub retention_revisions: u64,
}

impl Default for AutoCompaction {
    fn default() -> Self {
        Self {
            mode: AutoCompactionMode::Off,
            retention_ms: 3_600_000,
            retention_revisions: 1_000_000_000,
        }
    }
}

impl AutoCompaction {
    /// How often the loop compacts.
    pub fn period(&self) -> Option<Duration> {
        match self.mode {
            AutoCompactionMode::Off => None,
            AutoCompactionMode::Periodic => Some(
                Duration::from_millis((self.retention_ms / 10).max(1_000)).min(PERIODIC_PERIOD_MAX),
            ),
            AutoCompactionMode::Revision => Some(REVISION_MODE_PERIOD),
        }
    }

    /// The compaction point for a round, given a timestamp `latest` just taken from the
    /// oracle; `None` when there is nothing to compact yet.
    pub fn point(&self, latest: Revision) -> Option<Revision> {
        let point = match self.mode {
            AutoCompactionMode::Off => return None,
            AutoCompactionMode::Periodic => {
                let physical = TimestampParts::from(latest).physical_ms;
                TimestampParts::at_ms(physical.checked_sub(self.retention_ms)?).revision()
            }
            AutoCompactionMode::Revision => {
                Revision(latest.0.checked_sub(self.retention_revisions)?)
            }
        };
        (point.0 > 0).then_some(point)
    }
}

pub struct Compaction {
    metadata: MetadataStore,
    oracle: Arc<TimestampOracle>,
    /// The compaction point as last read or written by this coordinator, with the term it was
    /// read in (a new leadership reads it again).
    cached: std::sync::Mutex<Option<(u64, Revision)>>,
}

impl Compaction {
    pub fn new(metadata: MetadataStore, oracle: Arc<TimestampOracle>) -> Arc<Self> {
        Arc::new(Self {
            metadata,
            oracle,
            cached: std::sync::Mutex::new(None),
        })
    }

    fn term(&self) -> u64 {
        self.metadata.replica().status().term
    }

    /// The cluster's compaction point (0 = never compacted). Read from the metadata once per
    /// leadership, then from memory.
    pub async fn point(&self) -> Result<Revision> {
        let term = self.term();
        if let Some((cached_term, point)) = *self.cached.lock().expect("lock poisoned") {
            if cached_term == term {
                return Ok(point);
            }
        }
        let (point, _) = self.metadata.compaction().await?;
        self.remember(term, Revision(point));
        Ok(Revision(point))
    }

    fn remember(&self, term: u64, point: Revision) {
        let mut cached = self.cached.lock().expect("lock poisoned");
        match *cached {
            Some((cached_term, cached_point)) if cached_term == term && cached_point >= point => {}
            _ => *cached = Some((term, point)),
        }
    }

    /// Moves the compaction point up to `revision`; returns the point in force. A revision
    /// the oracle has not handed out yet is refused: compacting the future would refuse
    /// reads the cluster cannot yet answer correctly.
    pub async fn compact(&self, revision: Revision) -> Result<Revision> {
        if revision.0 == 0 {
            return Err(CoordinatorError::Invalid {
                field: "revision",
                reason: "must be at least 1".into(),
            });
        }
        let latest = self.oracle.timestamps(1).await?.start;
        if revision >= latest {
            return Err(CoordinatorError::FutureRevision {
                requested: revision,
                latest: Revision(latest.0 - 1),
            });
        }
        let term = self.term();
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (current, stored_at) = self.metadata.compaction().await?;
            if revision.0 <= current {
                self.remember(term, Revision(current));
                return Ok(Revision(current));
            }
            if self
                .metadata
                .store_compaction(stored_at, revision.0)
                .await?
            {
                tracing::info!(%revision, previous = current, "cluster compaction point moved");
                self.remember(term, revision);
                return Ok(revision);
            }
        }
        Err(CoordinatorError::Unavailable(
            "the compaction point kept changing under the request".into(),
        ))
    }

    /// Compacts by `settings` forever, on whichever coordinator leads.
    pub async fn run_auto(self: Arc<Self>, settings: AutoCompaction) {
        let Some(period) = settings.period() else {
            return;
        };
        tracing::info!(?settings, ?period, "automatic compaction on");
        loop {
            tokio::time::sleep(period).await;
            if !self.metadata.replica().is_leader() {
                continue;
            }
            let point = match self.oracle.timestamps(1).await {
                Ok(latest) => settings.point(latest.start),
                Err(error) => {
                    tracing::debug!(%error, "automatic compaction skipped a round");
                    continue;
                }
            };
            if let Some(point) = point {
                if let Err(error) = self.compact(point).await {
                    tracing::warn!(%error, %point, "automatic compaction failed; trying next round");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_mode_keeps_the_retention_in_milliseconds() {
        let settings = AutoCompaction {
            mode: AutoCompactionMode::Periodic,
            retention_ms: 60_000,
            ..AutoCompaction::default()
        };
        let latest = TimestampParts {
            physical_ms: 100_000,
            logical: 17,
        }
        .revision();
        assert_eq!(
            settings.point(latest),
            Some(TimestampParts::at_ms(40_000).revision())
        );
        let young = TimestampParts::at_ms(30_000).revision();
        assert_eq!(settings.point(young), None);
        assert_eq!(settings.period(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn revision_mode_keeps_revision_numbers_and_off_compacts_nothing() {
        let settings = AutoCompaction {
            mode: AutoCompactionMode::Revision,
            retention_revisions: 1_000,
            ..AutoCompaction::default()
        };
        assert_eq!(settings.point(Revision(5_000)), Some(Revision(4_000)));
        assert_eq!(settings.point(Revision(999)), None);
        assert_eq!(AutoCompaction::default().point(Revision(1 << 40)), None);
        assert_eq!(AutoCompaction::default().period(), None);
    }
}
