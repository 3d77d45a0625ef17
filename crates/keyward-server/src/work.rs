//! The one unit of work: every mutation is a [`Change`] carrying its audit
//! entry (or saying by name why it has none), committed in one transaction
//! by [`UnitOfWork::commit`], which then applies to this node's caches what
//! the same writes tell the other nodes ([`keyward_store::invalidations`]).
//! Nothing else commits, and nothing else updates a cache after a write.
//! A change made for a request holding an `Idempotency-Key` claims the key
//! in the same transaction ([`crate::idempotency`]).

use std::sync::{Arc, OnceLock, Weak};

use keyward_store::{Invalidation, Store, StoreError, Write};

use crate::verifier::Verifier;

/// Writes that commit together, with their audit entry: committing a
/// change without one is a bug (a debug build panics), unless it was made
/// by [`Change::unaudited`], which says why.
#[derive(Debug, Default)]
#[must_use = "a change does nothing until it is committed"]
pub struct Change {
    writes: Vec<Write>,
    /// Entries go after the writes they record.
    entries: Vec<Write>,
    unaudited: Option<&'static str>,
}

impl Change {
    /// An empty change: push its writes and its audit entry.
    pub fn new() -> Self {
        Change::default()
    }

    /// A change of `write`: push its audit entry.
    pub fn of(write: Write) -> Self {
        Change::new().with(write)
    }

    /// A change no audit entry records; `why` says why.
    pub fn unaudited(why: &'static str) -> Self {
        Change { unaudited: Some(why), ..Change::default() }
    }

    pub fn with(mut self, write: Write) -> Self {
        self.push(write);
        self
    }

    /// Adds a write; an audit entry ([`crate::audit::AuditLog::write`])
    /// records the change and goes after the writes.
    pub fn push(&mut self, write: Write) -> &mut Self {
        match write {
            Write::Audit(_) => self.entries.push(write),
            other => self.writes.push(other),
        }
        self
    }

    /// Nothing to write yet.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub fn extend(&mut self, writes: impl IntoIterator<Item = Write>) -> &mut Self {
        for w in writes {
            self.push(w);
        }
        self
    }
}

/// What a committed write does to this node's caches.
enum Local {
    /// The key as the store now holds it.
    Key(Box<keyward_core::key::ApiKey>),
    Invalidate(Invalidation),
}

fn local_of(write: &Write) -> impl Iterator<Item = Local> + '_ {
    let record = match write {
        Write::InsertKey { key, .. } | Write::UpdateKey { key, .. } => Some(key),
        _ => None,
    };
    keyward_store::invalidations(write).into_iter().map(move |inv| match (inv, record) {
        (Invalidation::Key(_), Some(key)) => Local::Key(Box::new(key.clone())),
        (inv, _) => Local::Invalidate(inv),
    })
}

/// Commits [`Change`]s and applies them to the caches.
pub struct UnitOfWork {
    store: Arc<dyn Store>,
    /// The verifier's caches, attached once it exists (it commits through
    /// here too).
    caches: OnceLock<Weak<Verifier>>,
    /// Told when a change wrote to the webhook outbox (the deliverer wakes).
    outbox: Arc<tokio::sync::Notify>,
}

impl UnitOfWork {
    pub fn new(store: Arc<dyn Store>) -> Self {
        UnitOfWork { store, caches: OnceLock::new(), outbox: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Notified after every commit that wrote to the webhook outbox.
    pub fn outbox(&self) -> &Arc<tokio::sync::Notify> {
        &self.outbox
    }

    /// Applies committed changes to `verifier`'s caches from now on.
    pub fn attach(&self, verifier: &Arc<Verifier>) {
        let _ = self.caches.set(Arc::downgrade(verifier));
    }

    /// Commits `change` in one transaction (all of it or nothing), then
    /// applies it to this node's caches.
    pub async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let Change { mut writes, entries, unaudited } = change;
        debug_assert!(
            !entries.is_empty() || unaudited.is_some(),
            "a change of {} writes without an audit entry (Change::unaudited says why)",
            writes.len()
        );
        let local: Vec<Local> = writes.iter().flat_map(local_of).collect();
        // The events this change sends commit with it (the outbox).
        let events = crate::webhooks::events::of_change(&writes, &entries);
        writes.extend(entries);
        writes.extend(events);
        let outbox = writes.iter().any(|w| matches!(w, Write::Webhooks(_)));
        // Made for a request holding an idempotency key: the change claims
        // the key first, so that of two requests with one key one change
        // commits, and a retry never makes it twice.
        let claim = crate::idempotency::claim_write().map(|(write, claim)| {
            writes.insert(0, write);
            claim
        });
        let committed = self.store.commit(keyward_store::Change { writes }).await;
        if let Some(claim) = claim {
            crate::idempotency::commit_went(&claim, &committed);
        }
        committed?;
        if outbox {
            self.outbox.notify_one();
        }
        if let Some(verifier) = self.caches.get().and_then(Weak::upgrade) {
            for l in local {
                match l {
                    Local::Key(key) => {
                        verifier.cache().put(&key, verifier.clock().now_ms());
                        verifier.replication().notice(&Invalidation::Key(key.id.to_string()));
                    }
                    // The signer reloads itself after a rotation, holding
                    // the lock a reload takes: the other reload waits its turn.
                    Local::Invalidate(Invalidation::SigningKeys) => {
                        let verifier = verifier.clone();
                        tokio::spawn(async move { verifier.invalidated(Invalidation::SigningKeys).await });
                    }
                    Local::Invalidate(inv) => verifier.invalidated(inv).await,
                }
            }
        }
        Ok(())
    }
}
