//! The key hygiene report: keys to clean up, rotate, narrow or look at,
//! each with the recommended action. Read-only; from the key records and
//! the hourly usage rollups.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use keyward_core::Error;
use keyward_core::key::{ApiKey, KeyGrant, KeyState};
use keyward_store::{KeyFilter, Store};

use crate::clock::Clock;
use crate::keys::store_error;
use crate::principal::Principal;

/// Unused this long counts as unused.
pub const UNUSED_DAYS: i64 = 90;
/// Expiring within this long counts as expiring soon.
pub const EXPIRING_DAYS: i64 = 14;
/// The share of a workspace's traffic whose hours count as usual.
const USUAL_SHARE: f64 = 0.95;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `never_used`, `unused`, `rotation_due`, `privileged`, `no_expiry`,
    /// `expiring_soon`, `locked`, `unusual_hours`.
    pub kind: &'static str,
    pub key_id: String,
    pub key_name: String,
    pub detail: String,
    pub recommendation: &'static str,
}

pub struct Report {
    pub generated_at: DateTime<Utc>,
    pub rotation_days: u32,
    /// The UTC hours of the day holding 95 % of the workspace's traffic.
    pub usual_hours: Vec<u32>,
    pub findings: Vec<Finding>,
}

pub struct Insights {
    store: Arc<dyn Store>,
    keys: Arc<crate::keys::KeyService>,
    clock: Arc<dyn Clock>,
    rotation_days: u32,
}

impl Insights {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<crate::keys::KeyService>,
        clock: Arc<dyn Clock>,
        rotation_days: u32,
    ) -> Self {
        Insights { store, keys, clock, rotation_days }
    }

    pub async fn keys(&self, who: &Principal) -> Result<Report, Error> {
        let mut keys = self.keys.list_all(who, &KeyFilter::default()).await?;
        keys.retain(|k| k.state != KeyState::Revoked);
        let now = self.clock.now();
        let ws = who.workspace_id();
        let since = now - Duration::days(UNUSED_DAYS);
        let by_key = self.store.key_hours(ws, since).await.map_err(store_error)?;
        let usual = usual_hours(&by_key);
        let mut findings = Vec::new();
        for k in &keys {
            findings.extend(self.judge(k, now));
        }
        // Keys used outside the workspace's usual hours.
        let mut odd: HashMap<&str, (u64, BTreeSet<u32>)> = HashMap::new();
        for (key_id, hour, count) in &by_key {
            if !usual.contains(hour) {
                let e = odd.entry(key_id.as_str()).or_default();
                e.0 += count;
                e.1.insert(*hour);
            }
        }
        for k in &keys {
            if let Some((count, hours)) = odd.get(&*k.id) {
                let hours: Vec<String> = hours.iter().map(|h| format!("{h:02}:00")).collect();
                findings.push(finding(
                    "unusual_hours",
                    k,
                    format!("{count} uses in the last {UNUSED_DAYS} days at hours (UTC) outside the workspace's usual ones: {}", hours.join(", ")),
                    "Check who uses this key at these hours; revoke it if the use is not expected",
                ));
            }
        }
        Ok(Report {
            generated_at: now,
            rotation_days: self.rotation_days,
            usual_hours: usual.into_iter().collect(),
            findings,
        })
    }

    fn judge(&self, k: &ApiKey, now: DateTime<Utc>) -> Vec<Finding> {
        let mut out = Vec::new();
        let age = now - k.created_at;
        match k.last_used_at {
            None => out.push(finding(
                "never_used",
                k,
                format!("Created {} days ago and never used", age.num_days()),
                "Delete it (deactivate first) if nobody needs it",
            )),
            Some(t) if now - t > Duration::days(UNUSED_DAYS) => out.push(finding(
                "unused",
                k,
                format!("Last used {} days ago", (now - t).num_days()),
                "Deactivate it, then delete it if nothing breaks",
            )),
            Some(_) => {}
        }
        if age > Duration::days(i64::from(self.rotation_days)) {
            out.push(finding(
                "rotation_due",
                k,
                format!("{} days old, beyond the rotation period of {} days", age.num_days(), self.rotation_days),
                "Roll it (with a grace period) and hand out the new secret",
            ));
        }
        let grants = k.grants();
        if grants.is_full() || k.flags.administrator || k.flags.account_administrator {
            let what = if grants.is_full() { "Full Access" } else { "administrator-tier access" };
            out.push(finding("privileged", k, format!("Holds {what}"), "Narrow it to the permissions its user needs"));
        }
        match k.expires_at {
            None => out.push(finding("no_expiry", k, "Never expires".to_owned(), "Give it an expiry date")),
            Some(t) if t > now && t - now <= Duration::days(EXPIRING_DAYS) => out.push(finding(
                "expiring_soon",
                k,
                format!("Expires in {} days ({})", (t - now).num_days(), t.format("%Y-%m-%d")),
                "Roll it or extend its expiry before it stops working",
            )),
            Some(_) => {}
        }
        if k.state == KeyState::Locked {
            out.push(finding(
                "locked",
                k,
                "Locked after too many wrong secrets".to_owned(),
                "Look at its failed attempts in the audit log, then re-activate or revoke it",
            ));
        }
        out
    }
}

fn finding(kind: &'static str, k: &ApiKey, detail: String, recommendation: &'static str) -> Finding {
    Finding { kind, key_id: k.id.to_string(), key_name: k.name.clone(), detail, recommendation }
}

/// The fewest hours of the day (busiest first) that together hold 95 % of
/// the traffic.
fn usual_hours(by_key: &[(String, u32, u64)]) -> BTreeSet<u32> {
    let mut per_hour = [0u64; 24];
    for (_, hour, count) in by_key {
        per_hour[(*hour as usize).min(23)] += count;
    }
    let total: u64 = per_hour.iter().sum();
    let mut hours: Vec<(u32, u64)> = (0..24).map(|h| (h, per_hour[h as usize])).collect();
    hours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut usual = BTreeSet::new();
    let mut covered = 0u64;
    for (h, c) in hours {
        if total == 0 || covered as f64 >= USUAL_SHARE * total as f64 {
            break;
        }
        usual.insert(h);
        covered += c;
    }
    usual
}

#[cfg(test)]
mod tests {
    use super::usual_hours;

    #[test]
    fn usual_hours_hold_95_percent_of_traffic() {
        let rows: Vec<(String, u32, u64)> =
            (9..17).map(|h| ("k".to_owned(), h, 100)).chain([("x".to_owned(), 3, 5)]).collect();
        let usual = usual_hours(&rows);
        assert_eq!(usual, (9..17).collect());
        assert!(usual_hours(&[]).is_empty());
    }
}
