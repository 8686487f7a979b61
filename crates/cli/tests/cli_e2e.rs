//! cairnctl against a real local cluster (coordinator, three nodes, a gateway): every
//! command's output and exit code, run as a separate process the way a person runs it.

use cairn_test_harness::{wait_for, ClusterSpec, ProcessId};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CAIRNCTL: &str = env!("CARGO_BIN_EXE_cairnctl");
const WAIT: Duration = Duration::from_secs(90);

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cairnctl(endpoint: &str, args: &[&str]) -> Outcome {
    let output = Command::new(CAIRNCTL)
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--timeout")
        .arg("20s")
        .args(args)
        .output()
        .expect("run cairnctl");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnctl_commands_print_results_and_exit_with_meaningful_codes() {
    let mut cluster = ClusterSpec::new(Path::new(CAIRNCTL))
        .nodes(3)
        .shards(4)
        .gateways(1)
        .start()
        .await;
    let gateway = cluster.gateway(1).address.clone();
    wait_for("the cluster to take writes through cairnctl", WAIT, || {
        let gateway = gateway.clone();
        async move { (cairnctl(&gateway, &["put", "probe", "1"]).code == 0).then_some(()) }
    })
    .await;

    tracing::info!("--- put, get (table and json), missing key");
    let put = cairnctl(&gateway, &["put", "greeting", "hello"]);
    assert_eq!(put.code, 0, "{}", put.stderr);
    let got = cairnctl(&gateway, &["get", "greeting"]);
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(
        got.stdout.contains("greeting") && got.stdout.contains("hello"),
        "{}",
        got.stdout
    );
    let json = cairnctl(&gateway, &["--output", "json", "get", "greeting"]);
    assert_eq!(json.code, 0);
    assert!(json.stdout.contains("\"hello\""), "{}", json.stdout);
    let missing = cairnctl(&gateway, &["get", "no-such-key"]);
    assert_eq!(missing.code, 3, "a missing key exits 3");

    tracing::info!("--- put-if-absent and compare-and-set");
    let refused = cairnctl(&gateway, &["txn", "put-if-absent", "greeting", "other"]);
    assert_eq!(
        refused.code, 4,
        "a condition that does not hold exits 4: {}",
        refused.stdout
    );
    let created = cairnctl(&gateway, &["txn", "put-if-absent", "lock", "me"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    let stale = cairnctl(
        &gateway,
        &[
            "txn",
            "cas",
            "greeting",
            "--value",
            "bye",
            "--expect-value",
            "nope",
        ],
    );
    assert_eq!(stale.code, 4);
    let swapped = cairnctl(
        &gateway,
        &[
            "txn",
            "cas",
            "greeting",
            "--value",
            "bye",
            "--expect-value",
            "hello",
        ],
    );
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert!(cairnctl(&gateway, &["get", "greeting"])
        .stdout
        .contains("bye"));

    tracing::info!("--- scan a prefix across shards; delete");
    for i in 0..5 {
        assert_eq!(
            cairnctl(&gateway, &["put", &format!("fruit/{i}"), "x"]).code,
            0
        );
    }
    let scan = cairnctl(&gateway, &["scan", "--prefix", "fruit/"]);
    assert_eq!(scan.code, 0, "{}", scan.stderr);
    for i in 0..5 {
        assert!(
            scan.stdout.contains(&format!("fruit/{i}")),
            "{}",
            scan.stdout
        );
    }
    let counted = cairnctl(
        &gateway,
        &["--output", "json", "scan", "--prefix", "fruit/", "--count"],
    );
    assert!(counted.stdout.contains('5'), "{}", counted.stdout);
    assert_eq!(cairnctl(&gateway, &["del", "fruit/0"]).code, 0);
    assert_eq!(cairnctl(&gateway, &["get", "fruit/0"]).code, 3);

    tracing::info!("--- a transaction over shards from a file, in etcdctl's format");
    assert_eq!(cairnctl(&gateway, &["put", "txn/a", "100"]).code, 0);
    assert_eq!(cairnctl(&gateway, &["put", "txn/b", "100"]).code, 0);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("transfer.txn");
    // The range op spans every shard, so this takes the two-phase path whatever shards the
    // two keys hash to; the range sees the branch's own puts.
    std::fs::write(
        &script,
        "value(\"txn/a\") = \"100\"\n\nput txn/a 90\nput txn/b 110\nget --prefix txn/\n\nget txn/a\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let transfer = cairnctl(&gateway, &["txn", "--file", script]);
    assert_eq!(transfer.code, 0, "{}{}", transfer.stdout, transfer.stderr);
    assert!(
        transfer.stdout.starts_with("SUCCESS") && transfer.stdout.contains("txn/a\n90\ntxn/b\n110"),
        "{}",
        transfer.stdout
    );
    assert!(cairnctl(&gateway, &["get", "txn/b"]).stdout.contains("110"));
    let again = cairnctl(&gateway, &["txn", "--file", script]);
    assert_eq!(
        again.code, 4,
        "the compare no longer holds: {}",
        again.stdout
    );
    assert!(
        again.stdout.starts_with("FAILURE") && again.stdout.contains("90"),
        "{}",
        again.stdout
    );

    tracing::info!("--- cluster status, members, shards");
    let status = cairnctl(&gateway, &["cluster", "status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let members = cairnctl(&gateway, &["--output", "json", "cluster", "members"]);
    assert_eq!(members.code, 0);
    assert_eq!(
        members.stdout.matches("\"up\"").count(),
        3,
        "{}",
        members.stdout
    );
    let shards = cairnctl(&gateway, &["cluster", "shards"]);
    assert_eq!(shards.code, 0);

    tracing::info!("--- errors a person can act on");
    let too_long = "k".repeat(5000);
    let invalid = cairnctl(&gateway, &["put", &too_long, "v"]);
    assert_eq!(invalid.code, 2, "an invalid argument exits 2");
    assert!(
        invalid.stderr.starts_with("error: ") && invalid.stderr.contains("key_bytes_max"),
        "{}",
        invalid.stderr
    );
    let usage = cairnctl(&gateway, &["put", "only-a-key"]);
    assert_eq!(usage.code, 2, "a usage error exits 2");
    cluster.kill(ProcessId::Gateway(1));
    let down = Command::new(CAIRNCTL)
        .args([
            "--endpoints",
            &gateway,
            "--timeout",
            "2s",
            "get",
            "greeting",
        ])
        .output()
        .expect("run cairnctl");
    assert_eq!(
        down.status.code(),
        Some(1),
        "an unreachable cluster exits 1"
    );
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("error: "));
}

fn cairnctl_with(args: &[&str]) -> Outcome {
    let output = Command::new(CAIRNCTL)
        .args(["--timeout", "10s"])
        .args(args)
        .env_remove("CAIRN_CACERT")
        .env_remove("CAIRN_CERT")
        .env_remove("CAIRN_KEY")
        .output()
        .expect("run cairnctl");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnctl_speaks_tls_with_a_client_certificate() {
    let cluster = ClusterSpec::new(Path::new(CAIRNCTL))
        .nodes(3)
        .shards(2)
        .gateways(1)
        .gateway_env(&[("CAIRN_PUBLIC_TLS__CLIENT_AUTH", "required")])
        .tls()
        .start()
        .await;
    let certificates = cluster.certificates().expect("a TLS cluster");
    let (cert, key) = certificates.issue("alice", &[]);
    let (ca, cert, key) = (
        certificates.ca_file().display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let endpoint = format!("https://{}", cluster.gateway(1).address);
    let tls = [
        "--endpoints",
        endpoint.as_str(),
        "--cacert",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    tracing::info!("--- put and get over TLS with a client certificate");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let args: Vec<&str> = tls.iter().copied().chain(["put", "tls", "on"]).collect();
        let put = cairnctl_with(&args);
        if put.code == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS cluster takes no writes through cairnctl: {}",
            put.stderr
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let args: Vec<&str> = tls.iter().copied().chain(["get", "tls"]).collect();
    let got = cairnctl_with(&args);
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(got.stdout.contains("on"), "{}", got.stdout);

    tracing::info!("--- without a client certificate, or without TLS, the gateway refuses");
    let anonymous = cairnctl_with(&["--endpoints", &endpoint, "--cacert", &ca, "get", "tls"]);
    assert_eq!(
        anonymous.code, 1,
        "{} {}",
        anonymous.stdout, anonymous.stderr
    );
    let plain_address = cluster.gateway(1).address.clone();
    let plaintext = cairnctl_with(&["--endpoints", &plain_address, "get", "tls"]);
    assert_eq!(
        plaintext.code, 1,
        "{} {}",
        plaintext.stdout, plaintext.stderr
    );

    tracing::info!("--- usage errors: https:// without a CA, --cert without --key");
    let no_ca = cairnctl_with(&["--endpoints", &endpoint, "get", "tls"]);
    assert_eq!(no_ca.code, 2, "{}", no_ca.stderr);
    assert!(no_ca.stderr.contains("https://"), "{}", no_ca.stderr);
    let half = cairnctl_with(&[
        "--endpoints",
        &endpoint,
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "get",
        "tls",
    ]);
    assert_eq!(half.code, 2, "{}", half.stderr);
    let missing = cairnctl_with(&[
        "--endpoints",
        &endpoint,
        "--cacert",
        "/nonexistent/ca.pem",
        "get",
        "tls",
    ]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("/nonexistent/ca.pem"),
        "{}",
        missing.stderr
    );
}

#[test]
fn cairnctl_dev_certs_writes_a_ca_and_one_certificate_per_role() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let written = cairnctl_with(&["dev", "certs", "--out", &out.display().to_string()]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    for name in ["ca", "node", "coordinator", "gateway", "client"] {
        assert!(out.join(format!("{name}.pem")).exists(), "{name}.pem");
        assert!(
            out.join(format!("{name}-key.pem")).exists(),
            "{name}-key.pem"
        );
    }
    assert!(written.stdout.contains("--cacert"), "{}", written.stdout);
}
