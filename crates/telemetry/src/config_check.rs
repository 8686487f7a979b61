//! Configuration errors shared by every binary: one type naming the field and the rule.

/// A configuration value out of range; `field` is the dotted path of the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

pub fn config_error(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks that `value` is an `ip:port` (or empty, when `optional`).
pub fn check_socket_address(field: &str, value: &str, optional: bool) -> Result<(), ConfigError> {
    if optional && value.is_empty() {
        return Ok(());
    }
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| config_error(field, format!("{value:?} is not an ip:port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_the_field_named() {
        assert!(check_socket_address("listen_address", "127.0.0.1:7000", false).is_ok());
        assert!(check_socket_address("metrics_listen_address", "", true).is_ok());
        let error = check_socket_address("listen_address", "nowhere", false).unwrap_err();
        assert_eq!(error.field, "listen_address");
        assert!(error.to_string().contains("not an ip:port"));
    }
}
