//! Credits: the uses a key may still make. Each valid verification spends
//! its cost; at zero the key answers `USAGE_EXCEEDED`; a refill sets the
//! remaining credits back to an amount every day or month (UTC).
//!
//! Spending happens in the store, atomically (exact across nodes); this
//! module holds the rules and the schedule.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::Code;
use crate::Error;

/// The most credits a key may hold.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillInterval {
    Daily,
    Monthly,
}

impl RefillInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            RefillInterval::Daily => "daily",
            RefillInterval::Monthly => "monthly",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "daily" => Some(RefillInterval::Daily),
            "monthly" => Some(RefillInterval::Monthly),
            _ => None,
        }
    }
}

/// Remaining credits are set back to `amount` at the start of each period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub interval: RefillInterval,
    pub amount: i64,
    /// Day of the month (1–31) a monthly refill happens on; in shorter
    /// months, the last day. `None` for daily refills.
    pub refill_day: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    /// As last read; the store holds the exact count.
    pub remaining: i64,
    pub refill: Option<Refill>,
}

/// How `POST /v1/keys/{id}/credits` changes the remaining credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOp {
    Set,
    Increment,
    /// Never below zero.
    Decrement,
}

impl CreditOp {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "set" => Some(CreditOp::Set),
            "increment" => Some(CreditOp::Increment),
            "decrement" => Some(CreditOp::Decrement),
            _ => None,
        }
    }
}

fn check_amount(field: &str, v: i64, min: i64) -> Result<i64, Error> {
    if !(min..=MAX_CREDITS).contains(&v) {
        return Err(Error::invalid(
            Code::InvalidCredits,
            format!("{field} must be a whole number from {min} to {MAX_CREDITS}"),
        ));
    }
    Ok(v)
}

impl Credits {
    /// Checks every rule: remaining 0 to [`MAX_CREDITS`], a refill amount of
    /// at least 1, `refillDay` (1–31) only with a monthly refill.
    pub fn validate(remaining: i64, refill: Option<Refill>) -> Result<Credits, Error> {
        check_amount("credits.remaining", remaining, 0)?;
        if let Some(r) = refill {
            check_amount("credits.refill.amount", r.amount, 1)?;
            match (r.interval, r.refill_day) {
                (RefillInterval::Daily, Some(_)) => {
                    return Err(Error::invalid(
                        Code::InvalidCredits,
                        "credits.refill.refillDay is only for a monthly refill",
                    ));
                }
                (RefillInterval::Monthly, Some(d)) if !(1..=31).contains(&d) => {
                    return Err(Error::invalid(Code::InvalidCredits, "credits.refill.refillDay must be from 1 to 31"));
                }
                _ => {}
            }
        }
        Ok(Credits { remaining, refill })
    }

    /// A change's value, checked.
    pub fn check_change(value: i64) -> Result<i64, Error> {
        check_amount("value", value, 0)
    }
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

/// The `day` of a month, or its last day in shorter months.
fn day_in_month(year: i32, month: u32, day: u32) -> NaiveDate {
    (1..=day).rev().find_map(|d| NaiveDate::from_ymd_opt(year, month, d)).expect("every month has a first day")
}

impl Refill {
    /// When the period that contains `now` began: the credits are refilled
    /// once per period, at its start.
    pub fn period_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.date_naive();
        match self.interval {
            RefillInterval::Daily => midnight(today),
            RefillInterval::Monthly => {
                let day = self.refill_day.unwrap_or(1);
                let this_month = day_in_month(today.year(), today.month(), day);
                if this_month <= today {
                    return midnight(this_month);
                }
                let (y, m) =
                    if today.month() == 1 { (today.year() - 1, 12) } else { (today.year(), today.month() - 1) };
                midnight(day_in_month(y, m, day))
            }
        }
    }

    /// When the next refill happens after `now`.
    pub fn next_refill(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.period_start(now);
        match self.interval {
            RefillInterval::Daily => start + chrono::Duration::days(1),
            RefillInterval::Monthly => {
                let d = start.date_naive();
                let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
                midnight(day_in_month(y, m, self.refill_day.unwrap_or(1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_start_at_midnight_utc_on_the_refill_day() {
        let daily = Refill { interval: RefillInterval::Daily, amount: 5, refill_day: None };
        assert_eq!(daily.period_start(at("2026-03-10T17:00:00Z")), at("2026-03-10T00:00:00Z"));
        assert_eq!(daily.next_refill(at("2026-03-10T17:00:00Z")), at("2026-03-11T00:00:00Z"));
        let monthly = Refill { interval: RefillInterval::Monthly, amount: 5, refill_day: Some(31) };
        // February has no 31st: its last day.
        assert_eq!(monthly.period_start(at("2026-03-10T00:00:00Z")), at("2026-02-28T00:00:00Z"));
        assert_eq!(monthly.period_start(at("2026-03-31T01:00:00Z")), at("2026-03-31T00:00:00Z"));
        assert_eq!(monthly.next_refill(at("2026-03-10T00:00:00Z")), at("2026-03-31T00:00:00Z"));
        let first = Refill { interval: RefillInterval::Monthly, amount: 5, refill_day: None };
        assert_eq!(first.period_start(at("2026-01-15T00:00:00Z")), at("2026-01-01T00:00:00Z"));
        assert_eq!(first.next_refill(at("2026-12-15T00:00:00Z")), at("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn rules() {
        let daily_with_day = Refill { interval: RefillInterval::Daily, amount: 5, refill_day: Some(1) };
        assert!(Credits::validate(10, Some(daily_with_day)).is_err());
        assert!(Credits::validate(-1, None).is_err());
        let zero = Refill { interval: RefillInterval::Monthly, amount: 0, refill_day: None };
        assert!(Credits::validate(1, Some(zero)).is_err());
        let bad_day = Refill { interval: RefillInterval::Monthly, amount: 1, refill_day: Some(32) };
        assert!(Credits::validate(1, Some(bad_day)).is_err());
        assert!(Credits::validate(0, None).is_ok());
    }
}
