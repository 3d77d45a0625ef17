//! Group commit: changes submitted concurrently wait in one queue; a single
//! task takes everything queued (up to [`MAX_GROUP`]) and commits it in one
//! transaction, each change under its own savepoint so that one refused
//! change (a version conflict, a full workspace) does not undo the others.
//! One durable commit (one fsync) then acknowledges many changes.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::{Change, Result, StoreError};

/// Changes committed in one transaction at most.
pub const MAX_GROUP: usize = 256;

/// A backend's part: commit a group, answering per change.
#[async_trait]
pub trait CommitGroup: Send + Sync + 'static {
    /// `Err` when the transaction as a whole failed (nothing committed);
    /// otherwise one result per change, in order.
    async fn commit_group(&self, changes: &[Change]) -> Result<Vec<Result<()>>>;
}

type Pending = (Change, oneshot::Sender<Result<()>>);

/// Attempts at a change the database refused for contention.
const CONTENTION_ATTEMPTS: usize = 4;

/// Commits a group; changes (or the whole group) refused for contention
/// (a deadlock with another node's transaction) are committed again.
async fn commit_with_retries(backend: &dyn CommitGroup, changes: &[Change]) -> Result<Vec<Result<()>>> {
    let mut attempt = 1;
    let mut results = loop {
        match backend.commit_group(changes).await {
            Err(StoreError::Contention(_)) if attempt < CONTENTION_ATTEMPTS => attempt += 1,
            other => break other?,
        }
    };
    for _ in 1..CONTENTION_ATTEMPTS {
        let again: Vec<usize> =
            (0..results.len()).filter(|&i| matches!(results[i], Err(StoreError::Contention(_)))).collect();
        if again.is_empty() {
            break;
        }
        let retried: Vec<Change> = again.iter().map(|&i| changes[i].clone()).collect();
        match backend.commit_group(&retried).await {
            Ok(rs) => again.into_iter().zip(rs).for_each(|(i, r)| results[i] = r),
            Err(e) => again.into_iter().for_each(|i| results[i] = Err(e.clone())),
        }
    }
    Ok(results)
}

pub struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Committer {
    /// Starts the committing task on the current runtime.
    pub fn start(backend: Arc<dyn CommitGroup>) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            let mut group: Vec<Pending> = Vec::with_capacity(MAX_GROUP);
            while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
                let (changes, waiters): (Vec<Change>, Vec<_>) = group.drain(..).unzip();
                match commit_with_retries(&*backend, &changes).await {
                    Ok(results) => {
                        for (waiter, result) in waiters.into_iter().zip(results) {
                            let _ = waiter.send(result);
                        }
                    }
                    Err(e) => {
                        for waiter in waiters {
                            let _ = waiter.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Committer { queue }
    }

    pub async fn commit(&self, change: Change) -> Result<()> {
        if change.writes.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store's writer has stopped".into());
        self.queue.send((change, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}
