//! The list-append workload (Elle, Kingsbury & Alvaro 2020) for multi-key transactions: each
//! key holds a list of unique integers stored as a comma-separated value; concurrent clients
//! run transactions that read some keys and append to others, spread over every shard, through
//! the gateways' public KV API. Each transaction is:
//!
//! 1. a read phase: a linearizable `Get` of every key it appends to;
//! 2. one `Txn` whose compares check that each of those keys still has the `mod_revision` the
//!    read phase saw, whose success ops put the extended lists and get the keys it only reads.
//!
//! So a committed transaction read what it appended to at its commit, and read the other keys
//! inside it. A failed compare, a `Conflict` or any refusal that certainly applied nothing is
//! an aborted transaction; a timeout or a cut-off call is of unknown outcome. The recorded
//! history goes to `cairn_linearizability::check_list_append`; an anomaly is written to a file
//! whose path the panic names.

use crate::workload::Clock;
use cairn_linearizability::{check_list_append, MicroOp, Outcome, Report, Transaction};
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_proto::retry::{classify, Retry};
use cairn_proto::status::detail_of;
use cairn_types::sharding::shard_for_key;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Longest wait for one call; past it the call's outcome is unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed transaction before the client's next one, so that a gateway that is
/// down does not turn into a flood of failures.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(150);
/// Most attempts of each final read.
const FINAL_READ_ATTEMPTS_MAX: u32 = 50;
/// Names tried when spreading keys over shards.
const KEY_CANDIDATES_MAX: usize = 100_000;

/// What the clients do.
#[derive(Clone, Debug)]
pub struct ListAppend {
    pub keys: Vec<String>,
    pub clients: u64,
    /// Keys one transaction touches: 1 to this many, each read or appended to.
    pub keys_per_txn_max: usize,
    pub seed: u64,
}

/// `count` keys named `{prefix}{n}`, as evenly spread over `shard_count` shards as `count`
/// allows (round robin over the shards).
pub fn keys_over_shards(prefix: &str, count: usize, shard_count: u32) -> Vec<String> {
    assert!(shard_count > 0);
    let per_shard = count.div_ceil(shard_count as usize);
    let mut held: BTreeMap<u64, usize> = BTreeMap::new();
    let mut keys = Vec::new();
    for n in 0..KEY_CANDIDATES_MAX {
        if keys.len() == count {
            return keys;
        }
        let key = format!("{prefix}{n}");
        let shard = shard_for_key(key.as_bytes(), shard_count).0;
        let taken = held.entry(shard).or_default();
        if *taken < per_shard {
            *taken += 1;
            keys.push(key);
        }
    }
    panic!("no {count} keys over {shard_count} shards in {KEY_CANDIDATES_MAX} names");
}

/// The shards a transaction touched.
pub fn shards_of(transaction: &Transaction, shard_count: u32) -> BTreeSet<u64> {
    transaction
        .ops
        .iter()
        .map(|op| shard_for_key(op.key().as_bytes(), shard_count).0)
        .collect()
}

/// The clients of a running workload; `finish` stops them.
pub struct RunningListAppend {
    stopped: Arc<AtomicBool>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    clients: Vec<tokio::task::JoinHandle<Vec<Transaction>>>,
}

/// What the clients recorded.
pub struct Finished {
    pub history: Vec<Transaction>,
    /// Failed calls by gRPC code and error detail, e.g. `FailedPrecondition CrossShardTxn`.
    pub errors: BTreeMap<String, u64>,
}

impl RunningListAppend {
    /// Stops the clients after their current transaction and returns what they recorded.
    pub async fn finish(self) -> Finished {
        self.stopped.store(true, Ordering::SeqCst);
        let mut history = Vec::new();
        for client in self.clients {
            history.extend(client.await.expect("list-append client"));
        }
        let errors = self.errors.lock().expect("error counts").clone();
        Finished { history, errors }
    }
}

impl ListAppend {
    /// Starts the clients; client `i` calls gateway `i % gateways.len()` and moves to the
    /// next gateway after an error.
    pub fn start(&self, gateways: &[KvClient<Channel>], clock: Clock) -> RunningListAppend {
        assert!(!gateways.is_empty() && !self.keys.is_empty() && self.keys_per_txn_max > 0);
        let stopped = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let next_element = Arc::new(AtomicU64::new(1));
        let clients = (0..self.clients)
            .map(|client| {
                let context = ClientContext {
                    client,
                    gateways: gateways.to_vec(),
                    keys: self.keys.clone(),
                    keys_per_txn_max: self.keys_per_txn_max.min(self.keys.len()),
                    seed: self.seed.wrapping_mul(1000).wrapping_add(client),
                    clock,
                    stopped: stopped.clone(),
                    errors: errors.clone(),
                    next_element: next_element.clone(),
                };
                tokio::spawn(context.run())
            })
            .collect();
        RunningListAppend {
            stopped,
            errors,
            clients,
        }
    }
}

struct ClientContext {
    client: u64,
    gateways: Vec<KvClient<Channel>>,
    keys: Vec<String>,
    keys_per_txn_max: usize,
    seed: u64,
    clock: Clock,
    stopped: Arc<AtomicBool>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    next_element: Arc<AtomicU64>,
}

/// What one transaction will do: append `element` to some keys, read the others.
struct Plan {
    appends: Vec<(String, u64)>,
    reads: Vec<String>,
}

/// How a transaction's `Txn` call ended.
enum Ending {
    Committed(Vec<Vec<u64>>),
    Aborted,
    Unknown,
}

impl ClientContext {
    async fn run(self) -> Vec<Transaction> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut gateway = self.client as usize % self.gateways.len();
        let mut history = Vec::new();
        while !self.stopped.load(Ordering::SeqCst) {
            let plan = self.plan(&mut rng);
            let mut kv = self.gateways[gateway].clone();
            let (recorded, failed) = self.run_transaction(&mut kv, &plan).await;
            history.extend(recorded);
            if failed {
                gateway = (gateway + 1) % self.gateways.len();
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
        }
        history
    }

    fn plan(&self, rng: &mut impl Rng) -> Plan {
        let count = rng.random_range(1..=self.keys_per_txn_max);
        let mut plan = Plan {
            appends: Vec::new(),
            reads: Vec::new(),
        };
        for index in rand::seq::index::sample(rng, self.keys.len(), count) {
            let key = self.keys[index].clone();
            if rng.random_bool(0.5) {
                let element = self.next_element.fetch_add(1, Ordering::SeqCst);
                plan.appends.push((key, element));
            } else {
                plan.reads.push(key);
            }
        }
        plan
    }

    /// Runs one transaction; returns it (none if the read phase failed: nothing was written)
    /// and whether a call failed.
    async fn run_transaction(
        &self,
        kv: &mut KvClient<Channel>,
        plan: &Plan,
    ) -> (Option<Transaction>, bool) {
        let call = self.clock.now();
        let mut before = Vec::new();
        for (key, _) in &plan.appends {
            match read_list(kv, key).await {
                Ok(read) => before.push(read),
                Err(status) => {
                    self.count_error(&status);
                    return (None, true);
                }
            }
        }
        let compare = plan
            .appends
            .iter()
            .zip(&before)
            .map(|((key, _), (_, mod_revision))| pb::Compare {
                result: pb::compare::Result::Equal as i32,
                key: key.clone().into_bytes(),
                target: Some(pb::compare::Target::ModRevision(*mod_revision)),
            })
            .collect();
        let puts = plan
            .appends
            .iter()
            .zip(&before)
            .map(|((key, element), (list, _))| {
                let mut list = list.clone();
                list.push(*element);
                pb::request_op::Request::Put(pb::PutRequest {
                    key: key.clone().into_bytes(),
                    value: encode(&list).into_bytes(),
                    ..Default::default()
                })
            });
        let gets = plan.reads.iter().map(|key| {
            pb::request_op::Request::Get(pb::GetRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
        });
        let request = pb::TxnRequest {
            compare,
            success: puts
                .chain(gets)
                .map(|request| pb::RequestOp {
                    request: Some(request),
                })
                .collect(),
            failure: Vec::new(),
            write_id: None,
        };
        let (ending, failed) = match tokio::time::timeout(CALL_TIMEOUT, kv.txn(request)).await {
            Err(_) => (Ending::Unknown, true),
            Ok(Err(status)) => {
                self.count_error(&status);
                (ending_of_error(&status), status_is_error(&status))
            }
            Ok(Ok(response)) => (ending_of(response.into_inner(), plan.reads.len()), false),
        };
        let outcome = match &ending {
            Ending::Committed(_) => Outcome::Committed {
                returned: self.clock.now(),
            },
            Ending::Aborted => Outcome::Aborted,
            Ending::Unknown => Outcome::Unknown,
        };
        let mut ops = Vec::new();
        for ((key, element), (list, _)) in plan.appends.iter().zip(before) {
            ops.push(MicroOp::Read {
                key: key.clone(),
                observed: Some(list),
            });
            ops.push(MicroOp::Append {
                key: key.clone(),
                element: *element,
            });
        }
        let mut read = match ending {
            Ending::Committed(lists) => lists.into_iter().map(Some).collect(),
            Ending::Aborted | Ending::Unknown => vec![None; plan.reads.len()],
        };
        for (key, observed) in plan.reads.iter().zip(read.drain(..)) {
            ops.push(MicroOp::Read {
                key: key.clone(),
                observed,
            });
        }
        let transaction = Transaction {
            client: self.client,
            ops,
            call,
            outcome,
        };
        (Some(transaction), failed)
    }

    fn count_error(&self, status: &tonic::Status) {
        let detail = detail_of(status)
            .map(|kind| {
                let text = format!("{kind:?}");
                text.split('(').next().unwrap_or_default().to_string()
            })
            .unwrap_or_default();
        let name = format!("{:?} {detail}", status.code());
        *self
            .errors
            .lock()
            .expect("error counts")
            .entry(name.trim().to_string())
            .or_default() += 1;
    }
}

/// A committed `Txn`'s answer: the lists its gets read, in order; a failed compare is an
/// abort (it applied nothing).
fn ending_of(response: pb::TxnResponse, reads: usize) -> Ending {
    if !response.succeeded {
        return Ending::Aborted;
    }
    let lists: Vec<Vec<u64>> = response
        .responses
        .into_iter()
        .filter_map(|op| match op.response {
            Some(pb::response_op::Response::Get(get)) => Some(decode_value(get.kv)),
            _ => None,
        })
        .collect();
    // An answer without its gets is a protocol error, not an outcome.
    assert_eq!(lists.len(), reads, "a committed Txn answers every get");
    Ending::Committed(lists)
}

/// A conflict or a refusal applied nothing: aborted. A cut-off call, or an answer that does
/// not say whether it acted (including a bare ABORTED code without the `Conflict` detail,
/// which `classify` reads as of unknown outcome), is unknown — the safe reading for the
/// checker, which never assumes an unknown transaction committed or aborted.
fn ending_of_error(status: &tonic::Status) -> Ending {
    if matches!(detail_of(status), Some(pb::error_detail::Kind::Conflict(_))) {
        return Ending::Aborted;
    }
    match classify(status).retry {
        Retry::Always | Retry::Never => Ending::Aborted,
        Retry::IfIdempotent => Ending::Unknown,
    }
}

/// Whether the client should back off: anything but a lost race.
fn status_is_error(status: &tonic::Status) -> bool {
    !matches!(detail_of(status), Some(pb::error_detail::Kind::Conflict(_)))
}

/// A linearizable read of a key's list and its `mod_revision` (0 when absent).
async fn read_list(
    kv: &mut KvClient<Channel>,
    key: &str,
) -> Result<(Vec<u64>, u64), tonic::Status> {
    let request = pb::GetRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let response = tokio::time::timeout(CALL_TIMEOUT, kv.get(request))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("list-append read timed out"))??
        .into_inner();
    let mod_revision = response.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    Ok((decode_value(response.kv), mod_revision))
}

fn encode(list: &[u64]) -> String {
    list.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The list a value holds (absent: empty). A value that is not a list of integers is read
/// as the element `u64::MAX`, which nobody appends: the checker reports it as garbage.
fn decode_value(kv: Option<pb::KeyValue>) -> Vec<u64> {
    let Some(kv) = kv else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&kv.value);
    if text.is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|element| element.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Reads every key through every gateway (a linearizable get each, retried until one
/// answers), each read recorded as a committed one-read transaction.
pub async fn read_every_list(
    gateways: &[KvClient<Channel>],
    keys: &[String],
    clock: Clock,
    client: u64,
) -> Vec<Transaction> {
    let mut reads = Vec::new();
    for (index, gateway) in gateways.iter().enumerate() {
        for key in keys {
            let mut kv = gateway.clone();
            let mut answered = false;
            for _ in 0..FINAL_READ_ATTEMPTS_MAX {
                let call = clock.now();
                if let Ok((list, _)) = read_list(&mut kv, key).await {
                    reads.push(Transaction {
                        client: client + index as u64,
                        ops: vec![MicroOp::Read {
                            key: key.clone(),
                            observed: Some(list),
                        }],
                        call,
                        outcome: Outcome::Committed {
                            returned: clock.now(),
                        },
                    });
                    answered = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(answered, "gateway {index} did not answer a read of {key}");
        }
    }
    reads
}

/// Checks `history`; on an anomaly writes the report and the whole history under `dir` and
/// panics naming the files.
pub fn assert_no_anomaly(history: &[Transaction], dir: &Path, name: &str) -> Report {
    let report = check_list_append(history);
    if !report.is_valid() {
        let folder = dir.join("list-append-failures");
        std::fs::create_dir_all(&folder).expect("failure folder");
        let report_path = folder.join(format!("{name}-report.txt"));
        std::fs::write(&report_path, report.to_string()).expect("report file");
        let history_path = write_history(&folder, name, history);
        panic!(
            "{name}: the list-append history has anomalies ({:?}); the report is in {} (whole history: {})\n{report}",
            report.counts,
            report_path.display(),
            history_path.display()
        );
    }
    report
}

fn write_history(folder: &Path, name: &str, history: &[Transaction]) -> PathBuf {
    let path = folder.join(format!("{name}-history.txt"));
    let text: Vec<String> = history
        .iter()
        .enumerate()
        .map(|(id, transaction)| format!("T{id}: {transaction}"))
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").expect("history file");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_through_values() {
        let value = |text: &str| {
            Some(pb::KeyValue {
                value: text.as_bytes().to_vec(),
                ..Default::default()
            })
        };
        assert_eq!(encode(&[1, 22, 3]), "1,22,3");
        assert_eq!(decode_value(value("1,22,3")), [1, 22, 3]);
        assert_eq!(decode_value(value("")), Vec::<u64>::new());
        assert_eq!(decode_value(None), Vec::<u64>::new());
        assert_eq!(decode_value(value("1,x")), [1, u64::MAX]);
    }

    #[test]
    fn errors_are_aborts_only_when_nothing_was_applied() {
        use cairn_proto::status::with_detail;
        use pb::error_detail::Kind;
        use tonic::{Code, Status};
        let aborted = |status: Status| matches!(ending_of_error(&status), Ending::Aborted);
        let conflict = Kind::Conflict(pb::Conflict::default());
        assert!(aborted(with_detail(Code::Aborted, "lost a race", conflict)));
        let cross = Kind::CrossShardTxn(pb::CrossShardTxn {
            shard_ids: vec![0, 1],
        });
        assert!(aborted(with_detail(
            Code::InvalidArgument,
            "two shards",
            cross
        )));
        assert!(!aborted(Status::unavailable("gave up")));
        assert!(!aborted(Status::deadline_exceeded("slow")));
        assert!(!aborted(Status::aborted("no detail: unknown")));
    }

    #[test]
    fn keys_spread_over_every_shard() {
        let keys = keys_over_shards("la/", 8, 4);
        assert_eq!(keys.len(), 8);
        let mut per_shard = BTreeMap::new();
        for key in &keys {
            *per_shard
                .entry(shard_for_key(key.as_bytes(), 4).0)
                .or_insert(0) += 1;
        }
        assert_eq!(
            per_shard.values().copied().collect::<Vec<_>>(),
            [2, 2, 2, 2]
        );
    }

    #[test]
    fn an_anomaly_panics_and_names_the_written_report() {
        let dir = tempfile::tempdir().unwrap();
        let history = [Transaction {
            client: 1,
            ops: vec![MicroOp::Read {
                key: "k".into(),
                observed: Some(vec![7]),
            }],
            call: 0,
            outcome: Outcome::Committed { returned: 1 },
        }];
        let outcome = std::panic::catch_unwind(|| assert_no_anomaly(&history, dir.path(), "s"));
        assert!(outcome.is_err());
        let written =
            std::fs::read_to_string(dir.path().join("list-append-failures").join("s-report.txt"))
                .unwrap();
        assert!(written.contains("garbage-read"), "{written}");
    }
}
