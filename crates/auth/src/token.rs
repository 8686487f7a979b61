//! Signed tokens: what `Authenticate` hands out for a user name and password, and what every
//! gateway checks without asking anyone (D87).
//!
//! A token is `hex(payload) "." hex(HMAC-SHA256(secret, payload))`, the payload being a
//! version byte, the expiry (ms since the Unix epoch, big-endian u64), the user's password
//! generation (u64) and the user name. The secret is the cluster's, from [`AuthState`]. A
//! token is refused when it is malformed, badly signed, expired, its user is gone, or the
//! user's password changed after it was issued. Decoding never panics on any input.

use crate::error::{AuthError, Result};
use crate::state::AuthState;
use ring::hmac;

/// Longest token accepted, in bytes (a user name of the longest size fits with room).
pub const TOKEN_BYTES_MAX: usize = 1024;
const VERSION: u8 = 1;
/// Version, expiry, generation.
const HEADER_BYTES: usize = 1 + 8 + 8;

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub expires_at_ms: u64,
    pub generation: u64,
}

/// Signs a token for `user` (who must exist) valid until `expires_at_ms`.
pub fn issue(state: &AuthState, user: &str, expires_at_ms: u64) -> Result<String> {
    if state.secret.is_empty() {
        return Err(AuthError::Conflict(
            "no token secret yet: auth was never configured".into(),
        ));
    }
    let record = state
        .users
        .get(user)
        .ok_or_else(|| AuthError::Unauthenticated(format!("no user {user:?}")))?;
    let mut payload = Vec::with_capacity(HEADER_BYTES + user.len());
    payload.push(VERSION);
    payload.extend_from_slice(&expires_at_ms.to_be_bytes());
    payload.extend_from_slice(&record.generation.to_be_bytes());
    payload.extend_from_slice(user.as_bytes());
    Ok(sign(&state.secret, &payload))
}

/// A token carrying `payload`, signed with `secret`, whatever the payload holds: [`issue`]
/// signs the payloads it builds with it, and the fuzz target signs arbitrary ones, to reach
/// the payload decoding behind the signature check.
#[doc(hidden)]
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, payload);
    format!("{}.{}", hex(payload), hex(tag.as_ref()))
}

/// Checks `token` against `state` at `now_ms`; the claims of a token still good.
pub fn verify(state: &AuthState, token: &str, now_ms: u64) -> Result<Claims> {
    let bad = |why: &str| AuthError::Unauthenticated(format!("invalid token: {why}"));
    if token.len() > TOKEN_BYTES_MAX {
        return Err(bad("too long"));
    }
    let (payload, tag) = token.split_once('.').ok_or_else(|| bad("malformed"))?;
    let payload = unhex(payload).ok_or_else(|| bad("malformed"))?;
    let tag = unhex(tag).ok_or_else(|| bad("malformed"))?;
    if state.secret.is_empty() {
        return Err(bad("no token secret yet"));
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, &state.secret);
    hmac::verify(&key, &payload, &tag).map_err(|_| bad("bad signature"))?;
    let claims = decode_payload(&payload).ok_or_else(|| bad("malformed"))?;
    if claims.expires_at_ms <= now_ms {
        return Err(AuthError::Unauthenticated(format!(
            "token expired {} ms ago: authenticate again",
            now_ms - claims.expires_at_ms
        )));
    }
    let user = state
        .users
        .get(&claims.user)
        .ok_or_else(|| bad("its user no longer exists"))?;
    if user.generation != claims.generation {
        return Err(bad("the user's password changed since it was issued"));
    }
    Ok(claims)
}

fn decode_payload(payload: &[u8]) -> Option<Claims> {
    let (&version, rest) = payload.split_first()?;
    if version != VERSION || rest.len() < HEADER_BYTES - 1 {
        return None;
    }
    let (expiry, rest) = rest.split_at(8);
    let (generation, user) = rest.split_at(8);
    Some(Claims {
        expires_at_ms: u64::from_be_bytes(expiry.try_into().ok()?),
        generation: u64::from_be_bytes(generation.try_into().ok()?),
        user: String::from_utf8(user.to_vec()).ok()?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::User;
    use proptest::prelude::*;

    fn state() -> AuthState {
        let mut state = AuthState {
            secret: vec![7; 32],
            ..Default::default()
        };
        state.users.insert("alice".into(), User::default());
        state
    }

    #[test]
    fn a_token_is_good_until_it_expires() {
        let state = state();
        let token = issue(&state, "alice", 1_000).unwrap();
        assert_eq!(verify(&state, &token, 999).unwrap().user, "alice");
        let expired = verify(&state, &token, 1_000).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
    }

    #[test]
    fn a_token_is_refused_with_another_secret_a_new_password_or_no_user() {
        let state = state();
        let token = issue(&state, "alice", 1_000).unwrap();
        let mut other = state.clone();
        other.secret = vec![8; 32];
        assert!(verify(&other, &token, 0).is_err());
        let mut changed = state.clone();
        changed.users.get_mut("alice").unwrap().generation += 1;
        assert!(verify(&changed, &token, 0).is_err());
        let mut gone = state.clone();
        gone.users.clear();
        assert!(verify(&gone, &token, 0).is_err());
        assert!(issue(&state, "bob", 1_000).is_err());
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let state = state();
        let token = issue(&state, "alice", 1_000).unwrap();
        let (payload, tag) = token.split_once('.').unwrap();
        // Push the expiry out by changing one hex digit of the payload.
        let mut tampered: Vec<u8> = payload.bytes().collect();
        tampered[2] = if tampered[2] == b'f' { b'e' } else { b'f' };
        let tampered = format!("{}.{tag}", String::from_utf8(tampered).unwrap());
        assert!(verify(&state, &tampered, 0).is_err());
    }

    proptest! {
        #[test]
        fn any_text_is_refused_without_panicking(text in ".{0,200}") {
            prop_assert!(verify(&state(), &text, 0).is_err());
        }

        #[test]
        fn any_hex_pair_is_refused_without_panicking(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            tag in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let token = format!("{}.{}", hex(&payload), hex(&tag));
            prop_assert!(verify(&state(), &token, 0).is_err());
        }
    }
}
