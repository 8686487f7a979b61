//! The client side: tonic channels whose connections are TLS, verify the server against the
//! configured CA (and its name against the address dialled), and present this process's
//! certificate when the server asks. Each new connection takes the files as they are then
//! (see `reload`), so a rotated client certificate is used without a restart.

use crate::error::Result;
use crate::reload::Reloading;
use crate::{files, provider, ALPN_H2};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How a process connects: plaintext, or TLS with the given trust and identity. Cheap to
/// clone; `ClientTls::default()` is plaintext.
#[derive(Clone, Default)]
pub struct ClientTls {
    config: Option<Arc<Reloading<ClientConfig>>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.config.is_some() {
            "ClientTls(tls)"
        } else {
            "ClientTls(plaintext)"
        })
    }
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientTls {
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS trusting the CA certificates in `ca` and presenting `identity` (certificate and
    /// key files) when asked. The files are read and checked now.
    pub fn new(
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
        reload_interval: Duration,
    ) -> Result<Self> {
        let mut watched = vec![ca.clone()];
        if let Some((cert, key)) = &identity {
            watched.extend([cert.clone(), key.clone()]);
        }
        let config = Reloading::new(watched, reload_interval, move || {
            let roots = files::load_roots(&ca)?;
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|error| crate::TlsError::Setup(error.to_string()))?
                .with_root_certificates(roots);
            let mut config = match &identity {
                Some((cert, key)) => builder
                    .with_client_cert_resolver(Arc::new(Fixed(files::load_identity(cert, key)?))),
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![ALPN_H2.to_vec()];
            Ok(config)
        })?;
        Ok(Self {
            config: Some(Arc::new(config)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.config.is_some()
    }

    /// A channel to `endpoint` (built from `http://host:port`) that connects on first use,
    /// through TLS when enabled, from `local_address` when given.
    ///
    /// The endpoint keeps the `http` scheme even over TLS: TLS is this connector's business,
    /// and tonic would refuse an `https` endpoint without its own TLS configuration.
    pub fn connect_lazy(&self, endpoint: Endpoint, local_address: Option<IpAddr>) -> Channel {
        match &self.config {
            None => endpoint.local_address(local_address).connect_lazy(),
            Some(config) => {
                endpoint.connect_with_connector_lazy(self.connector(config, local_address))
            }
        }
    }

    /// Like [`connect_lazy`](Self::connect_lazy), connecting now.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        local_address: Option<IpAddr>,
    ) -> std::result::Result<Channel, tonic::transport::Error> {
        match &self.config {
            None => endpoint.local_address(local_address).connect().await,
            Some(config) => {
                endpoint
                    .connect_with_connector(self.connector(config, local_address))
                    .await
            }
        }
    }

    fn connector(
        &self,
        config: &Arc<Reloading<ClientConfig>>,
        local_address: Option<IpAddr>,
    ) -> TlsConnector {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_local_address(local_address);
        TlsConnector {
            tcp,
            config: config.clone(),
        }
    }
}

/// Opens a TCP connection and runs the TLS handshake on it, naming the host dialled.
#[derive(Clone)]
struct TlsConnector {
    tcp: HttpConnector,
    config: Arc<Reloading<ClientConfig>>,
}

type Connected = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for TlsConnector {
    type Response = Connected;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Connected, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        tower::Service::<Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connect = tower::Service::<Uri>::call(&mut self.tcp, uri);
        let config = self.config.get();
        Box::pin(async move {
            let server_name = ServerName::try_from(host.clone())
                .map_err(|error| format!("{host:?} is not a valid TLS server name: {error}"))?;
            let tcp = connect.await?.into_inner();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
