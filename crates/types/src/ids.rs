//! Newtype ids, so that a shard id can never be passed where a node id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// A storage node. Allocated once and never reused; 0 is never a valid node id.
    NodeId,
    "node-"
);
id_type!(
    /// A hash partition of the key space, `0..shard_count`.
    ShardId,
    "shard-"
);
impl ShardId {
    /// Shard ids are `0..shard_count` with a `u32` shard count; anything above is invalid.
    pub const MAX: ShardId = ShardId(u32::MAX as u64 - 1);

    pub fn is_valid(self) -> bool {
        self <= Self::MAX
    }
}

id_type!(
    /// A point in the cluster's one order of writes. Under a coordinator it is a timestamp
    /// from the oracle (see [`crate::TimestampParts`]): unique per write, rising in real time
    /// across every shard. A shard without an oracle (the coordinator's own metadata group, a
    /// statically bootstrapped node) counts its own revisions from 1. 0 means "none" or
    /// "latest", depending on the field.
    Revision,
    "rev-"
);
id_type!(
    /// A client process, chosen at random by the client for exactly-once writes; never 0.
    ClientId,
    "client-"
);
id_type!(
    /// The per-client number of a write, starting at 1.
    Sequence,
    "seq-"
);

impl Revision {
    /// Reads "at the latest revision" (every applied version is visible).
    pub const LATEST: Revision = Revision(u64::MAX);
}
