//! The replication stream (`GET /v1/replication/stream`): embedded
//! verifiers keep a copy of a workspace's verification records (replica
//! digests, never secrets) from a snapshot and then every change, in order.
//!
//! Fed by the flow that keeps this node's caches coherent: the unit of
//! work's local commits and the store's notices from other nodes (through
//! [`crate::verifier::Verifier::invalidated`]). Each change is read back
//! from the store once, numbered, kept in a bounded history (resumes with
//! `?after=`) and broadcast to every subscriber, each of whom holds at most
//! [`SUBSCRIBER_BACKLOG`] events: a subscriber that falls further behind is
//! dropped and resumes. Nothing is followed until the first subscriber
//! comes: a node without embedded verifiers pays nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use keyward_core::hash::SecretHasher;
use keyward_store::{KeyFilter, Page, Store};
use keyward_verifier::replica::{Event, ReplicaWorkspace};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc};

use crate::clock::Clock;

/// Events kept for subscribers that resume; an older `after` gets a fresh
/// snapshot.
pub const HISTORY: usize = 16_384;
/// Events a subscriber may be behind before it is dropped.
pub const SUBSCRIBER_BACKLOG: usize = 4_096;
/// Lines written ahead of a subscriber's socket.
const WRITE_AHEAD: usize = 64;
/// A subscriber that takes no line for this long stopped reading: dropped.
pub const STALLED: std::time::Duration = std::time::Duration::from_secs(5);
/// Keys per store read of a snapshot.
const SNAPSHOT_PAGE: u32 = 1_000;
/// A heartbeat when nothing else was sent for this long.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The node-wide replication token: every workspace.
    All,
    Workspace(String),
}

impl Scope {
    fn sees(&self, workspace_id: Option<&str>) -> bool {
        match (self, workspace_id) {
            (Scope::All, _) | (_, None) => true,
            (Scope::Workspace(w), Some(id)) => w == id,
        }
    }
}

/// A change, as this node learnt of it.
#[derive(Debug)]
enum Changed {
    Key(String),
    KeyDeleted {
        workspace_id: String,
        id: String,
    },
    Workspace(String),
    /// Notices may have been lost: every subscriber starts again.
    Resync,
}

/// An event, once its number is known.
type MakeEvent = Box<dyn FnOnce(u64) -> Event + Send>;

/// One numbered event, serialized once for every subscriber.
#[derive(Debug)]
struct Line {
    seq: u64,
    /// `None`: for every subscriber.
    workspace_id: Option<String>,
    json: String,
    /// Subscribers end their stream (and resume with a snapshot).
    reset: bool,
}

struct Inner {
    seq: u64,
    history: VecDeque<Arc<Line>>,
}

pub struct Replication {
    store: Arc<dyn Store>,
    hasher: SecretHasher,
    /// SHA-256 of the node-wide replication token, if one is configured.
    token: OnceLock<[u8; 32]>,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Arc<Line>>,
    changes: mpsc::UnboundedSender<Changed>,
    queued: Mutex<Option<mpsc::UnboundedReceiver<Changed>>>,
    following: AtomicBool,
    subscribers: Arc<AtomicUsize>,
}

/// Why a stream cannot start.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterError {
    /// Beyond the last event of this node.
    Future,
}

impl Replication {
    pub fn new(store: Arc<dyn Store>, hasher: SecretHasher, clock: &dyn Clock) -> Self {
        let (changes, queued) = mpsc::unbounded_channel();
        // Numbers start from the time, in microseconds: a restarted node
        // numbers after everything it numbered before.
        let seq = u64::try_from(clock.now_ms()).unwrap_or_default() * 1000;
        Replication {
            store,
            hasher,
            token: OnceLock::new(),
            inner: Mutex::new(Inner { seq, history: VecDeque::new() }),
            live: broadcast::channel(SUBSCRIBER_BACKLOG).0,
            changes,
            queued: Mutex::new(Some(queued)),
            following: AtomicBool::new(false),
            subscribers: Arc::default(),
        }
    }

    /// Accepts `token` as the node-wide replication credential.
    pub fn set_token(&self, token: &str) {
        let _ = self.token.set(Sha256::digest(token.as_bytes()).into());
    }

    /// Whether `presented` is the node-wide replication token.
    pub fn is_node_token(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.token.get().is_some_and(|t| bool::from(t.ct_eq(&digest)))
    }

    /// Streams open now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Events kept for resuming subscribers (at most [`HISTORY`]).
    pub fn history_len(&self) -> usize {
        self.lock().history.len()
    }

    /// The last number given.
    pub fn seq(&self) -> u64 {
        self.lock().seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns of a change (a commit of this node, or another's notice).
    pub fn notice(&self, what: &keyward_store::Invalidation) {
        use keyward_store::Invalidation;
        if !self.following.load(Ordering::Relaxed) {
            return;
        }
        let changed = match what {
            Invalidation::Key(id) => Changed::Key(id.clone()),
            Invalidation::KeyDeleted { workspace_id, id } => {
                Changed::KeyDeleted { workspace_id: workspace_id.clone(), id: id.clone() }
            }
            Invalidation::Workspace(id) => Changed::Workspace(id.clone()),
            Invalidation::Resync => Changed::Resync,
            _ => return,
        };
        let _ = self.changes.send(changed);
    }

    /// Ends every stream (the node is stopping: a graceful shutdown waits
    /// for open connections, and a stream never ends by itself).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        let seq = inner.seq;
        let _ = self.live.send(Arc::new(Line { seq, workspace_id: None, json: String::new(), reset: true }));
    }

    /// Starts following changes (on the first subscriber).
    fn follow(self: &Arc<Self>) {
        if self.following.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(mut queued) = self.queued.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(changed) = queued.recv().await {
                let Some(this) = this.upgrade() else { return };
                this.publish(changed).await;
            }
        });
    }

    async fn publish(&self, changed: Changed) {
        let (workspace_id, reset, event): (Option<String>, bool, MakeEvent) = match changed {
            Changed::Key(id) => match self.store.find_key(&id).await {
                Ok(Some(key)) => {
                    let ws = key.workspace_id.clone();
                    (Some(ws), false, Box::new(move |seq| Event::key(seq, &key.id, &key.workspace_id, Some(&key))))
                }
                // Deleted since: its own notice tells.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "replication: reading a changed key failed; subscribers start again");
                    (None, true, Box::new(|seq| Event::Heartbeat { seq }))
                }
            },
            Changed::KeyDeleted { workspace_id, id } => {
                let ws = workspace_id.clone();
                (Some(ws), false, Box::new(move |seq| Event::key(seq, &id, &workspace_id, None)))
            }
            Changed::Workspace(id) => match self.workspace(&id).await {
                Ok(Some(ws)) => (Some(id), false, Box::new(move |seq| Event::Workspace { seq, workspace: ws })),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "replication: reading a workspace failed; subscribers start again");
                    (None, true, Box::new(|seq| Event::Heartbeat { seq }))
                }
            },
            Changed::Resync => (None, true, Box::new(|seq| Event::Heartbeat { seq })),
        };
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        let json = serde_json::to_string(&event(seq)).expect("events serialize");
        let line = Arc::new(Line { seq, workspace_id, json, reset });
        if reset {
            inner.history.clear();
        } else {
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(line.clone());
        }
        let _ = self.live.send(line);
    }

    /// A workspace as replicated (its replica key, route scopes and roles).
    async fn workspace(&self, id: &str) -> Result<Option<ReplicaWorkspace>, keyward_store::StoreError> {
        let Some(ws) = self.store.get_workspace(id).await? else {
            return Ok(None);
        };
        let roles = self.store.list_roles(id).await?;
        Ok(Some(ReplicaWorkspace::new(&ws.id, &self.hasher.replica_key(&ws.id), &ws.routes, &roles)))
    }

    /// Starts a subscriber's stream: JSON lines, ending when it falls
    /// behind, the node resynchronises, or the client goes.
    pub fn subscribe(
        self: &Arc<Self>,
        scope: Scope,
        after: Option<u64>,
    ) -> Result<mpsc::Receiver<Result<String, std::convert::Infallible>>, AfterError> {
        self.follow();
        let (current, live, backlog) = {
            let inner = self.lock();
            if after.is_some_and(|a| a > inner.seq) {
                return Err(AfterError::Future);
            }
            let live = self.live.subscribe();
            // Resumable when the history holds every event after `after`.
            let backlog = after.and_then(|a| {
                let oldest = inner.history.front().map_or(inner.seq + 1, |l| l.seq);
                (a + 1 >= oldest).then(|| inner.history.iter().filter(|l| l.seq > a).cloned().collect::<Vec<_>>())
            });
            (inner.seq, live, backlog)
        };
        let (tx, rx) = mpsc::channel(WRITE_AHEAD);
        let this = self.clone();
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = this.serve(scope, current, live, backlog, &tx).await {
                tracing::debug!(reason = e, "replication subscriber ended");
            }
            this.subscribers.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(rx)
    }

    async fn serve(
        &self,
        scope: Scope,
        current: u64,
        mut live: broadcast::Receiver<Arc<Line>>,
        backlog: Option<Vec<Arc<Line>>>,
        tx: &mpsc::Sender<Result<String, std::convert::Infallible>>,
    ) -> Result<(), &'static str> {
        let send = |line: String| async move {
            match tokio::time::timeout(STALLED, tx.send(Ok(line))).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the client went"),
                Err(_) => Err("the client stopped reading"),
            }
        };
        let mut last = current;
        match backlog {
            Some(lines) => {
                for line in lines.iter().filter(|l| scope.sees(l.workspace_id.as_deref())) {
                    send(format!("{}\n", line.json)).await?;
                }
                last = lines.last().map_or(current, |l| l.seq).max(current);
            }
            None => self.snapshot(&scope, current, &send).await?,
        }
        loop {
            let line = match tokio::time::timeout(HEARTBEAT, live.recv()).await {
                Err(_) => {
                    send(format!("{}\n", json(&Event::Heartbeat { seq: last }))).await?;
                    continue;
                }
                Ok(Ok(line)) => line,
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return Err("fell behind"),
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err("the node stops"),
            };
            if line.reset {
                return Err("resynchronising");
            }
            if line.seq <= last {
                continue;
            }
            last = line.seq;
            if scope.sees(line.workspace_id.as_deref()) {
                send(format!("{}\n", line.json)).await?;
            }
        }
    }

    /// Every workspace of `scope` and its keys, as of `seq`.
    async fn snapshot<F, Fut>(&self, scope: &Scope, seq: u64, send: &F) -> Result<(), &'static str>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), &'static str>>,
    {
        const UNAVAILABLE: &str = "the store is unavailable";
        send(format!("{}\n", json(&Event::Snapshot { seq }))).await?;
        let ids: Vec<String> = match scope {
            Scope::Workspace(id) => vec![id.clone()],
            Scope::All => {
                self.store.list_workspaces().await.map_err(|_| UNAVAILABLE)?.into_iter().map(|w| w.id).collect()
            }
        };
        for id in ids {
            let Some(workspace) = self.workspace(&id).await.map_err(|_| UNAVAILABLE)? else {
                continue;
            };
            send(format!("{}\n", json(&Event::Workspace { seq, workspace }))).await?;
            let mut page = Page { after: None, limit: SNAPSHOT_PAGE };
            loop {
                let keys = self.store.list_keys(&id, &KeyFilter::default(), page).await.map_err(|_| UNAVAILABLE)?;
                let mut out = String::new();
                for key in &keys.keys {
                    out.push_str(&json(&Event::key(seq, &key.id, &key.workspace_id, Some(key))));
                    out.push('\n');
                }
                if !out.is_empty() {
                    send(out).await?;
                }
                match keys.next_cursor {
                    Some(cursor) => page.after = Some(cursor),
                    None => break,
                }
            }
        }
        send(format!("{}\n", json(&Event::SnapshotEnd { seq }))).await
    }
}

fn json(event: &Event) -> String {
    serde_json::to_string(event).expect("events serialize")
}
