//! Where time comes from. The server reads the system clock; tests pass a
//! [`ManualClock`] in [`crate::ServerConfig`] and move it forward, so expiry
//! and grace periods are tested without waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};

pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Microseconds since the epoch, given a reading of the system clock
    /// the caller already took (the verify path reads the system clock
    /// once, for its latency metric too).
    fn micros_at(&self, system: SystemTime) -> i64;

    /// One reading of the system clock and this clock's time for it: the
    /// verify path times its latency metric from the first and decides
    /// with the second.
    fn sample(&self) -> (SystemTime, i64) {
        let system = SystemTime::now();
        (system, self.micros_at(system))
    }

    /// Now, in microseconds since the epoch.
    fn now_micros(&self) -> i64 {
        self.micros_at(SystemTime::now())
    }

    fn now_ms(&self) -> i64 {
        self.now_micros() / 1000
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.now_micros()).unwrap_or_default()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn micros_at(&self, system: SystemTime) -> i64 {
        system.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
    }
}

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        ManualClock { micros: AtomicI64::new(SystemClock.now_micros()) }
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.micros.fetch_add(i64::try_from(by.as_micros()).unwrap_or(i64::MAX), Ordering::AcqRel);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn micros_at(&self, _system: SystemTime) -> i64 {
        self.micros.load(Ordering::Acquire)
    }
}
