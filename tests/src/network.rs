//! Network faults between the test cluster's processes, without `tc netem`: a TCP proxy in
//! front of every storage node, under the test's control.
//!
//! A proxied node listens on a private port and advertises its proxy's address (same IP,
//! the cluster's public port), so every connection to it — Raft from other nodes, KV from
//! gateways, admin from coordinators — goes through the proxy. Every process binds its
//! outgoing connections to its own loopback IP (`outbound_bind_ip`), so the proxy knows a
//! connection's link from its source IP: 127.0.0.A connecting to node B's proxy is link
//! A→B. Each direction of a connection is checked against the fault of its own direction:
//! bytes from the caller against A→B, answers against B→A. So a one-way fault holds only
//! one direction while the other flows.
//!
//! The harness's own calls (status, local reads) go straight to the private port: the
//! observer is never partitioned. This module must not decide what a test checks; it only
//! moves (or withholds) bytes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Bytes read from a socket at once; one chunk is the unit of delay and drop.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read but not yet delivered, per direction of a connection (back-pressure beyond).
const CHUNKS_IN_FLIGHT_MAX: usize = 64;
/// Open proxied connections across the whole cluster; more are refused (closed at once).
const CONNECTIONS_MAX: usize = 1024;

/// What happens to the bytes travelling in one direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum LinkFault {
    /// Delivered at once.
    #[default]
    Pass,
    /// Held and never delivered (a partition). The connection is cut as soon as the faults
    /// change (a heal), so its endpoints reconnect, as after a real partition's timeouts.
    Blackhole,
    /// Each chunk is delivered this much later than it was read.
    Delay(Duration),
    /// With this probability per chunk, the connection is cut, losing what was in flight.
    Drop(f64),
}

/// The fault table and the proxies. Shared by the proxy tasks; the `Cluster` owns one.
pub struct Network {
    faults: Mutex<HashMap<(IpAddr, IpAddr), LinkFault>>,
    /// Bumped whenever the faults change; held connections wait on it.
    generation: watch::Sender<u64>,
    proxies: Mutex<Vec<AbortHandle>>,
    connections: AtomicUsize,
}

impl Network {
    pub fn new() -> Arc<Network> {
        Arc::new(Network {
            faults: Mutex::default(),
            generation: watch::Sender::new(0),
            proxies: Mutex::default(),
            connections: AtomicUsize::new(0),
        })
    }

    /// Starts a proxy on `listen` that forwards to `upstream`: the process at `upstream`
    /// is reached as `destination` (its IP) by the fault table. Needs a tokio runtime.
    pub fn add_proxy(self: &Arc<Self>, listen: SocketAddr, upstream: SocketAddr) {
        let listener = std::net::TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("cannot bind the proxy on {listen}: {e}"));
        listener.set_nonblocking(true).expect("non-blocking proxy");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let network = self.clone();
        let destination = listen.ip();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if network.connections.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
                    tracing::warn!(%listen, "proxy refuses a connection: too many open");
                    continue;
                }
                tokio::spawn(
                    network
                        .clone()
                        .forward(inbound, peer.ip(), destination, upstream),
                );
            }
        });
        self.proxies
            .lock()
            .expect("proxy list")
            .push(task.abort_handle());
    }

    /// Sets the fault of the direction `from` → `to` (by process IP).
    pub fn set(&self, from: IpAddr, to: IpAddr, fault: LinkFault) {
        tracing::info!(%from, %to, ?fault, "link fault");
        let mut faults = self.faults.lock().expect("fault table");
        if fault == LinkFault::Pass {
            faults.remove(&(from, to));
        } else {
            faults.insert((from, to), fault);
        }
        drop(faults);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Every link passes again; held connections are cut so their endpoints reconnect.
    pub fn heal(&self) {
        tracing::info!("heal every link");
        self.faults.lock().expect("fault table").clear();
        self.generation.send_modify(|g| *g += 1);
    }

    fn fault(&self, from: IpAddr, to: IpAddr) -> LinkFault {
        self.faults
            .lock()
            .expect("fault table")
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    /// Stops accepting connections (open ones end with their processes).
    pub fn shutdown(&self) {
        for proxy in self.proxies.lock().expect("proxy list").drain(..) {
            proxy.abort();
        }
    }

    async fn forward(
        self: Arc<Self>,
        inbound: TcpStream,
        from: IpAddr,
        to: IpAddr,
        upstream: SocketAddr,
    ) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let _open = OpenConnection(&self.connections);
        // A process that is down refuses the proxy, and the caller sees its connection
        // closed, as it would without the proxy.
        let Ok(outbound) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (inbound_read, inbound_write) = inbound.into_split();
        let (outbound_read, outbound_write) = outbound.into_split();
        // Either direction ending (end of stream, error, cut) ends the connection: dropping
        // the halves closes both sockets.
        tokio::select! {
            _ = self.pump(inbound_read, outbound_write, from, to) => {}
            _ = self.pump(outbound_read, inbound_write, to, from) => {}
        }
    }

    /// Copies one direction, `from` → `to`, applying that direction's fault to each chunk.
    async fn pump(
        &self,
        mut reader: OwnedReadHalf,
        writer: OwnedWriteHalf,
        from: IpAddr,
        to: IpAddr,
    ) {
        let (chunks, queue) = mpsc::channel(CHUNKS_IN_FLIGHT_MAX);
        let mut delivering = tokio::spawn(deliver(queue, writer));
        let _stop = AbortOnDrop(delivering.abort_handle());
        let mut generation = self.generation.subscribe();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let read = tokio::select! {
                read = reader.read(&mut buffer) => read,
                _ = &mut delivering => return,
            };
            let length = match read {
                Ok(0) | Err(_) => break,
                Ok(length) => length,
            };
            let due = match self.fault(from, to) {
                LinkFault::Pass => Instant::now(),
                LinkFault::Delay(delay) => Instant::now() + delay,
                LinkFault::Drop(probability) => {
                    if rand::random_bool(probability.clamp(0.0, 1.0)) {
                        return;
                    }
                    Instant::now()
                }
                LinkFault::Blackhole => {
                    // Hold these bytes (and everything after them) until the faults change;
                    // then cut the connection rather than deliver stale bytes.
                    generation.borrow_and_update();
                    if self.fault(from, to) == LinkFault::Blackhole {
                        let _ = generation.changed().await;
                    }
                    return;
                }
            };
            if chunks.send((due, buffer[..length].to_vec())).await.is_err() {
                return;
            }
        }
        // End of stream: deliver what was read, then pass the end on.
        drop(chunks);
        let _ = delivering.await;
    }
}

/// Writes chunks when they are due; on the end of the queue, half-closes the socket.
async fn deliver(mut queue: mpsc::Receiver<(Instant, Vec<u8>)>, mut writer: OwnedWriteHalf) {
    while let Some((due, chunk)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

struct OpenConnection<'a>(&'a AtomicUsize);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An echo server on 127.0.0.2 behind a proxy on 127.0.0.2 (another port), and a
    /// client bound to 127.0.0.1: link 127.0.0.1 → 127.0.0.2.
    async fn echo_behind_proxy() -> (Arc<Network>, SocketAddr) {
        let server = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                        if socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let listen = probe.local_addr().unwrap();
        drop(probe);
        let network = Network::new();
        network.add_proxy(listen, upstream);
        (network, listen)
    }

    async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(to).await.unwrap()
    }

    async fn echoes(stream: &mut TcpStream, within: Duration) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buffer = [0u8; 4];
        matches!(
            tokio::time::timeout(within, stream.read_exact(&mut buffer)).await,
            Ok(Ok(_)) if &buffer == b"ping"
        )
    }

    #[tokio::test]
    async fn a_blackholed_link_holds_bytes_and_a_heal_cuts_the_connection() {
        let (network, proxy) = echo_behind_proxy().await;
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut stream = connect_from("127.0.0.1", proxy).await;
        assert!(echoes(&mut stream, Duration::from_secs(5)).await);

        // One way: only the answers (b → a) are held.
        network.set(b, a, LinkFault::Blackhole);
        assert!(!echoes(&mut stream, Duration::from_millis(300)).await);
        network.heal();
        let mut buffer = [0u8; 16];
        let ended = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "the held connection is cut at heal: {ended:?}"
        );
        let mut stream = connect_from("127.0.0.1", proxy).await;
        assert!(
            echoes(&mut stream, Duration::from_secs(5)).await,
            "a new connection passes"
        );

        // A link from another source is not affected by 127.0.0.1's fault.
        network.set(a, b, LinkFault::Blackhole);
        let mut other = connect_from("127.0.0.3", proxy).await;
        assert!(echoes(&mut other, Duration::from_secs(5)).await);
        assert!(!echoes(&mut stream, Duration::from_millis(300)).await);
        network.shutdown();
    }

    #[tokio::test]
    async fn a_delayed_link_delivers_late_and_a_dropping_link_cuts() {
        let (network, proxy) = echo_behind_proxy().await;
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        network.set(a, b, LinkFault::Delay(Duration::from_millis(200)));
        let mut stream = connect_from("127.0.0.1", proxy).await;
        let started = std::time::Instant::now();
        assert!(echoes(&mut stream, Duration::from_secs(5)).await);
        assert!(started.elapsed() >= Duration::from_millis(200));

        network.set(a, b, LinkFault::Drop(1.0));
        assert!(!echoes(&mut stream, Duration::from_secs(1)).await);
        network.shutdown();
    }
}
