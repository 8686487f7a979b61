//! What the list-append checker reports: the anomalies, with the transactions they name, and
//! how they print.

use super::{List, Transaction, TxnId};
use std::collections::BTreeMap;
use std::fmt;

/// Anomalies kept per kind; more are counted, not kept (a stale replica can make thousands).
pub const ANOMALIES_PER_KIND_MAX: usize = 16;

/// A dependency between two transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Edge {
    /// The first appended the element just before the second's (write-write).
    WriteWrite,
    /// The second read a list ending with the first's element (write-read).
    WriteRead,
    /// The first read a list lacking the second's element, which came later (read-write,
    /// an anti-dependency).
    ReadWrite,
    /// The first returned before the second was called.
    RealTime,
}

impl Edge {
    fn short(self) -> &'static str {
        match self {
            Edge::WriteWrite => "ww",
            Edge::WriteRead => "wr",
            Edge::ReadWrite => "rw",
            Edge::RealTime => "rt",
        }
    }
}

/// Adya's classes of dependency cycles; the `Realtime` ones need a real-time edge, so they
/// violate strict serializability but not serializability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CycleKind {
    /// Write-write edges only.
    G0,
    /// Write-write and write-read edges.
    G1c,
    /// Exactly one read-write edge.
    GSingle,
    /// Two or more read-write edges.
    G2,
    G0Realtime,
    G1cRealtime,
    GSingleRealtime,
    G2Realtime,
}

impl CycleKind {
    pub fn name(self) -> &'static str {
        match self {
            CycleKind::G0 => "G0",
            CycleKind::G1c => "G1c",
            CycleKind::GSingle => "G-single",
            CycleKind::G2 => "G2",
            CycleKind::G0Realtime => "G0-realtime",
            CycleKind::G1cRealtime => "G1c-realtime",
            CycleKind::GSingleRealtime => "G-single-realtime",
            CycleKind::G2Realtime => "G2-realtime",
        }
    }
}

/// One edge of a reported cycle; `key` names the key the edge was inferred from (none for a
/// real-time edge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub from: TxnId,
    pub to: TxnId,
    pub edge: Edge,
    pub key: Option<String>,
}

/// One anomaly, naming the transactions involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// A dependency cycle; `steps` go around it once.
    Cycle { kind: CycleKind, steps: Vec<Step> },
    /// G1a: `reader` saw `element`, appended by `writer`, which aborted.
    AbortedRead {
        key: String,
        element: u64,
        writer: TxnId,
        reader: TxnId,
    },
    /// G1b: `reader` saw `element` but not `later`, which `writer` appended to the same key
    /// after it: an intermediate state of `writer`.
    IntermediateRead {
        key: String,
        element: u64,
        later: u64,
        writer: TxnId,
        reader: TxnId,
    },
    /// One read holds `element` twice.
    DuplicateElement {
        key: String,
        element: u64,
        reader: TxnId,
    },
    /// A read holds an element that no transaction appended to that key.
    Garbage {
        key: String,
        element: u64,
        reader: TxnId,
    },
    /// `reader`'s list is not a prefix of `longest`, the key's longest read: no single order
    /// of appends explains both.
    IncompatibleOrder {
        key: String,
        reader: TxnId,
        observed: Vec<u64>,
        longest_reader: TxnId,
        longest: Vec<u64>,
    },
    /// A read disagrees with what the same transaction read and appended before it.
    Internal {
        txn: TxnId,
        key: String,
        expected: String,
        observed: Vec<u64>,
    },
    /// The history is malformed: `element` was appended to `key` by several transactions.
    NotUniqueAppend {
        key: String,
        element: u64,
        writers: Vec<TxnId>,
    },
}

impl Anomaly {
    /// The anomaly's class, as Elle names it where Elle has a name.
    pub fn name(&self) -> &'static str {
        match self {
            Anomaly::Cycle { kind, .. } => kind.name(),
            Anomaly::AbortedRead { .. } => "G1a",
            Anomaly::IntermediateRead { .. } => "G1b",
            Anomaly::DuplicateElement { .. } => "duplicate-element",
            Anomaly::Garbage { .. } => "garbage-read",
            Anomaly::IncompatibleOrder { .. } => "incompatible-order",
            Anomaly::Internal { .. } => "internal",
            Anomaly::NotUniqueAppend { .. } => "not-unique-append",
        }
    }

    /// Every transaction the anomaly names.
    pub fn transactions(&self) -> Vec<TxnId> {
        match self {
            Anomaly::Cycle { steps, .. } => steps.iter().map(|step| step.from).collect(),
            Anomaly::AbortedRead { writer, reader, .. }
            | Anomaly::IntermediateRead { writer, reader, .. } => vec![*writer, *reader],
            Anomaly::DuplicateElement { reader, .. } | Anomaly::Garbage { reader, .. } => {
                vec![*reader]
            }
            Anomaly::IncompatibleOrder {
                reader,
                longest_reader,
                ..
            } => vec![*reader, *longest_reader],
            Anomaly::Internal { txn, .. } => vec![*txn],
            Anomaly::NotUniqueAppend { writers, .. } => writers.clone(),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            Anomaly::Cycle { steps, .. } => {
                for step in steps {
                    write!(f, "{} -{}", step.from, step.edge.short())?;
                    if let Some(key) = &step.key {
                        write!(f, "({key:?})")?;
                    }
                    write!(f, "-> ")?;
                }
                match steps.first() {
                    Some(first) => write!(f, "{}", first.from),
                    None => Ok(()),
                }
            }
            Anomaly::AbortedRead {
                key,
                element,
                writer,
                reader,
            } => write!(
                f,
                "{reader} read {element} of {key:?}, appended by {writer}, which aborted"
            ),
            Anomaly::IntermediateRead {
                key,
                element,
                later,
                writer,
                reader,
            } => write!(
                f,
                "{reader} read {element} of {key:?} without {later}, which {writer} appended after it"
            ),
            Anomaly::DuplicateElement {
                key,
                element,
                reader,
            } => write!(f, "{reader} read {element} twice in {key:?}"),
            Anomaly::Garbage {
                key,
                element,
                reader,
            } => write!(f, "{reader} read {element} in {key:?}, which nobody appended"),
            Anomaly::IncompatibleOrder {
                key,
                reader,
                observed,
                longest_reader,
                longest,
            } => write!(
                f,
                "{reader} read {key:?} as {}, not a prefix of {longest_reader}'s {}",
                List(observed),
                List(longest)
            ),
            Anomaly::Internal {
                txn,
                key,
                expected,
                observed,
            } => write!(
                f,
                "{txn} read {key:?} as {} where its own earlier ops imply {expected}",
                List(observed)
            ),
            Anomaly::NotUniqueAppend {
                key,
                element,
                writers,
            } => {
                write!(f, "{element} appended to {key:?} by")?;
                for writer in writers {
                    write!(f, " {writer}")?;
                }
                Ok(())
            }
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Transactions in the history.
    pub transactions: usize,
    /// Transactions taken as committed (including unknown ones whose appends were seen).
    pub committed: usize,
    /// Anomalies found, at most [`ANOMALIES_PER_KIND_MAX`] of each kind.
    pub anomalies: Vec<Anomaly>,
    /// How many anomalies of each kind were found, kept or not.
    pub counts: BTreeMap<&'static str, usize>,
    /// Every transaction a kept anomaly names.
    pub involved: BTreeMap<TxnId, Transaction>,
    /// The cycle search ran out of steps: some cycles may be classified weaker than they are.
    pub search_truncated: bool,
}

impl Report {
    pub(crate) fn new(transactions: usize, committed: usize) -> Self {
        Report {
            transactions,
            committed,
            ..Default::default()
        }
    }

    pub(crate) fn push(&mut self, anomaly: Anomaly) {
        let count = self.counts.entry(anomaly.name()).or_default();
        *count += 1;
        if *count <= ANOMALIES_PER_KIND_MAX {
            self.anomalies.push(anomaly);
        }
    }

    pub(crate) fn collect_involved(&mut self, history: &[Transaction]) {
        for anomaly in &self.anomalies {
            for id in anomaly.transactions() {
                self.involved.insert(id, history[id.0].clone());
            }
        }
    }

    /// No anomaly found.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Whether an anomaly of this name (see [`Anomaly::name`]) was found.
    pub fn has(&self, name: &str) -> bool {
        self.counts.contains_key(name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} transactions, {} taken as committed: ",
            self.transactions, self.committed
        )?;
        if self.is_valid() {
            return writeln!(f, "no anomaly");
        }
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(name, count)| format!("{count} {name}"))
            .collect();
        writeln!(f, "{}", counts.join(", "))?;
        if self.search_truncated {
            writeln!(
                f,
                "(cycle search truncated: classes may be weaker than the truth)"
            )?;
        }
        for anomaly in &self.anomalies {
            writeln!(f, "  {anomaly}")?;
        }
        writeln!(f, "where")?;
        for (id, transaction) in &self.involved {
            writeln!(f, "  {id}: {transaction}")?;
        }
        Ok(())
    }
}
