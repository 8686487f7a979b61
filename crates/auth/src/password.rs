//! Password hashing with argon2id (argon2's default parameters: 19 MiB, 2 passes), stored
//! in PHC string form so the parameters travel with each hash and can be raised later.

use crate::error::{AuthError, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// Longest password accepted, in bytes: bounds the work one request can ask of the hash.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(AuthError::invalid("password", "must not be empty"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::invalid(
            "password",
            format!("longer than {PASSWORD_BYTES_MAX} bytes"),
        ));
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| AuthError::Hashing("no system randomness for a salt".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hashing(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Whether `password` matches `hash`; a hash that does not parse matches nothing.
pub fn verify(password: &str, hash: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Does the work of `verify` against a hash no password matches, and answers false: a sign-in
/// for a user that does not exist (or has no password) then takes as long as one with a wrong
/// password, so timing does not tell which user names exist.
pub fn verify_nothing(password: &str) -> bool {
    static DECOY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let decoy = DECOY.get_or_init(|| {
        let mut secret = [0u8; 32];
        SystemRandom::new().fill(&mut secret).ok()?;
        hash(&hex(&secret)).ok()
    });
    if let Some(decoy) = decoy {
        verify(password, decoy);
    }
    false
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hashed = hash("correct horse").unwrap();
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify("correct horse", &hashed));
        assert!(!verify("correct horsE", &hashed));
        assert!(!verify("correct horse", "not a hash"));
        assert_ne!(hash("correct horse").unwrap(), hashed, "salted");
        assert!(hash("").is_err());
    }

    #[test]
    fn the_decoy_check_matches_nothing_and_costs_a_hash() {
        let started = std::time::Instant::now();
        assert!(!verify_nothing("correct horse"));
        assert!(!verify_nothing(""));
        // Its cost is argon2's (tens of ms), not a map lookup's: at least a hash was run.
        assert!(started.elapsed() > std::time::Duration::from_micros(500));
    }
}
