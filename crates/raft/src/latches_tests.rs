use super::*;

fn keys(names: &[&str]) -> LatchKeys {
    LatchKeys::keys(names.iter().map(|n| n.as_bytes().to_vec()).collect())
}

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(5);

fn fetched(latches: &Arc<Latches>, revision: u64, latch: LatchKeys) -> InFlight {
    let mut flight = latches.register(Revision(revision.saturating_sub(1)), latch);
    flight.set_revision(Revision(revision));
    flight
}

#[tokio::test]
async fn one_writer_per_key_and_the_shard_latch_excludes_all() {
    let latches = Arc::new(Latches::default());
    let mut a = fetched(&latches, 1, keys(&["a"]));
    let mut b = fetched(&latches, 2, keys(&["b"]));
    let mut c = fetched(&latches, 3, keys(&["a", "c"]));
    let mut d = fetched(&latches, 4, LatchKeys::Shard);
    let held_a = a.latch(LONG).await.unwrap();
    let _held_b = b.latch(LONG).await.unwrap();
    assert!(c.latch(SHORT).await.is_err());
    assert!(d.latch(SHORT).await.is_err());
    let waiter = {
        let latches = latches.clone();
        tokio::spawn(async move {
            let mut e = fetched(&latches, 5, keys(&["a"]));
            e.latch(LONG).await.map(|_| ())
        })
    };
    drop(held_a);
    waiter.await.unwrap().unwrap();
}

#[tokio::test]
async fn waiting_writers_of_a_key_are_granted_it_in_timestamp_order() {
    let latches = Arc::new(Latches::default());
    let mut first = fetched(&latches, 1, keys(&["k"]));
    let held = first.latch(LONG).await.unwrap();
    let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    // Queue in an order unrelated to the timestamps.
    let mut waiters = Vec::new();
    for revision in [7, 3, 9, 5] {
        let latches = latches.clone();
        let order_tx = order_tx.clone();
        waiters.push(tokio::spawn(async move {
            let mut flight = fetched(&latches, revision, keys(&["k"]));
            let latched = flight.latch(LONG).await.unwrap();
            assert!(latched.in_order(), "{revision} granted after a higher one");
            order_tx.send(revision).unwrap();
            latched.proposed();
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    held.proposed();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    let mut granted = Vec::new();
    while let Ok(revision) = order.try_recv() {
        granted.push(revision);
    }
    assert_eq!(granted, vec![3, 5, 7, 9]);
}

#[tokio::test]
async fn a_writer_waits_for_writers_of_its_keys_still_fetching_a_possibly_lower_timestamp() {
    let latches = Arc::new(Latches::default());
    let mut low = latches.register(Revision(0), keys(&["k"]));
    let mut unrelated = latches.register(Revision(0), keys(&["x"]));
    let mut high = latches.register(Revision(0), keys(&["k"]));
    // The higher timestamp is known first (its task ran first).
    high.set_revision(Revision(9));
    let high_done = tokio::spawn(async move {
        let latched = high.latch(LONG).await.unwrap();
        let in_order = latched.in_order();
        latched.proposed();
        in_order
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !high_done.is_finished(),
        "granted before a lower writer of k knew its timestamp"
    );
    // A writer whose floor is at or above 7 fetches above it: `low` does not wait for it.
    let mut after = latches.register(Revision(9), keys(&["k"]));
    low.set_revision(Revision(7));
    low.latch(LONG).await.unwrap().proposed();
    assert!(high_done.await.unwrap(), "9 went after 7: in order");
    after.set_revision(Revision(11));
    assert!(after.latch(LONG).await.unwrap().in_order());
    // `unrelated` never blocked anyone and still may go.
    unrelated.set_revision(Revision(8));
    assert!(unrelated.latch(SHORT).await.unwrap().in_order());
}

#[tokio::test]
async fn a_write_that_arrives_after_a_higher_timestamp_was_proposed_is_out_of_order() {
    let latches = Arc::new(Latches::default());
    let mut late = latches.register(Revision(0), keys(&["k", "x"]));
    late.set_revision(Revision(4));
    let mut early = fetched(&latches, 6, keys(&["k"]));
    early.latch(LONG).await.unwrap().proposed();
    // Another key is unaffected.
    let mut other = fetched(&latches, 2, keys(&["x"]));
    assert!(other.latch(LONG).await.unwrap().in_order());
    let mut latched = late.latch(LONG).await.unwrap();
    assert!(!latched.in_order());
    // A timestamp fetched while holding the latch is above everything proposed before.
    latched.set_revision(Revision(8));
    assert!(latched.in_order());
    latched.proposed();
    assert_eq!(late.revision(), Some(Revision(8)));
}

#[tokio::test]
async fn a_shard_wide_write_must_be_above_every_proposed_write_and_key_writes_above_it() {
    let latches = Arc::new(Latches::default());
    let mut a = fetched(&latches, 10, keys(&["a"]));
    a.latch(LONG).await.unwrap().proposed();
    let mut shard = fetched(&latches, 7, LatchKeys::Shard);
    let mut latched = shard.latch(LONG).await.unwrap();
    assert!(!latched.in_order());
    latched.set_revision(Revision(12));
    assert!(latched.in_order());
    latched.proposed();
    let mut b = fetched(&latches, 11, keys(&["b"]));
    assert!(!b.latch(LONG).await.unwrap().in_order());
}

#[tokio::test]
async fn a_shard_wide_waiter_holds_back_later_key_writers_but_not_earlier_ones() {
    let latches = Arc::new(Latches::default());
    let mut holder = fetched(&latches, 1, keys(&["a"]));
    let held = holder.latch(LONG).await.unwrap();
    let shard_waiter = {
        let latches = latches.clone();
        tokio::spawn(async move {
            let mut flight = fetched(&latches, 5, LatchKeys::Shard);
            flight.latch(LONG).await.map(|_| ())
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut earlier = fetched(&latches, 3, keys(&["b"]));
    earlier.latch(SHORT).await.unwrap();
    let mut later = fetched(&latches, 8, keys(&["c"]));
    assert!(later.latch(SHORT).await.is_err());
    drop(held);
    shard_waiter.await.unwrap().unwrap();
    later.latch(SHORT).await.unwrap();
}

#[tokio::test]
async fn a_waiter_that_gives_up_or_is_dropped_does_not_block_later_writers() {
    let latches = Arc::new(Latches::default());
    let mut holder = fetched(&latches, 1, keys(&["k"]));
    let held = holder.latch(LONG).await.unwrap();
    // Times out while lowest in the queue.
    let mut low = fetched(&latches, 2, keys(&["k"]));
    assert!(low.latch(SHORT).await.is_err());
    // Dropped (its request went away) while lowest in the queue.
    let dropped = {
        let latches = latches.clone();
        tokio::spawn(async move {
            let mut flight = fetched(&latches, 3, keys(&["k"]));
            let _ = flight.latch(LONG).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    dropped.abort();
    let _ = dropped.await;
    drop(held);
    let mut next = fetched(&latches, 4, keys(&["k"]));
    next.latch(SHORT).await.unwrap();
}

#[tokio::test]
async fn proposing_frees_the_keys_while_reads_still_wait_for_the_write() {
    let latches = Arc::new(Latches::default());
    let mut first = fetched(&latches, 5, keys(&["a"]));
    first.latch(LONG).await.unwrap().proposed();
    let mut second = fetched(&latches, 9, keys(&["a"]));
    second.latch(SHORT).await.unwrap().proposed();
    assert_eq!(latches.in_flight(), 2);
    assert!(latches
        .wait_for_in_flight(Revision(5), SHORT)
        .await
        .is_err());
    drop(first);
    latches
        .wait_for_in_flight(Revision(5), SHORT)
        .await
        .unwrap();
    assert!(latches
        .wait_for_in_flight(Revision(9), SHORT)
        .await
        .is_err());
    drop(second);
    latches
        .wait_for_in_flight(Revision(9), SHORT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_read_waits_for_writes_at_or_below_it_and_for_unknown_ones_not_for_later_ones() {
    let latches = Arc::new(Latches::default());
    let below = fetched(&latches, 5, keys(&["a"]));
    let mut unknown = latches.register(Revision(0), keys(&["b"]));
    let above = fetched(&latches, 20, keys(&["c"]));
    // Waits for `below` (5 <= 10) and `unknown` (could still be below 10).
    assert!(latches
        .wait_for_in_flight(Revision(10), SHORT)
        .await
        .is_err());
    drop(below);
    assert!(latches
        .wait_for_in_flight(Revision(10), SHORT)
        .await
        .is_err());
    // Its timestamp turns out above the read: no longer waited for.
    unknown.set_revision(Revision(15));
    latches
        .wait_for_in_flight(Revision(10), SHORT)
        .await
        .unwrap();
    // A write registered after the read began is not waited for.
    let later = latches.register(Revision(20), keys(&["d"]));
    drop(later);
    drop(above);
    assert_eq!(latches.in_flight(), 1);
}

#[tokio::test]
async fn remembered_keys_are_pruned_once_no_unproposed_write_can_be_below_them() {
    let latches = Arc::new(Latches::default());
    // A write registered early (floor 0) keeps every later key remembered.
    let mut slow = latches.register(Revision(0), keys(&["slow"]));
    let count = PROPOSED_KEYS_PRUNE_MIN as u64 + 10;
    for revision in 1..=count {
        let key = format!("k{revision}");
        let mut flight = latches.register(Revision(revision - 1), keys(&[&key]));
        flight.set_revision(Revision(revision));
        flight.latch(LONG).await.unwrap().proposed();
    }
    assert_eq!(latches.remembered_keys(), count as usize);
    // Once it has gone, the next pass forgets every key no unproposed write can be below:
    // the map stays within its bound however many keys are written.
    slow.set_revision(Revision(count + 1));
    slow.latch(LONG).await.unwrap().proposed();
    drop(slow);
    for revision in count + 2..count * 4 {
        let key = format!("j{revision}");
        let mut flight = latches.register(Revision(revision - 1), keys(&[&key]));
        flight.set_revision(Revision(revision));
        flight.latch(LONG).await.unwrap().proposed();
        assert!(latches.remembered_keys() <= 2 * count as usize + 2);
    }
    assert!(
        latches.remembered_keys() <= PROPOSED_KEYS_PRUNE_MIN,
        "{} keys remembered",
        latches.remembered_keys()
    );
}

#[test]
fn latch_keys_name_each_key_once() {
    assert_eq!(keys(&["b", "a", "b"]), keys(&["a", "b"]));
}
