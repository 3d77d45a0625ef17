//! The Keys pages: the list (filter, pages, Show/Hide, Copy, each row's
//! menu), the Create New Key panel, a key's detail and edit pages, and the
//! confirmations of destructive actions.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use keyward_core::Code;
use keyward_core::credits::Credits;
use keyward_core::key::{ApiKey, KeyDraft, KeyPatch, KeyState, KeyType};
use keyward_core::ratelimit::RateLimit;
use keyward_core::scope::Flags;
use keyward_core::{Error, ErrorKind};
use keyward_store::{KeyFilter, Page};
use serde_json::{Map, Value};

use super::form::{FormData, Params, encode};
use super::view::{Errors, FormError, Shell, inert, when, when_opt};
use super::{Member, error_page, render_status, respond, see};
use crate::api::extract::ClientIp;
use crate::app::AppState;
use crate::principal::Principal;

const PAGE_SIZE: u32 = 25;
/// Store reads for one page of a list filtered by expiry.
const MAX_READS: usize = 20;

/// The `OAuth clients` page.
pub const CLIENTS: &str = "/oauth-clients";

fn is_expired(k: &ApiKey, now: DateTime<Utc>) -> bool {
    k.expires_at.is_some_and(|e| e <= now)
}

/// The list's filters, carried from page to page.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub state: String,
    pub name: String,
    pub cursor: String,
    /// The `OAuth clients` page: client keys only.
    pub clients: bool,
}

impl Filters {
    fn of(p: &FormData) -> Self {
        let state = p.text("state").unwrap_or_default();
        let state = match state.as_str() {
            "active" | "inactive" | "locked" | "revoked" | "expired" => state,
            _ => String::new(),
        };
        let cursor = p.text("cursor").filter(|c| c.parse::<i64>().is_ok_and(|c| c > 0)).unwrap_or_default();
        Filters { state, name: p.text("name").unwrap_or_default(), cursor, clients: false }
    }

    /// The filters of a list address (`back`): its section and query.
    fn of_url(url: &str) -> Self {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        Filters { clients: path == CLIENTS, ..Filters::of(&FormData::parse(query.as_bytes())) }
    }

    /// The list's own address, without filters.
    pub fn base(&self) -> &'static str {
        if self.clients { CLIENTS } else { "/keys" }
    }

    /// The list's address with these filters.
    pub fn url(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [("state", &self.state), ("name", &self.name), ("cursor", &self.cursor)] {
            if !v.is_empty() {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if q.is_empty() { self.base().to_owned() } else { format!("{}?{}", self.base(), q.join("&")) }
    }

    fn next(&self, cursor: i64) -> String {
        Filters { cursor: cursor.to_string(), ..self.clone() }.url()
    }
}

/// One row of the list.
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub masked: String,
    pub kind: &'static str,
    pub grants: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub legacy: bool,
    pub recoverable: bool,
    /// The secret, when the member asked to see it.
    pub revealed: Option<String>,
    /// A client's consumer key.
    pub client_id: Option<String>,
    /// `Roll`, or `Regenerate Secret` for clients (a new consumer key too).
    pub roll_label: &'static str,
    pub can_edit: bool,
    pub can_roll: bool,
    pub can_clone: bool,
    pub can_deactivate: bool,
    /// `Activate`, `Re-activate` (a disabled key) or nothing.
    pub activate: &'static str,
    pub can_revoke: bool,
    pub can_delete: bool,
}

/// What a key's state reads as at `now`.
pub fn state_label(k: &ApiKey, now: DateTime<Utc>) -> (&'static str, &'static str) {
    match k.state {
        KeyState::Revoked => ("Revoked", "revoked"),
        KeyState::Locked => ("Disabled", "disabled"),
        KeyState::Inactive => ("Inactive", "inactive"),
        KeyState::Active if is_expired(k, now) => ("Expired", "expired"),
        KeyState::Active => ("Active", "active"),
    }
}

/// Scopes, flags and roles in a few words.
pub fn grants(k: &ApiKey) -> String {
    let mut parts: Vec<String> = Vec::new();
    if k.flags.account_administrator {
        parts.push("Account administrator".into());
    }
    if k.flags.administrator {
        parts.push("Administrator".into());
    }
    if k.flags.read_only {
        parts.push("Read only".into());
    }
    parts.extend(k.scopes.iter().map(|s| match s.to_string().as_str() {
        "*" => "Full Access".to_owned(),
        other => other.to_owned(),
    }));
    parts.extend(k.roles.iter().map(|r| format!("role {r}")));
    if parts.is_empty() { "None".to_owned() } else { parts.join(", ") }
}

fn kind(t: KeyType) -> &'static str {
    match t {
        KeyType::Secret => "Secret",
        KeyType::Publishable => "Publishable",
        KeyType::Client => "OAuth client",
    }
}

impl KeyRow {
    fn of(k: &ApiKey, now: DateTime<Utc>) -> Self {
        let (state, state_class) = state_label(k, now);
        let revoked = k.state == KeyState::Revoked;
        KeyRow {
            id: k.id.to_string(),
            name: inert(&k.name),
            masked: k.masked.clone(),
            kind: kind(k.key_type),
            grants: grants(k),
            state,
            state_class,
            created: when(&k.created_at),
            last_used: when_opt(k.last_used_at.as_ref(), "Never"),
            expires: when_opt(k.expires_at.as_ref(), "Never"),
            legacy: k.legacy,
            recoverable: k.recoverable && !revoked,
            revealed: None,
            client_id: k.client_id.clone(),
            roll_label: if k.key_type == KeyType::Client { "Regenerate Secret" } else { "Roll" },
            can_edit: !k.legacy && !revoked,
            // Keys imported as a foreign hash keep their own format: no roll.
            can_roll: !k.legacy && !revoked && k.lookup_prefix.is_none(),
            can_clone: !revoked,
            can_deactivate: k.state == KeyState::Active,
            activate: match k.state {
                KeyState::Inactive => "Activate",
                KeyState::Locked => "Re-activate",
                _ => "",
            },
            can_revoke: !revoked,
            can_delete: !k.legacy && matches!(k.state, KeyState::Inactive | KeyState::Revoked),
        }
    }
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    shell: Option<Shell>,
    /// `Keys` or `OAuth clients`.
    heading: &'static str,
    rows: Vec<KeyRow>,
    filters: Filters,
    back: String,
    first_page: String,
    next_page: Option<String>,
    notice: Option<&'static str>,
    panel: Option<KeyForm>,
}

/// Messages after an action (by code, so no link can make the page say
/// anything else).
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "deactivate" => "The key was deactivated.",
        "activate" => "The key was activated.",
        "revoke" => "The key was revoked.",
        "delete" => "The key was deleted.",
        "edit" => "The key was saved.",
        "leaked" => "The leak was reported: the workspace's leak policy was applied.",
        _ => return None,
    })
}

async fn list_page(
    state: &AppState,
    who: &Principal,
    filters: Filters,
    revealed: Option<(String, String)>,
    notice: Option<&'static str>,
    panel: Option<KeyForm>,
) -> Result<KeysPage, Error> {
    let shell = Shell::load(state, who, if filters.clients { "clients" } else { "keys" }).await?;
    let now = state.audit.now();
    let (stored_state, expired) = match filters.state.as_str() {
        "expired" => (Some(KeyState::Active), Some(true)),
        "active" => (Some(KeyState::Active), Some(false)),
        s => (KeyState::parse(s), None),
    };
    let filter = KeyFilter {
        state: stored_state,
        key_type: filters.clients.then_some(KeyType::Client),
        name_contains: Some(keyward_core::key::normalize_name(&filters.name)).filter(|n| !n.is_empty()),
    };
    // Expiry is not stored as a state: expired and active keys are told
    // apart here, reading on until a page is full (a bounded number of reads).
    let mut keys = Vec::new();
    let mut cursor = filters.cursor.parse().ok();
    for _ in 0..MAX_READS {
        let need = PAGE_SIZE - keys.len() as u32;
        let page = state.keys.list(who, &filter, Page { after: cursor, limit: need }).await?;
        keys.extend(page.keys.into_iter().filter(|k| expired.is_none_or(|want| want == is_expired(k, now))));
        cursor = page.next_cursor;
        if cursor.is_none() || keys.len() as u32 >= PAGE_SIZE {
            break;
        }
    }
    let rows = keys
        .iter()
        .map(|k| {
            let mut row = KeyRow::of(k, now);
            if let Some((id, secret)) = &revealed
                && *id == row.id
            {
                row.revealed = Some(secret.clone());
            }
            row
        })
        .collect();
    Ok(KeysPage {
        shell: Some(shell),
        heading: if filters.clients { "OAuth clients" } else { "Keys" },
        rows,
        back: filters.url(),
        first_page: Filters { cursor: String::new(), ..filters.clone() }.url(),
        next_page: cursor.map(|c| filters.next(c)),
        filters,
        notice,
        panel,
    })
}

pub async fn list(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = p.text("done").and_then(|d| notice(&d));
    respond(&state, &who, list_page(&state, &who, Filters::of(&p), None, notice, None).await).await
}

/// `OAuth clients`: the client keys, with their consumer keys.
pub async fn clients(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = p.text("done").and_then(|d| notice(&d));
    let filters = Filters { clients: true, ..Filters::of(&p) };
    respond(&state, &who, list_page(&state, &who, filters, None, notice, None).await).await
}

/// A section of the permission panel: its actions as checkboxes.
pub struct PermSection {
    pub name: String,
    /// (value, label) of each checkbox.
    pub actions: Vec<(String, String)>,
}

/// The sections a key's (or role's) permissions are picked from: access
/// tiers, the workspace's own catalogue, then account management.
pub fn permission_sections(ws: &keyward_core::workspace::Workspace, tiers: bool) -> Vec<PermSection> {
    let mut sections = Vec::new();
    if tiers {
        sections.push(PermSection {
            name: "Access tiers".into(),
            actions: ["read", "write", "admin"].iter().map(|t| (t.to_string(), t.to_string())).collect(),
        });
    }
    for s in &ws.catalogue {
        sections.push(PermSection {
            name: s.name.clone(),
            actions: s.actions.iter().map(|a| (format!("{}:{a}", s.name), a.clone())).collect(),
        });
    }
    let mut account: Vec<PermSection> = Vec::new();
    for p in keyward_core::member::ACCOUNT_PERMISSIONS {
        let (resource, action) = p.split_once(':').unwrap_or((p, ""));
        let name = format!("Account: {resource}");
        match account.iter_mut().find(|s| s.name == name) {
            Some(s) => s.actions.push((p.to_string(), action.to_owned())),
            None => account.push(PermSection { name, actions: vec![(p.to_string(), action.to_owned())] }),
        }
    }
    sections.extend(account);
    sections
}

/// Permissions held that no checkbox of the panel names (a wildcard such
/// as `campaigns:*`, one gone from the catalogue) get one of their own,
/// checked, so saving the form keeps them unless they are unticked.
pub fn keep_unlisted(sections: &mut Vec<PermSection>, v: &FormData) {
    let listed = |p: &str| p == "*" || sections.iter().any(|s| s.actions.iter().any(|(value, _)| value == p));
    let unlisted: Vec<(String, String)> =
        v.all("permission").into_iter().filter(|p| !listed(p)).map(|p| (p.clone(), p)).collect();
    if !unlisted.is_empty() {
        sections.insert(0, PermSection { name: "Held, not in the catalogue".into(), actions: unlisted });
    }
}

/// Fields whose edit is sent only when the member changed them: the edit
/// page carries what they were when it was opened (`was_…`), so a key
/// spending credits meanwhile does not make an untouched field look changed.
const TRACKED: &[&str] =
    &["expires", "credits", "rate_limit", "rate_window", "external_id", "default_email", "phone", "time_zone"];

/// The key form (create panel and edit page) with its values.
pub struct KeyForm {
    /// (`was_…` field, value) of the edit page's tracked fields.
    pub tracked: Vec<(String, String)>,
    /// The version the edit page was opened at (`If-Match` of the edit).
    pub version: String,
    pub v: FormData,
    pub sections: Vec<PermSection>,
    pub roles: Vec<String>,
    pub errors: Errors,
    pub tomorrow: String,
    pub max_date: String,
    pub allow_recoverable: bool,
    pub editing: bool,
    pub action: String,
    pub submit: &'static str,
}

async fn key_form(
    state: &AppState,
    who: &Principal,
    ws: &keyward_core::workspace::Workspace,
    v: FormData,
    editing: Option<&str>,
    error: Option<FormError>,
) -> Result<KeyForm, Error> {
    let roles = state.roles.list(who).await?.into_iter().map(|r| r.role.name).collect();
    let now = state.audit.now();
    let max_date = ws.policy.max_key_lifetime_days.map(|d| date(now + Duration::days(i64::from(d))));
    let mut sections = permission_sections(ws, true);
    keep_unlisted(&mut sections, &v);
    Ok(KeyForm {
        tracked: TRACKED.iter().map(|f| (format!("was_{f}"), v.val(&format!("was_{f}")).to_owned())).collect(),
        version: v.val("version").to_owned(),
        v,
        sections,
        roles,
        errors: Errors(error),
        tomorrow: date(now + Duration::days(1)),
        max_date: max_date.unwrap_or_default(),
        allow_recoverable: ws.allow_recoverable && state.keys.can_seal() && editing.is_none(),
        editing: editing.is_some(),
        action: editing.map_or_else(|| "/keys/new".to_owned(), |id| format!("/keys/{id}/edit")),
        submit: if editing.is_some() { "Save" } else { "Generate" },
    })
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

pub async fn new_page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    new_panel(state, who, Filters::of(&p)).await
}

/// `Create New Key` on the `OAuth clients` page: a client key.
pub async fn new_client_page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    new_panel(state, who, Filters { clients: true, ..Filters::of(&p) }).await
}

async fn new_panel(state: AppState, who: Principal, filters: Filters) -> Response {
    let result = async {
        let ws = state.workspaces.get(&who).await?;
        let mut v = FormData::default();
        if let Some(at) = ws.policy.policy_expiry(state.audit.now()) {
            v.set("expires", date(at));
        }
        if filters.clients {
            v.set("type", "client".to_owned());
        }
        let form = key_form(&state, &who, &ws, v, None, None).await?;
        list_page(&state, &who, filters, None, None, Some(form)).await
    }
    .await;
    respond(&state, &who, result).await
}

/// Where each API error of a key form is shown.
const KEY_FIELDS: &[(&str, &[Code])] = &[
    ("name", &[Code::InvalidName, Code::DuplicateName, Code::NameRequired]),
    ("description", &[Code::InvalidDescription]),
    ("type", &[Code::InvalidType]),
    ("expires", &[Code::InvalidExpiry, Code::ExpiryRequired]),
    (
        "permission",
        &[
            Code::InvalidScope,
            Code::TooManyScopes,
            Code::InvalidPermission,
            Code::InvalidPermissions,
            Code::CannotGrant,
        ],
    ),
    ("role", &[Code::InvalidRoles, Code::RoleNotFound]),
    ("resources", &[Code::InvalidResource, Code::InvalidResources, Code::TooManyResources]),
    ("allowed_origins", &[Code::TooManyOrigins, Code::OriginsRequired, Code::InvalidOrigin]),
    ("allowed_ips", &[Code::TooManyIpRanges, Code::InvalidIp, Code::InvalidIpRange]),
    ("metadata", &[Code::InvalidMetadata, Code::MetadataTooLarge]),
    ("credits", &[Code::InvalidCredits]),
    ("rate_limit", &[Code::InvalidRatelimits]),
    ("external_id", &[Code::InvalidExternalId, Code::IdentityNotFound]),
    ("recoverable", &[Code::MasterKeyRequired, Code::RecoverableNotAllowed]),
];

fn whole(v: &FormData, field: &'static str, label: &str) -> Result<Option<i64>, FormError> {
    v.text(field)
        .map(|t| t.parse::<i64>().map_err(|_| FormError::field(field, format!("{label} must be a whole number"))))
        .transpose()
}

/// The expiry a date picker names: that day, at the time of day it is now
/// (so the default lifetime's date is exactly that lifetime).
fn expiry(v: &FormData, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, FormError> {
    let Some(text) = v.text("expires") else { return Ok(None) };
    let day = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map_err(|_| FormError::field("expires", "Expires must be a date (YYYY-MM-DD)"))?;
    Ok(Some(day.and_time(now.time()).and_utc()))
}

/// The form's metadata fields, as (field, metadata key).
const META_FIELDS: [(&str, &str); 3] = [("default_email", "email"), ("phone", "phone"), ("time_zone", "timeZone")];

/// The metadata fields the form edits, over what the key already has.
fn metadata(v: &FormData, mut base: Map<String, Value>) -> Option<Value> {
    for (field, key) in META_FIELDS {
        match v.text(field) {
            Some(text) => base.insert(key.to_owned(), Value::String(text)),
            None => base.remove(key),
        };
    }
    (!base.is_empty()).then_some(Value::Object(base))
}

fn rate_limit(v: &FormData) -> Result<Option<Vec<RateLimit>>, FormError> {
    let limit = whole(v, "rate_limit", "Rate limit")?;
    let window = whole(v, "rate_window", "Rate limit window")?;
    Ok(match (limit, window) {
        (None, None) => None,
        (Some(limit), window) => Some(vec![RateLimit {
            name: "requests".into(),
            limit,
            duration_ms: window.unwrap_or(60).saturating_mul(1000),
            auto_apply: true,
        }]),
        (None, Some(_)) => return Err(FormError::field("rate_limit", "Give the number of requests of the rate limit")),
    })
}

/// The form's settings as the domain's draft of a key (checked by the
/// service, as the API's are).
fn create_draft(v: &FormData, now: DateTime<Utc>) -> Result<KeyDraft, FormError> {
    let invalid = |e: Error| FormError::of(e.code, &e.message, KEY_FIELDS);
    Ok(KeyDraft {
        name: v.text("name"),
        description: v.text("description"),
        key_type: v.text("type").as_deref().map(KeyType::parse_required).transpose().map_err(invalid)?,
        environment: None,
        scopes: v.all("permission"),
        flags: Flags {
            read_only: v.checked("read_only"),
            administrator: v.checked("administrator"),
            account_administrator: v.checked("account_administrator"),
        },
        resources: v.lines("resources"),
        allowed_origins: v.lines("allowed_origins"),
        allowed_ips: v.lines("allowed_ips"),
        expires_at: expiry(v, now)?,
        expires_in_days: None,
        metadata: metadata(v, Map::new()),
        credits: whole(v, "credits", "Credits")?
            .map(|remaining| Credits::validate(remaining, None))
            .transpose()
            .map_err(invalid)?,
        ratelimits: rate_limit(v)?.unwrap_or_default(),
        external_id: v.text("external_id"),
        roles: v.all("role"),
        recoverable: v.checked("recoverable"),
    })
}

fn form_error_of(e: &Error) -> FormError {
    FormError::from_error(e, KEY_FIELDS)
}

/// The one-time secret of a key just made (created, cloned, rolled).
#[derive(Template)]
#[template(path = "key_secret.html")]
struct SecretPage {
    shell: Option<Shell>,
    heading: &'static str,
    name: String,
    id: String,
    secret: String,
    /// A client's consumer key, shown beside its consumer secret.
    client_id: Option<String>,
}

/// The headings of the page that shows a new secret.
const SECRET_HEADINGS: [&str; 4] = ["Key created", "Key cloned", "Key rolled", "Secret regenerated"];
/// The cookie that carries a new secret, sealed, across the redirect to the
/// page that shows it once.
const NEW_SECRET_COOKIE: &str = "keyward_new_secret";

/// After a form made a secret: 303 to the page that shows it once, the
/// secret sealed in a cookie for that page alone, so a reload never posts
/// the form again. (Without a master key to seal it, the page at once.)
pub(super) async fn secret_page(
    state: &AppState,
    who: &Principal,
    heading: &'static str,
    key: &ApiKey,
    secret: &str,
) -> Response {
    let path = format!("/keys/{}/secret", key.id);
    let Some(sealed) = state.keys.seal_for_display(who, &key.id, &format!("{heading}\n{secret}")) else {
        return show_secret(state, who, heading, key, secret, StatusCode::CREATED).await;
    };
    let mut response = see(&path);
    let max_age = crate::keys::DISPLAY_WINDOW_MS / 1000;
    response.headers_mut().insert(header::SET_COOKIE, new_secret_cookie(&path, &sealed, max_age));
    response
}

fn new_secret_cookie(path: &str, value: &str, max_age: i64) -> HeaderValue {
    crate::api::members::cookie(NEW_SECRET_COOKIE, value, path, max_age)
}

async fn show_secret(
    state: &AppState,
    who: &Principal,
    heading: &'static str,
    key: &ApiKey,
    secret: &str,
    status: StatusCode,
) -> Response {
    let mut response = match Shell::load(state, who, "keys").await {
        Ok(shell) => render_status(
            status,
            &SecretPage {
                shell: Some(shell),
                heading,
                name: inert(&key.name),
                id: key.id.to_string(),
                secret: secret.to_owned(),
                client_id: key.client_id.clone(),
            },
        ),
        Err(e) => error_page(state, who, &e).await,
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /keys/{id}/secret`: the new secret, once (the cookie is cleared as
/// it is shown); afterwards, or from anyone else, 410 and a page saying so.
pub async fn new_secret(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/keys/{id}/secret");
    let opened = crate::api::members::cookie_value(&headers, NEW_SECRET_COOKIE)
        .and_then(|value| state.keys.open_for_display(&who, &id, value));
    let shown = opened.as_deref().and_then(|text| text.split_once('\n'));
    let mut response = match shown {
        Some((heading, secret)) => match state.keys.get(&who, &id).await {
            Ok(key) => {
                let heading = SECRET_HEADINGS.into_iter().find(|h| *h == heading).unwrap_or(SECRET_HEADINGS[0]);
                show_secret(&state, &who, heading, &key, secret, StatusCode::OK).await
            }
            Err(e) => error_page(&state, &who, &e).await,
        },
        None => {
            let shell = Shell::load(&state, &who, "keys").await.ok();
            let message = "This secret was shown once and is not kept here. Roll the key for a new one.";
            let page = super::MessagePage { shell, heading: "Secret no longer shown", message };
            render_status(StatusCode::GONE, &page)
        }
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().append(header::SET_COOKIE, new_secret_cookie(&path, "", 0));
    response
}

pub async fn create(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let result = match create_draft(&v, state.audit.now()) {
        Ok(draft) => state.keys.create(&who, draft).await.map_err(|e| form_error_of(&e)),
        Err(e) => Err(e),
    };
    match result {
        Ok((key, secret)) => secret_page(&state, &who, "Key created", &key, secret.expose()).await,
        Err(error) => {
            let status = error.status;
            let page = async {
                let ws = state.workspaces.get(&who).await?;
                let filters = Filters { clients: v.val("type") == "client", ..Filters::default() };
                let form = key_form(&state, &who, &ws, v, None, Some(error)).await?;
                list_page(&state, &who, filters, None, None, Some(form)).await
            }
            .await;
            match page {
                Ok(page) => render_status(status, &page),
                Err(e) => error_page(&state, &who, &e).await,
            }
        }
    }
}

/// The form's values for an existing key.
fn values_of(k: &ApiKey) -> FormData {
    let mut v = FormData::default();
    v.set("name", k.name.clone());
    v.set("description", k.description.clone().unwrap_or_default());
    v.set("type", k.key_type.as_str());
    if let Some(e) = k.expires_at {
        v.set("expires", date(e));
    }
    for (flag, on) in [
        ("read_only", k.flags.read_only),
        ("administrator", k.flags.administrator),
        ("account_administrator", k.flags.account_administrator),
    ] {
        if on {
            v.set(flag, "on");
        }
    }
    for s in &k.scopes {
        v.set("permission", s.to_string());
    }
    for r in &k.roles {
        v.set("role", r.clone());
    }
    v.set("resources", k.resources.join("\n"));
    v.set("allowed_origins", k.allowed_origins.iter().map(|o| o.as_str()).collect::<Vec<_>>().join("\n"));
    v.set("allowed_ips", k.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    for (field, key) in META_FIELDS {
        if let Some(s) = k.metadata.get(key).and_then(Value::as_str) {
            v.set(field, s);
        }
    }
    if let Some(identity) = &k.identity {
        v.set("external_id", identity.external_id.clone());
    }
    if let Some(c) = &k.credits {
        v.set("credits", c.remaining.to_string());
    }
    if let Some(l) = k.ratelimits.iter().find(|l| l.name == "requests") {
        v.set("rate_limit", l.limit.to_string());
        v.set("rate_window", (l.duration_ms / 1000).to_string());
    }
    for f in TRACKED {
        let was = v.val(f).to_owned();
        v.set(&format!("was_{f}"), was);
    }
    v.set("version", k.version.to_string());
    v
}

/// The fields the form changed, as the domain's patch of a key.
fn update_patch(v: &FormData, k: &ApiKey, now: DateTime<Utc>) -> Result<KeyPatch, FormError> {
    let invalid = |e: Error| FormError::of(e.code, &e.message, KEY_FIELDS);
    let before = values_of(k);
    let was = |f: &str| v.raw(&format!("was_{f}")).unwrap_or_else(|| before.val(f)).trim().to_owned();
    let changed = |f: &str| v.val(f).trim() != was(f);
    let metadata_edit = META_FIELDS.iter().any(|(f, _)| changed(f)).then(|| {
        let mut meta = k.metadata.as_object().cloned().unwrap_or_default();
        for (field, key) in META_FIELDS {
            if changed(field) {
                match v.text(field) {
                    Some(text) => meta.insert(key.to_owned(), Value::String(text)),
                    None => meta.remove(key),
                };
            }
        }
        Value::Object(meta)
    });
    let credits = match (changed("credits"), whole(v, "credits", "Credits")?) {
        (false, _) => None,
        (true, None) => Some(None),
        (true, Some(remaining)) => {
            Some(Some(Credits::validate(remaining, k.credits.and_then(|c| c.refill)).map_err(invalid)?))
        }
    };
    let limits_changed = changed("rate_limit") || changed("rate_window");
    let mut ratelimits = None;
    if limits_changed {
        let mut others: Vec<RateLimit> = k.ratelimits.iter().filter(|l| l.name != "requests").cloned().collect();
        others.extend(rate_limit(v)?.unwrap_or_default());
        ratelimits = Some(others);
    }
    Ok(KeyPatch {
        name: v.text("name"),
        description: Some(v.text("description")),
        scopes: Some(v.all("permission")),
        read_only: Some(v.checked("read_only")),
        administrator: Some(v.checked("administrator")),
        account_administrator: Some(v.checked("account_administrator")),
        resources: Some(v.lines("resources")),
        allowed_origins: Some(v.lines("allowed_origins")),
        allowed_ips: Some(v.lines("allowed_ips")),
        metadata: metadata_edit,
        expires_at: if changed("expires") { Some(expiry(v, now)?) } else { None },
        credits,
        ratelimits,
        identity: None,
        external_id: changed("external_id").then(|| v.text("external_id")),
        roles: Some(v.all("role")),
    })
}

#[derive(Template)]
#[template(path = "key_edit.html")]
struct EditPage {
    shell: Option<Shell>,
    id: String,
    name: String,
    f: KeyForm,
}

async fn edit_view(
    state: &AppState,
    who: &Principal,
    id: &str,
    values: Option<FormData>,
    error: Option<FormError>,
) -> Result<EditPage, Error> {
    let key = state.keys.get(who, id).await?;
    if key.legacy {
        return Err(Error::conflict(Code::LegacyKey, "Legacy keys cannot be edited"));
    }
    who.require(crate::keys::MANAGE)?;
    let v = values.unwrap_or_else(|| values_of(&key));
    let ws = state.workspaces.get(who).await?;
    let f = key_form(state, who, &ws, v, Some(id), error).await?;
    Ok(EditPage { shell: Some(Shell::load(state, who, "keys").await?), id: id.to_owned(), name: inert(&key.name), f })
}

pub async fn edit_page(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    respond(&state, &who, edit_view(&state, &who, &id, None, None).await).await
}

pub async fn edit(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>, v: FormData) -> Response {
    let key = match state.keys.get(&who, &id).await {
        Ok(k) => k,
        Err(e) => return error_page(&state, &who, &e).await,
    };
    let result = match update_patch(&v, &key, state.audit.now()) {
        Ok(patch) => {
            let version = v.text("version").and_then(|x| x.parse().ok()).unwrap_or(key.version);
            state.keys.update(&who, &id, patch, Some(version)).await.map_err(|e| match e.kind {
                ErrorKind::PreconditionFailed => FormError {
                    status: StatusCode::CONFLICT,
                    ..FormError::of(
                        Code::KeyChanged,
                        "The key was changed since this page was opened: open Edit again to see the change",
                        &[],
                    )
                },
                _ => form_error_of(&e),
            })
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see(&format!("/keys/{id}?done=edit")),
        Err(error) => match (error.status, edit_view(&state, &who, &id, Some(v), Some(error)).await) {
            (status, Ok(page)) => render_status(status, &page),
            (_, Err(e)) => error_page(&state, &who, &e).await,
        },
    }
}

/// A day of the usage chart.
pub struct Bar {
    pub day: String,
    pub valid: u64,
    pub refused: u64,
    pub x: u32,
    pub y: u32,
    pub height: u32,
}

#[derive(Template)]
#[template(path = "key_detail.html")]
struct DetailPage {
    shell: Option<Shell>,
    row: KeyRow,
    description: String,
    fields: Vec<(&'static str, String)>,
    bars: Vec<Bar>,
    total: u64,
    peak: u64,
    chart_label: String,
    entries: Option<Vec<super::audit::EntryRow>>,
    /// The banner of a key reported leaked.
    leak: Option<String>,
    notice: Option<&'static str>,
}

const CHART_DAYS: i64 = 30;
const CHART_HEIGHT: u32 = 120;

fn chart(report: &crate::keys::UsageReport, now: DateTime<Utc>) -> (Vec<Bar>, u64, u64) {
    let first = (now - Duration::days(CHART_DAYS - 1)).date_naive();
    let mut bars: Vec<Bar> = (0..CHART_DAYS)
        .map(|i| {
            let day = first + Duration::days(i);
            Bar { day: day.format("%Y-%m-%d").to_string(), valid: 0, refused: 0, x: i as u32 * 20, y: 0, height: 0 }
        })
        .collect();
    for (start, counts) in &report.buckets {
        let index = (start.date_naive() - first).num_days();
        if let Some(bar) = usize::try_from(index).ok().and_then(|i| bars.get_mut(i)) {
            for (code, n) in counts {
                if code == "VALID" { bar.valid += n } else { bar.refused += n }
            }
        }
    }
    let peak = bars.iter().map(|b| b.valid + b.refused).max().unwrap_or(0);
    let total = bars.iter().map(|b| b.valid).sum();
    for b in &mut bars {
        let n = b.valid + b.refused;
        b.height = if peak == 0 || n == 0 { 0 } else { ((n * u64::from(CHART_HEIGHT)) / peak).max(2) as u32 };
        b.y = CHART_HEIGHT - b.height;
    }
    (bars, total, peak)
}

pub async fn detail(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
    Params(p): Params,
) -> Response {
    let result = async {
        let key = state.keys.get(&who, &id).await?;
        let now = state.audit.now();
        let report = state.keys.usage(&who, &id, Some("30d"), Some("day")).await?;
        let (bars, total, peak) = chart(&report, now);
        let busiest = bars.iter().max_by_key(|b| b.valid + b.refused).filter(|_| peak > 0);
        let chart_label = match busiest {
            Some(b) => format!(
                "Verifications per day over the last 30 days: {total} valid in all, the most on {} ({peak})",
                b.day
            ),
            None => "Verifications per day over the last 30 days: none".to_owned(),
        };
        let entries = match who.require(crate::audit::READ) {
            Ok(()) => Some(super::audit::key_entries(&state, &who, &id).await?),
            Err(_) => None,
        };
        let limits = key.ratelimits.iter().map(|l| format!("{}: {} per {} s", l.name, l.limit, l.duration_ms / 1000));
        let fields = vec![
            ("Key id", key.id.to_string()),
            ("Environment", key.environment.as_str().to_owned()),
            ("Resources", inert(&list_or(&key.resources, "All"))),
            ("Allowed origins", list_or(&key.allowed_origins.iter().map(|o| o.as_str()).collect::<Vec<_>>(), "Any")),
            ("Allowed IPs", list_or(&key.allowed_ips, "Any")),
            ("Credits", key.credits.as_ref().map_or_else(|| "Unlimited".into(), |c| c.remaining.to_string())),
            ("Rate limits", list_or(&limits.collect::<Vec<_>>(), "None")),
            ("Identity", key.identity.as_ref().map_or_else(|| "None".into(), |i| inert(&i.external_id))),
            (
                "Metadata",
                if key.metadata.as_object().is_none_or(Map::is_empty) {
                    "None".into()
                } else {
                    inert(&key.metadata.to_string())
                },
            ),
            ("Recoverable", if key.recoverable { "Yes".into() } else { "No".into() }),
            ("Updated", when(&key.updated_at)),
        ];
        Ok::<_, Error>(DetailPage {
            shell: Some(Shell::load(&state, &who, "keys").await?),
            row: KeyRow::of(&key, now),
            description: inert(key.description.as_deref().unwrap_or_default()),
            fields,
            bars,
            total,
            peak,
            chart_label,
            entries,
            leak: state.leaks.leak_of(&who, &id).await?.map(|l| leak_banner(&l)),
            notice: p.text("done").and_then(|d| notice(&d)),
        })
    }
    .await;
    respond(&state, &who, result).await
}

/// What the key's banner says of its latest leak report.
fn leak_banner(l: &keyward_store::webhooks::KeyLeak) -> String {
    let by = match l.source.as_str() {
        "github" => "GitHub secret scanning",
        "gitlab" => "GitLab secret detection",
        "member" => "a member",
        "self" => "whoever held it",
        _ => "a report",
    };
    let did = match l.action.as_str() {
        "revoked" => "it was revoked",
        "rolled" => "its secret was replaced",
        _ => "nothing was changed (the leak policy is Notify only)",
    };
    let at = l.url.as_deref().map(|u| format!(" at {}", inert(u))).unwrap_or_default();
    format!("Reported leaked by {by}{at} on {}: {did}.", when(&l.reported_at))
}

fn list_or<T: ToString>(items: &[T], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Template)]
#[template(path = "key_confirm.html")]
struct ConfirmPage {
    shell: Option<Shell>,
    id: String,
    name: String,
    action: &'static str,
    verb: &'static str,
    warning: &'static str,
    back: String,
}

fn confirmation(action: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match action {
        "deactivate" => ("deactivate", "Deactivate", "Requests with this key are refused until it is activated again."),
        "revoke" => ("revoke", "Revoke", "The key stops working at once and for good. This cannot be undone."),
        "delete" => ("delete", "Delete", "The key and its record are deleted for good. This cannot be undone."),
        "roll" => {
            ("roll", "Roll", "The key gets a new secret. The current secret stops working when the grace period ends.")
        }
        "leaked" => (
            "leaked",
            "Report leaked",
            "The workspace's leak policy applies at once (Settings › Leaked keys: revoke, roll or notify), and a \
             key.leaked webhook is sent.",
        ),
        _ => return None,
    })
}

pub async fn confirm_page(
    State(state): State<AppState>,
    Member(who): Member,
    Path((id, action)): Path<(String, String)>,
    Params(p): Params,
) -> Response {
    let Some((action, verb, warning)) = confirmation(&action) else {
        return super::message_page(StatusCode::NOT_FOUND, "Not found", "No such action");
    };
    let result = async {
        who.require(crate::keys::MANAGE)?;
        let key = state.keys.get(&who, &id).await?;
        let (verb, warning) = match (action, key.key_type) {
            ("roll", KeyType::Client) => (
                "Regenerate Secret",
                "The client gets a new Consumer Key and Consumer Secret. The current pair (and the access tokens \
                 issued to it) stops working when the grace period ends.",
            ),
            _ => (verb, warning),
        };
        Ok::<_, Error>(ConfirmPage {
            shell: Some(Shell::load(&state, &who, "keys").await?),
            id,
            name: inert(&key.name),
            action,
            verb,
            warning,
            back: super::safe_next(p.val("back")).to_owned(),
        })
    }
    .await;
    respond(&state, &who, result).await
}

/// The row menu's actions (after their confirmation where they have one).
pub async fn act(
    State(state): State<AppState>,
    Member(who): Member,
    Path((id, action)): Path<(String, String)>,
    v: FormData,
) -> Response {
    let back = super::safe_next(v.val("back")).to_owned();
    let done = |what: &str| {
        let sep = if back.contains('?') { '&' } else { '?' };
        see(&format!("{back}{sep}done={what}"))
    };
    let result = match action.as_str() {
        "clone" => match state.keys.clone_key(&who, &id, None).await {
            Ok((key, secret)) => return secret_page(&state, &who, "Key cloned", &key, secret.expose()).await,
            Err(e) => Err(e),
        },
        "roll" => {
            let grace = match v.text("grace_period").map(|g| g.parse::<u32>()) {
                None => Ok(0),
                Some(Ok(g)) => Ok(g),
                Some(Err(_)) => {
                    Err(Error::invalid(Code::InvalidGracePeriod, "Grace period must be a whole number of seconds"))
                }
            };
            match grace {
                Ok(grace) => match state.keys.roll(&who, &id, grace).await {
                    Ok((key, secret)) => {
                        let heading = if key.client_id.is_some() { "Secret regenerated" } else { "Key rolled" };
                        return secret_page(&state, &who, heading, &key, secret.expose()).await;
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        "deactivate" => state.keys.deactivate(&who, &id).await.map(drop),
        "activate" => state.keys.activate(&who, &id).await.map(drop),
        "revoke" => state.keys.revoke(&who, &id).await.map(drop),
        "delete" => state.keys.delete(&who, &id).await.map(drop),
        "leaked" => state.leaks.member_report(&who, &id).await.map(drop),
        _ => return super::message_page(StatusCode::NOT_FOUND, "Not found", "No such action"),
    };
    match result {
        // A deleted key's page is gone: back to the list.
        Ok(()) if action == "delete" && back.starts_with(&format!("/keys/{id}")) => see("/keys?done=delete"),
        Ok(()) => done(&action),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

#[derive(Template)]
#[template(path = "key_reauth.html")]
struct ReauthPage {
    shell: Option<Shell>,
    id: String,
    name: String,
    back: String,
    error: Option<String>,
}

/// Show: reveals a recoverable key's secret in its row. When the session
/// is not fresh, asks for the password first (the same rule as the API's
/// reveal), then shows it.
pub async fn show(
    State(state): State<AppState>,
    Member(mut who): Member,
    ClientIp(ip): ClientIp,
    Path(id): Path<String>,
    v: FormData,
) -> Response {
    let back = super::safe_next(v.val("back")).to_owned();
    let mut error = None;
    if let Some(password) = v.raw("password") {
        match state.members.reauth(&who, password, ip).await {
            Ok(until) => {
                // This request counts as fresh from now on, as the next would.
                if let crate::principal::Caller::Member(m) = &mut who.caller {
                    let m = std::sync::Arc::make_mut(m);
                    m.fresh = true;
                    m.fresh_until = Some(until);
                }
            }
            Err(e) if matches!(e.kind, ErrorKind::TooManyRequests { .. }) => return error_page(&state, &who, &e).await,
            Err(e) => error = Some(e.message),
        }
    }
    if error.is_none() {
        match state.keys.reveal(&who, &id).await {
            Ok((secret, _)) => {
                let filters = Filters::of_url(&back);
                let page = list_page(&state, &who, filters, Some((id, secret.expose().to_owned())), None, None).await;
                return respond(&state, &who, page).await;
            }
            Err(e) if e.code == Code::ReauthenticationRequired => {}
            Err(e) => return error_page(&state, &who, &e).await,
        }
    }
    let name = match state.keys.get(&who, &id).await {
        Ok(k) => inert(&k.name),
        Err(e) => return error_page(&state, &who, &e).await,
    };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    match Shell::load(&state, &who, "keys").await {
        Ok(shell) => {
            let mut page = render_status(status, &ReauthPage { shell: Some(shell), id, name, back, error });
            page.headers_mut().insert(super::WHOLE_PAGE, axum::http::HeaderValue::from_static("1"));
            page
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}
