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
}

impl AuthService {
    pub fn new(gate: Arc<AuthGate>, coordinator: CoordinatorClient, token_ttl: Duration) -> Self {
        Self {
            gate,
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS_IN_FLIGHT_MAX),
            coordinator: Mutex::new(coordinator),
            token_ttl,
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
        // One answer for an unknown user and a wrong password: no hint which it was.
        let refused = || Status::unauthenticated("wrong user name or password");
        let Some(hash) = hash else {
            return Err(refused());
        };
        let password = request.password;
        let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT_MAX, self.password_checks.acquire())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "too many sign-ins at once: no password check slot within {PASSWORD_CHECK_WAIT_MAX:?}"
                ))
            })?
            .map_err(|_| Status::unavailable("the gateway is stopping"))?;
        let matches =
            tokio::task::spawn_blocking(move || cairn_auth::password::verify(&password, &hash))
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
