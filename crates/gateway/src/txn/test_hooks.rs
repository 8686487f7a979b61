//! Deterministic test hooks of the two-phase commit (documented in docs/transactions.md and
//! docs/testing.md), read once from the gateway's environment. Unset, they cost one check of
//! a cached flag per transaction.
//!
//! - `CAIRN_TEST_CRASH_AFTER_PREWRITE=1`: the gateway aborts the process right after a
//!   transaction's prewrites all succeeded and before it takes its commit timestamp, as
//!   `kill -9` at that moment would. Its locks stay for lock resolution and the expired-lock
//!   scan to clean up.
//! - `CAIRN_TEST_PAUSE_BEFORE_PREWRITE_MS=<ms>`: the gateway sleeps this long between a
//!   transaction's reads and its prewrite, so that a test can commit a conflicting write in
//!   that window.
//! - `CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS=<ms>`: the gateway sleeps this long after a
//!   transaction's prewrites all succeeded, before its commit timestamp: a slow first attempt
//!   that another attempt of the same request meets (D97).

use std::sync::OnceLock;
use std::time::Duration;

pub const CRASH_AFTER_PREWRITE: &str = "CAIRN_TEST_CRASH_AFTER_PREWRITE";
pub const PAUSE_BEFORE_PREWRITE_MS: &str = "CAIRN_TEST_PAUSE_BEFORE_PREWRITE_MS";
pub const PAUSE_AFTER_PREWRITE_MS: &str = "CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS";

/// The longest pause the hook takes, whatever the variable says.
const PAUSE_MAX: Duration = Duration::from_secs(60);

fn armed(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| value == "1")
}

fn pause_of(value: Option<&str>) -> Option<Duration> {
    let millis: u64 = value?.parse().ok()?;
    (millis > 0).then(|| Duration::from_millis(millis).min(PAUSE_MAX))
}

/// Aborts the process when `CAIRN_TEST_CRASH_AFTER_PREWRITE=1`; sleeps
/// `CAIRN_TEST_PAUSE_AFTER_PREWRITE_MS` when set.
pub async fn after_prewrite() {
    static ARMED: OnceLock<bool> = OnceLock::new();
    if *ARMED.get_or_init(|| armed(CRASH_AFTER_PREWRITE)) {
        tracing::error!("{CRASH_AFTER_PREWRITE}=1: aborting after prewrite, as a test asked");
        std::process::abort();
    }
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    pause(&PAUSE, PAUSE_AFTER_PREWRITE_MS, "pausing after prewrite").await;
}

/// Sleeps `CAIRN_TEST_PAUSE_BEFORE_PREWRITE_MS` when set.
pub async fn before_prewrite() {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    pause(&PAUSE, PAUSE_BEFORE_PREWRITE_MS, "pausing before prewrite").await;
}

/// Sleeps as long as `variable` says (read once into `cell`), saying so in the log.
async fn pause(cell: &OnceLock<Option<Duration>>, variable: &str, what: &str) {
    let pause = *cell.get_or_init(|| pause_of(std::env::var(variable).ok().as_deref()));
    if let Some(pause) = pause {
        tracing::warn!(?pause, "{variable}: {what}, as a test asked");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_are_off_unless_set_to_a_meaningful_value() {
        assert!(!armed("CAIRN_TEST_SURELY_UNSET_VARIABLE"));
        assert_eq!(pause_of(None), None);
        assert_eq!(pause_of(Some("0")), None);
        assert_eq!(pause_of(Some("soon")), None);
        assert_eq!(pause_of(Some("250")), Some(Duration::from_millis(250)));
        assert_eq!(pause_of(Some("999999999")), Some(PAUSE_MAX));
    }
}
