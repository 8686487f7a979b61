//! Who a peer is, read from its certificate: the Cairn roles it may act as (URI SANs
//! `spiffe://cairn/role/<role>`, D82) and its common name (the user, for authentication later).

use rustls::pki_types::CertificateDer;
use std::fmt;

/// The prefix of a role's URI SAN; the role's name follows it.
pub const ROLE_URI_PREFIX: &str = "spiffe://cairn/role/";

/// What a Cairn process is, as its certificate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Node,
    Coordinator,
    Gateway,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Node, Role::Coordinator, Role::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Coordinator => "coordinator",
            Role::Gateway => "gateway",
        }
    }

    /// The URI SAN that grants this role.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    fn from_uri(uri: &str) -> Option<Role> {
        let name = uri.strip_prefix(ROLE_URI_PREFIX)?;
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a verified peer certificate gives. Only built from a certificate the TLS
/// handshake already verified against the CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name, if any (a client certificate's user).
    pub common_name: Option<String>,
    /// The Cairn roles the certificate grants, sorted.
    pub roles: Vec<Role>,
}

impl PeerIdentity {
    /// Reads the identity of a (verified) leaf certificate. A certificate that cannot be
    /// parsed grants nothing.
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> PeerIdentity {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
            return PeerIdentity::default();
        };
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .map(str::to_string);
        let mut roles: Vec<Role> = match parsed.subject_alternative_name() {
            Ok(Some(names)) => names
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => Role::from_uri(uri),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        roles.sort();
        roles.dedup();
        PeerIdentity { common_name, roles }
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|role| roles.contains(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: &str, uris: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(*uri).unwrap(),
            ));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn roles_come_from_uri_sans() {
        let identity = PeerIdentity::from_certificate(&certificate(
            "node-1",
            &[
                "spiffe://cairn/role/node",
                "spiffe://cairn/role/coordinator",
                "spiffe://elsewhere/role/gateway",
                "spiffe://cairn/role/root",
            ],
        ));
        assert_eq!(identity.common_name.as_deref(), Some("node-1"));
        assert_eq!(identity.roles, vec![Role::Node, Role::Coordinator]);
        assert!(identity.has_any(&[Role::Coordinator]));
        assert!(!identity.has_any(&[Role::Gateway]));
    }

    #[test]
    fn a_client_certificate_has_a_name_and_no_role() {
        let identity = PeerIdentity::from_certificate(&certificate("alice", &[]));
        assert_eq!(identity.common_name.as_deref(), Some("alice"));
        assert!(identity.roles.is_empty());
        assert_eq!(
            PeerIdentity::from_certificate(&CertificateDer::from(vec![1, 2, 3])),
            PeerIdentity::default()
        );
    }
}
