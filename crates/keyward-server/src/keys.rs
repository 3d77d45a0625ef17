//! Key management: every operation on keys that a principal may ask for,
//! written once for all interfaces (the /v1 API, the seed-compatible API,
//! the CLI). Each mutation is read → change in the domain → conditional
//! write → cache update, so a concurrent change is detected, never lost.

use std::sync::Arc;

use chrono::{Duration, DurationRound, Utc};
use keyward_core::Code;
use keyward_core::audit::{Outcome, Target};
use keyward_core::authority::Authority;
use keyward_core::credits::CreditOp;
use keyward_core::hash::{HashScheme, SecretHash, parse_hex32};
use keyward_core::key::{ApiKey, KeyDraft, KeyPatch, validate_name};
use keyward_core::member::{Role, builtin_role};
use keyward_core::sealed::Keyring;
use keyward_core::token::{self, Secret};
use keyward_core::workspace::Workspace;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{AccessWrite, IntegrationsWrite, KeyFilter, KeyPage, Page, Store, StoreError, Unique, Write};

use crate::work::Change;

use crate::audit::{AuditLog, key_summary, key_target};
use crate::clock::Clock;
use crate::identities::{IdentityService, is_identity_race};
use crate::principal::Principal;
use crate::verifier::Verifier;

pub fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::key_not_found(),
        StoreError::Conflict(Unique::KeyName) => {
            Error::conflict(Code::DuplicateName, "An API key with this name already exists")
        }
        StoreError::Conflict(Unique::KeyId) => {
            Error::conflict(Code::DuplicateId, "An API key with this id already exists")
        }
        StoreError::Conflict(Unique::ImportedSecret) => {
            Error::conflict(Code::DuplicateKey, "This key has already been imported")
        }
        StoreError::Conflict(Unique::IdentityExternalId) => {
            Error::conflict(Code::DuplicateExternalId, "An identity with this externalId already exists")
        }
        StoreError::Conflict(Unique::MemberEmail) => {
            Error::conflict(Code::DuplicateEmail, "A member with this email already exists")
        }
        StoreError::Conflict(Unique::Membership) => {
            Error::conflict(Code::AlreadyMember, "This person is already a member of the workspace")
        }
        StoreError::Conflict(Unique::RoleName) => {
            Error::conflict(Code::DuplicateRole, "The workspace already has a role with this name")
        }
        StoreError::Conflict(Unique::PgpKeyName) => {
            Error::conflict(Code::DuplicateName, "The workspace already has a PGP key with this name")
        }
        StoreError::Conflict(Unique::SiteId) => {
            Error::conflict(Code::DuplicateSiteId, "Another workspace has this siteId")
        }
        StoreError::Conflict(Unique::Integrations) => {
            Error::conflict(Code::Conflict, "The workspace's integrations were made meanwhile; try again")
        }
        StoreError::Conflict(Unique::IdempotencyKey) => Error::conflict(
            Code::IdempotencyKeyInProgress,
            "Another request with this Idempotency-Key made its change first",
        ),
        StoreError::Conflict(Unique::Other) => Error::conflict(Code::Conflict, "The object already exists"),
        StoreError::LastOwner => Error::conflict(
            Code::LastOwner,
            "The workspace must keep at least one owner: make another member owner first",
        ),
        StoreError::InUse => Error::conflict(
            Code::IdentityInUse,
            "Live keys belong to this identity; revoke or delete them (or move them) first",
        ),
        StoreError::VersionMismatch => Error::conflict(
            Code::ConcurrentModification,
            "The API key was changed by another request; read it again and retry",
        ),
        StoreError::LimitReached => Error::key_limit_reached(),
        StoreError::Backend(msg) => {
            tracing::error!(error = %msg, "storage failure");
            Error::new(ErrorKind::Internal, Code::StorageUnavailable, "Storage is unavailable; retry later")
        }
        StoreError::Unavailable(msg) | StoreError::Contention(msg) => {
            tracing::warn!(error = %msg, "storage unavailable");
            Error::new(ErrorKind::Internal, Code::StorageUnavailable, "Storage is unavailable; retry later")
        }
    }
}

/// An import: a key that exists elsewhere, given as plaintext or SHA-256.
#[derive(Debug, Default)]
pub struct ImportDraft {
    pub draft: KeyDraft,
    pub id: Option<String>,
    pub plaintext: Option<Secret>,
    pub sha256: Option<String>,
    pub prefix: Option<String>,
    pub legacy: bool,
}

#[derive(Debug, Clone)]
pub struct UsageReport {
    pub key_id: Arc<str>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    pub granularity: &'static str,
    pub since: chrono::DateTime<Utc>,
    /// Periods with at least one verification, oldest first: their start
    /// and the count per outcome code.
    pub buckets: Vec<(chrono::DateTime<Utc>, std::collections::BTreeMap<String, u64>)>,
}

pub struct KeyService {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    /// The master keys recoverable secrets are sealed with, if configured.
    keyring: Option<Arc<Keyring>>,
    audit: Arc<AuditLog>,
}

/// What an edit of a key did: nothing, or changed it, with further writes
/// that commit with it, before the key's update (what the key comes to
/// name, such as a new identity) and after it.
enum Edit {
    Unchanged,
    Changed { before: Vec<Write>, after: Vec<Write> },
}

impl Edit {
    fn changed() -> Self {
        Edit::Changed { before: Vec::new(), after: Vec::new() }
    }

    fn when(changed: bool) -> Self {
        if changed { Edit::changed() } else { Edit::Unchanged }
    }
}

fn check_if_match(key: &ApiKey, if_match: Option<i64>) -> Result<(), Error> {
    match if_match {
        Some(v) if v != key.version => Err(Error::new(
            ErrorKind::PreconditionFailed,
            Code::PreconditionFailed,
            "The API key has changed since it was read (If-Match does not match its ETag)",
        )),
        _ => Ok(()),
    }
}

fn is_valid_import_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn is_valid_import_prefix(p: &str) -> bool {
    (2..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Read keys (list, show, usage).
pub const READ: &str = "keys:read";
/// Create, edit, roll, deactivate, revoke, delete and import keys.
pub const MANAGE: &str = "keys:manage";
/// Show a recoverable key's secret again (members only, freshly
/// re-authenticated).
pub const REVEAL: &str = "keys:reveal";

/// The one authority check for a key as it would be (made, imported,
/// cloned, rolled or edited): nothing in it beyond the caller's own
/// authority. A publishable key's roles, like its scopes, grant only the
/// workspace's public permissions.
fn may_hold(who: &Principal, ws: &Workspace, key: &ApiKey, custom: &[Role]) -> Result<(), Error> {
    keyward_core::key::check_public_roles(key, custom, ws)?;
    who.may_give(custom, &Authority::of_key(key, custom))
}

pub fn master_key_required() -> Error {
    Error::invalid(
        Code::MasterKeyRequired,
        "Recoverable keys need a master key: start keyward with --master-key-file or KEYWARD_MASTER_KEY",
    )
}

/// How long a new secret may wait for the console page that shows it.
pub const DISPLAY_WINDOW_MS: i64 = 5 * 60 * 1000;

fn display_context(who: &Principal, key_id: &str) -> Option<String> {
    let member = who.member()?;
    Some(format!("console-display:{}:{key_id}", member.session_id))
}

impl KeyService {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
        audit: Arc<AuditLog>,
    ) -> Self {
        KeyService { store, verifier, clock, keyring, audit }
    }

    /// Whether recoverable keys can be made (a master key is configured).
    pub fn can_seal(&self) -> bool {
        self.keyring.is_some()
    }

    /// Seals `text` (a secret just made, and the page's heading) for the
    /// console page that shows it once, after a redirect: it travels in a
    /// cookie that opens only for this session and this key, for
    /// [`DISPLAY_WINDOW_MS`]. `None` without a master key or a member.
    pub fn seal_for_display(&self, who: &Principal, key_id: &str, text: &str) -> Option<String> {
        use base64::Engine as _;
        let keyring = self.keyring.as_ref()?;
        let context = display_context(who, key_id)?;
        let until = self.clock.now_ms() + DISPLAY_WINDOW_MS;
        let sealed = keyring.seal(format!("{until}\n{text}").as_bytes(), context.as_bytes());
        Some(format!("{}.{}", sealed.key_id, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed.blob)))
    }

    /// What [`seal_for_display`](Self::seal_for_display) sealed, while it is
    /// still due; `None` for anything else.
    pub fn open_for_display(&self, who: &Principal, key_id: &str, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        let keyring = self.keyring.as_ref()?;
        let context = display_context(who, key_id)?;
        let (master_key_id, blob) = sealed.split_once('.')?;
        let blob = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(blob).ok()?;
        let sealed = keyward_core::sealed::SealedSecret { key_id: master_key_id.to_owned(), blob };
        let text = String::from_utf8(keyring.open(&sealed, context.as_bytes()).ok()?).ok()?;
        let (until, text) = text.split_once('\n')?;
        (until.parse::<i64>().ok()? >= self.clock.now_ms()).then(|| text.to_owned())
    }

    /// The write that keeps a recoverable key's secret sealed (none for
    /// other keys). New recoverable keys need the workspace to allow them.
    fn seal_writes(&self, ws: &Workspace, key: &ApiKey, secret: &Secret, new: bool) -> Result<Vec<Write>, Error> {
        if !key.recoverable {
            return Ok(Vec::new());
        }
        if new && !ws.allow_recoverable {
            return Err(Error::invalid(
                Code::RecoverableNotAllowed,
                "This workspace does not allow recoverable keys (settings: allowRecoverable)",
            ));
        }
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let sealed = keyring.seal(secret.expose().as_bytes(), key.id.as_bytes());
        Ok(vec![Write::Access(AccessWrite::SealSecret { key_id: key.id.to_string(), sealed })])
    }

    /// Refuses role names the workspace does not define (built-in roles
    /// and its own).
    /// The workspace's own roles (from the verifier's memory after the
    /// first read), refusing role names it does not define.
    async fn check_roles(&self, ws: &Workspace, roles: &[String]) -> Result<Arc<Vec<Role>>, Error> {
        let custom = self.verifier.roles(&ws.id).await?;
        for role in roles {
            if builtin_role(role).is_none() && !custom.iter().any(|r| &r.name == role) {
                return Err(Error::invalid(
                    Code::UnknownRole,
                    "roles: a role the workspace does not define (GET /v1/roles lists them)",
                ));
            }
        }
        Ok(custom)
    }

    /// A recoverable key's secret, to a signed-in member holding
    /// `keys:reveal` who re-authenticated in the last five minutes.
    /// A recoverable key's secret, with the key it belongs to.
    pub async fn reveal(&self, who: &Principal, id: &str) -> Result<(Secret, ApiKey), Error> {
        match self.reveal_secret(who, id).await {
            // No secret leaves without its entry.
            Ok((secret, key)) => {
                let entry = self.audit.write(who, "key.revealed", key_target(&key), serde_json::json!({}));
                self.audit.work().commit(Change::of(entry)).await.map_err(store_error)?;
                Ok((secret, key))
            }
            // A key of another workspace (or none) is nothing to record.
            Err(e) if e.kind == ErrorKind::NotFound => Err(e),
            Err(e) => {
                let target = Target::new("api_key", id, None);
                let changes = serde_json::json!({"error": e.code});
                self.audit.record(self.audit.entry(who, "key.revealed", target, Outcome::Failure, changes)).await;
                Err(e)
            }
        }
    }

    async fn reveal_secret(&self, who: &Principal, id: &str) -> Result<(Secret, ApiKey), Error> {
        let member = match &who.caller {
            crate::principal::Caller::Member(m) => m,
            _ => {
                return Err(Error::forbidden(
                    Code::MemberRequired,
                    "Only a signed-in member can reveal a key, never a key or token of a program",
                ));
            }
        };
        who.require(REVEAL)?;
        if !member.fresh {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                Code::ReauthenticationRequired,
                "Confirm your password first (POST /v1/auth/reauth); it stays confirmed for 5 minutes",
            ));
        }
        let key = self.load(who.workspace_id(), id).await?;
        // The secret is the key's authority: the member must cover it.
        let custom = self.verifier.roles(who.workspace_id()).await?;
        who.may_give(&custom, &Authority::of_key(&key, &custom))?;
        let not_recoverable =
            || Error::conflict(Code::NotRecoverable, "This key is not recoverable: its secret was never kept");
        if !key.recoverable {
            return Err(not_recoverable());
        }
        if key.state == keyward_core::key::KeyState::Revoked {
            return Err(Error::conflict(Code::KeyRevoked, "A revoked key's secret is no longer kept"));
        }
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let sealed = self.store.sealed_secret(&key.id).await.map_err(store_error)?.ok_or_else(not_recoverable)?;
        let plain = keyring.open(&sealed, key.id.as_bytes())?;
        let secret =
            String::from_utf8(plain).map(Secret::new).map_err(|_| Error::internal("a sealed secret is not text"))?;
        Ok((secret, key))
    }

    /// Re-wraps every sealed secret under the current master key, in
    /// batches, while the servers go on serving; the number re-wrapped.
    pub async fn rewrap_sealed(&self) -> Result<u64, Error> {
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let current = keyring.current_id().to_owned();
        let mut done = 0;
        loop {
            let batch = self.store.sealed_not_under(&current, 500).await.map_err(store_error)?;
            if batch.is_empty() {
                return Ok(done);
            }
            let mut change = Change::unaudited("re-wrapping under a new master key changes no secret or setting");
            for (kind, key_id, sealed) in &batch {
                let rewrapped = keyring.rewrap(sealed)?;
                let from_master = sealed.key_id.clone();
                change.push(Write::Access(AccessWrite::RewrapSealed {
                    kind: *kind,
                    key_id: key_id.clone(),
                    from_master,
                    sealed: rewrapped,
                }));
            }
            self.audit.work().commit(change).await.map_err(store_error)?;
            done += batch.len() as u64;
        }
    }

    /// Checks `permission` and reads the caller's workspace.
    async fn workspace_of(&self, who: &Principal, permission: &str) -> Result<Workspace, Error> {
        who.require(permission)?;
        self.store
            .get_workspace(who.workspace_id())
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, Code::WorkspaceNotFound, "Workspace not found"))
    }

    async fn insert(&self, ws: &Workspace, key: &ApiKey, with: Vec<Write>) -> Result<(), Error> {
        let mut change = Change::of(Self::insert_write(ws, key));
        change.extend(with);
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(())
    }

    /// Inserts the key `make` builds, as a member of the identity
    /// `external_id` names (created with it when new; a concurrent creation
    /// of the same identity is resolved by trying once more).
    async fn insert_for<T>(
        &self,
        ws: &Workspace,
        external_id: Option<&str>,
        who: &Principal,
        action: &str,
        mut make: impl FnMut() -> Result<(ApiKey, T, Vec<Write>), Error>,
    ) -> Result<(ApiKey, T), Error> {
        let mut attempt = 0;
        loop {
            let (mut key, extra, with) = make()?;
            let mut change = Change::new();
            if let Some(external_id) = external_id {
                let (identity, insert) =
                    IdentityService::resolve(self.store.as_ref(), &ws.id, external_id, self.clock.now()).await?;
                key.identity = Some(identity);
                change.extend(insert);
            }
            change.push(Self::insert_write(ws, &key));
            change.extend(with);
            change.push(self.audit.key_write(who, action, &key));
            match self.audit.work().commit(change).await.map_err(store_error) {
                Err(e) if attempt == 0 && is_identity_race(&e) => attempt += 1,
                Err(e) => return Err(e),
                Ok(()) => {
                    return Ok((key, extra));
                }
            }
        }
    }

    /// The write that inserts `key` within `ws`'s key limit.
    pub fn insert_write(ws: &Workspace, key: &ApiKey) -> Write {
        Write::InsertKey { key: key.clone(), max_live_keys: ws.policy.max_keys }
    }

    /// A new native key from `draft`, validated, not yet stored.
    pub fn prepare(&self, ws: &Workspace, draft: KeyDraft) -> Result<(ApiKey, Secret), Error> {
        let valid = draft.validate(ws, self.clock.now())?;
        Ok(self.new_native(ws, valid))
    }

    fn new_native(&self, ws: &Workspace, draft: keyward_core::key::ValidDraft) -> (ApiKey, Secret) {
        let now = self.clock.now();
        let secret = token::generate(&ws.token_prefix_for(draft.key_type), draft.environment);
        let parsed = token::parse(secret.expose()).expect("generated tokens parse");
        let mut key = draft.into_key(
            parsed.key_id(),
            &ws.id,
            token::mask(secret.expose()),
            self.verifier.hasher().native(&parsed),
            now,
        );
        key.replica = Some(self.verifier.replica_digest(&ws.id, &parsed));
        (key, secret)
    }

    pub async fn create(&self, who: &Principal, draft: KeyDraft) -> Result<(ApiKey, Secret), Error> {
        self.create_with(who, draft, |_| None).await
    }

    /// [`create`](Self::create), committing `with(&key)`'s write in the
    /// same change.
    pub async fn create_with(
        &self,
        who: &Principal,
        mut draft: KeyDraft,
        with: impl Fn(&ApiKey) -> Option<Write>,
    ) -> Result<(ApiKey, Secret), Error> {
        let ws = self.workspace_of(who, MANAGE).await?;
        let external_id = draft.external_id.take();
        let valid = draft.validate(&ws, self.clock.now())?;
        let custom = self.check_roles(&ws, &valid.roles).await?;
        self.insert_for(&ws, external_id.as_deref(), who, "key.created", || {
            let (key, secret) = self.new_native(&ws, valid.clone());
            may_hold(who, &ws, &key, &custom)?;
            let mut writes = self.seal_writes(&ws, &key, &secret, true)?;
            writes.extend(with(&key));
            Ok((key, secret, writes))
        })
        .await
    }

    /// A key keyward makes itself for `ws` (no caller: no authority or
    /// limit applies), with the writes that store it and its audit entry.
    pub fn system_key(&self, ws: &Workspace, draft: KeyDraft) -> Result<(ApiKey, Secret, Vec<Write>), Error> {
        let (key, secret) = self.prepare(ws, draft)?;
        let mut writes = vec![Write::InsertKey { key: key.clone(), max_live_keys: None }];
        writes.extend(self.seal_writes(ws, &key, &secret, true)?);
        writes.push(self.audit.key_write(&Principal::system(&ws.id), "key.created", &key));
        Ok((key, secret, writes))
    }

    pub async fn get(&self, who: &Principal, id: &str) -> Result<ApiKey, Error> {
        who.require(READ)?;
        self.load(who.workspace_id(), id).await
    }

    /// A key of the workspace, as stored (the caller has checked the permission).
    pub(crate) async fn load_key(&self, workspace_id: &str, id: &str) -> Result<ApiKey, Error> {
        self.load(workspace_id, id).await
    }

    async fn load(&self, workspace_id: &str, id: &str) -> Result<ApiKey, Error> {
        self.store.get_key(workspace_id, id).await.map_err(store_error)?.ok_or_else(Error::key_not_found)
    }

    pub async fn list(&self, who: &Principal, filter: &KeyFilter, page: Page) -> Result<KeyPage, Error> {
        who.require(READ)?;
        self.store.list_keys(who.workspace_id(), filter, page).await.map_err(store_error)
    }

    /// Every key of the caller's workspace matching `filter`, newest first
    /// (read page by page).
    pub async fn list_all(&self, who: &Principal, filter: &KeyFilter) -> Result<Vec<ApiKey>, Error> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = self.list(who, filter, Page { after, limit: 200 }).await?;
            keys.extend(page.keys);
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(keys),
            }
        }
    }

    /// Reads a key, lets `change` modify it, writes it back if it changed.
    async fn mutate(
        &self,
        who: &Principal,
        id: &str,
        if_match: Option<i64>,
        action: &str,
        change: impl FnOnce(&mut ApiKey) -> Result<Edit, Error>,
    ) -> Result<ApiKey, Error> {
        let mut key = self.load(who.workspace_id(), id).await?;
        check_if_match(&key, if_match)?;
        let expected = key.version;
        let was = key_summary(&key);
        if let Edit::Changed { mut before, after } = change(&mut key)? {
            before.push(Write::UpdateKey { key: key.clone(), expected_version: expected });
            before.extend(after);
            let changes = crate::audit::diff(&was, &key_summary(&key));
            before.push(self.audit.write(who, action, key_target(&key), changes));
            let mut change = Change::new();
            change.extend(before);
            self.audit.work().commit(change).await.map_err(store_error)?;
        }
        Ok(key)
    }

    pub async fn update(
        &self,
        who: &Principal,
        id: &str,
        patch: KeyPatch,
        if_match: Option<i64>,
    ) -> Result<ApiKey, Error> {
        let ws = self.workspace_of(who, MANAGE).await?;
        let custom = self.check_roles(&ws, patch.roles.as_deref().unwrap_or_default()).await?;
        let now = self.clock.now();
        // Joining an identity by its external id (created when new).
        let mut patch = patch;
        let mut new_identity = None;
        if let Some(external_id) = patch.external_id.take() {
            patch.identity = Some(match external_id {
                Some(external_id) => {
                    let (identity, insert) =
                        IdentityService::resolve(self.store.as_ref(), &ws.id, &external_id, now).await?;
                    new_identity = insert;
                    Some(identity)
                }
                None => None,
            });
        }
        self.mutate(who, id, if_match, "key.updated", |k| {
            let sets_credits = patch.credits.is_some();
            may_hold(who, &ws, k, &custom)?;
            k.apply(patch, &ws, now)?;
            may_hold(who, &ws, k, &custom)?;
            // The settings and, when given, the credits: one transaction.
            // Other edits never write the credits (a concurrent spend would
            // be lost).
            let credits = sets_credits.then(|| Write::SetCredits {
                workspace_id: ws.id.clone(),
                key_id: k.id.to_string(),
                credits: k.credits,
                at: now,
            });
            Ok(Edit::Changed { before: new_identity.into_iter().collect(), after: credits.into_iter().collect() })
        })
        .await
    }

    /// Sets, raises or lowers the remaining credits of a key that has
    /// credits; the answer carries them as they now stand.
    pub async fn change_credits(&self, who: &Principal, id: &str, op: CreditOp, value: i64) -> Result<ApiKey, Error> {
        who.require(MANAGE)?;
        let value = keyward_core::credits::Credits::check_change(value)?;
        let key = self.load(who.workspace_id(), id).await?;
        if key.credits.is_none() {
            return Err(Error::conflict(
                Code::NoCredits,
                "This key has unlimited uses; give it credits with PATCH first",
            ));
        }
        let write =
            Write::ChangeCredits { workspace_id: key.workspace_id.clone(), key_id: key.id.to_string(), op, value };
        let mut change = Change::of(write);
        let op_name = format!("{op:?}").to_lowercase();
        let changes = serde_json::json!({"op": op_name, "value": value, "before": key.credits.map(|c| c.remaining)});
        change.push(self.audit.write(who, "key.credits_changed", key_target(&key), changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        let key = self.load(who.workspace_id(), id).await?;
        Ok(key)
    }

    pub async fn deactivate(&self, who: &Principal, id: &str) -> Result<ApiKey, Error> {
        who.require(MANAGE)?;
        self.mutate(who, id, None, "key.deactivated", |k| Ok(Edit::when(k.deactivate(self.clock.now())?))).await
    }

    pub async fn activate(&self, who: &Principal, id: &str) -> Result<ApiKey, Error> {
        who.require(MANAGE)?;
        self.mutate(who, id, None, "key.activated", |k| Ok(Edit::when(k.activate(self.clock.now())?))).await
    }

    pub async fn revoke(&self, who: &Principal, id: &str) -> Result<ApiKey, Error> {
        who.require(MANAGE)?;
        self.revoke_with(who, id, |_| Vec::new()).await.map(|(key, _)| key)
    }

    /// Revokes the key with the writes `with` makes of it (committed
    /// together); whether it changed (a revoked key stays as it is).
    /// The caller has checked the permission.
    pub(crate) async fn revoke_with(
        &self,
        who: &Principal,
        id: &str,
        with: impl FnOnce(&ApiKey) -> Vec<Write>,
    ) -> Result<(ApiKey, bool), Error> {
        let mut changed = false;
        let key = self
            .mutate(who, id, None, "key.revoked", |k| {
                if !k.revoke(self.clock.now()) {
                    return Ok(Edit::Unchanged);
                }
                changed = true;
                // A revoked key's secret is of no more use: it is not kept.
                let drop = k.recoverable.then(|| Write::Access(AccessWrite::DropSealed { key_id: k.id.to_string() }));
                let mut after: Vec<Write> = drop.into_iter().collect();
                after.extend(with(k));
                Ok(Edit::Changed { before: Vec::new(), after })
            })
            .await?;
        Ok((key, changed))
    }

    pub async fn roll(&self, who: &Principal, id: &str, grace_seconds: u32) -> Result<(ApiKey, Secret), Error> {
        self.roll_with(who, id, grace_seconds, |_| Vec::new()).await
    }

    /// Rolls the key with the writes `with` makes of it (committed together).
    pub(crate) async fn roll_with(
        &self,
        who: &Principal,
        id: &str,
        grace_seconds: u32,
        with: impl FnOnce(&ApiKey) -> Vec<Write>,
    ) -> Result<(ApiKey, Secret), Error> {
        let ws = &self.workspace_of(who, MANAGE).await?;
        let mut fresh = None;
        let custom = self.check_roles(ws, &[]).await?;
        let key = self
            .mutate(who, id, None, "key.rolled", |k| {
                k.ensure_editable()?;
                may_hold(who, ws, k, &custom)?;
                let token_id =
                    token::token_id_of_key_id(&k.id).filter(|_| k.lookup_prefix.is_none()).ok_or_else(|| {
                        Error::conflict(
                            Code::ImportedKey,
                            "Imported keys in a foreign format cannot be rolled; clone them instead",
                        )
                    })?;
                let secret = token::generate_with_id(&ws.token_prefix_for(k.key_type), k.environment, token_id);
                let parsed = token::parse(secret.expose()).expect("generated tokens parse");
                let replica = self.verifier.replica_digest(&ws.id, &parsed);
                k.roll(self.verifier.hasher().native(&parsed), Some(replica), grace_seconds, self.clock.now())?;
                k.masked = token::mask(secret.expose());
                let mut seal = self.seal_writes(ws, k, &secret, false)?;
                if k.key_type == keyward_core::key::KeyType::Publishable {
                    // A workspace's JavaScript key shows its value.
                    let token = secret.expose().to_owned();
                    let rolled = IntegrationsWrite::JavascriptRolled { key_id: k.id.to_string(), token };
                    seal.push(Write::Integrations(rolled));
                }
                seal.extend(with(k));
                fresh = Some(secret);
                Ok(Edit::Changed { before: Vec::new(), after: seal })
            })
            .await?;
        Ok((key, fresh.expect("a successful roll made a secret")))
    }

    /// A new key with the settings of key `id`. Unnamed, the clone is
    /// called `NAME (clone)`, or `NAME (clone 2)`, `(clone 3)`, … while
    /// those names are taken.
    pub async fn clone_key(&self, who: &Principal, id: &str, name: Option<String>) -> Result<(ApiKey, Secret), Error> {
        let ws = &self.workspace_of(who, MANAGE).await?;
        let source = self.load(&ws.id, id).await?;
        let custom = self.check_roles(ws, &[]).await?;
        may_hold(who, ws, &source, &custom)?;
        let given = name.map(|n| validate_name(Some(&n))).transpose()?;
        let now = self.clock.now();
        let expires_at =
            keyward_core::key::resolve_expiry(source.expires_at.filter(|e| *e > now), None, &ws.policy, now)?;
        let base: String = source.name.chars().take(88).collect();
        for n in 1..=1000 {
            let name = match (&given, n) {
                (Some(name), _) => name.clone(),
                (None, 1) => format!("{base} (clone)"),
                (None, n) => format!("{base} (clone {n})"),
            };
            let mut draft = source.to_valid_draft(name);
            draft.expires_at = expires_at;
            let (key, secret) = self.new_native(ws, draft);
            may_hold(who, ws, &key, &custom)?;
            let mut with = self.seal_writes(ws, &key, &secret, true)?;
            let mut changes = key_summary(&key);
            changes["source"] = serde_json::Value::from(source.id.to_string());
            with.push(self.audit.write(who, "key.cloned", key_target(&key), changes));
            match self.insert(ws, &key, with).await {
                Err(e) if given.is_none() && e.code == Code::DuplicateName => continue,
                done => return done.map(|()| (key, secret)),
            }
        }
        Err(Error::conflict(Code::DuplicateName, "Every clone name of this key is taken; name the clone"))
    }

    pub async fn delete(&self, who: &Principal, id: &str) -> Result<ApiKey, Error> {
        who.require(MANAGE)?;
        let workspace_id = who.workspace_id();
        let key = self.load(workspace_id, id).await?;
        key.ensure_deletable()?;
        let write = Write::DeleteKey {
            workspace_id: workspace_id.to_owned(),
            id: id.to_owned(),
            expected_version: key.version,
        };
        let mut change = Change::of(write);
        change.push(self.audit.key_write(who, "key.deleted", &key));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(key)
    }

    pub async fn import(&self, who: &Principal, mut import: ImportDraft) -> Result<ApiKey, Error> {
        let ws = &self.workspace_of(who, MANAGE).await?;
        let now = self.clock.now();
        let external_id = import.draft.external_id.take();
        let valid = import.draft.validate(ws, now)?;
        let custom = self.check_roles(ws, &valid.roles).await?;
        if valid.recoverable && import.plaintext.is_none() {
            return Err(Error::invalid(
                Code::RecoverableNeedsPlaintext,
                "Only a key imported as plaintext (key) can be recoverable",
            ));
        }
        if let Some(id) = &import.id
            && !is_valid_import_id(id)
        {
            return Err(Error::invalid(Code::InvalidId, "id must be 1 to 64 letters, digits, '_' or '-'"));
        }
        if let Some(p) = &import.prefix
            && !is_valid_import_prefix(p)
        {
            return Err(Error::invalid(Code::InvalidPrefix, "prefix must be 2 to 64 letters, digits, '_' or '-'"));
        }
        let hasher = self.verifier.hasher();
        // Native tokens only: an embedded verifier sends foreign ones to
        // the server (it finds them by their whole token).
        let mut replica = None;
        let (id, secret, masked, lookup_prefix) = match (&import.plaintext, &import.sha256) {
            (Some(plain), None) => {
                let plain = plain.expose();
                if let Ok(parsed) = token::parse(plain) {
                    // A keyward token from another deployment keeps its id.
                    if import.id.as_ref().is_some_and(|id| *id != parsed.key_id()) {
                        return Err(Error::invalid(
                            Code::InvalidId,
                            "A keyward key keeps the id written in it; omit id or give that one",
                        ));
                    }
                    replica = Some(self.verifier.replica_digest(&ws.id, &parsed));
                    (parsed.key_id(), hasher.native(&parsed), token::mask(plain), None)
                } else {
                    if plain.len() < 16 || plain.len() > token::MAX_TOKEN_LEN || plain.chars().any(char::is_whitespace)
                    {
                        return Err(Error::invalid(
                            Code::InvalidImportKey,
                            "An imported key must be 16 to 512 characters without spaces",
                        ));
                    }
                    let prefix = match &import.prefix {
                        Some(p) if plain.starts_with(p.as_str()) => p.clone(),
                        Some(_) => {
                            return Err(Error::invalid(
                                Code::InvalidPrefix,
                                "The key does not start with the given prefix",
                            ));
                        }
                        None => token::display_prefix(plain)
                            .filter(|p| is_valid_import_prefix(p) && p.len() < plain.len())
                            .ok_or_else(|| {
                                Error::invalid(Code::PrefixRequired, "Give the prefix shared by this system's keys")
                            })?
                            .to_owned(),
                    };
                    let id = import.id.clone().unwrap_or_else(|| ids::new_id("key"));
                    (id, hasher.whole_token(plain), token::mask(plain), Some(prefix))
                }
            }
            (None, Some(hex)) => {
                let digest = parse_hex32(&hex.to_ascii_lowercase())
                    .ok_or_else(|| Error::invalid(Code::InvalidSha256, "sha256 must be 64 hexadecimal characters"))?;
                let prefix = import
                    .prefix
                    .clone()
                    .ok_or_else(|| Error::invalid(Code::PrefixRequired, "prefix is required to import a hashed key"))?;
                let id = import.id.clone().unwrap_or_else(|| ids::new_id("key"));
                let masked = format!("{prefix}…");
                (id, SecretHash { scheme: HashScheme::Sha256, digest }, masked, Some(prefix))
            }
            _ => {
                return Err(Error::invalid(
                    Code::ImportSourceRequired,
                    "Give exactly one of key (the plaintext) or sha256 (its hash)",
                ));
            }
        };
        let mut key = valid.into_key(id, &ws.id, masked, secret, now);
        key.replica = replica;
        may_hold(who, ws, &key, &custom)?;
        key.legacy = import.legacy;
        key.lookup_prefix = lookup_prefix;
        let seal = match &import.plaintext {
            Some(plain) => self.seal_writes(ws, &key, plain, true)?,
            None => Vec::new(),
        };
        let (key, ()) = self
            .insert_for(ws, external_id.as_deref(), who, "key.imported", || Ok((key.clone(), (), seal.clone())))
            .await?;
        Ok(key)
    }

    /// A key's verifications per day or hour by outcome over `period`
    /// (default 30 days, at most the retention).
    pub async fn usage(
        &self,
        who: &Principal,
        id: &str,
        period: Option<&str>,
        granularity: Option<&str>,
    ) -> Result<UsageReport, Error> {
        let key = self.get(who, id).await?;
        let hourly = match granularity.unwrap_or("day") {
            "day" => false,
            "hour" => true,
            _ => return Err(Error::invalid(Code::InvalidParameter, "granularity: one of day, hour")),
        };
        let default = self.audit.default_period(30);
        let (since, _) = self.audit.window(Some(period.unwrap_or(&default)), None, None)?;
        let since = since.unwrap_or_else(|| self.clock.now());
        let since = match hourly {
            true => since.duration_trunc(Duration::hours(1)),
            false => since.duration_trunc(Duration::days(1)),
        }
        .unwrap_or(since);
        let rollups = self.store.key_rollups(&key.id, since).await.map_err(store_error)?;
        let mut buckets: Vec<(chrono::DateTime<Utc>, std::collections::BTreeMap<String, u64>)> = Vec::new();
        for r in rollups {
            let start = if hourly { r.hour } else { r.hour.duration_trunc(Duration::days(1)).unwrap_or(r.hour) };
            match buckets.last_mut() {
                Some((s, counts)) if *s == start => *counts.entry(r.code).or_default() += r.count,
                _ => buckets.push((start, [(r.code, r.count)].into())),
            }
        }
        let granularity = if hourly { "hour" } else { "day" };
        Ok(UsageReport { key_id: key.id, last_used_at: key.last_used_at, granularity, since, buckets })
    }
}
