//! The writes in flight on a shard leader, and the key latches that put them into the log in
//! timestamp order.
//!
//! A timestamped write goes through four steps ([`crate::versioned`]):
//!
//! 1. **Register** ([`Latches::register`]) before fetching its timestamp: from here on, reads
//!    at a revision wait for it while its timestamp is unknown or at most theirs.
//! 2. **Fetch** its timestamp from the oracle and record it ([`InFlight::set_revision`]).
//! 3. **Latch** its keys ([`InFlight::latch`]): writers of one key are granted the latch in
//!    timestamp order (a writer also waits for the writers of its keys still fetching theirs
//!    whose floor is below its timestamp: they may get a lower one), and
//!    each holds it only while its command is handed to Raft. A writer
//!    whose timestamp is not above one already proposed for its keys (it arrived late)
//!    fetches a new one while holding the latch ([`Latched::in_order`]), so it cannot be
//!    overtaken again.
//! 4. **Propose**, then release the latch ([`Latched::proposed`]); the registration stays until
//!    the write is applied or known never to apply (the [`InFlight`] is dropped).
//!
//! This gives the two guarantees the oracle's timestamps alone do not:
//!
//! - **Per key, revisions rise in log order.** A write is proposed only with a timestamp above
//!   every one proposed for its keys before it, so a key's `mod_revision` never goes
//!   backwards (the state machine refuses such an entry anyway; the latch makes that rare).
//! - **A read at revision `R` misses no write below `R`.** A write whose timestamp is below `R`
//!   registered before it fetched, so before `R` was handed out and before the read arrived;
//!   the read waits for every write registered when it arrives whose timestamp is unknown or
//!   at most `R` ([`Latches::wait_for_in_flight`]). Writes registered later fetch later,
//!   above `R`. Watch's resolved timestamps will rest on the same registry.
//!
//! Same-key writes overlap their oracle round trips (they all fetch at once and queue only for
//! the short hand-off to Raft); before D64 each fetched only after the previous one was proposed.
//!
//! Latches are the leader's memory only. A write latched under one leadership and proposed
//! under another is refused when applied (the command carries the term it fetched its
//! timestamp in), so a new leader never has to know the old one's latches.

use cairn_types::Revision;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Proposed timestamps remembered per key before the first pruning pass.
const PROPOSED_KEYS_PRUNE_MIN: usize = 4_096;

/// What a write latches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatchKeys {
    /// The keys it reads or writes (no duplicates; see [`LatchKeys::keys`]).
    Keys(Vec<Vec<u8>>),
    /// The whole shard (a transaction with a range reads keys it cannot name).
    Shard,
}

impl LatchKeys {
    /// The latch of `keys`, each once.
    pub fn keys(mut keys: Vec<Vec<u8>>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Self::Keys(keys)
    }
}

/// A latch or an in-flight wait did not finish within its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("waited {waited:?} for other writes to the same keys")]
pub struct LatchTimeout {
    pub waited: Duration,
}

/// A waiting writer's place in the queue: lowest timestamp first, then first registered.
type Place = (Revision, u64);

#[derive(Default)]
struct State {
    next_id: u64,
    /// Every registered write, with its timestamp once fetched (what reads wait for).
    in_flight: BTreeMap<u64, Option<Revision>>,
    /// Registered writes not yet handed to Raft, with the highest timestamp this process had
    /// seen when each registered: every timestamp it fetches is above that floor.
    unproposed: BTreeMap<u64, Revision>,
    /// Registered writes still fetching their timestamp, by (floor, id), per key and
    /// shard-wide. A writer whose timestamp is known waits for those whose floor is below it:
    /// their timestamps may be lower, and they are at most one oracle round trip away.
    fetching_by_key: HashMap<Vec<u8>, BTreeSet<Place>>,
    fetching_shard_wide: BTreeSet<Place>,
    fetching: BTreeSet<Place>,
    held: HashSet<Vec<u8>>,
    shard_held: bool,
    /// Writers waiting for a latch, per key and for the whole shard.
    waiting_by_key: HashMap<Vec<u8>, BTreeSet<Place>>,
    waiting_for_shard: BTreeSet<Place>,
    /// Every waiting writer (a shard-wide writer waits for all lower ones).
    waiting: BTreeSet<Place>,
    /// How to wake each writer that found its latch taken, and what it waits for. A change
    /// wakes only the writers it may let go ([`State::wake_ready`]), never every waiting
    /// task: under a hot key that was most of the latches' cost.
    wakers: HashMap<Place, (LatchKeys, Arc<Notify>)>,
    /// The highest timestamp proposed per key, kept while an unproposed write may still hold
    /// a lower one (see [`State::prune`]).
    proposed: HashMap<Vec<u8>, Revision>,
    /// The highest timestamp proposed by any write, and by a shard-wide write.
    proposed_high: Revision,
    shard_proposed_high: Revision,
    prune_at: usize,
}

impl State {
    /// Whether the writer at `place` may take the latch on `keys` now.
    fn may_take(&self, keys: &LatchKeys, place: Place) -> bool {
        // A writer still fetching, with a floor at or above this timestamp, fetches above it.
        let none_fetching_before = |fetching: Option<&BTreeSet<Place>>| {
            fetching
                .and_then(BTreeSet::first)
                .is_none_or(|(floor, _)| *floor >= place.0)
        };
        match keys {
            LatchKeys::Shard => {
                !self.shard_held
                    && self.held.is_empty()
                    && self.waiting.first() == Some(&place)
                    && none_fetching_before(Some(&self.fetching))
            }
            LatchKeys::Keys(keys) => {
                !self.shard_held
                    && self
                        .waiting_for_shard
                        .first()
                        .is_none_or(|first| *first > place)
                    && none_fetching_before(Some(&self.fetching_shard_wide))
                    && keys.iter().all(|key| {
                        !self.held.contains(key)
                            && self
                                .waiting_by_key
                                .get(key)
                                .and_then(BTreeSet::first)
                                .is_none_or(|first| *first >= place)
                            && none_fetching_before(self.fetching_by_key.get(key))
                    })
            }
        }
    }

    fn start_fetching(&mut self, fetching: Place, keys: &LatchKeys) {
        self.fetching.insert(fetching);
        match keys {
            LatchKeys::Shard => {
                self.fetching_shard_wide.insert(fetching);
            }
            LatchKeys::Keys(keys) => {
                for key in keys {
                    self.fetching_by_key
                        .entry(key.clone())
                        .or_default()
                        .insert(fetching);
                }
            }
        }
    }

    fn stop_fetching(&mut self, fetching: Place, keys: &LatchKeys) {
        if !self.fetching.remove(&fetching) {
            return;
        }
        match keys {
            LatchKeys::Shard => {
                self.fetching_shard_wide.remove(&fetching);
            }
            LatchKeys::Keys(keys) => {
                for key in keys {
                    if let Some(queue) = self.fetching_by_key.get_mut(key) {
                        queue.remove(&fetching);
                        if queue.is_empty() {
                            self.fetching_by_key.remove(key);
                        }
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, keys: &LatchKeys, place: Place) {
        self.waiting.insert(place);
        match keys {
            LatchKeys::Shard => {
                self.waiting_for_shard.insert(place);
            }
            LatchKeys::Keys(keys) => {
                for key in keys {
                    self.waiting_by_key
                        .entry(key.clone())
                        .or_default()
                        .insert(place);
                }
            }
        }
    }

    fn dequeue(&mut self, keys: &LatchKeys, place: Place) {
        self.waiting.remove(&place);
        self.wakers.remove(&place);
        match keys {
            LatchKeys::Shard => {
                self.waiting_for_shard.remove(&place);
            }
            LatchKeys::Keys(keys) => {
                for key in keys {
                    if let Some(queue) = self.waiting_by_key.get_mut(key) {
                        queue.remove(&place);
                        if queue.is_empty() {
                            self.waiting_by_key.remove(key);
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, keys: &LatchKeys) {
        match keys {
            LatchKeys::Shard => self.shard_held = true,
            LatchKeys::Keys(keys) => self.held.extend(keys.iter().cloned()),
        }
    }

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

    /// Wakes the waiting writers a change to `changed` may have let go: per key, the first in
    /// its queue (a later one cannot go before it), and the first shard-wide writer; after a
    /// shard-wide change, every waiting writer. Each is woken only if it may take its latch
    /// now; it checks again under the lock, so a wake that turns out early costs one check.
    fn wake_ready(&self, changed: &LatchKeys) {
        let wake = |place: &Place| {
            if let Some((keys, waker)) = self.wakers.get(place) {
                if self.may_take(keys, *place) {
                    waker.notify_one();
                }
            }
        };
        match changed {
            LatchKeys::Shard => self.wakers.keys().for_each(wake),
            LatchKeys::Keys(keys) => {
                for key in keys {
                    if let Some(first) = self.waiting_by_key.get(key).and_then(BTreeSet::first) {
                        wake(first);
                    }
                }
                if let Some(first) = self.waiting_for_shard.first() {
                    wake(first);
                }
            }
        }
    }

    /// Whether `revision` is above every timestamp proposed for `keys`.
    fn in_order(&self, keys: &LatchKeys, revision: Revision) -> bool {
        match keys {
            LatchKeys::Shard => revision > self.proposed_high,
            LatchKeys::Keys(keys) => {
                revision > self.shard_proposed_high
                    && keys.iter().all(|key| {
                        self.proposed
                            .get(key)
                            .is_none_or(|proposed| revision > *proposed)
                    })
            }
        }
    }

    fn record_proposed(&mut self, id: u64, keys: &LatchKeys, revision: Revision) {
        self.unproposed.remove(&id);
        self.proposed_high = self.proposed_high.max(revision);
        match keys {
            LatchKeys::Shard => self.shard_proposed_high = self.shard_proposed_high.max(revision),
            LatchKeys::Keys(keys) => {
                for key in keys {
                    let proposed = self.proposed.entry(key.clone()).or_insert(revision);
                    *proposed = (*proposed).max(revision);
                }
            }
        }
        if self.proposed.len() > self.prune_at.max(PROPOSED_KEYS_PRUNE_MIN) {
            self.prune();
        }
    }

    /// Forgets the proposed timestamps no unproposed write can be below: a write registered
    /// with floor `f` fetches above `f`, so entries at or below every floor are dead. What is
    /// left is the keys written within about one oracle round trip.
    fn prune(&mut self) {
        match self.unproposed.values().min().copied() {
            None => self.proposed.clear(),
            Some(floor) => self.proposed.retain(|_, proposed| *proposed > floor),
        }
        self.prune_at = self.proposed.len() * 2;
    }
}

#[derive(Default)]
pub struct Latches {
    state: Mutex<State>,
    /// Wakes reads waiting for writes in flight when a write's timestamp becomes known or
    /// the write settles (latch waiters are woken one by one, see [`State::wake_ready`]).
    flights_changed: Notify,
}

/// A registered write: reads at or above its timestamp (or any, while it is unknown) wait for
/// it until this is dropped.
pub struct InFlight {
    latches: Arc<Latches>,
    id: u64,
    keys: LatchKeys,
    /// The highest timestamp the process had seen when the write registered.
    floor: Revision,
    revision: Option<Revision>,
}

/// A held key latch (or shard latch); released when dropped or when the write is proposed.
pub struct Latched<'f> {
    flight: &'f mut InFlight,
}

impl Latches {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("latch state lock poisoned")
    }

    /// Registers a write of `keys` about to fetch its timestamp. `floor` is the highest
    /// timestamp this process has seen handed out, read before this call: the write's
    /// timestamp will be above it.
    pub fn register(self: &Arc<Self>, floor: Revision, keys: LatchKeys) -> InFlight {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.in_flight.insert(id, None);
        state.unproposed.insert(id, floor);
        state.start_fetching((floor, id), &keys);
        InFlight {
            latches: self.clone(),
            id,
            keys,
            floor,
            revision: None,
        }
    }

    /// Waits until every write registered now, whose timestamp is unknown or at most `at`,
    /// has settled (applied, refused, or failed).
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
            let notified = self.flights_changed.notified();
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

    /// Writes registered now (for metrics).
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Keys whose proposed timestamp is still remembered (for tests of the bound).
    pub fn remembered_keys(&self) -> usize {
        self.lock().proposed.len()
    }
}

impl InFlight {
    /// Records the write's timestamp: reads below it stop waiting for it, and it queues for
    /// its latches by it.
    pub fn set_revision(&mut self, revision: Revision) {
        let mut state = self.latches.lock();
        if self.revision.is_none() {
            state.stop_fetching((self.floor, self.id), &self.keys);
        }
        self.revision = Some(revision);
        if let Some(slot) = state.in_flight.get_mut(&self.id) {
            *slot = Some(revision);
        }
        state.wake_ready(&self.keys);
        drop(state);
        self.latches.flights_changed.notify_waiters();
    }

    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }

    /// Takes the latch on the write's keys, waiting at most `timeout`. Writers of a key are
    /// granted it in timestamp order, including those still fetching a timestamp that may
    /// be lower. The timestamp must be set.
    pub async fn latch(&mut self, timeout: Duration) -> Result<Latched<'_>, LatchTimeout> {
        let revision = self
            .revision
            .expect("a write latches its keys after fetching its timestamp");
        let place = (revision, self.id);
        let keys = self.keys.clone();
        let latches = self.latches.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        latches.lock().enqueue(&keys, place);
        // Leaves the queue however this wait ends (granted, timed out, or the request dropped):
        // a writer left in it would stall every later one.
        let mut queued = Queued {
            latches: &latches,
            keys: &keys,
            place,
            active: true,
        };
        // Created when the latch is first found taken; a wake between the check and the
        // wait is kept as the `Notify`'s permit, so none is lost.
        let mut waker: Option<Arc<Notify>> = None;
        loop {
            {
                let mut state = latches.lock();
                if state.may_take(&keys, place) {
                    state.dequeue(&keys, place);
                    state.take(&keys);
                    queued.active = false;
                    // This writer left the queue of its keys: the next in line may go.
                    state.wake_ready(&keys);
                    break;
                }
                if waker.is_none() {
                    let notify = Arc::new(Notify::new());
                    state.wakers.insert(place, (keys.clone(), notify.clone()));
                    waker = Some(notify);
                }
            }
            let notified = waker.as_ref().expect("set above").notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(LatchTimeout { waited: timeout });
            }
        }
        drop(queued);
        Ok(Latched { flight: self })
    }
}

struct Queued<'a> {
    latches: &'a Latches,
    keys: &'a LatchKeys,
    place: Place,
    active: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.active {
            let mut state = self.latches.lock();
            state.dequeue(self.keys, self.place);
            state.wake_ready(self.keys);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.latches.lock();
        state.in_flight.remove(&self.id);
        state.unproposed.remove(&self.id);
        state.stop_fetching((self.floor, self.id), &self.keys);
        state.wake_ready(&self.keys);
        drop(state);
        self.latches.flights_changed.notify_waiters();
    }
}

impl Latched<'_> {
    /// Whether the write's timestamp is above every one proposed for its keys. If not, the
    /// write fetches a new timestamp while holding the latch ([`Latched::set_revision`]): no
    /// write of these keys can be proposed meanwhile, so the new one is in order.
    pub fn in_order(&self) -> bool {
        let revision = self.flight.revision.expect("timestamp set before latching");
        self.flight
            .latches
            .lock()
            .in_order(&self.flight.keys, revision)
    }

    pub fn set_revision(&mut self, revision: Revision) {
        self.flight.set_revision(revision);
    }

    /// The write's timestamp (the latest fetched).
    pub fn revision(&self) -> Revision {
        self.flight.revision.expect("timestamp set before latching")
    }

    /// The write was handed to Raft at its timestamp: remembers it for the keys' later writers
    /// and lets them go. Reads still wait for the write until its [`InFlight`] is dropped.
    pub fn proposed(self) {
        let revision = self.flight.revision.expect("timestamp set before latching");
        let mut state = self.flight.latches.lock();
        state.record_proposed(self.flight.id, &self.flight.keys, revision);
        drop(state);
        // The latch itself is released by `Drop`.
    }
}

impl Drop for Latched<'_> {
    fn drop(&mut self) {
        let mut state = self.flight.latches.lock();
        state.release(&self.flight.keys);
        state.wake_ready(&self.flight.keys);
    }
}

#[cfg(test)]
#[path = "latches_tests.rs"]
mod tests;
