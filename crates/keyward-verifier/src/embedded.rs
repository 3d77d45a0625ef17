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
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use compact_str::CompactString;
use futures_util::StreamExt;
use keyward_core::expr::PermissionExpr;
use keyward_core::hash::SecretHasher;
use keyward_core::member::Role;
use keyward_core::route::RouteScope;
use keyward_core::token::{self, ID_LEN};
use keyward_core::verify::{Decision, Request, VerifyCode};

use crate::cache::CachedKey;
use crate::decide::decide;
use crate::record::Interner;
use crate::replica::{Event, Malformed, ReplicaWorkspace};
use crate::usage::Pending;

/// How the verifier behaves.
#[derive(Debug, Clone)]
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
    /// What expiry and the counted uses are judged by.
    pub clock: fn() -> DateTime<Utc>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fail_open: false,
            max_staleness: Duration::from_secs(30),
            usage_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            remote_timeout: Duration::from_secs(5),
            clock: crate::clock::wall_clock,
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
    pub workspace_id: Option<Arc<str>>,
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
    hasher: SecretHasher,
    routes: Vec<RouteScope>,
    roles: Vec<Role>,
}

struct Held {
    key: Arc<CachedKey>,
    /// Only the server decides exactly (see [`crate::replica::ReplicaKey::remote`]).
    remote: bool,
    /// Has a replica digest (else only the server can check its secret).
    checkable: bool,
}

const SHARDS: usize = 64;

/// The local copy.
struct Copy {
    keys: Vec<RwLock<HashMap<[u8; ID_LEN], Held>>>,
    workspaces: RwLock<HashMap<Arc<str>, Arc<Workspace>>>,
    interner: Interner,
}

impl Copy {
    fn new() -> Self {
        Copy {
            keys: (0..SHARDS).map(|_| RwLock::default()).collect(),
            workspaces: RwLock::default(),
            interner: Interner::default(),
        }
    }

    fn shard(&self, id: &[u8; ID_LEN]) -> &RwLock<HashMap<[u8; ID_LEN], Held>> {
        let h = id.iter().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(*b)));
        &self.keys[h % SHARDS]
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
    copy: ArcSwap<Copy>,
    /// Milliseconds since `started` of the last event.
    last_event: AtomicU64,
    started: Instant,
    ready: AtomicBool,
    pending: Pending,
    /// Told when the first snapshot is complete (or the server refused).
    ready_tx: tokio::sync::watch::Sender<Option<Result<(), (u16, String)>>>,
}

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
        let shared = Arc::new(Shared {
            url: url.trim_end_matches('/').to_owned(),
            credential: credential.to_owned(),
            http: reqwest::Client::builder().tcp_nodelay(true).build().unwrap_or_default(),
            copy: ArcSwap::from_pointee(Copy::new()),
            last_event: AtomicU64::new(0),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            pending: Pending::default(),
            ready_tx,
            options,
        });
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
        let shared = Arc::new(Shared {
            url: String::new(),
            credential: String::new(),
            http: reqwest::Client::new(),
            copy: ArcSwap::from_pointee(Copy::new()),
            last_event: AtomicU64::new(0),
            started: Instant::now(),
            ready: AtomicBool::new(false),
            pending: Pending::default(),
            ready_tx: tokio::sync::watch::channel(None).0,
            options,
        });
        let (mut staging, mut after) = (None, None);
        for event in events {
            shared.apply(event, &mut staging, &mut after)?;
        }
        Ok(Verifier { shared })
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shared.copy.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long ago the last event (or heartbeat) arrived.
    pub fn last_event_age(&self) -> Duration {
        let now = self.shared.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.shared.last_event.load(Ordering::Relaxed)))
    }

    /// Whether the copy is older than the bound.
    pub fn is_stale(&self) -> bool {
        !self.shared.ready.load(Ordering::Relaxed) || self.last_event_age() > self.shared.options.max_staleness
    }

    /// Decides for `check` in-process, if it can be: `None` when the server
    /// must (then [`Verifier::verify`] asks it).
    pub fn verify_local(&self, check: &Check<'_>) -> Option<Verdict> {
        let fail_open = self.shared.options.fail_open;
        if !fail_open && self.is_stale() {
            return Some(stale());
        }
        let Ok(parsed) = token::parse(check.key) else {
            // A foreign-format key: only the server finds those.
            return None;
        };
        let copy = self.shared.copy.load();
        let id = parsed.id.as_bytes().try_into().ok()?;
        let shard = copy.shard(id).read().unwrap_or_else(|p| p.into_inner());
        let Some(held) = shard.get(id) else {
            return Some(Verdict::refused(Decision::fixed(VerifyCode::NotFound, false), Path::Local));
        };
        if !held.checkable || (held.remote && !fail_open) {
            return None;
        }
        let key = &held.key;
        let workspaces = copy.workspaces.read().unwrap_or_else(|p| p.into_inner());
        let ws = workspaces.get(&key.workspace_id)?;
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
        let now = (self.shared.options.clock)();
        let decision = decide(key, check.key, Some(&parsed), &ws.hasher, &request, || now);
        let now_ms = now.timestamp_millis();
        self.shared.pending.count(key, decision.code, decision.authenticated, now_ms);
        Some(Verdict {
            decision,
            path: Path::Local,
            key_id: Some(key.id.clone()),
            workspace_id: Some(key.workspace_id.clone()),
        })
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
            workspace_id: answer["workspaceId"].as_str().map(Arc::from),
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
    fn touched(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_event.store(now, Ordering::Relaxed);
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
            Event::Snapshot { .. } => *staging = Some(Copy::new()),
            Event::SnapshotEnd { .. } => {
                let copy = staging.take().ok_or(Malformed("snapshot_end without snapshot"))?;
                self.copy.store(Arc::new(copy));
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
                let id: Arc<str> = Arc::from(workspace.id.as_str());
                let live;
                let copy = match staging.as_ref() {
                    Some(c) => c,
                    None => {
                        live = self.copy.load_full();
                        &live
                    }
                };
                copy.workspaces.write().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::new(held));
            }
            Event::Key { id, record, .. } => {
                let live;
                let copy = match staging.as_ref() {
                    Some(c) => c,
                    None => {
                        live = self.copy.load_full();
                        &live
                    }
                };
                let Some(token_id) = token::token_id_of_key_id(&id) else {
                    // An imported key in a foreign format: the server's.
                    return Ok(());
                };
                let token_id: [u8; ID_LEN] = token_id.as_bytes().try_into().map_err(|_| Malformed("id"))?;
                let mut shard = copy.shard(&token_id).write().unwrap_or_else(|p| p.into_inner());
                match record {
                    None => {
                        shard.remove(&token_id);
                    }
                    Some(r) => {
                        if shard.get(&token_id).is_some_and(|h| h.key.version > r.version) {
                            return Ok(()); // older than what is held
                        }
                        let held = Held {
                            remote: r.remote,
                            checkable: r.digest.is_some(),
                            key: Arc::new(CachedKey::new(r.record(&copy.interner)?, 0)),
                        };
                        shard.insert(token_id, held);
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
                let at = if last > 0 { last } else { (self.options.clock)().timestamp_millis() };
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
