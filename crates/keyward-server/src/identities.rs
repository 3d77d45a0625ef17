//! Identities: customers whose keys share rate limits. Managed with the
//! keys' permissions (`keys:read`, `keys:manage`).

use std::sync::Arc;

use keyward_core::Code;
use keyward_core::identity::{Identity, validate_external_id};
use keyward_core::key::KeyIdentity;
use keyward_core::ratelimit::RateLimit;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{Page, Store, StoreError, Write};

use crate::work::Change;
use serde_json::Value;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::keys::{MANAGE, READ};
use crate::principal::Principal;
use keyward_core::audit::Target;

pub fn identity_not_found() -> Error {
    Error::new(ErrorKind::NotFound, Code::IdentityNotFound, "Identity not found")
}

/// Store errors in an identity's words (the rest as for keys).
fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => identity_not_found(),
        StoreError::VersionMismatch => Error::conflict(
            Code::ConcurrentModification,
            "The identity was changed by another request; read it again and retry",
        ),
        other => crate::keys::store_error(other),
    }
}

pub struct IdentityService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
}

/// What an audit entry shows of an identity (its metadata stays out: it
/// is the caller's data, not a change of access).
fn identity_summary(i: &Identity) -> Value {
    serde_json::json!({"externalId": i.external_id, "ratelimits": i.ratelimits.iter().map(|l| &l.name).collect::<Vec<_>>()})
}

fn identity_target(i: &Identity) -> Target {
    Target::new("identity", &i.id, Some(&i.external_id))
}

impl IdentityService {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, audit: Arc<AuditLog>) -> Self {
        IdentityService { store, clock, audit }
    }

    pub async fn create(
        &self,
        who: &Principal,
        external_id: String,
        meta: Option<Value>,
        ratelimits: Vec<RateLimit>,
    ) -> Result<Identity, Error> {
        who.require(MANAGE)?;
        let identity =
            Identity::new(ids::new_id("id"), who.workspace_id(), external_id, meta, ratelimits, self.clock.now())?;
        let mut change = Change::of(Write::InsertIdentity(identity.clone()));
        change.push(self.audit.write(who, "identity.created", identity_target(&identity), identity_summary(&identity)));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(identity)
    }

    pub async fn get(&self, who: &Principal, id: &str) -> Result<Identity, Error> {
        who.require(READ)?;
        self.load(who.workspace_id(), id).await
    }

    async fn load(&self, workspace_id: &str, id: &str) -> Result<Identity, Error> {
        self.store.get_identity(workspace_id, id).await.map_err(store_error)?.ok_or_else(identity_not_found)
    }

    pub async fn list(&self, who: &Principal, page: Page) -> Result<(Vec<Identity>, Option<i64>), Error> {
        who.require(READ)?;
        self.store.list_identities(who.workspace_id(), page).await.map_err(store_error)
    }

    pub async fn update(
        &self,
        who: &Principal,
        id: &str,
        meta: Option<Value>,
        ratelimits: Option<Vec<RateLimit>>,
    ) -> Result<Identity, Error> {
        who.require(MANAGE)?;
        let mut identity = self.load(who.workspace_id(), id).await?;
        let expected_version = identity.version;
        let was = identity_summary(&identity);
        let meta_changed = meta.is_some();
        identity.apply(meta, ratelimits, self.clock.now())?;
        let write = Write::UpdateIdentity { identity: identity.clone(), expected_version };
        let mut change = Change::of(write);
        let mut changes = crate::audit::diff(&was, &identity_summary(&identity));
        if meta_changed {
            changes["meta"] = Value::from("changed");
        }
        change.push(self.audit.write(who, "identity.updated", identity_target(&identity), changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(identity)
    }

    /// Deletes an identity no live key belongs to (409 otherwise).
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), Error> {
        who.require(MANAGE)?;
        let identity = self.load(who.workspace_id(), id).await?;
        let write = Write::DeleteIdentity { workspace_id: who.workspace_id().to_owned(), id: id.to_owned() };
        let mut change = Change::of(write);
        change.push(self.audit.write(who, "identity.deleted", identity_target(&identity), identity_summary(&identity)));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(())
    }

    /// The identity a key given `external_id` belongs to, and the write
    /// that creates it when the workspace has none by that id yet (to
    /// commit with the key).
    pub async fn resolve(
        store: &dyn Store,
        workspace_id: &str,
        external_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(KeyIdentity, Option<Write>), Error> {
        let external_id = validate_external_id(external_id)?;
        if let Some(found) = store.identity_by_external_id(workspace_id, &external_id).await.map_err(store_error)? {
            return Ok((found.as_key_identity(), None));
        }
        let identity = Identity::new(ids::new_id("id"), workspace_id, external_id, None, Vec::new(), now)?;
        Ok((identity.as_key_identity(), Some(Write::InsertIdentity(identity))))
    }
}

/// Whether an error is the race of two requests creating one identity
/// (worth resolving again).
pub fn is_identity_race(e: &Error) -> bool {
    e.code == Code::DuplicateExternalId
}
