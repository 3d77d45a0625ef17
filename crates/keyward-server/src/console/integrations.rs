//! Settings › Integrations › Keys, laid out as one page of sections: File
//! Encryption (the PGP keys), API/FTP (the JavaScript API key with Copy,
//! the default REST API key with Show/Copy when recoverable or Create when
//! removed, FTP with its username, `Rotate password` after a confirmation
//! and `Show` when the password is kept, and Manage Tokens), then the REST
//! API keys.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::Error;
use keyward_core::key::{KeyState, KeyType};
use keyward_store::{KeyFilter, Page};

use super::form::FormData;
use super::view::{Shell, inert, when_opt};
use super::{Member, error_page, render_status, respond};
use crate::api::extract::ClientIp;
use crate::app::AppState;
use crate::integrations::INTEGRATIONS_MANAGE;
use crate::principal::Principal;

pub struct PgpSummary {
    pub name: String,
    pub fingerprint: String,
    pub private: bool,
}

pub struct RestRow {
    pub id: String,
    pub name: String,
    pub masked: String,
    pub state: &'static str,
    pub last_used: String,
}

/// The default REST API key as the page shows it.
pub struct RestKey {
    pub id: String,
    pub masked: String,
    pub state: &'static str,
    pub recoverable: bool,
}

#[derive(Template)]
#[template(path = "integrations.html")]
struct IntegrationsPage {
    shell: Option<Shell>,
    javascript_key: String,
    rest_key: Option<RestKey>,
    ftp_username: String,
    ftp_host: String,
    ftp_enabled: bool,
    ftp_locked: bool,
    ftp_sealed: bool,
    password_set: String,
    can_manage: bool,
    /// A secret shown once on this answer: the REST key's, or the FTP password.
    rest_secret: Option<String>,
    ftp_password: Option<String>,
    pgp: Option<Vec<PgpSummary>>,
    rest_keys: Option<Vec<RestRow>>,
    notice: Option<&'static str>,
}

/// A password prompt before a secret is shown (the rules of a key's reveal).
#[derive(Template)]
#[template(path = "integrations_reauth.html")]
struct ReauthPage {
    shell: Option<Shell>,
    heading: &'static str,
    action: &'static str,
    error: Option<String>,
}

async fn page_of(
    state: &AppState,
    who: &Principal,
    rest_secret: Option<String>,
    ftp_password: Option<String>,
    notice: Option<&'static str>,
) -> Result<IntegrationsPage, Error> {
    let shell = Shell::load(state, who, "integrations").await?;
    let view = state.integrations.get(who).await?;
    let pgp = match shell.can.pgp_read {
        true => Some(
            state
                .pgp
                .list(who)
                .await?
                .into_iter()
                .map(|k| PgpSummary { name: inert(&k.name), fingerprint: k.info.fingerprint, private: k.info.private })
                .collect(),
        ),
        false => None,
    };
    let rest_keys = match shell.can.keys_read {
        true => {
            let filter = KeyFilter { key_type: Some(KeyType::Secret), ..KeyFilter::default() };
            let page = state.keys.list(who, &filter, Page { after: None, limit: 25 }).await?;
            Some(
                page.keys
                    .into_iter()
                    .map(|k| RestRow {
                        id: k.id.to_string(),
                        name: inert(&k.name),
                        masked: k.masked.clone(),
                        state: state_label(k.state),
                        last_used: when_opt(k.last_used_at.as_ref(), "Never"),
                    })
                    .collect(),
            )
        }
        false => None,
    };
    let ftp = &view.integrations.ftp;
    Ok(IntegrationsPage {
        javascript_key: view.integrations.javascript_key.clone(),
        rest_key: view.rest_key.as_ref().map(|k| RestKey {
            id: k.id.to_string(),
            masked: k.masked.clone(),
            state: state_label(k.state),
            recoverable: k.recoverable && k.state != KeyState::Revoked,
        }),
        ftp_username: view.ftp_username.clone(),
        ftp_host: state.integrations.ftp_host.clone().unwrap_or_default(),
        ftp_enabled: ftp.enabled,
        ftp_locked: ftp.locked,
        ftp_sealed: ftp.sealed,
        password_set: when_opt(Some(&ftp.password_set_at), ""),
        can_manage: who.require(INTEGRATIONS_MANAGE).is_ok(),
        rest_secret,
        ftp_password,
        pgp,
        rest_keys,
        notice,
        shell: Some(shell),
    })
}

fn state_label(s: KeyState) -> &'static str {
    match s {
        KeyState::Active => "Active",
        KeyState::Inactive => "Inactive",
        KeyState::Locked => "Disabled",
        KeyState::Revoked => "Revoked",
    }
}

pub async fn page(
    State(state): State<AppState>,
    Member(who): Member,
    super::form::Params(p): super::form::Params,
) -> Response {
    let notice = match p.val("done") {
        "disable" => Some("FTP access is disabled: every login is refused."),
        "enable" => Some("FTP access is enabled."),
        _ => None,
    };
    respond(&state, &who, page_of(&state, &who, None, None, notice).await).await
}

/// `Create` (the default REST key was removed): the new key's secret,
/// once, as for any key made in the console.
pub async fn create_rest_key(State(state): State<AppState>, Member(who): Member) -> Response {
    match state.integrations.create_rest_key(&who).await {
        Ok((key, secret)) => super::keys::secret_page(&state, &who, "Key created", &key, secret.expose()).await,
        Err(e) => error_page(&state, &who, &e).await,
    }
}

/// `Rotate password`: asks first.
pub async fn confirm_rotate(State(state): State<AppState>, Member(who): Member) -> Response {
    if let Err(e) = who.require(INTEGRATIONS_MANAGE) {
        return error_page(&state, &who, &e).await;
    }
    let warning = "The FTP password in use stops working at once; the new one is shown once.";
    super::people::confirm(
        &state,
        &who,
        "integrations",
        "Rotate the FTP password?".to_owned(),
        warning,
        "/integrations/ftp/rotate".to_owned(),
        "/integrations",
    )
    .await
}

pub async fn rotate(State(state): State<AppState>, Member(who): Member) -> Response {
    match state.integrations.rotate_ftp(&who).await {
        Ok((_, password)) => {
            let notice = Some("The FTP password was rotated. It is shown only now: copy it.");
            respond(&state, &who, page_of(&state, &who, None, Some(password), notice).await).await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn disable(State(state): State<AppState>, Member(who): Member) -> Response {
    match state.integrations.set_ftp_enabled(&who, false).await {
        Ok(_) => super::see("/integrations?done=disable"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn enable(State(state): State<AppState>, Member(who): Member) -> Response {
    match state.integrations.set_ftp_enabled(&who, true).await {
        Ok(_) => super::see("/integrations?done=enable"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

/// Confirms the member's password when `v` carries one: the member as of
/// a fresh authentication, or the prompt's message.
async fn freshen(
    state: &AppState,
    who: &mut Principal,
    ip: Option<std::net::IpAddr>,
    v: &FormData,
) -> Result<(), Result<String, Error>> {
    let Some(password) = v.raw("password") else { return Ok(()) };
    match state.members.reauth(who, password, ip).await {
        Ok(until) => {
            if let crate::principal::Caller::Member(m) = &mut who.caller {
                let m = std::sync::Arc::make_mut(m);
                m.fresh = true;
                m.fresh_until = Some(until);
            }
            Ok(())
        }
        Err(e) if matches!(e.kind, keyward_core::ErrorKind::TooManyRequests { .. }) => Err(Err(e)),
        Err(e) => Err(Ok(e.message)),
    }
}

async fn prompt(
    state: &AppState,
    who: &Principal,
    heading: &'static str,
    action: &'static str,
    error: Option<String>,
) -> Response {
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    match Shell::load(state, who, "integrations").await {
        Ok(shell) => render_status(status, &ReauthPage { shell: Some(shell), heading, action, error }),
        Err(e) => error_page(state, who, &e).await,
    }
}

/// `Show` of the default REST key (recoverable): after the password when
/// the session is not fresh.
pub async fn show_rest_key(
    State(state): State<AppState>,
    Member(mut who): Member,
    ClientIp(ip): ClientIp,
    v: FormData,
) -> Response {
    const HEADING: &str = "Show the Default REST API key";
    const ACTION: &str = "/integrations/rest-key/show";
    match freshen(&state, &mut who, ip, &v).await {
        Err(Err(e)) => return error_page(&state, &who, &e).await,
        Err(Ok(message)) => return prompt(&state, &who, HEADING, ACTION, Some(message)).await,
        Ok(()) => {}
    }
    let id = match state.integrations.get(&who).await {
        Ok(view) => match view.rest_key {
            Some(k) => k.id.to_string(),
            None => return super::see("/integrations"),
        },
        Err(e) => return error_page(&state, &who, &e).await,
    };
    match state.keys.reveal(&who, &id).await {
        Ok((secret, _)) => {
            let page = page_of(&state, &who, Some(secret.expose().to_owned()), None, None).await;
            respond(&state, &who, page).await
        }
        Err(e) if e.code == keyward_core::Code::ReauthenticationRequired => {
            prompt(&state, &who, HEADING, ACTION, None).await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

/// `Show` of a kept FTP password: after the password when the session is
/// not fresh.
pub async fn show_ftp(
    State(state): State<AppState>,
    Member(mut who): Member,
    ClientIp(ip): ClientIp,
    v: FormData,
) -> Response {
    const HEADING: &str = "Show the FTP password";
    const ACTION: &str = "/integrations/ftp/show";
    match freshen(&state, &mut who, ip, &v).await {
        Err(Err(e)) => return error_page(&state, &who, &e).await,
        Err(Ok(message)) => return prompt(&state, &who, HEADING, ACTION, Some(message)).await,
        Ok(()) => {}
    }
    match state.integrations.reveal_ftp(&who).await {
        Ok((_, password)) => respond(&state, &who, page_of(&state, &who, None, Some(password), None).await).await,
        Err(e) if e.code == keyward_core::Code::ReauthenticationRequired => {
            prompt(&state, &who, HEADING, ACTION, None).await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}
