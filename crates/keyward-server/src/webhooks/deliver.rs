//! Sends the outbox: claims due deliveries (any node may; a claim is a
//! lease, so a node that dies mid-send leaves its rows to the others),
//! signs each with the endpoint's secrets, posts it with a timeout, and
//! records the attempt: delivered, a retry with backoff and jitter for a
//! day, or failed. `410 Gone` disables the endpoint; so do 3 days of
//! failures. Names are resolved here, and private addresses refused,
//! unless the operator allows the host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use keyward_core::webhook::{self, Endpoint};
use keyward_store::webhooks::{Attempt, Delivery, DeliveryStatus, WebhooksWrite};
use keyward_store::{Store, Write};
use serde_json::json;

use super::{UrlPolicy, WebhookService, forbidden_ip, literal_ip, webhook_target};
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::principal::Principal;
use crate::work::Change;

/// How this node delivers.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deliveries sent at once by this node; 0: this node sends none.
    pub concurrency: usize,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How long delivered and failed deliveries are kept.
    pub retention: chrono::Duration,
    /// How often the outbox is read when nothing wakes the worker.
    pub poll: Duration,
    /// How often time-driven notices (expiring, unused) are looked for.
    pub notice_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            concurrency: 16,
            timeout: Duration::from_secs(10),
            retention: chrono::Duration::days(30),
            poll: Duration::from_secs(1),
            notice_interval: Duration::from_secs(60),
        }
    }
}

/// How long a claim holds a delivery (longer than any attempt).
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// What is kept of an answer's body.
const MAX_RESPONSE: usize = 1024;

/// Resolves names for the webhook client, keeping only public addresses
/// unless the host is allowed.
struct GuardedResolver {
    policy: UrlPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = self.policy.allows_host(name.as_str());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| allowed || !forbidden_ip(a.ip())).collect();
            if kept.is_empty() {
                return Err("the host resolves to no address a webhook may reach".into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

pub struct Deliverer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    service: Arc<WebhookService>,
    audit: Arc<AuditLog>,
    client: reqwest::Client,
    config: DeliveryConfig,
    /// Whether some endpoint is enabled, and when that was read: with none,
    /// a commit's wake-up claims nothing (no write on the hot path of
    /// creating keys).
    endpoints: std::sync::Mutex<Option<(Instant, bool)>>,
}

/// How long "no endpoint is enabled" is believed.
const ENDPOINTS_FRESH: Duration = Duration::from_millis(250);

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        service: Arc<WebhookService>,
        audit: Arc<AuditLog>,
        config: DeliveryConfig,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keyward-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver { policy: service.policy().clone() }))
            .build()?;
        Ok(Deliverer { store, clock, service, audit, client, config, endpoints: std::sync::Mutex::new(None) })
    }

    /// Sends until `stop` turns true: woken by local commits that wrote to
    /// the outbox, and every `poll` for the other nodes' and the retries.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.config.concurrency == 0 {
            return;
        }
        let wake = self.audit.work().outbox().clone();
        let mut last_prune = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let sent = match self.round().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e.message, "reading the webhook outbox failed");
                    0
                }
            };
            let now = self.clock.now();
            if last_prune.is_none_or(|at| now - at > chrono::Duration::hours(1)) {
                last_prune = Some(now);
                if let Err(e) = self.store.prune_webhooks(now - self.config.retention).await {
                    tracing::warn!(error = %e, "pruning webhook deliveries failed");
                }
            }
            if sent > 0 {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {
                    // Changes come in bursts: gather them into one claim.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ = tokio::time::sleep(self.config.poll) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Whether an endpoint is enabled anywhere (read again after
    /// [`ENDPOINTS_FRESH`]).
    async fn endpoints_exist(&self) -> Result<bool, keyward_core::Error> {
        let seen = *self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, any)) = seen
            && (any || at.elapsed() < ENDPOINTS_FRESH)
            && at.elapsed() < self.config.poll
        {
            return Ok(any);
        }
        let any = self.store.any_enabled_endpoint().await.map_err(crate::keys::store_error)?;
        *self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), any));
        Ok(any)
    }

    /// Claims what is due and sends it; how many were sent.
    pub async fn round(&self) -> Result<usize, keyward_core::Error> {
        if !self.endpoints_exist().await? {
            return Ok(0);
        }
        let now = self.clock.now();
        let limit = u32::try_from(self.config.concurrency * 4).unwrap_or(64);
        let due = self.store.claim_deliveries(now, now + LEASE, limit).await.map_err(crate::keys::store_error)?;
        let n = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(self.config.concurrency, |d| async move { self.deliver(d).await })
            .await;
        Ok(n)
    }

    async fn deliver(&self, d: Delivery) {
        let endpoint = match self.store.get_endpoint(&d.workspace_id, &d.endpoint_id).await {
            Ok(Some(e)) => e,
            // Deleted meanwhile: its deliveries went with it.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading a webhook endpoint failed");
                return;
            }
        };
        let attempt = self.attempt(&endpoint, &d).await;
        let gone = attempt.response_status == Some(410);
        match self.store.finish_delivery(&attempt).await {
            Ok(failing_since) => {
                let failing = failing_since.is_some_and(|since| attempt.at - since >= webhook::DISABLE_AFTER);
                if endpoint.enabled && (gone || failing) {
                    self.disable(endpoint, if gone { "gone" } else { "failing" }).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "recording a webhook attempt failed"),
        }
    }

    /// One attempt at `d`, and what became of it.
    async fn attempt(&self, endpoint: &Endpoint, d: &Delivery) -> Attempt {
        let started = Instant::now();
        let now = self.clock.now();
        let mut attempt = Attempt {
            endpoint_id: d.endpoint_id.clone(),
            event_id: d.event_id.clone(),
            at: now,
            status: DeliveryStatus::Failed,
            next_attempt_at: None,
            response_status: None,
            latency_ms: 0,
            response_body: None,
            error: None,
        };
        if !endpoint.enabled {
            attempt.error = Some("the endpoint is disabled".into());
            return attempt;
        }
        let sent = self.post(endpoint, d, now.timestamp()).await;
        attempt.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match sent {
            Ok((status, body)) => {
                attempt.response_status = Some(i64::from(status));
                attempt.response_body = body;
                if (200..300).contains(&status) {
                    attempt.status = DeliveryStatus::Delivered;
                    return attempt;
                }
                if status == 410 {
                    attempt.error = Some("the endpoint answered 410 Gone: it is disabled".into());
                    return attempt;
                }
                attempt.error = Some(format!("the endpoint answered {status}"));
            }
            Err(why) => attempt.error = Some(why),
        }
        // A retry, while there is time left.
        let jitter = f64::from(u32::from_le_bytes(keyward_core::ids::random_bytes())) / f64::from(u32::MAX);
        let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
        if let Some(delay) = webhook::retry_delay(attempts, jitter)
            && now + delay <= d.created_at + webhook::RETRY_FOR
        {
            attempt.status = DeliveryStatus::Pending;
            attempt.next_attempt_at = Some(now + delay);
        }
        attempt
    }

    /// Posts the delivery; the answer's status and the start of its body,
    /// or why nothing was answered.
    async fn post(&self, endpoint: &Endpoint, d: &Delivery, timestamp: i64) -> Result<(u16, Option<String>), String> {
        let policy = self.service.policy();
        let url = policy.check(&endpoint.url).await.map_err(|e| e.message)?;
        if let Some(ip) = literal_ip(&url)
            && forbidden_ip(ip)
            && !policy.allows_host(url.host_str().unwrap_or_default())
        {
            return Err("the URL points at an address a webhook may not reach".into());
        }
        let secrets = self.service.signing_secrets(&endpoint.id, self.clock.now()).await.map_err(|e| e.message)?;
        if secrets.is_empty() {
            return Err("the endpoint has no signing secret".into());
        }
        let signature = webhook::signature_header(&secrets, &d.event_id, timestamp, d.payload.as_bytes());
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone())
            .send()
            .await;
        let mut response = sent.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_RESPONSE {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(MAX_RESPONSE);
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok((status, (!text.is_empty()).then_some(text)))
    }

    async fn disable(&self, mut endpoint: Endpoint, reason: &str) {
        endpoint.enabled = false;
        endpoint.disabled_reason = Some(reason.to_owned());
        endpoint.updated_at = self.clock.now();
        let system = Principal::system(&endpoint.workspace_id);
        let why = match reason {
            "gone" => "the endpoint answered 410 Gone",
            _ => "every delivery failed for 3 days",
        };
        let changes = json!({"reason": reason, "why": why});
        let entry = self.audit.write(&system, "webhook.disabled", webhook_target(&endpoint), changes);
        let change = Change::of(Write::Webhooks(WebhooksWrite::UpdateEndpoint(endpoint))).with(entry);
        if let Err(e) = self.audit.work().commit(change).await {
            tracing::warn!(error = %e, "disabling a webhook endpoint failed");
        }
    }
}

/// Why a request got no answer, without the URL (it may hold a token).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_request() {
        "the request failed".into()
    } else {
        "no answer".into()
    }
}
