//! Snapshot files (crates/raft/src/snapshot_file.rs): a snapshot a peer streams in is written
//! to disk chunk by chunk, then read back whole (`SnapshotReader::verify`) before anything is
//! installed, and read again record by record by the install. This reads the input as such a
//! file. (The stream's first chunk also carries a header payload: see the `raft_payload`
//! target.)
//!
//! Holds: nothing panics, and no record claims more than the file holds without an error; a
//! file that verifies is written again by `SnapshotWriter`, from its header and records, to
//! the same bytes.
//!
//! Input: the file's bytes.

#![no_main]

use cairn_raft::snapshot_file::{SnapshotReader, SnapshotWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = SnapshotReader::from_reader(data) else {
        return;
    };
    let header = reader.header.clone();
    let mut records = Vec::new();
    loop {
        match reader.next_record() {
            Ok(Some(record)) => records.push(record),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    // A whole, checked file: the writer makes the same bytes from what was read.
    let verified = SnapshotReader::from_reader(data)
        .and_then(SnapshotReader::verify_all)
        .expect("a file read to its trailer verifies");
    assert_eq!(verified, (header.clone(), records.len() as u64));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("again.snap");
    let mut writer = SnapshotWriter::create(&path, &header).expect("create a snapshot file");
    for (kind, key, value) in &records {
        writer.record(*kind, key, value).expect("write a record");
    }
    assert_eq!(writer.finish().unwrap(), records.len() as u64);
    let written = std::fs::read(&path).expect("read the written file");
    // Trailing bytes after the checksum are not read, so compare what was read.
    assert_eq!(written, data[..written.len().min(data.len())]);
});
