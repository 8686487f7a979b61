//! Cairn's storage encoding lives in `cairn-types` (the MVCC crate encodes its records with it
//! too); re-exported here so the storage code keeps one name for it.

pub use cairn_types::codec::*;
