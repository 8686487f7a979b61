//! cairnctl's traces against a real local cluster (coordinator, three nodes, a gateway), all
//! exporting to an OTLP receiver in this test with every new trace sampled:
//! - a `cairnctl cluster status` is one trace from the command's span through the gateway's
//!   `Cluster/Status` to the coordinator's `ClusterStatus`;
//! - the cluster's start-up and placement (joins, shard-map watches and fetches, replica
//!   creation, shard initialization, leader transfers) start no traces of their own: every
//!   trace the receiver gets begins at a client's request.

use cairn_test_harness::otlp::{hex, render_tree, start_receiver, ReceivedSpan};
use cairn_test_harness::{wait_for, ClusterSpec};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

const CAIRNCTL: &str = env!("CARGO_BIN_EXE_cairnctl");
const WAIT: Duration = Duration::from_secs(90);

/// Runs cairnctl with `env` added to its environment; returns its exit code and stderr.
async fn cairnctl(env: Vec<(String, String)>, args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(CAIRNCTL)
            .envs(env)
            .args(args)
            .output()
            .expect("run cairnctl");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("cairnctl ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cairnctl_command_is_one_trace_and_internal_work_starts_none() {
    let (receiver, endpoint) = start_receiver("127.0.0.1:0").await;
    let env = [
        ("CAIRN_TRACING__OTLP_ENDPOINT", endpoint.as_str()),
        ("CAIRN_TRACING__SAMPLING_RATIO", "1.0"),
        ("CAIRN_TRACING__EXPORT_INTERVAL_MS", "100"),
    ];
    let cluster = ClusterSpec::new(Path::new(CAIRNCTL))
        .nodes(3)
        .shards(2)
        .gateways(1)
        .env(&env)
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let args: Vec<String> = [
        "--endpoints",
        cluster.gateway(1).address.as_str(),
        "--timeout",
        "20s",
        "cluster",
        "status",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();

    tracing::info!("--- cairnctl cluster status, exporting its trace");
    let (code, stderr) = cairnctl(env, args).await;
    assert_eq!(code, 0, "{stderr}");

    let required = [
        ("cairnctl", "cairnctl cluster status"),
        ("cairnctl", "cairn.client.cluster status"),
        ("cairn-gateway", "/cairn.kv.v1.Cluster/Status"),
        (
            "cairn-coordinator",
            "/cairn.coordinator.v1.Coordinator/ClusterStatus",
        ),
    ];
    let spans = wait_for("the spans of the command's trace", WAIT, || {
        let receiver = receiver.clone();
        async move {
            let all = receiver.spans.lock().unwrap().clone();
            let root = all
                .iter()
                .find(|span| span.service == "cairnctl" && span.parent_span_id.is_empty())?;
            let trace: Vec<ReceivedSpan> = all
                .iter()
                .filter(|span| span.trace_id == root.trace_id)
                .cloned()
                .collect();
            let have: BTreeSet<(&str, &str)> = trace
                .iter()
                .map(|span| (span.service.as_str(), span.name.as_str()))
                .collect();
            required
                .iter()
                .all(|wanted| have.contains(wanted))
                .then_some(trace)
        }
    })
    .await;
    let tree = render_tree(&spans, &[]);
    tracing::info!("trace {}:\n{tree}", hex(&spans[0].trace_id));

    tracing::info!("--- one tree, rooted at the command");
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root:\n{tree}");
    assert_eq!(roots[0].name, "cairnctl cluster status", "{tree}");
    let by_id: HashMap<&[u8], &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.span_id.as_slice(), span))
        .collect();
    let parent_name = |name: &str| {
        let span = spans.iter().find(|span| span.name == name).unwrap();
        by_id
            .get(span.parent_span_id.as_slice())
            .map(|parent| parent.name.clone())
    };
    assert_eq!(
        parent_name("/cairn.kv.v1.Cluster/Status").as_deref(),
        Some("cairn.client.cluster status"),
        "{tree}"
    );
    assert_eq!(
        parent_name("/cairn.coordinator.v1.Coordinator/ClusterStatus").as_deref(),
        Some("/cairn.kv.v1.Cluster/Status"),
        "the gateway's call to the coordinator carries the request's context:\n{tree}"
    );

    tracing::info!("--- start-up and placement started no trace");
    let internal_roots: Vec<String> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .filter(|span| !span.name.starts_with("/cairn.kv.v1.") && span.service != "cairnctl")
        .map(|span| format!("{} [{}]", span.name, span.service))
        .collect();
    assert!(
        internal_roots.is_empty(),
        "internal work started traces: {internal_roots:?}"
    );
}
