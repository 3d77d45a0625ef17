//! The embedded verifier's one reading of the wall clock (the default of
//! [`crate::embedded::Options::clock`]; tests and embedders may give another).

use chrono::{DateTime, Utc};

/// The time now.
pub fn wall_clock() -> DateTime<Utc> {
    Utc::now()
}
