//! The Settings page: key limit, default and maximum lifetime, expiry
//! policy, lockout, recoverable keys, route scopes and the key prefix.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use keyward_core::Code;
use keyward_core::Error;
use keyward_core::workspace::Workspace;

use super::form::{FormData, Params};
use super::view::{Errors, FormError, Shell};
use super::{Member, error_page, render_status, respond, see};
use crate::app::AppState;
use crate::principal::Principal;
use crate::workspaces::WorkspacePatch;

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    shell: Option<Shell>,
    v: FormData,
    errors: Errors,
    notice: Option<&'static str>,
    can_seal: bool,
}

fn values_of(ws: &Workspace) -> FormData {
    let mut v = FormData::default();
    let num = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    v.set("name", ws.name.clone());
    v.set("site_id", ws.site_id.clone().unwrap_or_default());
    v.set("max_keys", num(ws.policy.max_keys));
    v.set("default_lifetime", num(ws.policy.default_key_lifetime_days));
    v.set("max_lifetime", num(ws.policy.max_key_lifetime_days));
    if ws.policy.require_expiry {
        v.set("require_expiry", "on");
    }
    v.set("lockout_threshold", ws.lockout.threshold.to_string());
    v.set("lockout_window", ws.lockout.window_minutes.to_string());
    if ws.allow_recoverable {
        v.set("allow_recoverable", "on");
    }
    v.set("token_prefix", ws.token_prefix.clone());
    v.set("leak_policy", ws.notices.leak_policy.as_str());
    let days: Vec<String> = ws.notices.expiry_notice_days.iter().map(ToString::to_string).collect();
    v.set("expiry_notice_days", days.join(", "));
    v.set("credits_low_threshold", ws.notices.credits_low_threshold.map(|t| t.to_string()).unwrap_or_default());
    v.set("unused_days", ws.notices.unused_days.to_string());
    let routes: Vec<String> = ws.routes.iter().map(|r| format!("{} {} {}", r.method, r.path, r.permission)).collect();
    v.set("routes", routes.join("\n"));
    v
}

async fn settings_page(
    state: &AppState,
    who: &Principal,
    v: Option<FormData>,
    error: Option<FormError>,
    notice: Option<&'static str>,
) -> Result<SettingsPage, Error> {
    let shell = Shell::load(state, who, "settings").await?;
    let ws = state.workspaces.get(who).await?;
    let v = v.unwrap_or_else(|| values_of(&ws));
    Ok(SettingsPage { shell: Some(shell), v, errors: Errors(error), notice, can_seal: state.keys.can_seal() })
}

pub async fn page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = p.text("done").is_some().then_some("The settings were saved.");
    respond(&state, &who, settings_page(&state, &who, None, None, notice).await).await
}

const SETTINGS_FIELDS: &[(&str, &[Code])] = &[
    ("name", &[Code::InvalidName, Code::NameRequired]),
    ("site_id", &[Code::InvalidSiteId, Code::DuplicateSiteId]),
    ("max_keys", &[Code::InvalidMaxKeys]),
    ("default_lifetime", &[Code::InvalidPolicy]),
    ("lockout_threshold", &[Code::InvalidLockout]),
    ("allow_recoverable", &[Code::MasterKeyRequired]),
    ("token_prefix", &[Code::InvalidPrefix, Code::PrefixRequired]),
    ("routes", &[Code::InvalidRoute]),
    ("leak_policy", &[Code::InvalidLeakPolicy]),
    ("expiry_notice_days", &[Code::InvalidNotices]),
];

/// A number field; blank clears the setting.
fn count(v: &FormData, field: &'static str, label: &str) -> Result<Option<u32>, FormError> {
    v.text(field)
        .map(|t| t.parse::<u32>().map_err(|_| FormError::field(field, format!("{label} must be a whole number"))))
        .transpose()
}

/// The settings of the form; recoverable keys are left alone where the
/// page could not offer them (no master key).
fn patch_of(v: &FormData, can_seal: bool) -> Result<WorkspacePatch, FormError> {
    let mut routes = Vec::new();
    for line in v.raw("routes").unwrap_or_default().lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [method, path, permission] = parts[..] else {
            return Err(FormError::field("routes", "Each route scope is one line: METHOD /path permission"));
        };
        routes.push((method.to_owned(), path.to_owned(), permission.to_owned()));
    }
    let mut days = Vec::new();
    for d in v.val("expiry_notice_days").split(',').map(str::trim).filter(|d| !d.is_empty()) {
        days.push(d.parse::<u32>().map_err(|_| {
            FormError::field("expiry_notice_days", "Expiry notices: whole numbers of days, comma-separated")
        })?);
    }
    let low = v
        .text("credits_low_threshold")
        .map(|t| t.parse::<i64>())
        .transpose()
        .map_err(|_| FormError::field("credits_low_threshold", "Low credits threshold must be a whole number"))?;
    let threshold = count(v, "lockout_threshold", "Lockout threshold")?;
    let window = count(v, "lockout_window", "Lockout window")?;
    Ok(WorkspacePatch {
        name: v.text("name"),
        // Blank: the workspace id is the FTP username again.
        site_id: Some(v.text("site_id")),
        token_prefix: v.text("token_prefix"),
        max_keys: Some(count(v, "max_keys", "Key limit")?),
        default_key_lifetime_days: Some(count(v, "default_lifetime", "Default lifetime")?),
        max_key_lifetime_days: Some(count(v, "max_lifetime", "Maximum lifetime")?),
        routes: Some(routes),
        lockout: Some((threshold, window)),
        require_expiry: Some(v.checked("require_expiry")),
        allow_recoverable: can_seal.then(|| v.checked("allow_recoverable")),
        leak_policy: v.text("leak_policy"),
        expiry_notice_days: Some(days),
        credits_low_threshold: Some(low),
        unused_days: count(v, "unused_days", "Unused after")?,
        ..Default::default()
    })
}

pub async fn save(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let result = match patch_of(&v, state.keys.can_seal()) {
        Ok(patch) => state.workspaces.update(&who, patch).await.map_err(|e| FormError::from_error(&e, SETTINGS_FIELDS)),
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => see("/settings?done=saved"),
        Err(error) => match (error.status, settings_page(&state, &who, Some(v), Some(error), None).await) {
            (status, Ok(page)) => render_status(status, &page),
            (_, Err(e)) => error_page(&state, &who, &e).await,
        },
    }
}
