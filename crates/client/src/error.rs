//! The SDK's error type and the one mapping from a gateway's `tonic::Status` to it.
//!
//! Gateways put a protobuf `cairn.kv.v1.ErrorDetail` in the status `details` bytes; the
//! mapping acts on that and on the status code, never on the message text.

use cairn_proto::kv::v1::error_detail::Kind;
use cairn_proto::status::detail_of;
use tonic::Code;

pub type Result<T> = std::result::Result<T, Error>;

/// Why a call failed. Variants that a retry of the same call cannot fix are separate from
/// those it may fix; see [`Error::is_retryable`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed; fix `field`.
    #[error("{}", invalid_argument_message(field, reason))]
    InvalidArgument { field: String, reason: String },

    /// The request breaks a cluster limit; `limit` is its configuration name.
    #[error(
        "{limit} exceeded: {actual} > {max}; make the request smaller or raise limits.{limit} \
         in the cluster configuration"
    )]
    LimitExceeded {
        limit: String,
        max: u64,
        actual: u64,
    },

    /// A transaction named keys of several shards, and the gateway is older than cross-shard
    /// transactions (issue 16): only such gateways send this; current ones commit any
    /// transaction. Kept so that a new SDK still explains an old gateway's refusal.
    #[error(
        "the transaction touches keys of shards {shards:?}, and this gateway runs transactions \
         within one shard only: upgrade the gateways, or choose keys that hash to one shard"
    )]
    CrossShardTransaction { shards: Vec<u64> },

    /// The write was refused without being applied, and whether an earlier attempt of it
    /// was applied can no longer be told.
    #[error(
        "write sequence {sequence} is older than the oldest result the shard still remembers \
         ({oldest_remembered}): this attempt was not applied and an earlier one may have been; \
         read the key before writing it again"
    )]
    WriteWindowExceeded {
        sequence: u64,
        oldest_remembered: u64,
    },

    /// The read asked for a revision below the cluster's compaction point: its versions may
    /// be gone. Read at `compact_revision` or later.
    #[error(
        "revision {requested} is compacted: the cluster keeps history from revision \
         {compact_revision} on; read at a later revision"
    )]
    Compacted {
        requested: u64,
        compact_revision: u64,
    },

    /// The transaction lost a race with another write and applied nothing: a key it read,
    /// compared or writes changed after its snapshot at `start_revision`. Running it again is
    /// safe; the client's conflict policy does so ([`crate::Txn`]).
    #[error(
        "transaction conflict on key {}: it changed after the transaction's snapshot at \
         revision {start_revision}{}; nothing was applied, run the transaction again",
        key.escape_ascii(),
        if *conflicting_revision > 0 { format!(" (written at {conflicting_revision})") } else { String::new() }
    )]
    Conflict {
        key: Vec<u8>,
        start_revision: u64,
        conflicting_revision: u64,
    },

    /// The read (or compaction) asked for a revision the cluster has not handed out yet.
    #[error(
        "revision {requested} is in the future: the latest revision handed out is at most \
         {latest}"
    )]
    FutureRevision { requested: u64, latest: u64 },

    /// Every attempt failed with an error that a retry might fix (gateways unreachable,
    /// no shard leader): the message says what the last attempt saw.
    #[error("{0}")]
    Unavailable(String),

    /// The call did not finish within `request_timeout`. A write may or may not have been
    /// applied.
    #[error(
        "the request did not complete within request_timeout; a write may or may not have been \
         applied (read the key to find out), or raise request_timeout"
    )]
    Timeout,

    /// The named thing (a node, for example) does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// Any other refusal, with the gateway's code and message.
    #[error("the gateway rejected the request ({code:?}): {message}")]
    Rejected { code: Code, message: String },

    /// The connection to a gateway broke mid-call, or an endpoint address is unusable.
    #[error("transport error: {0}; check the gateway addresses and that the gateways are running")]
    Transport(String),
}

fn invalid_argument_message(field: &str, reason: &str) -> String {
    if field.is_empty() {
        format!("invalid argument: {reason}")
    } else {
        format!("invalid argument `{field}`: {reason}")
    }
}

impl Error {
    /// True when the same call, made again later, may succeed: the cluster, the network or
    /// a concurrent writer (`Conflict`) was the problem, not the request. A repeated write
    /// gets a new write id, so it is not deduplicated against the attempts that failed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Timeout | Error::Transport(_) | Error::Conflict { .. }
        )
    }

    /// Maps a gateway's status to an error, using its `ErrorDetail` when it has one.
    pub fn from_status(status: tonic::Status) -> Error {
        if let Some(kind) = detail_of(&status) {
            match kind {
                Kind::InvalidArgument(detail) => {
                    return Error::InvalidArgument {
                        field: detail.field,
                        reason: detail.reason,
                    }
                }
                Kind::LimitExceeded(detail) => {
                    return Error::LimitExceeded {
                        limit: detail.limit,
                        max: detail.max,
                        actual: detail.actual,
                    }
                }
                Kind::CrossShardTxn(detail) => {
                    return Error::CrossShardTransaction {
                        shards: detail.shard_ids,
                    }
                }
                Kind::WriteWindowExceeded(detail) => {
                    return Error::WriteWindowExceeded {
                        sequence: detail.sequence,
                        oldest_remembered: detail.oldest_remembered,
                    }
                }
                Kind::Compacted(detail) => {
                    return Error::Compacted {
                        requested: detail.requested_revision,
                        compact_revision: detail.compact_revision,
                    }
                }
                Kind::FutureRevision(detail) => {
                    return Error::FutureRevision {
                        requested: detail.requested_revision,
                        latest: detail.latest_revision,
                    }
                }
                // Routing details mean the gateway's view of the shards is catching up with
                // an election or a move: transient, hence Unavailable.
                Kind::NotLeader(detail) => {
                    return Error::Unavailable(format!(
                        "shard {} has no reachable leader right now (an election may be \
                         running); retry shortly",
                        detail.shard_id
                    ))
                }
                Kind::CoordinatorNotLeader(detail) => {
                    return Error::Unavailable(if detail.leader_address.is_empty() {
                        "the coordinators have no reachable leader right now (an election may \
                         be running); retry shortly"
                            .to_string()
                    } else {
                        format!(
                            "the coordinator leader at {} could not be reached; retry shortly",
                            detail.leader_address
                        )
                    })
                }
                Kind::StaleEpoch(detail) => {
                    return Error::Unavailable(format!(
                        "shard {} changed membership (epoch {}) while the request was routed; \
                         retry shortly",
                        detail.shard_id, detail.current_epoch
                    ))
                }
                Kind::UnknownShard(detail) => {
                    return Error::Unavailable(format!(
                        "shard {} is moving between nodes; retry shortly",
                        detail.shard_id
                    ))
                }
                Kind::Conflict(detail) => {
                    return Error::Conflict {
                        key: detail.key,
                        start_revision: detail.start_revision,
                        conflicting_revision: detail.conflicting_revision,
                    }
                }
                // Internal: a gateway resolves locks and transaction states itself; one
                // reaching a client means the gateway gave up waiting for a lock.
                Kind::KeyLocked(detail) => {
                    return Error::Unavailable(format!(
                        "key {} is locked by a transaction that is still deciding; retry shortly",
                        detail.key.escape_ascii()
                    ))
                }
                Kind::TxnRolledBack(_) | Kind::TxnNotFound(_) => {
                    return Error::Rejected {
                        code: status.code(),
                        message: one_line(status.message()),
                    }
                }
                // Internal: a node refused a call meant for the node it replaced. A gateway
                // retries elsewhere and passes it on only when its tries run out.
                Kind::WrongNode(detail) => {
                    return Error::Unavailable(format!(
                        "node {} is gone from its address (node {} answers there); retry shortly",
                        detail.intended_node_id, detail.node_id
                    ))
                }
            }
        }
        let message = one_line(status.message());
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument {
                field: String::new(),
                reason: message,
            },
            Code::NotFound => Error::NotFound(message),
            Code::DeadlineExceeded => Error::Timeout,
            Code::Unavailable => Error::Unavailable(message),
            Code::Cancelled | Code::Unknown => Error::Transport(message),
            code => Error::Rejected { code, message },
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(status)
    }
}

/// Status messages may span lines; errors are reported on one.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::kv::v1 as proto;

    fn status_with(code: Code, kind: Kind) -> tonic::Status {
        cairn_proto::status::with_detail(code, "server message", kind)
    }

    #[test]
    fn limit_exceeded_detail_is_decoded() {
        let status = status_with(
            Code::InvalidArgument,
            Kind::LimitExceeded(proto::LimitExceeded {
                limit: "value_bytes_max".into(),
                max: 1024,
                actual: 2048,
            }),
        );
        let error = Error::from_status(status);
        assert_eq!(
            error,
            Error::LimitExceeded {
                limit: "value_bytes_max".into(),
                max: 1024,
                actual: 2048
            }
        );
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("limits.value_bytes_max"));
    }

    #[test]
    fn every_detail_maps_to_its_variant() {
        let cases = [
            (
                status_with(
                    Code::InvalidArgument,
                    Kind::InvalidArgument(proto::InvalidArgument {
                        field: "key".into(),
                        reason: "must not be empty".into(),
                    }),
                ),
                Error::InvalidArgument {
                    field: "key".into(),
                    reason: "must not be empty".into(),
                },
            ),
            (
                status_with(
                    Code::InvalidArgument,
                    Kind::CrossShardTxn(proto::CrossShardTxn {
                        shard_ids: vec![3, 7],
                    }),
                ),
                Error::CrossShardTransaction { shards: vec![3, 7] },
            ),
            (
                status_with(
                    Code::Aborted,
                    Kind::Conflict(proto::Conflict {
                        key: b"acct/7".to_vec(),
                        start_revision: 40,
                        conflicting_revision: 42,
                    }),
                ),
                Error::Conflict {
                    key: b"acct/7".to_vec(),
                    start_revision: 40,
                    conflicting_revision: 42,
                },
            ),
            (
                status_with(
                    Code::FailedPrecondition,
                    Kind::WriteWindowExceeded(proto::WriteWindowExceeded {
                        client_id: 9,
                        sequence: 4,
                        oldest_remembered: 10,
                    }),
                ),
                Error::WriteWindowExceeded {
                    sequence: 4,
                    oldest_remembered: 10,
                },
            ),
            (
                status_with(
                    Code::OutOfRange,
                    Kind::Compacted(proto::Compacted {
                        requested_revision: 5,
                        compact_revision: 9,
                    }),
                ),
                Error::Compacted {
                    requested: 5,
                    compact_revision: 9,
                },
            ),
            (
                status_with(
                    Code::OutOfRange,
                    Kind::FutureRevision(proto::FutureRevision {
                        requested_revision: 50,
                        latest_revision: 40,
                    }),
                ),
                Error::FutureRevision {
                    requested: 50,
                    latest: 40,
                },
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(Error::from_status(status), expected);
        }
        let not_leader = status_with(
            Code::FailedPrecondition,
            Kind::NotLeader(proto::NotLeader {
                shard_id: 5,
                leader_node_id: 0,
                leader_address: String::new(),
            }),
        );
        assert!(matches!(
            Error::from_status(not_leader),
            Error::Unavailable(message) if message.contains("shard 5")
        ));
        let coordinator = |address: &str| {
            status_with(
                Code::FailedPrecondition,
                Kind::CoordinatorNotLeader(proto::CoordinatorNotLeader {
                    leader_id: 0,
                    leader_address: address.into(),
                }),
            )
        };
        assert!(matches!(
            Error::from_status(coordinator("")),
            Error::Unavailable(message) if message.contains("coordinators have no reachable leader") && !message.contains("shard")
        ));
        assert!(matches!(
            Error::from_status(coordinator("c2:7200")),
            Error::Unavailable(message) if message.contains("c2:7200")
        ));
    }

    #[test]
    fn codes_without_detail_map_by_code() {
        let map = |code: Code| Error::from_status(tonic::Status::new(code, "line one\nline two"));
        assert_eq!(
            map(Code::NotFound),
            Error::NotFound("line one line two".into())
        );
        assert_eq!(map(Code::DeadlineExceeded), Error::Timeout);
        assert!(matches!(map(Code::Unavailable), Error::Unavailable(_)));
        assert!(matches!(map(Code::Unknown), Error::Transport(_)));
        assert!(matches!(
            map(Code::InvalidArgument),
            Error::InvalidArgument { field, .. } if field.is_empty()
        ));
        assert_eq!(
            map(Code::AlreadyExists),
            Error::Rejected {
                code: Code::AlreadyExists,
                message: "line one line two".into()
            }
        );
    }

    #[test]
    fn garbage_details_fall_back_to_the_code() {
        let status = tonic::Status::with_details(
            Code::FailedPrecondition,
            "odd",
            vec![0xff, 0xff, 0xff].into(),
        );
        assert!(matches!(
            Error::from_status(status),
            Error::Rejected {
                code: Code::FailedPrecondition,
                ..
            }
        ));
    }

    #[test]
    fn retryable_classification() {
        assert!(Error::Unavailable("x".into()).is_retryable());
        assert!(Error::Timeout.is_retryable());
        assert!(Error::Transport("x".into()).is_retryable());
        let conflict = Error::Conflict {
            key: b"k".to_vec(),
            start_revision: 3,
            conflicting_revision: 0,
        };
        assert!(conflict.is_retryable());
        assert!(conflict.to_string().contains("run the transaction again"));
        assert!(!conflict.to_string().contains("written at"));
        for error in [
            Error::InvalidArgument {
                field: "key".into(),
                reason: "r".into(),
            },
            Error::NotFound("node 3".into()),
            Error::WriteWindowExceeded {
                sequence: 1,
                oldest_remembered: 2,
            },
            Error::CrossShardTransaction { shards: vec![1, 2] },
            Error::Rejected {
                code: Code::FailedPrecondition,
                message: "m".into(),
            },
        ] {
            assert!(!error.is_retryable(), "{error:?}");
        }
    }
}
