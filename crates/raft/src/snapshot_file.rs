//! The snapshot file format. A snapshot of a shard is a file, written and read as a stream,
//! so that no shard ever has to fit in memory or in one message.
//!
//! ```text
//! magic "CAIRNSNP" | format u32 LE | header length u32 LE | header (framed, see codec)
//! record*: kind u8 (1 = version, 2 = session, 3 = lock) | key length u32 LE | value length u32 LE | key | value
//! trailer: kind 0 | record count u64 LE | crc32 u32 LE of every byte before the crc
//! ```
//! Keys are relative to the shard (the shard prefix is stripped), so a snapshot can be
//! installed into the same shard on any node.

use crate::codec;
use crate::error::{Result, StorageError};
use cairn_types::{Revision, ShardId};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// 2: MVCC versions (`write` column family) and the compaction point in the header.
const FORMAT: u32 = 2;
/// Refuses absurd lengths in a corrupt file before allocating for them.
const RECORD_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// One record of a snapshot file: its kind, key and value.
pub type Record = (RecordKind, Vec<u8>, Vec<u8>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// One version of a key (`write` column family).
    Version = 1,
    Session = 2,
    /// A transaction lock (`lock` column family).
    Lock = 3,
}

/// Describes the state a snapshot file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub shard: ShardId,
    pub snapshot_id: String,
    pub last_applied_index: u64,
    pub revision: Revision,
    /// The compaction point the versions were kept by: reads below it are refused.
    pub compact_revision: Revision,
}

/// Writes a snapshot file record by record.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    records: u64,
}

impl SnapshotWriter {
    pub fn create(path: &Path, header: &SnapshotHeader) -> Result<Self> {
        let file = File::create(path)?;
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            records: 0,
        };
        let encoded = codec::encode(header);
        writer.write_all(MAGIC)?;
        writer.write_all(&FORMAT.to_le_bytes())?;
        writer.write_all(&(encoded.len() as u32).to_le_bytes())?;
        writer.write_all(&encoded)?;
        Ok(writer)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)?;
        Ok(())
    }

    pub fn record(&mut self, kind: RecordKind, key: &[u8], value: &[u8]) -> Result<()> {
        self.write_all(&[kind as u8])?;
        self.write_all(&(key.len() as u32).to_le_bytes())?;
        self.write_all(&(value.len() as u32).to_le_bytes())?;
        self.write_all(key)?;
        self.write_all(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer and makes the file durable.
    pub fn finish(mut self) -> Result<u64> {
        self.write_all(&[0u8])?;
        self.write_all(&self.records.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        let file = self.out.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(self.records)
    }
}

/// Reads a snapshot file. [`SnapshotReader::verify`] checks the whole file first, so that an
/// install never starts on a file that turns out to be truncated or corrupt half way.
///
/// The input is any reader ([`SnapshotReader::from_reader`]) so that the fuzz target can read
/// a snapshot from bytes in memory; the node reads files ([`SnapshotReader::open`]).
pub struct SnapshotReader<R: Read = BufReader<File>> {
    input: R,
    crc: crc32fast::Hasher,
    /// Records read so far, checked against the trailer's count.
    records: u64,
    pub header: SnapshotHeader,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        Self::from_reader(BufReader::with_capacity(1 << 20, file))
    }

    /// Reads the whole file and checks its checksum; returns the header and record count.
    pub fn verify(path: &Path) -> Result<(SnapshotHeader, u64)> {
        Self::open(path)?.verify_all()
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic, the format and the header from `input`.
    pub fn from_reader(input: R) -> Result<Self> {
        let mut reader = Self {
            input,
            crc: crc32fast::Hasher::new(),
            records: 0,
            header: SnapshotHeader {
                shard: ShardId(0),
                snapshot_id: String::new(),
                last_applied_index: 0,
                revision: Revision(0),
                compact_revision: Revision(0),
            },
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(StorageError::Snapshot(
                "not a Cairn snapshot file (bad magic)".into(),
            ));
        }
        let format = reader.read_u32()?;
        if format != FORMAT {
            return Err(StorageError::Snapshot(format!(
                "unknown snapshot format {format}"
            )));
        }
        let header_len = reader.read_u32()?;
        let header_bytes = reader.read_vec(header_len)?;
        reader.header =
            codec::decode(&header_bytes).map_err(StorageError::corrupt("snapshot header"))?;
        Ok(reader)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input
            .read_exact(buf)
            .map_err(|error| StorageError::Snapshot(format!("truncated snapshot file: {error}")))?;
        self.crc.update(buf);
        Ok(())
    }

    fn read_u32(&mut self) -> Result<u32> {
        let mut bytes = [0u8; 4];
        self.read_exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn read_vec(&mut self, len: u32) -> Result<Vec<u8>> {
        if len > RECORD_BYTES_MAX {
            return Err(StorageError::Snapshot(format!(
                "record of {len} bytes is too large"
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// The next record, or `None` after the trailer has been read and checked.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let mut kind = [0u8; 1];
        self.read_exact(&mut kind)?;
        let kind = match kind[0] {
            0 => {
                let mut count = [0u8; 8];
                self.read_exact(&mut count)?;
                let computed = self.crc.clone().finalize();
                let mut stored = [0u8; 4];
                self.input.read_exact(&mut stored).map_err(|error| {
                    StorageError::Snapshot(format!("truncated snapshot trailer: {error}"))
                })?;
                if u32::from_le_bytes(stored) != computed {
                    return Err(StorageError::Snapshot("snapshot checksum mismatch".into()));
                }
                let count = u64::from_le_bytes(count);
                if count != self.records {
                    return Err(StorageError::Snapshot(format!(
                        "snapshot trailer counts {count} records, the file holds {}",
                        self.records
                    )));
                }
                return Ok(None);
            }
            1 => RecordKind::Version,
            3 => RecordKind::Lock,
            2 => RecordKind::Session,
            other => {
                return Err(StorageError::Snapshot(format!(
                    "unknown record kind {other}"
                )))
            }
        };
        let key_len = self.read_u32()?;
        let value_len = self.read_u32()?;
        let key = self.read_vec(key_len)?;
        let value = self.read_vec(value_len)?;
        self.records += 1;
        Ok(Some((kind, key, value)))
    }

    /// Reads every record to the trailer and checks the checksum; returns the header and the
    /// record count.
    pub fn verify_all(mut self) -> Result<(SnapshotHeader, u64)> {
        let mut records = 0;
        while self.next_record()?.is_some() {
            records += 1;
        }
        Ok((self.header, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            shard: ShardId(3),
            snapshot_id: "3-7-100".into(),
            last_applied_index: 100,
            revision: Revision(42),
            compact_revision: Revision(7),
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut writer = SnapshotWriter::create(&path, &header()).unwrap();
        writer.record(RecordKind::Version, b"a", b"1").unwrap();
        writer
            .record(RecordKind::Session, &[0; 8], b"head")
            .unwrap();
        assert_eq!(writer.finish().unwrap(), 2);

        let (read_header, count) = SnapshotReader::verify(&path).unwrap();
        assert_eq!((read_header, count), (header(), 2));
        let mut reader = SnapshotReader::open(&path).unwrap();
        assert_eq!(
            reader.next_record().unwrap(),
            Some((RecordKind::Version, b"a".to_vec(), b"1".to_vec()))
        );
        assert!(reader.next_record().unwrap().is_some());
        assert!(reader.next_record().unwrap().is_none());
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut writer = SnapshotWriter::create(&path, &header()).unwrap();
        writer
            .record(RecordKind::Version, b"key", b"value")
            .unwrap();
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let mut flipped = bytes.clone();
        let at = flipped.len() - 10;
        flipped[at] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        assert!(SnapshotReader::verify(&path).is_err());

        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(SnapshotReader::verify(&path).is_err());
    }

    /// Found by the `snapshot_file` fuzz target (it solved the checksum; the input is
    /// fuzz/corpus/snapshot_file/regression-record-count): a trailer whose record count
    /// disagreed with the records in the file was accepted.
    #[test]
    fn a_trailer_counting_other_records_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut writer = SnapshotWriter::create(&path, &header()).unwrap();
        writer.record(RecordKind::Version, b"a", b"1").unwrap();
        writer.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // The count is the 8 bytes before the checksum; recompute the checksum over it.
        let count_at = bytes.len() - 4 - 8;
        bytes[count_at..count_at + 8].copy_from_slice(&2u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..bytes.len() - 4]);
        let crc_at = bytes.len() - 4;
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let error = SnapshotReader::from_reader(bytes.as_slice())
            .and_then(SnapshotReader::verify_all)
            .unwrap_err();
        assert!(error.to_string().contains("counts 2 records"), "{error}");
    }
}
