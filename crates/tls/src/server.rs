//! The server side: each accepted TCP connection goes through the TLS handshake (with the
//! certificate current at that moment) before tonic sees it, and carries the peer's identity
//! into every request's extensions as [`PeerInfo`].
//!
//! tonic's own `ServerTlsConfig` holds one certificate for the server's life; serving from
//! this stream instead (`serve_with_incoming_shutdown`) is what lets a rotated certificate be
//! used without a restart.

use crate::config::ClientAuth;
use crate::error::{Result, TlsError};
use crate::reload::Reloading;
use crate::role::PeerIdentity;
use crate::{files, provider, ALPN_H2};
use futures::StreamExt;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::TcpListenerStream;

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the listen backlog.
const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// The TLS side of one listener: its certificate, and which client certificates it asks for
/// and accepts. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
}

/// Serves one certificate, whatever the client asks for.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ServerTls {
    /// Reads and checks the files now (an error names the bad file); re-reads them when
    /// they change, at most once per `reload_interval`. `client_ca` is needed unless
    /// `client_auth` is `None`.
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        client_ca: Option<PathBuf>,
        client_auth: ClientAuth,
        reload_interval: Duration,
    ) -> Result<Self> {
        let mut watched = vec![cert.clone(), key.clone()];
        watched.extend(client_ca.clone());
        let config = Reloading::new(watched, reload_interval, move || {
            build(&cert, &key, client_ca.as_deref(), client_auth)
        })?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config.get()
    }
}

fn build(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
    client_auth: ClientAuth,
) -> Result<ServerConfig> {
    let identity = files::load_identity(cert, key)?;
    let setup = |error: rustls::Error| TlsError::Setup(error.to_string());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(setup)?;
    let builder = match (client_auth, client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(files::load_roots(ca)?, provider());
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|error| TlsError::Setup(error.to_string()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(identity)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// What a request's connection tells of its peer; in every request's extensions
/// (`request.extensions().get::<PeerInfo>()`).
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub remote_address: Option<SocketAddr>,
    /// The identity of the peer's verified certificate; `None` on a plaintext connection or
    /// when the peer presented none.
    pub identity: Option<Arc<PeerIdentity>>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl PeerInfo {
    /// The peer of `request`, if it came through [`incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, TLS or plaintext.
pub struct Connection {
    io: Io,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// The connections of `listener`: TLS-handshaken with `tls`, or plaintext when it is `None`.
/// A connection whose handshake fails (a plaintext client, a certificate from another CA,
/// none where one is required) is logged and closed; the listener goes on.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> impl futures::Stream<Item = io::Result<Connection>> + Send + 'static {
    TcpListenerStream::new(listener)
        .map(move |accepted| {
            let tls = tls.clone();
            async move {
                let tcp = match accepted {
                    Ok(tcp) => tcp,
                    Err(error) => return Some(Err(error)),
                };
                // Replies must not wait for Nagle's algorithm: every request is latency-bound.
                let _ = tcp.set_nodelay(true);
                let remote_address = tcp.peer_addr().ok();
                let Some(tls) = tls else {
                    let info = PeerInfo {
                        remote_address,
                        ..PeerInfo::default()
                    };
                    return Some(Ok(Connection {
                        io: Io::Plain(tcp),
                        info,
                    }));
                };
                let acceptor = TlsAcceptor::from(tls.current());
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| Arc::new(PeerIdentity::from_certificate(leaf)));
                        let info = PeerInfo {
                            remote_address,
                            identity,
                            tls: true,
                        };
                        Some(Ok(Connection {
                            io: Io::Tls(Box::new(stream)),
                            info,
                        }))
                    }
                    Ok(Err(error)) => {
                        tracing::info!(peer = ?remote_address, %error, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::info!(peer = ?remote_address, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(HANDSHAKES_IN_FLIGHT_MAX)
        .filter_map(std::future::ready)
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_flush(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}
