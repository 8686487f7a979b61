//! `ClientConfig`: where the gateways are and how long and how often the SDK may try.
//!
//! Only the client's own behaviour is configured here; server limits are the cluster's and
//! are reported back in `Error::LimitExceeded`.

use crate::{ConflictPolicy, Error};
use std::path::PathBuf;
use std::time::Duration;

/// The most attempts one request may be configured to make; beyond this a retry loop hides
/// an outage for too long rather than reporting it.
pub const RETRY_ATTEMPTS_MAX_CEILING: usize = 100;

/// How a [`Client`](crate::Client) reaches the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Gateway addresses as `host:port` (an `http://` prefix is accepted). Requests go to
    /// one of them and move to the next when it fails.
    pub endpoints: Vec<String>,
    /// Total time one call may take, every retry and pause included. Default 10 s.
    ///
    /// Writes are retried with the same write id only within this time; the cluster
    /// remembers a write's result far longer (`session_ttl_ms`, 10 minutes by default), so
    /// keep this well below it.
    pub request_timeout: Duration,
    /// Time to open a connection to one gateway. Default 3 s.
    pub connect_timeout: Duration,
    /// Most attempts per call, the first one included. Default 8.
    pub retry_attempts_max: usize,
    /// Pause before the first retry; each later pause doubles, with jitter. Default 20 ms.
    pub retry_backoff_min: Duration,
    /// Longest pause between two attempts. Default 1 s.
    pub retry_backoff_max: Duration,
    /// TLS to the gateways; `None` (the default) is plaintext.
    pub tls: Option<TlsConfig>,
    /// How [`Client::txn`](crate::Client::txn) runs a transaction again after it lost a
    /// race (`Error::Conflict`): by default up to 4 runs, 10 ms to 500 ms apart with jitter,
    /// all within `request_timeout`. A transaction may carry its own (`Txn::on_conflict`).
    pub txn_conflict_policy: ConflictPolicy,
    /// A user name and password, exchanged for a token (`Authenticate`) that every request
    /// then carries, for a cluster with auth enabled; renewed before it expires. `None` (the
    /// default) sends no token: a client certificate in `tls` may name the user instead.
    pub credentials: Option<Credentials>,
}

/// A user's name and password (docs/security.md). Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the SDK speaks TLS to the gateways (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate(s) of the CA that signed the gateways' certificates.
    pub ca_file: PathBuf,
    /// A client certificate and its key (PEM), for gateways that ask for one
    /// (`public_tls.client_auth`); its common name is the user.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsConfig {
    /// Reads and checks the files; the error names a bad one.
    pub(crate) fn client(&self) -> Result<cairn_tls::ClientTls, Error> {
        cairn_tls::ClientTls::new(
            self.ca_file.clone(),
            self.identity.clone(),
            // A client's files are re-read for new connections at most this often.
            Duration::from_secs(5),
        )
        .map_err(|error| invalid("tls", &error.to_string()))
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:7000".to_string()],
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            retry_attempts_max: 8,
            retry_backoff_min: Duration::from_millis(20),
            retry_backoff_max: Duration::from_secs(1),
            tls: None,
            txn_conflict_policy: ConflictPolicy::default(),
            credentials: None,
        }
    }
}

impl ClientConfig {
    /// The default configuration for these gateway addresses.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Checks every field; the error names the field to fix.
    pub fn validate(&self) -> Result<(), Error> {
        if self.endpoints.is_empty() {
            return Err(invalid(
                "endpoints",
                "at least one gateway address is needed",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "must be greater than zero"));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be greater than zero"));
        }
        if self.retry_attempts_max == 0 || self.retry_attempts_max > RETRY_ATTEMPTS_MAX_CEILING {
            return Err(invalid(
                "retry_attempts_max",
                &format!("must be in 1..={RETRY_ATTEMPTS_MAX_CEILING}"),
            ));
        }
        if self
            .credentials
            .as_ref()
            .is_some_and(|c| c.user.is_empty() || c.password.is_empty())
        {
            return Err(invalid(
                "credentials",
                "the user name and the password must not be empty",
            ));
        }
        self.txn_conflict_policy.validate("txn_conflict_policy")?;
        if self.retry_backoff_min.is_zero() {
            return Err(invalid("retry_backoff_min", "must be greater than zero"));
        }
        if self.retry_backoff_max < self.retry_backoff_min {
            return Err(invalid(
                "retry_backoff_max",
                "must be at least retry_backoff_min",
            ));
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: &str) -> Error {
    Error::InvalidArgument {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClientConfig::default().validate().unwrap();
    }

    #[test]
    fn credentials_never_show_the_password() {
        let credentials = Credentials::new("alice", "s3cret");
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let config = ClientConfig {
            credentials: Some(Credentials::new("alice", "")),
            ..ClientConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidArgument { field, .. }) if field == "credentials"
        ));
    }

    #[test]
    fn validate_names_the_field() {
        let config = ClientConfig {
            retry_backoff_max: Duration::from_millis(1),
            ..ClientConfig::default()
        };
        match config.validate() {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "retry_backoff_max"),
            other => panic!("unexpected {other:?}"),
        }
        let config = ClientConfig {
            txn_conflict_policy: ConflictPolicy::attempts(0),
            ..ClientConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidArgument { field, .. }) if field == "txn_conflict_policy.max_attempts"
        ));
        let config = ClientConfig::new(Vec::<String>::new());
        assert!(matches!(
            config.validate(),
            Err(Error::InvalidArgument { field, .. }) if field == "endpoints"
        ));
    }
}
