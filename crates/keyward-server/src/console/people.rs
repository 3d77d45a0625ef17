//! The Members page (invite with a one-time link, change roles, remove)
//! and the Roles pages (create and edit with the permission panel).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::Code;
use keyward_core::Error;

use super::form::{FormData, Params};
use super::keys::{PermSection, permission_sections};
use super::view::{Errors, FormError, Shell, inert, when};
use super::{Member, error_page, render, render_status, respond, see};
use crate::app::AppState;
use crate::principal::Principal;
use crate::roles::RolePatch;

pub struct MemberRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub joined: String,
    pub is_me: bool,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    shell: Option<Shell>,
    rows: Vec<MemberRow>,
    roles: Vec<String>,
    v: FormData,
    errors: Errors,
    /// The one-time link of an invitation just made.
    invitation: Option<(String, String)>,
    notice: Option<&'static str>,
}

const MEMBER_FIELDS: &[(&str, &[Code])] = &[
    ("email", &[Code::InvalidEmail, Code::DuplicateEmail, Code::AlreadyMember]),
    ("name", &[Code::InvalidName, Code::NameRequired, Code::NameIsPersonal]),
    ("role", &[Code::InvalidRoles, Code::RoleNotFound, Code::OwnerRequired, Code::CannotGrant, Code::LastOwner]),
];

async fn members_page(
    state: &AppState,
    who: &Principal,
    v: FormData,
    error: Option<FormError>,
    invitation: Option<(String, String)>,
    notice: Option<&'static str>,
) -> Result<MembersPage, Error> {
    let shell = Shell::load(state, who, "members").await?;
    let me = who.member().map(|m| m.member_id.clone()).unwrap_or_default();
    let rows: Vec<MemberRow> = state
        .members
        .list(who)
        .await?
        .into_iter()
        .map(|(m, ms)| MemberRow {
            is_me: m.id == me,
            id: m.id,
            name: inert(&m.name),
            email: inert(&m.email),
            roles: ms.roles,
            joined: when(&ms.created_at),
        })
        .collect();
    let mut roles = role_names(state, who).await?;
    // Roles a member holds stay on offer (and ticked), even where the
    // caller may not list the workspace's roles: saving keeps them.
    for held in rows.iter().flat_map(|r| r.roles.iter()) {
        if !roles.contains(held) {
            roles.push(held.clone());
        }
    }
    Ok(MembersPage { shell: Some(shell), rows, roles, v, errors: Errors(error), invitation, notice })
}

async fn role_names(state: &AppState, who: &Principal) -> Result<Vec<String>, Error> {
    Ok(match state.roles.list(who).await {
        Ok(roles) => roles.into_iter().map(|r| r.role.name).collect(),
        Err(_) => keyward_core::member::BUILTIN_ROLES.iter().map(|r| r.name.to_owned()).collect(),
    })
}

fn member_notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "roles" => "The member's roles were saved.",
        "remove" => "The member was removed.",
        _ => return None,
    })
}

pub async fn members(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = p.text("done").and_then(|d| member_notice(&d));
    respond(&state, &who, members_page(&state, &who, FormData::default(), None, None, notice).await).await
}

pub async fn invite(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let email = v.text("email").unwrap_or_default();
    let name = v.text("name").unwrap_or_default();
    let roles = v.all("role");
    let (v, invitation, status, error) = match state.members.invite(&who, &email, &name, &roles).await {
        Ok(new) => {
            let link = format!("/join?token={}", new.token);
            (FormData::default(), Some((new.invitation.email, link)), StatusCode::CREATED, None)
        }
        Err(e) => {
            let error = FormError::from_error(&e, MEMBER_FIELDS);
            (v, None, error.status, Some(error))
        }
    };
    match members_page(&state, &who, v, error, invitation, None).await {
        Ok(page) => render_status(status, &page),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn update_member(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
    v: FormData,
) -> Response {
    let roles = v.all("role");
    match state.members.update(&who, &id, None, Some(&roles)).await {
        Ok(_) => see("/members?done=roles"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    shell: Option<Shell>,
    heading: String,
    warning: &'static str,
    action: String,
    cancel: &'static str,
}

/// A confirmation page of the `section`, posting to `action`.
pub(super) async fn confirm(
    state: &AppState,
    who: &Principal,
    section: &'static str,
    heading: String,
    warning: &'static str,
    action: String,
    cancel: &'static str,
) -> Response {
    match Shell::load(state, who, section).await {
        Ok(shell) => render(&ConfirmPage { shell: Some(shell), heading, warning, action, cancel }),
        Err(e) => error_page(state, who, &e).await,
    }
}

pub async fn confirm_remove(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.members.get(&who, &id).await {
        Ok((m, _)) => {
            let heading = format!("Remove {} from this workspace?", inert(&m.email));
            let warning = "Their sessions in this workspace end at once. They can be invited again.";
            confirm(&state, &who, "members", heading, warning, format!("/members/{id}/remove"), "/members").await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn remove_member(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.members.remove(&who, &id).await {
        Ok(()) => see("/members?done=remove"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub struct RoleRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub permissions: String,
    pub tags: String,
    pub builtin: bool,
}

#[derive(Template)]
#[template(path = "roles.html")]
struct RolesPage {
    shell: Option<Shell>,
    rows: Vec<RoleRow>,
    sections: Vec<PermSection>,
    v: FormData,
    errors: Errors,
    editing: Option<String>,
    notice: Option<&'static str>,
}

const ROLE_FIELDS: &[(&str, &[Code])] = &[
    ("name", &[Code::InvalidName, Code::DuplicateRole, Code::BuiltinRole, Code::RoleInUse, Code::NameRequired]),
    ("description", &[Code::InvalidDescription]),
    ("permission", &[Code::InvalidPermissions, Code::UnknownPermission, Code::InvalidPermission, Code::CannotGrant]),
    ("tags", &[Code::InvalidTags, Code::TaggedAccountPermission]),
];

async fn roles_page(
    state: &AppState,
    who: &Principal,
    v: FormData,
    error: Option<FormError>,
    editing: Option<String>,
    notice: Option<&'static str>,
) -> Result<RolesPage, Error> {
    let shell = Shell::load(state, who, "roles").await?;
    let ws = state.roles.catalogue(who).await?;
    let rows = state
        .roles
        .list(who)
        .await?
        .into_iter()
        .map(|r| RoleRow {
            id: r.role.id,
            name: inert(&r.role.name),
            description: inert(r.role.description.as_deref().unwrap_or_default()),
            permissions: r.role.permissions.join(", "),
            tags: r.role.tags.join(", "),
            builtin: r.builtin,
        })
        .collect();
    let mut sections = permission_sections(&ws, false);
    super::keys::keep_unlisted(&mut sections, &v);
    Ok(RolesPage { shell: Some(shell), rows, sections, v, errors: Errors(error), editing, notice })
}

fn role_notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "The role was created.",
        "saved" => "The role was saved.",
        "deleted" => "The role was deleted.",
        _ => return None,
    })
}

pub async fn roles(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = p.text("done").and_then(|d| role_notice(&d));
    respond(&state, &who, roles_page(&state, &who, FormData::default(), None, None, notice).await).await
}

async fn role_form_failed(
    state: &AppState,
    who: &Principal,
    v: FormData,
    e: Error,
    editing: Option<String>,
) -> Response {
    let error = FormError::from_error(&e, ROLE_FIELDS);
    let status = error.status;
    match roles_page(state, who, v, Some(error), editing, None).await {
        Ok(page) => render_status(status, &page),
        Err(e) => error_page(state, who, &e).await,
    }
}

pub async fn create_role(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let name = v.text("name").unwrap_or_default();
    let created = state.roles.create(&who, &name, v.text("description"), v.all("permission"), v.lines("tags")).await;
    match created {
        Ok(_) => see("/roles?done=created"),
        Err(e) => role_form_failed(&state, &who, v, e, None).await,
    }
}

/// A role's edit form, filled with what it holds.
pub async fn role_page(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    let result = async {
        let role = state.roles.list(&who).await?.into_iter().find(|r| r.role.id == id && !r.builtin);
        let role = role.ok_or_else(crate::roles::role_not_found)?.role;
        let mut v = FormData::default();
        v.set("name", role.name);
        v.set("description", role.description.unwrap_or_default());
        for p in role.permissions {
            v.set("permission", p);
        }
        v.set("tags", role.tags.join("\n"));
        roles_page(&state, &who, v, None, Some(id.clone()), None).await
    }
    .await;
    respond(&state, &who, result).await
}

pub async fn update_role(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
    v: FormData,
) -> Response {
    let patch = RolePatch {
        name: v.text("name"),
        description: Some(v.text("description")),
        permissions: Some(v.all("permission")),
        tags: Some(v.lines("tags")),
    };
    match state.roles.update(&who, &id, patch).await {
        Ok(_) => see("/roles?done=saved"),
        Err(e) => role_form_failed(&state, &who, v, e, Some(id)).await,
    }
}

pub async fn confirm_delete_role(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
) -> Response {
    let found = state.roles.list(&who).await.map(|roles| roles.into_iter().find(|r| r.role.id == id));
    match found {
        Ok(Some(r)) => {
            let heading = format!("Delete the role {}?", inert(&r.role.name));
            let warning = "A role that members or live keys hold cannot be deleted.";
            confirm(&state, &who, "roles", heading, warning, format!("/roles/{id}/delete"), "/roles").await
        }
        Ok(None) => error_page(&state, &who, &crate::roles::role_not_found()).await,
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn delete_role(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.roles.delete(&who, &id).await {
        Ok(()) => see("/roles?done=deleted"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}
