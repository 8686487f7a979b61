//! In-memory key latches of a shard leader, taken by a write **before** it fetches its
//! timestamp and held until it is applied (or known never to apply).
//!
//! They give two guarantees the oracle's timestamps alone do not:
//!
//! - **Per key, revisions rise in log order.** Two writes to one key never hold the latch at
//!   once, so the second fetches its timestamp after the first was applied, and gets a higher
//!   one. Without the latch, two concurrent writes could fetch `t1 < t2` and reach the log as
//!   `t2, t1`, and the key's `mod_revision` would go backwards.
//! - **A read at revision `R` misses no write below `R`.** A write whose timestamp is below `R`
//!   fetched it before `R` was handed out, so it registered here before the read arrived; the
//!   read waits for every write registered when it arrives whose timestamp is unknown or at
//!   most `R` ([`Latches::wait_for_in_flight`]). Writes registered later fetch later, above
//!   `R`. Watch's resolved timestamps will rest on the same registry.
//!
//! Latches are the leader's memory only. A write latched under one leadership and proposed
//! under another is refused when applied (the command carries the term it fetched its
//! timestamp in), so a new leader never has to know the old one's latches.

use cairn_types::Revision;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What a write latches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatchKeys {
    /// The keys it reads or writes.
    Keys(Vec<Vec<u8>>),
    /// The whole shard (a transaction with a range reads keys it cannot name).
    Shard,
}

/// A latch or an in-flight wait did not finish within its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("waited {waited:?} for other writes to the same keys")]
pub struct LatchTimeout {
    pub waited: Duration,
}

#[derive(Default)]
struct State {
    held: HashSet<Vec<u8>>,
    shard_held: bool,
    /// Writers waiting for the whole shard: new key latches wait behind them.
    shard_waiting: usize,
    next_id: u64,
    /// Every latched write, with its timestamp once fetched.
    in_flight: BTreeMap<u64, Option<Revision>>,
}

impl State {
    fn compatible(&self, keys: &LatchKeys) -> bool {
        match keys {
            LatchKeys::Shard => !self.shard_held && self.held.is_empty(),
            LatchKeys::Keys(keys) => {
                !self.shard_held
                    && self.shard_waiting == 0
                    && keys.iter().all(|key| !self.held.contains(key))
            }
        }
    }
}

#[derive(Default)]
pub struct Latches {
    state: Mutex<State>,
    changed: Notify,
}

/// A held latch; released when dropped.
pub struct LatchGuard {
    latches: Arc<Latches>,
    id: u64,
    keys: LatchKeys,
}

impl Latches {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("latch state lock poisoned")
    }

    /// Takes the latch on `keys`, waiting at most `timeout` for the writes holding them.
    pub async fn acquire(
        self: &Arc<Self>,
        keys: LatchKeys,
        timeout: Duration,
    ) -> Result<LatchGuard, LatchTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting_for_shard = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            {
                let mut state = self.lock();
                if state.compatible(&keys) {
                    if waiting_for_shard {
                        state.shard_waiting -= 1;
                    }
                    match &keys {
                        LatchKeys::Shard => state.shard_held = true,
                        LatchKeys::Keys(keys) => state.held.extend(keys.iter().cloned()),
                    }
                    let id = state.next_id;
                    state.next_id += 1;
                    state.in_flight.insert(id, None);
                    return Ok(LatchGuard {
                        latches: self.clone(),
                        id,
                        keys,
                    });
                }
                if keys == LatchKeys::Shard && !waiting_for_shard {
                    waiting_for_shard = true;
                    state.shard_waiting += 1;
                }
                // Registered before the state lock is released: no release is missed.
                notified.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if waiting_for_shard {
                    self.lock().shard_waiting -= 1;
                    self.changed.notify_waiters();
                }
                return Err(LatchTimeout { waited: timeout });
            }
        }
    }

    /// Waits until every write latched now, whose timestamp is unknown or at most `at`, has
    /// been released (applied, refused, or failed).
    pub async fn wait_for_in_flight(
        &self,
        at: Revision,
        timeout: Duration,
    ) -> Result<(), LatchTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting: Vec<u64> = {
            let state = self.lock();
            state
                .in_flight
                .iter()
                .filter(|(_, revision)| revision.is_none_or(|revision| revision <= at))
                .map(|(id, _)| *id)
                .collect()
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            {
                let state = self.lock();
                waiting.retain(|id| {
                    state
                        .in_flight
                        .get(id)
                        .is_some_and(|revision| revision.is_none_or(|revision| revision <= at))
                });
                if waiting.is_empty() {
                    return Ok(());
                }
                notified.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(LatchTimeout { waited: timeout });
            }
        }
    }

    /// Writes latched now (for metrics).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

impl LatchGuard {
    /// Records the write's timestamp, so reads below it stop waiting for it.
    pub fn set_revision(&self, revision: Revision) {
        let mut state = self.latches.lock();
        if let Some(slot) = state.in_flight.get_mut(&self.id) {
            *slot = Some(revision);
        }
        drop(state);
        self.latches.changed.notify_waiters();
    }
}

impl LatchGuard {
    /// Lets other writers take the keys (or the shard) while this write stays in flight for
    /// reads: for a write whose place in the log order is already fixed.
    pub fn release_keys(&mut self) {
        let keys = std::mem::replace(&mut self.keys, LatchKeys::Keys(Vec::new()));
        let mut state = self.latches.lock();
        state.release(&keys);
        drop(state);
        self.latches.changed.notify_waiters();
    }
}

impl State {
    fn release(&mut self, keys: &LatchKeys) {
        match keys {
            LatchKeys::Shard => self.shard_held = false,
            LatchKeys::Keys(keys) => {
                for key in keys {
                    self.held.remove(key);
                }
            }
        }
    }
}

impl Drop for LatchGuard {
    fn drop(&mut self) {
        let mut state = self.latches.lock();
        state.release(&self.keys);
        state.in_flight.remove(&self.id);
        drop(state);
        self.latches.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> LatchKeys {
        LatchKeys::Keys(names.iter().map(|n| n.as_bytes().to_vec()).collect())
    }

    const SHORT: Duration = Duration::from_millis(50);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn one_writer_per_key_and_the_shard_latch_excludes_all() {
        let latches = Arc::new(Latches::default());
        let a = latches.acquire(keys(&["a"]), LONG).await.unwrap();
        let _b = latches.acquire(keys(&["b"]), LONG).await.unwrap();
        assert!(latches.acquire(keys(&["a", "c"]), SHORT).await.is_err());
        assert!(latches.acquire(LatchKeys::Shard, SHORT).await.is_err());
        let waiter = {
            let latches = latches.clone();
            tokio::spawn(async move { latches.acquire(keys(&["a"]), LONG).await.map(|_| ()) })
        };
        drop(a);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn released_keys_admit_the_next_writer_while_reads_still_wait_for_the_write() {
        let latches = Arc::new(Latches::default());
        let mut first = latches.acquire(keys(&["a"]), LONG).await.unwrap();
        first.set_revision(Revision(5));
        assert!(latches.acquire(keys(&["a"]), SHORT).await.is_err());
        first.release_keys();
        let second = latches.acquire(keys(&["a"]), SHORT).await.unwrap();
        second.set_revision(Revision(9));
        // Both writes are in flight for reads at or above their revisions.
        assert_eq!(latches.in_flight(), 2);
        assert!(latches
            .wait_for_in_flight(Revision(5), SHORT)
            .await
            .is_err());
        drop(first);
        latches
            .wait_for_in_flight(Revision(5), SHORT)
            .await
            .unwrap();
        assert!(latches
            .wait_for_in_flight(Revision(9), SHORT)
            .await
            .is_err());
        drop(second);
        latches
            .wait_for_in_flight(Revision(9), SHORT)
            .await
            .unwrap();
        // The shard latch is released the same way.
        let mut shard = latches.acquire(LatchKeys::Shard, LONG).await.unwrap();
        shard.release_keys();
        let _after = latches.acquire(keys(&["b"]), SHORT).await.unwrap();
        assert_eq!(latches.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_read_waits_for_writes_at_or_below_it_and_not_for_later_ones() {
        let latches = Arc::new(Latches::default());
        let below = latches.acquire(keys(&["a"]), LONG).await.unwrap();
        let unknown = latches.acquire(keys(&["b"]), LONG).await.unwrap();
        let above = latches.acquire(keys(&["c"]), LONG).await.unwrap();
        below.set_revision(Revision(5));
        above.set_revision(Revision(20));
        // Waits for `below` (5 <= 10) and `unknown` (could still be below 10).
        assert!(latches
            .wait_for_in_flight(Revision(10), SHORT)
            .await
            .is_err());
        drop(below);
        assert!(latches
            .wait_for_in_flight(Revision(10), SHORT)
            .await
            .is_err());
        // Its timestamp turns out above the read: no longer waited for.
        unknown.set_revision(Revision(15));
        latches
            .wait_for_in_flight(Revision(10), SHORT)
            .await
            .unwrap();
        // A write latched after the read began is not waited for.
        let later = latches.acquire(keys(&["d"]), LONG).await.unwrap();
        drop(later);
        drop(above);
        assert_eq!(latches.in_flight(), 1);
    }
}
