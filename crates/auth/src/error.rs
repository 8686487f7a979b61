//! What can go wrong in authentication and authorization, with what the caller needs to act.

use crate::permission::Access;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The caller could not be identified (no credentials, a bad or expired token, a wrong
    /// password, an unknown user): gRPC `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this: gRPC `PERMISSION_DENIED`.
    #[error("user {user:?} may not {access} {what}")]
    PermissionDenied {
        user: String,
        access: Access,
        /// The key or range, or the administrative action, that was not permitted.
        what: String,
    },
    /// A management command that cannot apply to the current state (an unknown user, a
    /// role that already exists): gRPC `FAILED_PRECONDITION`.
    #[error("{0}")]
    Conflict(String),
    /// Malformed input (an empty name, a range that ends before it starts): gRPC
    /// `INVALID_ARGUMENT`.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Hashing failed (an argon2 parameter error; a bug, not bad input).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl AuthError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AuthError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::Unauthenticated(_) => Self::unauthenticated(message),
            AuthError::PermissionDenied { .. } => Self::permission_denied(message),
            AuthError::Conflict(_) => Self::failed_precondition(message),
            AuthError::Invalid { .. } => Self::invalid_argument(message),
            AuthError::Hashing(_) => Self::internal(message),
        }
    }
}
