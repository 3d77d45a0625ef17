//! JSON shapes shared by the API modules: how a key and a time look on
//! the wire.

use chrono::{DateTime, SecondsFormat, Utc};
use keyward_core::key::ApiKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 3339 with milliseconds and `Z`, as in `2024-12-12T16:00:00.000Z`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub mod time {
    use super::*;
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }
}

pub mod time_opt {
    use super::*;
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_time(t)),
            None => s.serialize_none(),
        }
    }
}

/// For PATCH bodies: distinguishes an absent field (`None`) from an explicit
/// `null` (`Some(None)`).
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A key as every endpoint shows it: masked, never with its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    #[schema(example = "key_3fH9xQ2mPz8TbL1c")]
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Key type: `secret` (server-side REST key) or `publishable` (browser key).
    #[serde(rename = "type")]
    #[schema(example = "secret")]
    pub key_type: String,
    /// `live` or `test`.
    pub environment: String,
    /// The masked key, safe to display.
    #[schema(example = "kw_live_3fH9…1a2B")]
    pub masked_key: String,
    /// Tiers (`read`, `write`, `admin`), permissions (`resource:action`) or `*`.
    pub scopes: Vec<String>,
    pub read_only: bool,
    pub administrator: bool,
    pub account_administrator: bool,
    /// Resource (site) ids the key is limited to; empty means all.
    pub resources: Vec<String>,
    /// Browser origins allowed to use the key; empty means any.
    pub allowed_origins: Vec<String>,
    /// Client IP ranges allowed to use the key; empty means any.
    pub allowed_ips: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `active`, `inactive` or `revoked`.
    pub state: String,
    /// Imported from a legacy system: cannot be edited or deleted.
    pub legacy: bool,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    /// When the key was last used (flushed about once a second).
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used: Option<DateTime<Utc>>,
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// After a roll with a grace period: when the previous secret stops working.
    #[serde(serialize_with = "time_opt::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Changes on every edit; also sent as the `ETag` header.
    pub version: i64,
    /// Uses left and their refill; null: unlimited.
    pub credits: Option<super::credits::CreditsBody>,
    /// The key's own named rate limits.
    pub ratelimits: Vec<super::identities::RateLimitBody>,
    /// The identity the key belongs to (your id for it, and keyward's).
    pub external_id: Option<String>,
    pub identity_id: Option<String>,
    /// Roles of the workspace the key holds.
    pub roles: Vec<String>,
    /// Its secret can be revealed by an authorised member.
    pub recoverable: bool,
    /// `client` keys: the consumer key (public), sent with the consumer
    /// secret to `/oauth/token`. A roll issues a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "ck_Xq2mPz8TbL1cYk4Lw0xVbN7s")]
    pub client_id: Option<String>,
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> Self {
        KeyView {
            id: k.id.to_string(),
            workspace_id: k.workspace_id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            key_type: k.key_type.as_str().to_owned(),
            environment: k.environment.as_str().to_owned(),
            masked_key: k.masked.clone(),
            scopes: k.scopes.iter().map(ToString::to_string).collect(),
            read_only: k.flags.read_only,
            administrator: k.flags.administrator,
            account_administrator: k.flags.account_administrator,
            resources: k.resources.clone(),
            allowed_origins: k.allowed_origins.iter().map(|o| o.as_str().to_owned()).collect(),
            allowed_ips: k.allowed_ips.iter().map(ToString::to_string).collect(),
            metadata: k.metadata.clone(),
            state: k.state.as_str().to_owned(),
            legacy: k.legacy,
            expires_at: k.expires_at,
            created_at: k.created_at,
            updated_at: k.updated_at,
            last_used: k.last_used_at,
            revoked_at: k.revoked_at,
            previous_secret_expires_at: k.grace.map(|g| g.until),
            version: k.version,
            credits: k.credits.as_ref().map(super::credits::CreditsBody::of),
            ratelimits: super::identities::views_of(&k.ratelimits),
            external_id: k.identity.as_ref().map(|i| i.external_id.clone()),
            identity_id: k.identity.as_ref().map(|i| i.id.clone()),
            roles: k.roles.clone(),
            recoverable: k.recoverable,
            client_id: k.client_id.clone(),
        }
    }
}

/// A key with its secret: only in the responses that create one.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub key: KeyView,
    /// The full key. Shown only in this response; store it now.
    #[schema(example = "kw_live_3fH9xQ2mPz8TbL1cYk4Lw0xVbN7sQe2RtUiOpAsDfGhJkL1a2B")]
    pub secret: String,
    /// `client` keys: the consumer secret (the same as `secret`), shown
    /// only in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl KeyWithSecret {
    pub fn of(key: &keyward_core::key::ApiKey, secret: &keyward_core::token::Secret) -> Self {
        KeyWithSecret {
            key: KeyView::from(key),
            secret: secret.expose().to_owned(),
            client_secret: key.client_id.as_ref().map(|_| secret.expose().to_owned()),
        }
    }
}
