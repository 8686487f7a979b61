//! Cairn's MVCC rules, in one place and pure: how the versions of a key are laid out as
//! storage keys and records ([`key`], [`record`]), which version a read at revision `R` sees
//! ([`reader`]), what a write at a timestamp adds and when a timestamp must be refused
//! ([`writer`]), and which versions compaction may drop ([`compaction`]).
//!
//! Everything here reads through a [`view::MvccView`] (a sorted key-value snapshot: RocksDB in
//! the storage node, a `BTreeMap` in tests) and returns [`view::Mutation`]s for the caller to
//! write atomically. This crate must not know about Raft, RocksDB, gRPC or clocks; the
//! transaction rules of cross-shard commits (lock records, prewrite, commit, rollback,
//! check-status, resolution, reads that meet locks) are here too ([`txn`]), beside the write
//! records they extend.
//!
//! Layout, per shard (every storage key starts with the shard id, 8 bytes big-endian, so a
//! shard stays one contiguous range of every column family):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `write` | shard, mc(user key), !revision | framed [`record::WriteRecord`] |
//! | `lock`  | shard, mc(user key) | framed [`txn::Lock`], one per key |
//!
//! `mc` is a memcomparable encoding ([`key::encode_user_key`]) so that all versions of one
//! key are contiguous and keys sort as their bytes do; `!revision` is the bitwise complement,
//! big-endian, so the newest version of a key comes first and a read at `R` is one seek to
//! `mc(key) ++ !R`.

pub mod compaction;
pub mod error;
pub mod key;
pub mod overlay;
pub mod reader;
pub mod record;
pub mod txn;
pub mod view;
pub mod writer;

pub use error::{MvccError, Result};
pub use overlay::Overlay;
pub use reader::{MvccReader, RangeBounds, RangeOptions, RangePage, Version};
pub use record::WriteRecord;
pub use txn::{
    Applied, Lock, LockInfo, LockKind, LockOp, Resolution, TxnError, TxnResult, TxnRules, TxnStatus,
};
pub use view::{ColumnFamily, Cursor, MemoryView, Mutation, MvccView};
pub use writer::{
    leadership_refusal, KnownNewest, LiveMeta, NewestMeta, NothingKnown, Refusal, VersionWriter,
};
