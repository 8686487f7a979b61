//! A replica's life on its node: opened (its state machine, log and Raft instance, with the
//! vote hold after a restart, D26), snapshotted on demand, shut down, and destroyed with its
//! data.

use super::{ReplicaContext, ReplicaCounters, ReplicaError, ShardReplica};
use crate::error::StorageError;
use crate::keys;
use crate::log_store::LogStore;
use crate::network::ShardNetworkFactory;
use crate::state_machine::ShardStateMachine;
use crate::type_config::LogId;
use cairn_types::{Revision, ShardId};
use openraft::async_runtime::WatchReceiver;
use openraft::Raft;
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shards with a replica on this node, as recorded in the `replicas` column family.
pub fn hosted_shards(db: &DB) -> Result<Vec<ShardId>, StorageError> {
    let cf = db
        .cf_handle(keys::CF_REPLICAS)
        .expect("replicas column family exists");
    let mut shards = Vec::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, _) = item?;
        let id: [u8; 8] = key
            .as_ref()
            .try_into()
            .map_err(|_| StorageError::Inconsistent("malformed replica key".into()))?;
        shards.push(ShardId(u64::from_be_bytes(id)));
    }
    Ok(shards)
}

impl ShardReplica {
    /// Opens (or creates) this node's replica of `shard` and starts its Raft instance.
    pub async fn open(context: Arc<ReplicaContext>, shard: ShardId) -> Result<Self, ReplicaError> {
        let storage = |source| ReplicaError::Storage { shard, source };
        let db = context.db.clone();
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let cf = db
            .cf_handle(keys::CF_REPLICAS)
            .expect("replicas column family exists");
        db.put_cf_opt(cf, keys::replica_key(shard), [], &synced)
            .map_err(|e| storage(e.into()))?;

        let snapshot_dir = context.snapshot_root.join(format!("shard-{}", shard.0));
        let limits = context.session_limits.clone();
        let points = context.compaction_points.clone();
        let state_machine = tokio::task::spawn_blocking(move || {
            ShardStateMachine::open(db, shard, snapshot_dir, limits, points)
        })
        .await
        .map_err(|join| ReplicaError::Stopped {
            shard,
            reason: join.to_string(),
        })?
        .map_err(storage)?;
        let counters = Arc::new(ReplicaCounters::default());
        let state_machine = state_machine.counting_into(counters.clone());
        let log_store = LogStore::new(context.db.clone(), shard, context.group_commit.clone());
        // A replica that voted before this process started may have promised a leader not to
        // vote for anyone else for one lease; that promise lived in memory only, so keep it:
        // for one lease from now it refuses other candidates' votes and does not stand for
        // election itself (it would vote for itself) (D26).
        let votes_refused_until = (context.hold_votes_after_restart
            && log_store.has_vote().map_err(storage)?)
        .then(|| Instant::now() + Duration::from_millis(context.raft_config.election_timeout_max));
        let raft_config = match votes_refused_until {
            Some(_) => {
                let mut config = (*context.raft_config).clone();
                config.enable_elect = false;
                Arc::new(config)
            }
            None => context.raft_config.clone(),
        };
        let network = ShardNetworkFactory {
            shard,
            channels: context.channels.clone(),
            counters: counters.clone(),
        };
        // Started in a task of its own: openraft runs the instance's tasks for its whole life
        // inside the span current at `Raft::new`, and a replica is often opened while serving
        // a request (`CreateReplica`); that request's span would stay open until the process
        // stops, and the replica's Raft work would appear under it.
        let started = tokio::spawn(Raft::new(
            context.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        ))
        .await;
        let raft = match started {
            Ok(outcome) => outcome,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => {
                return Err(ReplicaError::Stopped {
                    shard,
                    reason: join.to_string(),
                })
            }
        }
        .map_err(|fatal| ReplicaError::Stopped {
            shard,
            reason: fatal.to_string(),
        })?;
        if let Some(until) = votes_refused_until {
            let raft = raft.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until.into()).await;
                raft.runtime_config().elect(true);
            });
        }
        Ok(Self {
            shard,
            context,
            raft,
            counters,
            latches: Arc::default(),
            votes_refused_until,
        })
    }

    /// How much longer this replica must refuse vote requests, if at all. A replica reopened
    /// with a vote on disk refuses votes for one leader lease after opening, except for a
    /// leadership transfer (which the leader itself started): before the restart it may have
    /// acknowledged a leader whose lease is still running, and a vote for another candidate now
    /// could let two leaders serve reads at once (D26).
    pub fn refuses_votes(&self, leadership_transfer: bool) -> Option<Duration> {
        let until = self.votes_refused_until?;
        let remaining = until.saturating_duration_since(Instant::now());
        (!leadership_transfer && !remaining.is_zero()).then_some(remaining)
    }

    /// Builds a snapshot now and waits for it; with `purge_log`, also purges the log up to it.
    pub async fn snapshot_now(
        &self,
        purge_log: bool,
        timeout: Duration,
    ) -> Result<u64, ReplicaError> {
        let applied = self.raft.metrics().borrow_watched().last_applied;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|fatal| self.fatal(fatal))?;
        let target = applied.map_or(0, |log_id: LogId| log_id.index);
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.snapshot.as_ref().map_or(0, |l| l.index) >= target && m.snapshot.is_some(),
                "snapshot built",
            )
            .await
            .map_err(|error| ReplicaError::Unavailable {
                shard: self.shard,
                reason: error.to_string(),
            })?;
        let index = metrics.snapshot.as_ref().map_or(0, |l| l.index);
        if purge_log {
            self.raft
                .trigger()
                .purge_log(index)
                .await
                .map_err(|fatal| self.fatal(fatal))?;
        }
        Ok(index)
    }

    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(shard = %self.shard, %error, "raft shutdown reported an error");
        }
    }

    /// Stops the replica and deletes its data from this node. Blocking I/O inside.
    pub async fn destroy(&self) -> Result<(), ReplicaError> {
        self.shutdown().await;
        let shard = self.shard;
        let db = self.context.db.clone();
        let dir = self.snapshot_dir();
        let points = self.context.compaction_points.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut batch = WriteBatch::default();
            let prefix = keys::shard_prefix(shard);
            let upper = keys::shard_upper_bound(shard);
            for name in [
                keys::CF_RAFT_LOG,
                keys::CF_RAFT_STATE,
                keys::CF_WRITE,
                keys::CF_LOCK,
                keys::CF_SESSIONS,
                keys::CF_SM_STATE,
            ] {
                let cf = db.cf_handle(name).expect("column family exists");
                batch.delete_range_cf(cf, &prefix[..], &upper[..]);
            }
            let cf = db
                .cf_handle(keys::CF_REPLICAS)
                .expect("replicas column family exists");
            batch.delete_cf(cf, keys::replica_key(shard));
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            db.write_opt(batch, &synced)?;
            points.reset(shard, Revision(0));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            Ok(())
        })
        .await
        .map_err(|join| ReplicaError::Stopped {
            shard,
            reason: join.to_string(),
        })?
        .map_err(|source| ReplicaError::Storage { shard, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group_commit::GroupCommit;
    use crate::group_commit::{GroupCommitLimits, GroupCommitStats};
    use crate::network::{PeerChannels, TransportConfig};
    use crate::raft_config::{LinearizableReads, RaftConfig};
    use crate::sessions::SessionLimits;
    use crate::type_config::{NodeAddress, Vote};
    use cairn_types::NodeId;
    use openraft::storage::RaftLogStorage;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn context(db: Arc<DB>, root: PathBuf, reads: LinearizableReads) -> Arc<ReplicaContext> {
        context_with_election(db, root, reads, 1_000)
    }

    /// `election_timeout_min_ms` varies; the lease (`election_timeout_max_ms`) is 2 s.
    fn context_with_election(
        db: Arc<DB>,
        root: PathBuf,
        reads: LinearizableReads,
        election_timeout_min_ms: u64,
    ) -> Arc<ReplicaContext> {
        let raft = RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms,
            election_timeout_max_ms: 2_000,
            snapshot_logs_since_last: 10_000,
            logs_to_keep_after_snapshot: 1_000,
            append_entries_max: 64,
            linearizable_reads: reads,
        };
        let group_commit = GroupCommit::start(
            db.clone(),
            GroupCommitLimits::default(),
            Arc::new(GroupCommitStats::default()),
        );
        Arc::new(ReplicaContext {
            node_id: NodeId(1),
            db,
            snapshot_root: root,
            channels: PeerChannels::new(TransportConfig::default()),
            group_commit,
            raft_config: raft.to_openraft(60_000).unwrap(),
            session_limits: SessionLimits::default(),
            propose_timeout: Duration::from_secs(5),
            read_index_timeout: Duration::from_secs(5),
            linearizable_reads: raft.linearizable_reads,
            hold_votes_after_restart: reads == LinearizableReads::Lease,
            compaction_points: Arc::default(),
            timestamps: None,
        })
    }

    /// A replica that voted before a restart keeps refusing votes for one lease (its lease
    /// promise lived in memory); one that never voted, a leadership transfer, and ReadIndex
    /// mode are not held back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_replica_that_voted_refuses_votes_for_one_lease() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let lease_reads = context(
            db.clone(),
            dir.path().join("snapshots"),
            LinearizableReads::Lease,
        );
        // Shard 1 voted in an earlier life of the node; shard 2 never did.
        let mut store = LogStore::new(db.clone(), ShardId(1), lease_reads.group_commit.clone());
        let vote: Vote = openraft::Vote::new_committed(3, NodeId(2));
        store.save_vote(&vote).await.unwrap();

        let voted = ShardReplica::open(lease_reads.clone(), ShardId(1))
            .await
            .unwrap();
        let remaining = voted
            .refuses_votes(false)
            .expect("a reopened replica that voted refuses votes");
        assert!(remaining <= Duration::from_millis(2_000), "{remaining:?}");
        assert_eq!(
            voted.refuses_votes(true),
            None,
            "a leadership transfer started by the leader is not held back"
        );

        let fresh = ShardReplica::open(lease_reads, ShardId(2)).await.unwrap();
        assert_eq!(
            fresh.refuses_votes(false),
            None,
            "a replica that never voted promised nothing"
        );

        let read_index = context(
            db,
            dir.path().join("snapshots"),
            LinearizableReads::ReadIndex,
        );
        let mut store = LogStore::new(
            read_index.db.clone(),
            ShardId(3),
            read_index.group_commit.clone(),
        );
        store.save_vote(&vote).await.unwrap();
        let without_lease = ShardReplica::open(read_index, ShardId(3)).await.unwrap();
        assert_eq!(
            without_lease.refuses_votes(false),
            None,
            "a group that never reads by lease (the coordinator's) needs no vote hold"
        );

        for replica in [voted, fresh, without_lease] {
            replica.raft().shutdown().await.unwrap();
        }
    }

    /// The hold also keeps a reopened replica from standing for election (it would vote for
    /// itself): a one-member shard that led before a restart is leaderless for the whole
    /// lease, although its election timeout (150-2000 ms) would have fired, and leads again
    /// after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reopened_replica_that_voted_does_not_stand_for_election_during_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let context = context_with_election(
            db,
            dir.path().join("snapshots"),
            LinearizableReads::Lease,
            150,
        );
        let shard = ShardId(7);
        let replica = ShardReplica::open(context.clone(), shard).await.unwrap();
        let members = BTreeMap::from([(
            NodeId(1),
            NodeAddress {
                address: "127.0.0.1:1".into(),
            },
        )]);
        assert!(replica.initialize(members).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica.is_leader() {
            assert!(
                Instant::now() < deadline,
                "the one-member shard never elected itself"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica.raft().shutdown().await.unwrap();
        drop(replica);

        let reopened = ShardReplica::open(context, shard).await.unwrap();
        let opened = Instant::now();
        assert!(reopened.refuses_votes(false).is_some());
        // Watch until just before the hold ends: no election, so no leader.
        while opened.elapsed() < Duration::from_millis(1_900) {
            assert!(
                !reopened.is_leader(),
                "led {:?} after reopening, inside the hold",
                opened.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reopened.is_leader() {
            assert!(
                Instant::now() < deadline,
                "no election after the hold ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            opened.elapsed() >= Duration::from_millis(2_000),
            "led {:?} after reopening",
            opened.elapsed()
        );
        reopened.raft().shutdown().await.unwrap();
    }

    /// Records the names of the spans that close.
    struct SpanCloses(Arc<std::sync::Mutex<Vec<&'static str>>>);

    impl<S> tracing_subscriber::Layer<S> for SpanCloses
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
            if let Some(span) = ctx.span(&id) {
                self.0.lock().unwrap().push(span.name());
            }
        }
    }

    /// A replica opened while a request is served (`CreateReplica`) does not keep the
    /// request's span open for its life: the Raft instance's tasks run outside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opened_replica_does_not_hold_the_span_it_was_opened_in() {
        use tracing::Instrument;
        use tracing_subscriber::layer::SubscriberExt;
        let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(SpanCloses(closed.clone()));
        let _default = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let db = crate::database::open_database(
            &dir.path().join("db"),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let context = context(db, dir.path().join("snapshots"), LinearizableReads::Lease);

        let request = tracing::info_span!("create_replica_request");
        let replica = ShardReplica::open(context, ShardId(1))
            .instrument(request)
            .await
            .unwrap();
        assert!(
            closed.lock().unwrap().contains(&"create_replica_request"),
            "the request's span is still open while the replica runs: {:?}",
            closed.lock().unwrap()
        );
        replica.raft().shutdown().await.unwrap();
    }
}
