//! Observability of a real local cluster (coordinator, three storage nodes and a gateway as
//! processes):
//! - one put through the SDK becomes one trace, exported over OTLP by the gateway and the nodes
//!   to a receiver in this test, with spans for routing, proposal, log append, replication and
//!   apply;
//! - every binary's /metrics parses and has its key series, and every metric the Grafana
//!   dashboards in deploy/grafana/ query is one a binary really serves;
//! - /livez and /readyz answer on every binary.

use cairn_test_harness::otlp::{hex, render_tree, start_receiver, ReceivedSpan};
use cairn_test_harness::{http_get, sibling_binary, wait_for, Cluster, ClusterSpec};
use opentelemetry::trace::TracerProvider as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 2;

/// Coordinator, three nodes and a gateway; `env` goes to every process.
async fn start_cluster(env: &[(&str, &str)]) -> Cluster {
    let cluster = ClusterSpec::new(Path::new(GATEWAY))
        .nodes(3)
        .shards(SHARDS)
        .gateways(1)
        .env(env)
        .start()
        .await;
    cluster.wait_for_placement(WAIT).await;
    cluster
}

/// An SDK client on gateway 1, once a put through it has succeeded (the count of 21 puts in
/// the metrics test includes this one).
async fn connected_client(cluster: &Cluster) -> cairn_client::Client {
    let address = cluster.gateway(1).address.clone();
    let client = cairn_client::Client::connect(cairn_client::ClientConfig::new([address]))
        .await
        .expect("client");
    wait_for("the gateway serves puts", WAIT, || {
        let client = &client;
        async move { client.put("warm-up", "1").await.ok() }
    })
    .await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_through_the_gateway_is_one_trace_across_gateway_and_nodes() {
    let (receiver, endpoint) = start_receiver("127.0.0.1:0").await;
    let env = [
        ("CAIRN_TRACING__OTLP_ENDPOINT", endpoint.as_str()),
        ("CAIRN_TRACING__SAMPLING_RATIO", "1.0"),
        ("CAIRN_TRACING__EXPORT_INTERVAL_MS", "100"),
    ];
    let cluster = start_cluster(&env).await;

    // This process is the application: its span is the root of the request's trace. Its
    // spans (the root and the SDK's) go to an in-memory exporter; the cluster's spans must
    // join the same trace.
    let app_spans = opentelemetry_sdk::trace::InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(app_spans.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test-app")));
    let dispatch = tracing::Dispatch::new(subscriber);

    // Warm up (connections, shard map) so the traced put is a plain one.
    let client = connected_client(&cluster).await;

    let root_context = {
        let _default = tracing::dispatcher::set_default(&dispatch);
        let root = tracing::info_span!("app.request");
        let root_context =
            cairn_trace_context::TraceParent::of(&root).expect("the application's span is sampled");
        async {
            client
                .put("traced-key", "traced-value")
                .await
                .expect("traced put");
            // A linearizable read in the same request: its read index shows up too.
            client.get("traced-key").await.expect("traced get");
        }
        .instrument(root)
        .await;
        root_context
    };

    // Spans the trace must have: the gateway's routing and call to the leader, the node's
    // request, the proposal, the log append and apply (on every replica), the replication to
    // each follower and the RocksDB write of the apply.
    // (A server's request span is named after the gRPC method.)
    let required = [
        ("cairn-gateway", "/cairn.kv.v1.KV/Put"),
        ("cairn-gateway", "gateway.put"),
        ("cairn-gateway", "gateway.attempt"),
        ("cairn-node", "/cairn.node.v1.ShardKv/Put"),
        ("cairn-node", "node.put"),
        ("cairn-node", "raft.propose"),
        ("cairn-node", "raft.log_append"),
        ("cairn-node", "raft.replicate"),
        ("cairn-node", "raft.apply"),
        ("cairn-node", "rocksdb.write"),
        ("cairn-gateway", "/cairn.kv.v1.KV/Get"),
        ("cairn-node", "raft.read_index"),
    ];
    let trace_id = root_context.trace_id.to_vec();
    let spans = wait_for("the cluster's spans of the traced put", WAIT, || {
        let receiver = receiver.clone();
        let trace_id = trace_id.clone();
        async move {
            let spans: Vec<ReceivedSpan> = receiver
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            let have: BTreeSet<(&str, &str)> = spans
                .iter()
                .map(|s| (s.service.as_str(), s.name.as_str()))
                .collect();
            // Three replicas apply the entry: wait for all of them.
            let applies = spans.iter().filter(|s| s.name == "raft.apply").count();
            (required.iter().all(|r| have.contains(r)) && applies >= 3).then_some(spans)
        }
    })
    .await;
    let mut spans = spans;
    for span in app_spans
        .get_finished_spans()
        .expect("the application's spans")
    {
        spans.push(ReceivedSpan {
            service: "application".into(),
            instance: String::new(),
            start_ns: span
                .start_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            name: span.name.to_string(),
            trace_id: span.span_context.trace_id().to_bytes().to_vec(),
            span_id: span.span_context.span_id().to_bytes().to_vec(),
            parent_span_id: if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
                Vec::new()
            } else {
                span.parent_span_id.to_bytes().to_vec()
            },
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
            duration_us: span
                .end_time
                .duration_since(span.start_time)
                .map_or(0, |d| d.as_micros() as u64),
        });
    }
    let tree = render_tree(&spans, &[]);
    tracing::info!("trace {}:\n{tree}", hex(&trace_id));

    // One tree: the application's span is the root, every other span's parent is in the trace.
    let ids: BTreeSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
    let roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root:\n{tree}");
    assert_eq!(roots[0].span_id, root_context.span_id, "{tree}");
    for span in &spans {
        assert!(
            span.parent_span_id.is_empty() || ids.contains(span.parent_span_id.as_slice()),
            "span {} of {} has a parent outside the trace:\n{tree}",
            span.name,
            span.service
        );
    }
    // The gateway's request span is the child of the SDK's call; the node's request span is
    // the child of the gateway's attempt.
    let by_id: HashMap<&[u8], &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let parent_name = |span: &ReceivedSpan| {
        by_id
            .get(span.parent_span_id.as_slice())
            .map(|p| p.name.clone())
    };
    let gateway_request = spans
        .iter()
        .find(|s| s.service == "cairn-gateway" && s.name == "/cairn.kv.v1.KV/Put")
        .unwrap();
    assert_eq!(
        parent_name(gateway_request).as_deref(),
        Some("cairn.client.put"),
        "{tree}"
    );
    let node_request = spans
        .iter()
        .find(|s| s.service == "cairn-node" && s.name == "/cairn.node.v1.ShardKv/Put")
        .unwrap();
    assert_eq!(
        parent_name(node_request).as_deref(),
        Some("gateway.attempt"),
        "{tree}"
    );
    for name in ["raft.log_append", "raft.replicate", "raft.apply"] {
        for span in spans.iter().filter(|s| s.name == name) {
            assert_eq!(parent_name(span).as_deref(), Some("raft.propose"), "{tree}");
        }
    }
    let replicated_to: BTreeSet<&String> = spans
        .iter()
        .filter(|s| s.name == "raft.replicate")
        .filter_map(|s| s.attributes.get("peer"))
        .collect();
    assert_eq!(
        replicated_to.len(),
        2,
        "the leader replicates to both followers:\n{tree}"
    );

    // Routine internal work (Raft heartbeats and appends, node heartbeats, health probes,
    // background proposals and reads) starts no traces of its own, in this trace or any other.
    let routine: Vec<String> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| {
            s.name.starts_with("/cairn.raft.v1.")
                || s.name.starts_with("/grpc.health.")
                || s.name.ends_with("/Heartbeat")
                // Background Raft work (the coordinator's metadata reads and writes) joins a
                // request's trace or none.
                || (s.name.starts_with("raft.") && s.parent_span_id.is_empty())
        })
        .map(|s| format!("{} [{}]", s.name, s.service))
        .collect();
    assert!(routine.is_empty(), "routine RPCs were traced: {routine:?}");

    // The SDK's call span is the application span's child.
    let client_span = spans
        .iter()
        .find(|s| s.name == "cairn.client.put")
        .expect("the SDK's span");
    assert_eq!(client_span.parent_span_id, root_context.span_id, "{tree}");
}

/// Parses the Prometheus text format into `name{labels} -> value`, failing on a malformed
/// line (so a broken exposition fails the test rather than passing as "no series").
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in metrics line {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            !metric.is_empty()
                && metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        series.insert(name.to_string(), value);
    }
    series
}

/// Metric names (without labels) in a parsed exposition.
fn names(series: &BTreeMap<String, f64>) -> BTreeSet<String> {
    series
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect()
}

/// Metric names queried by the dashboards in deploy/grafana/ (histogram and counter suffixes
/// kept: the exposition has them too).
fn dashboard_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana");
    let mut by_dashboard = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/grafana exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let mut exprs = Vec::new();
        collect_exprs(&json, &mut exprs);
        assert!(!exprs.is_empty(), "{} queries nothing", path.display());
        let mut metrics = BTreeSet::new();
        for expr in exprs {
            let mut current = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    current.push(c);
                } else {
                    if current.starts_with("cairn_") {
                        metrics.insert(current.clone());
                    }
                    current.clear();
                }
            }
        }
        by_dashboard.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            metrics,
        );
    }
    by_dashboard
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_serves_metrics_and_health_and_the_dashboards_query_real_series() {
    let cluster = start_cluster(&[]).await;
    let client = connected_client(&cluster).await;
    for i in 0..20 {
        client.put(format!("metrics/{i}"), "v").await.expect("put");
        client.get(format!("metrics/{i}")).await.expect("get");
    }

    let scrape = |address: String| async move {
        let (status, body) = http_get(&address, "/metrics").await?;
        (status == 200).then(|| parse_metrics(&body))
    };
    let gateway = scrape(cluster.gateway(1).metrics_address.clone())
        .await
        .expect("gateway /metrics");
    let coordinator = wait_for("the coordinator's leader gauges", WAIT, || {
        let address = cluster.coordinator(1).metrics_address.clone();
        async move {
            let series = scrape(address).await?;
            (series.get("cairn_coordinator_is_leader") == Some(&1.0)).then_some(series)
        }
    })
    .await;
    let mut nodes = Vec::new();
    for id in cluster.node_ids() {
        nodes.push(
            scrape(cluster.node(id).metrics_address.clone())
                .await
                .expect("node /metrics"),
        );
    }

    tracing::info!("--- key series of each binary");
    let has = |series: &BTreeMap<String, f64>, what: &str, prefix: &str| {
        assert!(
            series.keys().any(|k| k.starts_with(prefix)),
            "{what} has no {prefix}: {:#?}",
            names(series)
        );
    };
    for prefix in [
        r#"cairn_grpc_requests_total{code="0",method="/cairn.kv.v1.KV/Put"}"#,
        r#"cairn_grpc_request_duration_seconds_bucket{method="/cairn.kv.v1.KV/Get""#,
        r#"cairn_gateway_retries_total{cause="not_leader"}"#,
        "cairn_gateway_shard_map_version",
    ] {
        has(&gateway, "gateway", prefix);
    }
    for prefix in [
        r#"cairn_coordinator_nodes{state="up"}"#,
        "cairn_coordinator_under_replicated_shards",
        "cairn_coordinator_moves_in_flight",
        "cairn_coordinator_shard_map_version",
        "cairn_grpc_requests_total",
    ] {
        has(&coordinator, "coordinator", prefix);
    }
    assert_eq!(coordinator[r#"cairn_coordinator_nodes{state="up"}"#], 3.0);
    for (i, node) in nodes.iter().enumerate() {
        let what = format!("node {}", i + 1);
        for prefix in [
            r#"cairn_grpc_requests_total{code="0",method="/cairn.raft.v1."#,
            r#"cairn_shard_term{shard="0"}"#,
            r#"cairn_shard_applied_index{shard="1"}"#,
            "cairn_shard_committed_index",
            "cairn_shard_is_leader",
            "cairn_shard_proposals_total",
            "cairn_shard_elections_total",
            "cairn_shard_snapshots_sent_total",
            "cairn_shard_snapshots_installed_total",
            "cairn_group_commit_fsync_duration_seconds_bucket",
            r#"cairn_rocksdb_sst_bytes{cf="write"}"#,
            "cairn_rocksdb_pending_compaction_bytes",
            "cairn_node_replicas",
        ] {
            has(node, &what, prefix);
        }
    }
    assert!(
        nodes.iter().any(|n| n.keys().any(|k| k.starts_with(
            r#"cairn_grpc_requests_total{code="0",method="/cairn.node.v1.ShardKv/Put"}"#
        ))),
        "some node served the puts"
    );
    // Every put was proposed on some shard leader and fsynced there.
    let proposals: f64 = nodes
        .iter()
        .flat_map(|n| n.iter())
        .filter(|(k, _)| k.starts_with("cairn_shard_proposals_total"))
        .map(|(_, v)| v)
        .sum();
    assert!(proposals >= 21.0, "21 puts, {proposals} proposals counted");

    tracing::info!("--- every metric a dashboard queries is served by some binary");
    let mut served = names(&gateway);
    served.extend(names(&coordinator));
    for node in &nodes {
        served.extend(names(node));
    }
    let dashboards = dashboard_metrics();
    for expected in [
        "cluster-overview.json",
        "shard-health.json",
        "request-latency.json",
    ] {
        assert!(
            dashboards.contains_key(expected),
            "deploy/grafana/{expected} is missing"
        );
    }
    for (dashboard, metrics) in &dashboards {
        let unknown: Vec<&String> = metrics.iter().filter(|m| !served.contains(*m)).collect();
        assert!(
            unknown.is_empty(),
            "{dashboard} queries metrics no binary serves: {unknown:?}"
        );
    }

    tracing::info!("--- /livez and /readyz");
    let mut addresses = vec![
        cluster.gateway(1).metrics_address.clone(),
        cluster.coordinator(1).metrics_address.clone(),
    ];
    addresses.extend(
        cluster
            .node_ids()
            .into_iter()
            .map(|id| cluster.node(id).metrics_address.clone()),
    );
    for address in addresses {
        for path in ["/livez", "/readyz"] {
            let (status, _) = http_get(&address, path).await.expect("health endpoint");
            assert_eq!(status, 200, "{address}{path}");
        }
    }
}

/// `--check-config` on each real binary: a valid configuration (the sample in deploy/config/)
/// prints `configuration OK` and exits 0; a bad value exits non-zero naming the field and the
/// allowed range; an unknown key in the file warns and is ignored.
#[test]
fn every_binary_checks_its_configuration_and_names_a_bad_field() {
    let gateway = Path::new(GATEWAY);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
    let dir = tempfile::tempdir().unwrap();
    for (binary, sample) in [
        ("cairn-node", "node.toml"),
        ("cairn-coordinator", "coordinator.toml"),
        ("cairn-gateway", "gateway.toml"),
    ] {
        let binary = sibling_binary(gateway, binary);
        let run = |file: &Path, env: &[(&str, &str)]| {
            let mut command = std::process::Command::new(&binary);
            command
                .arg("--check-config")
                .arg(format!("--config={}", file.display()));
            for (name, value) in env {
                command.env(name, value);
            }
            let output = command.output().expect("run the binary");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let sample = samples.join(sample);
        let (ok, stdout, stderr) = run(&sample, &[]);
        assert!(
            ok && stdout.contains("configuration OK"),
            "{}: {stdout}{stderr}",
            binary.display()
        );
        assert!(!stderr.contains("unknown configuration key"), "{stderr}");

        let (ok, _, stderr) = run(&sample, &[("CAIRN_TRACING__SAMPLING_RATIO", "7")]);
        assert!(
            !ok,
            "{}: a sampling ratio of 7 was accepted",
            binary.display()
        );
        assert!(
            stderr.contains("tracing.sampling_ratio") && stderr.contains("0.0..=1.0"),
            "{}: {stderr}",
            binary.display()
        );

        let with_typo = dir.path().join("typo.toml");
        let text = std::fs::read_to_string(&sample).unwrap();
        std::fs::write(&with_typo, format!("metrics_listen_adress = \"x\"\n{text}")).unwrap();
        let (ok, _, stderr) = run(&with_typo, &[]);
        assert!(
            ok,
            "{}: an unknown key must not fail: {stderr}",
            binary.display()
        );
        assert!(
            stderr.contains("unknown configuration key `metrics_listen_adress`"),
            "{}: {stderr}",
            binary.display()
        );
    }
}
