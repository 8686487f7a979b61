//! Conversions between the protocol's auth messages and this crate's types. Receiving is
//! where input is validated: a permission whose range holds no key, an unknown operation.

use crate::change::Change;
use crate::error::{AuthError, Result};
use crate::permission::{KeyRange, Permission, PermissionKind};
use crate::state::{AuthState, Role, User};
use cairn_proto::coordinator::v1 as coordinator_pb;
use cairn_proto::kv::v1 as pb;
use pb::auth_change_request::Op;

impl From<PermissionKind> for pb::permission::Kind {
    fn from(kind: PermissionKind) -> Self {
        match kind {
            PermissionKind::Read => pb::permission::Kind::Read,
            PermissionKind::Write => pb::permission::Kind::Write,
            PermissionKind::ReadWrite => pb::permission::Kind::Readwrite,
        }
    }
}

impl TryFrom<&pb::Permission> for Permission {
    type Error = AuthError;

    fn try_from(permission: &pb::Permission) -> Result<Self> {
        let kind = match pb::permission::Kind::try_from(permission.kind) {
            Ok(pb::permission::Kind::Read) => PermissionKind::Read,
            Ok(pb::permission::Kind::Write) => PermissionKind::Write,
            Ok(pb::permission::Kind::Readwrite) => PermissionKind::ReadWrite,
            Err(_) => {
                return Err(AuthError::invalid(
                    "permission.kind",
                    format!("unknown kind {}", permission.kind),
                ))
            }
        };
        Ok(Permission {
            kind,
            range: KeyRange::from_etcd(&permission.key, &permission.range_end),
        })
    }
}

impl From<&Permission> for pb::Permission {
    fn from(permission: &Permission) -> Self {
        let (key, range_end) = permission.range.to_etcd();
        pb::Permission {
            kind: pb::permission::Kind::from(permission.kind) as i32,
            key,
            range_end,
        }
    }
}

fn role_to_proto(name: &str, role: &Role) -> pb::Role {
    pb::Role {
        name: name.to_string(),
        permissions: role.permissions.iter().map(Into::into).collect(),
    }
}

fn role_from_proto(role: &pb::Role) -> Result<(String, Role)> {
    let permissions = role
        .permissions
        .iter()
        .map(Permission::try_from)
        .collect::<Result<_>>()?;
    Ok((role.name.clone(), Role { permissions }))
}

/// A management command as received, with the password (if any) not yet hashed: the
/// coordinator hashes it off the request path of the replicated log.
pub fn change_from_proto(
    request: &pb::AuthChangeRequest,
    hash: impl FnOnce(&str) -> Result<String>,
) -> Result<Change> {
    let user = || request.user.clone();
    let role = || request.role.clone();
    let permission = || {
        request
            .permission
            .as_ref()
            .ok_or_else(|| AuthError::invalid("permission", "missing"))
    };
    Ok(match Op::try_from(request.op) {
        Ok(Op::AuthEnable) => Change::Enable,
        Ok(Op::AuthDisable) => Change::Disable,
        Ok(Op::UserAdd) => Change::UserAdd {
            name: user(),
            password_hash: if request.password.is_empty() {
                None
            } else {
                Some(hash(&request.password)?)
            },
        },
        Ok(Op::UserDelete) => Change::UserDelete { name: user() },
        Ok(Op::UserChangePassword) => Change::UserChangePassword {
            name: user(),
            password_hash: hash(&request.password)?,
        },
        Ok(Op::UserGrantRole) => Change::UserGrantRole {
            user: user(),
            role: role(),
        },
        Ok(Op::UserRevokeRole) => Change::UserRevokeRole {
            user: user(),
            role: role(),
        },
        Ok(Op::RoleAdd) => Change::RoleAdd { name: role() },
        Ok(Op::RoleDelete) => Change::RoleDelete { name: role() },
        Ok(Op::RoleGrantPermission) => Change::RoleGrantPermission {
            role: role(),
            permission: Permission::try_from(permission()?)?,
        },
        Ok(Op::RoleRevokePermission) => {
            let permission = permission()?;
            Change::RoleRevokePermission {
                role: role(),
                range: KeyRange::from_etcd(&permission.key, &permission.range_end),
            }
        }
        Ok(Op::Unspecified) | Err(_) => {
            return Err(AuthError::invalid(
                "op",
                format!("unknown operation {}", request.op),
            ))
        }
    })
}

/// The public listing of a state: users without their hashes.
pub fn status_to_proto(state: &AuthState, listed: bool) -> pb::AuthStatusResponse {
    let mut status = pb::AuthStatusResponse {
        enabled: state.enabled,
        revision: state.revision,
        listed,
        ..Default::default()
    };
    if listed {
        status.users = state
            .users
            .iter()
            .map(|(name, user)| pb::User {
                name: name.clone(),
                roles: user.roles.iter().cloned().collect(),
                has_password: user.password_hash.is_some(),
            })
            .collect();
        status.roles = state
            .roles
            .iter()
            .map(|(name, role)| role_to_proto(name, role))
            .collect();
    }
    status
}

impl From<&AuthState> for coordinator_pb::AuthState {
    fn from(state: &AuthState) -> Self {
        coordinator_pb::AuthState {
            revision: state.revision,
            unchanged: false,
            enabled: state.enabled,
            secret: state.secret.clone(),
            users: state
                .users
                .iter()
                .map(|(name, user)| coordinator_pb::StoredUser {
                    name: name.clone(),
                    password_hash: user.password_hash.clone().unwrap_or_default(),
                    roles: user.roles.iter().cloned().collect(),
                    generation: user.generation,
                })
                .collect(),
            roles: state
                .roles
                .iter()
                .map(|(name, role)| role_to_proto(name, role))
                .collect(),
        }
    }
}

impl TryFrom<&coordinator_pb::AuthState> for AuthState {
    type Error = AuthError;

    fn try_from(state: &coordinator_pb::AuthState) -> Result<Self> {
        Ok(AuthState {
            enabled: state.enabled,
            secret: state.secret.clone(),
            revision: state.revision,
            users: state
                .users
                .iter()
                .map(|user| {
                    (
                        user.name.clone(),
                        User {
                            password_hash: (!user.password_hash.is_empty())
                                .then(|| user.password_hash.clone()),
                            roles: user.roles.iter().cloned().collect(),
                            generation: user.generation,
                        },
                    )
                })
                .collect(),
            roles: state
                .roles
                .iter()
                .map(role_from_proto)
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Change;

    #[test]
    fn a_state_survives_the_wire() {
        let mut state = AuthState {
            enabled: true,
            secret: vec![1, 2, 3],
            revision: 9,
            ..Default::default()
        };
        state = state
            .apply(&Change::RoleAdd { name: "r".into() })
            .unwrap()
            .apply(&Change::RoleGrantPermission {
                role: "r".into(),
                permission: Permission {
                    kind: PermissionKind::ReadWrite,
                    range: KeyRange::prefix(b"a/"),
                },
            })
            .unwrap()
            .apply(&Change::UserAdd {
                name: "u".into(),
                password_hash: Some("h".into()),
            })
            .unwrap();
        let wire = coordinator_pb::AuthState::from(&state);
        assert_eq!(AuthState::try_from(&wire).unwrap(), state);
    }

    #[test]
    fn an_unknown_operation_or_kind_is_invalid() {
        let request = pb::AuthChangeRequest {
            op: 99,
            ..Default::default()
        };
        assert!(matches!(
            change_from_proto(&request, |p| Ok(p.into())),
            Err(AuthError::Invalid { field: "op", .. })
        ));
        let bad_kind = pb::Permission {
            kind: 7,
            ..Default::default()
        };
        assert!(Permission::try_from(&bad_kind).is_err());
    }
}
