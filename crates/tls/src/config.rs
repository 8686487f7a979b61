//! The `[tls]` section of every binary's configuration, and the gateway's `[public_tls]`.
//!
//! Paths are strings, empty meaning unset, like the binaries' other settings: TLS is on when
//! `tls.cert_file` is set. Checking that the files are usable is `files`' job, at start-up.

use crate::{ClientTls, ServerTls};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest allowed interval between two checks of the files for a change.
pub const RELOAD_INTERVAL_MS_MIN: u64 = 100;
/// Longest allowed interval: a rotated certificate must be served within the hour.
pub const RELOAD_INTERVAL_MS_MAX: u64 = 3_600_000;

/// This process's certificate, key and the cluster CA: the certificate it serves on its gRPC
/// port and presents to the Cairn processes it calls (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Empty: TLS is off (plaintext everywhere).
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate.
    pub key_file: String,
    /// PEM certificate(s) of the cluster CA: a peer's certificate must chain to one of them.
    pub ca_file: String,
    /// Longest time between two checks of the three files for a change, in milliseconds;
    /// a changed file is re-read and used for new connections.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: String::new(),
            reload_interval_ms: 5_000,
        }
    }
}

/// Who a gateway asks for a certificate on its public port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one; if it does, it must chain to the client CA.
    Optional,
    /// Every client must present one that chains to the client CA.
    Required,
}

/// The gateway's public port: the certificate clients see and what it asks of them. Unset
/// fields fall back to the `[tls]` section's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublicTlsConfig {
    /// PEM certificate chain served to clients; empty: `tls.cert_file`.
    pub cert_file: String,
    /// Its PEM private key; empty: `tls.key_file`.
    pub key_file: String,
    /// PEM CA that client certificates must chain to; empty: `tls.ca_file`.
    pub client_ca_file: String,
    /// `none`, `optional` or `required`.
    pub client_auth: ClientAuth,
}

/// A setting that cannot work, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub field: String,
    pub reason: String,
}

fn problem(field: &str, reason: &str) -> ConfigProblem {
    ConfigProblem {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

impl TlsConfig {
    pub fn is_enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }

    /// Checks the settings (not the files); the error names the field.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        if !(RELOAD_INTERVAL_MS_MIN..=RELOAD_INTERVAL_MS_MAX).contains(&self.reload_interval_ms) {
            return Err(problem(
                "tls.reload_interval_ms",
                &format!("must be in {RELOAD_INTERVAL_MS_MIN}..={RELOAD_INTERVAL_MS_MAX}"),
            ));
        }
        let set = [&self.cert_file, &self.key_file, &self.ca_file];
        if set.iter().all(|path| path.is_empty()) {
            return Ok(());
        }
        // Cairn's own processes always authenticate each other: all three or none.
        for (field, value) in [
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
            ("tls.ca_file", &self.ca_file),
        ] {
            if value.is_empty() {
                return Err(problem(
                    field,
                    "must be set when any of tls.cert_file, tls.key_file, tls.ca_file is \
                     (mutual TLS needs the certificate, its key and the cluster CA)",
                ));
            }
        }
        Ok(())
    }

    /// The server side of this process's gRPC port: mutual TLS, a client certificate
    /// chained to the cluster CA required. `None` when TLS is off.
    pub fn server(&self) -> crate::error::Result<Option<ServerTls>> {
        if !self.is_enabled() {
            return Ok(None);
        }
        ServerTls::new(
            PathBuf::from(&self.cert_file),
            PathBuf::from(&self.key_file),
            Some(PathBuf::from(&self.ca_file)),
            ClientAuth::Required,
            self.reload_interval(),
        )
        .map(Some)
    }

    /// The client side: channels to other Cairn processes verify them against the cluster
    /// CA and present this process's certificate. Plaintext when TLS is off.
    pub fn client(&self) -> crate::error::Result<ClientTls> {
        if !self.is_enabled() {
            return Ok(ClientTls::plaintext());
        }
        ClientTls::new(
            PathBuf::from(&self.ca_file),
            Some((
                PathBuf::from(&self.cert_file),
                PathBuf::from(&self.key_file),
            )),
            self.reload_interval(),
        )
    }
}

impl PublicTlsConfig {
    fn cert_file<'a>(&'a self, internal: &'a TlsConfig) -> &'a str {
        if self.cert_file.is_empty() {
            &internal.cert_file
        } else {
            &self.cert_file
        }
    }

    fn key_file<'a>(&'a self, internal: &'a TlsConfig) -> &'a str {
        if self.key_file.is_empty() {
            &internal.key_file
        } else {
            &self.key_file
        }
    }

    fn client_ca_file<'a>(&'a self, internal: &'a TlsConfig) -> &'a str {
        if self.client_ca_file.is_empty() {
            &internal.ca_file
        } else {
            &self.client_ca_file
        }
    }

    /// Whether the public port speaks TLS: when it has a certificate of its own or the
    /// process has one.
    pub fn is_enabled(&self, internal: &TlsConfig) -> bool {
        !self.cert_file(internal).is_empty()
    }

    /// Checks the settings against the `[tls]` section they fall back to.
    pub fn validate(&self, internal: &TlsConfig) -> Result<(), ConfigProblem> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(problem(
                if self.cert_file.is_empty() {
                    "public_tls.cert_file"
                } else {
                    "public_tls.key_file"
                },
                "public_tls.cert_file and public_tls.key_file are set together",
            ));
        }
        if self.client_auth != ClientAuth::None {
            if !self.is_enabled(internal) {
                return Err(problem(
                    "public_tls.client_auth",
                    "asks for client certificates but the public port has no certificate \
                     (set public_tls.cert_file or tls.cert_file)",
                ));
            }
            if self.client_ca_file(internal).is_empty() {
                return Err(problem(
                    "public_tls.client_ca_file",
                    "must be set (or tls.ca_file) to check client certificates",
                ));
            }
        }
        Ok(())
    }

    /// The server side of the public port; `None` when it is plaintext.
    pub fn server(&self, internal: &TlsConfig) -> crate::error::Result<Option<ServerTls>> {
        if !self.is_enabled(internal) {
            return Ok(None);
        }
        let ca = (self.client_auth != ClientAuth::None)
            .then(|| PathBuf::from(self.client_ca_file(internal)));
        ServerTls::new(
            PathBuf::from(self.cert_file(internal)),
            PathBuf::from(self.key_file(internal)),
            ca,
            self.client_auth,
            internal.reload_interval(),
        )
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_files_or_none() {
        TlsConfig::default().validate().unwrap();
        let partial = TlsConfig {
            cert_file: "a.pem".into(),
            key_file: "a-key.pem".into(),
            ..TlsConfig::default()
        };
        assert_eq!(partial.validate().unwrap_err().field, "tls.ca_file");
        let interval = TlsConfig {
            reload_interval_ms: 1,
            ..TlsConfig::default()
        };
        assert_eq!(
            interval.validate().unwrap_err().field,
            "tls.reload_interval_ms"
        );
    }

    #[test]
    fn public_port_falls_back_to_the_process_files() {
        let internal = TlsConfig {
            cert_file: "gw.pem".into(),
            key_file: "gw-key.pem".into(),
            ca_file: "ca.pem".into(),
            ..TlsConfig::default()
        };
        let public = PublicTlsConfig {
            client_auth: ClientAuth::Required,
            ..PublicTlsConfig::default()
        };
        public.validate(&internal).unwrap();
        assert!(public.is_enabled(&internal));
        assert_eq!(public.client_ca_file(&internal), "ca.pem");
        let error = public.validate(&TlsConfig::default()).unwrap_err();
        assert_eq!(error.field, "public_tls.client_auth");
        let half = PublicTlsConfig {
            cert_file: "public.pem".into(),
            ..PublicTlsConfig::default()
        };
        assert_eq!(
            half.validate(&internal).unwrap_err().field,
            "public_tls.key_file"
        );
    }
}
