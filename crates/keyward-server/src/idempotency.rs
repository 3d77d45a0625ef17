//! `Idempotency-Key`: a retried request gets the first one's answer.
//!
//! A request carrying a key (per workspace and credential) is first
//! looked up: a key used already answers from its record. Otherwise the
//! request runs, and the change it makes claims the key with a
//! fingerprint of what it asks (method, path, body), first thing in the
//! same transaction ([`crate::work::UnitOfWork::commit`] reads the claim of
//! the request it runs for): of two requests with one key, one change
//! commits, and the other request answers from the winner's record. The
//! answer is then kept, sealed under the master key, until the record
//! expires. A request that changed nothing wrote nothing, so a retry
//! simply runs again. HTTP is [`crate::api::idempotency`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use keyward_core::sealed::Keyring;
use keyward_core::{Code, Error};
use keyward_store::idempotency::{IdempotencyClaim, IdempotencyRecord, IdempotencyScope, StoredAnswer};
use keyward_store::{IdempotencyWrite, Store, StoreError, Write};

use crate::work::{Change, UnitOfWork};
use std::sync::Mutex;

use crate::clock::Clock;
use crate::principal::{Caller, Principal};

/// How long after its change a request has to keep its answer: a retry
/// meanwhile waits; after it, the answer was lost.
pub const LEASE: Duration = Duration::seconds(60);

/// The longest key clients may choose.
pub const MAX_KEY_LEN: usize = 255;

tokio::task_local! {
    /// The claim of the request this task serves.
    static CLAIM: Arc<Claim>;
}

/// A request's claim on its key, while it runs.
#[derive(Debug)]
pub struct Claim {
    scope: IdempotencyScope,
    fingerprint: String,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    /// A change of the request committed (claiming the key).
    committed: AtomicBool,
    /// Another request's change claimed the key first.
    lost: AtomicBool,
}

impl Claim {
    /// Runs `work` (the request) as the claim's holder: what it commits
    /// marks the claim.
    pub async fn hold<F: std::future::Future>(self: &Arc<Self>, work: F) -> F::Output {
        CLAIM.scope(self.clone(), work).await
    }

    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::Acquire)
    }

    /// Another request with the key made its change first (this one's was
    /// refused): answer as a retry would be.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

/// The claim a change of a request holding a key commits first (its first
/// change only), and the claim to tell how the commit went.
pub(crate) fn claim_write() -> Option<(Write, Arc<Claim>)> {
    CLAIM
        .try_with(|c| {
            let now = c.clock.now();
            let claim = IdempotencyClaim {
                scope: c.scope.clone(),
                fingerprint: c.fingerprint.clone(),
                now,
                locked_until: now + LEASE,
                expires_at: now + c.ttl,
            };
            (!c.committed()).then(|| (Write::Idempotency(IdempotencyWrite::Claim(claim)), c.clone()))
        })
        .ok()
        .flatten()
}

/// Tells the claim how its change's commit went.
pub(crate) fn commit_went(claim: &Claim, result: &Result<(), StoreError>) {
    match result {
        Ok(()) => claim.committed.store(true, Ordering::Release),
        Err(StoreError::Conflict(keyward_store::Unique::IdempotencyKey)) => claim.lost.store(true, Ordering::Release),
        Err(_) => {}
    }
}

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begun {
    /// Run it, holding this claim.
    Run(Arc<Claim>),
    /// Answer with the first request's answer.
    Replay(Answer),
}

/// An answer as kept: status, the headers that matter, the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers a replay repeats (never a cookie: the answer is for a retry of
/// the same credential, which has its session already).
pub const KEPT_HEADERS: [&str; 5] = ["content-type", "location", "etag", "cache-control", "retry-after"];

pub struct IdempotencyService {
    store: Arc<dyn Store>,
    /// Claims, answers and releases commit through it (unaudited: they
    /// record a client's retry key, not a change of anything).
    work: Arc<UnitOfWork>,
    clock: Arc<dyn Clock>,
    keyring: Option<Arc<Keyring>>,
    /// How long a record (and its answer) is kept.
    ttl: Duration,
    last_prune: Mutex<Option<DateTime<Utc>>>,
}

/// Whether `value` can be a key: 1–255 printable ASCII characters.
pub fn valid_key(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= MAX_KEY_LEN && value.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// The hash of what a request asks: a retry must ask the same.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    keyward_core::hash::hex(&h.finalize())
}

/// The credential a caller presented, by id (never the secret).
fn credential_of(principal: &Principal) -> String {
    match &principal.caller {
        Caller::ApiKey(key, _) => format!("key:{}", key.record.id),
        Caller::Member(m) => format!("session:{}", m.session_id),
        Caller::System { .. } => "system".to_owned(),
    }
}

fn sealing_context(scope: &IdempotencyScope) -> Vec<u8> {
    format!("idempotency\n{}\n{}\n{}", scope.workspace_id, scope.credential, scope.key_hash).into_bytes()
}

impl IdempotencyService {
    pub fn new(
        store: Arc<dyn Store>,
        work: Arc<UnitOfWork>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
        ttl: Duration,
    ) -> Self {
        IdempotencyService { store, work, clock, keyring, ttl, last_prune: Mutex::new(None) }
    }

    async fn write(&self, write: IdempotencyWrite) -> Result<(), StoreError> {
        let change = Change::unaudited("an idempotency key records a client's retry key, not a change");
        self.work.commit(change.with(Write::Idempotency(write))).await
    }

    /// Answers are kept only sealed: without a master key, keys are not
    /// honoured (keyward makes one on first start).
    pub fn enabled(&self) -> bool {
        self.keyring.is_some()
    }

    /// Claims `key` for `principal`'s request with `fingerprint`, or says
    /// why not: the key was used for another request (422), its request is
    /// still running (409 with the seconds to wait), or it changed
    /// something and its answer was lost (409).
    pub async fn begin(&self, principal: &Principal, key: &str, fingerprint: String) -> Result<Begun, Refusal> {
        use sha2::{Digest, Sha256};
        let now = self.clock.now();
        self.prune_now_and_then(now);
        let scope = IdempotencyScope {
            workspace_id: principal.workspace_id().to_owned(),
            credential: credential_of(principal),
            key_hash: keyward_core::hash::hex(&Sha256::digest(key.as_bytes())),
        };
        let record = self.store.idempotency_record(&scope, now).await;
        match record.map_err(|e| Refusal::Error(crate::keys::store_error(e)))? {
            Some(record) => self.answer_of(&scope, record, &fingerprint, now),
            None => Ok(Begun::Run(Arc::new(Claim {
                scope,
                fingerprint,
                clock: self.clock.clone(),
                ttl: self.ttl,
                committed: AtomicBool::new(false),
                lost: AtomicBool::new(false),
            }))),
        }
    }

    /// The answer for a request whose change lost the key to another
    /// request's: that one's, as a retry would get it.
    pub async fn after_lost_race(&self, claim: &Claim) -> Result<Answer, Refusal> {
        let now = self.clock.now();
        let record = self.store.idempotency_record(&claim.scope, now).await;
        match record.map_err(|e| Refusal::Error(crate::keys::store_error(e)))? {
            Some(record) => match self.answer_of(&claim.scope, record, &claim.fingerprint, now)? {
                Begun::Replay(answer) => Ok(answer),
                Begun::Run(_) => Err(Refusal::InProgress { retry_after: 1 }),
            },
            // Expired meanwhile: a retry runs afresh.
            None => Err(Refusal::InProgress { retry_after: 1 }),
        }
    }

    fn answer_of(
        &self,
        scope: &IdempotencyScope,
        record: IdempotencyRecord,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<Begun, Refusal> {
        if record.fingerprint != fingerprint {
            return Err(Refusal::Reused);
        }
        match record.answer {
            Some(answer) => self.open(scope, &answer).map(Begun::Replay).map_err(Refusal::Error),
            None if record.locked_until > now => {
                let wait = (record.locked_until - now).num_seconds().max(1);
                Err(Refusal::InProgress { retry_after: wait.unsigned_abs() })
            }
            None => Err(Refusal::Lost),
        }
    }

    /// Keeps the answer of a request that changed something.
    pub async fn finish(&self, claim: &Claim, answer: Option<&Answer>) {
        let kept = match (claim.committed(), answer, &self.keyring) {
            (true, Some(answer), Some(keyring)) => {
                let headers = serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".to_owned());
                let body = keyring.seal(&answer.body, &sealing_context(&claim.scope));
                let answer = StoredAnswer { status: answer.status, headers, body };
                self.write(IdempotencyWrite::Answer { scope: claim.scope.clone(), answer }).await
            }
            // Too large to keep, or no key to seal it with: a retry hears
            // that the change was made. Nothing changed, nothing to keep.
            _ => Ok(()),
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "keeping an idempotent answer failed");
        }
    }

    fn open(&self, scope: &IdempotencyScope, stored: &StoredAnswer) -> Result<Answer, Error> {
        let keyring = self.keyring.as_ref().ok_or_else(|| Error::internal("master key not configured"))?;
        let body = keyring.open(&stored.body, &sealing_context(scope))?;
        let headers: Vec<(String, String)> = serde_json::from_str(&stored.headers)
            .map_err(|_| Error::internal("a kept idempotent answer could not be read"))?;
        Ok(Answer { status: stored.status, headers, body })
    }

    /// Forgets expired records, at most every ten minutes, off the request.
    fn prune_now_and_then(&self, now: DateTime<Utc>) {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now - at < Duration::minutes(10)) {
                return;
            }
            *last = Some(now);
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.prune_idempotency(now).await {
                tracing::warn!(error = %e, "pruning idempotency keys failed");
            }
        });
    }
}

/// Why a request's key cannot run it.
#[derive(Debug)]
pub enum Refusal {
    Reused,
    InProgress { retry_after: u64 },
    Lost,
    Error(Error),
}

impl Refusal {
    pub fn message(&self) -> (Code, &'static str) {
        match self {
            Refusal::Reused => (
                Code::IdempotencyKeyReused,
                "This Idempotency-Key was used for another request (method, path or body differ); \
                 use a new key for a new request",
            ),
            Refusal::InProgress { .. } => (
                Code::IdempotencyKeyInProgress,
                "The first request with this Idempotency-Key is still running; retry after Retry-After seconds",
            ),
            Refusal::Lost => (
                Code::IdempotentAnswerLost,
                "The first request with this Idempotency-Key made its change, but its answer was not kept; \
                 look the result up instead of retrying",
            ),
            Refusal::Error(_) => (Code::InternalError, "Internal error"),
        }
    }
}
