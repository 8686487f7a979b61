//! etcd v3 as a [`KvTarget`], through the `etcd-client` crate.
//!
//! The connection is a tonic channel made by `cairn-tls` (plaintext, or TLS with rustls and
//! ring, the stack the Cairn SDK uses) and handed to etcd-client (its `raw-channel`
//! feature). etcd-client's own TLS feature would turn on tonic's TLS for the whole workspace
//! and change every crate's build of tonic; this way both systems' clients also pay the same
//! TLS costs.

use crate::target::{ErrorKind, KvTarget, PairWrite, TargetError};
use cairn_client::TlsConfig;
use cairn_tls::ClientTls;
use etcd_client::{
    Channel, Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp,
};
use std::time::Duration;
use tonic::transport::Endpoint;

/// Time to open the connection (and run the TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the TLS files are looked at again for a new connection (as the SDK does).
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// One etcd client connection. Reads are linearizable unless `serializable` (etcd's
/// default `Range` is linearizable, as Cairn's `Get` is).
#[derive(Clone)]
pub struct EtcdTarget {
    kv: KvClient,
    serializable: bool,
}

impl EtcdTarget {
    /// Connects now to one member, `host:port` (or `http://` / `https://host:port`), through
    /// TLS when `tls` is given.
    pub async fn connect(
        endpoint: &str,
        serializable: bool,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, TargetError> {
        let connector = match tls {
            Some(tls) => ClientTls::new(
                tls.ca_file.clone(),
                tls.identity.clone(),
                TLS_RELOAD_INTERVAL,
            )
            .map_err(|error| setup_error(format!("TLS: {error}")))?,
            None => ClientTls::plaintext(),
        };
        let endpoint = member_endpoint(endpoint, connector.is_enabled())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = connector
            .connect(endpoint, None)
            .await
            .map_err(|error| TargetError {
                system: "etcd",
                kind: ErrorKind::Unavailable,
                message: format!("connecting: {error}"),
            })?;
        let client = Client::from_channel(Channel::Tonic(channel), Some(ConnectOptions::new()))
            .await
            .map_err(error)?;
        Ok(Self {
            kv: client.kv_client(),
            serializable,
        })
    }
}

/// The endpoint of one member. It keeps the `http` scheme even for TLS: the handshake is
/// the cairn-tls connector's business, and tonic refuses an `https` endpoint it has no TLS
/// configuration for. `https://` without TLS configured is refused, as cairnctl does.
fn member_endpoint(address: &str, tls: bool) -> Result<Endpoint, TargetError> {
    let trimmed = address.trim();
    let host_port = if let Some(rest) = trimmed.strip_prefix("http://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("https://") {
        if !tls {
            return Err(setup_error(format!(
                "{address:?} is https://, but no --cacert was given"
            )));
        }
        rest
    } else {
        trimmed
    };
    Endpoint::from_shared(format!("http://{host_port}"))
        .ok()
        .filter(|e| e.uri().port().is_some() && e.uri().host().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| setup_error(format!("{address:?} is not a host:port address")))
}

fn setup_error(message: String) -> TargetError {
    TargetError {
        system: "etcd",
        kind: ErrorKind::Rejected,
        message,
    }
}

impl KvTarget for EtcdTarget {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), TargetError> {
        // A clone shares the channel; the generated client needs `&mut self`.
        let mut kv = self.kv.clone();
        kv.put(key, value, None).await.map(|_| ()).map_err(error)
    }

    async fn get(&self, key: Vec<u8>) -> Result<bool, TargetError> {
        let mut kv = self.kv.clone();
        let options = self
            .serializable
            .then(|| GetOptions::new().with_serializable());
        kv.get(key, options)
            .await
            .map(|response| !response.kvs().is_empty())
            .map_err(error)
    }

    async fn read_revision(&self, key: Vec<u8>) -> Result<u64, TargetError> {
        let mut kv = self.kv.clone();
        let response = kv.get(key, None).await.map_err(error)?;
        Ok(response
            .kvs()
            .first()
            .map_or(0, |kv| u64::try_from(kv.mod_revision()).unwrap_or(0)))
    }

    async fn write_pair_if_unchanged(&self, pair: [PairWrite; 2]) -> Result<bool, TargetError> {
        let [a, b] = pair;
        let revision = |read: u64| i64::try_from(read).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([
                Compare::mod_revision(a.key.clone(), CompareOp::Equal, revision(a.read_revision)),
                Compare::mod_revision(b.key.clone(), CompareOp::Equal, revision(b.read_revision)),
            ])
            .and_then([
                TxnOp::put(a.key, a.value, None),
                TxnOp::put(b.key, b.value, None),
            ]);
        let mut kv = self.kv.clone();
        kv.txn(txn)
            .await
            .map(|response| response.succeeded())
            .map_err(error)
    }
}

fn error(error: etcd_client::Error) -> TargetError {
    let kind = match &error {
        // gRPC codes by number: etcd-client's tonic may differ from the workspace's.
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            4 => ErrorKind::Timeout,
            14 => ErrorKind::Unavailable,
            3 | 5 | 6 | 7 | 8 | 9 | 11 => ErrorKind::Rejected,
            _ => ErrorKind::Other,
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Other,
    };
    TargetError {
        system: "etcd",
        kind,
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_endpoints_keep_the_http_scheme() {
        let uri =
            |address: &str, tls: bool| member_endpoint(address, tls).map(|e| e.uri().to_string());
        assert_eq!(
            uri("127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379/"
        );
        assert_eq!(
            uri("http://127.0.0.1:2379", false).unwrap(),
            "http://127.0.0.1:2379/"
        );
        assert_eq!(
            uri("https://127.0.0.1:2379", true).unwrap(),
            "http://127.0.0.1:2379/"
        );
        assert!(
            uri("https://127.0.0.1:2379", false).is_err(),
            "https without a CA"
        );
        for bad in ["127.0.0.1", ":2379", "", "not an address"] {
            assert!(uri(bad, false).is_err(), "{bad:?}");
        }
    }
}
