//! Auth on `Client`: the token exchanged for the configured credentials and carried by every
//! request, and the calls of the gateway's `cairn.kv.v1.Auth` service (user and role
//! management, the auth switch).
//!
//! The token rides in the `authorization: Bearer <token>` metadata. Requests are built inside
//! the retry loop's attempt closure, so the loop puts the token in a task-local for the time
//! of that (synchronous) call and [`crate::client::request`] picks it up: no call site has to
//! pass it.

use crate::client::{request, Client, MESSAGE_BYTES_MAX};
use crate::error::Result;
use cairn_proto::kv::v1 as proto;
use cairn_proto::kv::v1::auth_client::AuthClient;
use cairn_proto::retry::Idempotency;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// A token is renewed when less than this much of its life is left, so that it does not
/// expire between being attached and being checked.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(5);

tokio::task_local! {
    static TOKEN: Option<String>;
}

/// A token from `Authenticate` and when it stops being accepted.
#[derive(Clone)]
pub(crate) struct Token {
    value: String,
    expires_at_ms: u64,
}

/// A token is a credential: `Debug` of a client never shows it.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Runs `build` (which builds a request) with `token` to attach.
pub(crate) fn with_token<R>(token: Option<String>, build: impl FnOnce() -> R) -> R {
    TOKEN.sync_scope(token, build)
}

/// Adds the token of the attempt being built, if any, to `request`.
pub(crate) fn attach_token<T>(request: &mut tonic::Request<T>) {
    let Ok(Some(token)) = TOKEN.try_with(Clone::clone) else {
        return;
    };
    // A token is hex and a dot, always a valid header value.
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    /// The token to send, authenticating first when there is none or it is about to
    /// expire; `None` without credentials.
    pub(crate) async fn token(&self, renew: bool) -> Result<Option<String>> {
        let Some(credentials) = &self.config().credentials else {
            return Ok(None);
        };
        let mut cached = self.token_cache().lock().await;
        let fresh =
            |token: &Token| token.expires_at_ms > now_ms() + RENEW_BEFORE_EXPIRY.as_millis() as u64;
        if let Some(token) = cached.as_ref().filter(|t| !renew && fresh(t)) {
            return Ok(Some(token.value.clone()));
        }
        let answer = self
            .authenticate(&credentials.user, &credentials.password)
            .await?;
        *cached = Some(Token {
            value: answer.token.clone(),
            expires_at_ms: answer.expires_at_ms,
        });
        Ok(Some(answer.token))
    }

    /// Exchanges a user name and password for a token (UNAUTHENTICATED when they do not
    /// match; FAILED_PRECONDITION while auth is disabled). A client with `credentials` does
    /// this itself.
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<proto::AuthenticateResponse> {
        let message = proto::AuthenticateRequest {
            name: user.to_string(),
            password: password.to_string(),
        };
        self.call_without_token(
            "authenticate",
            Idempotency::Idempotent,
            |channel, remaining| {
                let request = request(message.clone(), remaining);
                async move { auth(channel).authenticate(request).await }
            },
        )
        .await
    }

    /// One user or role management command, or the auth switch (needs the root role while
    /// auth is enabled). Returns the auth revision it was written at. Not retried once it may
    /// have reached the cluster: a repeated grant would be refused.
    pub async fn auth_change(&self, change: proto::AuthChangeRequest) -> Result<u64> {
        let response = self
            .call(
                "auth change",
                Idempotency::NotIdempotent,
                |channel, remaining| {
                    let request = request(change.clone(), remaining);
                    async move { auth(channel).change(request).await }
                },
            )
            .await?;
        Ok(response.revision)
    }

    /// Whether auth is enabled; with the root role (or auth disabled) also every user and
    /// role.
    pub async fn auth_status(&self) -> Result<proto::AuthStatusResponse> {
        self.call(
            "auth status",
            Idempotency::Idempotent,
            |channel, remaining| {
                let request = request(proto::AuthStatusRequest {}, remaining);
                async move { auth(channel).status(request).await }
            },
        )
        .await
    }
}

fn auth(channel: Channel) -> AuthClient<Channel> {
    AuthClient::new(channel)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}
