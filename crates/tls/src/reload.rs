//! A value built from files and rebuilt when they change on disk: how a rotated certificate
//! reaches new connections without a restart (cert-manager and Kubernetes replace Secret
//! files in place).
//!
//! The files' modification times and sizes are compared at most once per interval, on the
//! path that asks for the value (a new connection), so a check costs a few `stat`s every few
//! seconds and nothing in between. A rebuild that fails (a half-written file, an expired
//! certificate) keeps the previous value and is tried again at the next check.

use crate::error::Result;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

type Builder<T> = Box<dyn Fn() -> Result<T> + Send + Sync>;

/// What identifies a file's version: its modification time and size.
type Stamp = Option<(SystemTime, u64)>;

pub(crate) struct Reloading<T> {
    files: Vec<PathBuf>,
    interval: Duration,
    build: Builder<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    stamps: Vec<Stamp>,
    checked: Instant,
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files
        .iter()
        .map(|file| {
            // Follows symbolic links: a Kubernetes Secret volume swaps a link to a new file.
            std::fs::metadata(file)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len())))
        })
        .collect()
}

impl<T> Reloading<T> {
    /// Builds the value now (an error here fails start-up) and keeps `build` for reloads.
    pub(crate) fn new(
        files: Vec<PathBuf>,
        interval: Duration,
        build: impl Fn() -> Result<T> + Send + Sync + 'static,
    ) -> Result<Self> {
        let before = stamps(&files);
        let current = Arc::new(build()?);
        Ok(Self {
            state: Mutex::new(State {
                current,
                stamps: before,
                checked: Instant::now(),
            }),
            files,
            interval,
            build: Box::new(build),
        })
    }

    /// The current value, rebuilt first if a file changed since the last check and the
    /// interval has passed.
    pub(crate) fn get(&self) -> Arc<T> {
        let mut state = self.state.lock().expect("tls reload lock poisoned");
        if state.checked.elapsed() < self.interval {
            return state.current.clone();
        }
        state.checked = Instant::now();
        let now = stamps(&self.files);
        if now == state.stamps {
            return state.current.clone();
        }
        match (self.build)() {
            Ok(value) => {
                tracing::info!(files = ?self.files, "TLS files changed: reloaded");
                state.current = Arc::new(value);
                state.stamps = now;
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but cannot be used: keeping the previous ones");
            }
        }
        state.current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Problem, TlsError};

    #[test]
    fn a_changed_file_is_read_again_after_the_interval_and_a_bad_one_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("value");
        std::fs::write(&file, "1").unwrap();
        let path = file.clone();
        let reloading = Reloading::new(vec![file.clone()], Duration::from_millis(50), move || {
            let text = std::fs::read_to_string(&path).unwrap();
            text.parse::<u32>()
                .map_err(|_| TlsError::file(&path, Problem::Unreadable(text)))
        })
        .unwrap();
        assert_eq!(*reloading.get(), 1);
        std::fs::write(&file, "22").unwrap();
        // Within the interval the old value is served without looking at the file.
        assert_eq!(*reloading.get(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(*reloading.get(), 22);
        std::fs::write(&file, "bad").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            *reloading.get(),
            22,
            "an unusable file keeps the previous value"
        );
        std::fs::write(&file, "333").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(*reloading.get(), 333);
    }
}
