//! The crate's parts together: files checked at start-up, a TLS server and client in one
//! process, roles enforced, a certificate rotated on disk.

use crate::dev_certs::{DevCa, Leaf};
use crate::error::{Problem, TlsError};
use crate::{files, incoming, ClientAuth, ClientTls, Role, RoleLayer, RolePolicy, ServerTls};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn leaf(role: Option<Role>, years: Option<(i32, i32)>) -> Leaf {
    Leaf {
        common_name: "test".into(),
        roles: role.into_iter().collect(),
        hosts: vec!["127.0.0.1".into(), "localhost".into()],
        years,
    }
}

/// Writes `name.pem` and `name-key.pem` for `leaf` into `dir`.
fn write(dir: &Path, ca: &DevCa, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let issued = ca.issue(leaf).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    (cert, key)
}

fn problem(error: TlsError) -> (PathBuf, Problem) {
    match error {
        TlsError::File { path, problem } => (path, problem),
        other => panic!("expected a file error, got {other}"),
    }
}

#[test]
fn bad_files_are_named_with_their_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("test CA").unwrap();
    let (cert, key) = write(dir.path(), &ca, "good", &leaf(Some(Role::Node), None));
    files::load_identity(&cert, &key).unwrap();

    let missing = dir.path().join("missing.pem");
    let (path, why) = problem(files::load_identity(&missing, &key).unwrap_err());
    assert_eq!((path, why), (missing.clone(), Problem::Missing));

    let not_pem = dir.path().join("not-pem.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (path, why) = problem(files::load_identity(&not_pem, &key).unwrap_err());
    assert_eq!(path, not_pem);
    assert!(
        matches!(
            why,
            Problem::NotPem {
                expected: "CERTIFICATE",
                ..
            }
        ),
        "{why}"
    );
    let (path, why) = problem(files::load_identity(&cert, &not_pem).unwrap_err());
    assert_eq!(path, not_pem);
    assert!(
        matches!(
            why,
            Problem::NotPem {
                expected: "PRIVATE KEY",
                ..
            }
        ),
        "{why}"
    );

    let (_, other_key) = write(dir.path(), &ca, "other", &leaf(Some(Role::Node), None));
    let (path, why) = problem(files::load_identity(&cert, &other_key).unwrap_err());
    assert_eq!(path, other_key);
    assert_eq!(
        why,
        Problem::KeyMismatch {
            certificate: cert.clone()
        }
    );

    let (expired, expired_key) = write(dir.path(), &ca, "expired", &leaf(None, Some((2000, 2001))));
    let (path, why) = problem(files::load_identity(&expired, &expired_key).unwrap_err());
    assert_eq!(path, expired);
    assert!(matches!(why, Problem::Expired { .. }), "{why}");
    assert!(why.to_string().contains("2001"), "{why}");

    let (future, future_key) = write(dir.path(), &ca, "future", &leaf(None, Some((2090, 2091))));
    let (_, why) = problem(files::load_identity(&future, &future_key).unwrap_err());
    assert!(matches!(why, Problem::NotYetValid { .. }), "{why}");

    // The whole message names the file, as start-up prints it.
    let message = files::load_roots(&missing).unwrap_err().to_string();
    assert!(
        message.contains("missing.pem") && message.contains("not found"),
        "{message}"
    );
}

/// A health service behind TLS (client certificates required, chained to the CA at
/// `ca_path`), open to `allowed` only. Returns its address.
async fn serve(cert: &Path, key: &Path, ca_path: &Path, allowed: Role) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let tls = ServerTls::new(
        cert.into(),
        key.into(),
        Some(ca_path.into()),
        ClientAuth::Required,
        Duration::from_millis(100),
    )
    .unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let policy = RolePolicy::new().allow("grpc.health.v1.Health", &[allowed]);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(RoleLayer::new(Some(policy)))
            .add_service(health)
            .serve_with_incoming(incoming(listener, Some(tls))),
    );
    address
}

async fn check(client: &ClientTls, address: &str) -> Result<(), tonic::Status> {
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let channel = client.connect_lazy(endpoint, None);
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_the_cluster_ca_and_the_allowed_role_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("cluster CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    let (server_cert, server_key) = write(dir.path(), &ca, "server", &leaf(Some(Role::Node), None));
    let address = serve(&server_cert, &server_key, &ca_path, Role::Node).await;

    let (node_cert, node_key) = write(dir.path(), &ca, "node", &leaf(Some(Role::Node), None));
    let node = ClientTls::new(
        ca_path.clone(),
        Some((node_cert, node_key)),
        Duration::from_secs(1),
    )
    .unwrap();
    check(&node, &address)
        .await
        .expect("a node certificate is admitted");

    let (gw_cert, gw_key) = write(dir.path(), &ca, "gateway", &leaf(Some(Role::Gateway), None));
    let gateway = ClientTls::new(
        ca_path.clone(),
        Some((gw_cert, gw_key)),
        Duration::from_secs(1),
    )
    .unwrap();
    let refused = check(&gateway, &address).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("role gateway"), "{refused}");

    let no_identity = ClientTls::new(ca_path.clone(), None, Duration::from_secs(1)).unwrap();
    // TLS 1.3: the server refuses after the client thinks the handshake is done, so the
    // call fails as the connection closes (Cancelled or Unavailable), never as an answer.
    let refused = check(&no_identity, &address).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::PermissionDenied, "{refused}");

    let other = DevCa::new("another CA").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = other_dir.path().join("ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).unwrap();
    let (x_cert, x_key) = write(other_dir.path(), &other, "x", &leaf(Some(Role::Node), None));
    // Trusts the server's CA but presents a certificate of another CA: refused.
    let foreign = ClientTls::new(
        ca_path.clone(),
        Some((x_cert, x_key)),
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(check(&foreign, &address).await.is_err());
    // Trusts only another CA: refuses the server.
    let distrustful = ClientTls::new(other_ca, None, Duration::from_secs(1)).unwrap();
    assert!(check(&distrustful, &address).await.is_err());

    // A plaintext client's bytes are not a TLS hello: the server closes the connection
    // (Unavailable, or Cancelled when the client's HTTP/2 handshake was already waiting), or
    // its TLS alert reaches the client first and reads as a broken HTTP/2 frame (Internal).
    let refused = check(&ClientTls::plaintext(), &address).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
        ),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::new("first CA").unwrap();
    let second = DevCa::new("second CA").unwrap();
    let ca_path = dir.path().join("ca.pem");
    // The server trusts both CAs for clients throughout; only its own certificate changes.
    std::fs::write(&ca_path, first.cert_pem() + &second.cert_pem()).unwrap();
    let (cert, key) = write(dir.path(), &first, "server", &leaf(Some(Role::Node), None));
    let address = serve(&cert, &key, &ca_path, Role::Node).await;

    let trusts = |ca: &DevCa, name: &str| {
        let path = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&path, ca.cert_pem()).unwrap();
        let (c, k) = write(dir.path(), ca, name, &leaf(Some(Role::Node), None));
        ClientTls::new(path, Some((c, k)), Duration::from_secs(1)).unwrap()
    };
    let (old_client, new_client) = (trusts(&first, "old"), trusts(&second, "new"));
    check(&old_client, &address).await.unwrap();
    assert!(check(&new_client, &address).await.is_err());

    let replaced = second.issue(&leaf(Some(Role::Node), None)).unwrap();
    std::fs::write(&key, replaced.key_pem).unwrap();
    std::fs::write(&cert, replaced.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while check(&new_client, &address).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replaced certificate is not served after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        check(&old_client, &address).await.is_err(),
        "the old certificate is gone"
    );
}
