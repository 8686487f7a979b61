use super::*;
use crate::txn::tests::{compare_value, compare_version, delete, get, kv, put, range};

const START: u64 = 100;
const COMMIT: u64 = 200;

fn snapshot(keys: &[(&str, Option<pb::KeyValue>)]) -> Snapshot {
    Snapshot {
        revision: START,
        keys: keys
            .iter()
            .map(|(key, kv)| (key.as_bytes().to_vec(), kv.clone()))
            .collect(),
        ranges: BTreeMap::new(),
    }
}

fn txn(
    compare: Vec<pb::Compare>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    pb::TxnRequest {
        compare,
        success,
        failure,
        write_id: None,
    }
}

fn get_of(response: &pb::ResponseOp) -> Option<&pb::KeyValue> {
    match &response.response {
        Some(Response::Get(get)) => get.kv.as_ref(),
        other => panic!("not a get: {other:?}"),
    }
}

#[test]
fn compares_choose_the_branch_and_a_missing_key_compares_as_zero() {
    let read = snapshot(&[("a", Some(kv("a", "1", 50, 2))), ("b", None)]);
    let holds = txn(
        vec![compare_value("a", "1"), compare_version("b", 0)],
        vec![put("a", "2")],
        vec![get("a")],
    );
    let evaluation = evaluate(&holds, &read, COMMIT, 10).unwrap();
    assert!(evaluation.succeeded);
    assert_eq!(evaluation.writes.len(), 1);
    let fails = txn(
        vec![compare_value("a", "9")],
        vec![put("a", "2")],
        vec![get("a")],
    );
    let evaluation = evaluate(&fails, &read, START, 10).unwrap();
    assert!(!evaluation.succeeded);
    assert!(evaluation.writes.is_empty());
    assert_eq!(get_of(&evaluation.responses[0]).unwrap().value, b"1");
}

#[test]
fn a_get_after_a_put_in_the_same_branch_sees_the_put() {
    let read = snapshot(&[("a", Some(kv("a", "old", 50, 3)))]);
    let t = txn(vec![], vec![get("a"), put("a", "new"), get("a")], vec![]);
    let evaluation = evaluate(&t, &read, COMMIT, 10).unwrap();
    assert_eq!(get_of(&evaluation.responses[0]).unwrap().value, b"old");
    match &evaluation.responses[1].response {
        Some(Response::Put(put)) => {
            assert_eq!(put.revision, COMMIT);
            assert_eq!(put.prev_kv.as_ref().unwrap().value, b"old");
        }
        other => panic!("{other:?}"),
    }
    let after = get_of(&evaluation.responses[2]).unwrap();
    assert_eq!(after.value, b"new");
    assert_eq!(after.mod_revision, COMMIT);
    assert_eq!(after.version, 4);
    assert_eq!(after.create_revision, 48);
    assert_eq!(
        evaluation.writes[b"a".as_slice()],
        Write::Put(b"new".to_vec())
    );
    assert!(
        evaluation.reads.is_empty(),
        "a written key is not read-locked too"
    );
}

#[test]
fn a_created_key_starts_at_version_one_at_the_commit_revision() {
    let read = snapshot(&[("n", None)]);
    let t = txn(vec![], vec![put("n", "v"), get("n")], vec![]);
    let created = evaluate(&t, &read, COMMIT, 10).unwrap();
    let kv = get_of(&created.responses[1]).unwrap();
    assert_eq!(
        (kv.version, kv.create_revision, kv.mod_revision),
        (1, COMMIT, COMMIT)
    );
}

#[test]
fn a_get_after_a_delete_sees_nothing_and_a_delete_of_nothing_writes_nothing() {
    let read = snapshot(&[("a", Some(kv("a", "1", 50, 1))), ("z", None)]);
    let t = txn(vec![], vec![delete("a"), get("a"), delete("z")], vec![]);
    let evaluation = evaluate(&t, &read, COMMIT, 10).unwrap();
    match &evaluation.responses[0].response {
        Some(Response::Delete(d)) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kv.as_ref().unwrap().value, b"1");
        }
        other => panic!("{other:?}"),
    }
    assert!(get_of(&evaluation.responses[1]).is_none());
    match &evaluation.responses[2].response {
        Some(Response::Delete(d)) => assert_eq!(d.deleted, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(evaluation.writes.len(), 1);
    assert_eq!(evaluation.writes[b"a".as_slice()], Write::Delete);
    assert!(
        evaluation.reads.contains(b"z".as_slice()),
        "the absence of z is depended on"
    );
}

#[test]
fn compared_and_read_keys_are_read_locked() {
    let read = snapshot(&[("c", None), ("g", Some(kv("g", "1", 5, 1))), ("w", None)]);
    let t = txn(
        vec![compare_version("c", 0)],
        vec![get("g"), put("w", "v")],
        vec![],
    );
    let evaluation = evaluate(&t, &read, COMMIT, 10).unwrap();
    let reads: Vec<&[u8]> = evaluation.reads.iter().map(Vec::as_slice).collect();
    assert_eq!(reads, [b"c".as_slice(), b"g".as_slice()]);
}

#[test]
fn keys_only_gets_strip_the_value() {
    let read = snapshot(&[("a", Some(kv("a", "1", 50, 1)))]);
    let mut keys_only = get("a");
    if let Some(Request::Get(get)) = &mut keys_only.request {
        get.keys_only = true;
    }
    let evaluation = evaluate(&txn(vec![], vec![keys_only], vec![]), &read, START, 10).unwrap();
    let kv = get_of(&evaluation.responses[0]).unwrap();
    assert!(kv.value.is_empty() && kv.mod_revision == 50);
}

#[test]
fn a_key_not_read_is_a_bug_not_a_guess() {
    let t = txn(vec![], vec![get("never")], vec![]);
    assert!(matches!(
        evaluate(&t, &snapshot(&[]), START, 10),
        Err(GatewayError::TxnNotRead { .. })
    ));
}

fn range_page(keys: &[(&str, u64)], more: bool) -> pb::RangeResponse {
    pb::RangeResponse {
        revision: START,
        kvs: keys
            .iter()
            .map(|(key, rev)| kv(key, "v", *rev, 1))
            .collect(),
        more,
        continuation: Vec::new(),
        count: keys.len() as u64,
    }
}

fn range_of(response: &pb::ResponseOp) -> &pb::RangeResponse {
    match &response.response {
        Some(Response::Range(range)) => range,
        other => panic!("not a range: {other:?}"),
    }
}

fn keys(page: &pb::RangeResponse) -> Vec<String> {
    page.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

#[test]
fn a_range_after_writes_of_its_branch_sees_them() {
    let mut read = snapshot(&[
        ("k/b", Some(kv("k/b", "v", 10, 1))),
        ("k/c", None),
        ("x", None),
    ]);
    read.ranges
        .insert(2, range_page(&[("k/a", 9), ("k/b", 10)], false));
    let t = txn(
        vec![],
        vec![
            delete("k/b"),
            put("k/c", "new"),
            range("k/", "k0"),
            put("x", "outside"),
        ],
        vec![],
    );
    let evaluation = evaluate(&t, &read, COMMIT, 10).unwrap();
    let page = range_of(&evaluation.responses[2]);
    assert_eq!(keys(page), ["k/a", "k/c"]);
    assert_eq!(page.revision, COMMIT);
    assert_eq!(page.kvs[1].mod_revision, COMMIT);
    assert!(!page.more);
    assert_eq!(page.count, 2);
}

#[test]
fn a_range_page_keeps_its_limit_and_leaves_later_own_writes_to_later_pages() {
    let mut read = snapshot(&[("k/0", None), ("k/z", None)]);
    read.ranges
        .insert(2, range_page(&[("k/a", 9), ("k/b", 10)], true));
    let t = txn(
        vec![],
        vec![
            put("k/0", "first"),
            put("k/z", "past the page"),
            range("k/", "k0"),
        ],
        vec![],
    );
    let evaluation = evaluate(&t, &read, COMMIT, 2).unwrap();
    let page = range_of(&evaluation.responses[2]);
    assert_eq!(keys(page), ["k/0", "k/a"]);
    assert!(page.more);
    assert_eq!(page.continuation, b"k/a");
}

#[test]
fn a_counted_range_counts_own_creations_and_deletions() {
    let mut read = snapshot(&[
        ("k/a", Some(kv("k/a", "v", 9, 1))),
        ("k/n", None),
        ("k/o", None),
        ("k/m", Some(kv("k/m", "v", 9, 1))),
    ]);
    let mut counted = range("k/", "k0");
    if let Some(Request::Range(range)) = &mut counted.request {
        range.count_only = true;
    }
    read.ranges.insert(
        4,
        pb::RangeResponse {
            count: 5,
            ..Default::default()
        },
    );
    let t = txn(
        vec![],
        vec![
            delete("k/a"),
            put("k/n", "new"),
            put("k/o", "new"),
            put("k/m", "again"),
            counted,
        ],
        vec![],
    );
    let evaluation = evaluate(&t, &read, COMMIT, 10).unwrap();
    // 5 - k/a + k/n + k/o; k/m existed already.
    assert_eq!(range_of(&evaluation.responses[4]).count, 6);
}

#[test]
fn the_answer_carries_the_commit_revision() {
    let read = snapshot(&[("a", None)]);
    let t = txn(vec![], vec![put("a", "v")], vec![]);
    let planned = evaluate(&t, &read, START, 10).unwrap();
    let committed = evaluate(&t, &read, COMMIT, 10).unwrap();
    assert_eq!(
        planned.writes, committed.writes,
        "writes do not depend on the revision"
    );
    let response = committed.response(COMMIT);
    assert_eq!(response.revision, COMMIT);
    assert!(response.succeeded);
}
