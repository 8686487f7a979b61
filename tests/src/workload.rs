//! Recorded client histories for the fault tests: concurrent clients get, put,
//! compare-and-set, delete and run single-key transactions on a few keys through the
//! gateways, with unique values; each call and return is timestamped, and an operation
//! whose outcome the client cannot know (a timeout, a lost connection) is recorded as
//! unknown. Writes carry the client's own write id and are retried with it through another
//! gateway, so a write applied twice shows up in the history. The history is then checked by `cairn-linearizability`, and a violation is
//! written to a file whose path the panic names.

use cairn_linearizability::{
    check_history, check_revision_order, Input, Operation, Output, Verdict,
};
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Pause after a failed call before the client's next one, so that a gateway that is down
/// does not turn into thousands of unknown outcomes (each one widens the checker's search).
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(150);
/// Tries of a write whose outcome stays unknown, all with the same write id.
const WRITE_TRIES_MAX: u32 = 3;
/// Most attempts of each final read.
const FINAL_READ_ATTEMPTS_MAX: u32 = 50;

/// One clock for the whole history, in microseconds.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Workload {
    pub keys: Vec<String>,
    pub clients: u64,
    pub seed: u64,
}

/// The clients of a running workload; `finish` stops them and returns the history.
pub struct Running {
    stop: Arc<tokio::sync::Notify>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Operation>>>,
}

impl Running {
    /// Stops the clients after their current call and returns every recorded operation.
    pub async fn finish(self) -> Vec<Operation> {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.notify_waiters();
        let mut history = Vec::new();
        for client in self.clients {
            history.extend(client.await.expect("workload client"));
        }
        history
    }
}

impl Workload {
    /// Starts the clients; client `i` calls gateway `i % gateways.len()` and moves to the
    /// next gateway after an error.
    pub fn start(&self, gateways: &[KvClient<Channel>], clock: Clock) -> Running {
        assert!(!gateways.is_empty() && !self.keys.is_empty());
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..self.clients)
            .map(|client| {
                let gateways = gateways.to_vec();
                let keys = self.keys.clone();
                let seed = self.seed.wrapping_mul(1000).wrapping_add(client);
                let stop = stop.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    let mut gateway = client as usize % gateways.len();
                    let mut history = Vec::new();
                    let mut last_seen: Option<String> = None;
                    let client_id = rng.random::<u64>() | 1;
                    let mut sequence = 0u64;
                    for n in 0u64.. {
                        if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let key = &keys[rng.random_range(0..keys.len())];
                        let value = format!("c{client}-{n}");
                        let input = match rng.random_range(0..100) {
                            0..35 => Input::Get,
                            35..60 => Input::Put(value),
                            60..75 => Input::Cas {
                                expected: last_seen.clone(),
                                new: Some(value),
                            },
                            75..90 => Input::Txn {
                                expected: last_seen.clone(),
                                new: Some(value),
                            },
                            _ => Input::Delete,
                        };
                        // A write carries the client's own write id and is retried with it,
                        // through the next gateway, when its outcome is unknown: the shard
                        // must apply it once and answer every try with the first result.
                        let write_id = (input != Input::Get).then(|| {
                            sequence += 1;
                            pb::WriteId {
                                client_id,
                                sequence,
                                first_incomplete_sequence: sequence,
                            }
                        });
                        let tries = if write_id.is_some() {
                            WRITE_TRIES_MAX
                        } else {
                            1
                        };
                        let call = clock.now();
                        let mut result = None;
                        for attempt in 0..tries {
                            if attempt > 0 {
                                gateway = (gateway + 1) % gateways.len();
                                tokio::select! {
                                    _ = tokio::time::sleep(PAUSE_AFTER_ERROR) => {}
                                    _ = stop.notified() => {}
                                }
                            }
                            let mut kv = gateways[gateway].clone();
                            result = call_once(&mut kv, key, &input, write_id).await;
                            if result.is_some() || stopped.load(std::sync::atomic::Ordering::SeqCst)
                            {
                                break;
                            }
                        }
                        let revision = result.as_ref().and_then(|(_, revision)| *revision);
                        let returned = result.map(|(output, _)| (clock.now(), output));
                        match &returned {
                            Some((_, Output::Value(seen))) | Some((_, Output::TxnFailed(seen))) => {
                                last_seen = seen.clone()
                            }
                            _ => {}
                        }
                        let failed = returned.is_none();
                        // A failed read changed nothing: it needs no place in the history.
                        if !(failed && input == Input::Get) {
                            history.push(Operation {
                                client,
                                key: key.clone(),
                                input,
                                call,
                                returned,
                                revision,
                            });
                        }
                        if failed {
                            gateway = (gateway + 1) % gateways.len();
                            tokio::select! {
                                _ = tokio::time::sleep(PAUSE_AFTER_ERROR) => {}
                                _ = stop.notified() => {}
                            }
                        }
                    }
                    history
                })
            })
            .collect();
        Running {
            stop,
            stopped,
            clients,
        }
    }
}

/// Calls one operation through a gateway; `None` when the outcome is unknown. With the
/// output comes the revision the answer carried: a write's own revision when it changed the
/// key, the `mod_revision` of a value a read found.
async fn call_once(
    kv: &mut KvClient<Channel>,
    key: &str,
    input: &Input,
    write_id: Option<pb::WriteId>,
) -> Option<(Output, Option<u64>)> {
    let value_of =
        |kv: Option<pb::KeyValue>| kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    match input {
        Input::Get => {
            let found = kv
                .get(pb::GetRequest {
                    key: key.into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .kv;
            let revision = found.as_ref().map(|kv| kv.mod_revision);
            Some((Output::Value(value_of(found)), revision))
        }
        Input::Put(value) => {
            let response = kv
                .put(pb::PutRequest {
                    key: key.into(),
                    value: value.clone().into_bytes(),
                    write_id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            Some((Output::Done, Some(response.revision)))
        }
        Input::Delete => {
            let response = kv
                .delete(pb::DeleteRequest {
                    key: key.into(),
                    write_id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            // Deleting an absent key made no revision of its own.
            let revision = (response.deleted > 0).then_some(response.revision);
            Some((Output::Done, revision))
        }
        Input::Cas { expected, new } => {
            let condition = match expected {
                None => pb::put_condition::Condition::Absent(true),
                Some(v) => pb::put_condition::Condition::ValueEquals(v.clone().into_bytes()),
            };
            let response = kv
                .put(pb::PutRequest {
                    key: key.into(),
                    value: new.clone().expect("a put value").into_bytes(),
                    condition: Some(pb::PutCondition {
                        condition: Some(condition),
                    }),
                    write_id,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            let revision = response.succeeded.then_some(response.revision);
            Some((Output::Succeeded(response.succeeded), revision))
        }
        Input::Txn { expected, new } => {
            let compare = match expected {
                None => pb::Compare {
                    result: pb::compare::Result::Equal as i32,
                    key: key.into(),
                    target: Some(pb::compare::Target::Version(0)),
                },
                Some(v) => pb::Compare {
                    result: pb::compare::Result::Equal as i32,
                    key: key.into(),
                    target: Some(pb::compare::Target::Value(v.clone().into_bytes())),
                },
            };
            let success = match new {
                Some(v) => pb::request_op::Request::Put(pb::PutRequest {
                    key: key.into(),
                    value: v.clone().into_bytes(),
                    ..Default::default()
                }),
                None => pb::request_op::Request::Delete(pb::DeleteRequest {
                    key: key.into(),
                    ..Default::default()
                }),
            };
            let failure = pb::request_op::Request::Get(pb::GetRequest {
                key: key.into(),
                ..Default::default()
            });
            let response = kv
                .txn(pb::TxnRequest {
                    compare: vec![compare],
                    success: vec![pb::RequestOp {
                        request: Some(success),
                    }],
                    failure: vec![pb::RequestOp {
                        request: Some(failure),
                    }],
                    write_id,
                })
                .await
                .ok()?
                .into_inner();
            if response.succeeded {
                return Some((Output::Succeeded(true), Some(response.revision)));
            }
            let read = response
                .responses
                .into_iter()
                .next()
                .and_then(|r| match r.response {
                    Some(pb::response_op::Response::Get(get)) => Some(get),
                    _ => None,
                });
            // An answer without the failure branch's read is a protocol error, not an outcome.
            let read = read.expect("a failed transaction answers its failure branch's get");
            let revision = read.kv.as_ref().map(|kv| kv.mod_revision);
            Some((Output::TxnFailed(value_of(read.kv)), revision))
        }
    }
}

/// Reads every key through every gateway (linearizable gets, retried until one answers) and
/// returns the reads as operations, to be checked with the rest of the history.
pub async fn read_every_key(
    gateways: &[KvClient<Channel>],
    keys: &[String],
    clock: Clock,
    client: u64,
) -> Vec<Operation> {
    let mut reads = Vec::new();
    for (index, gateway) in gateways.iter().enumerate() {
        for key in keys {
            let mut kv = gateway.clone();
            let mut answered = false;
            for _ in 0..FINAL_READ_ATTEMPTS_MAX {
                let call = clock.now();
                if let Some((output, revision)) = call_once(&mut kv, key, &Input::Get, None).await {
                    reads.push(Operation {
                        client: client + index as u64,
                        key: key.clone(),
                        input: Input::Get,
                        call,
                        returned: Some((clock.now(), output)),
                        revision,
                    });
                    answered = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(
                answered,
                "gateway {index} did not answer a read of {key} after the heal"
            );
        }
    }
    reads
}

/// Checks `history`: linearizable per key, and revisions rising in real time across all keys
/// (`check_revision_order`). On a violation writes the offending operations and the whole
/// history under `dir`, and panics naming the file.
pub fn assert_linearizable(history: &[Operation], dir: &Path, scenario: &str) -> usize {
    if let Err(violation) = check_revision_order(history) {
        let pair = [(*violation.earlier).clone(), (*violation.later).clone()];
        let path = write_history(dir, &format!("{scenario}-revision-order"), &pair);
        let whole = write_history(dir, &format!("{scenario}-history"), history);
        panic!(
            "{scenario}: revisions out of real-time order ({}); the pair is in {} (whole history: {})",
            violation.reason,
            path.display(),
            whole.display()
        );
    }
    match check_history(history) {
        Verdict::Linearizable { operations, .. } => operations,
        Verdict::Violation {
            key,
            mut operations,
        } => {
            operations.sort_by_key(|operation| operation.call);
            let path = write_history(dir, &format!("{scenario}-violation"), &operations);
            let whole = write_history(dir, &format!("{scenario}-history"), history);
            panic!(
                "{scenario}: the history of {key:?} is not linearizable; its {} operations are in {} (whole history: {})",
                operations.len(),
                path.display(),
                whole.display()
            );
        }
    }
}

fn write_history(dir: &Path, name: &str, operations: &[Operation]) -> PathBuf {
    let folder = dir.join("linearizability-failures");
    std::fs::create_dir_all(&folder).expect("failure folder");
    let path = folder.join(format!("{name}.txt"));
    let text: Vec<String> = operations.iter().map(ToString::to_string).collect();
    std::fs::write(&path, text.join("\n") + "\n").expect("failure file");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "linearizability-failures")]
    fn a_violation_panics_and_names_the_written_file() {
        let dir = tempfile::tempdir().unwrap();
        let history = [
            Operation {
                client: 1,
                key: "k".into(),
                input: Input::Put("a".into()),
                call: 0,
                returned: Some((10, Output::Done)),
                revision: None,
            },
            Operation {
                client: 2,
                key: "k".into(),
                input: Input::Get,
                call: 20,
                returned: Some((30, Output::Value(None))),
                revision: None,
            },
        ];
        assert_linearizable(&history, dir.path(), "lost-write");
    }

    #[test]
    fn a_violation_is_written_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let history = [Operation {
            client: 2,
            key: "k".into(),
            input: Input::Get,
            call: 20,
            returned: Some((30, Output::Value(Some("never written".into())))),
            revision: None,
        }];
        let outcome = std::panic::catch_unwind(|| assert_linearizable(&history, dir.path(), "s"));
        assert!(outcome.is_err());
        let written = std::fs::read_to_string(
            dir.path()
                .join("linearizability-failures")
                .join("s-violation.txt"),
        )
        .unwrap();
        assert!(written.contains("never written"), "{written}");
    }
}
