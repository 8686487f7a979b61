use super::*;
use crate::command::{Command, Put, WriteOp};
use crate::kv::KvView;
use crate::type_config::Entry;
use cairn_types::NodeId;
use openraft::impls::leader_id_adv::LeaderId;
use std::path::Path;

fn open(dir: &Path) -> (Arc<DB>, ShardStateMachine) {
    let db =
        crate::database::open_database(&dir.join("db"), &Default::default(), Default::default())
            .unwrap();
    let machine = ShardStateMachine::open(
        db.clone(),
        ShardId(3),
        dir.join("snapshots"),
        SessionLimits::default(),
        Arc::default(),
    )
    .unwrap();
    (db, machine)
}

fn put_entry(index: u64, key: &str) -> Entry {
    let command = Command {
        write_id: None,
        proposed_at_ms: 1,
        op: WriteOp::Put(Put {
            key: key.into(),
            value: b"v".to_vec(),
            prev_kv: false,
            condition: None,
        }),
        revision: Default::default(),
        trace: None,
    };
    Entry::new_normal(
        LogId::new(
            LeaderId {
                term: 1,
                node_id: NodeId(1),
            },
            index,
        ),
        command,
    )
}

/// Applies one entry as its own batch, as a run of one entry would be.
fn apply_now(machine: &mut ShardStateMachine, entry: Entry) -> CommandResponse {
    let mut pending = PendingApply::default();
    pending.note(&entry);
    let response = machine.apply_entry(entry, &mut pending).unwrap();
    machine.write_pending(&mut pending).unwrap();
    response
}

fn log_id(index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term: 1,
            node_id: NodeId(1),
        },
        index,
    )
}

fn command_entry(index: u64, sequence: Option<u64>, op: WriteOp) -> Entry {
    let write_id = sequence.map(|sequence| crate::command::WriteId {
        client: cairn_types::ClientId(7),
        sequence: cairn_types::Sequence(sequence),
        first_incomplete: cairn_types::Sequence(1),
    });
    let command = Command {
        write_id,
        proposed_at_ms: 1,
        op,
        revision: Default::default(),
        trace: None,
    };
    Entry::new_normal(log_id(index), command)
}

fn put_op(key: &str, value: &str) -> WriteOp {
    WriteOp::Put(Put {
        key: key.into(),
        value: value.into(),
        prev_kv: false,
        condition: None,
    })
}

#[tokio::test]
async fn a_run_of_entries_reads_what_earlier_entries_of_the_run_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut machine) = open(dir.path());
    let range_txn = WriteOp::Txn(crate::command::Txn {
        compares: vec![],
        success: vec![
            crate::command::TxnOp::Range(crate::command::Range {
                start: vec![],
                end: None,
                limit: 10,
                keys_only: true,
                count_only: false,
            }),
            crate::command::TxnOp::Put(Put {
                key: b"c".to_vec(),
                value: b"3".to_vec(),
                prev_kv: false,
                condition: None,
            }),
        ],
        failure: vec![],
    });
    let run = vec![
        command_entry(1, Some(1), put_op("a", "1")),
        command_entry(2, None, put_op("b", "1")),
        // The same key again: must see version 1 written by entry 1.
        command_entry(3, Some(2), put_op("a", "2")),
        // A retry of sequence 2 in the same run: answered from the session, not applied.
        command_entry(4, Some(2), put_op("a", "2")),
        command_entry(5, None, range_txn),
        command_entry(6, None, put_op("b", "2")),
    ];
    let stream = futures::stream::iter(run.into_iter().map(|entry| Ok((entry, None))));
    machine.apply(stream).await.unwrap();

    let view = KvView::new(&db, ShardId(3));
    let a = view.get(b"a", false).unwrap().unwrap();
    assert_eq!(
        (a.version, a.create_revision, a.mod_revision),
        (2, Revision(1), Revision(3))
    );
    let b = view.get(b"b", false).unwrap().unwrap();
    assert_eq!(
        (b.version, b.create_revision, b.mod_revision),
        (2, Revision(2), Revision(5))
    );
    assert_eq!(
        view.get(b"c", false).unwrap().unwrap().mod_revision,
        Revision(4)
    );
    // Five changing commands: the retry changed nothing.
    assert_eq!(read_revision(&db, None, ShardId(3)).unwrap(), Revision(5));
    assert_eq!(machine.last_applied, Some(log_id(6)));

    // Everything reached the database: a reopened machine agrees.
    drop(machine);
    let reopened = ShardStateMachine::open(
        db.clone(),
        ShardId(3),
        dir.path().join("snapshots"),
        SessionLimits::default(),
        Arc::default(),
    )
    .unwrap();
    assert_eq!(reopened.last_applied, Some(log_id(6)));
    assert_eq!(reopened.revision, Revision(5));
}

/// Blind puts and deletes of hot keys, applied as one run (the cache answers, and no entry
/// waits for the batch to be written) and applied one entry at a time (every key read from
/// RocksDB), leave identical keys, versions and revisions; a conditional put between them
/// still reads the value.
#[tokio::test]
async fn hot_keys_in_one_run_get_the_versions_they_get_one_at_a_time() {
    let delete = |key: &str| {
        WriteOp::Delete(crate::command::Delete {
            key: key.into(),
            prev_kv: false,
        })
    };
    let conditional = WriteOp::Put(Put {
        key: b"h".to_vec(),
        value: b"if".to_vec(),
        prev_kv: true,
        condition: Some(crate::command::PutCondition::ValueEquals(b"4".to_vec())),
    });
    let ops = vec![
        put_op("h", "1"),
        put_op("h", "2"),
        delete("h"),
        delete("h"),
        put_op("h", "3"),
        put_op("g", "1"),
        put_op("h", "4"),
        conditional,
        put_op("g", "2"),
        delete("g"),
        put_op("h", "5"),
    ];
    let entries = |ops: &[WriteOp]| -> Vec<Entry> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| command_entry(i as u64 + 1, None, op.clone()))
            .collect()
    };
    let run_dir = tempfile::tempdir().unwrap();
    let (run_db, mut run) = open(run_dir.path());
    let stream = futures::stream::iter(entries(&ops).into_iter().map(|entry| Ok((entry, None))));
    run.apply(stream).await.unwrap();
    let one_dir = tempfile::tempdir().unwrap();
    let (one_db, mut one) = open(one_dir.path());
    for entry in entries(&ops) {
        apply_now(&mut one, entry);
        // Every entry reads RocksDB, as a replica with a cold cache does.
        one.newest.clear();
    }
    for key in ["g", "h"] {
        let in_run = KvView::new(&run_db, ShardId(3))
            .get(key.as_bytes(), false)
            .unwrap();
        let alone = KvView::new(&one_db, ShardId(3))
            .get(key.as_bytes(), false)
            .unwrap();
        assert_eq!(in_run, alone, "key {key}");
    }
    let h = KvView::new(&run_db, ShardId(3))
        .get(b"h", false)
        .unwrap()
        .unwrap();
    // The second delete changed nothing (no revision); created again by the put at revision
    // 4; versions 2 (put 4), 3 (the condition held) and 4 (put 5, at revision 10).
    assert_eq!(
        (
            h.value.as_slice(),
            h.create_revision,
            h.version,
            h.mod_revision
        ),
        (&b"5"[..], Revision(4), 4, Revision(10))
    );
    assert_eq!(
        read_revision(&run_db, None, ShardId(3)).unwrap(),
        Revision(10)
    );
    assert_eq!(run.revision, one.revision);
}

fn keys_of(db: &DB) -> Vec<Vec<u8>> {
    let range = crate::command::Range {
        start: vec![],
        end: None,
        limit: 1000,
        keys_only: true,
        count_only: false,
    };
    KvView::new(db, ShardId(3))
        .range(&range, Revision(0))
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

/// A node that dies in the middle of installing a snapshot finishes the install when it
/// opens the state machine again: no mix of old and new keys survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_install_is_redone_on_open() {
    let source_dir = tempfile::tempdir().unwrap();
    let (source_db, mut source) = open(source_dir.path());
    for (index, key) in [(1, "a"), (2, "b"), (3, "c")] {
        apply_now(&mut source, put_entry(index, key));
    }
    let built = source.snapshots.build().unwrap();
    assert_eq!(
        keys_of(&source_db),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );

    tracing::info!(
        "--- the target has other keys, and crashes after the marker and a partial delete"
    );
    let target_dir = tempfile::tempdir().unwrap();
    {
        let (db, mut target) = open(target_dir.path());
        apply_now(&mut target, put_entry(1, "old-1"));
        apply_now(&mut target, put_entry(2, "old-2"));
        std::fs::copy(
            source_dir.path().join("snapshots").join(&built.file_name),
            target.snapshots.dir.join(&built.file_name),
        )
        .unwrap();
        let marker = CurrentSnapshot {
            meta: built.meta.clone(),
            file_name: built.file_name.clone(),
        };
        db.put_cf(
            cf(&db, keys::CF_SM_STATE),
            keys::tagged_key(ShardId(3), keys::TAG_INSTALLING),
            codec::encode(&marker),
        )
        .unwrap();
        db.delete_cf(
            cf(&db, keys::CF_WRITE),
            cairn_mvcc::key::version_key(ShardId(3), b"old-1", Revision(1)),
        )
        .unwrap();
        db.flush_wal(true).unwrap();
    }

    tracing::info!("--- reopening finishes the install");
    let (db, mut target) = open(target_dir.path());
    assert_eq!(keys_of(&db), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    let (applied, _) = target.applied_state().await.unwrap();
    assert_eq!(applied, built.meta.last_log_id);
    assert_eq!(read_revision(&db, None, ShardId(3)).unwrap(), Revision(3));
    assert!(
        read_tag::<CurrentSnapshot>(&db, None, ShardId(3), keys::TAG_INSTALLING)
            .unwrap()
            .is_none()
    );
    let current = target
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("the installed snapshot is current");
    assert_eq!(current.meta, built.meta);
}

/// A corrupt snapshot is refused before anything is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_snapshot_is_refused_without_touching_the_shard() {
    let source_dir = tempfile::tempdir().unwrap();
    let (_, mut source) = open(source_dir.path());
    apply_now(&mut source, put_entry(1, "new"));
    let built = source.snapshots.build().unwrap();
    let path = source_dir.path().join("snapshots").join(&built.file_name);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let corrupt = source_dir.path().join("corrupt.snap");
    std::fs::write(&corrupt, bytes).unwrap();

    let target_dir = tempfile::tempdir().unwrap();
    let (db, mut target) = open(target_dir.path());
    apply_now(&mut target, put_entry(1, "kept"));
    let result = target
        .install_snapshot(&built.meta, SnapshotFile { path: corrupt })
        .await;
    assert!(result.is_err());
    assert_eq!(keys_of(&db), [b"kept".to_vec()]);
}
