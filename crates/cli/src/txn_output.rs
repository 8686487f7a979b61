//! How `cairnctl txn` prints a transaction's result: etcdctl's shape for people, one JSON
//! document for scripts. Pure functions of the response.
//!
//! The table form is etcdctl's `txn` output: `SUCCESS` or `FAILURE`, then for each response
//! of the branch that ran, a blank line and the response as etcdctl prints it (`OK` for a
//! put; key and value lines for each key read; the number of keys deleted for a del; the
//! previous key's lines when `--prev-kv` asked for it). Keys and values print as text when
//! valid UTF-8 without control characters, else as `0x` hex, as in every cairnctl table.

use crate::output::{bytes_cell, kv_json};
use cairn_client::proto;
use serde_json::{json, Value};

/// etcdctl's rendering.
pub fn table(response: &proto::TxnResponse) -> String {
    let mut out = String::from(if response.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &response.responses {
        out.push('\n');
        use proto::response_op::Response;
        match &op.response {
            Some(Response::Put(put)) => {
                out.push_str("OK\n");
                if let Some(prev) = &put.prev_kv {
                    push_kv(&mut out, prev);
                }
            }
            Some(Response::Get(get)) => {
                if let Some(kv) = &get.kv {
                    push_kv(&mut out, kv);
                }
            }
            Some(Response::Range(range)) => {
                if range.kvs.is_empty() && range.count > 0 {
                    // --count-only: the count is the answer.
                    out.push_str(&format!("{}\n", range.count));
                }
                for kv in &range.kvs {
                    push_kv(&mut out, kv);
                }
            }
            Some(Response::Delete(delete)) => {
                out.push_str(&format!("{}\n", delete.deleted));
                if let Some(prev) = &delete.prev_kv {
                    push_kv(&mut out, prev);
                }
            }
            None => out.push_str("(an empty response)\n"),
        }
    }
    out
}

/// A key line, then a value line, as etcdctl prints them (the value line is empty for a key
/// read with `--keys-only`).
fn push_kv(out: &mut String, kv: &proto::KeyValue) {
    out.push_str(&bytes_cell(&kv.key));
    out.push('\n');
    out.push_str(&bytes_cell(&kv.value));
    out.push('\n');
}

/// `{"succeeded", "revision", "responses": [{"put": {...}} | {"get": {...}} | {"range":
/// {...}} | {"delete": {...}}]}`.
pub fn json(response: &proto::TxnResponse) -> Value {
    let kv_or_null = |kv: Option<&proto::KeyValue>| kv.map_or(Value::Null, |kv| kv_json(kv, false));
    let responses: Vec<Value> = response
        .responses
        .iter()
        .map(|op| {
            use proto::response_op::Response;
            match &op.response {
                Some(Response::Put(put)) => json!({ "put": {
                    "revision": put.revision,
                    "prev_kv": kv_or_null(put.prev_kv.as_ref()),
                }}),
                Some(Response::Get(get)) => json!({ "get": {
                    "revision": get.revision,
                    "kv": kv_or_null(get.kv.as_ref()),
                }}),
                Some(Response::Range(range)) => json!({ "range": {
                    "revision": range.revision,
                    "kvs": range.kvs.iter().map(|kv| kv_json(kv, false)).collect::<Vec<_>>(),
                    "more": range.more,
                    "count": range.count,
                }}),
                Some(Response::Delete(delete)) => json!({ "delete": {
                    "revision": delete.revision,
                    "deleted": delete.deleted,
                    "prev_kv": kv_or_null(delete.prev_kv.as_ref()),
                }}),
                None => Value::Null,
            }
        })
        .collect();
    json!({
        "succeeded": response.succeeded,
        "revision": response.revision,
        "responses": responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::response_op::Response;

    fn kv(key: &[u8], value: &[u8]) -> proto::KeyValue {
        proto::KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
        }
    }

    fn response(succeeded: bool, responses: Vec<Response>) -> proto::TxnResponse {
        proto::TxnResponse {
            revision: 9,
            succeeded,
            responses: responses
                .into_iter()
                .map(|response| proto::ResponseOp {
                    response: Some(response),
                })
                .collect(),
        }
    }

    fn sample() -> proto::TxnResponse {
        response(
            true,
            vec![
                Response::Put(proto::PutResponse {
                    revision: 9,
                    succeeded: true,
                    prev_kv: Some(kv(b"a", b"old")),
                }),
                Response::Get(proto::GetResponse {
                    revision: 9,
                    kv: Some(kv(b"b", b"\xff")),
                }),
                Response::Get(proto::GetResponse {
                    revision: 9,
                    kv: None,
                }),
                Response::Range(proto::RangeResponse {
                    revision: 9,
                    kvs: vec![kv(b"p/1", b"x"), kv(b"p/2", b"y")],
                    ..Default::default()
                }),
                Response::Range(proto::RangeResponse {
                    revision: 9,
                    count: 5,
                    ..Default::default()
                }),
                Response::Delete(proto::DeleteResponse {
                    revision: 9,
                    deleted: 1,
                    prev_kv: None,
                }),
            ],
        )
    }

    #[test]
    fn table_is_etcdctls_shape() {
        assert_eq!(
            table(&sample()),
            "SUCCESS\n\nOK\na\nold\n\nb\n0xff\n\n\np/1\nx\np/2\ny\n\n5\n\n1\n"
        );
        assert_eq!(table(&response(false, vec![])), "FAILURE\n");
    }

    #[test]
    fn json_has_one_object_per_response() {
        let document = json(&sample());
        assert_eq!(document["succeeded"], true);
        assert_eq!(document["revision"], 9);
        let responses = document["responses"].as_array().unwrap();
        assert_eq!(responses.len(), 6);
        assert_eq!(responses[0]["put"]["prev_kv"]["value"], "old");
        assert_eq!(responses[1]["get"]["kv"]["value"], "0xff");
        assert_eq!(responses[2]["get"]["kv"], Value::Null);
        assert_eq!(responses[3]["range"]["kvs"][1]["key"], "p/2");
        assert_eq!(responses[4]["range"]["count"], 5);
        assert_eq!(responses[5]["delete"]["deleted"], 1);
    }
}
