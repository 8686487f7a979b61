//! Auth messages (crates/auth/src/convert.rs, change.rs, state.rs): the auth state a gateway
//! receives from the coordinator, the management command a client sends (passed on by a
//! gateway to the coordinator, which applies it to the state it stores), the state as the
//! coordinator stores it, and permissions in etcd's key and range-end form.
//!
//! Holds: nothing panics; a state or permission survives the wire and the store unchanged; a
//! change that applies leaves a state that survives them too; a user may make every access
//! one of its roles grants on the permission's whole range (the permission check agrees with
//! the grants it was given).
//!
//! Input: a kind byte, then 0 a `cairn.coordinator.v1.AuthState`, 1 a
//! `cairn.kv.v1.AuthChangeRequest`, 2 a stored state (framed postcard, as stored and as a
//! valid frame's payload), 3 a `cairn.kv.v1.Permission`.

#![no_main]

use cairn_auth::convert::{change_from_proto, status_to_proto};
use cairn_auth::{Access, AuthState, Change, KeyRange, Permission, Role, User, ROOT};
use cairn_fuzz::{assert_stored_stable, decode_message, split_kind};
use cairn_proto::coordinator::v1 as coordinator_pb;
use cairn_proto::kv::v1 as pb;
use cairn_types::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    match kind {
        0 => {
            if let Some(wire) = decode_message::<coordinator_pb::AuthState>(bytes) {
                if let Ok(state) = AuthState::try_from(&wire) {
                    check_state(&state);
                }
            }
        }
        1 => {
            if let Some(request) = decode_message::<pb::AuthChangeRequest>(bytes) {
                // Not argon2: the hash is the coordinator's, and slow by design.
                let hash = |password: &str| Ok(format!("hash of {password}"));
                if let Ok(change) = change_from_proto(&request, hash) {
                    let _ = change.action();
                    for state in [AuthState::default(), populated()] {
                        let _ = state.check_admin(Some(&request.user), change.action());
                        if let Ok(next) = state.apply(&change) {
                            check_state(&next);
                        }
                    }
                }
            }
        }
        2 => {
            for stored in [bytes.to_vec(), codec::frame(bytes)] {
                let Ok(state) = codec::decode::<AuthState>(&stored) else {
                    continue;
                };
                // A grant of no key is never stored (`apply` refuses it), and has no etcd form
                // of its own (an empty range end means one key).
                let empty_grant = state
                    .roles
                    .values()
                    .flat_map(|role| &role.permissions)
                    .any(|permission| permission.range.is_empty());
                if !empty_grant {
                    check_state(&state);
                    // What the coordinator does with a stored state: apply a change to it.
                    for name in state.users.keys() {
                        let change = Change::UserChangePassword {
                            name: name.clone(),
                            password_hash: "new".into(),
                        };
                        if let Ok(next) = state.apply(&change) {
                            check_state(&next);
                        }
                    }
                }
            }
        }
        3 => {
            if let Some(wire) = decode_message::<pb::Permission>(bytes) {
                if let Ok(permission) = Permission::try_from(&wire) {
                    let back = Permission::try_from(&pb::Permission::from(&permission))
                        .expect("a permission sent decodes");
                    assert_eq!(back, permission);
                    let _ = permission.range.to_string();
                    let (key, range_end) = permission.range.to_etcd();
                    assert_eq!(KeyRange::from_etcd(&key, &range_end), permission.range);
                }
            }
        }
        _ => {}
    }
});

/// A state with auth on, the root user, and a user holding one role.
fn populated() -> AuthState {
    let mut state = AuthState {
        enabled: true,
        secret: vec![1; 32],
        revision: 9,
        ..Default::default()
    };
    state.roles.insert(
        "reader".into(),
        Role {
            permissions: [Permission {
                kind: cairn_auth::PermissionKind::Read,
                range: KeyRange::prefix(b"a/"),
            }]
            .into(),
        },
    );
    state.users.insert(
        ROOT.into(),
        User {
            roles: [ROOT.to_string()].into(),
            ..Default::default()
        },
    );
    state.users.insert(
        "alice".into(),
        User {
            roles: ["reader".to_string()].into(),
            generation: 2,
            ..Default::default()
        },
    );
    state
}

fn check_state(state: &AuthState) {
    let wire = coordinator_pb::AuthState::from(state);
    // On the wire an empty hash is no hash (a certificate-only user).
    let mut sent = state.clone();
    for user in sent.users.values_mut() {
        user.password_hash = user.password_hash.take().filter(|hash| !hash.is_empty());
    }
    assert_eq!(
        AuthState::try_from(&wire).as_ref(),
        Ok(&sent),
        "a state survives the wire"
    );
    assert_stored_stable(state);
    let _ = status_to_proto(state, true);
    for (name, user) in &state.users {
        let _ = state.check_admin(Some(name), "compact");
        for permission in user
            .roles
            .iter()
            .filter_map(|role| state.roles.get(role))
            .flat_map(|role| &role.permissions)
        {
            for access in [Access::Read, Access::Write] {
                let checked = state.check(name, access, &permission.range);
                if permission.kind.grants(access) {
                    assert!(checked.is_ok(), "{name} may {access} {}", permission.range);
                } else {
                    let _ = checked.map_err(|error| error.to_string());
                }
            }
        }
    }
}
