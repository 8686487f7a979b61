//! Exit codes and the one-line `error: ...` messages, one place for both so that the
//! documented codes and what `run` returns cannot drift apart.

use cairn_client::Error;
use std::time::Duration;

pub const SUCCESS: i32 = 0;
/// The request failed: no gateway reachable, timeout, or rejected by the cluster.
pub const REQUEST_FAILED: i32 = 1;
/// Usage error or invalid argument (clap's own errors exit 2 as well).
pub const USAGE: i32 = 2;
/// `get`: the key does not exist.
pub const NOT_FOUND: i32 = 3;
/// `txn cas` / `txn put-if-absent`: the condition did not hold; nothing was written.
/// `txn`: a comparison did not hold; the failure requests ran.
pub const CONDITION_FAILED: i32 = 4;

/// The exit code for a failed request.
pub fn exit_code(error: &Error) -> i32 {
    match error {
        Error::InvalidArgument { .. }
        | Error::LimitExceeded { .. }
        | Error::CrossShardTransaction { .. } => USAGE,
        Error::Conflict { .. }
        | Error::WriteWindowExceeded { .. }
        | Error::Compacted { .. }
        | Error::FutureRevision { .. }
        | Error::Unavailable(_)
        | Error::Timeout
        | Error::NotFound(_)
        | Error::Rejected { .. }
        | Error::Transport(_) => REQUEST_FAILED,
    }
}

/// The line printed to stderr for a failed request: what went wrong and what to do.
pub fn error_line(error: &Error, timeout: Duration) -> String {
    let message = match error {
        Error::Unavailable(message) => {
            format!("{message} (is the cluster running? see scripts/local-cluster.sh)")
        }
        Error::Timeout => format!(
            "no answer within --timeout {timeout:?}; a write may or may not have been applied \
             (read the key to check), or raise --timeout"
        ),
        Error::InvalidArgument { field, .. } if field == "endpoints" => {
            format!("{error} (set --endpoints or CAIRN_ENDPOINTS to host:port,...)")
        }
        other => other.to_string(),
    };
    // One line, whatever the gateway's message held.
    format!(
        "error: {}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_exit_1_and_argument_errors_exit_2() {
        assert_eq!(exit_code(&Error::Unavailable("x".into())), 1);
        assert_eq!(exit_code(&Error::Timeout), 1);
        assert_eq!(exit_code(&Error::Transport("reset".into())), 1);
        assert_eq!(exit_code(&Error::NotFound("node 9".into())), 1);
        assert_eq!(
            exit_code(&Error::Rejected {
                code: cairn_client::Code::Internal,
                message: "boom".into()
            }),
            1
        );
        assert_eq!(
            exit_code(&Error::Conflict {
                key: b"k".to_vec(),
                start_revision: 1,
                conflicting_revision: 2
            }),
            1
        );
        assert_eq!(
            exit_code(&Error::WriteWindowExceeded {
                sequence: 1,
                oldest_remembered: 5
            }),
            1
        );
        assert_eq!(
            exit_code(&Error::InvalidArgument {
                field: "key".into(),
                reason: "empty".into()
            }),
            2
        );
        assert_eq!(
            exit_code(&Error::LimitExceeded {
                limit: "key_bytes_max".into(),
                max: 4096,
                actual: 5000
            }),
            2
        );
        assert_eq!(
            exit_code(&Error::CrossShardTransaction { shards: vec![1, 2] }),
            2
        );
    }

    #[test]
    fn unreachable_cluster_message_says_what_to_do() {
        let line = error_line(
            &Error::Unavailable(
                "cannot reach any gateway at 127.0.0.1:7000 after 8 attempts: tcp connect error"
                    .into(),
            ),
            Duration::from_secs(5),
        );
        assert_eq!(
            line,
            "error: cannot reach any gateway at 127.0.0.1:7000 after 8 attempts: tcp connect \
             error (is the cluster running? see scripts/local-cluster.sh)"
        );
        let line = error_line(&Error::Timeout, Duration::from_millis(1500));
        assert!(
            line.starts_with("error: no answer within --timeout 1.5s"),
            "{line}"
        );
        let line = error_line(
            &Error::Rejected {
                code: cairn_client::Code::Internal,
                message: "two\nlines".into(),
            },
            Duration::from_secs(5),
        );
        assert!(!line.contains('\n'));
    }
}
