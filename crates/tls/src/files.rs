//! Reading and checking the PEM files: everything that can be wrong with them is found here,
//! at start-up, and reported naming the file (missing, unreadable, not PEM, a key that does
//! not match its certificate, a certificate outside its validity period).

use crate::error::{Problem, Result, TlsError};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bytes of `path`, or why they cannot be had.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        let problem = if error.kind() == std::io::ErrorKind::NotFound {
            Problem::Missing
        } else {
            Problem::Unreadable(error.to_string())
        };
        TlsError::file(path, problem)
    })
}

fn pem_detail(error: pem::Error) -> String {
    match error {
        pem::Error::NoItemsFound => "the file holds no PEM section of that kind".to_string(),
        other => other.to_string(),
    }
}

/// The certificates of the PEM file at `path`, in file order; at least one, each parseable
/// and within its validity period now.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path)?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|error| {
            TlsError::file(
                path,
                Problem::NotPem {
                    expected: "CERTIFICATE",
                    detail: pem_detail(error),
                },
            )
        })?;
    if certificates.is_empty() {
        return Err(TlsError::file(
            path,
            Problem::NotPem {
                expected: "CERTIFICATE",
                detail: "the file holds no PEM certificate".to_string(),
            },
        ));
    }
    for certificate in &certificates {
        check_validity(certificate, SystemTime::now()).map_err(|p| TlsError::file(path, p))?;
    }
    Ok(certificates)
}

/// The private key of the PEM file at `path`.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        TlsError::file(
            path,
            Problem::NotPem {
                expected: "PRIVATE KEY",
                detail: pem_detail(error),
            },
        )
    })
}

/// This process's identity: the certificate chain at `cert_path` and the key at `key_path`,
/// which must belong to the chain's first certificate.
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>> {
    let certificates = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let signing_key = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::file(key_path, Problem::BadKey(error.to_string())))?;
    let identity = CertifiedKey::new(certificates, signing_key);
    match identity.keys_match() {
        Ok(()) => Ok(Arc::new(identity)),
        // The key's type cannot tell its public half: nothing to compare, accepted.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(identity))
        }
        Err(_) => Err(TlsError::file(
            key_path,
            Problem::KeyMismatch {
                certificate: cert_path.to_path_buf(),
            },
        )),
    }
}

/// The CA certificates of the PEM file at `path`, as trust roots.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for certificate in load_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| TlsError::file(path, Problem::BadCertificate(error.to_string())))?;
    }
    Ok(Arc::new(roots))
}

/// Whether `certificate` is valid at `now` (its notBefore..=notAfter).
pub fn check_validity(
    certificate: &CertificateDer<'_>,
    now: SystemTime,
) -> std::result::Result<(), Problem> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| Problem::BadCertificate(error.to_string()))?;
    let validity = parsed.validity();
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    if now < validity.not_before.timestamp() {
        return Err(Problem::NotYetValid {
            not_before: validity.not_before.to_string(),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(Problem::Expired {
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}
