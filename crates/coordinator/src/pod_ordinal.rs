//! A coordinator's member id from the name of the StatefulSet pod it runs in.
//!
//! A StatefulSet names its pods `<set>-0`, `<set>-1`, …, and the image has no shell to turn
//! that ordinal into a flag, so the Helm chart passes the pod's name
//! (`--member-id-from-ordinal=$(POD_NAME)`) and the coordinator takes `ordinal + 1` as its
//! member id (member ids start at 1). See D70. Pure: no I/O.

use cairn_telemetry::{config_error as bad, ConfigError};

/// `name`'s trailing `-N` ordinal plus one: `cairn-coordinator-2` is member 3. A name
/// without a numeric suffix is an error that names the field.
pub fn member_id_from_ordinal(name: &str) -> Result<u64, ConfigError> {
    let ordinal = name
        .rsplit_once('-')
        .map(|(_, suffix)| suffix)
        .filter(|suffix| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            bad(
                "member_id",
                format!("{name:?} does not end in -N (a StatefulSet pod's ordinal)"),
            )
        })?;
    let ordinal: u64 = ordinal
        .parse()
        .map_err(|_| bad("member_id", format!("{name:?}: the ordinal is too large")))?;
    ordinal
        .checked_add(1)
        .ok_or_else(|| bad("member_id", format!("{name:?}: the ordinal is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordinal_plus_one_is_the_member_id() {
        assert_eq!(member_id_from_ordinal("cairn-coordinator-0").unwrap(), 1);
        assert_eq!(member_id_from_ordinal("cairn-coordinator-2").unwrap(), 3);
        assert_eq!(member_id_from_ordinal("x-10").unwrap(), 11);
    }

    #[test]
    fn a_name_without_an_ordinal_is_rejected_naming_the_field() {
        for name in [
            "cairn-coordinator",
            "coordinator",
            "",
            "cairn-",
            "cairn-1a",
            "cairn-+1",
        ] {
            let error = member_id_from_ordinal(name).unwrap_err();
            assert_eq!(error.field, "member_id", "{name:?}");
        }
        let error = member_id_from_ordinal("c-99999999999999999999999").unwrap_err();
        assert!(error.to_string().contains("too large"), "{error}");
        assert!(member_id_from_ordinal(&format!("c-{}", u64::MAX)).is_err());
    }
}
