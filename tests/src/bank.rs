//! The bank workload (Jepsen's bank test) for cross-shard transactions: accounts spread over
//! every shard, clients moving money between two accounts with one compare-and-put
//! transaction each, and readers summing every account at one snapshot.
//!
//! What it checks: the total never changes and no read ever sees half a transfer (a snapshot
//! that sums to anything else is a violation), and no balance goes negative. A transfer whose
//! outcome is unknown is retried with its write id and may stay unknown: the invariant holds
//! whether or not it was applied, so unknowns widen nothing. What it does not check: that
//! reads are recent (the register workload's linearizability check does that, per key) or
//! that every transfer was applied at most once beyond what the total shows (a transfer
//! applied twice keeps the total too; the register workload covers write ids).
//!
//! Transfers read both balances, then commit `put a, put b` only if both `mod_revision`s are
//! unchanged (etcd's STM pattern). Readers alternate between a linearizable range over the
//! accounts' prefix (one snapshot revision across shards, D60) and a read-only transaction
//! that gets every account.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_types::sharding::shard_for_key;
use cairn_types::ShardId;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// Every account's key starts with this.
pub const PREFIX: &str = "bank/";
/// Pause after a failed call, so a gateway that is down does not spin a client.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(100);
/// Tries of a transfer whose outcome stays unknown, all with the same write id.
const TRANSFER_TRIES_MAX: u32 = 3;
/// How long one call may take before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The accounts and clients of one run.
#[derive(Clone, Debug)]
pub struct Bank {
    pub accounts: Vec<String>,
    /// Every account's balance at the start.
    pub initial: u64,
    pub transfer_clients: u64,
    pub reader_clients: u64,
    pub seed: u64,
}

/// What the clients did and saw.
#[derive(Debug, Default)]
pub struct BankReport {
    pub transfers_committed: u64,
    /// Transfers whose compare failed (a balance changed after it was read).
    pub transfers_refused: u64,
    /// Transfers the cluster aborted with `Conflict`.
    pub transfers_conflicted: u64,
    pub transfers_unknown: u64,
    pub reads_checked: u64,
    pub reads_failed: u64,
    /// Reads whose sum or account count was wrong, or that saw a negative balance.
    pub violations: Vec<String>,
}

#[derive(Default)]
struct Counters {
    transfers_committed: AtomicU64,
    transfers_refused: AtomicU64,
    transfers_conflicted: AtomicU64,
    transfers_unknown: AtomicU64,
    reads_checked: AtomicU64,
    reads_failed: AtomicU64,
    violations: Mutex<Vec<String>>,
}

/// The running clients; `finish` stops them.
pub struct RunningBank {
    stopped: Arc<AtomicBool>,
    counters: Arc<Counters>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningBank {
    pub async fn finish(self) -> BankReport {
        self.stopped.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.expect("bank client");
        }
        let c = &self.counters;
        BankReport {
            transfers_committed: c.transfers_committed.load(Ordering::SeqCst),
            transfers_refused: c.transfers_refused.load(Ordering::SeqCst),
            transfers_conflicted: c.transfers_conflicted.load(Ordering::SeqCst),
            transfers_unknown: c.transfers_unknown.load(Ordering::SeqCst),
            reads_checked: c.reads_checked.load(Ordering::SeqCst),
            reads_failed: c.reads_failed.load(Ordering::SeqCst),
            violations: std::mem::take(&mut *c.violations.lock().unwrap()),
        }
    }
}

impl Bank {
    /// `per_shard` accounts in each of `shards` shards (found by hashing candidate names the
    /// way gateways route), so every transfer between two random accounts likely crosses
    /// shards and every shard takes part.
    pub fn spread(shards: u32, per_shard: usize, seed: u64) -> Bank {
        let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
        for n in 0.. {
            if by_shard.len() == shards as usize
                && by_shard.values().all(|keys| keys.len() >= per_shard)
            {
                break;
            }
            let key = format!("{PREFIX}{n:04}");
            let keys = by_shard
                .entry(shard_for_key(key.as_bytes(), shards))
                .or_default();
            if keys.len() < per_shard {
                keys.push(key);
            }
        }
        Bank {
            accounts: by_shard.into_values().flatten().collect(),
            initial: 100,
            transfer_clients: 4,
            reader_clients: 2,
            seed,
        }
    }

    pub fn total(&self) -> u64 {
        self.initial * self.accounts.len() as u64
    }

    /// Writes every account's initial balance (one put each, retried until acknowledged).
    pub async fn open(&self, gateway: &KvClient<Channel>) {
        for account in &self.accounts {
            let kv = gateway;
            crate::wait_for(
                &format!("the initial balance of {account}"),
                Duration::from_secs(30),
                || {
                    let mut kv = kv.clone();
                    async move {
                        kv.put(pb::PutRequest {
                            key: account.clone().into_bytes(),
                            value: self.initial.to_string().into_bytes(),
                            ..Default::default()
                        })
                        .await
                        .ok()
                        .map(|_| ())
                    }
                },
            )
            .await;
        }
    }

    pub fn start(&self, gateways: &[KvClient<Channel>]) -> RunningBank {
        assert!(!gateways.is_empty() && self.accounts.len() >= 2);
        let stopped = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut clients = Vec::new();
        for client in 0..self.transfer_clients + self.reader_clients {
            let bank = self.clone();
            let gateways = gateways.to_vec();
            let stopped = stopped.clone();
            let counters = counters.clone();
            let transfers = client < self.transfer_clients;
            clients.push(tokio::spawn(async move {
                let mut rng =
                    rand::rngs::StdRng::seed_from_u64(bank.seed.wrapping_mul(7919) ^ client);
                let client_id = rng.random::<u64>() | 1;
                let mut sequence = 0;
                let mut gateway = client as usize % gateways.len();
                for n in 0u64.. {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let ok = if transfers {
                        sequence += 1;
                        bank.transfer(
                            &gateways,
                            &mut gateway,
                            &mut rng,
                            (client_id, sequence),
                            &counters,
                        )
                        .await
                    } else {
                        bank.check_snapshot(&gateways[gateway], n % 2 == 0, &counters)
                            .await
                    };
                    if !ok {
                        gateway = (gateway + 1) % gateways.len();
                        tokio::time::sleep(PAUSE_AFTER_ERROR).await;
                    }
                }
            }));
        }
        RunningBank {
            stopped,
            counters,
            clients,
        }
    }

    /// One transfer; false when a call failed (the caller moves to another gateway).
    async fn transfer(
        &self,
        gateways: &[KvClient<Channel>],
        gateway: &mut usize,
        rng: &mut impl Rng,
        (client_id, sequence): (u64, u64),
        counters: &Counters,
    ) -> bool {
        let from = rng.random_range(0..self.accounts.len());
        let mut to = rng.random_range(0..self.accounts.len() - 1);
        if to >= from {
            to += 1;
        }
        let (from, to) = (&self.accounts[from], &self.accounts[to]);
        let mut kv = gateways[*gateway].clone();
        let (Some((from_balance, from_rev)), Some((to_balance, to_rev))) = (
            read_balance(&mut kv, from).await,
            read_balance(&mut kv, to).await,
        ) else {
            return false;
        };
        let amount = rng.random_range(0..=from_balance.min(10));
        let request = pb::TxnRequest {
            compare: vec![mod_equals(from, from_rev), mod_equals(to, to_rev)],
            success: vec![
                put_op(from, from_balance - amount),
                put_op(to, to_balance + amount),
            ],
            failure: vec![],
            write_id: Some(pb::WriteId {
                client_id,
                sequence,
                first_incomplete_sequence: sequence,
            }),
        };
        for attempt in 0..TRANSFER_TRIES_MAX {
            if attempt > 0 {
                *gateway = (*gateway + 1) % gateways.len();
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
            let mut kv = gateways[*gateway].clone();
            match tokio::time::timeout(CALL_TIMEOUT, kv.txn(request.clone())).await {
                Ok(Ok(response)) => {
                    let counter = if response.into_inner().succeeded {
                        &counters.transfers_committed
                    } else {
                        &counters.transfers_refused
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                Ok(Err(status)) if status.code() == tonic::Code::Aborted => {
                    counters.transfers_conflicted.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                // Refused before acting (bad request, limits): a bug in this workload or
                // the cluster; counted as unknown so the run still ends with a report.
                Ok(Err(_)) | Err(_) => {}
            }
        }
        counters.transfers_unknown.fetch_add(1, Ordering::SeqCst);
        false
    }

    /// Reads every account at one snapshot and checks the total; false when the read failed.
    async fn check_snapshot(
        &self,
        gateway: &KvClient<Channel>,
        by_range: bool,
        counters: &Counters,
    ) -> bool {
        let mut kv = gateway.clone();
        let read = if by_range {
            self.read_by_range(&mut kv).await
        } else {
            self.read_by_txn(&mut kv).await
        };
        let Some((revision, balances)) = read else {
            counters.reads_failed.fetch_add(1, Ordering::SeqCst);
            return false;
        };
        counters.reads_checked.fetch_add(1, Ordering::SeqCst);
        if let Some(violation) = self.violation(&balances) {
            let how = if by_range { "range" } else { "transaction" };
            counters
                .violations
                .lock()
                .unwrap()
                .push(format!("{how} at revision {revision}: {violation}"));
        }
        true
    }

    /// What is wrong with one snapshot of the balances, if anything.
    pub fn violation(&self, balances: &BTreeMap<String, i64>) -> Option<String> {
        if balances.len() != self.accounts.len() {
            return Some(format!(
                "{} accounts instead of {}",
                balances.len(),
                self.accounts.len()
            ));
        }
        if let Some((account, balance)) = balances.iter().find(|(_, balance)| **balance < 0) {
            return Some(format!("{account} has a negative balance {balance}"));
        }
        let sum: i64 = balances.values().sum();
        (sum != self.total() as i64).then(|| {
            format!(
                "the balances sum to {sum}, not {}: {balances:?}",
                self.total()
            )
        })
    }

    async fn read_by_range(
        &self,
        kv: &mut KvClient<Channel>,
    ) -> Option<(u64, BTreeMap<String, i64>)> {
        let response = tokio::time::timeout(
            CALL_TIMEOUT,
            kv.range(pb::RangeRequest {
                prefix: PREFIX.into(),
                ..Default::default()
            }),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        if response.more {
            return None;
        }
        let balances = response.kvs.iter().map(balance_of).collect::<Option<_>>()?;
        Some((response.revision, balances))
    }

    async fn read_by_txn(
        &self,
        kv: &mut KvClient<Channel>,
    ) -> Option<(u64, BTreeMap<String, i64>)> {
        let request = pb::TxnRequest {
            success: self
                .accounts
                .iter()
                .map(|account| pb::RequestOp {
                    request: Some(pb::request_op::Request::Get(pb::GetRequest {
                        key: account.clone().into_bytes(),
                        ..Default::default()
                    })),
                })
                .collect(),
            ..Default::default()
        };
        let response = tokio::time::timeout(CALL_TIMEOUT, kv.txn(request))
            .await
            .ok()?
            .ok()?
            .into_inner();
        let mut balances = BTreeMap::new();
        for op in response.responses {
            if let Some(pb::response_op::Response::Get(get)) = op.response {
                if let Some(found) = get.kv {
                    let (account, balance) = balance_of(&found)?;
                    balances.insert(account, balance);
                }
            }
        }
        Some((response.revision, balances))
    }

    /// The final balances, read once the clients stopped (linearizable range, retried).
    pub async fn final_violation(&self, gateway: &KvClient<Channel>) -> Option<String> {
        let (_, balances) = crate::wait_for(
            "a final read of every account",
            Duration::from_secs(60),
            || {
                let mut kv = gateway.clone();
                async move { self.read_by_range(&mut kv).await }
            },
        )
        .await;
        self.violation(&balances)
    }
}

async fn read_balance(kv: &mut KvClient<Channel>, account: &str) -> Option<(u64, u64)> {
    let found = tokio::time::timeout(
        CALL_TIMEOUT,
        kv.get(pb::GetRequest {
            key: account.as_bytes().to_vec(),
            ..Default::default()
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner()
    .kv?;
    let balance = std::str::from_utf8(&found.value).ok()?.parse().ok()?;
    Some((balance, found.mod_revision))
}

fn balance_of(kv: &pb::KeyValue) -> Option<(String, i64)> {
    let account = String::from_utf8(kv.key.clone()).ok()?;
    let balance = std::str::from_utf8(&kv.value).ok()?.parse().ok()?;
    Some((account, balance))
}

fn mod_equals(key: &str, revision: u64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::Result::Equal as i32,
        key: key.as_bytes().to_vec(),
        target: Some(pb::compare::Target::ModRevision(revision)),
    }
}

fn put_op(key: &str, balance: u64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::Put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: balance.to_string().into_bytes(),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_cover_every_shard_and_a_wrong_snapshot_is_a_violation() {
        let bank = Bank::spread(3, 2, 1);
        assert_eq!(bank.accounts.len(), 6);
        let shards: std::collections::BTreeSet<ShardId> = bank
            .accounts
            .iter()
            .map(|a| shard_for_key(a.as_bytes(), 3))
            .collect();
        assert_eq!(shards.len(), 3);
        let mut balances: BTreeMap<String, i64> = bank
            .accounts
            .iter()
            .map(|a| (a.clone(), bank.initial as i64))
            .collect();
        assert_eq!(bank.violation(&balances), None);
        // Half a transfer: money left one account and arrived nowhere.
        *balances.get_mut(&bank.accounts[0]).unwrap() -= 5;
        assert!(bank.violation(&balances).unwrap().contains("sum to 595"));
        *balances.get_mut(&bank.accounts[1]).unwrap() += 5;
        assert_eq!(bank.violation(&balances), None);
        balances.remove(&bank.accounts[2]);
        assert!(bank.violation(&balances).unwrap().contains("5 accounts"));
    }
}
