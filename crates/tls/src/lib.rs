//! Transport security for every Cairn connection (D80-D84, docs/security.md).
//!
//! - [`TlsConfig`]: the `[tls]` section every binary reads (PEM file paths, reload interval).
//! - [`files`]: reading and checking those files; a bad file fails start-up naming it.
//! - [`ServerTls`] and [`incoming`]: a tonic server's connections, TLS or plaintext, with the
//!   peer's identity (its roles and common name) attached to every request.
//! - [`ClientTls`]: tonic channels that speak TLS and present this process's certificate.
//! - [`RolePolicy`] / [`RoleLayer`]: which certificate roles may call which service.
//!
//! Certificates and keys are re-read when their files change (checked at most once per
//! `reload_interval_ms`), so a certificate rotated in place is served to new connections
//! without a restart. This crate knows nothing of Cairn's services beyond the role names; it
//! must not depend on a server crate (the SDK uses it).

mod client;
pub mod config;
#[cfg(any(test, feature = "dev-certs"))]
pub mod dev_certs;
mod error;
pub mod files;
mod reload;
mod role;
mod role_layer;
mod server;
#[cfg(test)]
mod tests;

pub use client::ClientTls;
pub use config::{ClientAuth, PublicTlsConfig, TlsConfig};
pub use error::{Problem, TlsError};
pub use role::{PeerIdentity, Role, ROLE_URI_PREFIX};
pub use role_layer::{RoleLayer, RolePolicy, RoleService};
pub use server::{incoming, Connection, PeerInfo, ServerTls};

/// The crypto every Cairn TLS connection uses: ring's (see the crate's manifest for why).
/// rustls marks it deprecated for lacking post-quantum key exchange, which only aws-lc has.
#[allow(deprecated)]
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The one application protocol Cairn speaks over TLS: gRPC's HTTP/2.
pub(crate) const ALPN_H2: &[u8] = b"h2";
