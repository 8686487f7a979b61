//! Hand-written histories: valid ones accepted, and one per anomaly class, reported with the
//! transactions involved.

use super::*;

pub(super) fn append(key: &str, element: u64) -> MicroOp {
    MicroOp::Append {
        key: key.into(),
        element,
    }
}

pub(super) fn read(key: &str, list: &[u64]) -> MicroOp {
    MicroOp::Read {
        key: key.into(),
        observed: Some(list.to_vec()),
    }
}

fn committed(client: u64, call: u64, returned: u64, ops: Vec<MicroOp>) -> Transaction {
    Transaction {
        client,
        ops,
        call,
        outcome: Outcome::Committed { returned },
    }
}

fn aborted(client: u64, call: u64, ops: Vec<MicroOp>) -> Transaction {
    Transaction {
        client,
        ops,
        call,
        outcome: Outcome::Aborted,
    }
}

fn unknown(client: u64, call: u64, ops: Vec<MicroOp>) -> Transaction {
    Transaction {
        client,
        ops,
        call,
        outcome: Outcome::Unknown,
    }
}

/// The report's only kind of anomaly, and the transactions its first anomaly names.
fn only_anomaly(history: &[Transaction]) -> (&'static str, Vec<TxnId>) {
    let report = check_list_append(history);
    assert_eq!(
        report.counts.len(),
        1,
        "one kind of anomaly expected:\n{report}"
    );
    let anomaly = &report.anomalies[0];
    let mut transactions = anomaly.transactions();
    transactions.sort();
    transactions.dedup();
    for id in &transactions {
        assert!(report.involved.contains_key(id), "{id} is printed");
    }
    let text = report.to_string();
    assert!(text.contains(anomaly.name()), "{text}");
    (anomaly.name(), transactions)
}

fn ids(ids: &[usize]) -> Vec<TxnId> {
    ids.iter().map(|id| TxnId(*id)).collect()
}

#[test]
fn a_serial_history_is_valid() {
    let history = [
        committed(1, 0, 10, vec![read("x", &[]), append("x", 1)]),
        committed(2, 20, 30, vec![append("x", 2), append("y", 1)]),
        committed(1, 40, 50, vec![read("x", &[1, 2]), read("y", &[1])]),
        committed(3, 45, 60, vec![append("y", 2), read("y", &[1, 2])]),
        aborted(2, 55, vec![read("x", &[1, 2]), append("x", 3)]),
        // Never seen: it may not have happened.
        unknown(3, 70, vec![append("x", 4)]),
        committed(1, 80, 90, vec![read("x", &[1, 2]), read("y", &[1, 2])]),
    ];
    let report = check_list_append(&history);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.committed, 5);
}

#[test]
fn concurrent_transactions_may_be_ordered_either_way() {
    // T1 and T2 overlap: T2 first, then T1, is a legal order although T1 was called first.
    let history = [
        committed(1, 0, 50, vec![append("x", 1)]),
        committed(2, 10, 20, vec![read("x", &[]), append("y", 1)]),
        committed(3, 60, 70, vec![read("x", &[1]), read("y", &[1])]),
    ];
    let report = check_list_append(&history);
    assert!(report.is_valid(), "{report}");
}

#[test]
fn an_unknown_transaction_seen_counts_as_committed() {
    let history = [
        unknown(1, 0, vec![append("x", 1), append("y", 1)]),
        committed(2, 10, 20, vec![read("x", &[1])]),
        // Called after T1's element was seen: must see T1's other append too, in a serial
        // order; T1 is placed before T1's reader, which returned before this call.
        committed(3, 30, 40, vec![read("y", &[])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!(name, "G-single-realtime");
    assert_eq!(involved, ids(&[0, 1, 2]));
}

#[test]
fn g0_write_cycle() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1), append("y", 1)]),
        committed(2, 0, 10, vec![append("x", 2), append("y", 2)]),
        committed(3, 20, 30, vec![read("x", &[1, 2])]),
        committed(4, 20, 30, vec![read("y", &[2, 1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G0", ids(&[0, 1])));
}

#[test]
fn g1a_aborted_read() {
    let history = [
        aborted(1, 0, vec![append("x", 1)]),
        committed(2, 20, 30, vec![read("x", &[1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G1a", ids(&[0, 1])));
}

#[test]
fn g1b_intermediate_read() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1), append("x", 2)]),
        committed(2, 0, 10, vec![read("x", &[1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G1b", ids(&[0, 1])));
}

#[test]
fn g1c_circular_information_flow() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1), read("y", &[1])]),
        committed(2, 0, 10, vec![append("y", 1), read("x", &[1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G1c", ids(&[0, 1])));
}

#[test]
fn g_single_lost_update() {
    // Both read [1] and appended: one of the updates was made on a state without the other.
    let history = [
        committed(0, 0, 5, vec![append("x", 1)]),
        committed(1, 10, 20, vec![read("x", &[1]), append("x", 2)]),
        committed(2, 10, 20, vec![read("x", &[1]), append("x", 3)]),
        committed(3, 30, 40, vec![read("x", &[1, 2, 3])]),
    ];
    let report = check_list_append(&history);
    assert_eq!(
        report.counts.keys().copied().collect::<Vec<_>>(),
        ["G-single"],
        "{report}"
    );
    let Anomaly::Cycle { steps, .. } = &report.anomalies[0] else {
        panic!("a cycle: {report}");
    };
    let text = report.anomalies[0].to_string();
    assert_eq!(steps.len(), 2, "{text}");
    assert!(
        text.contains("-ww(\"x\")->") && text.contains("-rw(\"x\")->"),
        "{text}"
    );
}

#[test]
fn g2_write_skew() {
    // Each read both keys empty and appended to one: no serial order has both read [].
    let history = [
        committed(
            1,
            0,
            10,
            vec![read("x", &[]), read("y", &[]), append("x", 1)],
        ),
        committed(
            2,
            0,
            10,
            vec![read("x", &[]), read("y", &[]), append("y", 1)],
        ),
        committed(3, 20, 30, vec![read("x", &[1]), read("y", &[1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G2", ids(&[0, 1])));
}

#[test]
fn a_stale_read_violates_strict_serializability() {
    // T2 was called after T1 returned and still did not see T1's append: serializable (T2
    // before T1), not strictly.
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 20, 30, vec![read("x", &[])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G-single-realtime", ids(&[0, 1])));
    // Overlapping, the same reads are fine.
    let overlapping = [
        committed(1, 0, 25, vec![append("x", 1)]),
        committed(2, 20, 30, vec![read("x", &[])]),
    ];
    assert!(check_list_append(&overlapping).is_valid());
}

#[test]
fn a_stale_read_behind_a_later_reader_is_caught() {
    // T3 saw [1 2]; T4, called after T3 returned, saw only [1].
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 0, 10, vec![append("x", 2)]),
        committed(3, 20, 30, vec![read("x", &[1, 2])]),
        committed(4, 40, 50, vec![read("x", &[1])]),
    ];
    let report = check_list_append(&history);
    assert!(report.has("G-single-realtime"), "{report}");
}

#[test]
fn a_duplicate_element_is_reported() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 20, 30, vec![read("x", &[1, 1])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("duplicate-element", ids(&[1])));
}

#[test]
fn a_garbage_element_is_reported() {
    let history = [committed(1, 0, 10, vec![read("x", &[7])])];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("garbage-read", ids(&[0])));
}

#[test]
fn incompatible_orders_are_reported() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 0, 10, vec![append("x", 2)]),
        committed(3, 0, 10, vec![append("x", 3)]),
        committed(4, 20, 30, vec![read("x", &[1, 2, 3])]),
        committed(5, 20, 30, vec![read("x", &[1, 3])]),
    ];
    let report = check_list_append(&history);
    assert!(report.has("incompatible-order"), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("T4 read \"x\" as [1 3], not a prefix of T3's [1 2 3]"),
        "{text}"
    );
}

#[test]
fn an_internal_inconsistency_is_reported() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(
            2,
            20,
            30,
            vec![read("x", &[1]), append("x", 2), read("x", &[1])],
        ),
    ];
    let report = check_list_append(&history);
    assert!(report.has("internal"), "{report}");
}

#[test]
fn a_lost_append_is_caught_by_a_later_read() {
    // T1 committed and returned; a read called later never sees it.
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 0, 10, vec![append("x", 2)]),
        committed(3, 20, 30, vec![read("x", &[2])]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("G-single-realtime", ids(&[0, 2])));
}

#[test]
fn an_element_appended_twice_is_a_malformed_history() {
    let history = [
        committed(1, 0, 10, vec![append("x", 1)]),
        committed(2, 0, 10, vec![append("x", 1)]),
    ];
    let (name, involved) = only_anomaly(&history);
    assert_eq!((name, involved), ("not-unique-append", ids(&[0, 1])));
}

#[test]
fn anomalies_of_one_kind_are_kept_up_to_the_bound() {
    let history: Vec<Transaction> = (0..ANOMALIES_PER_KIND_MAX as u64 + 5)
        .map(|i| committed(i, 0, 10, vec![read(&format!("k{i}"), &[1000 + i])]))
        .collect();
    let report = check_list_append(&history);
    assert_eq!(report.counts["garbage-read"], ANOMALIES_PER_KIND_MAX + 5);
    assert_eq!(report.anomalies.len(), ANOMALIES_PER_KIND_MAX);
}
