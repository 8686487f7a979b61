//! What a command produced (`Report`) and its two renderings: aligned tables for people,
//! one JSON document for scripts. Pure functions of the report, so they are tested on fixed
//! values.

use crate::args::OutputFormat;
use crate::table::{aligned, table};
use cairn_client::{proto, CasOutcome};
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The result of one successful request.
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    Put {
        key: Vec<u8>,
        response: proto::PutResponse,
        /// `--prev-kv` was given, so the previous key is shown.
        show_prev: bool,
    },
    Get {
        key: Vec<u8>,
        kv: Option<proto::KeyValue>,
        keys_only: bool,
    },
    Delete {
        key: Vec<u8>,
        response: proto::DeleteResponse,
        show_prev: bool,
    },
    Scan {
        kvs: Vec<proto::KeyValue>,
        /// Keys remain beyond the rows shown.
        more: bool,
        keys_only: bool,
        /// The revision every page was read at.
        revision: u64,
    },
    Compact {
        compact_revision: u64,
    },
    Count {
        count: u64,
    },
    Cas {
        key: Vec<u8>,
        outcome: CasOutcome,
    },
    /// `cairnctl txn`.
    Txn(proto::TxnResponse),
    Status(proto::StatusResponse),
    Members(Vec<proto::Member>),
    Shards(proto::ShardsResponse),
    Join {
        node_id: u64,
    },
    Leave {
        node_id: u64,
        draining: bool,
    },
    Recovered(proto::UnsafeRecoverShardResponse),
    /// `user`, `role` and `auth` commands.
    Auth(crate::auth::AuthReport),
}

impl Report {
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.table(),
            OutputFormat::Json => {
                let mut text = serde_json::to_string_pretty(&self.json())
                    .expect("a serde_json::Value always serializes");
                text.push('\n');
                text
            }
        }
    }

    /// The JSON document for this report.
    pub fn json(&self) -> Value {
        match self {
            Report::Put {
                response,
                show_prev,
                ..
            } => {
                let mut document = json!({ "revision": response.revision });
                if *show_prev {
                    document["prev_kv"] = kv_json_or_null(response.prev_kv.as_ref(), false);
                }
                document
            }
            Report::Get { kv, keys_only, .. } => kv_json_or_null(kv.as_ref(), *keys_only),
            Report::Delete {
                response,
                show_prev,
                ..
            } => {
                let mut document =
                    json!({ "revision": response.revision, "deleted": response.deleted });
                if *show_prev {
                    document["prev_kv"] = kv_json_or_null(response.prev_kv.as_ref(), false);
                }
                document
            }
            Report::Scan {
                kvs,
                more,
                keys_only,
                revision,
            } => json!({
                "kvs": kvs.iter().map(|kv| kv_json(kv, *keys_only)).collect::<Vec<_>>(),
                "more": more,
                "revision": revision,
            }),
            Report::Compact { compact_revision } => {
                json!({ "compact_revision": compact_revision })
            }
            Report::Count { count } => json!({ "count": count }),
            Report::Txn(response) => crate::txn_output::json(response),
            Report::Cas { outcome, .. } => json!({
                "succeeded": outcome.succeeded,
                "revision": outcome.revision,
                "current": kv_json_or_null(outcome.current.as_ref(), false),
            }),
            Report::Status(status) => json!({
                "cluster_id": status.cluster_id,
                "shard_count": status.shard_count,
                "replication_factor": status.replication_factor,
                "coordinator_leader_id": status.coordinator_leader_id,
                "node_count": status.node_count,
                "nodes_up": status.nodes_up,
                "under_replicated_shards": status.under_replicated_shards,
                "moves_in_flight": status.moves_in_flight,
                "shard_map_version": status.shard_map_version,
                "coordinator_storage_engine": status.coordinator_storage_engine,
                "in_memory_nodes": status.in_memory_nodes,
                "durable": is_durable(status),
                "shards_without_quorum": crate::recovery::without_quorum_json(&status.shards_without_quorum),
            }),
            Report::Members(members) => json!({
                "members": members.iter().map(|member| json!({
                    "node_id": member.node_id,
                    "address": member.address,
                    "state": member.state,
                    "labels": sorted_labels(member)
                        .into_iter()
                        .map(|(key, value)| (key, Value::String(value)))
                        .collect::<serde_json::Map<_, _>>(),
                    "replica_count": member.replica_count,
                    "leader_count": member.leader_count,
                    "storage_engine": member.storage_engine,
                })).collect::<Vec<_>>(),
            }),
            Report::Shards(shards) => json!({
                "shard_map_version": shards.shard_map_version,
                "shards": shards.shards.iter().map(|shard| json!({
                    "shard_id": shard.shard_id,
                    "epoch": shard.epoch,
                    "leader_node_id": shard.leader_node_id,
                    "voters": shard.voters,
                    "learners": shard.learners,
                })).collect::<Vec<_>>(),
            }),
            Report::Join { node_id } => json!({ "node_id": node_id }),
            Report::Recovered(recovered) => crate::recovery::json(recovered),
            Report::Auth(report) => report.json(),
            Report::Leave { node_id, draining } => {
                json!({ "node_id": node_id, "draining": draining })
            }
        }
    }

    /// The human-readable rendering.
    pub fn table(&self) -> String {
        match self {
            Report::Put {
                key,
                response,
                show_prev,
            } => {
                let mut headers = vec!["KEY", "REVISION"];
                let mut row = vec![bytes_cell(key), response.revision.to_string()];
                if *show_prev {
                    add_prev_columns(&mut headers, &mut row, response.prev_kv.as_ref());
                }
                table(&headers, &[row])
            }
            Report::Get { kv, keys_only, .. } => match kv {
                Some(kv) => kv_table(std::slice::from_ref(kv), *keys_only),
                None => String::new(),
            },
            Report::Delete {
                key,
                response,
                show_prev,
            } => {
                let mut headers = vec!["KEY", "DELETED", "REVISION"];
                let mut row = vec![
                    bytes_cell(key),
                    response.deleted.to_string(),
                    response.revision.to_string(),
                ];
                if *show_prev {
                    add_prev_columns(&mut headers, &mut row, response.prev_kv.as_ref());
                }
                table(&headers, &[row])
            }
            Report::Scan { kvs, keys_only, .. } => kv_table(kvs, *keys_only),
            Report::Compact { compact_revision } => {
                format!("compacted: reads below revision {compact_revision} are refused\n")
            }
            Report::Count { count } => table(&["COUNT"], &[vec![count.to_string()]]),
            Report::Txn(response) => crate::txn_output::table(response),
            Report::Cas { key, outcome } => {
                let current = outcome.current.as_ref();
                let row = vec![
                    outcome.succeeded.to_string(),
                    outcome.revision.to_string(),
                    bytes_cell(key),
                    current.map_or(ABSENT.into(), |kv| bytes_cell(&kv.value)),
                    current.map_or(ABSENT.into(), |kv| kv.version.to_string()),
                    current.map_or(ABSENT.into(), |kv| kv.mod_revision.to_string()),
                ];
                table(
                    &[
                        "SUCCEEDED",
                        "REVISION",
                        "KEY",
                        "VALUE",
                        "VERSION",
                        "MOD_REVISION",
                    ],
                    &[row],
                )
            }
            Report::Status(status) => {
                let rows: Vec<Vec<String>> = [
                    ("cluster_id", status.cluster_id.clone()),
                    ("shard_count", status.shard_count.to_string()),
                    ("replication_factor", status.replication_factor.to_string()),
                    (
                        "coordinator_leader_id",
                        node_or_absent(status.coordinator_leader_id),
                    ),
                    ("node_count", status.node_count.to_string()),
                    ("nodes_up", status.nodes_up.to_string()),
                    (
                        "under_replicated_shards",
                        status.under_replicated_shards.to_string(),
                    ),
                    ("moves_in_flight", status.moves_in_flight.to_string()),
                    (
                        "shards_without_quorum",
                        crate::recovery::without_quorum_cell(&status.shards_without_quorum),
                    ),
                    ("shard_map_version", status.shard_map_version.to_string()),
                    (
                        "storage",
                        if is_durable(status) {
                            "disk (durable)".to_string()
                        } else {
                            format!(
                                "IN MEMORY, NOT DURABLE: data is lost when processes stop (coordinator: {}, in-memory nodes: {})",
                                status.coordinator_storage_engine, status.in_memory_nodes
                            )
                        },
                    ),
                ]
                .into_iter()
                .map(|(field, value)| vec![field.to_string(), value])
                .collect();
                aligned(&rows)
            }
            Report::Members(members) => {
                let rows: Vec<Vec<String>> = members
                    .iter()
                    .map(|member| {
                        let labels: Vec<String> = sorted_labels(member)
                            .into_iter()
                            .map(|(key, value)| format!("{key}={value}"))
                            .collect();
                        vec![
                            member.node_id.to_string(),
                            member.address.clone(),
                            member.state.clone(),
                            member.replica_count.to_string(),
                            member.leader_count.to_string(),
                            member.storage_engine.clone(),
                            if labels.is_empty() {
                                ABSENT.into()
                            } else {
                                labels.join(",")
                            },
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NODE_ID", "ADDRESS", "STATE", "REPLICAS", "LEADERS", "ENGINE", "LABELS",
                    ],
                    &rows,
                )
            }
            Report::Shards(shards) => {
                let rows: Vec<Vec<String>> = shards
                    .shards
                    .iter()
                    .map(|shard| {
                        vec![
                            shard.shard_id.to_string(),
                            shard.epoch.to_string(),
                            node_or_absent(shard.leader_node_id),
                            id_list(&shard.voters),
                            id_list(&shard.learners),
                        ]
                    })
                    .collect();
                table(&["SHARD", "EPOCH", "LEADER", "VOTERS", "LEARNERS"], &rows)
            }
            Report::Join { node_id } => table(&["NODE_ID"], &[vec![node_id.to_string()]]),
            Report::Recovered(recovered) => crate::recovery::table(recovered),
            Report::Auth(report) => report.table(),
            Report::Leave { node_id, draining } => table(
                &["NODE_ID", "DRAINING"],
                &[vec![node_id.to_string(), draining.to_string()]],
            ),
        }
    }
}

/// Shown in a table cell that has no value (a missing key, an unknown leader).
const ABSENT: &str = "-";

/// Bytes for JSON: the text when valid UTF-8, else `0x` and lowercase hex.
pub fn bytes_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => hex(bytes),
    }
}

/// Bytes for a table cell: the text when valid UTF-8 without control characters (which
/// would break the layout), else `0x` and lowercase hex.
pub fn bytes_cell(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => hex(bytes),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 + 2 * bytes.len());
    text.push_str("0x");
    for byte in bytes {
        write!(text, "{byte:02x}").expect("writing to a String cannot fail");
    }
    text
}

pub(crate) fn kv_json(kv: &proto::KeyValue, keys_only: bool) -> Value {
    let mut document = json!({
        "key": bytes_text(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    if !keys_only {
        document["value"] = Value::String(bytes_text(&kv.value));
    }
    document
}

fn kv_json_or_null(kv: Option<&proto::KeyValue>, keys_only: bool) -> Value {
    kv.map_or(Value::Null, |kv| kv_json(kv, keys_only))
}

fn kv_table(kvs: &[proto::KeyValue], keys_only: bool) -> String {
    let rows: Vec<Vec<String>> = kvs
        .iter()
        .map(|kv| {
            let mut row = vec![bytes_cell(&kv.key)];
            if !keys_only {
                row.push(bytes_cell(&kv.value));
            }
            row.push(kv.version.to_string());
            row.push(kv.create_revision.to_string());
            row.push(kv.mod_revision.to_string());
            row
        })
        .collect();
    if keys_only {
        table(
            &["KEY", "VERSION", "CREATE_REVISION", "MOD_REVISION"],
            &rows,
        )
    } else {
        table(
            &["KEY", "VALUE", "VERSION", "CREATE_REVISION", "MOD_REVISION"],
            &rows,
        )
    }
}

fn add_prev_columns(
    headers: &mut Vec<&'static str>,
    row: &mut Vec<String>,
    prev: Option<&proto::KeyValue>,
) {
    headers.extend(["PREV_VALUE", "PREV_VERSION", "PREV_MOD_REVISION"]);
    row.push(prev.map_or(ABSENT.into(), |kv| bytes_cell(&kv.value)));
    row.push(prev.map_or(ABSENT.into(), |kv| kv.version.to_string()));
    row.push(prev.map_or(ABSENT.into(), |kv| kv.mod_revision.to_string()));
}

/// Whether the cluster keeps its data on disk: a coordinator or any node in memory makes it a
/// throwaway cluster.
fn is_durable(status: &proto::StatusResponse) -> bool {
    status.coordinator_storage_engine != "memory" && status.in_memory_nodes == 0
}

fn sorted_labels(member: &proto::Member) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = member
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    labels
}

fn node_or_absent(node_id: u64) -> String {
    if node_id == 0 {
        ABSENT.into()
    } else {
        node_id.to_string()
    }
}

fn id_list(ids: &[u64]) -> String {
    if ids.is_empty() {
        return ABSENT.into();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
