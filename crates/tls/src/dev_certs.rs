//! Certificates for local clusters and tests (`cairnctl dev certs`, the test harness): a
//! throw-away CA and certificates it signs, with Cairn's role URIs. Not for production:
//! the CA key is written next to the certificates.

use crate::role::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

pub use rcgen::Error;

/// A CA that signs certificates.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

/// A certificate to issue.
#[derive(Clone, Debug, Default)]
pub struct Leaf {
    pub common_name: String,
    pub roles: Vec<Role>,
    /// DNS names and IP addresses the certificate is valid for (as a server).
    pub hosts: Vec<String>,
    /// Validity as (first year, last year), Januaries 1st; default: 2020 to 2100.
    pub years: Option<(i32, i32)>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    /// A new self-signed CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
            key_pem,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// A certificate for `leaf`, signed by this CA, usable as a server and a client.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, Error> {
        let mut params = CertificateParams::new(leaf.hosts.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        for role in &leaf.roles {
            params
                .subject_alt_names
                .push(SanType::URI(rcgen::string::Ia5String::try_from(
                    role.uri(),
                )?));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (first, last) = leaf.years.unwrap_or((2020, 2100));
        params.not_before = rcgen::date_time_ymd(first, 1, 1);
        params.not_after = rcgen::date_time_ymd(last, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem` (and `ca-key.pem`) and, for each role, `<role>.pem` and
    /// `<role>-key.pem` valid for `hosts`, plus `client.pem` / `client-key.pem` (common name
    /// `root`, no role) for cairnctl. Returns the files written.
    pub fn write_cluster(&self, dir: &Path, hosts: &[String]) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut write = |name: &str, text: &str| -> std::io::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            written.push(path);
            Ok(())
        };
        write("ca.pem", &self.cert_pem())?;
        write("ca-key.pem", &self.key_pem())?;
        let issue = |leaf: Leaf| self.issue(&leaf).map_err(std::io::Error::other);
        for role in Role::ALL {
            let issued = issue(Leaf {
                common_name: format!("cairn-{role}"),
                roles: vec![role],
                hosts: hosts.to_vec(),
                years: None,
            })?;
            write(&format!("{role}.pem"), &issued.cert_pem)?;
            write(&format!("{role}-key.pem"), &issued.key_pem)?;
        }
        let client = issue(Leaf {
            common_name: "root".to_string(),
            ..Leaf::default()
        })?;
        write("client.pem", &client.cert_pem)?;
        write("client-key.pem", &client.key_pem)?;
        Ok(written)
    }
}
