//! Options of single-key calls and ranges, in plain Rust types, with their conversions to
//! the wire messages.

use cairn_proto::kv::v1 as proto;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Observes every write acknowledged before the read started (the default).
    #[default]
    Linearizable,
    /// Served by any replica: possibly stale, never from the future; cheaper.
    Serializable,
}

impl From<Consistency> for proto::Consistency {
    fn from(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Linearizable => proto::Consistency::Linearizable,
            Consistency::Serializable => proto::Consistency::Serializable,
        }
    }
}

/// A precondition on a put: when it does not hold, nothing is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// The key does not exist.
    Absent,
    /// The key's current value equals this.
    ValueEquals(Vec<u8>),
    /// The key's current version equals this (0 = absent).
    VersionEquals(u64),
    /// The key's current mod_revision equals this (0 = absent).
    ModRevisionEquals(u64),
}

impl From<PutCondition> for proto::PutCondition {
    fn from(condition: PutCondition) -> Self {
        use proto::put_condition::Condition;
        let condition = match condition {
            PutCondition::Absent => Condition::Absent(true),
            PutCondition::ValueEquals(value) => Condition::ValueEquals(value),
            PutCondition::VersionEquals(version) => Condition::VersionEquals(version),
            PutCondition::ModRevisionEquals(revision) => Condition::ModRevisionEquals(revision),
        };
        proto::PutCondition {
            condition: Some(condition),
        }
    }
}

/// What [`Client::compare_and_set`](crate::Client::compare_and_set) expects of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// The current value equals this.
    Value(Vec<u8>),
    /// The current version equals this; 0 means the key is absent.
    Version(u64),
    /// The current mod_revision equals this; 0 means the key is absent.
    ModRevision(u64),
}

impl From<Expectation> for PutCondition {
    fn from(expectation: Expectation) -> Self {
        match expectation {
            Expectation::Value(value) => PutCondition::ValueEquals(value),
            Expectation::Version(version) => PutCondition::VersionEquals(version),
            Expectation::ModRevision(revision) => PutCondition::ModRevisionEquals(revision),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Return the key as it was before the put.
    pub prev_kv: bool,
    pub condition: Option<PutCondition>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub consistency: Consistency,
    /// Leave the value out (metadata only).
    pub keys_only: bool,
    /// Read the key as it was at this revision; 0 reads the latest.
    pub revision: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Return the key as it was before the delete.
    pub prev_kv: bool,
}

/// A range read: keys in `[start, end)`, or every key beginning with `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    pub start: Vec<u8>,
    /// Exclusive; empty means to the end of the key space.
    pub end: Vec<u8>,
    /// Takes precedence over `start`/`end` when non-empty.
    pub prefix: Vec<u8>,
    /// Most keys in this page; 0 means the cluster's `range_keys_max`.
    pub limit: u64,
    /// The previous page's `continuation`, to resume right after it.
    pub continuation: Vec<u8>,
    pub keys_only: bool,
    /// Count the keys instead of returning them.
    pub count_only: bool,
    pub consistency: Consistency,
    /// Read at this revision; 0 lets the gateway take a new snapshot revision (linearizable)
    /// or read each shard's latest (serializable). Pass a page's `revision` with its
    /// `continuation` to read the next page at the same snapshot.
    pub revision: u64,
}

impl RangeOptions {
    /// Every key beginning with `prefix`.
    pub fn for_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Keys in `[start, end)`; an empty `end` means to the end of the key space.
    pub fn for_range(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            start: start.into(),
            end: end.into(),
            ..Self::default()
        }
    }
}

impl From<RangeOptions> for proto::RangeRequest {
    fn from(options: RangeOptions) -> Self {
        proto::RangeRequest {
            start: options.start,
            end: options.end,
            prefix: options.prefix,
            limit: options.limit,
            continuation: options.continuation,
            keys_only: options.keys_only,
            count_only: options.count_only,
            consistency: proto::Consistency::from(options.consistency).into(),
            revision: options.revision,
        }
    }
}

/// The result of a conditional put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the condition held and the value was written.
    pub succeeded: bool,
    /// The key as it is after this request: the value just written when it succeeded,
    /// otherwise the value that did not match (`None` when the key is absent).
    pub current: Option<proto::KeyValue>,
    /// The shard's revision after this request.
    pub revision: u64,
}

impl CasOutcome {
    /// Builds the outcome of a put sent with `prev_kv`: on success the written key is
    /// derived from the previous one, as the shard derives it.
    pub(crate) fn from_put(key: Vec<u8>, value: Vec<u8>, response: proto::PutResponse) -> Self {
        let current = if response.succeeded {
            let previous = response.prev_kv.as_ref();
            Some(proto::KeyValue {
                key,
                create_revision: previous.map_or(response.revision, |kv| kv.create_revision),
                mod_revision: response.revision,
                version: previous.map_or(1, |kv| kv.version + 1),
                value,
            })
        } else {
            response.prev_kv
        };
        CasOutcome {
            succeeded: response.succeeded,
            current,
            revision: response.revision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(version: u64, create_revision: u64, mod_revision: u64) -> proto::KeyValue {
        proto::KeyValue {
            key: b"k".to_vec(),
            create_revision,
            mod_revision,
            version,
            value: b"old".to_vec(),
        }
    }

    #[test]
    fn successful_cas_reports_the_written_key() {
        let outcome = CasOutcome::from_put(
            b"k".to_vec(),
            b"new".to_vec(),
            proto::PutResponse {
                revision: 12,
                succeeded: true,
                prev_kv: Some(kv(3, 4, 9)),
            },
        );
        let current = outcome.current.expect("written key");
        assert_eq!((current.version, current.create_revision), (4, 4));
        assert_eq!((current.mod_revision, current.value), (12, b"new".to_vec()));
    }

    #[test]
    fn put_if_absent_success_creates_version_one() {
        let outcome = CasOutcome::from_put(
            b"k".to_vec(),
            b"v".to_vec(),
            proto::PutResponse {
                revision: 5,
                succeeded: true,
                prev_kv: None,
            },
        );
        let current = outcome.current.expect("written key");
        assert_eq!((current.version, current.create_revision), (1, 5));
    }

    #[test]
    fn failed_cas_reports_the_current_key() {
        let outcome = CasOutcome::from_put(
            b"k".to_vec(),
            b"new".to_vec(),
            proto::PutResponse {
                revision: 12,
                succeeded: false,
                prev_kv: Some(kv(3, 4, 9)),
            },
        );
        assert!(!outcome.succeeded);
        assert_eq!(outcome.current, Some(kv(3, 4, 9)));
    }

    #[test]
    fn range_options_convert() {
        let request = proto::RangeRequest::from(RangeOptions {
            limit: 10,
            consistency: Consistency::Serializable,
            ..RangeOptions::for_prefix("user/")
        });
        assert_eq!(request.prefix, b"user/".to_vec());
        assert_eq!(request.limit, 10);
        assert_eq!(request.consistency(), proto::Consistency::Serializable);
    }
}
