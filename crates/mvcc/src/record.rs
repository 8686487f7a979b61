//! The record stored for one version of a key in the `write` column family.

use crate::error::{MvccError, Result};
use cairn_types::{codec, Revision};
use serde::{Deserialize, Serialize};

/// One version of a key, stored under `mc(key) ++ !revision` where `revision` is the
/// revision (commit timestamp) of the write that made it.
///
/// New kinds are added at the end (postcard encodes the variant's index): transactions add
/// records that readers skip, such as a rollback marker.
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
}

impl WriteRecord {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        codec::decode(bytes).map_err(|error| MvccError::corrupt("write record", error))
    }

    pub fn is_delete(&self) -> bool {
        matches!(self, WriteRecord::Delete)
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
}
