//! Users, roles, the auth switch and the token secret in the coordinator's replicated
//! metadata (D88): one record under the key `auth/state`, changed by compare-and-set on its
//! mod_revision, which is also the auth revision gateways compare to see a change.
//!
//! The checks and changes themselves are `cairn-auth`'s pure functions; this module reads,
//! applies and writes. Passwords are hashed here, before anything is proposed, so no password
//! reaches the Raft log.

use crate::error::{CoordinatorError, Result};
use crate::metadata::METADATA_SHARD;
use cairn_auth::{AuthError, AuthState, Change};
use cairn_raft::codec;
use cairn_raft::command::{Command, Put, PutCondition, WriteOp, WriteResult};
use cairn_raft::kv::KvView;
use cairn_raft::replica::ShardReplica;
use std::sync::Arc;

const AUTH_KEY: &[u8] = b"auth/state";
/// Attempts of a compare-and-set before giving up (contention means concurrent changes or a
/// leader change).
const CAS_ATTEMPTS_MAX: usize = 8;

#[derive(Clone)]
pub struct AuthStore {
    replica: Arc<ShardReplica>,
}

impl AuthStore {
    pub fn new(replica: Arc<ShardReplica>) -> Self {
        Self { replica }
    }

    /// The auth state, read linearizably; the default (disabled, no users) at revision 0
    /// when nothing was ever written.
    pub async fn state(&self) -> Result<AuthState> {
        self.replica.linearizable_barrier().await?;
        let view = KvView::new(self.replica.db(), METADATA_SHARD);
        let Some(kv) = view
            .get(AUTH_KEY, false)
            .map_err(CoordinatorError::storage)?
        else {
            return Ok(AuthState::default());
        };
        let mut state: AuthState = codec::decode(&kv.value)
            .map_err(|e| CoordinatorError::Internal(format!("auth state: {e}")))?;
        state.revision = kv.mod_revision.0;
        Ok(state)
    }

    /// Applies `change` on behalf of `acting_user` (the user the gateway authenticated),
    /// who needs the root role while auth is enabled. Returns the new auth revision.
    pub async fn change(&self, acting_user: Option<&str>, change: Change) -> Result<u64> {
        for _ in 0..CAS_ATTEMPTS_MAX {
            let state = self.state().await?;
            state
                .check_admin(acting_user, change.action())
                .map_err(auth_error)?;
            let mut next = state.apply(&change).map_err(auth_error)?;
            if next.secret.is_empty() {
                next.secret = (0..cairn_auth::SECRET_BYTES)
                    .map(|_| rand::random::<u8>())
                    .collect();
            }
            next.revision = 0;
            if let Some(revision) = self.compare_and_put(state.revision, &next).await? {
                tracing::info!(
                    action = change.action(),
                    user = acting_user.unwrap_or(""),
                    revision,
                    "auth changed"
                );
                return Ok(revision);
            }
        }
        Err(CoordinatorError::Unavailable(
            "auth changes kept conflicting".into(),
        ))
    }

    async fn compare_and_put(&self, expected: u64, state: &AuthState) -> Result<Option<u64>> {
        let command = Command {
            write_id: None,
            proposed_at_ms: now_ms(),
            op: WriteOp::Put(Put {
                key: AUTH_KEY.to_vec(),
                value: codec::encode(state),
                prev_kv: false,
                condition: Some(PutCondition::ModRevisionEquals(expected)),
            }),
            revision: Default::default(),
            trace: None,
        };
        match self.replica.write(command).await? {
            WriteResult::Put(result) => Ok(result.succeeded.then_some(result.revision.0)),
            other => Err(CoordinatorError::Internal(format!(
                "unexpected result {other:?}"
            ))),
        }
    }
}

/// Hashes a password off the async runtime (argon2 takes tens of milliseconds on purpose).
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || cairn_auth::password::hash(&password))
        .await
        .map_err(|e| CoordinatorError::Internal(format!("password hashing task: {e}")))?
        .map_err(auth_error)
}

fn auth_error(error: AuthError) -> CoordinatorError {
    CoordinatorError::Auth(error)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
