//! Which path a transaction takes, and the checks a transaction must pass before the gateway
//! coordinates it. Pure: the shard of a key is a function the caller passes in.
//!
//! A transaction whose keys (compares and point ops of both branches) all live in one shard,
//! and that has no range op, is one shard's command: the one-phase path, one Raft round, as
//! before issue 16. A range covers every shard (keys are hash-partitioned), so a transaction
//! with a range op is one-phase only when the cluster has a single shard. Everything else is
//! a two-phase commit coordinated by the gateway (D95).

use crate::error::{GatewayError, Result};
use crate::txn::config::TxnConfig;
use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::request_op::Request;
use cairn_types::ShardId;
use prost::Message;
use std::collections::{BTreeSet, HashSet};

/// How a transaction is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Path {
    /// One shard's `Txn` command, one Raft round.
    OnePhase(ShardId),
    /// The gateway's two-phase commit over the shards listed (for a range: every shard).
    TwoPhase { shards: BTreeSet<ShardId> },
}

/// Every key the transaction names outside its ranges: compares, then point ops of both
/// branches, in request order (duplicates kept).
pub fn point_keys(txn: &pb::TxnRequest) -> Vec<&[u8]> {
    let mut keys: Vec<&[u8]> = txn.compare.iter().map(|c| c.key.as_slice()).collect();
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Request::Put(put)) => keys.push(&put.key),
            Some(Request::Get(get)) => keys.push(&get.key),
            Some(Request::Delete(delete)) => keys.push(&delete.key),
            Some(Request::Range(_)) | None => {}
        }
    }
    keys
}

/// Whether any op of either branch is a range.
pub fn has_range(txn: &pb::TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| matches!(op.request, Some(Request::Range(_))))
}

/// The path of a (validated) transaction over a cluster of `shard_count` shards.
pub fn choose_path(
    txn: &pb::TxnRequest,
    shard_count: u32,
    shard_of: impl Fn(&[u8]) -> ShardId,
) -> Result<Path> {
    let keys = point_keys(txn);
    let ranged = has_range(txn);
    if keys.is_empty() && !ranged {
        return Err(GatewayError::invalid(
            "txn",
            "a transaction needs at least one key",
        ));
    }
    if shard_count <= 1 {
        // One shard holds every key, ranges included.
        return Ok(Path::OnePhase(ShardId(0)));
    }
    if ranged {
        return Ok(Path::TwoPhase {
            shards: (0..u64::from(shard_count)).map(ShardId).collect(),
        });
    }
    let shards: BTreeSet<ShardId> = keys.iter().map(|key| shard_of(key)).collect();
    if shards.len() == 1 {
        return Ok(Path::OnePhase(*shards.first().expect("one shard")));
    }
    Ok(Path::TwoPhase { shards })
}

/// The key a two-phase transaction records its outcome under (D97): the reserved record key
/// of its write id, when it has one and either branch writes. Every attempt of the request,
/// through any gateway and whichever branch it takes, locks the same key as its primary. A
/// request that cannot write needs no record: running it twice changes nothing.
pub fn record_key(txn: &pb::TxnRequest) -> Option<Vec<u8>> {
    let write_id = txn.write_id?;
    let writes = txn
        .success
        .iter()
        .chain(&txn.failure)
        .any(|op| matches!(op.request, Some(Request::Put(_) | Request::Delete(_))));
    writes.then(|| cairn_types::reserved::txn_record_key(write_id.client_id, write_id.sequence))
}

/// Checks a transaction the way a node checks a one-phase one (crates/raft/src/convert.rs),
/// for the transactions the gateway coordinates and no node sees whole: the op count and size
/// limits of `[txn]`, keys not empty, every op and compare complete, no put condition or read
/// revision inside a transaction, each key written at most once per branch, range bounds in
/// order and a range limit of at most `range_keys_max`. Key and value sizes are checked by
/// the nodes, which see every key and value in a read or a prewrite.
pub fn validate(txn: &pb::TxnRequest, config: &TxnConfig, range_keys_max: u64) -> Result<()> {
    let ops = (txn.compare.len() + txn.success.len() + txn.failure.len()) as u64;
    if ops > config.ops_max {
        return Err(GatewayError::LimitExceeded {
            limit: "txn.ops_max",
            max: config.ops_max,
            actual: ops,
        });
    }
    let bytes = txn.encoded_len() as u64;
    if bytes > config.request_bytes_max {
        return Err(GatewayError::LimitExceeded {
            limit: "txn.request_bytes_max",
            max: config.request_bytes_max,
            actual: bytes,
        });
    }
    for compare in &txn.compare {
        if compare.key.is_empty() {
            return Err(GatewayError::invalid(
                "compare.key",
                "key must not be empty",
            ));
        }
        user_key(&compare.key)?;
        if compare.target.is_none() {
            return Err(GatewayError::invalid("compare.target", "must be set"));
        }
        if pb::compare::Result::try_from(compare.result).is_err() {
            return Err(GatewayError::invalid(
                "compare.result",
                format!("unknown value {}", compare.result),
            ));
        }
    }
    for (field, branch) in [("success", &txn.success), ("failure", &txn.failure)] {
        let mut written = HashSet::new();
        for op in branch {
            match &op.request {
                None => return Err(GatewayError::invalid(field, "an op has no request set")),
                Some(Request::Put(put)) => {
                    if put
                        .condition
                        .as_ref()
                        .and_then(|c| c.condition.as_ref())
                        .is_some()
                    {
                        return Err(GatewayError::invalid(
                            field,
                            "a put inside a transaction cannot carry a condition; use compare",
                        ));
                    }
                    user_key(&put.key)?;
                    if !written.insert(put.key.as_slice()) {
                        return Err(written_twice(field));
                    }
                }
                Some(Request::Delete(delete)) => {
                    user_key(&delete.key)?;
                    if !written.insert(delete.key.as_slice()) {
                        return Err(written_twice(field));
                    }
                }
                Some(Request::Get(get)) => {
                    user_key(&get.key)?;
                    no_revision_in_txn(get.revision)?;
                }
                Some(Request::Range(range)) => {
                    no_revision_in_txn(range.revision)?;
                    if range.prefix.is_empty() && !range.end.is_empty() && range.end < range.start {
                        return Err(GatewayError::invalid("end", "must not sort before start"));
                    }
                    if range.limit > range_keys_max {
                        return Err(GatewayError::LimitExceeded {
                            limit: "range_keys_max",
                            max: range_keys_max,
                            actual: range.limit,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Cuts every range op of `txn` off where the reserved key space begins, and refuses one that
/// starts inside it (`crate::txn::bounds::keep_to_user_keys`).
pub fn keep_ranges_to_user_keys(txn: &mut pb::TxnRequest) -> Result<()> {
    for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
        if let Some(Request::Range(range)) = &mut op.request {
            crate::txn::bounds::keep_to_user_keys(range)?;
        }
    }
    Ok(())
}

/// A key a client names: not empty, and not in the reserved key space (D65).
pub fn user_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(GatewayError::invalid("key", "key must not be empty"));
    }
    cairn_types::reserved::check_user_key(key)
        .map_err(|refused| GatewayError::invalid("key", refused.to_string()))
}

fn written_twice(field: &'static str) -> GatewayError {
    GatewayError::invalid(field, "a transaction may write each key at most once")
}

/// Reads inside a transaction see the transaction's state; a revision of their own would
/// read another moment.
fn no_revision_in_txn(revision: u64) -> Result<()> {
    if revision != 0 {
        return Err(GatewayError::invalid(
            "revision",
            "a read inside a transaction reads the transaction's state; leave revision 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::tests::{compare_version, delete, get, put, range};

    /// Keys starting with a digit live in the shard of that digit.
    fn shard_of(key: &[u8]) -> ShardId {
        ShardId(u64::from(key[0] - b'0'))
    }

    fn txn(compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            compare,
            success,
            ..Default::default()
        }
    }

    #[test]
    fn keys_of_one_shard_take_the_one_phase_path() {
        let one = txn(
            vec![compare_version("1a", 0)],
            vec![put("1b", "v"), get("1c")],
        );
        assert_eq!(
            choose_path(&one, 4, shard_of).unwrap(),
            Path::OnePhase(ShardId(1))
        );
    }

    #[test]
    fn keys_of_two_shards_take_the_two_phase_path_over_those_shards() {
        let mut two = txn(vec![compare_version("1a", 0)], vec![put("1b", "v")]);
        two.failure = vec![delete("3x")];
        assert_eq!(
            choose_path(&two, 4, shard_of).unwrap(),
            Path::TwoPhase {
                shards: [ShardId(1), ShardId(3)].into()
            }
        );
    }

    #[test]
    fn a_range_covers_every_shard_unless_there_is_only_one() {
        let ranged = txn(vec![], vec![range("1", "2"), put("1b", "v")]);
        assert_eq!(
            choose_path(&ranged, 3, shard_of).unwrap(),
            Path::TwoPhase {
                shards: [ShardId(0), ShardId(1), ShardId(2)].into()
            }
        );
        assert_eq!(
            choose_path(&ranged, 1, shard_of).unwrap(),
            Path::OnePhase(ShardId(0))
        );
        let only_range = txn(vec![], vec![range("1", "2")]);
        assert!(matches!(
            choose_path(&only_range, 3, shard_of).unwrap(),
            Path::TwoPhase { .. }
        ));
    }

    #[test]
    fn a_transaction_without_keys_is_refused() {
        assert!(matches!(
            choose_path(&pb::TxnRequest::default(), 4, shard_of),
            Err(GatewayError::InvalidArgument { field: "txn", .. })
        ));
    }

    #[test]
    fn a_request_with_a_write_id_that_can_write_has_a_record_key() {
        let write_id = pb::WriteId {
            client_id: 3,
            sequence: 4,
            first_incomplete_sequence: 1,
        };
        let mut writes_on_failure = txn(vec![compare_version("1a", 0)], vec![get("0a")]);
        writes_on_failure.failure = vec![delete("2b")];
        assert_eq!(record_key(&writes_on_failure), None, "no write id");
        writes_on_failure.write_id = Some(write_id);
        assert_eq!(
            record_key(&writes_on_failure),
            Some(cairn_types::reserved::txn_record_key(3, 4))
        );
        let mut reads_only = txn(vec![], vec![get("0a"), range("1", "2")]);
        reads_only.write_id = Some(write_id);
        assert_eq!(record_key(&reads_only), None, "nothing to record");
    }

    #[test]
    fn reserved_keys_are_refused_and_ranges_end_before_them() {
        let config = TxnConfig::default();
        let reserved =
            String::from_utf8_lossy(&cairn_types::reserved::txn_record_key(1, 1)).into_owned();
        let mut named = txn(vec![], vec![put("0a", "v")]);
        named.success.push(pb::RequestOp {
            request: Some(Request::Delete(pb::DeleteRequest {
                key: cairn_types::reserved::txn_record_key(1, 1),
                ..Default::default()
            })),
        });
        assert!(
            matches!(
                validate(&named, &config, 100),
                Err(GatewayError::InvalidArgument { field: "key", .. })
            ),
            "{reserved:?}"
        );
        let mut ranged = txn(
            vec![],
            vec![pb::RequestOp {
                request: Some(Request::Range(pb::RangeRequest::default())),
            }],
        );
        keep_ranges_to_user_keys(&mut ranged).unwrap();
        let Some(Request::Range(range)) = &ranged.success[0].request else {
            panic!("a range op")
        };
        assert_eq!(range.end, cairn_types::reserved::RESERVED_PREFIX);
    }

    #[test]
    fn validation_names_the_limit_or_the_field() {
        let config = TxnConfig {
            ops_max: 2,
            ..TxnConfig::default()
        };
        let big = txn(
            vec![compare_version("1a", 0)],
            vec![put("1b", "v"), put("2b", "v")],
        );
        assert!(matches!(
            validate(&big, &config, 100),
            Err(GatewayError::LimitExceeded {
                limit: "txn.ops_max",
                max: 2,
                actual: 3
            })
        ));
        let config = TxnConfig {
            request_bytes_max: 10,
            ..TxnConfig::default()
        };
        assert!(matches!(
            validate(&txn(vec![], vec![put("1b", "0123456789")]), &config, 100),
            Err(GatewayError::LimitExceeded {
                limit: "txn.request_bytes_max",
                ..
            })
        ));
        let config = TxnConfig::default();
        let twice = txn(vec![], vec![put("1b", "v"), delete("1b")]);
        assert!(matches!(
            validate(&twice, &config, 100),
            Err(GatewayError::InvalidArgument {
                field: "success",
                ..
            })
        ));
        let mut conditional = put("1b", "v");
        if let Some(Request::Put(put)) = &mut conditional.request {
            put.condition = Some(pb::PutCondition {
                condition: Some(pb::put_condition::Condition::Absent(true)),
            });
        }
        assert!(matches!(
            validate(&txn(vec![], vec![conditional]), &config, 100),
            Err(GatewayError::InvalidArgument {
                field: "success",
                ..
            })
        ));
        let mut at_revision = get("1b");
        if let Some(Request::Get(get)) = &mut at_revision.request {
            get.revision = 5;
        }
        assert!(matches!(
            validate(&txn(vec![], vec![at_revision]), &config, 100),
            Err(GatewayError::InvalidArgument {
                field: "revision",
                ..
            })
        ));
        let mut wide = range("1", "2");
        if let Some(Request::Range(range)) = &mut wide.request {
            range.limit = 101;
        }
        assert!(matches!(
            validate(&txn(vec![], vec![wide]), &config, 100),
            Err(GatewayError::LimitExceeded {
                limit: "range_keys_max",
                ..
            })
        ));
        assert!(matches!(
            validate(&txn(vec![], vec![range("2", "1")]), &config, 100),
            Err(GatewayError::InvalidArgument { field: "end", .. })
        ));
        let mut no_target = compare_version("1a", 0);
        no_target.target = None;
        assert!(matches!(
            validate(&txn(vec![no_target], vec![]), &config, 100),
            Err(GatewayError::InvalidArgument {
                field: "compare.target",
                ..
            })
        ));
        // The same key written once in each branch is fine.
        let mut both = txn(vec![], vec![put("1b", "v")]);
        both.failure = vec![delete("1b")];
        validate(&both, &config, 100).unwrap();
    }
}
