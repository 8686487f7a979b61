use super::*;

fn kv(key: &[u8], value: &[u8], version: u64, mod_revision: u64) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_vec(),
        create_revision: 2,
        mod_revision,
        version,
        value: value.to_vec(),
    }
}

#[test]
fn bytes_are_text_when_utf8_else_hex() {
    assert_eq!(bytes_text(b"hello"), "hello");
    assert_eq!(bytes_text(&[0xff, 0x00, 0x1a]), "0xff001a");
    assert_eq!(bytes_text(b"a\nb"), "a\nb");
    assert_eq!(bytes_cell(b"a\nb"), "0x610a62");
    assert_eq!(bytes_cell("zürich".as_bytes()), "zürich");
    assert_eq!(bytes_cell(b""), "");
}

#[test]
fn get_table_has_aligned_columns() {
    let report = Report::Get {
        key: b"user/1".to_vec(),
        kv: Some(kv(b"user/1", b"ada", 3, 17)),
        keys_only: false,
    };
    assert_eq!(
        report.table(),
        "KEY     VALUE  VERSION  CREATE_REVISION  MOD_REVISION\n\
         user/1  ada    3        2                17\n"
    );
}

#[test]
fn scan_table_shows_binary_values_as_hex() {
    let report = Report::Scan {
        kvs: vec![kv(b"a", b"1", 1, 5), kv(b"bb", &[0xff, 0xfe], 2, 9)],
        more: false,
        keys_only: false,
        revision: 9,
    };
    assert_eq!(
        report.table(),
        "KEY  VALUE   VERSION  CREATE_REVISION  MOD_REVISION\n\
         a    1       1        2                5\n\
         bb   0xfffe  2        2                9\n"
    );
    let keys_only = Report::Scan {
        kvs: vec![kv(b"a", b"", 1, 5)],
        more: false,
        keys_only: true,
        revision: 9,
    };
    assert_eq!(
        keys_only.table(),
        "KEY  VERSION  CREATE_REVISION  MOD_REVISION\na    1        2                5\n"
    );
}

#[test]
fn get_json_is_the_key_value_or_null() {
    let report = Report::Get {
        key: b"k".to_vec(),
        kv: Some(kv(b"k", &[0xff], 1, 4)),
        keys_only: false,
    };
    assert_eq!(
        report.json(),
        json!({"key": "k", "value": "0xff", "create_revision": 2, "mod_revision": 4, "version": 1})
    );
    let missing = Report::Get {
        key: b"k".to_vec(),
        kv: None,
        keys_only: false,
    };
    assert_eq!(missing.json(), Value::Null);
    assert_eq!(missing.render(OutputFormat::Json), "null\n");
    assert_eq!(missing.table(), "");
    let keys_only = Report::Get {
        key: b"k".to_vec(),
        kv: Some(kv(b"k", b"", 1, 4)),
        keys_only: true,
    };
    assert!(keys_only.json().get("value").is_none());
}

#[test]
fn put_with_prev_kv() {
    let report = Report::Put {
        key: b"k".to_vec(),
        response: proto::PutResponse {
            revision: 8,
            succeeded: true,
            prev_kv: Some(kv(b"k", b"old", 2, 6)),
        },
        show_prev: true,
    };
    assert_eq!(
        report.table(),
        "KEY  REVISION  PREV_VALUE  PREV_VERSION  PREV_MOD_REVISION\n\
         k    8         old         2             6\n"
    );
    assert_eq!(report.json()["revision"], 8);
    assert_eq!(report.json()["prev_kv"]["value"], "old");
    let plain = Report::Put {
        key: b"k".to_vec(),
        response: proto::PutResponse {
            revision: 8,
            succeeded: true,
            prev_kv: None,
        },
        show_prev: false,
    };
    assert_eq!(plain.json(), json!({"revision": 8}));
}

#[test]
fn failed_cas_shows_the_current_key() {
    let report = Report::Cas {
        key: b"k".to_vec(),
        outcome: CasOutcome {
            succeeded: false,
            current: Some(kv(b"k", b"other", 4, 11)),
            revision: 11,
        },
    };
    assert_eq!(
        report.table(),
        "SUCCEEDED  REVISION  KEY  VALUE  VERSION  MOD_REVISION\n\
         false      11        k    other  4        11\n"
    );
    assert_eq!(report.json()["succeeded"], false);
    assert_eq!(report.json()["current"]["version"], 4);
}

#[test]
fn cluster_tables() {
    let shards = Report::Shards(proto::ShardsResponse {
        shard_map_version: 7,
        shards: vec![
            proto::ShardStatus {
                shard_id: 0,
                epoch: 3,
                voters: vec![1, 2, 3],
                learners: vec![],
                leader_node_id: 2,
            },
            proto::ShardStatus {
                shard_id: 1,
                epoch: 12,
                voters: vec![1, 2],
                learners: vec![4],
                leader_node_id: 0,
            },
        ],
    });
    assert_eq!(
        shards.table(),
        "SHARD  EPOCH  LEADER  VOTERS  LEARNERS\n\
         0      3      2       1,2,3   -\n\
         1      12     -       1,2     4\n"
    );
    assert_eq!(shards.json()["shards"][1]["learners"], json!([4]));

    let members = Report::Members(vec![proto::Member {
        node_id: 1,
        address: "n1:7100".into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        state: "up".into(),
        replica_count: 5,
        leader_count: 2,
        storage_engine: "memory".into(),
    }]);
    assert_eq!(
        members.table(),
        "NODE_ID  ADDRESS  STATE  REPLICAS  LEADERS  ENGINE  LABELS\n\
         1        n1:7100  up     5         2        memory  zone=a\n"
    );
    assert_eq!(members.json()["members"][0]["labels"], json!({"zone": "a"}));

    let status = Report::Status(proto::StatusResponse {
        cluster_id: "c-1".into(),
        shard_count: 16,
        ..Default::default()
    });
    let table = status.table();
    assert!(
        table.starts_with("cluster_id               c-1\n"),
        "{table}"
    );
    assert!(table.contains("coordinator_leader_id    -\n"), "{table}");
    assert!(
        table.contains("storage                  disk (durable)\n"),
        "{table}"
    );
    assert_eq!(status.json()["shard_count"], 16);
    assert_eq!(status.json()["durable"], true);
    let in_memory = Report::Status(proto::StatusResponse {
        coordinator_storage_engine: "disk".into(),
        in_memory_nodes: 3,
        ..Default::default()
    });
    assert!(
        in_memory.table().contains("IN MEMORY, NOT DURABLE"),
        "{}",
        in_memory.table()
    );
    assert_eq!(in_memory.json()["durable"], false);
}

#[test]
fn json_is_one_document() {
    let report = Report::Scan {
        kvs: vec![kv(b"a", b"1", 1, 5)],
        more: true,
        keys_only: false,
        revision: 77,
    };
    let text = report.render(OutputFormat::Json);
    let parsed: Value = serde_json::from_str(&text).expect("one valid JSON document");
    assert_eq!(parsed["more"], true);
    assert_eq!(parsed["revision"], 77);
    assert_eq!(parsed["kvs"][0]["key"], "a");
}
