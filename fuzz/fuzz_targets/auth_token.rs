//! Tokens (crates/auth/src/token.rs, crates/gateway/src/auth.rs): what a client presents in
//! its `authorization` metadata, checked by every gateway without asking anyone.
//!
//! Holds: nothing panics; a token is accepted only for a user of the state, with that user's
//! password generation, before its expiry; the claims of an accepted token are what `issue`
//! signs into the same token; the gateway names the token's user, or refuses it while auth is
//! on.
//!
//! Input: a kind byte, then 0 a token as text, 1 a token's payload (signed with the state's
//! secret here, so the payload decoding behind the signature check is reached), 2 the value
//! of the `authorization` metadata.

#![no_main]

use cairn_auth::token::{issue, sign, verify};
use cairn_auth::{AuthState, User};
use cairn_fuzz::split_kind;
use cairn_gateway::auth::{AuthGate, AUTHORIZATION};
use libfuzzer_sys::fuzz_target;
use tonic::metadata::MetadataValue;

const NOW_MS: u64 = 1_000_000;

fn state() -> AuthState {
    let mut state = AuthState {
        enabled: true,
        secret: vec![7; 32],
        revision: 4,
        ..Default::default()
    };
    state.users.insert("alice".into(), User::default());
    state.users.insert(
        "bob".into(),
        User {
            generation: 3,
            ..Default::default()
        },
    );
    state
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, bytes)) = split_kind(data) else {
        return;
    };
    let state = state();
    match kind {
        0 => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                accepted(&state, text);
            }
        }
        1 => accepted(&state, &sign(&state.secret, bytes)),
        2 => {
            let Ok(value) = MetadataValue::try_from(bytes) else {
                return;
            };
            for enabled in [true, false] {
                let state = AuthState {
                    enabled,
                    ..state.clone()
                };
                let mut request = tonic::Request::new(());
                request.metadata_mut().insert(AUTHORIZATION, value.clone());
                if let Ok(Some(user)) = AuthGate::identify(&state, &request) {
                    assert!(state.users.contains_key(&user));
                }
            }
        }
        _ => {}
    }
});

/// Checks `token`; a token accepted is the one `issue` makes for its claims.
fn accepted(state: &AuthState, token: &str) {
    let Ok(claims) = verify(state, token, NOW_MS) else {
        return;
    };
    assert!(claims.expires_at_ms > NOW_MS);
    let user = state
        .users
        .get(&claims.user)
        .expect("the token's user exists");
    assert_eq!(user.generation, claims.generation);
    let again = issue(state, &claims.user, claims.expires_at_ms).expect("issue for a user");
    assert_eq!(again.to_ascii_lowercase(), token.to_ascii_lowercase());
}
