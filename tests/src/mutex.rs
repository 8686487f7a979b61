//! etcd's mutex recipe (`concurrency.Mutex`) as a workload: each attempt puts its own key
//! under a prefix *and reads the whole prefix in the same transaction*; the key with the
//! lowest `create_revision` holds the lock. With hash partitioning the prefix spans every
//! shard, so this is a cross-shard transaction with a range, exactly the case plain snapshot
//! isolation gets wrong (two clients each put their key and each read a prefix without the
//! other's: both hold the lock).
//!
//! It is etcd's recipe without leases or watch: a client that does not hold the lock deletes
//! its key and tries again later (a try-lock). The check: critical sections, timed on one
//! clock between the transaction's answer and the release's request, never overlap.

use crate::workload::Clock;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::kv_client::KvClient;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;

/// Every lock key starts with this.
pub const PREFIX: &str = "mutex/";
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries of a release (a delete with one write id) before the client gives up on it.
const RELEASE_TRIES_MAX: u32 = 20;

/// One client's time holding the lock, in the clock's microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub client: u64,
    pub enter: u64,
    pub exit: u64,
}

#[derive(Debug, Default)]
pub struct MutexReport {
    pub sections: Vec<Section>,
    /// Attempts that found another holder.
    pub contended: u64,
    /// Attempts whose transaction failed (conflict, timeout).
    pub failed: u64,
}

impl MutexReport {
    /// The first two sections that overlap, if any.
    pub fn overlap(&self) -> Option<(Section, Section)> {
        let mut sections = self.sections.clone();
        sections.sort_by_key(|s| s.enter);
        let mut latest: Option<Section> = None;
        for section in sections {
            if let Some(previous) = latest {
                if section.enter < previous.exit {
                    return Some((previous, section));
                }
            }
            if latest.is_none_or(|previous| section.exit > previous.exit) {
                latest = Some(section);
            }
        }
        None
    }
}

pub struct RunningMutex {
    stopped: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<MutexReport>>,
}

impl RunningMutex {
    pub async fn finish(self) -> MutexReport {
        self.stopped.store(true, Ordering::SeqCst);
        let mut report = MutexReport::default();
        for client in self.clients {
            let one = client.await.expect("mutex client");
            report.sections.extend(one.sections);
            report.contended += one.contended;
            report.failed += one.failed;
        }
        report
    }
}

/// Starts `clients` clients competing for one lock through `gateways`.
pub fn start(gateways: &[KvClient<Channel>], clients: u64, clock: Clock) -> RunningMutex {
    let stopped = Arc::new(AtomicBool::new(false));
    let clients = (0..clients)
        .map(|client| {
            let gateway = gateways[client as usize % gateways.len()].clone();
            let stopped = stopped.clone();
            tokio::spawn(async move {
                let client_id = (client + 1) << 32 | (std::process::id() as u64 & 0xffff);
                let mut sequence = 0;
                let mut report = MutexReport::default();
                for attempt in 0u64.. {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("{PREFIX}c{client}-{attempt}");
                    sequence += 1;
                    let owner = match try_acquire(&gateway, &key, (client_id, sequence)).await {
                        Some(owner) => owner,
                        None => {
                            report.failed += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            // The put may have been applied: release it all the same.
                            sequence += 1;
                            release(&gateway, &key, (client_id, sequence)).await;
                            continue;
                        }
                    };
                    if owner.as_deref() == Some(key.as_bytes()) {
                        let enter = clock.now();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let exit = clock.now();
                        report.sections.push(Section {
                            client,
                            enter,
                            exit,
                        });
                    } else {
                        report.contended += 1;
                    }
                    sequence += 1;
                    release(&gateway, &key, (client_id, sequence)).await;
                    if owner.as_deref() != Some(key.as_bytes()) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                report
            })
        })
        .collect();
    RunningMutex { stopped, clients }
}

/// etcd's `tryAcquire`: if the key does not exist, put it; either way read the prefix.
/// Returns the key with the lowest create revision (the holder), `None` on failure.
async fn try_acquire(
    gateway: &KvClient<Channel>,
    key: &str,
    (client_id, sequence): (u64, u64),
) -> Option<Option<Vec<u8>>> {
    let range = pb::RequestOp {
        request: Some(pb::request_op::Request::Range(pb::RangeRequest {
            prefix: PREFIX.into(),
            ..Default::default()
        })),
    };
    let request = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::Result::Equal as i32,
            key: key.as_bytes().to_vec(),
            target: Some(pb::compare::Target::CreateRevision(0)),
        }],
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::Put(pb::PutRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                })),
            },
            range.clone(),
        ],
        failure: vec![range],
        write_id: Some(pb::WriteId {
            client_id,
            sequence,
            first_incomplete_sequence: sequence,
        }),
    };
    let mut kv = gateway.clone();
    let response = tokio::time::timeout(CALL_TIMEOUT, kv.txn(request))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let kvs = response
        .responses
        .into_iter()
        .find_map(|op| match op.response {
            Some(pb::response_op::Response::Range(range)) => Some(range.kvs),
            _ => None,
        })?;
    Some(
        kvs.into_iter()
            .min_by_key(|kv| (kv.create_revision, kv.key.clone()))
            .map(|kv| kv.key),
    )
}

/// Deletes the key, retried with one write id until acknowledged (or the tries run out).
async fn release(gateway: &KvClient<Channel>, key: &str, (client_id, sequence): (u64, u64)) {
    let request = pb::DeleteRequest {
        key: key.as_bytes().to_vec(),
        write_id: Some(pb::WriteId {
            client_id,
            sequence,
            first_incomplete_sequence: sequence,
        }),
        ..Default::default()
    };
    for _ in 0..RELEASE_TRIES_MAX {
        let mut kv = gateway.clone();
        if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, kv.delete(request.clone())).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(key, "mutex client gave up releasing its key");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_sections_are_found() {
        let s = |client, enter, exit| Section {
            client,
            enter,
            exit,
        };
        let apart = MutexReport {
            sections: vec![s(1, 0, 10), s(2, 10, 20), s(1, 25, 30)],
            ..Default::default()
        };
        assert_eq!(apart.overlap(), None);
        // The second section starts inside a long first one, after a short one ended.
        let nested = MutexReport {
            sections: vec![s(1, 0, 100), s(2, 10, 20), s(3, 50, 60)],
            ..Default::default()
        };
        assert_eq!(nested.overlap(), Some((s(1, 0, 100), s(2, 10, 20))));
    }
}
