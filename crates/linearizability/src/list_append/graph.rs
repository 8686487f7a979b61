//! The dependency graph between transactions: each ordered pair carries the set of edge kinds
//! inferred for it (a bit mask), and for a data edge the key it was inferred from.

use super::Edge;
use std::collections::HashMap;

pub(crate) const WW: u8 = 1;
pub(crate) const WR: u8 = 2;
pub(crate) const RW: u8 = 4;
pub(crate) const RT: u8 = 8;
pub(crate) const DATA: u8 = WW | WR | RW;

pub(crate) fn bit(edge: Edge) -> u8 {
    match edge {
        Edge::WriteWrite => WW,
        Edge::WriteRead => WR,
        Edge::ReadWrite => RW,
        Edge::RealTime => RT,
    }
}

/// The edge a step of a cycle is named by, out of the kinds `labels` has: the weakest claim
/// first (ww, then wr, then rw, then real time), so that a cycle is classified as the most
/// severe anomaly its edges support.
pub(crate) fn name_edge(labels: u8) -> Edge {
    if labels & WW != 0 {
        Edge::WriteWrite
    } else if labels & WR != 0 {
        Edge::WriteRead
    } else if labels & RW != 0 {
        Edge::ReadWrite
    } else {
        assert!(labels & RT != 0, "an edge has a kind");
        Edge::RealTime
    }
}

/// Collects edges, then freezes into a [`Graph`].
#[derive(Default)]
pub(crate) struct GraphBuilder {
    labels: HashMap<(usize, usize), u8>,
    keys: HashMap<(usize, usize, u8), String>,
}

impl GraphBuilder {
    /// Adds an edge `from -> to`; self-edges are dropped (a transaction does not depend on
    /// itself). `key` is the key a data edge was inferred from.
    pub(crate) fn add(&mut self, from: usize, to: usize, edge: Edge, key: Option<&str>) {
        if from == to {
            return;
        }
        let bit = bit(edge);
        *self.labels.entry((from, to)).or_default() |= bit;
        if let Some(key) = key {
            self.keys
                .entry((from, to, bit))
                .or_insert_with(|| key.to_string());
        }
    }

    pub(crate) fn freeze(self, nodes: usize) -> Graph {
        let mut successors = vec![Vec::new(); nodes];
        for ((from, to), labels) in self.labels {
            successors[from].push((to, labels));
        }
        for list in &mut successors {
            list.sort_unstable();
        }
        Graph {
            successors,
            keys: self.keys,
        }
    }
}

/// Transactions are nodes `0..len`, as indexed in the history.
pub(crate) struct Graph {
    successors: Vec<Vec<(usize, u8)>>,
    keys: HashMap<(usize, usize, u8), String>,
}

impl Graph {
    pub(crate) fn len(&self) -> usize {
        self.successors.len()
    }

    /// The successors of `node` with their edge kinds, each successor once, in order.
    pub(crate) fn successors(&self, node: usize) -> &[(usize, u8)] {
        &self.successors[node]
    }

    /// The edge kinds from `from` to `to` (0: none).
    pub(crate) fn labels(&self, from: usize, to: usize) -> u8 {
        let list = &self.successors[from];
        match list.binary_search_by_key(&to, |(target, _)| *target) {
            Ok(i) => list[i].1,
            Err(_) => 0,
        }
    }

    /// The key an edge of kind `edge` from `from` to `to` was inferred from.
    pub(crate) fn key_of(&self, from: usize, to: usize, edge: Edge) -> Option<&str> {
        self.keys.get(&(from, to, bit(edge))).map(String::as_str)
    }
}
