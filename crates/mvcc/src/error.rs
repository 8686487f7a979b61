//! Errors of the MVCC layer: stored data that does not decode, or the storage under the view
//! failing. Refusals of a write's timestamp are not errors but outcomes ([`crate::Refusal`]).

pub type Result<T, E = MvccError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
    #[error("storage: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl MvccError {
    pub fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> Self {
        MvccError::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }
}
