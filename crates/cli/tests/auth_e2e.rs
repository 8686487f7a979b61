//! `cairnctl user`, `role` and `auth`, and `--user`, against a real local cluster, run as
//! separate processes the way an operator runs them (docs/security.md).

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

fn cairnctl_with(endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Outcome {
    let output = Command::new(CAIRNCTL)
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--timeout")
        .arg("20s")
        .args(args)
        .env_remove("CAIRN_USER")
        .env_remove("CAIRN_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("run cairnctl");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn cairnctl(endpoint: &str, args: &[&str]) -> Outcome {
    cairnctl_with(endpoint, &[], args)
}

fn must(endpoint: &str, args: &[&str]) -> String {
    let outcome = cairnctl(endpoint, args);
    assert_eq!(outcome.code, 0, "cairnctl {args:?}: {}", outcome.stderr);
    outcome.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnctl_manages_users_and_roles_and_signs_in() {
    let mut cluster = ClusterSpec::new(Path::new(CAIRNCTL))
        .nodes(3)
        .shards(2)
        .gateways(1)
        .start()
        .await;
    let gateway = cluster.gateway(1).address.clone();
    wait_for("the cluster to take writes through cairnctl", WAIT, || {
        let gateway = gateway.clone();
        async move { (cairnctl(&gateway, &["put", "a/x", "1"]).code == 0).then_some(()) }
    })
    .await;

    tracing::info!("--- set up root and a reader of a/, then enable auth");
    assert!(
        cairnctl(&gateway, &["auth", "enable"]).code != 0,
        "no root user yet"
    );
    must(&gateway, &["user", "add", "root:root-pw"]);
    must(&gateway, &["user", "grant-role", "root", "root"]);
    must(&gateway, &["role", "add", "reader"]);
    let granted = must(
        &gateway,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "a/",
            "--prefix",
        ],
    );
    assert!(granted.contains("read prefix a/"), "{granted}");
    must(&gateway, &["user", "add", "alice:alice-pw"]);
    must(&gateway, &["user", "grant-role", "alice", "reader"]);
    let plaintext = cairnctl(&gateway, &["auth", "enable"]);
    assert_eq!(plaintext.code, 1, "{}", plaintext.stderr);
    assert!(
        plaintext.stderr.contains("plaintext") && plaintext.stderr.contains("TLS"),
        "auth enable over plaintext is refused, saying why: {}",
        plaintext.stderr
    );
    // This test runs on loopback without TLS: accept the risk, as an operator would say so.
    cluster.set_env(
        ProcessId::Gateway(1),
        "CAIRN_AUTH_PLAINTEXT_ALLOWED",
        "true",
    );
    cluster.restart(ProcessId::Gateway(1));
    wait_for("the restarted gateway to enable auth", WAIT, || {
        let gateway = gateway.clone();
        async move { (cairnctl(&gateway, &["auth", "enable"]).code == 0).then_some(()) }
    })
    .await;

    tracing::info!("--- without --user: refused; alice reads a/x but cannot write it");
    let anonymous = cairnctl(&gateway, &["get", "a/x"]);
    assert_eq!(anonymous.code, 1, "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("auth is enabled"),
        "{}",
        anonymous.stderr
    );
    let read = cairnctl(&gateway, &["--user", "alice:alice-pw", "get", "a/x"]);
    assert_eq!(read.code, 0, "{}", read.stderr);
    let write = cairnctl(&gateway, &["--user", "alice:alice-pw", "put", "a/x", "2"]);
    assert_eq!(write.code, 1);
    assert!(write.stderr.contains("may not write"), "{}", write.stderr);
    let listing = cairnctl(&gateway, &["--user", "alice:alice-pw", "user", "list"]);
    assert_ne!(listing.code, 0, "only root lists users");

    tracing::info!("--- root, with its password from CAIRN_PASSWORD, lists users and roles");
    let root_env = [("CAIRN_USER", "root"), ("CAIRN_PASSWORD", "root-pw")];
    let users = cairnctl_with(&gateway, &root_env, &["user", "list"]);
    assert_eq!(users.code, 0, "{}", users.stderr);
    assert!(
        users.stdout.contains("alice") && users.stdout.contains("reader"),
        "{}",
        users.stdout
    );
    let roles = cairnctl_with(&gateway, &root_env, &["-o", "json", "role", "list"]);
    assert!(roles.stdout.contains("\"prefix a/\""), "{}", roles.stdout);
    let status = cairnctl_with(&gateway, &root_env, &["auth", "status"]);
    assert!(
        status.stdout.contains("enabled   true") || status.stdout.contains("enabled  true"),
        "{}",
        status.stdout
    );
    let value = cairnctl_with(&gateway, &root_env, &["get", "a/x"]);
    assert!(
        value.stdout.contains('1'),
        "alice's put wrote nothing: {}",
        value.stdout
    );

    tracing::info!("--- a new password ends the old one; auth disable opens the cluster again");
    must(
        &gateway,
        &["--user", "root:root-pw", "user", "passwd", "alice:new-pw"],
    );
    assert_eq!(
        cairnctl(&gateway, &["--user", "alice:alice-pw", "get", "a/x"]).code,
        1
    );
    assert_eq!(
        cairnctl(&gateway, &["--user", "alice:new-pw", "get", "a/x"]).code,
        0
    );
    must(&gateway, &["--user", "root:root-pw", "auth", "disable"]);
    let open = cairnctl(&gateway, &["put", "b/x", "1"]);
    assert_eq!(open.code, 0, "{}", open.stderr);
}
