//! A transaction evaluated over what its read phase found at `start_ts`: which branch its
//! compares choose, what each op of that branch answers, and the final write per key. Ops
//! see the earlier ops of their branch through an overlay of the branch's own writes (etcd's
//! semantics, and what a node's one-phase `Txn` does with `cairn_mvcc::Overlay`): a get
//! after a put of the same key returns the put, a range after a delete no longer lists the
//! key. Pure: reads come in a [`Snapshot`], nothing here does I/O.
//!
//! The revision of the transaction's own versions (their `mod_revision`, the `revision` of
//! every response) is the commit timestamp, known only after prewrite; the writes do not
//! depend on it. So the coordinator evaluates once to learn what to prewrite and again, with
//! the commit timestamp, to build the answer; both evaluations see the same snapshot.

use crate::error::{GatewayError, Result};
use crate::txn::bounds::KeyRange;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::request_op::Request;
use cairn_proto::kv::v1::response_op::Response;
use std::collections::{BTreeMap, BTreeSet};

/// What the read phase found, all at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The revision everything was read at (`start_ts`).
    pub revision: u64,
    /// Point keys as read; `None`: the key does not exist.
    pub keys: BTreeMap<Vec<u8>, Option<pb::KeyValue>>,
    /// The range ops of the chosen branch, by their index in the branch: the page read at
    /// `revision` over every shard (without the transaction's own writes).
    pub ranges: BTreeMap<usize, pb::RangeResponse>,
}

/// What a transaction does to a key when it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>),
    Delete,
}

/// The evaluated transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub succeeded: bool,
    /// The writes that change something, by key (each key is written at most once per
    /// branch). A delete of a key that does not exist changes nothing and is not here.
    pub writes: BTreeMap<Vec<u8>, Write>,
    /// Keys whose value the outcome depends on without being written: compared, point-read,
    /// or deleted while absent. They get read locks.
    pub reads: BTreeSet<Vec<u8>>,
    pub responses: Vec<pb::ResponseOp>,
}

impl Evaluation {
    /// The response the client gets, every revision at `revision`.
    pub fn response(&self, revision: u64) -> pb::TxnResponse {
        pb::TxnResponse {
            revision,
            succeeded: self.succeeded,
            responses: self.responses.clone(),
        }
    }
}

/// The compared keys, which the read phase reads first.
pub fn compare_keys(txn: &pb::TxnRequest) -> BTreeSet<Vec<u8>> {
    txn.compare.iter().map(|c| c.key.clone()).collect()
}

/// The branch the compares choose.
pub fn branch(txn: &pb::TxnRequest, succeeded: bool) -> &[pb::RequestOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// The point keys of a branch (puts, deletes, gets), which the read phase reads once the
/// branch is chosen; and its range ops by index.
pub fn branch_reads(
    branch: &[pb::RequestOp],
) -> (BTreeSet<Vec<u8>>, Vec<(usize, &pb::RangeRequest)>) {
    let mut keys = BTreeSet::new();
    let mut ranges = Vec::new();
    for (index, op) in branch.iter().enumerate() {
        match &op.request {
            Some(Request::Put(put)) => {
                keys.insert(put.key.clone());
            }
            Some(Request::Delete(delete)) => {
                keys.insert(delete.key.clone());
            }
            Some(Request::Get(get)) => {
                keys.insert(get.key.clone());
            }
            Some(Request::Range(range)) => ranges.push((index, range)),
            None => {}
        }
    }
    (keys, ranges)
}

fn read<'s>(snapshot: &'s Snapshot, key: &[u8]) -> Result<Option<&'s pb::KeyValue>> {
    snapshot
        .keys
        .get(key)
        .map(Option::as_ref)
        .ok_or_else(|| GatewayError::TxnNotRead {
            key: key.escape_ascii().to_string(),
        })
}

/// Whether every compare holds at the snapshot. A missing key compares as value empty and
/// version and revisions 0 (etcd's rule, as the node's `compare_holds`).
pub fn compares_hold(txn: &pb::TxnRequest, snapshot: &Snapshot) -> Result<bool> {
    use pb::compare::Target;
    use std::cmp::Ordering;
    for compare in &txn.compare {
        let current = read(snapshot, &compare.key)?;
        let ordering = match &compare.target {
            Some(Target::Value(expected)) => current
                .map_or(&[][..], |c| c.value.as_slice())
                .cmp(expected.as_slice()),
            Some(Target::Version(expected)) => current.map_or(0, |c| c.version).cmp(expected),
            Some(Target::CreateRevision(expected)) => {
                current.map_or(0, |c| c.create_revision).cmp(expected)
            }
            Some(Target::ModRevision(expected)) => {
                current.map_or(0, |c| c.mod_revision).cmp(expected)
            }
            None => return Err(GatewayError::invalid("compare.target", "must be set")),
        };
        let holds = match pb::compare::Result::try_from(compare.result) {
            Ok(pb::compare::Result::Equal) => ordering == Ordering::Equal,
            Ok(pb::compare::Result::NotEqual) => ordering != Ordering::Equal,
            Ok(pb::compare::Result::Greater) => ordering == Ordering::Greater,
            Ok(pb::compare::Result::Less) => ordering == Ordering::Less,
            Err(_) => {
                return Err(GatewayError::invalid(
                    "compare.result",
                    format!("unknown value {}", compare.result),
                ))
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Evaluates the transaction over `snapshot`, its own versions at revision `at`.
/// `range_keys_max` is the page size of a range op that asks for no limit.
pub fn evaluate(
    txn: &pb::TxnRequest,
    snapshot: &Snapshot,
    at: u64,
    range_keys_max: u64,
) -> Result<Evaluation> {
    let succeeded = compares_hold(txn, snapshot)?;
    let mut reads: BTreeSet<Vec<u8>> = compare_keys(txn);
    let mut writes = BTreeMap::new();
    let mut overlay = Overlay::new();
    let mut responses = Vec::new();
    for (index, op) in branch(txn, succeeded).iter().enumerate() {
        let response = match &op.request {
            Some(Request::Put(put)) => {
                let previous = current(&overlay, snapshot, &put.key)?;
                let written = pb::KeyValue {
                    key: put.key.clone(),
                    create_revision: previous.as_ref().map_or(at, |p| p.create_revision),
                    mod_revision: at,
                    version: previous.as_ref().map_or(1, |p| p.version + 1),
                    value: put.value.clone(),
                };
                overlay.insert(put.key.clone(), Some(written));
                writes.insert(put.key.clone(), Write::Put(put.value.clone()));
                Response::Put(pb::PutResponse {
                    revision: at,
                    succeeded: true,
                    prev_kv: if put.prev_kv { previous } else { None },
                })
            }
            Some(Request::Delete(delete)) => {
                let previous = current(&overlay, snapshot, &delete.key)?;
                let deleted = previous.is_some();
                if deleted {
                    overlay.insert(delete.key.clone(), None);
                    writes.insert(delete.key.clone(), Write::Delete);
                } else {
                    // Nothing to delete: the outcome still depends on the key's absence.
                    reads.insert(delete.key.clone());
                }
                Response::Delete(pb::DeleteResponse {
                    revision: at,
                    deleted: u64::from(deleted),
                    prev_kv: if delete.prev_kv { previous } else { None },
                })
            }
            Some(Request::Get(get)) => {
                reads.insert(get.key.clone());
                let kv =
                    current(&overlay, snapshot, &get.key)?.map(|kv| keys_only(kv, get.keys_only));
                Response::Get(pb::GetResponse { revision: at, kv })
            }
            Some(Request::Range(range)) => {
                let base = snapshot
                    .ranges
                    .get(&index)
                    .ok_or_else(|| GatewayError::TxnNotRead {
                        key: format!("range op {index}"),
                    })?;
                let limit = if range.limit == 0 {
                    range_keys_max
                } else {
                    range.limit
                };
                let mut page = overlay_range(range, base, &overlay, snapshot, limit)?;
                page.revision = at;
                Response::Range(page)
            }
            None => return Err(GatewayError::invalid("txn", "an op has no request set")),
        };
        responses.push(pb::ResponseOp {
            response: Some(response),
        });
    }
    // A key written is not also read-locked: its write lock keeps writers out.
    reads.retain(|key| !writes.contains_key(key));
    Ok(Evaluation {
        succeeded,
        writes,
        reads,
        responses,
    })
}

/// A branch's own writes so far, by key; `None` is a deletion.
type Overlay = BTreeMap<Vec<u8>, Option<pb::KeyValue>>;

/// `key` as the branch sees it: its own write if any, else the snapshot's version.
fn current(overlay: &Overlay, snapshot: &Snapshot, key: &[u8]) -> Result<Option<pb::KeyValue>> {
    Ok(match overlay.get(key) {
        Some(own) => own.clone(),
        None => read(snapshot, key)?.cloned(),
    })
}

fn keys_only(mut kv: pb::KeyValue, keys_only: bool) -> pb::KeyValue {
    if keys_only {
        kv.value.clear();
    }
    kv
}

/// A range page read at the snapshot with the branch's own writes so far laid over it: own
/// puts in the range appear, own deletes disappear, at most `limit` keys. When the page read
/// had more keys after it, own writes past its last key belong to later pages and are left
/// out, so that paging on from the continuation neither skips nor repeats a key.
fn overlay_range(
    request: &pb::RangeRequest,
    base: &pb::RangeResponse,
    overlay: &Overlay,
    snapshot: &Snapshot,
    limit: u64,
) -> Result<pb::RangeResponse> {
    let bounds = KeyRange::of(request);
    let own = overlay.iter().filter(|(key, _)| bounds.contains(key));
    if request.count_only {
        let mut count = base.count as i64;
        for (key, now) in own {
            let before = read(snapshot, key)?.is_some();
            count += i64::from(now.is_some()) - i64::from(before);
        }
        return Ok(pb::RangeResponse {
            count: count.max(0) as u64,
            ..Default::default()
        });
    }
    let horizon = if base.more {
        base.kvs.last().map(|kv| kv.key.clone())
    } else {
        None
    };
    let mut merged: BTreeMap<Vec<u8>, pb::KeyValue> = base
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.clone()))
        .collect();
    for (key, now) in own {
        if horizon.as_ref().is_some_and(|last| key > last) {
            continue;
        }
        match now {
            Some(kv) => {
                merged.insert(key.clone(), keys_only(kv.clone(), request.keys_only));
            }
            None => {
                merged.remove(key);
            }
        }
    }
    let mut kvs: Vec<pb::KeyValue> = merged.into_values().collect();
    let more = base.more || kvs.len() as u64 > limit;
    kvs.truncate(limit as usize);
    let continuation = if more {
        kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(pb::RangeResponse {
        revision: 0,
        count: kvs.len() as u64,
        kvs,
        more,
        continuation,
    })
}

#[cfg(test)]
#[path = "evaluate_tests.rs"]
mod tests;
