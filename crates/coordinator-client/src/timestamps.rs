//! A process's client of the timestamp oracle: callers ask for timestamps one by one, and the
//! client sends them to the coordinator leader in batches (one `GetTimestamps` request carries
//! every waiter of the process: all the shards of a node, all the requests of a gateway).
//!
//! **No timestamp is ever taken ahead of need.** A waiter is served only by a request sent
//! after it arrived, so its timestamp is allocated after its operation began; that is what
//! makes a revision order operations in real time. A timestamp prefetched or cached would be
//! older than the operation using it. While `requests_in_flight_max` requests are out, new
//! waiters gather and leave together in the next one.
//!
//! Bounds: the waiting queue, the waiters and timestamps per request, the requests in flight,
//! and each waiter's own deadline.

use cairn_proto::coordinator::v1 as pb;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient as GrpcClient;
use cairn_types::Revision;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::{Channel, Endpoint};

/// Waiters that may queue for a request before callers wait to queue.
pub const WAITERS_QUEUED_MAX: usize = 16_384;
/// Timestamps one request asks for at most (the oracle's own bound).
pub const TIMESTAMPS_PER_REQUEST_MAX: u32 = 1 << 16;
/// Pause before trying the coordinators again once every one refused.
const ROUND_PAUSE: Duration = Duration::from_millis(50);
/// Longest one `GetTimestamps` attempt may take, whatever `rpc_timeout` says: a healthy
/// oracle answers in milliseconds, and every write of the process waits on the attempt.
pub const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_millis(1_000);
/// How long an address that did not answer in time is tried only after every other one
/// (a hung, stopping or paused coordinator must not cost each request a full attempt).
const SUSPECT_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// No coordinator handed out timestamps before the deadline (no leader, unreachable).
    #[error("timestamp oracle unavailable: {0}")]
    Unavailable(String),
    /// The client is shut down.
    #[error("timestamp client stopped")]
    Stopped,
}

#[derive(Clone, Debug)]
pub struct TimestampClientConfig {
    /// Coordinator addresses (`host:port`; a DNS name may resolve to several).
    pub coordinators: Vec<String>,
    /// Requests to the oracle outstanding at once.
    pub requests_in_flight_max: usize,
    /// Longest one request may take before the next coordinator is tried.
    pub rpc_timeout: Duration,
    /// Local IP outgoing connections are bound to, if set.
    pub outbound_bind_ip: Option<std::net::IpAddr>,
    /// Plaintext, or TLS with this process's certificate.
    pub tls: cairn_tls::ClientTls,
}

struct Waiter {
    count: u32,
    deadline: Instant,
    reply: oneshot::Sender<Result<Range<Revision>, TimestampError>>,
}

/// Cheap to clone; every clone shares one queue and one dispatcher.
#[derive(Clone)]
pub struct TimestampClient {
    queue: mpsc::Sender<Waiter>,
    stats: Arc<TimestampStats>,
}

/// Counters an operator graphs: requests sent and the timestamps they carried (their ratio is
/// the mean batch), and the time waiters spent waiting.
#[derive(Debug, Default)]
pub struct TimestampStats {
    pub requests: std::sync::atomic::AtomicU64,
    pub timestamps: std::sync::atomic::AtomicU64,
    pub wait_micros_total: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
}

impl TimestampClient {
    /// Starts the dispatcher on the current Tokio runtime.
    pub fn start(config: TimestampClientConfig) -> Self {
        assert!(
            config.requests_in_flight_max >= 1,
            "at least one request in flight"
        );
        let (queue, waiting) = mpsc::channel(WAITERS_QUEUED_MAX);
        let stats = Arc::new(TimestampStats::default());
        let connection = Arc::new(Connection {
            config,
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
        });
        tokio::spawn(dispatch(waiting, connection, stats.clone()));
        Self { queue, stats }
    }

    pub fn stats(&self) -> &TimestampStats {
        &self.stats
    }

    /// One timestamp, allocated after this call began.
    pub async fn timestamp(&self, timeout: Duration) -> Result<Revision, TimestampError> {
        Ok(self.timestamps(1, timeout).await?.start)
    }

    /// `count` consecutive timestamps, allocated after this call began.
    pub async fn timestamps(
        &self,
        count: u32,
        timeout: Duration,
    ) -> Result<Range<Revision>, TimestampError> {
        assert!(
            (1..=TIMESTAMPS_PER_REQUEST_MAX).contains(&count),
            "{count} timestamps"
        );
        let started = Instant::now();
        let deadline = started + timeout;
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            count,
            deadline,
            reply,
        };
        let unavailable =
            || TimestampError::Unavailable(format!("no timestamp within {timeout:?}"));
        tokio::time::timeout_at(deadline.into(), self.queue.send(waiter))
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| TimestampError::Stopped)?;
        let result = tokio::time::timeout_at(deadline.into(), answer)
            .await
            .map_err(|_| unavailable())?
            .map_err(|_| TimestampError::Stopped)?;
        self.stats.wait_micros_total.fetch_add(
            started.elapsed().as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        result
    }
}

/// Sends the waiters in batches, at most `requests_in_flight_max` requests at a time.
async fn dispatch(
    mut waiting: mpsc::Receiver<Waiter>,
    connection: Arc<Connection>,
    stats: Arc<TimestampStats>,
) {
    let in_flight = Arc::new(Semaphore::new(connection.config.requests_in_flight_max));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Everyone who arrived while every request was out goes in this one.
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut total = first.count;
        let mut batch = vec![first];
        while let Ok(next) = waiting.try_recv() {
            if total + next.count > TIMESTAMPS_PER_REQUEST_MAX {
                // Too many for one request: it leads the next one.
                let connection = connection.clone();
                let stats = stats.clone();
                let full = std::mem::replace(&mut batch, vec![next]);
                let full_total = std::mem::replace(&mut total, batch[0].count);
                tokio::spawn(async move { serve(full, full_total, &connection, &stats).await });
                continue;
            }
            total += next.count;
            batch.push(next);
        }
        let connection = connection.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            serve(batch, total, &connection, &stats).await;
            drop(permit);
        });
    }
}

/// Asks the oracle for `total` timestamps and hands them out in the waiters' order.
async fn serve(batch: Vec<Waiter>, total: u32, connection: &Connection, stats: &TimestampStats) {
    let deadline = batch
        .iter()
        .map(|waiter| waiter.deadline)
        .max()
        .expect("a batch is never empty");
    stats
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stats
        .timestamps
        .fetch_add(u64::from(total), std::sync::atomic::Ordering::Relaxed);
    match connection.request(total, deadline).await {
        Ok(first) => {
            let mut next = first;
            for waiter in batch {
                let end = next + u64::from(waiter.count);
                let _ = waiter.reply.send(Ok(Revision(next)..Revision(end)));
                next = end;
            }
        }
        Err(error) => {
            stats
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for waiter in batch {
                let _ = waiter.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Where the oracle is, and one HTTP/2 connection per coordinator address.
struct Connection {
    config: TimestampClientConfig,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Addresses that did not answer in time, and when that happened.
    suspects: Mutex<HashMap<String, Instant>>,
}

impl Connection {
    fn channel(&self, address: &str) -> Option<Channel> {
        let mut channels = self.channels.lock().expect("channels lock poisoned");
        if let Some(channel) = channels.get(address) {
            return Some(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect_timeout(self.config.rpc_timeout)
            .tcp_nodelay(true);
        let channel = self
            .config
            .tls
            .connect_lazy(endpoint, self.config.outbound_bind_ip);
        channels.insert(address.to_string(), channel.clone());
        Some(channel)
    }

    fn is_suspect(&self, address: &str) -> bool {
        let mut suspects = self.suspects.lock().expect("suspects lock poisoned");
        suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        suspects.contains_key(address)
    }

    fn suspect(&self, address: &str) {
        self.suspects
            .lock()
            .expect("suspects lock poisoned")
            .insert(address.to_string(), Instant::now());
    }

    /// The order to try addresses in, last first (callers pop): the known leader, then
    /// every configured address, then the ones that recently did not answer.
    async fn candidates(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in &self.config.coordinators {
            if let Ok(addresses) = tokio::net::lookup_host(entry.as_str()).await {
                out.extend(addresses.map(|address| address.to_string()));
            }
        }
        out.sort();
        out.dedup();
        if let Some(leader) = self.leader.lock().expect("leader lock poisoned").clone() {
            out.retain(|address| *address != leader);
            out.push(leader);
        }
        // A stable sort: suspects move to the front (tried last), the rest keep their order.
        out.sort_by_key(|address| !self.is_suspect(address));
        out
    }

    /// The first of `count` timestamps, from whichever coordinator leads, by `deadline`.
    async fn request(&self, count: u32, deadline: Instant) -> Result<u64, TimestampError> {
        let mut last_error = String::from("no coordinator address resolved");
        while Instant::now() < deadline {
            let mut queue = self.candidates().await;
            while let Some(address) = queue.pop() {
                let Some(channel) = self.channel(&address) else {
                    continue;
                };
                let timeout = self
                    .config
                    .rpc_timeout
                    .min(ATTEMPT_TIMEOUT_MAX)
                    .min(deadline.saturating_duration_since(Instant::now()));
                if timeout.is_zero() {
                    break;
                }
                let mut request = tonic::Request::new(pb::GetTimestampsRequest { count });
                request.set_timeout(timeout);
                let attempt_started = Instant::now();
                let answer =
                    tokio::time::timeout(timeout, GrpcClient::new(channel).get_timestamps(request))
                        .await;
                match answer {
                    Ok(Ok(response)) => {
                        let response = response.into_inner();
                        if response.count != count || response.first == 0 {
                            last_error = format!("{address} answered a malformed batch");
                            continue;
                        }
                        *self.leader.lock().expect("leader lock poisoned") = Some(address);
                        return Ok(response.first);
                    }
                    Ok(Err(status)) => {
                        // Every failure is tried again until the deadline: asking for
                        // timestamps twice only skips some. Only the leader hint is read.
                        let hint = cairn_proto::retry::classify(&status)
                            .cause
                            .leader_address()
                            .map(str::to_string);
                        if let Some(hint) = hint {
                            if hint != address && !queue.contains(&hint) {
                                // A hint naming an address that just did not answer is
                                // likely stale (the followers have not elected yet): it
                                // waits behind the others.
                                if self.is_suspect(&hint) {
                                    queue.insert(0, hint);
                                } else {
                                    queue.push(hint);
                                }
                            }
                        }
                        // The request's own deadline may fire before ours: either way the
                        // coordinator did not answer in time.
                        if status.code() == tonic::Code::DeadlineExceeded
                            || attempt_started.elapsed() >= timeout
                        {
                            self.suspect(&address);
                        }
                        last_error = format!("{address}: {}", status.message());
                    }
                    Err(_) => {
                        self.suspect(&address);
                        last_error = format!("{address}: no answer within {timeout:?}");
                    }
                }
                let mut leader = self.leader.lock().expect("leader lock poisoned");
                if leader.as_deref() == Some(address.as_str()) {
                    *leader = None;
                }
            }
            let pause = ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        Err(TimestampError::Unavailable(last_error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(leader: &str) -> Connection {
        Connection {
            config: TimestampClientConfig {
                coordinators: vec![
                    "127.0.0.1:1".into(),
                    "127.0.0.1:2".into(),
                    "127.0.0.1:3".into(),
                ],
                requests_in_flight_max: 1,
                rpc_timeout: Duration::from_secs(5),
                outbound_bind_ip: None,
                tls: cairn_tls::ClientTls::plaintext(),
            },
            leader: Mutex::new(Some(leader.into())),
            channels: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
        }
    }

    #[tokio::test]
    async fn a_coordinator_that_did_not_answer_is_tried_last_even_when_it_led() {
        let connection = connection("127.0.0.1:2");
        // Callers pop: the last address is tried first.
        let order = connection.candidates().await;
        assert_eq!(order.last().map(String::as_str), Some("127.0.0.1:2"));
        connection.suspect("127.0.0.1:2");
        let order = connection.candidates().await;
        assert_eq!(
            order.first().map(String::as_str),
            Some("127.0.0.1:2"),
            "{order:?}"
        );
        assert_eq!(order.len(), 3);
    }

    #[tokio::test]
    async fn an_attempt_on_a_silent_coordinator_ends_within_the_attempt_bound() {
        // Accepts connections and never answers: a hung coordinator.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = silent.local_addr().expect("address").to_string();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let connection = Connection {
            config: TimestampClientConfig {
                coordinators: vec![address.clone()],
                requests_in_flight_max: 1,
                rpc_timeout: Duration::from_secs(30),
                outbound_bind_ip: None,
                tls: cairn_tls::ClientTls::plaintext(),
            },
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
        };
        let started = Instant::now();
        let deadline = started + ATTEMPT_TIMEOUT_MAX * 3 / 2;
        let answer = connection.request(1, deadline).await;
        assert!(matches!(answer, Err(TimestampError::Unavailable(_))));
        assert!(
            started.elapsed() < ATTEMPT_TIMEOUT_MAX * 3,
            "took {:?}",
            started.elapsed()
        );
        assert!(connection.is_suspect(&address));
        held.abort();
    }
}
