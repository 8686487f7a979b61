//! The timestamp oracle's decisions, pure and with the clock passed in (PD's TSO algorithm).
//!
//! Timestamps are one counter laid out as `physical_ms << 12 | logical`
//! ([`cairn_types::TimestampParts`]), with `physical_ms` counted from the cluster's creation.
//! Each one handed out is above every one handed out before, by this leader or any earlier:
//!
//! - **A window persisted before it is used.** A leader hands out timestamps only below a
//!   physical `window_end` that it has written through the coordinator's Raft log. A new
//!   leader reads the stored window and starts above it, so it starts above anything its
//!   predecessors handed out, whatever their clocks said.
//! - **The clock only pushes forward.** The next timestamp is `max(last + 1, now)`: a clock
//!   that steps back only slows the physical part (the logical part keeps counting); a clock
//!   that jumps forward needs a new window before anything past the old one is handed out.
//!
//! Fencing a deposed leader (which must not hand out a timestamp after its successor has) is
//! not decided here: the oracle confirms its lease after allocating and before answering.

use cairn_types::{Revision, TimestampParts, LOGICAL_BITS};
use std::ops::Range;

/// How far ahead of the clock a persisted window reaches, in milliseconds. A new leader
/// starts at most this far ahead of the wall clock (PD uses 3 s).
pub const WINDOW_MS: u64 = 3_000;
/// A window closer than this to running out, in milliseconds, is extended in the background,
/// so that a steady flow of requests never waits for a Raft write.
pub const RENEW_BELOW_MS: u64 = 1_000;
/// Most timestamps one request may take.
pub const BATCH_MAX: u64 = 1 << 16;

/// A wall clock, in milliseconds since the Unix epoch. Injected so tests can step it.
pub trait Clock: Send + Sync + 'static {
    fn now_unix_ms(&self) -> u64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// Why timestamps could not be handed out yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The request would pass the persisted window: persist `window_end` first, then retry.
    NeedsWindow { window_end: u64 },
}

/// One leadership's allocator.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// The last timestamp handed out (or the one before the first to hand out).
    last: Revision,
    /// Physical milliseconds (since the cluster's creation) below which timestamps may be
    /// handed out: the window known to be persisted.
    window_end: u64,
}

fn physical(revision: Revision) -> u64 {
    revision.0 >> LOGICAL_BITS
}

impl Allocator {
    /// Begins a leadership. `stored_window` is the window persisted by the previous leaders
    /// (0 if none); `now_ms` is the clock in milliseconds since the cluster's creation.
    /// Returns the allocator and the window it needs persisted before it serves anything.
    pub fn begin(stored_window: u64, now_ms: u64) -> (Self, u64) {
        let start = now_ms.max(stored_window) + 1;
        let allocator = Self {
            last: Revision(TimestampParts::at_ms(start).revision().0 - 1),
            // Nothing may be handed out until the new window is persisted.
            window_end: 0,
        };
        (allocator, start + WINDOW_MS)
    }

    /// Records that `window_end` is persisted.
    pub fn window_persisted(&mut self, window_end: u64) {
        self.window_end = self.window_end.max(window_end);
    }

    pub fn window_end(&self) -> u64 {
        self.window_end
    }

    pub fn last(&self) -> Revision {
        self.last
    }

    /// Hands out `count` consecutive timestamps (1..=[`BATCH_MAX`]), all above every one
    /// handed out before.
    pub fn allocate(&mut self, count: u64, now_ms: u64) -> Result<Range<Revision>, Blocked> {
        assert!(
            (1..=BATCH_MAX).contains(&count),
            "batch of {count} timestamps"
        );
        let first = (self.last.0 + 1).max(TimestampParts::at_ms(now_ms).revision().0);
        let last = first + count - 1;
        if physical(Revision(last)) >= self.window_end {
            return Err(Blocked::NeedsWindow {
                window_end: physical(Revision(last)).max(now_ms) + WINDOW_MS,
            });
        }
        self.last = Revision(last);
        Ok(Revision(first)..Revision(last + 1))
    }

    /// The window to persist now, if the current one is close to running out.
    pub fn renewal(&self, now_ms: u64) -> Option<u64> {
        let reached = now_ms.max(physical(self.last));
        (self.window_end.saturating_sub(reached) < RENEW_BELOW_MS).then_some(reached + WINDOW_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(stored_window: u64, now: u64) -> Allocator {
        let (mut allocator, window) = Allocator::begin(stored_window, now);
        allocator.window_persisted(window);
        allocator
    }

    #[test]
    fn nothing_is_handed_out_before_the_window_is_persisted() {
        let (mut allocator, window) = Allocator::begin(0, 100);
        assert_eq!(window, 101 + WINDOW_MS);
        assert_eq!(
            allocator.allocate(1, 100),
            Err(Blocked::NeedsWindow {
                window_end: 101 + WINDOW_MS
            })
        );
        allocator.window_persisted(window);
        let got = allocator.allocate(3, 100).unwrap();
        assert_eq!(got.start, TimestampParts::at_ms(101).revision());
        assert_eq!(got.end.0 - got.start.0, 3);
    }

    #[test]
    fn timestamps_rise_when_the_clock_steps_back() {
        let mut allocator = serving(0, 1_000);
        let before = allocator.allocate(1, 1_500).unwrap().start;
        // The clock steps back by a second: the physical part stays, the logical part counts.
        let after = allocator.allocate(1, 500).unwrap().start;
        assert!(after > before);
        assert_eq!(TimestampParts::from(after).physical_ms, 1_500);
        assert_eq!(TimestampParts::from(after).logical, 1);
    }

    #[test]
    fn a_clock_jump_past_the_window_waits_for_a_new_window() {
        let mut allocator = serving(0, 1_000);
        let jumped = 1_000 + 10 * WINDOW_MS;
        let Err(Blocked::NeedsWindow { window_end }) = allocator.allocate(1, jumped) else {
            panic!("a timestamp past the persisted window was handed out");
        };
        assert_eq!(window_end, jumped + WINDOW_MS);
        allocator.window_persisted(window_end);
        let got = allocator.allocate(1, jumped).unwrap();
        assert_eq!(TimestampParts::from(got.start).physical_ms, jumped);
    }

    #[test]
    fn a_new_leader_starts_above_its_predecessors_window_whatever_its_clock() {
        let mut old = serving(0, 100_000);
        let handed_out = old.allocate(BATCH_MAX, 100_000).unwrap();
        // The new leader's clock is a minute behind.
        let mut new = serving(old.window_end(), 40_000);
        assert!(new.allocate(1, 40_000).unwrap().start >= handed_out.end);
    }

    #[test]
    fn logical_overflow_carries_into_the_physical_part_within_the_window() {
        let mut allocator = serving(0, 0);
        let mut previous = Revision(0);
        for _ in 0..4 {
            let got = allocator.allocate(BATCH_MAX, 0).unwrap();
            assert!(got.start > previous);
            previous = Revision(got.end.0 - 1);
        }
        // 4 × 65 536 timestamps in one millisecond run 64 ms ahead of the clock.
        assert_eq!(TimestampParts::from(previous).physical_ms, 1 + 63);
    }

    /// Random runs of requests, clock steps both ways, window renewals and leader changes
    /// (each new leader starting from the last persisted window): every timestamp handed out
    /// is above every earlier one.
    #[test]
    fn timestamps_are_unique_and_rising_across_leaders_and_clock_steps() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for _ in 0..50 {
            let mut now: u64 = 1_000 + random(10_000);
            let mut persisted = 0;
            let (mut allocator, window) = Allocator::begin(persisted, now);
            persisted = window;
            allocator.window_persisted(window);
            let mut last = Revision(0);
            for _ in 0..2_000 {
                match random(10) {
                    0 => now = now.saturating_sub(random(5_000)),
                    1 => now += random(8_000),
                    2 => {
                        // A leader change: the next leader sees only what was persisted.
                        let (next, window) = Allocator::begin(persisted, now);
                        allocator = next;
                        persisted = window;
                        allocator.window_persisted(window);
                    }
                    3 => {
                        if let Some(window) = allocator.renewal(now) {
                            persisted = persisted.max(window);
                            allocator.window_persisted(window);
                        }
                    }
                    _ => {
                        now += random(3);
                        let count = 1 + random(5_000);
                        let got = match allocator.allocate(count, now) {
                            Ok(got) => got,
                            Err(Blocked::NeedsWindow { window_end }) => {
                                persisted = persisted.max(window_end);
                                allocator.window_persisted(window_end);
                                allocator.allocate(count, now).expect("window persisted")
                            }
                        };
                        assert!(got.start > last, "{:?} after {last}", got);
                        assert!(physical(Revision(got.end.0 - 1)) < persisted);
                        last = Revision(got.end.0 - 1);
                    }
                }
            }
        }
    }

    #[test]
    fn the_window_is_renewed_before_it_runs_out() {
        let allocator = serving(0, 0);
        assert_eq!(allocator.renewal(0), None);
        let near_end = allocator.window_end() - RENEW_BELOW_MS + 1;
        assert_eq!(allocator.renewal(near_end), Some(near_end + WINDOW_MS));
    }
}
