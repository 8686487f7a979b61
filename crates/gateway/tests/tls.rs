//! Transport security with real processes (issue 18, D80-D84): a cluster with mutual TLS
//! serves puts and gets; plaintext clients, certificates of another CA and certificates of
//! the wrong role are refused where each must be; a node without a valid certificate cannot
//! join; a certificate rotated on disk is served without a restart; bad files fail start-up
//! naming the file.

use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use cairn_proto::raft::v1 as raft;
use cairn_proto::raft::v1::raft_transport_client::RaftTransportClient;
use cairn_test_harness::{
    foreign_certificates, lazy_channel, shard_get, wait_for, Cluster, ClusterSpec,
};
use cairn_tls::{ClientTls, Role};
use std::path::Path;
use std::time::Duration;
use tonic::Code;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(60);

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A refusal: the call never reached a handler (the TLS handshake failed, so the connection
/// closed: a plaintext client reads the server's TLS alert as a broken HTTP/2 frame, which
/// tonic reports as INTERNAL), or the role policy answered PERMISSION_DENIED.
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) -> Code {
    let status = result.expect_err(what);
    assert!(
        matches!(
            status.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::Internal
                | Code::PermissionDenied
        ),
        "{what}: unexpected {status}"
    );
    tracing::info!(%what, code = ?status.code(), "refused as it must be");
    status.code()
}

async fn start(spec: ClusterSpec) -> Cluster {
    let cluster = spec.start().await;
    cluster.wait_for_placement(WAIT).await;
    cluster.wait_for_every_leader(WAIT).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_own_and_refuses_strangers_and_wrong_roles() {
    tracing::info!("--- start a cluster with mutual TLS; the gateway requires client certificates");
    let mut cluster = start(
        ClusterSpec::new(Path::new(GATEWAY))
            .coordinators(1)
            .nodes(3)
            .shards(2)
            .gateways(1)
            .gateway_env(&[("CAIRN_PUBLIC_TLS__CLIENT_AUTH", "required")])
            .tls(),
    )
    .await;
    let certificates = cluster.certificates().expect("a TLS cluster");
    let gateway_address = cluster.gateway(1).address.clone();

    tracing::info!("--- put and get through the gateway, over TLS, with a client certificate");
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    kv.put(put("tls/a", "1")).await.expect("put over TLS");
    let read = kv
        .get(get("tls/a"))
        .await
        .expect("get over TLS")
        .into_inner();
    assert_eq!(read.kv.map(|kv| kv.value), Some(b"1".to_vec()));

    tracing::info!("--- a plaintext client is refused at the gateway");
    let mut plaintext = KvClient::new(lazy_channel(&ClientTls::plaintext(), &gateway_address));
    assert_refused("plaintext put", plaintext.put(put("tls/b", "plain")).await);

    let dir = tempfile::tempdir().unwrap();
    let (foreign_cert, foreign_key, foreign_ca) =
        foreign_certificates(dir.path(), "stranger", &[Role::Node, Role::Coordinator]);
    // Trusts the cluster's CA, presents a certificate of another one.
    let stranger = ClientTls::new(
        certificates.ca_file(),
        Some((foreign_cert.clone(), foreign_key.clone())),
        Duration::from_secs(1),
    )
    .unwrap();

    tracing::info!("--- a certificate from another CA is refused at the gateway");
    let mut kv_stranger = KvClient::new(lazy_channel(&stranger, &gateway_address));
    assert_refused("stranger put", kv_stranger.put(put("tls/b", "x")).await);
    tracing::info!("--- a client that trusts another CA refuses the gateway");
    let distrustful = ClientTls::new(foreign_ca, None, Duration::from_secs(1)).unwrap();
    let mut kv_distrustful = KvClient::new(lazy_channel(&distrustful, &gateway_address));
    assert_refused("distrustful get", kv_distrustful.get(get("tls/a")).await);
    tracing::info!("--- and without a client certificate the gateway refuses");
    let anonymous = ClientTls::new(certificates.ca_file(), None, Duration::from_secs(1)).unwrap();
    let mut kv_anonymous = KvClient::new(lazy_channel(&anonymous, &gateway_address));
    assert_refused("anonymous get", kv_anonymous.get(get("tls/a")).await);

    let node = cluster.node_ids()[0];
    let node_address = cluster.node(node).listen_address.clone();
    let raft_vote = || raft::RaftRequest {
        shard_id: 0,
        ..Default::default()
    };
    tracing::info!("--- a certificate from another CA is refused at a node's Raft port");
    let mut raft_stranger = RaftTransportClient::new(lazy_channel(&stranger, &node_address));
    assert_refused("stranger vote", raft_stranger.vote(raft_vote()).await);
    tracing::info!("--- and at the coordinator");
    let coordinator_address = cluster.coordinator(1).address.clone();
    let mut coordinator_stranger =
        CoordinatorClient::new(lazy_channel(&stranger, &coordinator_address));
    assert_refused(
        "stranger cluster status",
        coordinator_stranger
            .cluster_status(coordinator::ClusterStatusRequest::default())
            .await,
    );
    let mut raft_plaintext =
        RaftTransportClient::new(lazy_channel(&ClientTls::plaintext(), &node_address));
    assert_refused("plaintext vote", raft_plaintext.vote(raft_vote()).await);

    tracing::info!(
        "--- a gateway's certificate may read a node's data but not administer it or speak Raft"
    );
    let as_gateway = certificates.client("gateway");
    let mut admin = NodeAdminClient::new(lazy_channel(&as_gateway, &node_address));
    let code = assert_refused(
        "gateway calls node admin",
        admin
            .shard_status(node::ShardStatusRequest {
                shard_id: 0,
                all: true,
            })
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let mut raft_as_gateway = RaftTransportClient::new(lazy_channel(&as_gateway, &node_address));
    let code = assert_refused(
        "gateway sends raft",
        raft_as_gateway.vote(raft_vote()).await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let mut coordinator_raft = RaftTransportClient::new(lazy_channel(
        &certificates.client("node"),
        &coordinator_address,
    ));
    let code = assert_refused(
        "node speaks raft to the coordinator group",
        coordinator_raft.vote(raft_vote()).await,
    );
    assert_eq!(code, Code::PermissionDenied);
    let mut data = ShardKvClient::new(lazy_channel(&as_gateway, &node_address));
    let answered = data
        .get(shard_get(
            cairn_types::ShardId(0),
            b"tls/a",
            Default::default(),
        ))
        .await;
    assert!(
        !matches!(&answered, Err(status) if status.code() == Code::PermissionDenied),
        "a gateway certificate may call ShardKv: {answered:?}"
    );

    tracing::info!("--- a node with a certificate from another CA cannot join");
    let members_before = cluster.cluster_status().await.expect("status").nodes.len();
    let (cert, key) = (
        foreign_cert.display().to_string(),
        foreign_key.display().to_string(),
    );
    let log_path = cluster
        .start_node_unchecked(&[
            ("CAIRN_TLS__CERT_FILE", cert.as_str()),
            ("CAIRN_TLS__KEY_FILE", key.as_str()),
        ])
        .log_path
        .clone();
    wait_for("the stranger node to try to join", WAIT, || {
        let log_path = log_path.clone();
        async move {
            let log = std::fs::read_to_string(&log_path).ok()?;
            log.contains("join").then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let members_after = cluster.cluster_status().await.expect("status").nodes.len();
    assert_eq!(members_after, members_before, "the stranger node joined");

    tracing::info!("--- the cluster still serves");
    kv.put(put("tls/c", "3"))
        .await
        .expect("put after the refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let cluster = start(
        ClusterSpec::new(Path::new(GATEWAY))
            .coordinators(1)
            .nodes(3)
            .shards(1)
            .gateways(1)
            .tls(),
    )
    .await;
    let certificates = cluster.certificates().expect("a TLS cluster");
    let (mut kv, _) = cluster.gateway_clients(1, WAIT).await;
    kv.put(put("rotate/a", "1"))
        .await
        .expect("put before rotation");
    let gateway_address = cluster.gateway(1).address.clone();
    let pid_before = cluster.gateway(1).is_running();

    tracing::info!("--- replace the gateway's public certificate with one of a new CA, in place");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, new_ca) = foreign_certificates(dir.path(), "rotated", &[Role::Gateway]);
    let (gateway_cert, gateway_key) = certificates.files("gateway");
    // The key first: a reload between the two writes keeps the old pair (mismatch).
    std::fs::copy(&key, &gateway_key).unwrap();
    std::fs::copy(&cert, &gateway_cert).unwrap();

    tracing::info!("--- a client that trusts only the new CA gets in, without a restart");
    let trusts_new = ClientTls::new(new_ca, None, Duration::from_secs(1)).unwrap();
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(10),
        || {
            let mut client = KvClient::new(lazy_channel(&trusts_new, &gateway_address));
            async move {
                // Any answer (even an error from the cluster) means the handshake succeeded;
                // a refused handshake may also read as a broken HTTP/2 frame (Internal).
                match client.get(get("rotate/a")).await {
                    Ok(_) => Some(()),
                    Err(status)
                        if !matches!(
                            status.code(),
                            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
                        ) =>
                    {
                        Some(())
                    }
                    Err(_) => None,
                }
            }
        },
    )
    .await;
    assert!(pid_before && cluster.gateway(1).is_running());
    tracing::info!("--- a client that trusts only the old CA is refused on a new connection");
    let trusts_old = ClientTls::new(certificates.ca_file(), None, Duration::from_secs(1)).unwrap();
    let mut old = KvClient::new(lazy_channel(&trusts_old, &gateway_address));
    assert_refused("old CA after rotation", old.get(get("rotate/a")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_fail_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = cairn_test_harness::ClusterCertificates::write(dir.path());
    let (cert, key) = certificates.files("gateway");
    let (expired_cert, expired_key) = certificates.issue_leaf(
        "expired",
        &cairn_tls::dev_certs::Leaf {
            common_name: "expired".into(),
            roles: vec![Role::Gateway],
            hosts: vec!["127.0.0.1".into()],
            years: Some((2001, 2002)),
        },
    );
    let not_pem = dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "this is not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");
    let (_, other_key) = certificates.issue("other", &[Role::Gateway]);
    let ca = certificates.ca_file();
    let cases = [
        ("missing", &missing, &key, "file not found"),
        ("not PEM", &not_pem, &key, "not PEM"),
        (
            "key of another certificate",
            &cert,
            &other_key,
            "does not match",
        ),
        ("expired", &expired_cert, &expired_key, "expired"),
    ];
    for (case, cert_file, key_file, problem) in cases {
        tracing::info!(case, "--- a gateway with a bad TLS file must not start");
        let output = tokio::process::Command::new(GATEWAY)
            .arg("--listen-address=127.0.0.1:0")
            .env("CAIRN_TLS__CERT_FILE", cert_file)
            .env("CAIRN_TLS__KEY_FILE", key_file)
            .env("CAIRN_TLS__CA_FILE", &ca)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(30), output)
            .await
            .unwrap_or_else(|_| panic!("{case}: the gateway did not exit"))
            .expect("run the gateway");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{case}: the gateway started");
        let named = if case == "key of another certificate" {
            key_file
        } else {
            cert_file
        };
        assert!(
            stderr.contains(&named.display().to_string()) && stderr.contains(problem),
            "{case}: the error must name {} and say {problem:?}: {stderr}",
            named.display()
        );
    }
}
