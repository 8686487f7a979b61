//! Property tests: the MVCC rules over an in-memory view agree with a model that keeps every
//! write in a list, for reads at any revision, ranges and paging, and after compaction.
//!
//! Writes are generated in revision order per key but applied with the keys interleaved at
//! random, as a shard applies them (key latches order the writes of one key; writes to
//! different keys may reach the log out of revision order).

use cairn_mvcc::compaction::{CompactionFilter, Decision};
use cairn_mvcc::key::{self, VersionKey};
use cairn_mvcc::{
    ColumnFamily, KnownNewest, MemoryView, Mutation, MvccReader, NewestMeta, RangeBounds,
    RangeOptions, Version, VersionWriter,
};
use cairn_types::{Revision, ShardId};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const SHARD: ShardId = ShardId(7);
/// Keys chosen to stress the encoding: empty-looking bytes, zeros, 0xff, prefixes of others.
const KEYS: [&[u8]; 8] = [
    b"\x00",
    b"\x00\x00",
    b"a",
    b"a\x00",
    b"a\x00b",
    b"ab",
    b"b",
    b"\xff\xff",
];

#[derive(Clone, Debug)]
struct Write {
    key: usize,
    revision: Revision,
    /// `None` deletes.
    value: Option<Vec<u8>>,
}

/// Every applied write, and the rules spelled out plainly over them.
#[derive(Default)]
struct Model {
    writes: Vec<Write>,
}

impl Model {
    /// Whether the key exists just before `revision` (what a write at `revision` finds).
    fn exists_before(&self, key: usize, revision: Revision) -> bool {
        self.get(key, Revision(revision.0 - 1)).is_some()
    }

    fn get(&self, key: usize, at: Revision) -> Option<Version> {
        let mut history: Vec<&Write> = self
            .writes
            .iter()
            .filter(|w| w.key == key && w.revision <= at)
            .collect();
        history.sort_by_key(|w| w.revision);
        let last = history.last()?;
        let value = last.value.clone()?;
        // The life of the key: the puts since its last delete.
        let life: Vec<&&Write> = history
            .iter()
            .rev()
            .take_while(|w| w.value.is_some())
            .collect();
        Some(Version {
            key: KEYS[key].to_vec(),
            value,
            create_revision: life.last().expect("at least the last put").revision,
            mod_revision: last.revision,
            version: life.len() as u64,
        })
    }

    fn range(&self, bounds: &RangeBounds, at: Revision) -> Vec<Version> {
        let mut out: Vec<Version> = (0..KEYS.len())
            .filter(|&k| {
                KEYS[k] >= bounds.start.as_slice()
                    && bounds
                        .end
                        .as_ref()
                        .is_none_or(|end| KEYS[k] < end.as_slice())
            })
            .filter_map(|k| self.get(k, at))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn plan() -> impl Strategy<Value = Vec<Write>> {
    // (key, delete?, value, revision gap, interleaving choice) per write.
    prop::collection::vec(
        (
            0..KEYS.len(),
            prop::bool::weighted(0.25),
            prop::collection::vec(any::<u8>(), 0..4),
            1u64..5,
        ),
        1..60,
    )
    .prop_map(|raw| {
        let mut revision = 0;
        raw.into_iter()
            .map(|(key, delete, value, gap)| {
                revision += gap;
                Write {
                    key,
                    revision: Revision(revision),
                    value: (!delete).then_some(value),
                }
            })
            .collect()
    })
}

/// The writes in an apply order that keeps each key's writes in revision order.
fn interleave(writes: &[Write], choices: &[usize]) -> Vec<Write> {
    let mut queues: BTreeMap<usize, std::collections::VecDeque<Write>> = BTreeMap::new();
    for write in writes {
        queues
            .entry(write.key)
            .or_default()
            .push_back(write.clone());
    }
    let mut out = Vec::with_capacity(writes.len());
    let mut choice = choices.iter().cycle();
    while !queues.is_empty() {
        let keys: Vec<usize> = queues.keys().copied().collect();
        let key = keys[choice.next().copied().unwrap_or(0) % keys.len()];
        let queue = queues.get_mut(&key).expect("listed");
        out.push(queue.pop_front().expect("non-empty"));
        if queue.is_empty() {
            queues.remove(&key);
        }
    }
    out
}

/// Applies `write` through the rules; returns whether it changed anything.
fn apply(view: &mut MemoryView, model: &mut Model, write: &Write) -> bool {
    let mut writer = VersionWriter::new(&*view, SHARD, write.revision);
    let key = KEYS[write.key];
    assert_eq!(writer.refusal([key], Revision(0)).unwrap(), None);
    let changed = match &write.value {
        Some(value) => {
            writer.put(key, value.clone()).unwrap();
            true
        }
        None => writer.delete(key).unwrap(),
    };
    assert_eq!(changed, writer.changed());
    let mutations = writer.into_mutations();
    view.apply(mutations);
    // The model records a delete only when the key existed (otherwise nothing happened).
    if changed {
        assert!(write.value.is_some() || model.exists_before(write.key, write.revision));
        model.writes.push(write.clone());
    } else {
        assert!(!model.exists_before(write.key, write.revision));
    }
    changed
}

fn read_points(model: &Model) -> Vec<Revision> {
    let mut points = vec![Revision(0), Revision::LATEST];
    for write in &model.writes {
        points.extend([
            Revision(write.revision.0 - 1),
            write.revision,
            Revision(write.revision.0 + 1),
        ]);
    }
    points
}

fn assert_reads_match(view: &MemoryView, model: &Model, at: Revision) {
    let reader = MvccReader::new(view, SHARD);
    for (key, name) in KEYS.iter().enumerate() {
        assert_eq!(
            reader.get(name, at, false).unwrap(),
            model.get(key, at),
            "key {key} at {at}"
        );
    }
    let all = RangeBounds {
        start: Vec::new(),
        end: None,
    };
    let options = RangeOptions {
        limit: 100,
        keys_only: false,
        count_only: false,
    };
    let page = reader.range(&all, at, options).unwrap();
    let expected = model.range(&all, at);
    assert_eq!(page.versions, expected, "range at {at}");
    assert!(!page.more);
    let counted = reader
        .range(
            &all,
            at,
            RangeOptions {
                count_only: true,
                ..options
            },
        )
        .unwrap();
    assert_eq!(counted.count, expected.len() as u64);
}

/// Pages of `limit` keys, each resuming after the last key of the previous one.
fn paged(view: &MemoryView, bounds: &RangeBounds, at: Revision, limit: u64) -> Vec<Version> {
    let reader = MvccReader::new(view, SHARD);
    let mut out: Vec<Version> = Vec::new();
    let mut start = bounds.start.clone();
    loop {
        let page_bounds = RangeBounds {
            start: start.clone(),
            end: bounds.end.clone(),
        };
        let options = RangeOptions {
            limit,
            keys_only: false,
            count_only: false,
        };
        let page = reader.range(&page_bounds, at, options).unwrap();
        assert!(page.versions.len() as u64 <= limit);
        out.extend(page.versions.iter().cloned());
        if !page.more {
            return out;
        }
        start = page
            .versions
            .last()
            .expect("a page with more is full")
            .key
            .clone();
        start.push(0);
    }
}

/// A cache of newest versions learnt only from what writers report, as the storage node's.
#[derive(Default)]
struct Learnt(HashMap<Vec<u8>, Option<NewestMeta>>);

impl KnownNewest for Learnt {
    fn newest_meta(&self, user_key: &[u8]) -> Option<Option<NewestMeta>> {
        self.0.get(user_key).copied()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A writer that takes the newest versions from a cache (learnt from earlier writers,
    /// forgetting some at random) writes exactly what one that reads them writes, and refuses
    /// exactly what it refuses: the cache changes cost, never results.
    #[test]
    fn a_writer_with_known_newest_versions_writes_the_same(
        writes in plan(),
        choices in prop::collection::vec(0usize..8, 1..20),
        forget in prop::collection::vec(any::<bool>(), 1..20),
    ) {
        let mut view = MemoryView::default();
        let mut learnt = Learnt::default();
        let mut forget = forget.iter().cycle();
        for write in interleave(&writes, &choices) {
            let key = KEYS[write.key];
            let plain = VersionWriter::new(&view, SHARD, write.revision);
            let cached = VersionWriter::with_known(&view, SHARD, write.revision, &learnt);
            // A revision at or below the newest is refused by both alike.
            for at in [Revision(write.revision.0 - 1), write.revision] {
                let below = VersionWriter::with_known(&view, SHARD, at, &learnt);
                let read = VersionWriter::new(&view, SHARD, at);
                prop_assert_eq!(below.refusal([key], Revision(0)).unwrap(), read.refusal([key], Revision(0)).unwrap());
            }
            let mut outcomes = Vec::new();
            for mut writer in [plain, cached] {
                prop_assert_eq!(writer.refusal([key], Revision(0)).unwrap(), None);
                match &write.value {
                    Some(value) => writer.put(key, value.clone()).unwrap(),
                    None => { writer.delete(key).unwrap(); }
                }
                let metas = writer.newest_metas();
                outcomes.push((writer.into_mutations(), metas));
            }
            let (cached_mutations, metas) = outcomes.pop().unwrap();
            let (plain_mutations, _) = outcomes.pop().unwrap();
            prop_assert_eq!(&cached_mutations, &plain_mutations);
            view.apply(plain_mutations);
            for (learnt_key, meta) in metas {
                learnt.0.insert(learnt_key, meta);
            }
            if *forget.next().unwrap() {
                learnt.0.remove(key);
            }
        }
    }

    /// Every read at every revision sees what the model says, whatever the apply order.
    #[test]
    fn reads_at_any_revision_match_the_model(writes in plan(), choices in prop::collection::vec(0usize..8, 1..20)) {
        let mut view = MemoryView::default();
        let mut model = Model::default();
        for write in interleave(&writes, &choices) {
            apply(&mut view, &mut model, &write);
        }
        for at in read_points(&model) {
            assert_reads_match(&view, &model, at);
        }
    }

    /// A read at a revision answered before later writes gives the same answer after them.
    #[test]
    fn reads_at_an_old_revision_never_change(writes in plan(), split in 0usize..60) {
        let mut view = MemoryView::default();
        let mut model = Model::default();
        let split = split.min(writes.len());
        for write in &writes[..split] {
            apply(&mut view, &mut model, write);
        }
        let at = writes[..split].last().map_or(Revision(0), |w| w.revision);
        let reader = MvccReader::new(&view, SHARD);
        let all = RangeBounds { start: Vec::new(), end: None };
        let options = RangeOptions { limit: 100, keys_only: false, count_only: false };
        let before = reader.range(&all, at, options).unwrap();
        for write in &writes[split..] {
            apply(&mut view, &mut model, write);
        }
        let after = MvccReader::new(&view, SHARD).range(&all, at, options).unwrap();
        prop_assert_eq!(before, after);
    }

    /// Paging at one revision returns exactly the range, with no key skipped or repeated.
    #[test]
    fn paging_at_one_revision_is_the_whole_range(
        writes in plan(),
        limit in 1u64..4,
        start in 0..KEYS.len(),
        end in prop::option::of(0..KEYS.len()),
        at_index in any::<prop::sample::Index>(),
    ) {
        let mut view = MemoryView::default();
        let mut model = Model::default();
        for write in &writes {
            apply(&mut view, &mut model, write);
        }
        let at = writes[at_index.index(writes.len())].revision;
        let bounds = RangeBounds { start: KEYS[start].to_vec(), end: end.map(|e| KEYS[e].to_vec()) };
        prop_assert_eq!(paged(&view, &bounds, at, limit), model.range(&bounds, at));
    }

    /// After compaction at `C` (whole or partial, as RocksDB runs it level by level), reads at
    /// or above `C` are unchanged, and a whole compaction leaves at most one version at or
    /// below `C` per key.
    #[test]
    fn compaction_keeps_every_read_at_or_above_the_point(
        writes in plan(),
        c_index in any::<prop::sample::Index>(),
        full in any::<bool>(),
        windows in prop::collection::vec((0usize..6, 0usize..6), KEYS.len()),
    ) {
        let mut view = MemoryView::default();
        let mut model = Model::default();
        for write in &writes {
            apply(&mut view, &mut model, write);
        }
        let compact = writes[c_index.index(writes.len())].revision;
        // Which versions this compaction sees: for a partial one, per key, a contiguous run
        // of its versions (newer ones may sit in a level above, older in a level below).
        let mut per_key_position: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = view
            .entries(ColumnFamily::Write)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut filter = CompactionFilter::new(compact, full);
        let mut dropped = Vec::new();
        let mut obsolete_tombstones = Vec::new();
        for (storage_key, value) in &entries {
            let parsed = VersionKey::parse(storage_key).unwrap();
            let key_index = KEYS.iter().position(|k| *k == parsed.user_key().unwrap().as_slice()).unwrap();
            let position = per_key_position.entry(parsed.versions_prefix.to_vec()).or_default();
            let (skip_newest, take) = windows[key_index];
            let seen = full || (*position >= skip_newest && *position < skip_newest + take + 1);
            *position += 1;
            if !seen {
                continue;
            }
            match filter.decide(storage_key, value) {
                Decision::Keep => {}
                Decision::Drop => dropped.push(storage_key.clone()),
                Decision::KeepObsoleteTombstone => obsolete_tombstones.push((storage_key.clone(), parsed.versions_prefix.to_vec())),
            }
        }
        view.apply(dropped.into_iter().map(|key| Mutation::Delete { cf: ColumnFamily::Write, key }));
        // The caller's clean-up of an obsolete tombstone: it and every older version.
        for (low, prefix) in obsolete_tombstones {
            let high = key::after_versions(&prefix);
            view.retain(ColumnFamily::Write, |k, _| !(k.as_slice() >= low.as_slice() && k.as_slice() < high.as_slice()));
        }
        for at in read_points(&model).into_iter().filter(|at| *at >= compact) {
            assert_reads_match(&view, &model, at);
        }
        if full {
            let mut at_or_below: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for (storage_key, _) in view.entries(ColumnFamily::Write) {
                let parsed = VersionKey::parse(storage_key).unwrap();
                if parsed.revision <= compact {
                    *at_or_below.entry(parsed.versions_prefix.to_vec()).or_default() += 1;
                }
            }
            prop_assert!(at_or_below.values().all(|count| *count <= 1));
        }
    }
}

/// A write whose revision is not above a key's newest version is refused, not applied.
#[test]
fn a_revision_not_above_the_newest_version_is_refused() {
    let mut view = MemoryView::default();
    let mut writer = VersionWriter::new(&view, SHARD, Revision(10));
    writer.put(b"k", b"v".to_vec()).unwrap();
    view.apply(writer.into_mutations());
    for revision in [Revision(9), Revision(10)] {
        let writer = VersionWriter::new(&view, SHARD, revision);
        assert!(writer
            .refusal([b"k".as_slice()], Revision(0))
            .unwrap()
            .is_some());
    }
    let writer = VersionWriter::new(&view, SHARD, Revision(11));
    assert_eq!(
        writer
            .refusal([b"k".as_slice(), b"other".as_slice()], Revision(0))
            .unwrap(),
        None
    );
    assert!(writer
        .refusal([b"other".as_slice()], Revision(11))
        .unwrap()
        .is_some());
}
