//! The register model, the per-key partition and the search.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// What a client asked for. Values are whole strings (tests write unique values).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    Get,
    Put(String),
    Delete,
    /// Compare-and-set: write `new` (None deletes) only if the value is `expected` (None:
    /// the key is absent). Put-if-absent is `Cas { expected: None, new: Some(v) }`.
    Cas {
        expected: Option<String>,
        new: Option<String>,
    },
    /// A single-key transaction: if the value is `expected` (None: absent), write `new`
    /// (None deletes); otherwise read the value.
    Txn {
        expected: Option<String>,
        new: Option<String>,
    },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The value a get returned (None: absent).
    Value(Option<String>),
    /// A put or delete was acknowledged.
    Done,
    /// Whether a compare-and-set wrote; `Succeeded(true)` also for a transaction that took
    /// its success branch.
    Succeeded(bool),
    /// A transaction's comparison failed, and its failure branch read this value.
    TxnFailed(Option<String>),
}

/// One recorded operation. Times are from one monotonic clock, in any unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub input: Input,
    pub call: u64,
    /// `None`: the outcome is unknown (the operation may or may not have taken effect).
    pub returned: Option<(u64, Output)>,
    /// The cluster-wide revision the answer carried, when it has one: for a write that
    /// changed the key, the write's revision; for a read that found a value, the value's
    /// `mod_revision`. Checked by [`crate::check_revision_order`].
    pub revision: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.returned {
            Some((at, output)) => write!(
                f,
                "client {} key {:?} {:?} called {} returned {} -> {:?}",
                self.client, self.key, self.input, self.call, at, output
            ),
            None => write!(
                f,
                "client {} key {:?} {:?} called {} outcome unknown",
                self.client, self.key, self.input, self.call
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable {
        keys: usize,
        operations: usize,
    },
    /// No legal order exists for `key`; `operations` is that key's history.
    Violation {
        key: String,
        operations: Vec<Operation>,
    },
}

/// Applies `input` to the register `state`; returns the new state and the answer.
fn step(state: &Option<String>, input: &Input) -> (Option<String>, Output) {
    match input {
        Input::Get => (state.clone(), Output::Value(state.clone())),
        Input::Put(value) => (Some(value.clone()), Output::Done),
        Input::Delete => (None, Output::Done),
        Input::Cas { expected, new } => {
            if state == expected {
                (new.clone(), Output::Succeeded(true))
            } else {
                (state.clone(), Output::Succeeded(false))
            }
        }
        Input::Txn { expected, new } => {
            if state == expected {
                (new.clone(), Output::Succeeded(true))
            } else {
                (state.clone(), Output::TxnFailed(state.clone()))
            }
        }
    }
}

/// Checks a whole history, key by key.
pub fn check_history(history: &[Operation]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for operation in history {
        by_key
            .entry(&operation.key)
            .or_default()
            .push(operation.clone());
    }
    let keys = by_key.len();
    for (key, operations) in by_key {
        if !check_key(&operations) {
            return Verdict::Violation {
                key: key.to_string(),
                operations,
            };
        }
    }
    Verdict::Linearizable {
        keys,
        operations: history.len(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Call(usize),
    Return(usize),
}

/// A set of operation indexes, as a bit vector (hashable for the memo).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The search over one key's operations.
fn check_key(operations: &[Operation]) -> bool {
    let count = operations.len();
    if count == 0 {
        return true;
    }
    // Events in time order; unknown outcomes return after everything. At equal times calls
    // come first: operations that touch in time are concurrent.
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(2 * count);
    for (i, operation) in operations.iter().enumerate() {
        events.push((operation.call, 0, Event::Call(i)));
        let returned = operation.returned.as_ref().map_or(u64::MAX, |(at, _)| *at);
        events.push((returned, 1, Event::Return(i)));
    }
    events.sort_by_key(|(time, order, event)| {
        (
            *time,
            *order,
            match event {
                Event::Call(i) | Event::Return(i) => *i,
            },
        )
    });
    // A doubly linked list over the events, with a head sentinel at index `len`.
    let len = events.len();
    let head = len;
    let mut next: Vec<usize> = (1..=len).chain([0]).collect();
    let mut prev: Vec<usize> = std::iter::once(head)
        .chain(0..len.saturating_sub(1))
        .chain([len - 1])
        .collect();
    next[len - 1] = usize::MAX;
    next[head] = 0;
    prev[0] = head;
    let mut call_at = vec![0; count];
    let mut return_at = vec![0; count];
    for (position, (_, _, event)) in events.iter().enumerate() {
        match event {
            Event::Call(i) => call_at[*i] = position,
            Event::Return(i) => return_at[*i] = position,
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, position: usize| {
        let (p, n) = (prev[position], next[position]);
        next[p] = n;
        if n != usize::MAX {
            prev[n] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, position: usize| {
        let (p, n) = (prev[position], next[position]);
        next[p] = position;
        if n != usize::MAX {
            prev[n] = position;
        }
    };

    let mut state: Option<String> = None;
    let mut linearized = Bits::new(count);
    let mut seen: HashSet<(Bits, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut entry = next[head];
    while next[head] != usize::MAX {
        if entry == usize::MAX {
            // Every remaining call was tried here without success.
            let Some((i, previous)) = stack.pop() else {
                return false;
            };
            state = previous;
            linearized.clear(i);
            relink(&mut next, &mut prev, return_at[i]);
            relink(&mut next, &mut prev, call_at[i]);
            entry = next[call_at[i]];
            continue;
        }
        match events[entry].2 {
            Event::Call(i) => {
                let operation = &operations[i];
                let (new_state, output) = step(&state, &operation.input);
                let matches = operation
                    .returned
                    .as_ref()
                    .is_none_or(|(_, expected)| *expected == output);
                if matches {
                    let mut bits = linearized.clone();
                    bits.set(i);
                    if seen.insert((bits.clone(), new_state.clone())) {
                        stack.push((i, state));
                        state = new_state;
                        linearized = bits;
                        unlink(&mut next, &mut prev, call_at[i]);
                        unlink(&mut next, &mut prev, return_at[i]);
                        entry = next[head];
                        continue;
                    }
                }
                entry = next[entry];
            }
            Event::Return(_) => {
                // An operation returned before anything legal could linearize it: undo the
                // last choice and try the next one.
                let Some((i, previous)) = stack.pop() else {
                    return false;
                };
                state = previous;
                linearized.clear(i);
                relink(&mut next, &mut prev, return_at[i]);
                relink(&mut next, &mut prev, call_at[i]);
                entry = next[call_at[i]];
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: Input, call: u64, returned: u64, output: Output) -> Operation {
        Operation {
            client,
            key: "x".into(),
            input,
            call,
            returned: Some((returned, output)),
            revision: None,
        }
    }

    fn put(client: u64, value: &str, call: u64, returned: u64) -> Operation {
        op(
            client,
            Input::Put(value.into()),
            call,
            returned,
            Output::Done,
        )
    }

    fn get(client: u64, value: Option<&str>, call: u64, returned: u64) -> Operation {
        op(
            client,
            Input::Get,
            call,
            returned,
            Output::Value(value.map(str::to_string)),
        )
    }

    fn unknown(client: u64, input: Input, call: u64) -> Operation {
        Operation {
            client,
            key: "x".into(),
            input,
            call,
            returned: None,
            revision: None,
        }
    }

    fn linearizable(history: &[Operation]) -> bool {
        matches!(check_history(history), Verdict::Linearizable { .. })
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        assert!(linearizable(&[
            put(1, "a", 0, 10),
            get(2, Some("a"), 20, 30)
        ]));
        // A get concurrent with a put may see either value.
        assert!(linearizable(&[
            put(1, "a", 0, 10),
            put(1, "b", 20, 40),
            get(2, Some("a"), 25, 30)
        ]));
        assert!(linearizable(&[
            put(1, "a", 0, 10),
            put(1, "b", 20, 40),
            get(2, Some("b"), 25, 30)
        ]));
        assert!(linearizable(&[]));
    }

    #[test]
    fn a_stale_read_is_rejected() {
        let history = [
            put(1, "a", 0, 10),
            put(1, "b", 20, 30),
            get(2, Some("a"), 40, 50),
        ];
        assert!(matches!(check_history(&history), Verdict::Violation { key, .. } if key == "x"));
    }

    #[test]
    fn a_lost_write_is_rejected() {
        // The put was acknowledged, yet a later read finds nothing.
        let history = [put(1, "a", 0, 10), get(2, None, 20, 30)];
        assert!(!linearizable(&history));
    }

    #[test]
    fn a_duplicated_write_is_rejected() {
        // "a" is written again after "b" was acknowledged, with no put of "a" in flight.
        let history = [
            put(1, "a", 0, 10),
            put(2, "b", 20, 30),
            get(3, Some("a"), 40, 50),
        ];
        assert!(!linearizable(&history));
        // A compare-and-set counted twice: both answered true, but only one can have matched.
        let cas = |client, call, returned| {
            op(
                client,
                Input::Cas {
                    expected: Some("1".into()),
                    new: Some("2".into()),
                },
                call,
                returned,
                Output::Succeeded(true),
            )
        };
        assert!(!linearizable(&[
            put(1, "1", 0, 5),
            cas(1, 10, 20),
            cas(2, 30, 40)
        ]));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        // Never observed: fine.
        assert!(linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, Input::Put("b".into()), 20),
            get(3, Some("a"), 30, 40)
        ]));
        // Observed later: fine too.
        assert!(linearizable(&[
            put(1, "a", 0, 10),
            unknown(2, Input::Put("b".into()), 20),
            get(3, Some("b"), 30, 40)
        ]));
        // But it cannot have happened before it was called.
        assert!(!linearizable(&[
            get(3, Some("b"), 0, 10),
            unknown(2, Input::Put("b".into()), 20)
        ]));
    }

    #[test]
    fn compare_and_set_and_delete_follow_the_register() {
        let cas = |expected: Option<&str>, new: Option<&str>| Input::Cas {
            expected: expected.map(str::to_string),
            new: new.map(str::to_string),
        };
        let history = [
            op(1, cas(None, Some("a")), 0, 10, Output::Succeeded(true)),
            op(2, cas(None, Some("b")), 20, 30, Output::Succeeded(false)),
            op(1, Input::Delete, 40, 50, Output::Done),
            get(2, None, 60, 70),
        ];
        assert!(linearizable(&history));
        let wrong = [
            op(1, cas(None, Some("a")), 0, 10, Output::Succeeded(true)),
            op(2, cas(None, Some("b")), 20, 30, Output::Succeeded(true)),
        ];
        assert!(!linearizable(&wrong));
    }

    #[test]
    fn transactions_write_on_a_match_and_read_otherwise() {
        let txn = |expected: Option<&str>, new: Option<&str>| Input::Txn {
            expected: expected.map(str::to_string),
            new: new.map(str::to_string),
        };
        let history = [
            put(1, "a", 0, 10),
            op(
                1,
                txn(Some("a"), Some("b")),
                20,
                30,
                Output::Succeeded(true),
            ),
            op(
                2,
                txn(Some("a"), Some("c")),
                40,
                50,
                Output::TxnFailed(Some("b".into())),
            ),
            get(3, Some("b"), 60, 70),
        ];
        assert!(linearizable(&history));
        // The failure branch read a value the key no longer had.
        let stale = [
            put(1, "a", 0, 10),
            put(1, "b", 20, 30),
            op(
                2,
                txn(None, Some("c")),
                40,
                50,
                Output::TxnFailed(Some("a".into())),
            ),
        ];
        assert!(!linearizable(&stale));
        // A transaction acknowledged as applied must be seen.
        let lost = [
            op(1, txn(None, Some("a")), 0, 10, Output::Succeeded(true)),
            get(2, None, 20, 30),
        ];
        assert!(!linearizable(&lost));
    }

    #[test]
    fn keys_are_checked_independently_and_the_bad_key_is_named() {
        let mut history = vec![put(1, "a", 0, 10)];
        history.push(Operation {
            key: "y".into(),
            ..get(2, Some("zzz"), 20, 30)
        });
        match check_history(&history) {
            Verdict::Violation { key, operations } => {
                assert_eq!(key, "y");
                assert_eq!(operations.len(), 1);
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_larger_concurrent_history_is_checked_quickly() {
        // 4 clients, 200 operations, overlapping windows, all consistent with one order.
        let mut history = Vec::new();
        let mut value = None::<String>;
        for i in 0..200u64 {
            let call = i * 10;
            let returned = call + 25; // overlaps the next two operations
            if i % 3 == 0 {
                value = Some(format!("v{i}"));
                history.push(put(i % 4, value.as_deref().unwrap(), call, returned));
            } else {
                // Reads see the value as of their call (a legal linearization point).
                history.push(get(i % 4, value.as_deref(), call, returned));
            }
        }
        assert!(linearizable(&history));
    }
}
