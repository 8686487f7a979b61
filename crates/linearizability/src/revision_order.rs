//! Real-time order of revisions across all keys: Cairn promises that if an operation was
//! answered before another started, a write the second one made has a higher revision than
//! anything the first one wrote or read — whatever keys or shards they touched. The register
//! check is per key and cannot see this; this one looks at every pair of operations.
//!
//! What counts: an answered operation with a revision. A write that changed its key
//! (`Output::Done`, a successful compare-and-set or transaction) *made* its revision; a read
//! that found a value (`Output::Value(Some)`, `Output::TxnFailed(Some)`) *saw* one. For every
//! write B and every operation A answered before B was called, A's revision must be below B's.
//! Two different writes never share a revision.

use crate::{Input, Operation, Output};
use std::collections::HashMap;
use std::fmt;

/// Two operations out of real-time order (or two writes sharing a revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionOrderViolation {
    pub earlier: Box<Operation>,
    pub later: Box<Operation>,
    pub reason: &'static str,
}

impl fmt::Display for RevisionOrderViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (revision {:?}) and {} (revision {:?})",
            self.reason, self.earlier, self.earlier.revision, self.later, self.later.revision
        )
    }
}

/// Whether `operation` made its revision (a write that changed the key).
fn wrote(operation: &Operation) -> bool {
    match &operation.returned {
        Some((_, Output::Done)) => operation.input != Input::Get,
        Some((_, Output::Succeeded(true))) => true,
        _ => false,
    }
}

/// Checks the real-time order of revisions over a whole history.
pub fn check_revision_order(history: &[Operation]) -> Result<usize, RevisionOrderViolation> {
    let answered: Vec<&Operation> = history
        .iter()
        .filter(|op| op.returned.is_some() && op.revision.is_some())
        .collect();
    let mut writes: Vec<&Operation> = answered.iter().copied().filter(|op| wrote(op)).collect();

    let mut by_revision: HashMap<u64, &Operation> = HashMap::new();
    for write in &writes {
        let revision = write.revision.expect("filtered");
        if let Some(other) = by_revision.insert(revision, write) {
            return Err(RevisionOrderViolation {
                earlier: Box::new(other.clone()),
                later: Box::new((*write).clone()),
                reason: "two writes share a revision",
            });
        }
    }

    let mut by_return = answered.clone();
    by_return.sort_by_key(|op| op.returned.as_ref().map(|(at, _)| *at));
    writes.sort_by_key(|op| op.call);
    let mut next = 0;
    let mut highest: Option<&Operation> = None;
    for later in &writes {
        while next < by_return.len()
            && by_return[next].returned.as_ref().map(|(at, _)| *at) < Some(later.call)
        {
            let candidate = by_return[next];
            if highest.is_none_or(|h| candidate.revision > h.revision) {
                highest = Some(candidate);
            }
            next += 1;
        }
        if let Some(earlier) = highest {
            if earlier.revision >= later.revision {
                return Err(RevisionOrderViolation {
                    earlier: Box::new(earlier.clone()),
                    later: Box::new((*later).clone()),
                    reason: "a write started after another operation was answered has a revision \
                             not above that operation's",
                });
            }
        }
    }
    Ok(writes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        key: &str,
        input: Input,
        call: u64,
        returned: u64,
        output: Output,
        revision: u64,
    ) -> Operation {
        Operation {
            client: 1,
            key: key.into(),
            input,
            call,
            returned: Some((returned, output)),
            revision: Some(revision),
        }
    }

    fn put(key: &str, call: u64, returned: u64, revision: u64) -> Operation {
        op(
            key,
            Input::Put("v".into()),
            call,
            returned,
            Output::Done,
            revision,
        )
    }

    #[test]
    fn writes_ordered_in_real_time_need_rising_revisions_across_keys() {
        let good = vec![put("a", 0, 10, 5), put("b", 20, 30, 9), put("c", 5, 25, 7)];
        assert_eq!(check_revision_order(&good), Ok(3));
        // "b" started after "a" was answered, on another key, with a lower revision.
        let bad = vec![put("a", 0, 10, 5), put("b", 20, 30, 4)];
        let violation = check_revision_order(&bad).unwrap_err();
        assert_eq!(violation.later.key, "b");
        // Concurrent writes may have either order.
        let concurrent = vec![put("a", 0, 10, 5), put("b", 5, 30, 4)];
        assert!(check_revision_order(&concurrent).is_ok());
    }

    #[test]
    fn a_read_bounds_later_writes_and_revisions_are_unique() {
        let read = op("a", Input::Get, 0, 10, Output::Value(Some("v".into())), 8);
        assert!(check_revision_order(&[read.clone(), put("b", 20, 30, 7)]).is_err());
        assert!(check_revision_order(&[read, put("b", 20, 30, 9)]).is_ok());
        let twice = vec![put("a", 0, 10, 5), put("b", 0, 10, 5)];
        assert_eq!(
            check_revision_order(&twice).unwrap_err().reason,
            "two writes share a revision"
        );
        // A failed compare-and-set made no revision of its own.
        let failed = op(
            "a",
            Input::Cas {
                expected: None,
                new: Some("x".into()),
            },
            20,
            30,
            Output::Succeeded(false),
            3,
        );
        assert!(check_revision_order(&[put("a", 0, 10, 5), failed]).is_ok());
    }
}
