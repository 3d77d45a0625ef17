//! The embedded verifier: a local copy of a workspace's verification
//! records, kept by keyward's replication stream, deciding in-process with
//! the server's own [`crate::decide`].
//!
//! ```no_run
//! # async fn run() -> Result<(), keyward_verifier::embedded::ConnectError> {
//! use keyward_verifier::embedded::{Check, Verifier};
//! let verifier = Verifier::connect("http://127.0.0.1:8080", "kw_live_…").await?;
//! let verdict = verifier.verify(&Check { key: "kw_live_…", method: Some("GET"), ..Check::default() }).await;
//! assert!(verdict.decision.is_valid());
//! # Ok(()) }
//! ```
//!
//! - Keys whose answer the server must give (credits, rate limits, an
//!   identity's limits, a foreign token, a key without a replica digest)
//!   are verified by the server over HTTP; [`Verdict::path`] says which.
//! - Staleness is bounded: when no event (a heartbeat comes every second)
//!   arrived for [`Options::max_staleness`], a fail-closed verifier (the
//!   default) refuses every key ([`Path::Stale`]); a fail-open one keeps
//!   deciding from its copy, and decides the server's keys itself too.
//! - Uses are counted per key and reported to the server in batches.
//! - Reconnects and resumes by itself (`?after=`); a malformed event makes
//!   it start again from a snapshot. It never panics on what it reads.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::DateTime;
use compact_str::CompactString;
use futures_util::StreamExt;
use hashbrown::HashTable;
use keyward_core::expr::PermissionExpr;
use keyward_core::hash::SecretHasher;
use keyward_core::member::Role;
use keyward_core::route::RouteScope;
use keyward_core::token::{self, ID_LEN};
use keyward_core::verify::{Decision, Request, VerifyCode};

use crate::cache::CachedKey;
use crate::clock::Clock;
use crate::decide::decide;
use crate::record::Interner;
use crate::replica::{Event, Malformed, ReplicaWorkspace};
use crate::usage::Pending;

/// How the verifier behaves.
#[derive(Clone)]
pub struct Options {
    /// Keep deciding from the local copy when it is stale (and decide the
    /// server's keys locally when the server cannot be reached).
    pub fail_open: bool,
    /// How old the last event may be before the copy is stale.
    pub max_staleness: Duration,
    /// How often uses are reported.
    pub usage_interval: Duration,
    /// How long [`Verifier::connect`] waits for the first snapshot.
    pub connect_timeout: Duration,
    /// Time allowed to one remote verification.
    pub remote_timeout: Duration,
    /// The time (see [`Clock`]): expiry, grace periods, the hour a use
    /// counts in, and how old the last event is.
    pub clock: Clock,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("fail_open", &self.fail_open)
            .field("max_staleness", &self.max_staleness)
            .field("usage_interval", &self.usage_interval)
            .field("connect_timeout", &self.connect_timeout)
            .field("remote_timeout", &self.remote_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fail_open: false,
            max_staleness: Duration::from_secs(30),
            usage_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            remote_timeout: Duration::from_secs(5),
            clock: crate::clock::wall(),
        }
    }
}

/// What a request needs of the key presented with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Check<'a> {
    /// The key as presented.
    pub key: &'a str,
    pub permission: Option<&'a Permission>,
    pub resource: Option<&'a str>,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub tags: Option<&'a [String]>,
}

/// A permission (or expression of permissions) a request needs, parsed once.
#[derive(Debug, Clone)]
pub struct Permission {
    text: String,
    expr: PermissionExpr,
}

impl Permission {
    pub fn parse(text: &str) -> Result<Self, keyward_core::Error> {
        Ok(Permission { text: text.to_owned(), expr: PermissionExpr::parse(text)? })
    }
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// In-process, from the local copy.
    Local,
    /// By the server (credits, limits, or a key only it can check).
    Remote,
    /// Refused without looking: the copy is stale and the verifier fails
    /// closed (or the server could not answer for one of its keys).
    Stale,
}

/// A decision and where it was made.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    pub path: Path,
    /// The key's id, when the key was found.
    pub key_id: Option<CompactString>,
    pub workspace_id: Option<CompactString>,
}

impl Verdict {
    fn refused(decision: Decision, path: Path) -> Self {
        Verdict { decision, path, key_id: None, workspace_id: None }
    }
}

/// Why [`Verifier::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused the credential (401, 403) or the request (400).
    Refused { status: u16, body: String },
    /// No snapshot arrived in time.
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused { status, body } => {
                write!(f, "keyward refused the replication stream ({status}): {body}")
            }
            ConnectError::Timeout => f.write_str("no snapshot from keyward in time"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A workspace as the verifier holds it.
struct Workspace {
    /// Its id, as verdicts carry it.
    id: CompactString,
    hasher: SecretHasher,
    routes: Vec<RouteScope>,
    roles: Vec<Role>,
}

struct Held {
    key: Arc<CachedKey>,
    /// Its workspace as it is now (`None` until the workspace's event
    /// arrives): a change to a workspace is written into each of its keys,
    /// so a decision needs no second lookup.
    workspace: Option<Arc<Workspace>>,
    /// Only the server decides exactly (see [`crate::replica::ReplicaKey::remote`]).
    remote: bool,
    /// Has a replica digest (else only the server can check its secret).
    checkable: bool,
}

impl Held {
    /// The token id of its key (`key_` + the id).
    fn token_id(&self) -> &[u8] {
        self.key.id.as_bytes().get(4..).unwrap_or_default()
    }

    /// Whether its key's token id is `id` (compared as one array: a slice
    /// comparison calls `memcmp`).
    fn is(&self, id: &[u8; ID_LEN]) -> bool {
        <&[u8; ID_LEN]>::try_from(self.token_id()).is_ok_and(|own| own == id)
    }
}

const SHARDS: usize = 64;

/// The local copy. The keys are found by token id in tables that hold only
/// the entries (the id is the record's own), hashed once for both the
/// shard and the slot. A snapshot is received into a second copy whose
/// tables then replace these, shard by shard: a decision takes one read
/// lock and nothing else.
struct Copy {
    keys: Vec<RwLock<HashTable<Held>>>,
    workspaces: RwLock<HashMap<Arc<str>, Arc<Workspace>>>,
    /// Of the id hash, so that which ids collide cannot be known ahead
    /// (imported keys bring their own ids). A snapshot's copy has its live
    /// copy's seed, so its tables can be moved in.
    seed: u64,
}

impl Copy {
    fn new(seed: u64) -> Self {
        Copy { keys: (0..SHARDS).map(|_| RwLock::default()).collect(), workspaces: RwLock::default(), seed }
    }

    /// The ids are random: one folded multiply of their two halves (the
    /// default SipHash cost more than the table lookup).
    fn hash(&self, id: &[u8]) -> u64 {
        let id = u128::from_le_bytes(id.try_into().unwrap_or_default());
        let product = u128::from((id as u64) ^ self.seed) * u128::from(((id >> 64) as u64) ^ 0x9e37_79b9_7f4a_7c15);
        (product as u64) ^ ((product >> 64) as u64)
    }

    /// The shard of a hash: bits the table itself uses neither for the slot
    /// (the low ones) nor for its tags (the top seven).
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Held>> {
        &self.keys[(hash >> 40) as usize % SHARDS]
    }

    fn workspace(&self, id: &str) -> Option<Arc<Workspace>> {
        self.workspaces.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Holds `workspace` (new, or changed) and gives it to its keys.
    fn set_workspace(&self, id: &str, workspace: Workspace) {
        let workspace = Arc::new(workspace);
        self.workspaces.write().unwrap_or_else(|p| p.into_inner()).insert(Arc::from(id), workspace.clone());
        for shard in &self.keys {
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            for held in shard.iter_mut().filter(|h| &*h.key.workspace_id == id) {
                held.workspace = Some(workspace.clone());
            }
        }
    }

    /// Takes `other`'s keys and workspaces in place of its own.
    fn replace_with(&self, other: Copy) {
        *self.workspaces.write().unwrap_or_else(|p| p.into_inner()) =
            other.workspaces.into_inner().unwrap_or_else(|p| p.into_inner());
        for (live, new) in self.keys.iter().zip(other.keys) {
            let new = new.into_inner().unwrap_or_else(|p| p.into_inner());
            let old = std::mem::replace(&mut *live.write().unwrap_or_else(|p| p.into_inner()), new);
            drop(old); // outside the lock
        }
    }

    fn len(&self) -> usize {
        self.keys.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

struct Shared {
    url: String,
    credential: String,
    options: Options,
    http: reqwest::Client,
    copy: Copy,
    /// Shares workspace ids and scope lists between records.
    interner: Interner,
    /// When the last event arrived (by the clock, in ms).
    last_event: AtomicI64,
    /// [`Options::max_staleness`] in ms.
    max_staleness_ms: i64,
    ready: AtomicBool,
    pending: Pending,
    /// Told when the first snapshot is complete (or the server refused).
    ready_tx: ReadyTx,
}

type ReadyTx = tokio::sync::watch::Sender<Option<Result<(), (u16, String)>>>;

/// The embedded verifier. Cheap to clone (one `Arc`); its background tasks
/// end when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("url", &self.shared.url).field("keys", &self.len()).finish()
    }
}

impl Verifier {
    /// Connects to keyward at `url` with `credential` (a key holding
    /// `keys:replicate`, and `keys:verify` for the server's keys; or the
    /// node-wide replication token) and waits for the first snapshot.
    pub async fn connect(url: &str, credential: &str) -> Result<Verifier, ConnectError> {
        Self::connect_with(url, credential, Options::default()).await
    }

    pub async fn connect_with(url: &str, credential: &str, options: Options) -> Result<Verifier, ConnectError> {
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(None);
        let shared = Arc::new(Shared::new(url.trim_end_matches('/'), credential, ready_tx, options));
        tokio::spawn(follow(Arc::downgrade(&shared)));
        tokio::spawn(report(Arc::downgrade(&shared)));
        let timeout = shared.options.connect_timeout;
        let waited = tokio::time::timeout(timeout, ready_rx.wait_for(Option::is_some)).await;
        let outcome = match waited {
            Ok(Ok(outcome)) => outcome.clone(),
            _ => return Err(ConnectError::Timeout),
        };
        match outcome {
            Some(Err((status, body))) => Err(ConnectError::Refused { status, body }),
            _ => Ok(Verifier { shared }),
        }
    }

    /// A verifier holding what `events` say (a snapshot, say), following
    /// no server: for benchmarks and tests of the copy itself. Its copy
    /// goes stale after [`Options::max_staleness`] like any other.
    pub fn from_events(events: impl IntoIterator<Item = Event>, options: Options) -> Result<Verifier, Malformed> {
        let shared = Shared::new("", "", tokio::sync::watch::channel(None).0, options);
        let (mut staging, mut after) = (None, None);
        for event in events {
            shared.apply(event, &mut staging, &mut after)?;
        }
        Ok(Verifier { shared: Arc::new(shared) })
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shared.copy.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long ago (by [`Options::clock`]) the last event (or heartbeat)
    /// arrived.
    pub fn last_event_age(&self) -> Duration {
        let age = (self.shared.options.clock)() - self.shared.last_event.load(Ordering::Relaxed);
        Duration::from_millis(u64::try_from(age).unwrap_or(0))
    }

    /// Whether the copy is older than the bound.
    pub fn is_stale(&self) -> bool {
        self.shared.stale_at((self.shared.options.clock)())
    }

    /// Decides for `check` in-process, if it can be: `None` when the server
    /// must (then [`Verifier::verify`] asks it).
    pub fn verify_local(&self, check: &Check<'_>) -> Option<Verdict> {
        let shared = &*self.shared;
        // The one reading of the clock: staleness, expiry, the use's hour.
        let now_ms = (shared.options.clock)();
        let fail_open = shared.options.fail_open;
        if !fail_open && shared.stale_at(now_ms) {
            return Some(stale());
        }
        let Ok(parsed) = token::parse(check.key) else {
            // A foreign-format key: only the server finds those.
            return None;
        };
        let id: &[u8; ID_LEN] = parsed.id.as_bytes().try_into().ok()?;
        let hash = shared.copy.hash(id);
        let shard = shared.copy.shard(hash).read().unwrap_or_else(|p| p.into_inner());
        let Some(held) = shard.find(hash, |h| h.is(id)) else {
            return Some(Verdict::refused(Decision::fixed(VerifyCode::NotFound, false), Path::Local));
        };
        if !held.checkable || (held.remote && !fail_open) {
            return None;
        }
        let key = &held.key;
        let ws = held.workspace.as_ref()?;
        let request = Request {
            permission: check.permission.map(|p| &p.expr),
            resource: check.resource,
            method: check.method,
            path: check.path,
            routes: &ws.routes,
            origin: check.origin,
            ip: check.ip,
            tags: check.tags,
            roles: &ws.roles,
            ..Request::default()
        };
        let now = || DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        let decision = decide(key, check.key, Some(&parsed), &ws.hasher, &request, now);
        shared.pending.count(key, decision.code, decision.authenticated, now_ms);
        Some(Verdict { decision, path: Path::Local, key_id: Some(key.id.clone()), workspace_id: Some(ws.id.clone()) })
    }

    /// Decides for `check`: in-process when it can, else by the server.
    pub async fn verify(&self, check: &Check<'_>) -> Verdict {
        if let Some(verdict) = self.verify_local(check) {
            return verdict;
        }
        match self.remote(check).await {
            Some(verdict) => verdict,
            None => stale(),
        }
    }

    /// Asks the server (`POST /v1/keys/verify`); `None` when it cannot answer.
    async fn remote(&self, check: &Check<'_>) -> Option<Verdict> {
        let shared = &self.shared;
        let body = serde_json::json!({
            "key": check.key,
            "permission": check.permission.map(|p| &p.text),
            "resource": check.resource,
            "method": check.method,
            "path": check.path,
            "origin": check.origin,
            "ip": check.ip.map(|ip| ip.to_string()),
            "tags": check.tags,
        });
        let sent = shared
            .http
            .post(format!("{}/v1/keys/verify", shared.url))
            .bearer_auth(&shared.credential)
            .timeout(shared.options.remote_timeout)
            .json(&body)
            .send()
            .await;
        let answer: serde_json::Value = match sent {
            Ok(r) if r.status().is_success() => r.json().await.ok()?,
            _ => return None,
        };
        let code = answer["code"].as_str().and_then(|c| VerifyCode::ALL.into_iter().find(|v| v.as_str() == c))?;
        let message = answer["message"].as_str().unwrap_or_default().to_owned();
        let authenticated = answer["keyId"].is_string();
        Some(Verdict {
            decision: Decision { code, message: message.into(), authenticated },
            path: Path::Remote,
            key_id: answer["keyId"].as_str().map(CompactString::new),
            workspace_id: answer["workspaceId"].as_str().map(CompactString::new),
        })
    }
}

fn stale() -> Verdict {
    Verdict::refused(
        Decision {
            code: VerifyCode::NotFound,
            message: "keyward cannot be reached and the local copy is stale; every key is refused (fail-closed)".into(),
            authenticated: false,
        },
        Path::Stale,
    )
}

impl Shared {
    fn new(url: &str, credential: &str, ready_tx: ReadyTx, options: Options) -> Self {
        Shared {
            url: url.to_owned(),
            credential: credential.to_owned(),
            http: reqwest::Client::builder().tcp_nodelay(true).build().unwrap_or_default(),
            copy: Copy::new(std::collections::hash_map::RandomState::new().hash_one(0u8)),
            interner: Interner::default(),
            last_event: AtomicI64::new(0),
            max_staleness_ms: i64::try_from(options.max_staleness.as_millis()).unwrap_or(i64::MAX),
            ready: AtomicBool::new(false),
            pending: Pending::default(),
            ready_tx,
            options,
        }
    }

    fn touched(&self) {
        self.last_event.store((self.options.clock)(), Ordering::Relaxed);
    }

    /// Whether the copy is older than the bound at `now_ms`.
    fn stale_at(&self, now_ms: i64) -> bool {
        !self.ready.load(Ordering::Relaxed)
            || now_ms.saturating_sub(self.last_event.load(Ordering::Relaxed)) > self.max_staleness_ms
    }
}

/// Follows the stream for as long as the verifier lives: connects,
/// applies events, and reconnects (resuming) when the stream ends.
async fn follow(shared: std::sync::Weak<Shared>) {
    let mut after: Option<u64> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let Some(this) = shared.upgrade() else { return };
        match this.stream_once(&mut after).await {
            Ok(()) => delay = Duration::from_millis(50),
            Err(StreamEnd::Refused(status, body)) => {
                if status == 400 && after.is_some() {
                    // Our position is unknown to this node: start over.
                    after = None;
                    continue;
                }
                this.ready_tx.send_if_modified(|r| {
                    let first = r.is_none();
                    if first {
                        *r = Some(Err((status, body)));
                    }
                    first
                });
            }
            Err(StreamEnd::Malformed) => after = None,
            Err(StreamEnd::Broken) => {}
        }
        drop(this);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

enum StreamEnd {
    Refused(u16, String),
    Malformed,
    Broken,
}

impl Shared {
    async fn stream_once(&self, after: &mut Option<u64>) -> Result<(), StreamEnd> {
        let mut url = format!("{}/v1/replication/stream", self.url);
        if let Some(a) = after {
            url.push_str(&format!("?after={a}"));
        }
        let response = self.http.get(url).bearer_auth(&self.credential).send().await.map_err(|_| StreamEnd::Broken)?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(StreamEnd::Refused(status, body));
        }
        let mut body = response.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        // A snapshot being received: applied whole at its end.
        let mut staging: Option<Copy> = None;
        loop {
            let chunk = match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                // Ended, broken, or silent past several heartbeats.
                _ => return Err(StreamEnd::Broken),
            };
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let event: Event = serde_json::from_slice(&line).map_err(|_| StreamEnd::Malformed)?;
                self.apply(event, &mut staging, after).map_err(|_| StreamEnd::Malformed)?;
            }
            if buf.len() > 16 << 20 {
                return Err(StreamEnd::Malformed);
            }
        }
    }

    fn apply(&self, event: Event, staging: &mut Option<Copy>, after: &mut Option<u64>) -> Result<(), Malformed> {
        self.touched();
        let seq = event.seq();
        match event {
            Event::Snapshot { .. } => *staging = Some(Copy::new(self.copy.seed)),
            Event::SnapshotEnd { .. } => {
                let copy = staging.take().ok_or(Malformed("snapshot_end without snapshot"))?;
                self.copy.replace_with(copy);
                self.ready.store(true, Ordering::Relaxed);
                self.ready_tx.send_if_modified(|r| {
                    let first = r.is_none();
                    if first {
                        *r = Some(Ok(()));
                    }
                    first
                });
            }
            Event::Heartbeat { .. } => {}
            Event::Workspace { workspace, .. } => {
                let held = workspace_of(&workspace)?;
                staging.as_ref().unwrap_or(&self.copy).set_workspace(&workspace.id, held);
            }
            Event::Key { id, record, .. } => {
                let copy = staging.as_ref().unwrap_or(&self.copy);
                let Some(token_id) = token::token_id_of_key_id(&id) else {
                    // An imported key in a foreign format: the server's.
                    return Ok(());
                };
                let token_id: &[u8; ID_LEN] = token_id.as_bytes().try_into().map_err(|_| Malformed("id"))?;
                let hash = copy.hash(token_id);
                let same = |h: &Held| h.is(token_id);
                let held = match record {
                    Some(r) => Some(Held {
                        remote: r.remote,
                        checkable: r.digest.is_some(),
                        workspace: copy.workspace(&r.workspace_id),
                        key: Arc::new(CachedKey::new(r.record(&self.interner)?, 0)),
                    }),
                    None => None,
                };
                let mut shard = copy.shard(hash).write().unwrap_or_else(|p| p.into_inner());
                match (shard.find_entry(hash, same), held) {
                    (Ok(entry), None) => {
                        entry.remove();
                    }
                    (Err(_), None) => {}
                    (Ok(mut entry), Some(held)) => {
                        // An older version than the one held is ignored.
                        if entry.get().key.version <= held.key.version {
                            *entry.get_mut() = held;
                        }
                    }
                    (Err(_), Some(held)) => {
                        shard.insert_unique(hash, held, |h| copy.hash(h.token_id()));
                    }
                }
            }
        }
        if staging.is_none() {
            *after = Some(seq);
        }
        Ok(())
    }
}

fn workspace_of(ws: &ReplicaWorkspace) -> Result<Workspace, Malformed> {
    Ok(Workspace {
        id: CompactString::new(&ws.id),
        hasher: SecretHasher::new(&ws.key()?).map_err(|_| Malformed("replica_key"))?,
        routes: ws.route_scopes()?,
        roles: ws.roles(),
    })
}

/// Reports counted uses every [`Options::usage_interval`] (and puts them
/// back when the server cannot take them).
async fn report(shared: std::sync::Weak<Shared>) {
    let interval = match shared.upgrade() {
        Some(s) => s.options.usage_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(this) = shared.upgrade() else { return };
        let _ = this.report_once().await;
    }
}

impl Shared {
    async fn report_once(&self) -> Result<(), ()> {
        loop {
            let keys = self.pending.take(1000);
            if keys.is_empty() {
                return Ok(());
            }
            let mut usage = Vec::with_capacity(keys.len());
            let mut drained = Vec::with_capacity(keys.len());
            for key in &keys {
                key.usage.clean();
                let last = key.usage.take_last_used();
                let mut counts = serde_json::Map::new();
                let mut slots = Vec::new();
                for slot in 0..2 {
                    for (code, n) in key.usage.drain(slot) {
                        let total = counts.get(code).and_then(serde_json::Value::as_u64).unwrap_or(0) + n;
                        counts.insert(code.to_owned(), total.into());
                        slots.push((slot, code, n));
                    }
                }
                drained.push((key.clone(), last, slots));
                if counts.is_empty() {
                    continue;
                }
                let at = if last > 0 { last } else { (self.options.clock)() };
                let last_used = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
                usage.push(serde_json::json!({"keyId": key.id.as_str(), "counts": counts, "lastUsed": last_used}));
            }
            if usage.is_empty() {
                continue;
            }
            let sent = self
                .http
                .post(format!("{}/v1/replication/usage", self.url))
                .bearer_auth(&self.credential)
                .json(&serde_json::json!({ "usage": usage }))
                .send()
                .await;
            if !matches!(&sent, Ok(r) if r.status().is_success()) {
                for (key, last, slots) in drained {
                    key.usage.restore_last_used(last);
                    for (slot, code, n) in slots {
                        key.usage.undrain(slot, code, n);
                    }
                    self.pending.requeue(&key);
                }
                return Err(());
            }
        }
    }
}
