//! A checker for multi-key transactional histories in the style of Elle (Kingsbury & Alvaro,
//! "Elle: Inferring Isolation Anomalies from Experimental Observations", VLDB 2020), list-append
//! flavour.
//!
//! Every key holds a list of integers; a transaction is a sequence of micro-ops, each an append
//! of an element to a key's list or a read of a key's whole list. Elements are unique per key, so
//! a read names every transaction whose append it saw, and the longest read of a key shows the
//! order in which its appends happened. From that the checker infers, without any search over
//! interleavings:
//!
//! - the **version order** of each key: its longest committed read; every other read must be a
//!   prefix of it, otherwise the key's history is an **incompatible order**. Committed appends that
//!   no read ever saw are placed after the longest read (lists only grow), in no order among
//!   themselves;
//! - dependency edges between committed transactions: **ww** (T1 appended the element just before
//!   T2's), **wr** (T2 read a list whose last element T1 appended), **rw** (T1 read a list that
//!   lacks the next element, appended by T2), and **real-time** edges (T1 returned before T2 was
//!   called);
//! - cycles in that graph (Tarjan's strongly connected components, then a shortest cycle by
//!   breadth-first search in each), classified as Adya's **G0** (ww only), **G1c** (ww and wr),
//!   **G-single** (exactly one rw), **G2** (several rw) — each a violation of serializability —
//!   or, when the cycle needs a real-time edge, the same names with `-realtime`: violations of
//!   strict serializability only (a stale read, a lost append);
//! - anomalies that need no cycle: **G1a** (a read saw an element of an aborted transaction),
//!   **G1b** (a read saw an element that its transaction later followed with another append to
//!   the same key: an intermediate state), a **duplicate element** in one read, a **garbage** read
//!   (an element nobody appended to that key), and an **internal** inconsistency (a read in a
//!   transaction that disagrees with the transaction's own earlier reads and appends).
//!
//! A transaction whose outcome is unknown (no answer) counts as committed as soon as any other
//! transaction's committed read saw one of its elements; otherwise it is left out (it may never
//! have happened). It takes part in real-time edges only as the later transaction: it was called,
//! it never returned.
//!
//! What it cannot catch: anything on a key no committed transaction read (versions are inferred
//! from reads only); the relative order of appends no read saw (two lost appends to the same key
//! make no cycle with each other); anomalies among transactions whose reads did not return;
//! real-time violations involving a transaction that did not return as the earlier one; reads of
//! aborted transactions (they are not checked at all). Unique elements are assumed: an element
//! appended twice to a key is reported as a malformed history and left out of the inference. Per
//! strongly connected component one cycle is reported, the most severe class found; the search
//! for G-single cycles is bounded ([`SEARCH_STEPS_MAX`]), past which a cycle may be reported
//! under a weaker class than it could have been (never missed).

mod anomaly;
mod cycles;
mod graph;
mod inference;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

pub use anomaly::{Anomaly, CycleKind, Edge, Report, Step, ANOMALIES_PER_KIND_MAX};
pub use cycles::SEARCH_STEPS_MAX;

use std::fmt;

/// A transaction's place in the history: its index in the slice given to [`check_list_append`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub usize);

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

/// One micro-operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MicroOp {
    /// Appends `element` to the list under `key`. An element is appended to a key once in the
    /// whole history.
    Append { key: String, element: u64 },
    /// Reads the list under `key` (an absent key is the empty list). `observed` is what the
    /// client was told; `None` when it was told nothing (the transaction did not answer).
    Read {
        key: String,
        observed: Option<Vec<u64>>,
    },
}

impl MicroOp {
    pub fn key(&self) -> &str {
        match self {
            MicroOp::Append { key, .. } | MicroOp::Read { key, .. } => key,
        }
    }
}

impl fmt::Display for MicroOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MicroOp::Append { key, element } => write!(f, "append {key:?} {element}"),
            MicroOp::Read {
                key,
                observed: Some(list),
            } => write!(f, "read {key:?} {}", List(list)),
            MicroOp::Read {
                key,
                observed: None,
            } => write!(f, "read {key:?} ?"),
        }
    }
}

/// How a transaction ended, as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; the answer arrived at `returned`.
    Committed { returned: u64 },
    /// Certainly applied nothing (a failed compare, a conflict, a refusal).
    Aborted,
    /// No answer: it may or may not have committed, at any time after its call.
    Unknown,
}

/// One recorded transaction. Times are from one monotonic clock, in any unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub client: u64,
    pub ops: Vec<MicroOp>,
    pub call: u64,
    pub outcome: Outcome,
}

impl Transaction {
    /// The time its answer arrived, when it committed.
    pub fn returned(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Committed { returned } => Some(returned),
            Outcome::Aborted | Outcome::Unknown => None,
        }
    }
}

impl fmt::Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} called {} ", self.client, self.call)?;
        match self.outcome {
            Outcome::Committed { returned } => write!(f, "committed {returned}")?,
            Outcome::Aborted => write!(f, "aborted")?,
            Outcome::Unknown => write!(f, "outcome unknown")?,
        }
        write!(f, ": [")?;
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{op}")?;
        }
        write!(f, "]")
    }
}

/// Prints a list as `[1 2 3]`.
pub(crate) struct List<'a>(pub &'a [u64]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, element) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{element}")?;
        }
        write!(f, "]")
    }
}

/// Checks a list-append history; see the module documentation for what is checked.
pub fn check_list_append(history: &[Transaction]) -> Report {
    let inferred = inference::infer(history);
    let mut report = Report::new(history.len(), inferred.graph_size);
    for anomaly in inferred.anomalies {
        report.push(anomaly);
    }
    let found = cycles::find_cycles(&inferred.graph);
    report.search_truncated = found.truncated;
    for cycle in found.cycles {
        report.push(Anomaly::Cycle {
            kind: cycle.kind,
            steps: cycle
                .steps
                .into_iter()
                .map(|(from, to, edge)| Step {
                    from: TxnId(from),
                    to: TxnId(to),
                    edge,
                    key: inferred.graph.key_of(from, to, edge).map(str::to_string),
                })
                .collect(),
        });
    }
    report.collect_involved(history);
    report
}
