//! Roles: the built-in ones and a workspace's own, one model for members
//! and keys. A role's permissions name account permissions or the
//! workspace's permission catalogue; its tags limit it to tagged objects.

use std::sync::Arc;

use keyward_core::Code;
use keyward_core::authority::Authority;
use keyward_core::member::{
    ACCOUNT_PERMISSIONS, BUILTIN_ROLES, MAX_ROLE_DESCRIPTION, Role, builtin_role, is_role_name, validate_tags,
};
use keyward_core::scope::Permission;
use keyward_core::workspace::Workspace;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{AccessWrite, Store, StoreError, Write};

use crate::work::Change;

use crate::clock::Clock;
use crate::keys::store_error;
use crate::principal::Principal;
use crate::verifier::Verifier;

pub const ROLES_MANAGE: &str = "roles:manage";
/// Listing roles and the catalogue: whoever can read keys (key creators
/// pick roles and permissions from them).
pub const ROLES_READ: &str = "keys:read";

pub fn role_not_found() -> Error {
    Error::new(ErrorKind::NotFound, Code::RoleNotFound, "Role not found")
}

fn builtin_refused() -> Error {
    Error::conflict(Code::BuiltinRole, "Built-in roles (owner, admin, developer, viewer) cannot be changed or deleted")
}

/// A role as listed: built-in roles have their name as id.
#[derive(Debug, Clone)]
pub struct RoleEntry {
    pub role: Role,
    pub builtin: bool,
}

/// An edit of a role; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct RolePatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub permissions: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

pub struct RoleService {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    audit: Arc<crate::audit::AuditLog>,
}

impl RoleService {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Self {
        RoleService { store, verifier, clock, audit }
    }

    async fn workspace(&self, who: &Principal) -> Result<Workspace, Error> {
        self.store
            .get_workspace(who.workspace_id())
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, Code::WorkspaceNotFound, "Workspace not found"))
    }

    /// Built-in roles first, then the workspace's own by name.
    pub async fn list(&self, who: &Principal) -> Result<Vec<RoleEntry>, Error> {
        who.require(ROLES_READ)?;
        let ws = self.workspace(who).await?;
        let mut out: Vec<RoleEntry> = BUILTIN_ROLES
            .iter()
            .map(|b| RoleEntry {
                role: Role {
                    id: b.name.to_owned(),
                    workspace_id: ws.id.clone(),
                    name: b.name.to_owned(),
                    description: Some(b.description.to_owned()),
                    permissions: b.permissions.iter().map(|p| (*p).to_owned()).collect(),
                    tags: Vec::new(),
                    created_at: ws.created_at,
                    updated_at: ws.created_at,
                },
                builtin: true,
            })
            .collect();
        let custom = self.store.list_roles(&ws.id).await.map_err(store_error)?;
        out.extend(custom.into_iter().map(|role| RoleEntry { role, builtin: false }));
        Ok(out)
    }

    /// The account permissions and the workspace's catalogue.
    pub async fn catalogue(&self, who: &Principal) -> Result<Workspace, Error> {
        who.require(ROLES_READ)?;
        self.workspace(who).await
    }

    pub async fn create(
        &self,
        who: &Principal,
        name: &str,
        description: Option<String>,
        permissions: Vec<String>,
        tags: Vec<String>,
    ) -> Result<Role, Error> {
        who.require(ROLES_MANAGE)?;
        let ws = self.workspace(who).await?;
        let now = self.clock.now();
        let role = Role {
            id: ids::new_id("rol"),
            workspace_id: ws.id.clone(),
            name: validate_role_name(name)?,
            description: validate_description(description)?,
            permissions: validate_permissions(&ws, permissions)?,
            tags: validate_tags(tags, "tags")?,
            created_at: now,
            updated_at: now,
        };
        check_tagged(&role)?;
        self.may_give(who, &role).await?;
        let entry = self.entry(who, "role.created", &role, role_summary(&role));
        self.commit(AccessWrite::InsertRole(role.clone()), entry).await?;
        Ok(role)
    }

    async fn load(&self, workspace_id: &str, id: &str) -> Result<Role, Error> {
        if builtin_role(id).is_some() {
            return Err(builtin_refused());
        }
        let roles = self.store.list_roles(workspace_id).await.map_err(store_error)?;
        roles.into_iter().find(|r| r.id == id).ok_or_else(role_not_found)
    }

    pub async fn update(&self, who: &Principal, id: &str, patch: RolePatch) -> Result<Role, Error> {
        who.require(ROLES_MANAGE)?;
        let ws = self.workspace(who).await?;
        let mut role = self.load(&ws.id, id).await?;
        // A role the caller could not give, it cannot rewrite either.
        self.may_give(who, &role).await?;
        let was = role_summary(&role);
        let old_name = role.name.clone();
        if let Some(name) = patch.name {
            role.name = validate_role_name(&name)?;
        }
        if let Some(description) = patch.description {
            role.description = validate_description(description)?;
        }
        if let Some(permissions) = patch.permissions {
            role.permissions = validate_permissions(&ws, permissions)?;
        }
        if let Some(tags) = patch.tags {
            role.tags = validate_tags(tags, "tags")?;
        }
        check_tagged(&role)?;
        self.may_give(who, &role).await?;
        role.updated_at = self.clock.now();
        let entry = self.entry(who, "role.updated", &role, crate::audit::diff(&was, &role_summary(&role)));
        self.commit(AccessWrite::UpdateRole { role: role.clone(), old_name }, entry).await?;
        Ok(role)
    }

    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), Error> {
        who.require(ROLES_MANAGE)?;
        let ws = self.workspace(who).await?;
        let role = self.load(&ws.id, id).await?;
        let entry = self.entry(who, "role.deleted", &role, role_summary(&role));
        self.commit(AccessWrite::DeleteRole { workspace_id: ws.id.clone(), id: role.id, name: role.name }, entry).await
    }

    /// The one authority check for a role as it would be: whoever writes
    /// it must hold what it grants (the role as it stands, not as edited,
    /// counts among the caller's own).
    async fn may_give(&self, who: &Principal, role: &Role) -> Result<(), Error> {
        let custom = self.verifier.roles(who.workspace_id()).await?;
        who.may_give(&custom, &Authority::of_role(role))
    }

    fn entry(&self, who: &Principal, action: &str, role: &Role, changes: serde_json::Value) -> Write {
        let target = keyward_core::audit::Target::new("role", &role.id, Some(&role.name));
        self.audit.write(who, action, target, changes)
    }

    async fn commit(&self, write: AccessWrite, entry: Write) -> Result<(), Error> {
        let mut change = Change::of(Write::Access(write));
        change.push(entry);
        self.audit.work().commit(change).await.map_err(|e| match e {
            StoreError::NotFound => role_not_found(),
            StoreError::InUse => Error::conflict(
                Code::RoleInUse,
                "Members or live keys hold this role: take it from them before renaming or deleting it",
            ),
            other => store_error(other),
        })?;
        // Keys holding the role verify against its new definition.
        Ok(())
    }
}

/// Tags limit a role to tagged objects of the protected API; keyward's
/// own objects carry none, so a tagged role grants no account permission.
fn check_tagged(role: &Role) -> Result<(), Error> {
    if !role.tags.is_empty() && role.permissions.iter().any(|p| ACCOUNT_PERMISSIONS.contains(&p.as_str())) {
        return Err(Error::invalid(
            Code::TaggedAccountPermission,
            "A role with tags grants only on tagged objects of your API: give account permissions \
             (keys:read, members:manage, …) in a role without tags",
        ));
    }
    Ok(())
}

fn validate_role_name(name: &str) -> Result<String, Error> {
    if !is_role_name(name) {
        return Err(Error::invalid(Code::InvalidName, "name must be 1 to 64 letters, digits, '_', '-', '.' or ':'"));
    }
    if builtin_role(&name.to_ascii_lowercase()).is_some() {
        return Err(Error::conflict(Code::DuplicateRole, "That name belongs to a built-in role"));
    }
    Ok(name.to_owned())
}

fn validate_description(d: Option<String>) -> Result<Option<String>, Error> {
    match d {
        Some(d) if d.chars().count() > MAX_ROLE_DESCRIPTION || d.chars().any(char::is_control) => Err(Error::invalid(
            Code::InvalidDescription,
            format!("description must be at most {MAX_ROLE_DESCRIPTION} characters, without control characters"),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// At least one permission, each an account permission or in the
/// workspace's catalogue (`section:action` or `section:*`).
fn validate_permissions(ws: &Workspace, permissions: Vec<String>) -> Result<Vec<String>, Error> {
    if permissions.is_empty() {
        return Err(Error::invalid(Code::InvalidPermissions, "permissions must name at least one permission"));
    }
    let mut out: Vec<String> = Vec::with_capacity(permissions.len());
    for p in permissions {
        if Permission::parse_pattern(&p).is_none() || !ws.knows_permission(&p) {
            return Err(Error::invalid(
                Code::UnknownPermission,
                "permissions: each must be an account permission (keys:read, keys:manage, …) or a section:action \
                 of the workspace's permission catalogue (GET /v1/permissions)",
            ));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// What an audit entry shows of a role.
fn role_summary(r: &Role) -> serde_json::Value {
    serde_json::json!({"name": r.name, "description": r.description, "permissions": r.permissions, "tags": r.tags})
}
