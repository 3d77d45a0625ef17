//! The PGP keys page (section File Encryption): the list with fingerprint,
//! algorithm, expiry and a private/public badge; `Create New Key` opens the
//! upload panel (contents pasted or a file chosen; the passphrase field
//! shows while `Private key` is on); delete with a confirmation.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use keyward_core::Code;
use keyward_core::Error;

use super::form::{FormData, Params};
use super::view::{Errors, FormError, Shell, inert, when_opt};
use super::{Member, error_page, render_status, respond, see};
use crate::app::AppState;
use crate::pgp::{PGP_MANAGE, Upload};
use crate::principal::Principal;

pub struct PgpRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub user_ids: String,
    pub expires: String,
    pub expired: bool,
    pub revoked: bool,
    pub private: bool,
    /// What the downloaded public key is saved as.
    pub file_name: String,
}

#[derive(Template)]
#[template(path = "pgp_keys.html")]
struct PgpPage {
    shell: Option<Shell>,
    rows: Vec<PgpRow>,
    can_manage: bool,
    panel: bool,
    v: FormData,
    errors: Errors,
    notice: Option<&'static str>,
}

/// Where each API error of the upload form is shown.
const FIELDS: &[(&str, &[Code])] = &[
    ("name", &[Code::InvalidName, Code::DuplicateName]),
    ("description", &[Code::InvalidDescription]),
    ("type", &[Code::InvalidType]),
    ("contents", &[Code::InvalidContents, Code::SeveralKeys, Code::NoEncryptionKey]),
    ("private", &[Code::PrivateMismatch]),
    ("passphrase", &[Code::PassphraseRequired, Code::InvalidPassphrase]),
];

async fn pgp_page(
    state: &AppState,
    who: &Principal,
    panel: bool,
    v: FormData,
    error: Option<FormError>,
    notice: Option<&'static str>,
) -> Result<PgpPage, Error> {
    let shell = Shell::load(state, who, "pgp").await?;
    let now = state.audit.now();
    let rows = state
        .pgp
        .list(who)
        .await?
        .into_iter()
        .map(|k| {
            let file: String =
                k.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            PgpRow {
                name: inert(&k.name),
                description: inert(k.description.as_deref().unwrap_or_default()),
                fingerprint: k.info.fingerprint.clone(),
                algorithm: k.info.algorithm.clone(),
                user_ids: inert(&k.info.user_ids.join(", ")),
                expires: when_opt(k.info.expires_at.as_ref(), "Never"),
                expired: k.info.expires_at.is_some_and(|e| e <= now),
                revoked: k.info.revoked,
                private: k.info.private,
                file_name: format!("{file}.asc"),
                id: k.id,
            }
        })
        .collect();
    let can_manage = who.require(PGP_MANAGE).is_ok();
    Ok(PgpPage { shell: Some(shell), rows, can_manage, panel: panel && can_manage, v, errors: Errors(error), notice })
}

pub async fn page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = match p.val("done") {
        "upload" => Some("The key was uploaded."),
        "delete" => Some("The key was deleted."),
        _ => None,
    };
    respond(&state, &who, pgp_page(&state, &who, false, FormData::default(), None, notice).await).await
}

/// `Create New Key`: the page with the upload panel open.
pub async fn new_page(State(state): State<AppState>, Member(who): Member) -> Response {
    if let Err(e) = who.require(PGP_MANAGE) {
        return error_page(&state, &who, &e).await;
    }
    let mut v = FormData::default();
    v.set("type", "pgp");
    respond(&state, &who, pgp_page(&state, &who, true, v, None, None).await).await
}

pub async fn create(State(state): State<AppState>, Member(who): Member, mut v: FormData) -> Response {
    // A chosen file wins over pasted contents.
    let contents = v.raw("contents_file").or(v.raw("contents")).unwrap_or_default().to_owned();
    let upload = Upload {
        name: v.val("name").to_owned(),
        description: v.text("description"),
        key_type: v.text("type").unwrap_or_else(|| "pgp".to_owned()),
        contents,
        private: v.checked("private"),
        passphrase: v.raw("passphrase").map(str::to_owned),
    };
    match state.pgp.upload(&who, upload).await {
        Ok(_) => see("/pgp-keys?done=upload"),
        Err(e) => {
            let error = FormError::from_error(&e, FIELDS);
            // A private key is not printed back into the page.
            if v.checked("private") {
                v.0.retain(|(k, _)| k != "contents");
            }
            v.0.retain(|(k, _)| k != "passphrase" && k != "contents_file");
            let status = error.status;
            match pgp_page(&state, &who, true, v, Some(error), None).await {
                Ok(page) => render_status(status, &page),
                Err(e) => error_page(&state, &who, &e).await,
            }
        }
    }
}

pub async fn confirm_delete(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.pgp.get(&who, &id).await {
        Ok(k) => {
            let heading = format!("Delete {}?", inert(&k.name));
            let warning = "Files can no longer be encrypted to this key here, and a private key kept with it is \
                           destroyed: files encrypted to it can then only be decrypted where another copy is kept.";
            super::people::confirm(&state, &who, "pgp", heading, warning, format!("/pgp-keys/{id}/delete"), "/pgp-keys")
                .await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn delete(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.pgp.delete(&who, &id).await {
        Ok(()) => see("/pgp-keys?done=delete"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}
