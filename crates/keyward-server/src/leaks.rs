//! Leaked keys stop themselves: a code host's secret-scanning alert
//! (GitHub's and GitLab's partner programs: a JSON list of found tokens,
//! signed with ECDSA P-256/SHA-256 by a key the operator configures), a
//! member's report, or anyone holding the key (`self-revoke`). Each report
//! applies the workspace's leak policy (revoke, roll or notify) in one
//! unit of work with its `key.leaked` audit entry (whence the webhook) and
//! the record the console's banner shows.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use keyward_core::key::{ApiKey, KeyState};
use keyward_core::workspace::LeakPolicy;
use keyward_core::{Code, Error, ErrorKind};
use keyward_store::webhooks::{KeyLeak, WebhooksWrite};
use keyward_store::{Store, Write};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{AuditLog, key_target};
use crate::clock::Clock;
use crate::keys::{KeyService, store_error};
use crate::principal::Principal;
use crate::verifier::Verifier;
use crate::work::Change;

/// The code hosts whose alerts keyward takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeHost {
    GitHub,
    GitLab,
}

impl CodeHost {
    pub fn source(self) -> &'static str {
        match self {
            CodeHost::GitHub => "github",
            CodeHost::GitLab => "gitlab",
        }
    }

    /// The headers naming the signing key and carrying the signature.
    pub fn headers(self) -> (&'static str, &'static str) {
        match self {
            CodeHost::GitHub => ("github-public-key-identifier", "github-public-key-signature"),
            CodeHost::GitLab => ("gitlab-public-key-identifier", "gitlab-public-key-signature"),
        }
    }
}

/// One token an alert reports.
#[derive(Debug, Deserialize)]
pub struct Found {
    pub token: String,
    #[serde(rename = "type")]
    pub token_type: String,
    pub url: Option<String>,
    pub source: Option<String>,
}

/// The answer for one token, in the partner programs' shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Feedback {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    pub token_type: String,
    /// `true_positive` (a key of this deployment) or `false_positive`.
    pub label: &'static str,
}

/// The public keys alerts are signed with, read from the operator's file
/// (GitHub's secret-scanning keys document: `{"public_keys":
/// [{"key_identifier", "key", "is_current"}]}`), read again when it changes.
pub struct AlertKeys {
    path: Option<PathBuf>,
    /// The keys as read, and the file's modification time then.
    loaded: Mutex<Option<(SystemTime, Keys)>>,
}

/// Public keys by their identifier.
type Keys = Arc<Vec<(String, VerifyingKey)>>;

#[derive(Deserialize)]
struct KeysDocument {
    public_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    key_identifier: String,
    key: String,
}

impl AlertKeys {
    pub fn new(path: Option<PathBuf>) -> Self {
        AlertKeys { path, loaded: Mutex::new(None) }
    }

    /// Reads and checks the file (at start, so a bad one is reported then).
    pub fn check(&self) -> anyhow::Result<usize> {
        match &self.path {
            None => Ok(0),
            Some(path) => Ok(read_keys(path)?.len()),
        }
    }

    fn current(&self) -> Result<Keys, Error> {
        let Some(path) = &self.path else {
            return Err(refused("no public keys are configured for leak alerts (--leak-public-keys)"));
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|_| {
            tracing::warn!(path = %path.display(), "the leak alert public keys file cannot be read");
            refused("the public keys for leak alerts cannot be read")
        })?;
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, keys)) = loaded.as_ref()
            && *at == modified
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(read_keys(path).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "the leak alert public keys file is not valid");
            refused("the public keys for leak alerts cannot be read")
        })?);
        *loaded = Some((modified, keys.clone()));
        Ok(keys)
    }

    /// Checks `signature` (base64 DER) over `body` with the key `identifier` names.
    pub fn verify(&self, body: &[u8], identifier: Option<&str>, signature: Option<&str>) -> Result<(), Error> {
        let (Some(identifier), Some(signature)) = (identifier, signature) else {
            return Err(refused("the alert is not signed (the public key identifier and signature headers)"));
        };
        let keys = self.current()?;
        let key = keys
            .iter()
            .find(|(id, _)| id == identifier)
            .map(|(_, k)| k)
            .ok_or_else(|| refused("the alert is signed by an unknown public key"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| refused("the alert's signature is not base64"))?;
        let signature = Signature::from_der(&der).map_err(|_| refused("the alert's signature is malformed"))?;
        key.verify(body, &signature).map_err(|_| refused("the alert's signature does not verify"))
    }
}

fn read_keys(path: &std::path::Path) -> anyhow::Result<Vec<(String, VerifyingKey)>> {
    let text = std::fs::read_to_string(path)?;
    let doc: KeysDocument = serde_json::from_str(&text)?;
    doc.public_keys
        .into_iter()
        .map(|e| {
            let key = VerifyingKey::from_public_key_pem(e.key.trim())
                .map_err(|_| anyhow::anyhow!("the key {} is not a P-256 public key in PEM", e.key_identifier))?;
            Ok((e.key_identifier, key))
        })
        .collect()
}

fn refused(why: &str) -> Error {
    Error::new(ErrorKind::Unauthenticated, Code::InvalidLeakSignature, why)
}

/// What a report says beside the key.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: &'static str,
    pub url: Option<String>,
}

pub struct LeakService {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    verifier: Arc<Verifier>,
    audit: Arc<AuditLog>,
    clock: Arc<dyn Clock>,
    alert_keys: AlertKeys,
}

/// The most tokens one alert may report.
pub const MAX_ALERT_TOKENS: usize = 1000;

impl LeakService {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyService>,
        verifier: Arc<Verifier>,
        audit: Arc<AuditLog>,
        clock: Arc<dyn Clock>,
        alert_keys: AlertKeys,
    ) -> Self {
        LeakService { store, keys, verifier, audit, clock, alert_keys }
    }

    /// A member reports key `id` leaked (`keys:manage`): the workspace's
    /// policy applies. What it did.
    pub async fn member_report(&self, who: &Principal, id: &str) -> Result<(ApiKey, &'static str), Error> {
        who.require(crate::keys::MANAGE)?;
        self.respond(who, id, Report { source: "member", url: None }, None).await
    }

    /// Anyone holding the key revokes it. An unknown or revoked key: 404
    /// alike.
    pub async fn self_revoke(&self, token: &str, client: Principal) -> Result<(), Error> {
        let not_found = || Error::key_not_found();
        let key = self.verifier.holder_of(token).await?.ok_or_else(not_found)?;
        if key.state == KeyState::Revoked {
            return Err(not_found());
        }
        let who = Principal::system(&*key.workspace_id).from_client(client.ip, client.user_agent.as_deref());
        let report = Report { source: "self", url: None };
        let (_, action) = self.respond(&who, &key.id, report, Some(LeakPolicy::Revoke)).await?;
        if action != "revoked" {
            return Err(not_found());
        }
        Ok(())
    }

    /// A code host's alert: checked, then each token of a key answered
    /// `true_positive` and the policy applied; others `false_positive`.
    pub async fn alert(
        &self,
        host: CodeHost,
        body: &[u8],
        identifier: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Vec<Feedback>, Error> {
        self.alert_keys.verify(body, identifier, signature)?;
        let found: Vec<Found> = serde_json::from_slice(body).map_err(|_| {
            Error::invalid(Code::InvalidBody, "The alert must be a JSON list of {token, type, url, source}")
        })?;
        if found.len() > MAX_ALERT_TOKENS {
            return Err(Error::invalid(
                Code::InvalidBody,
                format!("An alert may report at most {MAX_ALERT_TOKENS} tokens"),
            ));
        }
        let mut feedback = Vec::with_capacity(found.len());
        for f in found {
            let token_hash = hex(&Sha256::digest(f.token.as_bytes()));
            let label = match self.verifier.holder_of(&f.token).await? {
                Some(key) => {
                    let who = Principal::system(&*key.workspace_id);
                    let url = f.url.filter(|u| u.len() <= 2000 && !u.chars().any(char::is_control));
                    let report = Report { source: host.source(), url };
                    match self.respond(&who, &key.id, report, None).await {
                        Ok(_) => "true_positive",
                        // Deleted meanwhile: nothing left to stop.
                        Err(e) if e.code == Code::KeyNotFound => "false_positive",
                        Err(e) => return Err(e),
                    }
                }
                None => "false_positive",
            };
            feedback.push(Feedback { token_hash, token_type: f.token_type, label });
        }
        Ok(feedback)
    }

    /// Applies `policy` (else the workspace's) to key `id`, with the leak's
    /// record and audit entry, in one change. What it did: `revoked`,
    /// `rolled` or `notified`.
    async fn respond(
        &self,
        who: &Principal,
        id: &str,
        report: Report,
        policy: Option<LeakPolicy>,
    ) -> Result<(ApiKey, &'static str), Error> {
        let ws = self.verifier.workspace(who.workspace_id()).await?;
        let policy = policy.unwrap_or(ws.notices.leak_policy);
        let now = self.clock.now();
        let leak_writes = |k: &ApiKey, action: &'static str| -> Vec<Write> {
            let leak = KeyLeak {
                key_id: k.id.to_string(),
                workspace_id: k.workspace_id.to_string(),
                reported_at: now,
                source: report.source.to_owned(),
                url: report.url.clone(),
                action: action.to_owned(),
            };
            let changes = json!({"source": report.source, "url": report.url, "action": action});
            vec![
                Write::Webhooks(WebhooksWrite::RecordLeak(leak)),
                self.audit.write(who, "key.leaked", key_target(k), changes),
            ]
        };
        let current = self.keys.load_key(who.workspace_id(), id).await?;
        let revoked = current.state == KeyState::Revoked;
        match policy {
            LeakPolicy::Revoke if !revoked => {
                let (key, changed) = self.keys.revoke_with(who, id, |k| leak_writes(k, "revoked")).await?;
                if changed {
                    return Ok((key, "revoked"));
                }
            }
            LeakPolicy::Roll if !revoked && current.lookup_prefix.is_none() => {
                let (key, _secret) = self.keys.roll_with(who, id, 0, |k| leak_writes(k, "rolled")).await?;
                return Ok((key, "rolled"));
            }
            _ => {}
        }
        // Notify, or nothing left to stop: the record and the event.
        let action = if revoked { "revoked" } else { "notified" };
        let mut change = Change::new();
        change.extend(leak_writes(&current, action));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok((current, action))
    }

    /// The latest leak report of a key of the caller's workspace.
    pub async fn leak_of(&self, who: &Principal, key_id: &str) -> Result<Option<KeyLeak>, Error> {
        who.require(crate::keys::READ)?;
        self.store.key_leak(who.workspace_id(), key_id).await.map_err(store_error)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
