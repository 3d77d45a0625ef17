//! Webhooks: a workspace's endpoints (made, edited, deleted, their secret
//! rotated with an overlap), the delivery log, resends and test events.
//! Events are written by the unit of work ([`events`]) and sent by the
//! [`deliver::Deliverer`] on every node.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use keyward_core::audit::Target;
use keyward_core::sealed::Keyring;
use keyward_core::webhook::{self, Endpoint, SigningSecret, Subscription};
use keyward_core::{Code, Error, ErrorKind, ids};
use keyward_store::webhooks::{Delivery, DeliveryStatus, StoredSecret, WebhooksWrite};
use keyward_store::{Store, Write};
use serde_json::json;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::keys::{master_key_required, store_error};
use crate::principal::Principal;
use crate::work::Change;

pub mod deliver;
pub mod events;
pub mod notices;

pub const MANAGE: &str = "webhooks:manage";

/// The most endpoints a workspace may have.
pub const MAX_ENDPOINTS: usize = 20;
/// The longest overlap of two secrets after a rotation (a week).
pub const MAX_OVERLAP_SECONDS: u32 = 7 * 24 * 3600;

pub fn webhook_not_found() -> Error {
    Error::new(ErrorKind::NotFound, Code::WebhookNotFound, "Webhook endpoint not found")
}

fn url_not_allowed(why: &str) -> Error {
    Error::invalid(Code::WebhookUrlNotAllowed, format!("url: {why}"))
}

pub fn webhook_target(e: &Endpoint) -> Target {
    Target::new("webhook", e.id.clone(), Some(&e.url))
}

/// The context a secret is sealed under.
fn secret_context(secret_id: &str) -> Vec<u8> {
    format!("webhook-secret:{secret_id}").into_bytes()
}

/// Where webhooks may be sent.
#[derive(Debug, Clone, Default)]
pub struct UrlPolicy {
    /// Hosts (names or addresses) that may be reached over plain HTTP and
    /// at private, loopback or link-local addresses.
    pub allow_hosts: Vec<String>,
}

impl UrlPolicy {
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks a URL as a client gives it: http(s), no credentials, not to
    /// a private address unless its host is allowed (names are resolved
    /// when they can be; every send checks again).
    pub async fn check(&self, raw: &str) -> Result<reqwest::Url, Error> {
        if raw.len() > webhook::MAX_URL {
            return Err(url_not_allowed(&format!("at most {} characters", webhook::MAX_URL)));
        }
        let url = reqwest::Url::parse(raw).map_err(|_| url_not_allowed("not a valid absolute URL"))?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| url_not_allowed("it names no host"))?;
        let allowed = self.allows_host(host);
        match url.scheme() {
            "https" => {}
            "http" if allowed => {}
            "http" => {
                return Err(url_not_allowed("plain http is allowed only to hosts the operator allows; use https"));
            }
            _ => return Err(url_not_allowed("the scheme must be https (or http to an allowed host)")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(url_not_allowed("credentials in the URL are not allowed (the signature authenticates us)"));
        }
        if allowed {
            return Ok(url);
        }
        if let Some(ip) = literal_ip(&url) {
            if forbidden_ip(ip) {
                return Err(url_not_allowed(
                    "it points at a loopback, private or link-local address (the operator may allow the host)",
                ));
            }
            return Ok(url);
        }
        if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
            return Err(url_not_allowed("it points at a loopback address (the operator may allow the host)"));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        if let Ok(Ok(addrs)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::lookup_host((host, port))).await
        {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| forbidden_ip(a.ip())) {
                return Err(url_not_allowed(
                    "its host resolves to a loopback, private or link-local address (the operator may allow the host)",
                ));
            }
        }
        Ok(url)
    }
}

pub fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Loopback, private, link-local, shared, unspecified, broadcast or
/// multicast: nothing a webhook may reach unless its host is allowed.
pub fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_ip(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// A new endpoint as a client asks for it.
#[derive(Debug, Default)]
pub struct EndpointDraft {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// An edit; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

pub struct WebhookService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keyring: Option<Arc<Keyring>>,
    audit: Arc<AuditLog>,
    policy: UrlPolicy,
}

fn check_description(d: Option<String>) -> Result<Option<String>, Error> {
    match d {
        Some(d) if d.chars().count() > webhook::MAX_DESCRIPTION => Err(Error::invalid(
            Code::DescriptionTooLong,
            format!("description: at most {} characters", webhook::MAX_DESCRIPTION),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        d => Ok(d),
    }
}

impl WebhookService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
        audit: Arc<AuditLog>,
        policy: UrlPolicy,
    ) -> Self {
        WebhookService { store, clock, keyring, audit, policy }
    }

    pub fn policy(&self) -> &UrlPolicy {
        &self.policy
    }

    fn new_secret(
        &self,
        endpoint_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(SigningSecret, StoredSecret), Error> {
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let secret = SigningSecret::generate();
        let id = ids::new_id("whsec");
        let sealed = keyring.seal(secret.bytes(), &secret_context(&id));
        let stored =
            StoredSecret { id, endpoint_id: endpoint_id.to_owned(), sealed, created_at: self.clock.now(), expires_at };
        Ok((secret, stored))
    }

    /// The secrets that sign at `now`, newest first.
    pub async fn signing_secrets(&self, endpoint_id: &str, now: DateTime<Utc>) -> Result<Vec<SigningSecret>, Error> {
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let stored = self.store.endpoint_secrets(endpoint_id).await.map_err(store_error)?;
        let mut out = Vec::new();
        for s in stored.iter().filter(|s| s.expires_at.is_none_or(|e| e > now)) {
            let plain = keyring.open(&s.sealed, &secret_context(&s.id))?;
            out.push(SigningSecret::from_bytes(&plain).ok_or_else(|| Error::internal("a stored secret is malformed"))?);
        }
        Ok(out)
    }

    pub async fn list(&self, who: &Principal) -> Result<Vec<Endpoint>, Error> {
        who.require(MANAGE)?;
        self.store.list_endpoints(who.workspace_id()).await.map_err(store_error)
    }

    pub async fn get(&self, who: &Principal, id: &str) -> Result<Endpoint, Error> {
        who.require(MANAGE)?;
        self.store.get_endpoint(who.workspace_id(), id).await.map_err(store_error)?.ok_or_else(webhook_not_found)
    }

    /// Makes an endpoint; its secret is returned once.
    pub async fn create(&self, who: &Principal, draft: EndpointDraft) -> Result<(Endpoint, SigningSecret), Error> {
        who.require(MANAGE)?;
        let url = self.policy.check(&draft.url).await?;
        let events = Subscription::parse(&draft.events)?;
        let description = check_description(draft.description)?;
        let existing = self.store.list_endpoints(who.workspace_id()).await.map_err(store_error)?;
        if existing.len() >= MAX_ENDPOINTS {
            return Err(Error::conflict(
                Code::Conflict,
                format!("A workspace may have at most {MAX_ENDPOINTS} webhook endpoints; delete one first"),
            ));
        }
        let now = self.clock.now();
        let endpoint = Endpoint {
            id: webhook::new_endpoint_id(),
            workspace_id: who.workspace_id().to_owned(),
            url: url.to_string(),
            description,
            events,
            enabled: draft.enabled.unwrap_or(true),
            disabled_reason: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        let (secret, stored) = self.new_secret(&endpoint.id, None)?;
        let mut change =
            Change::of(Write::Webhooks(WebhooksWrite::InsertEndpoint { endpoint: endpoint.clone(), secret: stored }));
        change.push(self.audit.write(who, "webhook.created", webhook_target(&endpoint), summary(&endpoint)));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok((endpoint, secret))
    }

    pub async fn update(&self, who: &Principal, id: &str, patch: EndpointPatch) -> Result<Endpoint, Error> {
        let mut endpoint = self.get(who, id).await?;
        let before = summary(&endpoint);
        if let Some(url) = patch.url {
            endpoint.url = self.policy.check(&url).await?.to_string();
        }
        if let Some(events) = patch.events {
            endpoint.events = Subscription::parse(&events)?;
        }
        if let Some(d) = patch.description {
            endpoint.description = check_description(d)?;
        }
        if let Some(enabled) = patch.enabled {
            if enabled && !endpoint.enabled {
                // Turned on again: its failures start over.
                endpoint.failing_since = None;
            }
            endpoint.enabled = enabled;
            endpoint.disabled_reason = None;
        }
        let after = summary(&endpoint);
        if before == after {
            return Ok(endpoint);
        }
        endpoint.updated_at = self.clock.now();
        let mut change = Change::of(Write::Webhooks(WebhooksWrite::UpdateEndpoint(endpoint.clone())));
        let changes = json!({"before": before, "after": after});
        change.push(self.audit.write(who, "webhook.updated", webhook_target(&endpoint), changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(endpoint)
    }

    pub async fn delete(&self, who: &Principal, id: &str) -> Result<Endpoint, Error> {
        let endpoint = self.get(who, id).await?;
        let write =
            WebhooksWrite::DeleteEndpoint { workspace_id: endpoint.workspace_id.clone(), id: endpoint.id.clone() };
        let mut change = Change::of(Write::Webhooks(write));
        change.push(self.audit.write(who, "webhook.deleted", webhook_target(&endpoint), summary(&endpoint)));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(endpoint)
    }

    /// A new secret; the ones in use go on signing for `overlap` (both
    /// sign meanwhile). Returns the new secret, once, and when the old stop.
    pub async fn rotate_secret(
        &self,
        who: &Principal,
        id: &str,
        overlap_seconds: u32,
    ) -> Result<(SigningSecret, DateTime<Utc>), Error> {
        if overlap_seconds > MAX_OVERLAP_SECONDS {
            return Err(Error::invalid(
                Code::InvalidParameter,
                format!("overlapSeconds: from 0 to {MAX_OVERLAP_SECONDS} (a week)"),
            ));
        }
        let endpoint = self.get(who, id).await?;
        let retire_at = self.clock.now() + Duration::seconds(i64::from(overlap_seconds));
        let (secret, stored) = self.new_secret(&endpoint.id, None)?;
        let mut change = Change::of(Write::Webhooks(WebhooksWrite::AddSecret { secret: stored, retire_at }));
        let changes = json!({"overlapSeconds": overlap_seconds});
        change.push(self.audit.write(who, "webhook.secret_rotated", webhook_target(&endpoint), changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok((secret, retire_at))
    }

    pub async fn deliveries(
        &self,
        who: &Principal,
        id: &str,
        status: Option<DeliveryStatus>,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Delivery>, Error> {
        let endpoint = self.get(who, id).await?;
        self.store
            .list_deliveries(&endpoint.workspace_id, &endpoint.id, status, before, limit)
            .await
            .map_err(store_error)
    }

    pub async fn delivery(&self, who: &Principal, id: &str, event_id: &str) -> Result<Delivery, Error> {
        let endpoint = self.get(who, id).await?;
        self.store
            .get_delivery(&endpoint.workspace_id, &endpoint.id, event_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, Code::DeliveryNotFound, "Delivery not found"))
    }

    /// Sends a delivery again, now (whatever became of it).
    pub async fn resend(&self, who: &Principal, id: &str, event_id: &str) -> Result<Delivery, Error> {
        let delivery = self.delivery(who, id, event_id).await?;
        let write = WebhooksWrite::Resend {
            workspace_id: delivery.workspace_id.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            event_id: delivery.event_id.clone(),
            at: self.clock.now(),
        };
        let mut change = Change::of(Write::Webhooks(write));
        let target = Target::new("webhook", delivery.endpoint_id.clone(), None);
        let changes = json!({"eventId": delivery.event_id, "type": delivery.event_type});
        change.push(self.audit.write(who, "webhook.resent", target, changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        self.delivery(who, id, event_id).await
    }

    /// Sends a `webhook.test` event to the endpoint (enabled or not… a
    /// disabled one is not sent to: it fails at once); the event's id.
    pub async fn send_test(&self, who: &Principal, id: &str) -> Result<String, Error> {
        let endpoint = self.get(who, id).await?;
        let data = json!({"endpointId": endpoint.id, "workspaceId": endpoint.workspace_id, "message": "A test event from keyward"});
        let event = events::outbox_event(&endpoint.workspace_id, webhook::TEST_EVENT, self.clock.now(), data);
        let event_id = event.id.clone();
        let write = WebhooksWrite::EmitTo { endpoint_id: endpoint.id.clone(), event };
        let mut change = Change::of(Write::Webhooks(write));
        change.push(self.audit.write(who, "webhook.tested", webhook_target(&endpoint), json!({"eventId": event_id})));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(event_id)
    }
}

/// An endpoint as audit entries record it (never its secret).
pub fn summary(e: &Endpoint) -> serde_json::Value {
    json!({
        "url": e.url,
        "description": e.description,
        "events": e.events.names(),
        "enabled": e.enabled,
    })
}
