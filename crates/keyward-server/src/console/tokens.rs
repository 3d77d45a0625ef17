//! The Tokens page: members' refresh tokens for the REST API (create,
//! shown once; list masked; revoke with a confirmation).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use keyward_core::Code;
use keyward_core::Error;

use super::form::{FormData, Params};
use super::view::{Errors, FormError, Shell, inert, when, when_opt};
use super::{Member, error_page, render_status, respond, see};
use crate::app::AppState;
use crate::principal::Principal;

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub masked: String,
    pub member: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    shell: Option<Shell>,
    rows: Vec<TokenRow>,
    v: FormData,
    errors: Errors,
    /// The name and token just created, shown this once.
    created: Option<(String, String)>,
    notice: Option<&'static str>,
}

const TOKEN_FIELDS: &[(&str, &[Code])] = &[("name", &[Code::InvalidName]), ("expires_in_days", &[Code::InvalidExpiry])];

async fn tokens_page(
    state: &AppState,
    who: &Principal,
    v: FormData,
    error: Option<FormError>,
    created: Option<(String, String)>,
    notice: Option<&'static str>,
) -> Result<TokensPage, Error> {
    let shell = Shell::load(state, who, "tokens").await?;
    let tokens = state.oauth.member_tokens(who).await?;
    // Without members:read, tokens show their member by id.
    let members = state.members.list(who).await.unwrap_or_default();
    let rows = tokens
        .iter()
        .map(|t| {
            let member_id = t.member_id.as_deref().unwrap_or_default();
            let member =
                members.iter().find(|m| m.0.id == member_id).map_or(member_id.to_owned(), |m| inert(&m.0.email));
            TokenRow {
                id: t.id.clone(),
                name: inert(t.name.as_deref().unwrap_or_default()),
                masked: t.masked.clone(),
                member,
                created: when(&t.created_at),
                last_used: when_opt(t.last_used_at.as_ref(), "Never"),
                expires: when_opt(t.expires_at.as_ref(), "Never"),
            }
        })
        .collect();
    Ok(TokensPage { shell: Some(shell), rows, v, errors: Errors(error), created, notice })
}

pub async fn page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = (p.val("done") == "revoke").then_some("The token was revoked.");
    respond(&state, &who, tokens_page(&state, &who, FormData::default(), None, None, notice).await).await
}

pub async fn create(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let days = match v.text("expires_in_days").map(|d| d.parse::<u32>()) {
        None => Ok(None),
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(_)) => {
            Err(FormError::field("expires_in_days", "Expires in (days) must be a whole number from 1 to 3650"))
        }
    };
    let made = match days {
        Ok(days) => state
            .oauth
            .create_member_token(&who, v.val("name"), days)
            .await
            .map_err(|e| FormError::from_error(&e, TOKEN_FIELDS)),
        Err(e) => Err(e),
    };
    let (status, page) = match made {
        Ok(made) => {
            let created =
                Some((inert(made.record.name.as_deref().unwrap_or_default()), made.token.expose().to_owned()));
            (StatusCode::CREATED, tokens_page(&state, &who, FormData::default(), None, created, None).await)
        }
        Err(error) => (error.status, tokens_page(&state, &who, v, Some(error), None, None).await),
    };
    match page {
        Ok(page) => render_status(status, &page),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn confirm_revoke(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    let found = state.oauth.member_tokens(&who).await.map(|all| all.into_iter().find(|t| t.id == id));
    match found {
        Ok(Some(t)) => {
            let heading = format!("Revoke {}?", inert(t.name.as_deref().unwrap_or_default()));
            let warning = "The token and the access tokens made from it stop working at once. This cannot be undone.";
            super::people::confirm(&state, &who, "tokens", heading, warning, format!("/tokens/{id}/revoke"), "/tokens")
                .await
        }
        Ok(None) => super::message_page(StatusCode::NOT_FOUND, "Not found", "No such token"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn revoke(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.oauth.revoke_member_token(&who, &id).await {
        Ok(_) => see("/tokens?done=revoke"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}
