//! What can be wrong with a TLS file, named so an operator can fix it.

use std::path::PathBuf;

/// A TLS file that cannot be used: the error names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {problem}")]
    File { path: PathBuf, problem: Problem },
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("file not found")]
    Missing,
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("not PEM: no {expected} block found ({detail})")]
    NotPem {
        expected: &'static str,
        detail: String,
    },
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate in {certificate}")]
    KeyMismatch { certificate: PathBuf },
    #[error("the certificate expired at {not_after} (UTC)")]
    Expired { not_after: String },
    #[error("the certificate is not valid before {not_before} (UTC)")]
    NotYetValid { not_before: String },
}

impl TlsError {
    pub(crate) fn file(path: &std::path::Path, problem: Problem) -> Self {
        TlsError::File {
            path: path.to_path_buf(),
            problem,
        }
    }
}

pub type Result<T> = std::result::Result<T, TlsError>;
