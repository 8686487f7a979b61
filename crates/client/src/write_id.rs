//! Write ids for exactly-once writes: one random client id per `Client`, one sequence per
//! write, and the smallest sequence still in flight.
//!
//! Every attempt of one write carries the same `WriteId`, so a shard that already applied it
//! answers with the stored result instead of applying it again. `first_incomplete_sequence`
//! lets the shard forget the results of writes this client has already seen answered.

use cairn_proto::kv::v1 as proto;
use cairn_types::{ClientId, Sequence};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The identity of one write, sent with every attempt of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteId {
    pub client_id: ClientId,
    pub sequence: Sequence,
    /// Every sequence below this one has been answered (or abandoned) by this client.
    pub first_incomplete_sequence: Sequence,
}

impl From<WriteId> for proto::WriteId {
    fn from(id: WriteId) -> Self {
        proto::WriteId {
            client_id: id.client_id.get(),
            sequence: id.sequence.get(),
            first_incomplete_sequence: id.first_incomplete_sequence.get(),
        }
    }
}

/// Hands out write ids and tracks which are in flight.
#[derive(Debug)]
pub(crate) struct WriteIds {
    client_id: ClientId,
    state: Mutex<InFlight>,
}

/// The counter and the in-flight set sit under one lock: if a sequence were taken before
/// being inserted, a concurrent write could compute a `first_incomplete_sequence` above it,
/// the shard would forget results below that, and this write would be refused as outside
/// the window.
#[derive(Debug)]
struct InFlight {
    next_sequence: u64,
    sequences: BTreeSet<u64>,
}

impl WriteIds {
    pub(crate) fn new(client_id: ClientId) -> Self {
        assert_ne!(client_id.get(), 0, "client id 0 means \"no write id\"");
        Self {
            client_id,
            state: Mutex::new(InFlight {
                next_sequence: 1,
                sequences: BTreeSet::new(),
            }),
        }
    }

    /// A new random non-zero client id.
    pub(crate) fn random_client_id() -> ClientId {
        loop {
            let id: u64 = rand::random();
            if id != 0 {
                return ClientId(id);
            }
        }
    }

    pub(crate) fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Starts a write: takes the next sequence and marks it in flight until the returned
    /// guard is dropped (answered, failed or abandoned; it is never sent again after that).
    pub(crate) fn begin(&self) -> PendingWrite<'_> {
        let mut state = self.state.lock().expect("write id lock poisoned");
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.sequences.insert(sequence);
        let first_incomplete = *state
            .sequences
            .first()
            .expect("the set holds at least this write");
        PendingWrite {
            ids: self,
            id: WriteId {
                client_id: self.client_id,
                sequence: Sequence(sequence),
                first_incomplete_sequence: Sequence(first_incomplete),
            },
        }
    }

    /// The smallest sequence in flight, or the next one when none is.
    #[cfg(test)]
    pub(crate) fn first_incomplete(&self) -> Sequence {
        let state = self.state.lock().expect("write id lock poisoned");
        Sequence(
            state
                .sequences
                .first()
                .copied()
                .unwrap_or(state.next_sequence),
        )
    }

    fn finish(&self, sequence: Sequence) {
        let mut state = self.state.lock().expect("write id lock poisoned");
        let removed = state.sequences.remove(&sequence.get());
        assert!(removed, "{sequence} finished twice");
    }
}

/// One write in flight; dropping it marks the write answered.
#[derive(Debug)]
pub(crate) struct PendingWrite<'a> {
    ids: &'a WriteIds,
    id: WriteId,
}

impl PendingWrite<'_> {
    pub(crate) fn id(&self) -> WriteId {
        self.id
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.ids.finish(self.id.sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn sequences_start_at_one_and_increase() {
        let ids = WriteIds::new(ClientId(7));
        let first = ids.begin().id();
        let second = ids.begin().id();
        assert_eq!(first.sequence, Sequence(1));
        assert_eq!(second.sequence, Sequence(2));
        assert_eq!(first.client_id, ClientId(7));
        // The first write was answered before the second began.
        assert_eq!(second.first_incomplete_sequence, Sequence(2));
    }

    #[test]
    fn first_incomplete_is_the_oldest_write_in_flight() {
        let ids = WriteIds::new(ClientId(1));
        let one = ids.begin();
        let two = ids.begin();
        let three = ids.begin();
        assert_eq!(three.id().first_incomplete_sequence, Sequence(1));
        drop(two);
        // 1 is still in flight: answering 2 must not let the shard forget 1.
        assert_eq!(ids.begin().id().first_incomplete_sequence, Sequence(1));
        drop(one);
        let five = ids.begin();
        assert_eq!(five.id().sequence, Sequence(5));
        assert_eq!(five.id().first_incomplete_sequence, Sequence(3));
        drop(three);
        drop(five);
        assert_eq!(ids.first_incomplete(), Sequence(6));
    }

    #[test]
    fn concurrent_writes_never_acknowledge_a_write_in_flight() {
        const THREADS: usize = 8;
        const WRITES_PER_THREAD: usize = 500;
        let ids = Arc::new(WriteIds::new(ClientId(3)));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let ids = ids.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut seen = Vec::new();
                    for _ in 0..WRITES_PER_THREAD {
                        let write = ids.begin();
                        let id = write.id();
                        // While this write is in flight, nobody may claim it answered.
                        assert!(id.first_incomplete_sequence <= id.sequence);
                        assert!(ids.first_incomplete() <= id.sequence);
                        seen.push(id.sequence.get());
                        std::thread::yield_now();
                        drop(write);
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("writer thread panicked"))
            .collect();
        all.sort_unstable();
        let expected: Vec<u64> = (1..=(THREADS * WRITES_PER_THREAD) as u64).collect();
        assert_eq!(all, expected, "sequences must be unique and gap-free");
        assert_eq!(
            ids.first_incomplete(),
            Sequence((THREADS * WRITES_PER_THREAD) as u64 + 1)
        );
    }

    #[test]
    fn random_client_ids_are_non_zero_and_differ() {
        let a = WriteIds::random_client_id();
        let b = WriteIds::random_client_id();
        assert_ne!(a.get(), 0);
        assert_ne!(a, b);
    }
}
