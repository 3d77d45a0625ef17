//! Webhooks: the events keyward sends, an endpoint's subscription, its
//! signing secrets and the Standard Webhooks signature
//! (<https://www.standardwebhooks.com>): `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`, one per secret in use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Code, Error, ids};

/// Every event type, `noun.past_verb` (the test event is
/// [`TEST_EVENT`], sent only on request).
pub const EVENT_TYPES: &[&str] = &[
    "key.created",
    "key.updated",
    "key.rolled",
    "key.revoked",
    "key.deleted",
    "key.locked",
    "key.leaked",
    "key.expiring",
    "key.expired",
    "key.credits_low",
    "key.unused",
    "member.invited",
    "member.joined",
    "member.changed",
    "member.removed",
    "pgp_key.expiring",
];

/// The event `POST /v1/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

/// The most event names an endpoint may list.
pub const MAX_EVENTS: usize = 50;

/// The event an audited action sends, if any.
pub fn event_of_action(action: &str) -> Option<&'static str> {
    Some(match action {
        "key.created" | "key.imported" | "key.cloned" => "key.created",
        "key.updated" | "key.activated" | "key.deactivated" | "key.credits_changed" => "key.updated",
        "key.rolled" => "key.rolled",
        "key.revoked" => "key.revoked",
        "key.deleted" => "key.deleted",
        "key.locked" => "key.locked",
        "key.leaked" => "key.leaked",
        "member.invited" => "member.invited",
        "member.joined" => "member.joined",
        "member.changed" => "member.changed",
        "member.removed" => "member.removed",
        _ => return None,
    })
}

/// What an endpoint subscribes to: `*`, or event names and `noun.*`
/// groups (`key.*`, `member.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    All,
    Some(Vec<String>),
}

impl Subscription {
    /// Checks `events` as a client gives them: each a known event type, a
    /// known group or `*`; at least one.
    pub fn parse(events: &[String]) -> Result<Subscription, Error> {
        if events.is_empty() {
            return Err(Error::invalid(Code::InvalidEvents, "events must name at least one event type, or \"*\""));
        }
        if events.len() > MAX_EVENTS {
            return Err(Error::invalid(Code::InvalidEvents, format!("events may list at most {MAX_EVENTS} names")));
        }
        if events.iter().any(|e| e == "*") {
            return Ok(Subscription::All);
        }
        let mut names: Vec<String> = Vec::with_capacity(events.len());
        for e in events {
            let known = EVENT_TYPES.contains(&e.as_str())
                || e.strip_suffix(".*")
                    .is_some_and(|noun| EVENT_TYPES.iter().any(|t| t.split('.').next() == Some(noun)));
            if !known {
                // The name is echoed only when it is a plain identifier.
                let shown = if e.len() <= 40 && e.bytes().all(|b| b.is_ascii_alphanumeric() || b"._*".contains(&b)) {
                    format!("unknown event type {e:?}")
                } else {
                    "an unknown event type".to_owned()
                };
                return Err(Error::invalid(
                    Code::InvalidEvents,
                    format!(
                        "events: {shown}; allowed: \"*\", key.*, member.*, pgp_key.* or {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
            if !names.contains(e) {
                names.push(e.clone());
            }
        }
        Ok(Subscription::Some(names))
    }

    /// `*`, or `,a,b,` (what the store matches `,type,` and `,noun.*,` in).
    pub fn to_stored(&self) -> String {
        match self {
            Subscription::All => "*".to_owned(),
            Subscription::Some(names) => format!(",{},", names.join(",")),
        }
    }

    pub fn from_stored(s: &str) -> Subscription {
        if s == "*" {
            return Subscription::All;
        }
        Subscription::Some(s.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect())
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            Subscription::All => vec!["*".to_owned()],
            Subscription::Some(names) => names.clone(),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Subscription::All => true,
            Subscription::Some(names) => names.iter().any(|n| {
                n == event_type || n.strip_suffix(".*").is_some_and(|noun| event_type.split('.').next() == Some(noun))
            }),
        }
    }
}

/// A webhook endpoint of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Subscription,
    pub enabled: bool,
    /// Why keyward disabled it (`gone`: it answered 410; `failing`: every
    /// delivery failed for 3 days); `None` when a member did, or it is on.
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed; `None` after a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const MAX_DESCRIPTION: usize = 500;
pub const MAX_URL: usize = 2000;

/// `wh_…`.
pub fn new_endpoint_id() -> String {
    ids::new_id("wh")
}

/// `msg_…` (the `webhook-id` of every attempt at one event).
pub fn new_event_id() -> String {
    format!("msg_{}", ids::random_base62(22))
}

/// A signing secret: 24 random bytes, shown as `whsec_<base64>`.
#[derive(Clone)]
pub struct SigningSecret([u8; 24]);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        SigningSecret(ids::random_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(SigningSecret(bytes.try_into().ok()?))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_…`, as shown once to the client.
    pub fn to_text(&self) -> String {
        format!("whsec_{}", B64.encode(self.0))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a SigningSecret>,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets.into_iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// When the attempt after `attempts` failed ones is due, counted from the
/// last: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 h in all,
/// so retries cover a day), each ±20 % (`jitter` in [0, 1)); `None`:
/// no more.
pub fn retry_delay(attempts: u32, jitter: f64) -> Option<chrono::Duration> {
    const SCHEDULE_SECS: [i64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
    let base = *SCHEDULE_SECS.get(usize::try_from(attempts.checked_sub(1)?).ok()?)?;
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    #[allow(clippy::cast_possible_truncation)]
    let ms = (base as f64 * 1000.0 * factor) as i64;
    Some(chrono::Duration::milliseconds(ms))
}

/// How long retries go on after an event was made.
pub const RETRY_FOR: chrono::Duration = chrono::Duration::hours(24);
/// An endpoint failing this long is disabled.
pub const DISABLE_AFTER: chrono::Duration = chrono::Duration::days(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_says() {
        // The example of the Standard Webhooks specification.
        let key = B64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let secret = SigningSecret(key.try_into().unwrap());
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn subscriptions_match_names_groups_and_all() {
        let s = Subscription::parse(&["key.created".into(), "member.*".into()]).unwrap();
        assert!(s.matches("key.created") && s.matches("member.joined"));
        assert!(!s.matches("key.revoked"));
        assert_eq!(Subscription::from_stored(&s.to_stored()), s);
        assert!(Subscription::parse(&["*".into()]).unwrap().matches("pgp_key.expiring"));
        let e = Subscription::parse(&["key.exploded".into()]).unwrap_err();
        assert!(e.message.contains("key.exploded"), "{}", e.message);
        assert!(Subscription::parse(&["nope.*".into()]).is_err());
        assert!(Subscription::parse(&[]).is_err());
    }

    #[test]
    fn retries_back_off_for_a_day() {
        assert_eq!(retry_delay(0, 0.5), None);
        assert_eq!(retry_delay(1, 0.5), Some(chrono::Duration::seconds(5)));
        let total: i64 = (1..=7).map(|n| retry_delay(n, 0.5).unwrap().num_seconds()).sum();
        assert!(total >= RETRY_FOR.num_seconds(), "{total}");
        assert_eq!(retry_delay(8, 0.5), None);
        assert!(retry_delay(2, 0.0).unwrap() < retry_delay(2, 0.99).unwrap());
    }
}
