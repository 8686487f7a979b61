//! The record stored for one version of a key in the `write` column family.

use crate::error::{MvccError, Result};
use cairn_types::{codec, Revision};
use serde::{Deserialize, Serialize};

/// One version of a key, stored under `mc(key) ++ !revision` where `revision` is the
/// revision (commit timestamp) of the write that made it.
///
/// New kinds are added at the end only (postcard encodes the variant's index, so the bytes of
/// every stored `Put` and `Delete` must not change). Transactions ([`crate::txn`]) add the
/// `Txn*` kinds, which readers treat as `Put`/`Delete` but which remember the transaction's
/// `start_ts` (so the primary's status survives its lock), and `Rollback`, which readers skip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRecord {
    /// The key holds `value` from this revision on.
    Put {
        /// The revision of the write that created the key since its last deletion.
        create_revision: Revision,
        /// Writes since creation: 1 for the creating write.
        version: u64,
        value: Vec<u8>,
    },
    /// The key does not exist from this revision on (a tombstone).
    Delete,
    /// A transaction's put, committed at this revision (its `commit_ts`). Read as `Put`.
    TxnPut {
        /// The transaction's start timestamp: how `commit` and `check_txn_status` find the
        /// outcome of a transaction whose lock is gone.
        start_ts: Revision,
        create_revision: Revision,
        version: u64,
        value: Vec<u8>,
    },
    /// A transaction's delete, committed at this revision. Read as `Delete`. Written even when
    /// the key did not exist, because on the primary it is the transaction's commit record.
    TxnDelete { start_ts: Revision },
    /// The transaction that started at this revision was rolled back on this key: a prewrite
    /// arriving late with this `start_ts` is refused. Stored at `!start_ts`; readers skip it.
    Rollback,
}

impl WriteRecord {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        codec::decode(bytes).map_err(|error| MvccError::corrupt("write record", error))
    }

    /// A tombstone: the key does not exist from this version on.
    pub fn is_delete(&self) -> bool {
        matches!(self, WriteRecord::Delete | WriteRecord::TxnDelete { .. })
    }

    /// Not a version of the key (readers skip it): a rollback marker.
    pub fn is_marker(&self) -> bool {
        matches!(self, WriteRecord::Rollback)
    }

    /// The start timestamp of the transaction that committed this version, if one did.
    pub fn txn_start_ts(&self) -> Option<Revision> {
        match self {
            WriteRecord::TxnPut { start_ts, .. } | WriteRecord::TxnDelete { start_ts } => {
                Some(*start_ts)
            }
            WriteRecord::Put { .. } | WriteRecord::Delete | WriteRecord::Rollback => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_detected() {
        let record = WriteRecord::Put {
            create_revision: Revision(5),
            version: 2,
            value: b"v".to_vec(),
        };
        let mut bytes = record.encode();
        assert_eq!(WriteRecord::decode(&bytes).unwrap(), record);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(WriteRecord::decode(&bytes).is_err());
    }

    /// The bytes of the kinds stored before transactions existed must not change: appending
    /// variants keeps their postcard indexes (Put = 0, Delete = 1).
    #[test]
    fn pre_transaction_encodings_are_unchanged() {
        let put = WriteRecord::Put {
            create_revision: Revision(5),
            version: 2,
            value: b"v".to_vec(),
        };
        assert_eq!(&put.encode()[5..], &[0, 5, 2, 1, b'v']);
        assert_eq!(&WriteRecord::Delete.encode()[5..], &[1]);
        let txn_put = WriteRecord::TxnPut {
            start_ts: Revision(3),
            create_revision: Revision(5),
            version: 2,
            value: b"v".to_vec(),
        };
        assert_eq!(&txn_put.encode()[5..], &[2, 3, 5, 2, 1, b'v']);
        assert_eq!(
            &WriteRecord::TxnDelete {
                start_ts: Revision(3)
            }
            .encode()[5..],
            &[3, 3]
        );
        assert_eq!(&WriteRecord::Rollback.encode()[5..], &[4]);
        for record in [txn_put, WriteRecord::Rollback] {
            assert_eq!(WriteRecord::decode(&record.encode()).unwrap(), record);
        }
    }
}
