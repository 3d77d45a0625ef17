//! Usage counting off the verify path.
//!
//! Each key seen by this node has a [`keyward_verifier::usage::UsageCell`]
//! of atomics in its cache entry, so counting a use is two relaxed atomic
//! operations: no lock, no allocation, no write; a key's first use since
//! the last drain queues it ([`Pending`]). A background task drains the
//! queued keys into the hourly rollups (a transaction per chunk of keys, every
//! interval and once more at shutdown), and records failed authentication
//! in the audit log, aggregated per key (or, for unknown keys, per
//! address) per minute.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::DateTime;
use keyward_core::audit::{Actor, Event, Outcome, Target};
use keyward_core::verify::VerifyCode;
use keyward_store::{Store, UsageDelta};
use keyward_verifier::KeyRecord;
use keyward_verifier::cache::CachedKey;
use keyward_verifier::usage::{HOUR_MS, Pending, is_auth_failure};

use crate::work::Change;

use crate::audit::AuditLog;
use crate::clock::Clock;

/// Keys per usage-flush transaction (and drained at a time, so that a
/// flush after a million keys were used holds a chunk's deltas, not all).
pub const FLUSH_CHUNK: usize = 500;
/// Failure buckets held at most (per key or address per minute); beyond,
/// unknown-key failures of a workspace share one bucket.
const MAX_FAILURE_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FailureBucket {
    workspace_id: String,
    /// `key.auth_failed` or `ftp.auth_failed`.
    action: &'static str,
    target: Target,
    /// Start of the minute, seconds since the epoch.
    minute: i64,
}

/// Tokens issued to one key (as client, or exchanging it) in one minute,
/// by action (`token.issued`, `token.exchanged`, `token.refreshed`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenBucket {
    workspace_id: String,
    key_id: Arc<str>,
    name: String,
    action: &'static str,
    minute: i64,
}

/// Whose FTP login was refused: a workspace's FTP user, or (an unknown
/// username) the address it came from.
pub enum FtpTarget<'a> {
    User(&'a str),
    Address(Option<std::net::IpAddr>),
}

pub struct UsageRecorder {
    pending: Arc<Pending>,
    failures: Mutex<HashMap<FailureBucket, BTreeMap<&'static str, u64>>>,
    tokens: Mutex<HashMap<TokenBucket, u64>>,
    clock: Arc<dyn Clock>,
}

impl UsageRecorder {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        UsageRecorder { pending: Arc::default(), failures: Mutex::default(), tokens: Mutex::default(), clock }
    }

    /// Counts a token issued for `key` (an audit entry per key, action and
    /// minute: an entry per token would cost issuance a durable write).
    pub fn token_issued(&self, key: &KeyRecord, action: &'static str) {
        let minute = self.current_minute();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = TokenBucket {
            workspace_id: key.workspace_id.to_string(),
            key_id: Arc::from(key.id.as_str()),
            name: key.name.to_string(),
            action,
            minute,
        };
        // Bounded like the failure buckets: past the bound, a minute's
        // tokens of a workspace share one entry.
        let bucket = match tokens.len() < MAX_FAILURE_BUCKETS || tokens.contains_key(&bucket) {
            true => bucket,
            false => TokenBucket { key_id: Arc::from(""), name: String::new(), ..bucket },
        };
        *tokens.entry(bucket).or_default() += 1;
    }

    /// The token counts of minutes that have ended (all, when `all`), as
    /// audit entries.
    fn closed_tokens(&self, audit: &AuditLog, all: bool) -> Vec<keyward_store::Write> {
        let minute = self.current_minute();
        take_ended(&self.tokens, |b| all || b.minute < minute)
            .into_iter()
            .map(|(b, count)| {
                let (id, name) = match b.key_id.is_empty() {
                    true => (None, None),
                    false => (Some(b.key_id.to_string()), Some(b.name.clone())),
                };
                audit.event(Event {
                    workspace_id: b.workspace_id,
                    at: DateTime::from_timestamp(b.minute, 0).unwrap_or_default(),
                    actor: Actor { kind: keyward_core::audit::ActorKind::Key, id: id.clone(), name: name.clone() },
                    action: b.action.to_owned(),
                    target: Target { kind: "api_key".to_owned(), id, name },
                    ip: None,
                    user_agent: None,
                    outcome: Outcome::Success,
                    changes: serde_json::json!({"count": count, "period": "1m"}).to_string(),
                })
            })
            .collect()
    }

    /// The keys used since their last drain (the key cache queues them).
    pub fn pending(&self) -> &Arc<Pending> {
        &self.pending
    }

    /// Counts a failed authentication with a key id nobody knows, from
    /// `ip`, in `workspace_id` (whose caller asked).
    pub fn unknown_key(&self, workspace_id: &str, ip: Option<std::net::IpAddr>, at_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let address = if failures.len() < MAX_FAILURE_BUCKETS { ip.map(|ip| ip.to_string()) } else { None };
        let bucket = FailureBucket {
            workspace_id: workspace_id.to_owned(),
            action: "key.auth_failed",
            target: Target { kind: "address".to_owned(), id: address, name: None },
            minute: at_ms.div_euclid(60_000) * 60,
        };
        *failures.entry(bucket).or_default().entry(VerifyCode::NotFound.as_str()).or_default() += 1;
    }

    /// Counts a refused FTP login in `workspace_id` (`reason`:
    /// `invalid_credentials`, `disabled`, `locked` or, for a username
    /// nobody has, `unknown_username`), recorded as `ftp.auth_failed` per
    /// minute.
    pub fn ftp_failed(&self, workspace_id: &str, target: FtpTarget<'_>, reason: &'static str, at_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let target = match target {
            FtpTarget::User(username) => Target::new("ftp", username, None),
            FtpTarget::Address(ip) => {
                Target { kind: "address".to_owned(), id: ip.map(|ip| ip.to_string()), name: None }
            }
        };
        let bucket = FailureBucket {
            workspace_id: workspace_id.to_owned(),
            action: "ftp.auth_failed",
            target,
            minute: at_ms.div_euclid(60_000) * 60,
        };
        if failures.len() < MAX_FAILURE_BUCKETS || failures.contains_key(&bucket) {
            *failures.entry(bucket).or_default().entry(reason).or_default() += 1;
        }
    }

    /// Drains `keys`' cells: the deltas to write, the key each is of and,
    /// beside each, the failed authentications it holds (added to the
    /// minute buckets only once the delta is written, so a failed flush
    /// counts nothing twice).
    #[allow(clippy::type_complexity)]
    fn drain(
        keys: &[Arc<CachedKey>],
    ) -> (Vec<UsageDelta>, Vec<&Arc<CachedKey>>, Vec<Option<(FailureBucket, BTreeMap<&'static str, u64>)>>) {
        let (mut deltas, mut owners, mut fails) = (Vec::new(), Vec::new(), Vec::new());
        for key in keys {
            let cell = &key.usage;
            cell.clean();
            let key_id: Arc<str> = Arc::from(key.id.as_str());
            let last = cell.take_last_used();
            let mut last_used_at = (last > 0).then(|| DateTime::from_timestamp_millis(last)).flatten();
            for slot in 0..2 {
                let counts = cell.drain(slot);
                if counts.is_empty() {
                    continue;
                }
                let failed: BTreeMap<&'static str, u64> = VerifyCode::ALL
                    .iter()
                    .filter(|c| is_auth_failure(**c))
                    .filter_map(|c| counts.iter().find(|(code, _)| *code == c.as_str()).copied())
                    .collect();
                let failed_ms = cell.failed_ms().filter(|_| !failed.is_empty());
                fails.push(failed_ms.map(|failed_ms| {
                    let bucket = FailureBucket {
                        workspace_id: key.workspace_id.to_string(),
                        action: "key.auth_failed",
                        target: Target::new("api_key", key_id.to_string(), Some(&key.name)),
                        minute: failed_ms.div_euclid(60_000) * 60,
                    };
                    (bucket, failed)
                }));
                let hour = i64::from(cell.slot_hour(slot)) * HOUR_MS;
                let hour = DateTime::from_timestamp_millis(hour).unwrap_or_default();
                // "Last used" travels with one delta of the key.
                deltas.push(UsageDelta { key_id: key_id.clone(), hour, counts, last_used_at: last_used_at.take() });
                owners.push(key);
            }
            // A use counted between the drain of its time and of its count
            // (drained before): its time alone.
            if let Some(at) = last_used_at {
                deltas.push(UsageDelta {
                    key_id: key_id.clone(),
                    hour: at,
                    counts: Vec::new(),
                    last_used_at: Some(at),
                });
                owners.push(key);
            }
        }
        (deltas, owners, fails)
    }

    /// Puts the counts of unwritten `deltas` back into their keys' cells,
    /// and queues those keys again.
    fn restore(&self, deltas: Vec<UsageDelta>, owners: &[&Arc<CachedKey>]) {
        for (d, key) in deltas.into_iter().zip(owners) {
            let cell = &key.usage;
            let hour = d.hour.timestamp_millis().div_euclid(HOUR_MS) as i32;
            let slot = (hour & 1) as usize;
            cell.set_slot_hour(slot, hour);
            for (code, n) in d.counts {
                cell.undrain(slot, code, n);
            }
            if let Some(last) = d.last_used_at {
                cell.restore_last_used(last.timestamp_millis());
            }
            self.pending.requeue(key);
        }
    }

    /// The failure buckets of minutes that have ended (all, when `all`),
    /// as audit entries.
    fn closed_failures(&self, audit: &AuditLog, all: bool) -> Vec<keyward_store::Write> {
        let minute = self.current_minute();
        take_ended(&self.failures, |b| all || b.minute < minute)
            .into_iter()
            .map(|(bucket, counts)| {
                let attempts: u64 = counts.values().sum();
                audit.event(Event {
                    workspace_id: bucket.workspace_id,
                    at: DateTime::from_timestamp(bucket.minute, 0).unwrap_or_default(),
                    actor: Actor::system(),
                    action: bucket.action.to_owned(),
                    target: bucket.target,
                    ip: None,
                    user_agent: None,
                    outcome: Outcome::Failure,
                    changes: serde_json::json!({"attempts": attempts, "codes": counts, "period": "1m"}).to_string(),
                })
            })
            .collect()
    }

    /// The start of the current minute, seconds since the epoch.
    fn current_minute(&self) -> i64 {
        self.clock.now().timestamp().div_euclid(60) * 60
    }

    /// Writes everything pending, one transaction per [`FLUSH_CHUNK`] keys
    /// so that other writes (creates, revokes) are not held up behind a
    /// large flush, then the failed authentications of ended minutes (all
    /// of them at shutdown). On failure the unwritten counts are kept for
    /// the next attempt.
    pub async fn flush(
        &self,
        store: &dyn Store,
        audit: &AuditLog,
        all: bool,
    ) -> Result<usize, keyward_store::StoreError> {
        // The keys queued now: keys used again meanwhile wait for the
        // next flush, so that a steady load cannot keep this one going.
        let mut left = self.pending.len();
        let mut written = 0;
        while left > 0 {
            let keys = self.pending.take(left.min(FLUSH_CHUNK));
            if keys.is_empty() {
                break;
            }
            left -= keys.len();
            let (deltas, owners, failed) = Self::drain(&keys);
            if let Err(e) = store.record_usage(&deltas).await {
                self.restore(deltas, &owners);
                return Err(e);
            }
            written += keys.len();
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            for (bucket, counts) in failed.into_iter().flatten() {
                let into = failures.entry(bucket).or_default();
                for (code, n) in counts {
                    *into.entry(code).or_default() += n;
                }
            }
        }
        let mut entries = self.closed_failures(audit, all);
        entries.extend(self.closed_tokens(audit, all));
        if !entries.is_empty() {
            // Lost if the store refuses: a record of attempts, not of state.
            let mut change = Change::new();
            change.extend(entries);
            audit.work().commit(change).await?;
        }
        Ok(written)
    }
}

/// Takes the buckets `ended` picks (minutes that are over) out of `map`.
fn take_ended<K: Eq + std::hash::Hash, V>(map: &Mutex<HashMap<K, V>>, ended: impl Fn(&K) -> bool) -> Vec<(K, V)> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.extract_if(|k, _| ended(k)).collect()
}

/// Flushes every `interval` until `shutdown` fires, then once more; drops
/// rollups older than the retention, and expired refresh tokens, once an
/// hour.
pub async fn run_flusher(
    recorder: Arc<UsageRecorder>,
    store: Arc<dyn Store>,
    audit: Arc<AuditLog>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_hour = i64::MIN;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Err(e) = recorder.flush(store.as_ref(), &audit, false).await {
            tracing::warn!(error = %e, "usage flush failed; will retry");
        }
        let now = audit.now();
        if now.timestamp() / 3600 != pruned_hour {
            pruned_hour = now.timestamp() / 3600;
            if let Err(e) = store.prune_rollups(now - audit.retention).await {
                tracing::warn!(error = %e, "pruning usage rollups failed");
            }
            // Refresh tokens whose grant has ended are of no more use.
            if let Err(e) = store.prune_refresh_tokens(now).await {
                tracing::warn!(error = %e, "pruning expired refresh tokens failed");
            }
        }
    }
    match recorder.flush(store.as_ref(), &audit, true).await {
        Ok(n) => tracing::info!(keys = n, "flushed usage counts at shutdown"),
        Err(e) => tracing::error!(error = %e, "final usage flush failed"),
    }
}
