//! Workspaces: creation with a first admin key (bootstrap), and the
//! workspace's key policy.

use std::sync::Arc;

use keyward_core::Code;
use keyward_core::key::{ApiKey, KeyDraft};
use keyward_core::route::RouteScope;
use keyward_core::token::Secret;
use keyward_core::workspace::{
    LockoutPolicy, Workspace, validate_identity_metadata, validate_public_permissions, validate_routes,
    validate_token_prefix, validate_workspace_name,
};
use keyward_core::{Error, ErrorKind};
use keyward_store::{Store, StoreError, Write};

use crate::work::Change;

use crate::clock::Clock;
use crate::keys::{KeyService, store_error};
use crate::principal::Principal;

/// A new workspace and its first admin key; the secret is shown once.
#[derive(Debug)]
pub struct NewWorkspace {
    pub workspace: Workspace,
    pub admin_key: ApiKey,
    pub secret: Secret,
    /// Its owner, when one was created with it (bootstrap).
    pub owner: Option<NewOwner>,
    /// Its integration credentials and FTP password (shown once), when
    /// made with it.
    pub integrations: Option<crate::integrations::NewIntegrations>,
}

/// Who owns a bootstrapped deployment's first workspace.
#[derive(Debug, Clone)]
pub struct OwnerSpec {
    pub email: String,
    /// `None`: a password is generated (and shown once).
    pub password: Option<String>,
}

impl Default for OwnerSpec {
    fn default() -> Self {
        OwnerSpec { email: DEFAULT_OWNER_EMAIL.to_owned(), password: None }
    }
}

pub const DEFAULT_OWNER_EMAIL: &str = "owner@localhost";

#[derive(Debug)]
pub struct NewOwner {
    pub member: keyward_core::member::Member,
    /// The password, when keyward generated it.
    pub generated_password: Option<String>,
}

/// A partial edit; for nullable settings `Some(None)` clears the setting.
#[derive(Debug, Default)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub token_prefix: Option<String>,
    pub max_keys: Option<Option<u32>>,
    pub default_key_lifetime_days: Option<Option<u32>>,
    pub max_key_lifetime_days: Option<Option<u32>>,
    /// Route scopes as (method, path pattern, permission).
    pub routes: Option<Vec<(String, String, String)>>,
    pub public_permissions: Option<Vec<String>>,
    pub identity_metadata: Option<Vec<String>>,
    /// (threshold, window minutes); `None` leaves each alone.
    pub lockout: Option<(Option<u32>, Option<u32>)>,
    pub require_expiry: Option<bool>,
    pub allow_recoverable: Option<bool>,
    pub catalogue: Option<Vec<keyward_core::workspace::CatalogueSection>>,
    /// `Some(None)` clears it (the workspace id stands for it again).
    pub site_id: Option<Option<String>>,
    pub leak_policy: Option<String>,
    pub expiry_notice_days: Option<Vec<u32>>,
    pub credits_low_threshold: Option<Option<i64>>,
    pub unused_days: Option<u32>,
}

pub struct WorkspaceService {
    store: Arc<dyn Store>,
    keys: Arc<KeyService>,
    members: Arc<crate::members::MemberService>,
    integrations: Arc<crate::integrations::IntegrationsService>,
    clock: Arc<dyn Clock>,
    audit: Arc<crate::audit::AuditLog>,
}

pub const ADMIN_KEY_NAME: &str = "Admin key";

impl WorkspaceService {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyService>,
        members: Arc<crate::members::MemberService>,
        integrations: Arc<crate::integrations::IntegrationsService>,
        clock: Arc<dyn Clock>,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Self {
        WorkspaceService { store, keys, members, integrations, clock, audit }
    }

    /// Creates a workspace with an admin-tier key named [`ADMIN_KEY_NAME`]
    /// and its integration credentials, in one transaction.
    pub async fn create_with_admin_key(&self, name: &str) -> Result<NewWorkspace, Error> {
        let (created, change) = self.prepare(name).await?;
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(created)
    }

    async fn prepare(&self, name: &str) -> Result<(NewWorkspace, Change), Error> {
        let workspace = Workspace::new(name, self.clock.now())?;
        let draft = KeyDraft {
            name: Some(ADMIN_KEY_NAME.to_owned()),
            description: Some("Created with the workspace; manages its keys.".to_owned()),
            scopes: vec!["admin".to_owned()],
            ..Default::default()
        };
        let (admin_key, secret) = self.keys.prepare(&workspace, draft)?;
        let mut change = Change::of(Write::InsertWorkspace(workspace.clone()));
        change.push(KeyService::insert_write(&workspace, &admin_key));
        change.push(self.audit.key_write(&Principal::system(&workspace.id), "key.created", &admin_key));
        let (integrations, writes) = self.integrations.prepare(&workspace, 1).await?;
        change.extend(writes);
        let integrations = Some(integrations);
        Ok((NewWorkspace { workspace, admin_key, secret, owner: None, integrations }, change))
    }

    /// Every workspace with its number of live keys (operator commands).
    pub async fn list_all(&self) -> Result<Vec<(Workspace, u64)>, Error> {
        let mut out = Vec::new();
        for ws in self.store.list_workspaces().await.map_err(store_error)? {
            let keys = self.store.count_live_keys(&ws.id).await.map_err(store_error)?;
            out.push((ws, keys));
        }
        Ok(out)
    }

    /// A new admin key for a workspace whose admin key was lost (operator
    /// commands; the key limit does not apply). Named [`ADMIN_KEY_NAME`],
    /// or `Admin key 2`, `Admin key 3`, … while that name is taken.
    pub async fn mint_admin_key(&self, workspace_id: &str) -> Result<NewWorkspace, Error> {
        let workspace = self.load(workspace_id).await?;
        for n in 1..=1000 {
            let name = if n == 1 { ADMIN_KEY_NAME.to_owned() } else { format!("{ADMIN_KEY_NAME} {n}") };
            let draft = KeyDraft {
                name: Some(name),
                description: Some("Minted by `keyward workspace admin-key`; manages the workspace's keys.".to_owned()),
                scopes: vec!["admin".to_owned()],
                ..Default::default()
            };
            let (admin_key, secret) = self.keys.prepare(&workspace, draft)?;
            let mut change = Change::of(Write::InsertKey { key: admin_key.clone(), max_live_keys: None });
            change.push(self.audit.key_write(&Principal::system(&workspace.id), "key.created", &admin_key));
            match self.audit.work().commit(change).await {
                Ok(()) => {
                    return Ok(NewWorkspace { workspace, admin_key, secret, owner: None, integrations: None });
                }
                Err(StoreError::Conflict(keyward_store::Unique::KeyName)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(Error::conflict(Code::DuplicateName, "Every admin key name is taken; revoke some admin keys first"))
    }

    /// Creates the first workspace of an empty deployment, with its admin
    /// key and its owner; `None` when the deployment already has one
    /// (nothing is changed then).
    pub async fn bootstrap(&self, name: &str, owner: &OwnerSpec) -> Result<Option<NewWorkspace>, Error> {
        if self.store.count_workspaces().await.map_err(store_error)? > 0 {
            return Ok(None);
        }
        // The marker makes bootstrap happen once when several nodes start
        // on one empty database at the same moment.
        let (mut created, mut change) = self.prepare(name).await?;
        let generated = owner.password.is_none().then(|| keyward_core::ids::random_base62(20));
        let password = owner.password.as_deref().or(generated.as_deref()).unwrap_or_default();
        let (member, writes) = self.members.owner_writes(&created.workspace.id, &owner.email, password).await?;
        change.extend(writes);
        created.owner = Some(NewOwner { member, generated_password: generated });
        change.push(Write::InsertMeta { name: "bootstrapped_workspace".into(), value: created.workspace.id.clone() });
        match self.audit.work().commit(change).await {
            Ok(()) => Ok(Some(created)),
            Err(StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The caller's workspace (`settings:read`).
    pub async fn get(&self, who: &Principal) -> Result<Workspace, Error> {
        who.require("settings:read")?;
        self.load(who.workspace_id()).await
    }

    /// A workspace's name (for the caller's own workspace: no permission).
    pub async fn name_of(&self, id: &str) -> Result<String, Error> {
        Ok(self.load(id).await?.name)
    }

    async fn load(&self, id: &str) -> Result<Workspace, Error> {
        self.store
            .get_workspace(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, Code::WorkspaceNotFound, "Workspace not found"))
    }

    /// Changes the caller's workspace (`settings:manage`).
    pub async fn update(&self, who: &Principal, patch: WorkspacePatch) -> Result<Workspace, Error> {
        who.require("settings:manage")?;
        let mut ws = self.load(who.workspace_id()).await?;
        let was = settings_summary(&ws);
        if let Some(name) = patch.name {
            ws.name = validate_workspace_name(&name)?;
        }
        if let Some(prefix) = patch.token_prefix {
            ws.token_prefix = validate_token_prefix(&prefix)?;
        }
        if let Some(v) = patch.max_keys {
            ws.policy.max_keys = v;
        }
        if let Some(v) = patch.default_key_lifetime_days {
            ws.policy.default_key_lifetime_days = v;
        }
        if let Some(v) = patch.max_key_lifetime_days {
            ws.policy.max_key_lifetime_days = v;
        }
        if let Some(v) = patch.require_expiry {
            ws.policy.require_expiry = v;
        }
        if let Some(v) = patch.allow_recoverable {
            if v && !self.keys.can_seal() {
                return Err(crate::keys::master_key_required());
            }
            ws.allow_recoverable = v;
        }
        if let Some(site_id) = patch.site_id {
            ws.site_id = site_id.as_deref().map(keyward_core::integrations::validate_site_id).transpose()?;
        }
        if let Some(p) = patch.leak_policy {
            ws.notices.leak_policy = keyward_core::workspace::LeakPolicy::parse(&p)?;
        }
        if let Some(days) = patch.expiry_notice_days {
            ws.notices.expiry_notice_days = days;
        }
        if let Some(t) = patch.credits_low_threshold {
            ws.notices.credits_low_threshold = t;
        }
        if let Some(d) = patch.unused_days {
            ws.notices.unused_days = d;
        }
        ws.notices = ws.notices.clone().validate()?;
        if let Some(sections) = patch.catalogue {
            ws.catalogue = keyward_core::workspace::validate_catalogue(sections)?;
        }
        if let Some(routes) = patch.routes {
            let parsed = routes
                .iter()
                .map(|(method, path, permission)| RouteScope::parse(method, path, permission))
                .collect::<Result<Vec<_>, _>>()?;
            ws.routes = validate_routes(parsed)?;
        }
        if let Some(perms) = patch.public_permissions {
            ws.public_permissions = validate_public_permissions(&perms)?;
        }
        if let Some(fields) = patch.identity_metadata {
            ws.identity_metadata = validate_identity_metadata(fields)?;
        }
        if let Some((threshold, window)) = patch.lockout {
            ws.lockout = LockoutPolicy {
                threshold: threshold.unwrap_or(ws.lockout.threshold),
                window_minutes: window.unwrap_or(ws.lockout.window_minutes),
            }
            .validate()?;
        }
        ws.policy.validate()?;
        ws.updated_at = self.clock.now();
        let mut change = Change::of(Write::UpdateWorkspace(ws.clone()));
        let changes = crate::audit::diff(&was, &settings_summary(&ws));
        let target = keyward_core::audit::Target::new("workspace", &ws.id, Some(&ws.name));
        change.push(self.audit.write(who, "settings.changed", target, changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(ws)
    }

    /// Gives every live key that breaks the expiry policy (no expiry where
    /// one is required, or beyond the maximum lifetime) the policy's date:
    /// the default lifetime from now, else the maximum. Each key is one
    /// change (committed together by the group committer); a key edited
    /// meanwhile is read again. Returns how many keys changed.
    pub async fn apply_expiry_policy(&self, who: &Principal) -> Result<u64, Error> {
        who.require("settings:manage")?;
        let ws = self.load(who.workspace_id()).await?;
        if ws.policy.policy_expiry(self.clock.now()).is_none() {
            return Err(Error::conflict(
                Code::NoExpiryPolicy,
                "Set defaultKeyLifetimeDays or maxKeyLifetimeDays first: they give keys their date",
            ));
        }
        let mut updated = 0;
        let mut after = None;
        loop {
            let page = self
                .store
                .list_keys(&ws.id, &keyward_store::KeyFilter::default(), keyward_store::Page { after, limit: 200 })
                .await
                .map_err(store_error)?;
            let mut tasks = tokio::task::JoinSet::new();
            for key in page.keys {
                let (store, clock, policy) = (self.store.clone(), self.clock.clone(), ws.policy);
                let (audit, who) = (self.audit.clone(), who.clone());
                tasks.spawn(
                    async move { enforce_expiry(store.as_ref(), key, &policy, clock.as_ref(), &audit, &who).await },
                );
            }
            while let Some(done) = tasks.join_next().await {
                if done.map_err(|e| Error::new(ErrorKind::Internal, Code::InternalError, e.to_string()))??.is_some() {
                    updated += 1;
                }
            }
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(updated),
            }
        }
    }
}

/// Gives one key the policy's expiry if it breaks the policy; reads it
/// again when it changed meanwhile. The key as stored, when it changed.
async fn enforce_expiry(
    store: &dyn Store,
    mut key: ApiKey,
    policy: &keyward_core::workspace::KeyPolicy,
    clock: &dyn Clock,
    audit: &crate::audit::AuditLog,
    who: &Principal,
) -> Result<Option<ApiKey>, Error> {
    for _ in 0..3 {
        let expected = key.version;
        let was = crate::audit::key_summary(&key);
        if !key.enforce_expiry(policy, clock.now()) {
            return Ok(None);
        }
        let mut change = Change::of(Write::UpdateKey { key: key.clone(), expected_version: expected });
        let changes = crate::audit::diff(&was, &crate::audit::key_summary(&key));
        change.push(audit.write(who, "key.updated", crate::audit::key_target(&key), changes));
        match audit.work().commit(change).await {
            Ok(()) => return Ok(Some(key)),
            Err(StoreError::VersionMismatch) => {
                match store.get_key(&key.workspace_id, &key.id).await.map_err(store_error)? {
                    Some(fresh) => key = fresh,
                    None => return Ok(None),
                }
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(store_error(StoreError::VersionMismatch))
}

/// What an audit entry shows of a workspace's settings.
fn settings_summary(ws: &Workspace) -> serde_json::Value {
    let p = &ws.policy;
    serde_json::json!({
        "name": ws.name,
        "tokenPrefix": ws.token_prefix,
        "maxKeys": p.max_keys,
        "defaultKeyLifetimeDays": p.default_key_lifetime_days,
        "policy": format!("{p:?}"),
        "routes": ws.routes.len(),
        "publicPermissions": ws.public_permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "identityMetadata": ws.identity_metadata,
        "lockout": {"threshold": ws.lockout.threshold, "windowMinutes": ws.lockout.window_minutes},
        "permissionCatalogue": ws.catalogue.iter().map(|c| serde_json::json!({"name": c.name, "actions": c.actions})).collect::<Vec<_>>(),
        "allowRecoverable": ws.allow_recoverable,
        "siteId": ws.site_id,
        "leakPolicy": ws.notices.leak_policy.as_str(),
        "expiryNoticeDays": ws.notices.expiry_notice_days,
        "creditsLowThreshold": ws.notices.credits_low_threshold,
        "unusedDays": ws.notices.unused_days,
    })
}
