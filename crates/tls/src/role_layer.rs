//! Which certificate roles may call which gRPC service (D82): a tower layer in front of a
//! tonic server that reads the peer's roles from its [`PeerInfo`] and refuses a call outside
//! the policy with `PERMISSION_DENIED`, before any handler runs.
//!
//! The decision ([`RolePolicy::check`]) is pure: one rule per service path prefix; a path no
//! rule names is refused, so a service added later is closed until someone opens it.

use crate::role::Role;
use crate::server::PeerInfo;
use futures::future::{Either, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Who may call what on one listener.
#[derive(Clone, Debug, Default)]
pub struct RolePolicy {
    /// gRPC path prefix (`/package.Service/`), and the roles allowed (`None`: anyone,
    /// certificate or not).
    rules: Vec<(String, Option<Vec<Role>>)>,
}

impl RolePolicy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls to `service` (a full gRPC service name, e.g. `cairn.raft.v1.RaftTransport`)
    /// need a certificate with one of `roles`.
    pub fn allow(mut self, service: &str, roles: &[Role]) -> Self {
        self.rules
            .push((format!("/{service}/"), Some(roles.to_vec())));
        self
    }

    /// Calls to `service` need nothing beyond the TLS handshake (e.g. health checks).
    pub fn allow_anyone(mut self, service: &str) -> Self {
        self.rules.push((format!("/{service}/"), None));
        self
    }

    /// Whether a call to `path` from `peer` is allowed; the refusal says what was missing.
    pub fn check(&self, path: &str, peer: Option<&PeerInfo>) -> Result<(), String> {
        let Some((_, roles)) = self
            .rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        else {
            return Err(format!("{path} is not open to any certificate role"));
        };
        let Some(roles) = roles else {
            return Ok(());
        };
        let names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        match peer.and_then(|peer| peer.identity.as_deref()) {
            None => Err(format!(
                "{path} needs a client certificate with role {} (none was presented)",
                names.join(" or ")
            )),
            Some(identity) if identity.has_any(roles) => Ok(()),
            Some(identity) => {
                let held: Vec<&str> = identity.roles.iter().map(|role| role.as_str()).collect();
                Err(format!(
                    "{path} needs a certificate with role {}; the peer's certificate has {}",
                    names.join(" or "),
                    if held.is_empty() {
                        "no Cairn role".to_string()
                    } else {
                        format!("role {}", held.join(", "))
                    }
                ))
            }
        }
    }
}

/// Applies a [`RolePolicy`]; off (lets everything through) when the listener is plaintext.
#[derive(Clone, Default)]
pub struct RoleLayer {
    policy: Option<Arc<RolePolicy>>,
}

impl RoleLayer {
    /// `policy` when the listener speaks TLS, nothing when it does not.
    pub fn new(policy: Option<RolePolicy>) -> Self {
        Self {
            policy: policy.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for RoleLayer {
    type Service = RoleService<S>;

    fn layer(&self, inner: S) -> RoleService<S> {
        RoleService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RoleService<S> {
    inner: S,
    policy: Option<Arc<RolePolicy>>,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for RoleService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(policy) = &self.policy {
            let peer = request.extensions().get::<PeerInfo>();
            if let Err(reason) = policy.check(request.uri().path(), peer) {
                tracing::warn!(peer = ?peer.and_then(|p| p.remote_address), %reason, "call refused by role");
                let response = tonic::Status::permission_denied(reason).into_http::<ResBody>();
                return Either::Left(futures::future::ready(Ok(response)));
            }
        }
        Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::PeerIdentity;

    fn peer(roles: &[Role]) -> PeerInfo {
        PeerInfo {
            identity: Some(Arc::new(PeerIdentity {
                common_name: Some("x".into()),
                roles: roles.to_vec(),
            })),
            tls: true,
            ..PeerInfo::default()
        }
    }

    #[test]
    fn each_service_admits_only_its_roles() {
        let policy = RolePolicy::new()
            .allow_anyone("grpc.health.v1.Health")
            .allow("cairn.raft.v1.RaftTransport", &[Role::Node])
            .allow("cairn.node.v1.NodeAdmin", &[Role::Coordinator]);
        let raft = "/cairn.raft.v1.RaftTransport/Append";
        let admin = "/cairn.node.v1.NodeAdmin/CreateReplica";
        assert!(policy.check(raft, Some(&peer(&[Role::Node]))).is_ok());
        let refused = policy
            .check(raft, Some(&peer(&[Role::Gateway])))
            .unwrap_err();
        assert!(
            refused.contains("role node") && refused.contains("role gateway"),
            "{refused}"
        );
        assert!(policy.check(admin, Some(&peer(&[Role::Gateway]))).is_err());
        assert!(policy
            .check(admin, Some(&peer(&[Role::Node, Role::Coordinator])))
            .is_ok());
        assert!(policy
            .check(admin, None)
            .unwrap_err()
            .contains("none was presented"));
        assert!(policy
            .check(admin, Some(&peer(&[])))
            .unwrap_err()
            .contains("no Cairn role"));
        assert!(policy.check("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(policy
            .check("/cairn.other.v1.New/Call", Some(&peer(&[Role::Node])))
            .is_err());
    }
}
