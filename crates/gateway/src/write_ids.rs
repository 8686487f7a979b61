//! Write ids for writes that arrive without one: the gateway is then the client whose
//! retries must not apply a write twice. Each gateway process is one client id.

use cairn_proto::kv::v1 as pb;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

pub struct WriteIds {
    client_id: u64,
    state: Mutex<State>,
}

struct State {
    next: u64,
    in_flight: BTreeSet<u64>,
}

/// Keeps its sequence "in flight" until dropped, so the shard keeps its result until then.
pub struct InFlight {
    ids: Arc<WriteIds>,
    pub write_id: pb::WriteId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.ids.state.lock().expect("write id lock poisoned");
        state.in_flight.remove(&self.write_id.sequence);
    }
}

impl WriteIds {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            client_id: rand::random::<u64>() | 1,
            state: Mutex::new(State {
                next: 1,
                in_flight: BTreeSet::new(),
            }),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock().expect("write id lock poisoned");
        let sequence = state.next;
        state.next += 1;
        state.in_flight.insert(sequence);
        let first_incomplete = *state.in_flight.first().expect("just inserted");
        InFlight {
            ids: self.clone(),
            write_id: pb::WriteId {
                client_id: self.client_id,
                sequence,
                first_incomplete_sequence: first_incomplete,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_incomplete_is_the_oldest_write_still_in_flight() {
        let ids = WriteIds::new();
        let first = ids.begin();
        let second = ids.begin();
        assert_eq!(
            (
                second.write_id.sequence,
                second.write_id.first_incomplete_sequence
            ),
            (2, 1)
        );
        drop(first);
        let third = ids.begin();
        assert_eq!(third.write_id.first_incomplete_sequence, 2);
        drop(second);
        drop(third);
        assert_eq!(ids.begin().write_id.first_incomplete_sequence, 4);
    }
}
