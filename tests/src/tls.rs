//! The certificates of a test cluster started with `ClusterSpec::tls`: one CA, a certificate
//! per role valid for every loopback address the harness hands out, and the harness's own
//! (roles coordinator and gateway: it calls the nodes' admin and KV services and the
//! coordinators). Tests issue more (another role, another CA, expired) with `issue`.

use crate::process::{ip_of, Role, SLOTS_MAX};
use cairn_tls::dev_certs::{DevCa, Leaf};
use cairn_tls::ClientTls;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the processes of a test cluster look at their TLS files: fast, so a rotation
/// test sees the new certificate within a second.
const RELOAD_INTERVAL_MS: &str = "500";

pub struct ClusterCertificates {
    pub dir: PathBuf,
    ca: DevCa,
    harness: ClientTls,
}

fn tls_role(role: Role) -> cairn_tls::Role {
    match role {
        Role::Node => cairn_tls::Role::Node,
        Role::Coordinator => cairn_tls::Role::Coordinator,
        Role::Gateway => cairn_tls::Role::Gateway,
    }
}

/// Every address a test process may listen on, and localhost.
fn hosts() -> Vec<String> {
    [Role::Node, Role::Coordinator, Role::Gateway]
        .into_iter()
        .flat_map(|role| (1..=SLOTS_MAX).map(move |slot| ip_of(role, slot).to_string()))
        .chain(["localhost".to_string()])
        .collect()
}

impl ClusterCertificates {
    /// A new CA and the cluster's certificates, written into `dir`.
    pub fn write(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("tls folder");
        let ca = DevCa::new("Cairn test CA").expect("test CA");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("write ca.pem");
        let mut certificates = ClusterCertificates {
            dir: dir.to_path_buf(),
            ca,
            harness: ClientTls::plaintext(),
        };
        for role in [Role::Node, Role::Coordinator, Role::Gateway] {
            certificates.issue(&format!("{}", tls_role(role)), &[tls_role(role)]);
        }
        certificates.issue(
            "harness",
            &[cairn_tls::Role::Coordinator, cairn_tls::Role::Gateway],
        );
        certificates.harness = certificates.client("harness");
        certificates
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The certificate and key files of `name` (`node`, `coordinator`, `gateway`,
    /// `harness`, or one a test issued).
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }

    /// Issues `name`'s certificate with `roles` from the cluster CA and writes it.
    pub fn issue(&self, name: &str, roles: &[cairn_tls::Role]) -> (PathBuf, PathBuf) {
        self.issue_leaf(
            name,
            &Leaf {
                common_name: name.to_string(),
                roles: roles.to_vec(),
                hosts: hosts(),
                years: None,
            },
        )
    }

    /// Issues and writes `leaf` as `name` from the cluster CA.
    pub fn issue_leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        write_issued(&self.ca, &self.dir, name, leaf)
    }

    /// A client presenting `name`'s certificate and trusting the cluster CA.
    pub fn client(&self, name: &str) -> ClientTls {
        ClientTls::new(
            self.ca_file(),
            Some(self.files(name)),
            Duration::from_millis(500),
        )
        .expect("test client certificate")
    }

    /// The harness's own client.
    pub(crate) fn harness(&self) -> ClientTls {
        self.harness.clone()
    }

    /// The `[tls]` settings of a process of `role`.
    pub(crate) fn env_for(&self, role: Role) -> Vec<(String, String)> {
        let (cert, key) = self.files(&format!("{}", tls_role(role)));
        vec![
            ("CAIRN_TLS__CERT_FILE".into(), cert.display().to_string()),
            ("CAIRN_TLS__KEY_FILE".into(), key.display().to_string()),
            (
                "CAIRN_TLS__CA_FILE".into(),
                self.ca_file().display().to_string(),
            ),
            (
                "CAIRN_TLS__RELOAD_INTERVAL_MS".into(),
                RELOAD_INTERVAL_MS.into(),
            ),
        ]
    }
}

/// A CA of its own (not the cluster's), for certificates the cluster must refuse.
pub fn foreign_certificates(
    dir: &Path,
    name: &str,
    roles: &[cairn_tls::Role],
) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("tls folder");
    let ca = DevCa::new("another CA").expect("another CA");
    let ca_file = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&ca_file, ca.cert_pem()).expect("write the other CA");
    let (cert, key) = write_issued(
        &ca,
        dir,
        name,
        &Leaf {
            common_name: name.to_string(),
            roles: roles.to_vec(),
            hosts: hosts(),
            years: None,
        },
    );
    (cert, key, ca_file)
}

fn write_issued(ca: &DevCa, dir: &Path, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let issued = ca.issue(leaf).expect("issue a test certificate");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    // The key first: a process reloading between the two writes sees a mismatch and keeps
    // its old pair rather than half of the new one.
    std::fs::write(&key, issued.key_pem).expect("write a test key");
    std::fs::write(&cert, issued.cert_pem).expect("write a test certificate");
    (cert, key)
}
