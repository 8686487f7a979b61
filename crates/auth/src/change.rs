//! User and role management: one command, and the pure function that applies it to a state
//! or says why it cannot. The coordinator runs it on the state it read and writes the result
//! only if nothing changed in between.

use crate::error::{AuthError, Result};
use crate::permission::{KeyRange, Permission};
use crate::state::{AuthState, ROOT};

/// Longest user or role name, in bytes.
pub const NAME_BYTES_MAX: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Enable,
    Disable,
    /// `password_hash` is the argon2 hash, computed before the change is proposed so that no
    /// password reaches the replicated log; `None` for a certificate-only user.
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    /// Removes every grant of the role on exactly this range, whatever its kind (as etcd).
    RoleRevokePermission {
        role: String,
        range: KeyRange,
    },
}

impl Change {
    /// The command as an operator types it, for refusals and logs.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Enable => "auth enable",
            Change::Disable => "auth disable",
            Change::UserAdd { .. } => "user add",
            Change::UserDelete { .. } => "user delete",
            Change::UserChangePassword { .. } => "user passwd",
            Change::UserGrantRole { .. } => "user grant-role",
            Change::UserRevokeRole { .. } => "user revoke-role",
            Change::RoleAdd { .. } => "role add",
            Change::RoleDelete { .. } => "role delete",
            Change::RoleGrantPermission { .. } => "role grant-permission",
            Change::RoleRevokePermission { .. } => "role revoke-permission",
        }
    }
}

/// Checks a user or role name: not empty, at most [`NAME_BYTES_MAX`] bytes, no `:` (it
/// separates name and password in `--user name:password`) and no control characters.
pub fn check_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(AuthError::invalid(field, "must not be empty"));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(AuthError::invalid(
            field,
            format!("{} bytes, at most {NAME_BYTES_MAX}", name.len()),
        ));
    }
    if name.chars().any(|c| c == ':' || c.is_control()) {
        return Err(AuthError::invalid(
            field,
            "must not contain ':' or control characters",
        ));
    }
    Ok(())
}

fn conflict(message: String) -> AuthError {
    AuthError::Conflict(message)
}

/// The generation after `generation`. One that cannot rise (only a corrupt stored state holds
/// `u64::MAX`) refuses the change: wrapping to 0 would make old tokens good again.
fn next_generation(generation: u64) -> Result<u64> {
    generation
        .checked_add(1)
        .ok_or_else(|| conflict("the user's password generation cannot rise further".into()))
}

impl AuthState {
    /// The state after `change`, or why it does not apply. The revision and the secret are
    /// the caller's to set.
    pub fn apply(&self, change: &Change) -> Result<AuthState> {
        let mut next = self.clone();
        match change {
            Change::Enable => {
                if !self.is_root(ROOT) {
                    return Err(conflict(
                        "auth enable needs a user \"root\" holding the root role: \
                         `user add root` then `user grant-role root root`"
                            .into(),
                    ));
                }
                next.enabled = true;
            }
            Change::Disable => next.enabled = false,
            Change::UserAdd {
                name,
                password_hash,
            } => {
                check_name("user", name)?;
                if self.users.contains_key(name) {
                    return Err(conflict(format!("user {name:?} already exists")));
                }
                next.users.insert(
                    name.clone(),
                    crate::User {
                        password_hash: password_hash.clone(),
                        // Above every generation a user of this name ever had: each change
                        // is one write that raises the revision, and a password change
                        // raises a generation by one, so a token of a deleted user of the
                        // same name never matches the new one.
                        generation: next_generation(self.revision)?,
                        ..Default::default()
                    },
                );
            }
            Change::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(conflict(
                        "the root user cannot be deleted while auth is enabled".into(),
                    ));
                }
                if next.users.remove(name).is_none() {
                    return Err(conflict(format!("user {name:?} does not exist")));
                }
            }
            Change::UserChangePassword {
                name,
                password_hash,
            } => {
                let user = next
                    .users
                    .get_mut(name)
                    .ok_or_else(|| conflict(format!("user {name:?} does not exist")))?;
                user.password_hash = Some(password_hash.clone());
                user.generation = next_generation(user.generation)?;
            }
            Change::UserGrantRole { user, role } => {
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(conflict(format!("role {role:?} does not exist")));
                }
                let record = next
                    .users
                    .get_mut(user)
                    .ok_or_else(|| conflict(format!("user {user:?} does not exist")))?;
                if !record.roles.insert(role.clone()) {
                    return Err(conflict(format!("user {user:?} already has role {role:?}")));
                }
            }
            Change::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(conflict(
                        "the root role cannot be revoked from the root user while auth is enabled"
                            .into(),
                    ));
                }
                let record = next
                    .users
                    .get_mut(user)
                    .ok_or_else(|| conflict(format!("user {user:?} does not exist")))?;
                if !record.roles.remove(role) {
                    return Err(conflict(format!(
                        "user {user:?} does not have role {role:?}"
                    )));
                }
            }
            Change::RoleAdd { name } => {
                check_name("role", name)?;
                if name == ROOT || self.roles.contains_key(name) {
                    return Err(conflict(format!("role {name:?} already exists")));
                }
                next.roles.insert(name.clone(), Default::default());
            }
            Change::RoleDelete { name } => {
                if name == ROOT {
                    return Err(conflict("the root role cannot be deleted".into()));
                }
                if next.roles.remove(name).is_none() {
                    return Err(conflict(format!("role {name:?} does not exist")));
                }
                // As etcd: users lose the role with it, so a role added later under the same
                // name grants nothing by surprise.
                for user in next.users.values_mut() {
                    user.roles.remove(name);
                }
            }
            Change::RoleGrantPermission { role, permission } => {
                if permission.range.is_empty() {
                    return Err(AuthError::invalid(
                        "permission",
                        format!("{} holds no key", permission.range),
                    ));
                }
                next.role_mut(role)?.permissions.insert(permission.clone());
            }
            Change::RoleRevokePermission { role, range } => {
                let permissions = &mut next.role_mut(role)?.permissions;
                let before = permissions.len();
                permissions.retain(|p| p.range != *range);
                if permissions.len() == before {
                    return Err(conflict(format!(
                        "role {role:?} has no permission on {range}"
                    )));
                }
            }
        }
        Ok(next)
    }

    fn role_mut(&mut self, role: &str) -> Result<&mut crate::Role> {
        if role == ROOT {
            return Err(conflict(
                "the root role grants everything and cannot be changed".into(),
            ));
        }
        self.roles
            .get_mut(role)
            .ok_or_else(|| conflict(format!("role {role:?} does not exist")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::{Access, PermissionKind};

    fn apply_all(changes: &[Change]) -> Result<AuthState> {
        changes
            .iter()
            .try_fold(AuthState::default(), |state, change| state.apply(change))
    }

    fn add(name: &str) -> Change {
        Change::UserAdd {
            name: name.into(),
            password_hash: None,
        }
    }

    fn grant(user: &str, role: &str) -> Change {
        Change::UserGrantRole {
            user: user.into(),
            role: role.into(),
        }
    }

    #[test]
    fn enabling_needs_a_root_user_with_the_root_role() {
        assert!(matches!(
            apply_all(&[add("root"), Change::Enable]),
            Err(AuthError::Conflict(_))
        ));
        let state = apply_all(&[add("root"), grant("root", ROOT), Change::Enable]).unwrap();
        assert!(state.enabled);
        assert!(state
            .apply(&Change::UserDelete { name: ROOT.into() })
            .is_err());
        assert!(state.apply(&grant("root", ROOT)).is_err());
        assert!(state
            .apply(&Change::UserRevokeRole {
                user: ROOT.into(),
                role: ROOT.into()
            })
            .is_err());
    }

    #[test]
    fn granting_and_revoking_a_permission_changes_what_a_user_may_read() {
        let read_a = Permission {
            kind: PermissionKind::Read,
            range: KeyRange::prefix(b"a/"),
        };
        let state = apply_all(&[
            add("root"),
            grant("root", ROOT),
            add("alice"),
            Change::RoleAdd { name: "r".into() },
            Change::RoleGrantPermission {
                role: "r".into(),
                permission: read_a.clone(),
            },
            grant("alice", "r"),
            Change::Enable,
        ])
        .unwrap();
        let key = KeyRange::key(b"a/x");
        assert!(state.check("alice", Access::Read, &key).is_ok());
        let revoked = state
            .apply(&Change::RoleRevokePermission {
                role: "r".into(),
                range: KeyRange::prefix(b"a/"),
            })
            .unwrap();
        assert!(revoked.check("alice", Access::Read, &key).is_err());
        let deleted = state
            .apply(&Change::RoleDelete { name: "r".into() })
            .unwrap();
        assert!(deleted.users["alice"].roles.is_empty());
        assert!(state
            .apply(&Change::RoleRevokePermission {
                role: "r".into(),
                range: KeyRange::prefix(b"b/"),
            })
            .is_err());
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        assert!(matches!(
            apply_all(&[add("")]),
            Err(AuthError::Invalid { .. })
        ));
        assert!(matches!(
            apply_all(&[add("a:b")]),
            Err(AuthError::Invalid { .. })
        ));
        assert!(matches!(
            apply_all(&[add("x"), add("x")]),
            Err(AuthError::Conflict(_))
        ));
        assert!(apply_all(&[Change::RoleAdd { name: ROOT.into() }]).is_err());
        assert!(apply_all(&[add("x"), grant("x", "missing")]).is_err());
    }

    #[test]
    fn a_new_password_raises_the_generation() {
        let state = apply_all(&[
            add("x"),
            Change::UserChangePassword {
                name: "x".into(),
                password_hash: "h".into(),
            },
        ])
        .unwrap();
        assert_eq!(state.users["x"].generation, 2);
        assert_eq!(state.users["x"].password_hash.as_deref(), Some("h"));
    }

    /// Found by reading what the auth_message fuzz target feeds `apply` (a stored state):
    /// a generation or revision at `u64::MAX` overflowed (a panic with overflow checks, old
    /// tokens good again without). The change is refused instead.
    #[test]
    fn a_generation_that_cannot_rise_refuses_the_change() {
        let mut state = apply_all(&[add("x")]).unwrap();
        state.users.get_mut("x").unwrap().generation = u64::MAX;
        let passwd = Change::UserChangePassword {
            name: "x".into(),
            password_hash: "h".into(),
        };
        assert!(matches!(state.apply(&passwd), Err(AuthError::Conflict(_))));
        state.revision = u64::MAX;
        assert!(matches!(
            state.apply(&add("y")),
            Err(AuthError::Conflict(_))
        ));
    }

    /// As the coordinator does: every change is written at a higher revision.
    fn apply_written(changes: &[Change]) -> AuthState {
        changes.iter().fold(AuthState::default(), |state, change| {
            let mut next = state.apply(change).unwrap();
            next.revision = state.revision + 1;
            next
        })
    }

    #[test]
    fn a_user_added_again_under_a_deleted_name_never_takes_its_generation() {
        let passwd = || Change::UserChangePassword {
            name: "x".into(),
            password_hash: "h".into(),
        };
        let before = apply_written(&[add("x"), passwd(), passwd()]);
        let again = apply_written(&[
            add("x"),
            passwd(),
            passwd(),
            Change::UserDelete { name: "x".into() },
            add("x"),
        ]);
        assert!(
            again.users["x"].generation > before.users["x"].generation,
            "{} after re-adding, {} before deleting",
            again.users["x"].generation,
            before.users["x"].generation
        );
    }
}
