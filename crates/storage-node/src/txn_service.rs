//! The transaction calls of `cairn.node.v1.ShardKv` (D93): Prewrite, Commit, Rollback,
//! CheckTxnStatus, ResolveLocks and ScanLocks. Each arrives like every shard call (size,
//! target, epoch), is validated into its command (`cairn_raft::convert_txn`), and is one
//! Raft command on the shard, except a check-status that decides nothing and a lock scan,
//! which the leader answers from its applied state. A transaction rule's refusal comes back
//! as a status with its detail (`crate::error`).

use crate::error::{NodeError, Result};
use crate::kv_service::{now_ms, read_blocking, KvService};
use crate::txn_metrics::{TxnCall, TxnOutcome};
use cairn_mvcc::{RangeBounds, TxnStatus};
use cairn_proto::kv::v1 as pb;
use cairn_proto::node::v1 as node_pb;
use cairn_raft::command::{WriteOp, WriteResult};
use cairn_raft::replica::{ShardReplica, SCAN_LOCKS_LIMIT_MAX};
use cairn_types::Revision;
use tonic::Status;

impl KvService {
    /// Counts the call by its outcome and turns a refusal into its status.
    pub(crate) fn counted<T>(&self, call: TxnCall, answer: Result<T>) -> Result<T, Status> {
        self.node.txn_counters.call(call, TxnOutcome::of(&answer));
        answer.map_err(Status::from)
    }

    /// Proposes a transaction command on the shard and returns its result, or its refusal
    /// as an error.
    async fn propose_txn(&self, replica: &ShardReplica, op: WriteOp) -> Result<WriteResult> {
        let write_id = op.txn_write_id();
        match replica.write_txn(op, now_ms()).await? {
            WriteResult::TxnRefused(refusal) => Err(NodeError::Txn(refusal)),
            WriteResult::WindowExceeded { oldest_remembered } => {
                let write_id = write_id.expect("only a write id can exceed the window");
                Err(NodeError::WriteWindowExceeded {
                    client_id: write_id.client.0,
                    sequence: write_id.sequence,
                    oldest_remembered,
                })
            }
            WriteResult::AppliedResultNotRetained => Err(NodeError::AppliedResultNotRetained),
            // A one-phase write's result under the prewrite's write id.
            WriteResult::Put(_) | WriteResult::Delete(_) | WriteResult::Txn(_) => {
                Err(NodeError::WriteIdReused)
            }
            result => Ok(result),
        }
    }

    pub(crate) async fn serve_prewrite(
        &self,
        message: node_pb::PrewriteRequest,
    ) -> Result<node_pb::PrewriteResponse> {
        let (replica, request) = self.arrive::<_, node_pb::PrewriteRequest>(message)?;
        let op = self.node.validator.prewrite(&request)?;
        match self.propose_txn(&replica, op).await? {
            WriteResult::Prewritten { first_result } => Ok(node_pb::PrewriteResponse {
                first_result: first_result.map(Into::into),
            }),
            other => Err(unexpected("prewrite", other)),
        }
    }

    pub(crate) async fn serve_commit(
        &self,
        message: node_pb::CommitRequest,
    ) -> Result<node_pb::CommitResponse> {
        let (replica, request) = self.arrive::<_, node_pb::CommitRequest>(message)?;
        let op = self.node.validator.commit(&request)?;
        match self.propose_txn(&replica, op).await? {
            WriteResult::TxnCommitted { commit_ts } => Ok(node_pb::CommitResponse {
                commit_ts: commit_ts.0,
            }),
            other => Err(unexpected("commit", other)),
        }
    }

    pub(crate) async fn serve_rollback(
        &self,
        message: node_pb::RollbackRequest,
    ) -> Result<node_pb::RollbackResponse> {
        let (replica, request) = self.arrive::<_, node_pb::RollbackRequest>(message)?;
        let op = self.node.validator.rollback(&request)?;
        match self.propose_txn(&replica, op).await? {
            WriteResult::TxnRolledBack => Ok(node_pb::RollbackResponse {}),
            other => Err(unexpected("rollback", other)),
        }
    }

    pub(crate) async fn serve_resolve_locks(
        &self,
        message: node_pb::ResolveLocksRequest,
    ) -> Result<node_pb::ResolveLocksResponse> {
        let (replica, request) = self.arrive::<_, node_pb::ResolveLocksRequest>(message)?;
        let op = self.node.validator.resolve_locks(&request)?;
        match self.propose_txn(&replica, op).await? {
            WriteResult::LocksResolved => Ok(node_pb::ResolveLocksResponse {}),
            other => Err(unexpected("resolve_locks", other)),
        }
    }

    /// Answered from the leader's applied state when that decides nothing; otherwise (an
    /// expired or missing primary to roll back) one Raft command, which decides again at
    /// apply with the command's clock.
    pub(crate) async fn serve_check_txn_status(
        &self,
        message: node_pb::CheckTxnStatusRequest,
    ) -> Result<node_pb::CheckTxnStatusResponse> {
        let (replica, request) = self.arrive::<_, node_pb::CheckTxnStatusRequest>(message)?;
        let op = self.node.validator.check_txn_status(&request)?;
        let at_ms = now_ms();
        if let Some(answer) = replica.check_txn_status_applied(
            &request.primary,
            Revision(request.start_ts),
            at_ms,
            request.rollback_if_missing,
        )? {
            return Ok(status_response(answer?));
        }
        match replica.write_txn(op, at_ms).await? {
            WriteResult::TxnStatus(status) => Ok(status_response(status)),
            WriteResult::TxnRefused(refusal) => Err(NodeError::Txn(refusal)),
            other => Err(unexpected("check_txn_status", other)),
        }
    }

    pub(crate) async fn serve_scan_locks(
        &self,
        message: node_pb::ScanLocksRequest,
    ) -> Result<node_pb::ScanLocksResponse> {
        let (replica, request) = self.arrive::<_, node_pb::ScanLocksRequest>(message)?;
        let bounds = scan_bounds(&self.node.validator, &request)?;
        let max_start_ts = match request.max_start_ts {
            0 => Revision::LATEST,
            at => Revision(at),
        };
        let limit = match request.limit as usize {
            0 => SCAN_LOCKS_LIMIT_MAX,
            limit => limit.min(SCAN_LOCKS_LIMIT_MAX),
        };
        let page =
            read_blocking(move || Ok(replica.scan_locks(&bounds, max_start_ts, limit)?)).await?;
        Ok(node_pb::ScanLocksResponse {
            locks: page.locks.into_iter().map(key_locked).collect(),
            more: page.more,
        })
    }
}

fn scan_bounds(
    validator: &cairn_raft::convert::RequestValidator,
    request: &node_pb::ScanLocksRequest,
) -> Result<RangeBounds> {
    for key in [&request.start, &request.end] {
        validator
            .limits
            .check_key(key)
            .map_err(|limit| NodeError::InvalidRequest(limit.into()))?;
    }
    let end = (!request.end.is_empty()).then(|| request.end.clone());
    if end.as_ref().is_some_and(|end| *end < request.start) {
        return Err(NodeError::InvalidRequest(
            cairn_raft::convert::InvalidRequest::Field {
                field: "end",
                reason: "must not sort before start".into(),
            },
        ));
    }
    Ok(RangeBounds {
        start: request.start.clone(),
        end,
    })
}

fn status_response(status: TxnStatus) -> node_pb::CheckTxnStatusResponse {
    use node_pb::check_txn_status_response::Status as Answer;
    node_pb::CheckTxnStatusResponse {
        status: Some(match status {
            TxnStatus::Locked {
                ttl_remaining_ms, ..
            } => Answer::LockedTtlRemainingMs(ttl_remaining_ms),
            TxnStatus::Committed { commit_ts } => Answer::CommittedAt(commit_ts.0),
            TxnStatus::RolledBack => Answer::RolledBack(true),
        }),
    }
}

pub(crate) fn key_locked(lock: cairn_mvcc::LockInfo) -> pb::KeyLocked {
    pb::KeyLocked {
        key: lock.key,
        primary: lock.primary,
        start_ts: lock.start_ts.0,
        ttl_ms: lock.ttl_ms,
        created_at_ms: lock.created_at_ms,
        kind: match lock.kind {
            cairn_mvcc::LockKind::Put => pb::key_locked::Kind::Put,
            cairn_mvcc::LockKind::Delete => pb::key_locked::Kind::Delete,
            cairn_mvcc::LockKind::Read => pb::key_locked::Kind::Read,
        } as i32,
    }
}

fn unexpected(call: &str, result: WriteResult) -> NodeError {
    NodeError::Internal(format!(
        "{call} applied with an unexpected result: {result:?}"
    ))
}
