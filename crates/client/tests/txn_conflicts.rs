//! `Client::txn`'s conflict policy against the fake gateway: a lost race (`Conflict`) is run
//! again with a new write id up to the policy's bound, then surfaced; an outcome-unknown
//! attempt is repeated with the same write id; no other error starts a new run.

mod fake;

use cairn_client::{
    Backoff, Client, ClientConfig, Compare, CompareOp, ConflictPolicy, Error, Op, Txn,
};
use fake::{conflict, fast_config, limit_exceeded, start, FakeKv};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Status;

/// A policy with short pauses, so that tests run fast.
fn quick(max_attempts: u32) -> ConflictPolicy {
    ConflictPolicy {
        max_attempts,
        backoff: Backoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(5),
        },
    }
}

/// A transfer between two accounts: the shape of a cross-shard transaction.
fn transfer() -> Txn {
    Txn::new()
        .then([Op::put("account/1", "90"), Op::put("account/2", "110")])
        .otherwise([Op::get("account/1")])
}

async fn client_of(kv: Arc<FakeKv>, policy: ConflictPolicy) -> Client {
    let address = start(kv).await;
    let config = ClientConfig {
        txn_conflict_policy: policy,
        ..fast_config(vec![address.to_string()])
    };
    Client::connect(config).await.expect("lazy connect")
}

#[tokio::test]
async fn conflicts_are_run_again_with_new_write_ids_until_one_commits() {
    let kv = Arc::new(FakeKv::failing([
        conflict("account/1"),
        conflict("account/2"),
    ]));
    let client = client_of(kv.clone(), quick(4)).await;

    let response = client.txn(transfer()).await.expect("the third run commits");

    assert!(response.succeeded);
    assert_eq!(response.responses.len(), 2);
    let ids = kv.txn_write_ids();
    assert_eq!(ids.len(), 3, "two conflicted runs, then one that committed");
    let sequences: Vec<u64> = ids.iter().map(|id| id.sequence).collect();
    assert_eq!(sequences, [1, 2, 3], "each run is a new write");
    // A conflicted run is answered and released: the next run acknowledges it.
    let firsts: Vec<u64> = ids.iter().map(|id| id.first_incomplete_sequence).collect();
    assert_eq!(firsts, [1, 2, 3]);
    // Every run sends the same transaction.
    let requests = kv.txn_requests.lock().unwrap().clone();
    assert!(requests
        .iter()
        .all(|r| r.success == requests[0].success && r.success.len() == 2));
}

#[tokio::test]
async fn conflicts_surface_once_the_policy_is_spent() {
    let kv = Arc::new(FakeKv::failing((0..10).map(|_| conflict("account/1"))));
    let client = client_of(kv.clone(), quick(3)).await;

    let error = client.txn(transfer()).await.unwrap_err();

    assert!(
        matches!(&error, Error::Conflict { key, start_revision: 40, conflicting_revision: 41 } if key == b"account/1"),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(kv.txn_write_ids().len(), 3, "exactly max_attempts runs");
}

#[tokio::test]
async fn a_transaction_policy_overrides_the_clients() {
    let kv = Arc::new(FakeKv::failing((0..10).map(|_| conflict("k"))));
    let client = client_of(kv.clone(), quick(5)).await;

    let error = client
        .txn(transfer().on_conflict(ConflictPolicy::never()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(kv.txn_write_ids().len(), 1, "never: no second run");

    let error = client
        .txn(transfer().on_conflict(quick(2)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(kv.txn_write_ids().len(), 3, "one more run, then two");
}

#[tokio::test]
async fn a_non_conflict_error_is_never_run_again() {
    tracing::info!("--- a refusal on the first run");
    let kv = Arc::new(FakeKv::failing([limit_exceeded(), conflict("k")]));
    let client = client_of(kv.clone(), quick(5)).await;
    let error = client.txn(transfer()).await.unwrap_err();
    assert!(matches!(error, Error::LimitExceeded { .. }), "{error:?}");
    assert_eq!(kv.txn_write_ids().len(), 1);

    tracing::info!("--- a refusal on the run after a conflict ends the loop with it");
    let kv = Arc::new(FakeKv::failing([
        conflict("k"),
        limit_exceeded(),
        conflict("k"),
    ]));
    let client = client_of(kv.clone(), quick(5)).await;
    let error = client.txn(transfer()).await.unwrap_err();
    assert!(matches!(error, Error::LimitExceeded { .. }), "{error:?}");
    assert_eq!(kv.txn_write_ids().len(), 2);
}

#[tokio::test]
async fn an_outcome_unknown_attempt_is_repeated_with_the_same_write_id() {
    // Run 1 conflicts; run 2's first attempt times out at the gateway (outcome unknown), its
    // second attempt commits.
    let kv = Arc::new(FakeKv::failing([
        conflict("k"),
        Status::unavailable("gateway gave up; outcome unknown"),
    ]));
    let client = client_of(kv.clone(), quick(4)).await;

    client.txn(transfer()).await.expect("run 2 commits");

    let ids = kv.txn_write_ids();
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0].sequence, ids[1].sequence, "a new run, a new write");
    assert_eq!(ids[1], ids[2], "a repeated attempt keeps its write id");
}

#[tokio::test]
async fn a_conflict_after_an_unknown_outcome_is_not_run_again() {
    // The first attempt's outcome is unknown: it may have committed, and the conflict the
    // repeat met may be with that very attempt. Running it again could apply it twice.
    let kv = Arc::new(FakeKv::failing([
        Status::deadline_exceeded("cut off"),
        conflict("k"),
        conflict("k"),
    ]));
    let client = client_of(kv.clone(), quick(5)).await;

    let error = client.txn(transfer()).await.unwrap_err();

    match &error {
        Error::Unavailable(message) => {
            assert!(message.contains("may have been applied"), "{message}");
            assert!(
                message.contains("transaction conflict on key k"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let ids = kv.txn_write_ids();
    assert_eq!(ids.len(), 2, "no new run");
    assert_eq!(ids[0], ids[1]);
}

#[tokio::test]
async fn conflict_runs_share_the_request_timeout() {
    let kv = Arc::new(FakeKv::failing((0..50).map(|_| conflict("k"))));
    let policy = ConflictPolicy {
        max_attempts: 50,
        backoff: Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(100),
        },
    };
    let address = start(kv.clone()).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(400),
        txn_conflict_policy: policy,
        ..fast_config(vec![address.to_string()])
    };
    let client = Client::connect(config).await.unwrap();
    let started = Instant::now();

    let error = client.txn(transfer()).await.unwrap_err();

    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let runs = kv.txn_write_ids().len();
    // Pauses of 50-100 ms within 400 ms: more than one run, far fewer than 50.
    assert!((2..=8).contains(&runs), "{runs} runs");
}

#[tokio::test]
async fn an_invalid_policy_is_refused_before_sending() {
    let kv = Arc::new(FakeKv::default());
    let client = client_of(kv.clone(), quick(3)).await;
    let error = client
        .txn(
            Txn::new()
                .when([Compare::version("k", CompareOp::Equal, 0)])
                .then([Op::put("k", "v")])
                .on_conflict(ConflictPolicy::attempts(0)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidArgument { field, .. } if field == "conflict_policy.max_attempts"),
        "{error:?}"
    );
    assert!(kv.txn_write_ids().is_empty());
}
