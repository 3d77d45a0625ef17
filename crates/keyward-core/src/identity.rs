//! Identities: one customer of the workspace (named by the caller's own
//! `externalId`), whose keys share its rate limits.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Code;
use crate::Error;
use crate::key::{KeyIdentity, is_invisible_format, validate_metadata};
use crate::ratelimit::{self, RateLimit};

pub const MAX_EXTERNAL_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub id: String,
    pub workspace_id: String,
    /// The caller's id for this customer, unique in the workspace; never
    /// changes.
    pub external_id: String,
    pub meta: Value,
    /// Limits shared by every key of the identity.
    pub ratelimits: Vec<RateLimit>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Identity {
    pub fn new(
        id: String,
        workspace_id: &str,
        external_id: String,
        meta: Option<Value>,
        ratelimits: Vec<RateLimit>,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        ratelimit::validate("ratelimits", &ratelimits)?;
        Ok(Identity {
            id,
            workspace_id: workspace_id.to_owned(),
            external_id: validate_external_id(&external_id)?,
            meta: validate_metadata(meta.unwrap_or_else(|| Value::Object(Default::default())))
                .map_err(|e| Error::invalid(e.code, e.message.replacen("metadata", "meta", 1)))?,
            ratelimits,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    /// Applies an edit of `meta` and/or `ratelimits`.
    pub fn apply(
        &mut self,
        meta: Option<Value>,
        ratelimits: Option<Vec<RateLimit>>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        if let Some(meta) = meta {
            self.meta = validate_metadata(meta)
                .map_err(|e| Error::invalid(e.code, e.message.replacen("metadata", "meta", 1)))?;
        }
        if let Some(limits) = ratelimits {
            ratelimit::validate("ratelimits", &limits)?;
            self.ratelimits = limits;
        }
        self.updated_at = now;
        self.version += 1;
        Ok(())
    }

    pub fn as_key_identity(&self) -> KeyIdentity {
        KeyIdentity { id: self.id.clone(), external_id: self.external_id.clone() }
    }
}

/// An external id: 1 to 256 characters, no control or invisible ones.
pub fn validate_external_id(s: &str) -> Result<String, Error> {
    let n = s.chars().count();
    if n == 0 || n > MAX_EXTERNAL_ID_LEN {
        return Err(Error::invalid(
            Code::InvalidExternalId,
            format!("externalId must be 1 to {MAX_EXTERNAL_ID_LEN} characters"),
        ));
    }
    if s.chars().any(|c| c.is_control() || is_invisible_format(c)) {
        return Err(Error::invalid(
            Code::InvalidExternalId,
            "externalId must not contain control, zero-width or bidirectional characters",
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_checked() {
        assert!(validate_external_id("acme").is_ok());
        assert!(validate_external_id(&"é".repeat(256)).is_ok());
        for bad in [String::new(), "a".repeat(257), "a\u{202E}b".into(), "a\nb".into()] {
            let e = validate_external_id(&bad).unwrap_err();
            assert!(e.message.starts_with("externalId"), "{}", e.message);
        }
    }
}
