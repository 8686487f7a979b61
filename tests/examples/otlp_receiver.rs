//! A stand-alone OTLP/gRPC trace receiver that prints every trace as a tree: a stand-in for
//! Jaeger when looking at Cairn's traces on a development machine.
//!
//! ```sh
//! cargo run -p cairn-test-harness --example otlp_receiver -- 127.0.0.1:4317 &
//! CAIRN_TRACING__OTLP_ENDPOINT=http://127.0.0.1:4317 CAIRN_TRACING__SAMPLING_RATIO=1.0 \
//!     ./scripts/local-cluster.sh
//! ```
//!
//! A trace is printed once no new span of it has arrived for two seconds. It stops by itself
//! after `--seconds` (default 600).

use cairn_test_harness::otlp::{hex, render_tree, start_receiver};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let address = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4317".into());
    let lifetime = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(600), Duration::from_secs);
    let (receiver, endpoint) = start_receiver(&address).await;
    eprintln!("receiving OTLP traces at {endpoint} for {lifetime:?}");
    let started = Instant::now();
    let mut printed: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut last_growth: HashMap<Vec<u8>, (usize, Instant)> = HashMap::new();
    while started.elapsed() < lifetime {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spans = receiver.spans.lock().expect("receiver lock").clone();
        let mut by_trace: HashMap<Vec<u8>, Vec<_>> = HashMap::new();
        for span in spans {
            by_trace
                .entry(span.trace_id.clone())
                .or_default()
                .push(span);
        }
        for (trace, spans) in by_trace {
            if printed.contains(&trace) {
                continue;
            }
            let entry = last_growth
                .entry(trace.clone())
                .or_insert((spans.len(), Instant::now()));
            if entry.0 != spans.len() {
                *entry = (spans.len(), Instant::now());
            } else if entry.1.elapsed() > Duration::from_secs(2) {
                // Top spans: those whose parent is not in the trace (a remote application's).
                let ids: BTreeSet<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
                let mut roots: BTreeSet<Vec<u8>> = BTreeSet::new();
                for span in &spans {
                    if !ids.contains(&span.parent_span_id) {
                        roots.insert(span.parent_span_id.clone());
                    }
                }
                println!("trace {} ({} spans)", hex(&trace), spans.len());
                for root in roots {
                    print!("{}", render_tree(&spans, &root));
                }
                printed.insert(trace);
            }
        }
    }
}
