//! A workspace's integration credentials: the JavaScript (publishable)
//! key, the default REST key (Full Access; an ordinary key that members
//! with `keys:manage` edit or delete like any other) and FTP access, whose
//! username is the site id and whose password keyward generates, keeps as
//! an argon2id hash (sealed too when recoverable) and checks for an FTP
//! server's external authentication.
//!
//! A new workspace gets them with its first key; an older one on its first
//! read, once (a second node making them at the same moment loses the
//! insert and reads the first's).

use std::net::IpAddr;
use std::sync::Arc;

use keyward_core::audit::Target;
use keyward_core::integrations::{
    FTP_PASSWORD_LEN, FtpAccess, Integrations, JAVASCRIPT_KEY_NAME, JAVASCRIPT_KEY_ORIGIN, REST_KEY_NAME,
    check_ftp_field,
};
use keyward_core::key::{ApiKey, KeyDraft, KeyState, KeyType};
use keyward_core::sealed::Keyring;
use keyward_core::workspace::Workspace;
use keyward_core::{Code, Error, ErrorKind, ids};
use keyward_store::{IntegrationsWrite, Store, StoreError, Unique, Write};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::keys::{KeyService, master_key_required, store_error};
use crate::members::MemberService;
use crate::principal::Principal;
use crate::throttle::{IpThrottle, Seen};
use crate::usage::{FtpTarget, UsageRecorder};
use crate::work::Change;

pub const INTEGRATIONS_READ: &str = "integrations:read";
pub const INTEGRATIONS_MANAGE: &str = "integrations:manage";
pub const FTP_AUTHENTICATE: &str = "ftp:authenticate";

/// A workspace's integrations as the API shows them.
#[derive(Debug)]
pub struct IntegrationsView {
    pub integrations: Integrations,
    pub javascript_key: ApiKey,
    /// `None` once deleted.
    pub rest_key: Option<ApiKey>,
    /// The FTP username: the site id, else the workspace id.
    pub ftp_username: String,
}

/// An FTP login keyward accepted.
#[derive(Debug)]
pub struct FtpLogin {
    pub workspace_id: String,
    /// The user's directory under the FTP server's root: the site id.
    pub home: String,
    pub read_only: bool,
}

/// Made with the integrations: the FTP password, shown once.
#[derive(Debug)]
pub struct NewIntegrations {
    pub integrations: Integrations,
    pub ftp_password: String,
}

pub struct IntegrationsService {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    members: Arc<MemberService>,
    clock: Arc<dyn Clock>,
    keyring: Option<Arc<Keyring>>,
    audit: Arc<AuditLog>,
    usage: Arc<UsageRecorder>,
    verifier: Arc<crate::verifier::Verifier>,
    /// `--ftp-host`: where users connect (shown beside the username).
    pub ftp_host: Option<String>,
}

fn invalid_credentials() -> Error {
    Error::new(ErrorKind::Unauthenticated, Code::InvalidCredentials, "Invalid FTP username or password")
}

/// What seals an FTP password to its workspace.
fn ftp_context(workspace_id: &str) -> Vec<u8> {
    format!("ftp-password:{workspace_id}").into_bytes()
}

impl IntegrationsService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyService>,
        members: Arc<MemberService>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
        audit: Arc<AuditLog>,
        usage: Arc<UsageRecorder>,
        verifier: Arc<crate::verifier::Verifier>,
        ftp_host: Option<String>,
    ) -> Self {
        IntegrationsService { store, keys, members, clock, keyring, audit, usage, verifier, ftp_host }
    }

    fn throttle(&self) -> &IpThrottle {
        self.verifier.throttle()
    }

    /// The writes that give `ws` its integrations (keys included), with
    /// the FTP password made for them. `attempt` > 1 names the keys
    /// `… 2`, `… 3` (when a key of the workspace has the name).
    pub async fn prepare(&self, ws: &Workspace, attempt: u32) -> Result<(NewIntegrations, Vec<Write>), Error> {
        let now = self.clock.now();
        let (js_key, js_token, mut writes) = self.keys.system_key(ws, javascript_draft(ws, attempt))?;
        let rest = rest_draft(ws, attempt, self.keyring.is_some());
        let (rest_key, _, rest_writes) = self.keys.system_key(ws, rest)?;
        writes.extend(rest_writes);
        let (password, hash, sealed) = self.new_password(ws).await?;
        let integrations = Integrations {
            workspace_id: ws.id.clone(),
            javascript_key_id: js_key.id.to_string(),
            javascript_key: js_token.expose().to_owned(),
            rest_key_id: Some(rest_key.id.to_string()),
            ftp: FtpAccess { password_hash: hash, enabled: true, password_set_at: now, locked: false, sealed: false },
            created_at: now,
        };
        writes.push(Write::Integrations(IntegrationsWrite::Insert { integrations: integrations.clone(), sealed }));
        let target = Target::new("integrations", &ws.id, Some(&ws.name));
        let changes = serde_json::json!({"javascriptKey": js_key.id.to_string(), "restKey": rest_key.id.to_string()});
        writes.push(self.audit.write(&Principal::system(&ws.id), "integrations.created", target, changes));
        Ok((NewIntegrations { integrations, ftp_password: password }, writes))
    }

    /// A new FTP password: itself, its hash and (when the workspace keeps
    /// secrets recoverable and a master key is set) its sealed copy.
    async fn new_password(
        &self,
        ws: &Workspace,
    ) -> Result<(String, String, Option<keyward_core::sealed::SealedSecret>), Error> {
        let password = ids::random_base62(FTP_PASSWORD_LEN);
        let hash = self.members.hash_secret(&password).await?;
        let sealed = match (&self.keyring, ws.allow_recoverable) {
            (Some(keyring), true) => Some(keyring.seal(password.as_bytes(), &ftp_context(&ws.id))),
            _ => None,
        };
        Ok((password, hash, sealed))
    }

    async fn workspace(&self, id: &str) -> Result<Workspace, Error> {
        self.store
            .get_workspace(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, Code::WorkspaceNotFound, "Workspace not found"))
    }

    /// The workspace's integrations, made on the first read.
    async fn ensure(&self, ws: &Workspace) -> Result<Integrations, Error> {
        for attempt in 1..=MAX_ATTEMPTS {
            if let Some(found) = self.store.get_integrations(&ws.id).await.map_err(store_error)? {
                return Ok(found);
            }
            let (_, writes) = self.prepare(ws, attempt).await?;
            let mut change = Change::new();
            change.extend(writes);
            match self.audit.work().commit(change).await {
                Ok(()) => {}
                // Made meanwhile (another request or node): read theirs;
                // or a key has the name: the next name.
                Err(StoreError::Conflict(Unique::Integrations | Unique::KeyName)) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        self.store.get_integrations(&ws.id).await.map_err(store_error)?.ok_or_else(|| {
            Error::new(ErrorKind::Conflict, Code::Conflict, "The workspace's integrations could not be made; try again")
        })
    }

    /// The caller's integrations (`integrations:read`). A JavaScript key
    /// that was deleted is made again.
    pub async fn get(&self, who: &Principal) -> Result<IntegrationsView, Error> {
        who.require(INTEGRATIONS_READ)?;
        let ws = self.workspace(who.workspace_id()).await?;
        let mut integrations = self.ensure(&ws).await?;
        let mut attempt = 0;
        let javascript_key = loop {
            if let Some(key) = self.live_key(&ws.id, Some(&integrations.javascript_key_id)).await? {
                break key;
            }
            attempt += 1;
            if attempt > MAX_ATTEMPTS {
                return Err(Error::conflict(Code::Conflict, "The JavaScript key could not be made again; try again"));
            }
            integrations = self.replace_javascript_key(&ws, &integrations, attempt).await?;
        };
        let rest_key = match &integrations.rest_key_id {
            Some(id) => self.store.get_key(&ws.id, id).await.map_err(store_error)?,
            None => None,
        };
        Ok(IntegrationsView { ftp_username: ws.site_id().to_owned(), integrations, javascript_key, rest_key })
    }

    /// The key `id` names unless it is gone or revoked.
    async fn live_key(&self, workspace_id: &str, id: Option<&str>) -> Result<Option<ApiKey>, Error> {
        let Some(id) = id else { return Ok(None) };
        let key = self.store.get_key(workspace_id, id).await.map_err(store_error)?;
        Ok(key.filter(|k| k.state != KeyState::Revoked))
    }

    async fn replace_javascript_key(
        &self,
        ws: &Workspace,
        was: &Integrations,
        attempt: u32,
    ) -> Result<Integrations, Error> {
        let (key, token, writes) = self.keys.system_key(ws, javascript_draft(ws, attempt))?;
        let mut change = Change::new();
        change.extend(writes);
        change.push(Write::Integrations(IntegrationsWrite::ReplaceJavascriptKey {
            workspace_id: ws.id.clone(),
            was: was.javascript_key_id.clone(),
            key_id: key.id.to_string(),
            token: token.expose().to_owned(),
        }));
        match self.audit.work().commit(change).await {
            // Replaced meanwhile, or a live key has the name: read again.
            Ok(()) | Err(StoreError::NotFound) | Err(StoreError::Conflict(Unique::KeyName)) => {}
            Err(e) => return Err(store_error(e)),
        }
        self.ensure(ws).await
    }

    /// A new default REST key when the workspace has none left (deleted or
    /// revoked): `keys:manage` and `integrations:manage`, and the caller
    /// must hold Full Access itself. The secret is shown once.
    pub async fn create_rest_key(&self, who: &Principal) -> Result<(ApiKey, keyward_core::token::Secret), Error> {
        who.require(INTEGRATIONS_MANAGE)?;
        let ws = self.workspace(who.workspace_id()).await?;
        let integrations = self.ensure(&ws).await?;
        let exists = || Error::conflict(Code::RestKeyExists, "The workspace has a default REST key; delete it first");
        if self.live_key(&ws.id, integrations.rest_key_id.as_deref()).await?.is_some() {
            return Err(exists());
        }
        let draft = rest_draft(&ws, 1, self.keyring.is_some());
        let was = integrations.rest_key_id.clone();
        let set = |key: &ApiKey| {
            Some(Write::Integrations(IntegrationsWrite::SetRestKey {
                workspace_id: ws.id.clone(),
                was: was.clone(),
                key_id: key.id.to_string(),
            }))
        };
        match self.keys.create_with(who, draft, set).await {
            Err(e) if e.kind == ErrorKind::NotFound && e.code == Code::KeyNotFound => Err(exists()),
            done => done,
        }
    }

    /// A new FTP password (`integrations:manage`), shown once; it also
    /// lifts a lock. The username and the password.
    pub async fn rotate_ftp(&self, who: &Principal) -> Result<(String, String), Error> {
        who.require(INTEGRATIONS_MANAGE)?;
        let ws = self.workspace(who.workspace_id()).await?;
        self.ensure(&ws).await?;
        let (password, hash, sealed) = self.new_password(&ws).await?;
        let kept = sealed.is_some();
        let write =
            IntegrationsWrite::SetFtpPassword { workspace_id: ws.id.clone(), hash, sealed, at: self.clock.now() };
        let mut change = Change::of(Write::Integrations(write));
        let changes = serde_json::json!({"recoverable": kept});
        change.push(self.audit.write(who, "ftp.password_rotated", ftp_target(&ws), changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok((ws.site_id().to_owned(), password))
    }

    /// Enables or disables FTP access (`integrations:manage`); enabling
    /// also lifts a lock.
    pub async fn set_ftp_enabled(&self, who: &Principal, enabled: bool) -> Result<IntegrationsView, Error> {
        who.require(INTEGRATIONS_MANAGE)?;
        let ws = self.workspace(who.workspace_id()).await?;
        self.ensure(&ws).await?;
        let write = IntegrationsWrite::SetFtpEnabled { workspace_id: ws.id.clone(), enabled };
        let mut change = Change::of(Write::Integrations(write));
        let action = if enabled { "ftp.enabled" } else { "ftp.disabled" };
        change.push(self.audit.write(who, action, ftp_target(&ws), serde_json::json!({})));
        self.audit.work().commit(change).await.map_err(store_error)?;
        self.get(who).await
    }

    /// The FTP password again, when it was kept sealed: to a signed-in
    /// member holding `integrations:manage` who re-authenticated in the
    /// last five minutes (the rules of a key's reveal). Audited.
    pub async fn reveal_ftp(&self, who: &Principal) -> Result<(String, String), Error> {
        let member = who.member().ok_or_else(|| {
            Error::forbidden(
                Code::MemberRequired,
                "Only a signed-in member can see the FTP password, never a key or token of a program",
            )
        })?;
        who.require(INTEGRATIONS_MANAGE)?;
        if !member.fresh {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                Code::ReauthenticationRequired,
                "Confirm your password first (POST /v1/auth/reauth); it stays confirmed for 5 minutes",
            ));
        }
        let ws = self.workspace(who.workspace_id()).await?;
        self.ensure(&ws).await?;
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let sealed = self.store.ftp_sealed(&ws.id).await.map_err(store_error)?.ok_or_else(|| {
            Error::conflict(Code::NotRecoverable, "The FTP password was not kept; rotate it to get a new one")
        })?;
        let plain = keyring.open(&sealed, &ftp_context(&ws.id))?;
        let password = String::from_utf8(plain).map_err(|_| Error::internal("a sealed password is not text"))?;
        let entry = self.audit.write(who, "ftp.password_revealed", ftp_target(&ws), serde_json::json!({}));
        self.audit.work().commit(Change::of(entry)).await.map_err(store_error)?;
        Ok((ws.site_id().to_owned(), password))
    }

    /// Checks an FTP login for an FTP server (`ftp:authenticate`), for the
    /// FTP users of the caller's workspace. Unknown usernames, wrong
    /// passwords and disabled or locked access all get the same 401, in
    /// the same time; `ip` is the FTP client's address, whose failures
    /// count toward its per-address limit.
    pub async fn authenticate(
        &self,
        who: &Principal,
        username: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<FtpLogin, Error> {
        who.require(FTP_AUTHENTICATE)?;
        check_ftp_field("username", username)?;
        check_ftp_field("password", password)?;
        let seen = Seen::ByWorkspace(who.workspace_id());
        if let Some(wait) = ip.and_then(|ip| self.throttle().retry_after(seen, ip)) {
            return Err(Error::new(
                ErrorKind::TooManyRequests { retry_after_secs: wait },
                Code::TooManyFailures,
                format!("Too many failed logins from this address; try again in {wait} seconds"),
            ));
        }
        let found = self.store.ftp_login(username).await.map_err(store_error)?;
        // Another workspace's FTP users are not the caller's to check.
        let found = found.filter(|i| i.workspace_id == who.workspace_id());
        let good = self.members.check_secret(found.as_ref().map(|i| i.ftp.password_hash.as_str()), password).await;
        let Some(integrations) = found else {
            if let Some(ip) = ip {
                self.throttle().failed(seen, ip);
            }
            // Recorded by address (a mistyped name may be a password).
            self.usage.ftp_failed(who.workspace_id(), FtpTarget::Address(ip), "unknown_username", self.clock.now_ms());
            return Err(invalid_credentials());
        };
        let refusal = match (good, integrations.ftp.enabled, integrations.ftp.locked) {
            (true, true, false) => None,
            (false, _, _) => Some("invalid_credentials"),
            (true, false, _) => Some("disabled"),
            (true, true, true) => Some("locked"),
        };
        let Some(reason) = refusal else {
            return Ok(FtpLogin {
                workspace_id: integrations.workspace_id,
                home: username.to_owned(),
                read_only: false,
            });
        };
        if let Some(ip) = ip {
            self.throttle().failed(seen, ip);
        }
        self.usage.ftp_failed(&integrations.workspace_id, FtpTarget::User(username), reason, self.clock.now_ms());
        if reason == "invalid_credentials" {
            // Counted after the answer: a known username costs the caller
            // what an unknown one does.
            let (store, audit, clock) = (self.store.clone(), self.audit.clone(), self.clock.clone());
            let workspace_id = integrations.workspace_id;
            tokio::spawn(async move {
                if let Err(e) = count_failure(store.as_ref(), &audit, clock.as_ref(), &workspace_id).await {
                    tracing::warn!(error = %e.message, "counting a wrong FTP password failed");
                }
            });
        }
        Err(invalid_credentials())
    }
}

/// Counts a wrong FTP password and locks FTP access at the workspace's
/// lockout threshold (audited as `ftp.locked`).
async fn count_failure(
    store: &dyn Store,
    audit: &AuditLog,
    clock: &dyn Clock,
    workspace_id: &str,
) -> Result<(), Error> {
    let Some(ws) = store.get_workspace(workspace_id).await.map_err(store_error)? else { return Ok(()) };
    let now = clock.now();
    let window_start = now - chrono::Duration::minutes(i64::from(ws.lockout.window_minutes));
    let count = store.count_ftp_failure(workspace_id, window_start, now).await.map_err(store_error)?;
    if count.is_some_and(|n| n >= i64::from(ws.lockout.threshold)) {
        let mut change = Change::of(Write::Integrations(IntegrationsWrite::LockFtp {
            workspace_id: workspace_id.to_owned(),
            at: now,
        }));
        let changes =
            serde_json::json!({"threshold": ws.lockout.threshold, "windowMinutes": ws.lockout.window_minutes});
        change.push(audit.write(&Principal::system(workspace_id), "ftp.locked", ftp_target(&ws), changes));
        match audit.work().commit(change).await {
            // Locked already.
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(())
}

/// Names tried for the keys made with the integrations.
const MAX_ATTEMPTS: u32 = 5;

fn named(name: &str, attempt: u32) -> String {
    if attempt > 1 { format!("{name} {attempt}") } else { name.to_owned() }
}

/// The JavaScript key: publishable, with the workspace's public
/// permissions, for `http://localhost` until its origins are edited.
fn javascript_draft(ws: &Workspace, attempt: u32) -> KeyDraft {
    KeyDraft {
        name: Some(named(JAVASCRIPT_KEY_NAME, attempt)),
        description: Some("For website integrations: publishable, safe in a browser.".to_owned()),
        key_type: Some(KeyType::Publishable),
        scopes: ws.public_permissions.iter().map(ToString::to_string).collect(),
        allowed_origins: vec![JAVASCRIPT_KEY_ORIGIN.to_owned()],
        ..Default::default()
    }
}

/// The default REST key: Full Access; recoverable when the workspace
/// allows it and a master key is set.
fn rest_draft(ws: &Workspace, attempt: u32, can_seal: bool) -> KeyDraft {
    KeyDraft {
        name: Some(named(REST_KEY_NAME, attempt)),
        description: Some("Fully scoped: access to every REST API of the workspace.".to_owned()),
        scopes: vec!["*".to_owned()],
        recoverable: ws.allow_recoverable && can_seal,
        ..Default::default()
    }
}

fn ftp_target(ws: &Workspace) -> Target {
    Target::new("ftp", ws.site_id(), Some(&ws.name))
}
