//! Users, roles and the auth switch: the state the coordinator replicates and every gateway
//! checks requests against.

use crate::error::{AuthError, Result};
use crate::permission::{covers, Access, KeyRange, Permission};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The role that may do everything: every key, and cluster and user administration. It is
/// built in: it cannot be created, deleted or given permissions, only granted (as in etcd).
pub const ROOT: &str = "root";

/// Length of the cluster's token secret.
pub const SECRET_BYTES: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The argon2 hash of the password in PHC form; `None` for a user that only signs in
    /// with a client certificate.
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// Raised whenever the password changes, and carried in tokens, so that a new password
    /// ends every token issued for the old one.
    pub generation: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub permissions: BTreeSet<Permission>,
}

/// Everything auth knows, at one revision of the coordinator's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    /// The key tokens are signed with; every gateway checks every gateway's tokens with it.
    /// Empty until the first change is written (the coordinator draws it then).
    pub secret: Vec<u8>,
    /// The metadata revision this state was read at (0: never written).
    pub revision: u64,
}

impl AuthState {
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may make `access` to `range`: always when auth is off or the user holds
    /// `root`; otherwise when the read (or write) grants of the user's roles together cover
    /// the whole range. The refusal names the user, the access and the range.
    pub fn check(&self, user: &str, access: Access, range: &KeyRange) -> Result<()> {
        if !self.enabled || self.is_root(user) {
            return Ok(());
        }
        let denied = || AuthError::PermissionDenied {
            user: user.to_string(),
            access,
            what: range.to_string(),
        };
        let Some(record) = self.users.get(user) else {
            return Err(denied());
        };
        let granted: Vec<&KeyRange> = record
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .flat_map(|role| role.permissions.iter())
            .filter(|permission| permission.kind.grants(access))
            .map(|permission| &permission.range)
            .collect();
        if covers(granted, range) {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Whether `user` may administer the cluster (users, roles, auth, membership,
    /// compaction): always when auth is off, else only with `root`. `action` names it in the
    /// refusal.
    pub fn check_admin(&self, user: Option<&str>, action: &str) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        match user {
            Some(user) if self.is_root(user) => Ok(()),
            Some(user) => Err(AuthError::PermissionDenied {
                user: user.to_string(),
                access: Access::Write,
                what: format!("{action} (needs the root role)"),
            }),
            None => Err(AuthError::Unauthenticated(format!(
                "{action} needs a user with the root role: pass credentials"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::PermissionKind;

    pub(crate) fn state_with_reader() -> AuthState {
        let mut state = AuthState {
            enabled: true,
            ..Default::default()
        };
        state.roles.insert(
            "a-reader".into(),
            Role {
                permissions: [Permission {
                    kind: PermissionKind::Read,
                    range: KeyRange::prefix(b"a/"),
                }]
                .into(),
            },
        );
        state.users.insert(
            "alice".into(),
            User {
                roles: ["a-reader".to_string()].into(),
                ..Default::default()
            },
        );
        state.users.insert(
            "root".into(),
            User {
                roles: [ROOT.to_string()].into(),
                ..Default::default()
            },
        );
        state
    }

    #[test]
    fn a_reader_reads_its_prefix_and_nothing_else() {
        let state = state_with_reader();
        assert!(state
            .check("alice", Access::Read, &KeyRange::key(b"a/x"))
            .is_ok());
        let denied = state
            .check("alice", Access::Write, &KeyRange::key(b"a/x"))
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "user \"alice\" may not write key \"a/x\""
        );
        assert!(state
            .check("alice", Access::Read, &KeyRange::key(b"b/x"))
            .is_err());
        assert!(state
            .check("alice", Access::Read, &KeyRange::prefix(b""))
            .is_err());
        assert!(state
            .check("nobody", Access::Read, &KeyRange::key(b"a/x"))
            .is_err());
    }

    #[test]
    fn root_and_a_disabled_state_allow_everything() {
        let mut state = state_with_reader();
        assert!(state
            .check("root", Access::Write, &KeyRange::prefix(b""))
            .is_ok());
        assert!(state.check_admin(Some("root"), "user add").is_ok());
        assert!(matches!(
            state.check_admin(Some("alice"), "user add"),
            Err(AuthError::PermissionDenied { .. })
        ));
        assert!(matches!(
            state.check_admin(None, "user add"),
            Err(AuthError::Unauthenticated(_))
        ));
        state.enabled = false;
        assert!(state
            .check("alice", Access::Write, &KeyRange::key(b"b/x"))
            .is_ok());
        assert!(state.check_admin(None, "user add").is_ok());
    }
}
