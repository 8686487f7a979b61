//! Errors of the storage layer. openraft wants `std::io::Error` from storage; these convert
//! into it with the cause kept as the source.

use crate::codec::CodecError;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    RocksDb(#[from] rocksdb::Error),
    #[error("corrupt stored data in {what}: {source}")]
    Corrupt {
        what: &'static str,
        source: CodecError,
    },
    #[error("snapshot file: {0}")]
    Snapshot(String),
    #[error("inconsistent stored state: {0}")]
    Inconsistent(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("background task failed: {0}")]
    Task(String),
}

impl StorageError {
    pub fn corrupt(what: &'static str) -> impl FnOnce(CodecError) -> StorageError {
        move |source| StorageError::Corrupt { what, source }
    }
}

impl From<StorageError> for std::io::Error {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Io(io) => io,
            other => std::io::Error::other(other),
        }
    }
}
