//! The gateway's side of auth (D85-D89, docs/security.md): it keeps a copy of the
//! coordinator's auth state, refreshed every `auth_refresh_interval_ms`, identifies each
//! caller (a token in the `authorization` metadata, else the client certificate's common
//! name), and checks every request's keys before anything is sent to a node.
//!
//! Until the first state arrives the gateway cannot tell whether auth is on, so it answers
//! UNAVAILABLE rather than guess (it fails closed). When the coordinator cannot be reached
//! later, the last state stays in force for `auth_state_max_staleness_ms`; past that, while
//! auth is on, requests are refused with UNAVAILABLE, so a permission revoked meanwhile never
//! works longer than that bound on a gateway cut off from the coordinators (D66).

mod accesses;

pub use accesses::{Accesses, RequestAccesses};

use cairn_auth::{Access, AuthState, KeyRange};
use cairn_coordinator_client::CoordinatorClient;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
use tonic::{Request, Status};

/// The metadata key a token travels in, as `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";
const BEARER: &str = "Bearer ";

pub struct AuthGate {
    state: watch::Receiver<Option<Arc<AuthState>>>,
    /// Wakes the refresh loop at once (after this gateway passed a change on).
    refresh_now: Arc<Notify>,
    /// Longest a request waits for the first state.
    first_state_timeout: Duration,
    /// When the coordinator last answered (changed or not), in ms since `started`.
    read_at_ms: Arc<AtomicU64>,
    started: Instant,
    /// Longest the state stays in force without the coordinator confirming it.
    max_staleness: Duration,
}

/// Whether a state last confirmed `since_read` ago may still decide requests: while auth is
/// off any age serves (nothing is being protected), while it is on at most `max_staleness`.
pub fn stale_refusal(
    enabled: bool,
    since_read: Duration,
    max_staleness: Duration,
) -> Option<Status> {
    (enabled && since_read > max_staleness).then(|| {
        Status::unavailable(format!(
            "the gateway has not reached a coordinator for {} ms, so it cannot tell whether \
             permissions changed; with auth on it refuses requests once the auth state is older \
             than auth_state_max_staleness_ms ({} ms)",
            since_read.as_millis(),
            max_staleness.as_millis()
        ))
    })
}

impl AuthGate {
    /// Starts the refresh loop: asks the coordinator every `interval` whether the state
    /// changed since the revision held.
    pub fn start(
        mut coordinator: CoordinatorClient,
        interval: Duration,
        first_state_timeout: Duration,
        max_staleness: Duration,
    ) -> Arc<Self> {
        let (sender, state) = watch::channel(None);
        let refresh_now = Arc::new(Notify::new());
        let wake = refresh_now.clone();
        let started = Instant::now();
        let read_at_ms = Arc::new(AtomicU64::new(0));
        let read_at = read_at_ms.clone();
        let mark_read =
            move || read_at.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut revision = 0;
            loop {
                match coordinator.auth_state(revision).await {
                    Ok(answer) if answer.unchanged && revision != 0 => mark_read(),
                    Ok(answer) => match AuthState::try_from(&answer) {
                        Ok(next) => {
                            if next.revision != revision {
                                tracing::info!(
                                    revision = next.revision,
                                    enabled = next.enabled,
                                    users = next.users.len(),
                                    roles = next.roles.len(),
                                    "auth state in force"
                                );
                            }
                            revision = next.revision;
                            mark_read();
                            sender.send_replace(Some(Arc::new(next)));
                        }
                        Err(error) => {
                            tracing::warn!(%error, "ignoring an auth state that does not decode")
                        }
                    },
                    Err(status) => {
                        tracing::warn!(%status, "reading the auth state failed; the last one stays in force")
                    }
                }
                if sender.is_closed() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = wake.notified() => {}
                }
            }
        });
        Arc::new(Self {
            state,
            refresh_now,
            first_state_timeout,
            read_at_ms,
            started,
            max_staleness,
        })
    }

    /// Asks for the state again now and waits (at most `first_state_timeout`) until it is at
    /// `revision` or later: after a change this gateway passed on, its caller's next request
    /// sees the change.
    pub async fn refresh_to(&self, revision: u64) {
        self.refresh_now.notify_one();
        let mut receiver = self.state.clone();
        let caught_up = receiver.wait_for(|state| {
            state
                .as_ref()
                .is_some_and(|state| state.revision >= revision)
        });
        if tokio::time::timeout(self.first_state_timeout, caught_up)
            .await
            .is_err()
        {
            tracing::warn!(
                revision,
                "the auth change is not in force on this gateway yet"
            );
        }
    }

    /// The state in force, waiting for the first one; refused once it is too old to trust
    /// while auth is on (`stale_refusal`).
    pub async fn state(&self) -> Result<Arc<AuthState>, Status> {
        let mut receiver = self.state.clone();
        let wait = receiver.wait_for(Option::is_some);
        let state = match tokio::time::timeout(self.first_state_timeout, wait).await {
            Ok(Ok(state)) => state.clone(),
            _ => None,
        };
        let state = state.ok_or_else(|| {
            Status::unavailable("the gateway has not read the auth state from the coordinator yet")
        })?;
        let read_at = Duration::from_millis(self.read_at_ms.load(Ordering::Relaxed));
        let since_read = self.started.elapsed().saturating_sub(read_at);
        match stale_refusal(state.enabled, since_read, self.max_staleness) {
            Some(refusal) => Err(refusal),
            None => Ok(state),
        }
    }

    /// The user of `request`: its token's, else its client certificate's common name; `None`
    /// without credentials. While auth is on, bad credentials are refused; while it is off
    /// they are ignored (as etcd), and a certificate's name is passed on as given.
    pub fn identify<T>(state: &AuthState, request: &Request<T>) -> Result<Option<String>, Status> {
        if let Some(value) = request.metadata().get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix(BEARER))
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization metadata is not `Bearer <token>`")
                });
            let checked = token.and_then(|token| {
                cairn_auth::token::verify(state, token.trim(), now_ms())
                    .map_err(Status::from)
                    .map(|claims| claims.user)
            });
            return match checked {
                Ok(user) => Ok(Some(user)),
                Err(status) if state.enabled => Err(status),
                Err(_) => Ok(None),
            };
        }
        let common_name = cairn_tls::PeerInfo::of(request)
            .and_then(|peer| peer.identity.as_ref())
            .and_then(|identity| identity.common_name.clone());
        match common_name {
            Some(user) if state.enabled && !state.users.contains_key(&user) => {
                Err(Status::unauthenticated(format!(
                    "the client certificate's user {user:?} is not a user of this cluster"
                )))
            }
            other => Ok(other),
        }
    }

    /// The authenticated user of `request` while auth is on (`None` while it is off);
    /// UNAUTHENTICATED without credentials.
    async fn caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Arc<AuthState>, Option<String>), Status> {
        let state = self.state().await?;
        if !state.enabled {
            return Ok((state, None));
        }
        match Self::identify(&state, request)? {
            Some(user) => Ok((state, Some(user))),
            None => Err(Status::unauthenticated(
                "auth is enabled: pass a client certificate, or a token from Authenticate \
                 (cairnctl --user)",
            )),
        }
    }

    /// Refuses `request` unless its user may make every access in `wanted`. The refusal
    /// names the first access missing.
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        wanted: &Accesses,
    ) -> Result<(), Status> {
        let (state, user) = self.caller(request).await?;
        let Some(user) = user else {
            return Ok(());
        };
        for (access, range) in wanted {
            state.check(&user, *access, range).map_err(Status::from)?;
        }
        Ok(())
    }

    /// Refuses `request` unless auth is off or its user holds the root role.
    pub async fn authorize_admin<T>(
        &self,
        request: &Request<T>,
        action: &str,
    ) -> Result<(), Status> {
        let (state, user) = self.caller(request).await?;
        state
            .check_admin(user.as_deref(), action)
            .map_err(Status::from)
    }

    /// Refuses `request` while auth is on unless it names a user (for cluster status: any
    /// user may read it).
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.caller(request).await.map(|_| ())
    }
}

/// One key, read or written.
pub fn key_access(access: Access, key: &[u8]) -> (Access, KeyRange) {
    (access, KeyRange::key(key))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_auth::User;
    use cairn_tls::{PeerIdentity, PeerInfo};

    fn state(enabled: bool) -> AuthState {
        let mut state = AuthState {
            enabled,
            secret: vec![3; 32],
            ..Default::default()
        };
        state.users.insert("alice".into(), User::default());
        state
    }

    fn with_certificate(common_name: &str) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(PeerInfo {
            identity: Some(Arc::new(PeerIdentity {
                common_name: Some(common_name.into()),
                roles: Vec::new(),
            })),
            tls: true,
            ..PeerInfo::default()
        });
        request
    }

    fn with_token(token: &str) -> Request<()> {
        let mut request = Request::new(());
        let value = format!("{BEARER}{token}").parse().unwrap();
        request.metadata_mut().insert(AUTHORIZATION, value);
        request
    }

    #[test]
    fn an_old_state_is_refused_only_while_auth_is_on_and_only_past_the_bound() {
        let bound = Duration::from_secs(30);
        let old = Duration::from_secs(31);
        let refusal = stale_refusal(true, old, bound).expect("refused");
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert!(refusal.message().contains("auth_state_max_staleness_ms"));
        assert!(stale_refusal(true, bound, bound).is_none());
        assert!(stale_refusal(false, Duration::from_secs(3_600), bound).is_none());
    }

    #[test]
    fn a_certificate_names_its_user_if_the_user_exists() {
        let state = state(true);
        let user = AuthGate::identify(&state, &with_certificate("alice")).unwrap();
        assert_eq!(user.as_deref(), Some("alice"));
        let stranger = AuthGate::identify(&state, &with_certificate("mallory")).unwrap_err();
        assert_eq!(stranger.code(), tonic::Code::Unauthenticated);
        assert_eq!(AuthGate::identify(&state, &Request::new(())).unwrap(), None);
    }

    #[test]
    fn a_token_comes_first_and_a_bad_one_is_refused_only_while_auth_is_on() {
        let state = state(true);
        let token = cairn_auth::token::issue(&state, "alice", now_ms() + 60_000).unwrap();
        let mut request = with_token(&token);
        request.extensions_mut().insert(PeerInfo::default());
        assert_eq!(
            AuthGate::identify(&state, &request).unwrap().as_deref(),
            Some("alice")
        );
        let bad = AuthGate::identify(&state, &with_token("00.00")).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::Unauthenticated);
        let off = AuthGate::identify(&super::tests::state(false), &with_token("00.00")).unwrap();
        assert_eq!(off, None);
    }
}
