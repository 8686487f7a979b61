//! Cycle detection in the dependency graph: Tarjan's strongly connected components, then in
//! each component a short cycle found by breadth-first search over a ladder of edge kinds, so
//! that the cycle reported is the most severe class the component holds (G0 before G1c before
//! G-single before G2). Components of data edges (ww, wr, rw) violate serializability; a
//! component that needs real-time edges to close violates strict serializability only, and is
//! searched the same way with real-time edges allowed.

use super::graph::{name_edge, Graph, DATA, RT, RW, WR, WW};
use super::{CycleKind, Edge};
use std::collections::{HashMap, HashSet, VecDeque};

/// Edges the search for G-single cycles may examine over the whole history (one
/// breadth-first search per read-write edge in a component); past it, a component is reported
/// with the shortest cycle of any class.
pub const SEARCH_STEPS_MAX: usize = 5_000_000;
/// Start nodes tried for the shortest cycle in a component.
const CYCLE_STARTS_MAX: usize = 8;

/// One cycle: `steps` go around once, each `(from, to, edge)`.
pub(crate) struct FoundCycle {
    pub(crate) kind: CycleKind,
    pub(crate) steps: Vec<(usize, usize, Edge)>,
}

#[derive(Default)]
pub(crate) struct Found {
    pub(crate) cycles: Vec<FoundCycle>,
    /// The step budget ran out.
    pub(crate) truncated: bool,
}

/// One cycle per strongly connected component of data edges, then one per component of the
/// whole graph that holds no data cycle (a real-time cycle).
pub(crate) fn find_cycles(graph: &Graph) -> Found {
    let all: Vec<usize> = (0..graph.len()).collect();
    let mut budget = SEARCH_STEPS_MAX;
    let mut found = Found::default();
    for component in components(graph, &all, DATA) {
        found
            .cycles
            .extend(classify(graph, &component, 0, &mut budget));
    }
    for component in components(graph, &all, DATA | RT) {
        if components(graph, &component, DATA).is_empty() {
            found
                .cycles
                .extend(classify(graph, &component, RT, &mut budget));
        }
    }
    found.truncated = budget == 0;
    found
}

/// The most severe cycle in a strongly connected `component`, over data edges plus `extra`.
fn classify(
    graph: &Graph,
    component: &[usize],
    extra: u8,
    budget: &mut usize,
) -> Option<FoundCycle> {
    for mask in [WW | extra, WW | WR | extra] {
        if let Some(sub) = components(graph, component, mask).first() {
            return Some(name_cycle(graph, &shortest_cycle(graph, sub, mask), mask));
        }
    }
    // G-single: a read-write edge a -> b closed by a path b -> a without read-write edges.
    let members: HashSet<usize> = component.iter().copied().collect();
    let closing = WW | WR | extra;
    'search: for &a in component {
        for &(b, labels) in graph.successors(a) {
            if labels & RW == 0 || !members.contains(&b) {
                continue;
            }
            if *budget == 0 {
                break 'search;
            }
            if let Some(path) = shortest_path(graph, b, a, &members, closing, budget) {
                let mut cycle = vec![a];
                cycle.extend(path);
                return Some(name_cycle(graph, &cycle, closing | RW));
            }
        }
    }
    let mask = DATA | extra;
    let sub = components(graph, component, mask).into_iter().next()?;
    Some(name_cycle(graph, &shortest_cycle(graph, &sub, mask), mask))
}

/// Names each step of `cycle` (nodes, first == last) by its weakest kind within `mask`, and
/// the cycle by its steps.
fn name_cycle(graph: &Graph, cycle: &[usize], mask: u8) -> FoundCycle {
    let steps: Vec<(usize, usize, Edge)> = cycle
        .windows(2)
        .map(|pair| {
            let labels = graph.labels(pair[0], pair[1]) & mask;
            (pair[0], pair[1], name_edge(labels))
        })
        .collect();
    let count = |edge: Edge| steps.iter().filter(|(_, _, e)| *e == edge).count();
    let realtime = count(Edge::RealTime) > 0;
    let kind = match (count(Edge::ReadWrite), count(Edge::WriteRead) > 0, realtime) {
        (0, false, false) => CycleKind::G0,
        (0, true, false) => CycleKind::G1c,
        (1, _, false) => CycleKind::GSingle,
        (_, _, false) => CycleKind::G2,
        (0, false, true) => CycleKind::G0Realtime,
        (0, true, true) => CycleKind::G1cRealtime,
        (1, _, true) => CycleKind::GSingleRealtime,
        (_, _, true) => CycleKind::G2Realtime,
    };
    FoundCycle { kind, steps }
}

/// The shortest cycle found from a few start nodes of the strongly connected `component`
/// (every node of it lies on a cycle within it), as nodes with first == last.
fn shortest_cycle(graph: &Graph, component: &[usize], mask: u8) -> Vec<usize> {
    let members: HashSet<usize> = component.iter().copied().collect();
    component
        .iter()
        .take(CYCLE_STARTS_MAX)
        .filter_map(|&start| {
            let mut unbounded = usize::MAX;
            shortest_path(graph, start, start, &members, mask, &mut unbounded)
        })
        .min_by_key(Vec::len)
        .expect("every node of a strongly connected component is on a cycle")
}

/// The shortest path `from -> .. -> to` of at least one edge, over edges meeting `mask` and
/// nodes in `members`; `None` if there is none or `budget` (edges examined) runs out.
fn shortest_path(
    graph: &Graph,
    from: usize,
    to: usize,
    members: &HashSet<usize>,
    mask: u8,
    budget: &mut usize,
) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for &(next, labels) in graph.successors(node) {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            if labels & mask == 0 || !members.contains(&next) {
                continue;
            }
            if next == to {
                let mut path = vec![to, node];
                let mut current = node;
                while current != from {
                    current = parent[&current];
                    path.push(current);
                }
                path.reverse();
                return Some(path);
            }
            if next != from && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The strongly connected components of more than one node of the subgraph induced by
/// `nodes`, over edges meeting `mask` (Tarjan's algorithm, iterative: histories are deep).
pub(crate) fn components(graph: &Graph, nodes: &[usize], mask: u8) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let local: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let count = nodes.len();
    let mut index = vec![UNVISITED; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut result = Vec::new();
    for root in 0..count {
        if index[root] != UNVISITED {
            continue;
        }
        // Each frame: a node and how many of its successors have been looked at.
        let mut frames = vec![(root, 0usize)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(node, position)) = frames.last() {
            let successors = graph.successors(nodes[node]);
            if position < successors.len() {
                frames.last_mut().expect("a frame").1 += 1;
                let (target, labels) = successors[position];
                if labels & mask == 0 {
                    continue;
                }
                let Some(&next) = local.get(&target) else {
                    continue;
                };
                if index[next] == UNVISITED {
                    index[next] = next_index;
                    low[next] = next_index;
                    next_index += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    frames.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            frames.pop();
            if let Some(&(parent, _)) = frames.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("a component's nodes are on the stack");
                    on_stack[member] = false;
                    component.push(nodes[member]);
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort_unstable();
                    result.push(component);
                }
            }
        }
    }
    result
}
