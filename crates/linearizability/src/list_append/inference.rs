//! What a list-append history says without any search: who appended each element, which
//! transactions committed, anomalies visible in single reads (G1a, G1b, duplicates, garbage,
//! internal), each key's version order and the reads incompatible with it, and the dependency
//! graph (ww, wr, rw from the version orders; real-time edges from call and return times).

use super::graph::{Graph, GraphBuilder};
use super::{Anomaly, Edge, List, MicroOp, Outcome, Transaction, TxnId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub(crate) struct Inferred {
    pub(crate) graph: Graph,
    /// Transactions taken as committed.
    pub(crate) graph_size: usize,
    pub(crate) anomalies: Vec<Anomaly>,
}

/// A committed read: who read, which key, what.
struct Read<'a> {
    reader: usize,
    key: &'a str,
    observed: &'a [u64],
}

pub(crate) fn infer(history: &[Transaction]) -> Inferred {
    let mut anomalies = Vec::new();

    // Who appended each element, and each transaction's appends per key in order.
    let mut appenders: BTreeMap<(&str, u64), Vec<usize>> = BTreeMap::new();
    let mut appends_of: HashMap<(usize, &str), Vec<u64>> = HashMap::new();
    for (id, txn) in history.iter().enumerate() {
        for op in &txn.ops {
            if let MicroOp::Append { key, element } = op {
                appenders.entry((key, *element)).or_default().push(id);
                appends_of.entry((id, key)).or_default().push(*element);
            }
        }
    }
    let mut writer: HashMap<(&str, u64), usize> = HashMap::new();
    for ((key, element), writers) in &appenders {
        match writers.as_slice() {
            [only] => {
                writer.insert((key, *element), *only);
            }
            _ => anomalies.push(Anomaly::NotUniqueAppend {
                key: key.to_string(),
                element: *element,
                writers: writers.iter().map(|w| TxnId(*w)).collect(),
            }),
        }
    }

    // Reads of committed transactions: the only observations trusted.
    let reads: Vec<Read> = history
        .iter()
        .enumerate()
        .filter(|(_, txn)| matches!(txn.outcome, Outcome::Committed { .. }))
        .flat_map(|(reader, txn)| {
            txn.ops.iter().filter_map(move |op| match op {
                MicroOp::Read {
                    key,
                    observed: Some(observed),
                } => Some(Read {
                    reader,
                    key,
                    observed,
                }),
                _ => None,
            })
        })
        .collect();

    // Committed, or of unknown outcome with an append someone saw.
    let mut included: Vec<bool> = history
        .iter()
        .map(|txn| matches!(txn.outcome, Outcome::Committed { .. }))
        .collect();
    for read in &reads {
        for element in read.observed {
            if let Some(&w) = writer.get(&(read.key, *element)) {
                if history[w].outcome == Outcome::Unknown {
                    included[w] = true;
                }
            }
        }
    }

    for (id, txn) in history.iter().enumerate() {
        if included[id] {
            check_internal(id, txn, &mut anomalies);
        }
    }
    for read in &reads {
        check_read(
            read,
            history,
            &writer,
            &appenders,
            &appends_of,
            &mut anomalies,
        );
    }

    let mut builder = GraphBuilder::default();
    add_data_edges(
        &reads,
        &appenders,
        &writer,
        &included,
        &mut builder,
        &mut anomalies,
    );
    add_realtime_edges(history, &included, &mut builder);
    Inferred {
        graph: builder.freeze(history.len()),
        graph_size: included.iter().filter(|i| **i).count(),
        anomalies,
    }
}

/// Each read of a transaction must equal what its own earlier reads and appends of that key
/// imply (or, before any read of it, end with its appends).
fn check_internal(id: usize, txn: &Transaction, anomalies: &mut Vec<Anomaly>) {
    // Per key: the list last read (if any), and the elements appended since.
    let mut state: HashMap<&str, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
    for op in &txn.ops {
        match op {
            MicroOp::Append { key, element } => {
                state.entry(key).or_default().1.push(*element);
            }
            MicroOp::Read {
                key,
                observed: Some(observed),
            } => {
                if let Some((known, appended)) = state.get(key.as_str()) {
                    let expected = match known {
                        Some(known) => {
                            let expected: Vec<u64> =
                                known.iter().chain(appended).copied().collect();
                            (observed != &expected).then(|| List(&expected).to_string())
                        }
                        None => (!observed.ends_with(appended))
                            .then(|| format!("a list ending with {}", List(appended))),
                    };
                    if let Some(expected) = expected {
                        anomalies.push(Anomaly::Internal {
                            txn: TxnId(id),
                            key: key.clone(),
                            expected,
                            observed: observed.clone(),
                        });
                    }
                }
                state.insert(key, (Some(observed), Vec::new()));
            }
            MicroOp::Read { observed: None, .. } => {}
        }
    }
}

/// What one read shows alone: duplicates, garbage, aborted reads (G1a), intermediate reads
/// (G1b).
fn check_read(
    read: &Read,
    history: &[Transaction],
    writer: &HashMap<(&str, u64), usize>,
    appenders: &BTreeMap<(&str, u64), Vec<usize>>,
    appends_of: &HashMap<(usize, &str), Vec<u64>>,
    anomalies: &mut Vec<Anomaly>,
) {
    let key = read.key;
    let seen: HashSet<u64> = read.observed.iter().copied().collect();
    let mut counted = HashSet::new();
    let mut intermediate_writers = HashSet::new();
    for &element in read.observed {
        if !counted.insert(element) {
            anomalies.push(Anomaly::DuplicateElement {
                key: key.to_string(),
                element,
                reader: TxnId(read.reader),
            });
            continue;
        }
        if !appenders.contains_key(&(key, element)) {
            anomalies.push(Anomaly::Garbage {
                key: key.to_string(),
                element,
                reader: TxnId(read.reader),
            });
            continue;
        }
        let Some(&w) = writer.get(&(key, element)) else {
            continue; // Not unique: reported already.
        };
        if w == read.reader {
            continue; // Its own appends are checked by `check_internal`.
        }
        if history[w].outcome == Outcome::Aborted {
            anomalies.push(Anomaly::AbortedRead {
                key: key.to_string(),
                element,
                writer: TxnId(w),
                reader: TxnId(read.reader),
            });
            continue;
        }
        let own = &appends_of[&(w, key)];
        let position = own.iter().position(|e| *e == element).expect("its append");
        if let Some(later) = own[position + 1..].iter().find(|e| !seen.contains(e)) {
            if intermediate_writers.insert(w) {
                anomalies.push(Anomaly::IntermediateRead {
                    key: key.to_string(),
                    element,
                    later: *later,
                    writer: TxnId(w),
                    reader: TxnId(read.reader),
                });
            }
        }
    }
}

/// Per key: the version order is the longest read; every read must be a prefix of it. Then
/// ww edges along it, wr from the last visible append a read saw, rw from a read to the next
/// append it did not see. Committed appends no read saw come after the whole order.
fn add_data_edges(
    reads: &[Read],
    appenders: &BTreeMap<(&str, u64), Vec<usize>>,
    writer: &HashMap<(&str, u64), usize>,
    included: &[bool],
    builder: &mut GraphBuilder,
    anomalies: &mut Vec<Anomaly>,
) {
    let mut reads_of: BTreeMap<&str, Vec<&Read>> = BTreeMap::new();
    for read in reads {
        reads_of.entry(read.key).or_default().push(read);
    }
    let committed_writer = |key: &str, element: u64| {
        writer
            .get(&(key, element))
            .copied()
            .filter(|w| included[*w])
    };
    for (key, key_reads) in reads_of {
        // The first of the longest reads.
        let longest = key_reads.iter().fold(key_reads[0], |best, read| {
            if read.observed.len() > best.observed.len() {
                read
            } else {
                best
            }
        });
        let order = longest.observed;
        let ordered: HashSet<u64> = order.iter().copied().collect();

        let mut previous = None;
        for &element in order {
            if let Some(w) = committed_writer(key, element) {
                if let Some(p) = previous {
                    builder.add(p, w, Edge::WriteWrite, Some(key));
                }
                previous = Some(w);
            }
        }
        let unseen: BTreeSet<usize> = appenders
            .range((key, 0)..=(key, u64::MAX))
            .filter(|((_, element), _)| !ordered.contains(element))
            .filter_map(|((_, element), _)| committed_writer(key, *element))
            .collect();
        if let Some(last) = previous {
            for &w in &unseen {
                builder.add(last, w, Edge::WriteWrite, Some(key));
            }
        }

        for read in key_reads {
            let observed = read.observed;
            if let Some(w) = observed
                .iter()
                .rev()
                .find_map(|element| committed_writer(key, *element))
            {
                builder.add(w, read.reader, Edge::WriteRead, Some(key));
            }
            if !order.starts_with(observed) {
                anomalies.push(Anomaly::IncompatibleOrder {
                    key: key.to_string(),
                    reader: TxnId(read.reader),
                    observed: observed.to_vec(),
                    longest_reader: TxnId(longest.reader),
                    longest: order.to_vec(),
                });
                continue;
            }
            // The next append by another transaction than the one whose append the read saw
            // last: a read that saw part of a transaction's appends is G1b, reported already,
            // not also a cycle.
            let last_seen = observed
                .last()
                .and_then(|element| committed_writer(key, *element));
            let next = order[observed.len()..]
                .iter()
                .filter_map(|element| committed_writer(key, *element))
                .find(|w| Some(*w) != last_seen);
            match next {
                Some(w) => builder.add(read.reader, w, Edge::ReadWrite, Some(key)),
                None => {
                    for &w in unseen.iter().filter(|w| Some(**w) != last_seen) {
                        builder.add(read.reader, w, Edge::ReadWrite, Some(key));
                    }
                }
            }
        }
    }
}

/// T1 -> T2 when T1 returned before T2 was called, between committed transactions, reduced
/// as Elle does: a transaction's call links it to the "frontier" (returned transactions not
/// yet known to precede another returned one), and a return removes from the frontier what
/// preceded its call, which stays reachable through it.
fn add_realtime_edges(history: &[Transaction], included: &[bool], builder: &mut GraphBuilder) {
    const CALL: u8 = 0;
    const RETURN: u8 = 1;
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (id, txn) in history.iter().enumerate() {
        if !included[id] {
            continue;
        }
        events.push((txn.call, CALL, id));
        if let Some(returned) = txn.returned() {
            events.push((returned, RETURN, id));
        }
    }
    // At equal times calls come first: returning *before* a call is what makes an edge.
    events.sort_unstable();
    let mut frontier: BTreeSet<usize> = BTreeSet::new();
    let mut frontier_at_call: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, kind, id) in events {
        if kind == CALL {
            for &earlier in &frontier {
                builder.add(earlier, id, Edge::RealTime, None);
            }
            frontier_at_call.insert(id, frontier.iter().copied().collect());
        } else {
            for earlier in frontier_at_call.remove(&id).unwrap_or_default() {
                frontier.remove(&earlier);
            }
            frontier.insert(id);
        }
    }
}
