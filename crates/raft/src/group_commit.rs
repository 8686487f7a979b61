//! Group commit: one WAL fsync acknowledges many log appends, from many shards.
//!
//! Every shard's log lives in the node's single RocksDB, which has a single write-ahead log.
//! An append writes its entries without syncing and hands its completion callback to the
//! committer; the committer fsyncs the WAL once for every callback that queued up while the
//! previous fsync ran, then completes them all. Because an append's write has finished before
//! its callback is queued, the fsync that follows covers it: a write is acknowledged only after
//! it is on disk.

use rocksdb::DB;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Completion of one append; called with the result of the fsync that covers it.
pub type FlushCallback = Box<dyn FnOnce(std::io::Result<()>) + Send + 'static>;

/// Bounds of the committer. `queue_max` callbacks may wait (appends beyond it wait for room,
/// which is the back-pressure on Raft); at most `batch_max` are completed by one fsync.
#[derive(Clone, Debug)]
pub struct GroupCommitLimits {
    pub queue_max: usize,
    pub batch_max: usize,
    /// Whether the committer fsyncs the WAL. Only the in-memory storage engine turns it off:
    /// its WAL is in RAM, there is no disk to reach, and RocksDB refuses `SyncWAL` there.
    pub sync_wal: bool,
}

impl Default for GroupCommitLimits {
    fn default() -> Self {
        Self {
            queue_max: 16_384,
            batch_max: 4096,
            sync_wal: true,
        }
    }
}

/// Handle to the committer task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    sender: mpsc::Sender<FlushCallback>,
}

/// Counters an operator graphs: how many fsyncs, how many appends they served.
#[derive(Default)]
pub struct GroupCommitStats {
    pub fsyncs: std::sync::atomic::AtomicU64,
    pub appends: std::sync::atomic::AtomicU64,
    pub fsync_micros_total: std::sync::atomic::AtomicU64,
    /// Told each fsync's duration (the node feeds its latency histogram from it); set once.
    pub fsync_observer: std::sync::OnceLock<FsyncObserver>,
}

pub type FsyncObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

impl GroupCommit {
    /// Starts the committer on the current tokio runtime. It stops when every handle is gone.
    pub fn start(db: Arc<DB>, limits: GroupCommitLimits, stats: Arc<GroupCommitStats>) -> Self {
        assert!(limits.batch_max >= 1 && limits.queue_max >= limits.batch_max);
        let (sender, receiver) = mpsc::channel(limits.queue_max);
        tokio::spawn(run(db, receiver, limits.batch_max, limits.sync_wal, stats));
        Self { sender }
    }

    /// Queues `callback` to run after the next WAL fsync. Waits while the queue is full.
    pub async fn after_next_sync(&self, callback: FlushCallback) {
        if let Err(mpsc::error::SendError(callback)) = self.sender.send(callback).await {
            callback(Err(std::io::Error::other(
                "group commit stopped: node shutting down",
            )));
        }
    }
}

async fn run(
    db: Arc<DB>,
    mut receiver: mpsc::Receiver<FlushCallback>,
    batch_max: usize,
    sync_wal: bool,
    stats: Arc<GroupCommitStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<FlushCallback> = Vec::with_capacity(batch_max);
    while receiver.recv_many(&mut batch, batch_max).await > 0 {
        let db = db.clone();
        let started = Instant::now();
        // Each append's write finished before its callback queued, so without an fsync to wait
        // for (memory engine) the batch is complete as it is.
        let result = tokio::task::spawn_blocking(move || db.flush_wal(sync_wal))
            .await
            .map_err(|join| std::io::Error::other(format!("fsync task failed: {join}")))
            .and_then(|flushed| flushed.map_err(std::io::Error::other));
        let elapsed = started.elapsed();
        stats.fsyncs.fetch_add(1, Relaxed);
        stats.appends.fetch_add(batch.len() as u64, Relaxed);
        stats
            .fsync_micros_total
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
        if let Some(observe) = stats.fsync_observer.get() {
            observe(elapsed);
        }
        if let Err(error) = &result {
            tracing::error!(%error, appends = batch.len(), "WAL fsync failed; failing the appends it covered");
        }
        for callback in batch.drain(..) {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(std::io::Error::new(error.kind(), error.to_string())),
            };
            callback(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Appends queued while the committer has not run yet share one fsync.
    #[tokio::test(flavor = "current_thread")]
    async fn one_fsync_serves_every_queued_append() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            crate::database::open_database(dir.path(), &Default::default(), Default::default())
                .unwrap();
        let stats = Arc::new(GroupCommitStats::default());
        let committer = GroupCommit::start(db.clone(), GroupCommitLimits::default(), stats.clone());
        let mut done = Vec::new();
        for shard in 0..100u64 {
            // A real append writes first; the fsync that follows covers the write.
            let cf = db.cf_handle(crate::keys::CF_RAFT_LOG).unwrap();
            db.put_cf(
                cf,
                crate::keys::log_key(cairn_types::ShardId(shard), 1),
                b"entry",
            )
            .unwrap();
            let (sender, receiver) = tokio::sync::oneshot::channel();
            // On a current-thread runtime the committer cannot run until this task waits.
            committer
                .after_next_sync(Box::new(move |result| sender.send(result).unwrap()))
                .await;
            done.push(receiver);
        }
        for receiver in done {
            receiver.await.unwrap().unwrap();
        }
        assert_eq!(stats.appends.load(Relaxed), 100);
        assert_eq!(
            stats.fsyncs.load(Relaxed),
            1,
            "every queued append completes on one fsync"
        );
    }

    /// A full batch is split: at most batch_max callbacks per fsync.
    #[tokio::test(flavor = "current_thread")]
    async fn batches_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            crate::database::open_database(dir.path(), &Default::default(), Default::default())
                .unwrap();
        let stats = Arc::new(GroupCommitStats::default());
        let committer = GroupCommit::start(
            db,
            GroupCommitLimits {
                queue_max: 64,
                batch_max: 10,
                ..GroupCommitLimits::default()
            },
            stats.clone(),
        );
        let mut done = Vec::new();
        for _ in 0..25 {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            committer
                .after_next_sync(Box::new(move |result| sender.send(result).unwrap()))
                .await;
            done.push(receiver);
        }
        for receiver in done {
            receiver.await.unwrap().unwrap();
        }
        assert_eq!(stats.appends.load(Relaxed), 25);
        assert_eq!(stats.fsyncs.load(Relaxed), 3);
    }
}
