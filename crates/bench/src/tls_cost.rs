//! The "TLS cost" table of the comparison report: each system measured over TLS
//! (`cairn-tls`, `etcd-tls`, see [`crate::compare`]) set against the same system in plaintext,
//! from the same run of `scripts/bench-compare.sh`, point by point. A pure function over
//! parsed points, like the rest of the report.

use crate::compare::{
    index, ratio, system_title, thousands, workload_order, workload_title, Key, Point, TLS_SUFFIX,
};
use std::fmt::Write;

/// One row per (system, workload, concurrency) measured both in plaintext and over TLS:
/// throughput and p50/p99 latency, off and on, and the throughput ratio. Empty when no
/// system has both.
pub fn render_tls_cost(points: &[Point]) -> String {
    let indexed = index(points);
    let mut rows = String::new();
    // Cairn first, then etcd, then anything else in name order.
    let mut plaintext: Vec<&String> = indexed
        .keys()
        .filter(|system| indexed.contains_key(&format!("{system}{TLS_SUFFIX}")))
        .collect();
    plaintext.sort_by_key(|system| (system.as_str() != "cairn", system.as_str() != "etcd"));
    for system in plaintext {
        let off = &indexed[system];
        let on = &indexed[&format!("{system}{TLS_SUFFIX}")];
        let mut keys: Vec<&Key> = off.keys().filter(|k| on.contains_key(*k)).collect();
        keys.sort_by_key(|(w, c)| (workload_order(w), w.clone(), *c));
        for key in keys {
            let (off, on) = (&off[key], &on[key]);
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {} | **{:.2}×** | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} |",
                system_title(system),
                workload_title(&key.0),
                key.1,
                thousands(off.throughput),
                thousands(on.throughput),
                ratio(on.throughput, off.throughput),
                off.p50,
                on.p50,
                off.p99,
                on.p99,
                off.errors,
                on.errors
            );
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    out.push_str("| system | workload | clients | ops/s TLS off | ops/s TLS on | on ÷ off | p50 ms off | p50 ms on | p99 ms off | p99 ms on | errors off/on |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    out.push_str(&rows);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn point(system: &str, workload: &str, concurrency: u64, throughput: f64, p99: f64) -> Point {
        Point {
            system: system.into(),
            workload: workload.into(),
            concurrency,
            throughput,
            p50: p99 / 4.0,
            p99,
            max: p99 * 2.0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
        }
    }

    #[test]
    fn pairs_each_system_with_itself_over_tls() {
        let points = vec![
            point("etcd", "W", 64, 1000.0, 10.0),
            point("etcd-tls", "W", 64, 900.0, 12.0),
            point("cairn", "C", 64, 4000.0, 4.0),
            point("cairn-tls", "C", 64, 3000.0, 6.0),
            point("cairn", "W", 64, 2000.0, 8.0),
            point("cairn-tls", "W", 64, 1500.0, 10.0),
            // Measured in plaintext only: no row.
            point("cairn", "A", 64, 1800.0, 9.0),
            // Over TLS only: no row.
            point("cairn-tls", "W", 256, 1600.0, 40.0),
        ];
        let table = render_tls_cost(&points);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert_eq!(
            rows[0],
            "| Cairn | W (100% writes) | 64 | 2\u{202f}000 | 1\u{202f}500 | **0.75×** | 2.00 | 2.50 | 8.00 | 10.00 | 0/0 |"
        );
        assert!(
            rows[1].starts_with("| Cairn | C (100% linearizable reads) | 64 | 4\u{202f}000 | 3\u{202f}000 | **0.75×** |"),
            "{table}"
        );
        assert!(
            rows[2].starts_with("| etcd | W (100% writes) | 64 | 1\u{202f}000 | 900 | **0.90×** | 2.50 | 3.00 | 10.00 | 12.00 |"),
            "{table}"
        );
        assert!(table.starts_with("| system | workload | clients | ops/s TLS off |"));
    }

    #[test]
    fn empty_without_a_tls_run() {
        let points = vec![
            point("etcd", "W", 64, 1000.0, 10.0),
            point("cairn", "W", 64, 2000.0, 8.0),
        ];
        assert_eq!(render_tls_cost(&points), "");
    }
}
