//! The public Auth service (`cairn.kv.v1.Auth`): `Authenticate` is answered here (the
//! password is checked against the hash in the gateway's auth state, and the token signed
//! with the cluster's secret, so any gateway accepts it); user and role management and the
//! listing go to the coordinator leader, naming the caller, and the coordinator decides.

use crate::auth::{now_ms, AuthGate};
use cairn_coordinator_client::CoordinatorClient;
use cairn_proto::coordinator::v1 as coordinator;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::auth_server::Auth;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// Password checks (argon2, tens of milliseconds of CPU each) running at once; more wait.
const PASSWORD_CHECKS_IN_FLIGHT_MAX: usize = 2;
/// Longest a sign-in waits for a password check slot before it is refused as UNAVAILABLE:
/// a flood of sign-ins (they need no credentials) must not queue without bound.
const PASSWORD_CHECK_WAIT_MAX: Duration = Duration::from_secs(2);

pub struct AuthService {
    gate: Arc<AuthGate>,
    password_checks: tokio::sync::Semaphore,
    coordinator: Mutex<CoordinatorClient>,
    token_ttl: Duration,
    /// `auth_plaintext_allowed`: `auth enable` may arrive over a plaintext connection.
    plaintext_allowed: bool,
}

/// Refuses `auth enable` sent over a plaintext connection unless the operator allowed it
/// (D67): from then on passwords and tokens would cross that network in clear.
pub fn plaintext_enable_refusal(
    op: Option<pb::auth_change_request::Op>,
    over_tls: bool,
    plaintext_allowed: bool,
) -> Option<Status> {
    let enabling = op == Some(pb::auth_change_request::Op::AuthEnable);
    (enabling && !over_tls && !plaintext_allowed).then(|| {
        Status::failed_precondition(
            "auth enable over a plaintext connection is refused: passwords and tokens would \
             then cross the network in clear. Turn TLS on at the gateway's public port and call \
             it over TLS (docs/security.md), or set the gateway's auth_plaintext_allowed = true \
             to accept that risk",
        )
    })
}

impl AuthService {
    pub fn new(
        gate: Arc<AuthGate>,
        coordinator: CoordinatorClient,
        token_ttl: Duration,
        plaintext_allowed: bool,
    ) -> Self {
        Self {
            gate,
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_IN_FLIGHT_MAX),
            coordinator: Mutex::new(coordinator),
            token_ttl,
            plaintext_allowed,
        }
    }

    /// The caller's user as far as the gateway can tell, for the coordinator to check.
    async fn acting_user<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let state = self.gate.state().await?;
        Ok(AuthGate::identify(&state, request)?.unwrap_or_default())
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    #[tracing::instrument(name = "gateway.authenticate", skip_all)]
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let state = self.gate.state().await?;
        if !state.enabled {
            return Err(Status::failed_precondition("auth is not enabled"));
        }
        let hash = state
            .users
            .get(&request.name)
            .and_then(|user| user.password_hash.clone());
        // One answer, and the same work, for an unknown user and a wrong password: neither
        // the message nor the time taken hints which it was.
        let refused = || Status::unauthenticated("wrong user name or password");
        let password = request.password;
        let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT_MAX, self.password_checks.acquire())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "too many sign-ins at once: no password check slot within {PASSWORD_CHECK_WAIT_MAX:?}"
                ))
            })?
            .map_err(|_| Status::unavailable("the gateway is stopping"))?;
        let matches = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => cairn_auth::password::verify(&password, &hash),
            None => cairn_auth::password::verify_nothing(&password),
        })
        .await
        .map_err(|e| Status::internal(format!("password check task: {e}")))?;
        if !matches {
            return Err(refused());
        }
        let expires_at_ms = now_ms() + self.token_ttl.as_millis() as u64;
        let token = cairn_auth::token::issue(&state, &request.name, expires_at_ms)?;
        Ok(Response::new(pb::AuthenticateResponse {
            token,
            expires_at_ms,
        }))
    }

    #[tracing::instrument(name = "gateway.auth_change", skip_all)]
    async fn change(
        &self,
        request: Request<pb::AuthChangeRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let acting_user = self.acting_user(&request).await?;
        let over_tls = cairn_tls::PeerInfo::of(&request).is_some_and(|peer| peer.tls);
        let op = pb::auth_change_request::Op::try_from(request.get_ref().op).ok();
        if let Some(refusal) = plaintext_enable_refusal(op, over_tls, self.plaintext_allowed) {
            return Err(refusal);
        }
        let answer = self
            .coordinator
            .lock()
            .await
            .change_auth(coordinator::ChangeAuthRequest {
                acting_user,
                change: Some(request.into_inner()),
            })
            .await?;
        self.gate.refresh_to(answer.revision).await;
        Ok(Response::new(answer))
    }

    async fn status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let acting_user = self.acting_user(&request).await?;
        let answer = self
            .coordinator
            .lock()
            .await
            .auth_status(acting_user)
            .await?;
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::auth_change_request::Op;

    #[test]
    fn auth_enable_over_plaintext_is_refused_unless_allowed() {
        let refused = plaintext_enable_refusal(Some(Op::AuthEnable), false, false).unwrap();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("auth_plaintext_allowed"));
        assert!(plaintext_enable_refusal(Some(Op::AuthEnable), true, false).is_none());
        assert!(plaintext_enable_refusal(Some(Op::AuthEnable), false, true).is_none());
        assert!(plaintext_enable_refusal(Some(Op::AuthDisable), false, false).is_none());
        assert!(plaintext_enable_refusal(Some(Op::UserAdd), false, false).is_none());
    }
}
