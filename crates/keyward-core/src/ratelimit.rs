//! Named rate limits: at most `limit` units per `duration_ms`, on a key or
//! an identity (shared by all its keys).
//!
//! **Never more than the limit in any window.** Time is cut into
//! [`SLOTS`] slots per duration; a request is admitted when the units
//! counted in every slot that overlaps the last `duration_ms` (the oldest,
//! partly expired slot included), plus its cost, stay within the limit. For
//! any window `(a, a + duration]`, the last admission in it saw every earlier
//! one in it counted, so no window ever holds more than `limit`. The price:
//! a unit keeps counting up to one slot (a tenth of the duration) longer
//! than strictly needed.
//!
//! The same arithmetic runs in memory (one node) and in Redis' script
//! (every node alike); this module is the reference for both.

use std::collections::VecDeque;

use crate::Code;
use crate::Error;

/// Named limits per key or identity.
pub const MAX_LIMITS: usize = 20;
pub const MIN_DURATION_MS: i64 = 1_000;
pub const MAX_DURATION_MS: i64 = 30 * 24 * 3_600 * 1_000;
pub const MAX_LIMIT: i64 = 1_000_000_000_000;
pub const MAX_NAME_LEN: usize = 64;
/// Slots per duration.
pub const SLOTS: i64 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub name: String,
    pub limit: i64,
    pub duration_ms: i64,
    /// Checked on every verification; otherwise only when a verify request
    /// names it.
    pub auto_apply: bool,
}

impl RateLimit {
    /// Milliseconds per slot.
    pub fn slot_ms(&self) -> i64 {
        slot_ms(self.duration_ms)
    }
}

pub fn slot_ms(duration_ms: i64) -> i64 {
    (duration_ms + SLOTS - 1) / SLOTS
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn invalid(message: String) -> Error {
    Error::invalid(Code::InvalidRatelimits, message)
}

/// Checks the limits a caller set on a key or an identity (`field` names
/// them in messages, e.g. `ratelimits`).
pub fn validate(field: &str, limits: &[RateLimit]) -> Result<(), Error> {
    if limits.len() > MAX_LIMITS {
        return Err(invalid(format!("{field} holds at most {MAX_LIMITS} limits")));
    }
    for (i, l) in limits.iter().enumerate() {
        if !is_name(&l.name) {
            return Err(invalid(format!(
                "{field}[{i}].name must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-', '.' or ':'"
            )));
        }
        if limits[..i].iter().any(|o| o.name == l.name) {
            return Err(invalid(format!("{field}[{i}].name repeats the name of an earlier limit; names are unique")));
        }
        if !(1..=MAX_LIMIT).contains(&l.limit) {
            return Err(invalid(format!("{field}[{i}].limit must be a whole number from 1 to {MAX_LIMIT}")));
        }
        if !(MIN_DURATION_MS..=MAX_DURATION_MS).contains(&l.duration_ms) {
            return Err(invalid(format!(
                "{field}[{i}].durationMs must be from {MIN_DURATION_MS} (1 s) to {MAX_DURATION_MS} (30 days)"
            )));
        }
    }
    Ok(())
}

/// What a verify request asks of a named limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRequest {
    pub name: String,
    /// Units this request spends (0 checks without spending).
    pub cost: i64,
}

/// The largest cost one request may name.
pub const MAX_COST: i64 = MAX_LIMIT;

/// Checks what a verify request names (`ratelimits` field).
pub fn validate_requests(requests: &[LimitRequest]) -> Result<(), Error> {
    if requests.len() > MAX_LIMITS * 2 {
        return Err(invalid(format!("ratelimits names at most {} limits", MAX_LIMITS * 2)));
    }
    for (i, r) in requests.iter().enumerate() {
        if !is_name(&r.name) {
            return Err(invalid(format!(
                "ratelimits[{i}].name must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-', '.' or ':'"
            )));
        }
        if !(0..=MAX_COST).contains(&r.cost) {
            return Err(invalid(format!("ratelimits[{i}].cost must be a whole number from 0 to {MAX_COST}")));
        }
    }
    Ok(())
}

/// How a limit stands after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: i64,
    /// Units left in the window (after this request, when admitted).
    pub remaining: i64,
    /// When units next come free, ms since the epoch.
    pub reset_ms: i64,
    /// This request would have gone over the limit.
    pub exceeded: bool,
}

impl LimitState {
    /// From the units counted (`used`, this request included when it was
    /// admitted) and the oldest slot holding any.
    pub fn of(limit: &RateLimit, used: i64, oldest_slot: Option<i64>, exceeded: bool, now_ms: i64) -> Self {
        let reset_ms = match oldest_slot {
            Some(s) => (s + 1) * limit.slot_ms() + limit.duration_ms,
            None => now_ms,
        };
        LimitState { limit: limit.limit, remaining: (limit.limit - used).max(0), reset_ms, exceeded }
    }
}

/// One limit's slots in memory: `(slot index, units)`, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Window {
    slots: VecDeque<(i64, i64)>,
}

impl Window {
    /// Drops slots that no longer overlap the window ending at `now_ms`;
    /// returns the units in the rest and the oldest slot holding any.
    pub fn tally(&mut self, limit: &RateLimit, now_ms: i64) -> (i64, Option<i64>) {
        let first = (now_ms - limit.duration_ms).div_euclid(limit.slot_ms());
        while self.slots.front().is_some_and(|&(s, _)| s < first) {
            self.slots.pop_front();
        }
        (self.slots.iter().map(|&(_, n)| n).sum(), self.slots.front().map(|&(s, _)| s))
    }

    /// Adds `cost` units at `now_ms`; returns the slot they went to.
    pub fn add(&mut self, limit: &RateLimit, now_ms: i64, cost: i64) -> i64 {
        let slot = now_ms.div_euclid(limit.slot_ms());
        match self.slots.back_mut() {
            Some((s, n)) if *s == slot => *n += cost,
            _ => self.slots.push_back((slot, cost)),
        }
        slot
    }

    /// Gives back units added to `slot` by a request refused later.
    pub fn refund(&mut self, slot: i64, cost: i64) {
        if let Some((_, n)) = self.slots.iter_mut().find(|(s, _)| *s == slot) {
            *n = (*n - cost).max(0);
        }
    }

    /// Nothing counted any more at `now_ms`: the window can be dropped.
    pub fn is_idle(&self, duration_ms: i64, now_ms: i64) -> bool {
        self.slots.back().is_none_or(|&(s, _)| (s + 1) * slot_ms(duration_ms) + duration_ms <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(limit: i64, duration_ms: i64) -> RateLimit {
        RateLimit { name: "requests".into(), limit, duration_ms, auto_apply: true }
    }

    /// Admits like the limiter does: all-or-nothing for one limit.
    fn admit(w: &mut Window, l: &RateLimit, now: i64, cost: i64) -> bool {
        let (used, _) = w.tally(l, now);
        if used + cost > l.limit {
            return false;
        }
        w.add(l, now, cost);
        true
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let l = limit(100, 10_000);
        let mut w = Window::default();
        let mut admitted = Vec::new();
        // A request every 7 ms for 60 s.
        for t in (0..60_000).step_by(7) {
            if admit(&mut w, &l, t, 1) {
                admitted.push(t);
            }
        }
        let mut max = 0;
        for (i, &t) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|&&u| u < t + 10_000).count();
            max = max.max(in_window);
        }
        assert_eq!(max, 100, "at most the limit in any 10 s window, and the limit reached");
        // And it does not starve: over 60 s at least 5 windows' worth.
        assert!(admitted.len() >= 500, "admitted {}", admitted.len());
    }

    #[test]
    fn refunds_give_units_back() {
        let l = limit(2, 1_000);
        let mut w = Window::default();
        assert!(admit(&mut w, &l, 0, 2));
        assert!(!admit(&mut w, &l, 10, 1));
        w.refund(0, 1);
        assert!(admit(&mut w, &l, 20, 1));
        assert_eq!(w.tally(&l, 20).0, 2);
    }

    #[test]
    fn reset_is_when_the_oldest_units_leave() {
        let l = limit(5, 10_000);
        let mut w = Window::default();
        w.add(&l, 1_500, 1);
        let (used, oldest) = w.tally(&l, 2_000);
        let s = LimitState::of(&l, used, oldest, false, 2_000);
        assert_eq!((s.remaining, s.reset_ms), (4, 12_000));
        assert!(w.tally(&l, 12_000).0 == 0 && w.is_idle(l.duration_ms, 12_000));
    }

    #[test]
    fn validation_names_the_field() {
        let ok = limit(1, 1_000);
        assert!(validate("ratelimits", std::slice::from_ref(&ok)).is_ok());
        let cases = [
            (RateLimit { limit: 0, ..ok.clone() }, "ratelimits[0].limit"),
            (RateLimit { limit: -5, ..ok.clone() }, "ratelimits[0].limit"),
            (RateLimit { duration_ms: 999, ..ok.clone() }, "ratelimits[0].durationMs"),
            (RateLimit { duration_ms: MAX_DURATION_MS + 1, ..ok.clone() }, "ratelimits[0].durationMs"),
            (RateLimit { name: String::new(), ..ok.clone() }, "ratelimits[0].name"),
        ];
        for (l, field) in cases {
            let e = validate("ratelimits", &[l]).unwrap_err();
            assert!(e.message.starts_with(field), "{}", e.message);
        }
        let e = validate("ratelimits", &[ok.clone(), ok.clone()]).unwrap_err();
        assert!(e.message.starts_with("ratelimits[1].name"), "{}", e.message);
        let many: Vec<_> = (0..21).map(|i| RateLimit { name: format!("l{i}"), ..ok.clone() }).collect();
        assert!(validate("ratelimits", &many).is_err());
        let e = validate_requests(&[LimitRequest { name: "x".into(), cost: -1 }]).unwrap_err();
        assert!(e.message.starts_with("ratelimits[0].cost"));
    }
}
