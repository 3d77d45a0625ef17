//! The embedded verifier's one reading of the wall clock (the default of
//! [`crate::embedded::Options::clock`]; tests and embedders may give another).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the embedded verifier reads the time from: milliseconds since the
/// Unix epoch. Expiry, grace periods, the hour a use counts in, and the
/// copy's staleness are all judged by it, so a test that moves it moves
/// all of them.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock, in milliseconds since the Unix epoch.
pub fn wall_clock() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a thread counts from one reading of the wall clock before it
/// reads it again (so the clock follows the system's adjustments).
const REREAD_NS: u64 = 1_000_000_000;

thread_local! {
    /// The processor's counter at this thread's last reading of the wall
    /// clock, and that reading (0, 0: none yet).
    static ANCHOR: Cell<(u64, i64)> = const { Cell::new((0, 0)) };
}

/// The wall clock as a [`Clock`], read once a second per thread and
/// counted forward in between with the processor's time-stamp counter
/// (`quanta`): a reading costs a third of the system call's, and the
/// clock is read on every decision.
pub fn wall() -> Clock {
    let counter = quanta::Clock::new();
    Arc::new(move || {
        let now = counter.raw();
        ANCHOR.with(|anchor| {
            let (at, wall) = anchor.get();
            let elapsed = counter.delta_as_nanos(at, now);
            if at == 0 || now < at || elapsed >= REREAD_NS {
                let wall = wall_clock();
                anchor.set((now, wall));
                wall
            } else {
                wall + i64::try_from(elapsed / 1_000_000).unwrap_or(0)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counted_clock_keeps_to_the_wall_clock() {
        let clock = wall();
        for _ in 0..1000 {
            let (before, counted, after) = (wall_clock(), clock(), wall_clock());
            // Within the millisecond the counter rounds down to, and the
            // one the wall clock was read in.
            assert!(before - 2 <= counted && counted <= after + 1, "{before} {counted} {after}");
        }
    }
}
