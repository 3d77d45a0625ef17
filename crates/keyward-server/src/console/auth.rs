//! Signing in and out, switching workspace, and joining by invitation.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use keyward_core::Code;
use serde::Deserialize;

use super::form::FormData;
use super::view::{Errors, FormError};
use super::{Member, render, render_status, safe_next, see};
use crate::api::extract::{ClientIp, UserAgent};
use crate::app::AppState;

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    shell: Option<super::Shell>,
    email: String,
    next: String,
    errors: Errors,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn sign_in_page(Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/")).to_owned();
    render(&SignInPage { shell: None, email: String::new(), next, errors: Errors::default() })
}

const SIGN_IN_FIELDS: &[(&str, &[Code])] =
    &[("email", &[Code::InvalidEmail]), ("password", &[Code::InvalidCredentials])];

pub async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    _: super::FromThisSite,
    form: FormData,
) -> Response {
    let next = safe_next(form.raw("next").unwrap_or("/")).to_owned();
    let email = form.text("email").unwrap_or_default();
    let password = form.raw("password").unwrap_or_default();
    match state.members.login(&email, password, None, false, ip, ua.as_deref()).await {
        Ok(signed_in) => {
            let max_age = (signed_in.session.expires_at - signed_in.session.created_at).num_seconds();
            with_session(see(&next), &signed_in.cookie_token, max_age)
        }
        Err(e) => {
            let error = FormError::from_error(&e, SIGN_IN_FIELDS);
            render_status(error.status, &SignInPage { shell: None, email, next, errors: Errors(Some(error)) })
        }
    }
}

fn with_session(mut response: Response, token: &str, max_age: i64) -> Response {
    response.headers_mut().insert(header::SET_COOKIE, crate::api::members::session_cookie(token, max_age));
    response
}

pub async fn sign_out(State(state): State<AppState>, Member(who): Member) -> Response {
    if let Err(e) = state.members.logout(&who).await {
        return super::error_page(&state, &who, &e).await;
    }
    with_session(see("/sign-in"), "", 0)
}

pub async fn switch_workspace(State(state): State<AppState>, Member(who): Member, form: FormData) -> Response {
    let target = form.text("workspace").unwrap_or_default();
    match state.members.switch_workspace(&who, &target).await {
        Ok((session, token)) => {
            let max_age = (session.expires_at - state.audit.now()).num_seconds().max(1);
            with_session(see("/keys"), &token, max_age)
        }
        Err(e) => super::error_page(&state, &who, &e).await,
    }
}

#[derive(Template)]
#[template(path = "join.html")]
struct JoinPage {
    shell: Option<super::Shell>,
    token: String,
    errors: Errors,
    joined: Option<String>,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The page an invitation link opens.
pub async fn join_page(Query(q): Query<TokenQuery>) -> Response {
    // The page links nowhere else: with the same-origin referrer policy the
    // token in its address goes nowhere but this server.
    render(&JoinPage { shell: None, token: q.token.unwrap_or_default(), errors: Errors::default(), joined: None })
}

pub async fn join(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    UserAgent(ua): UserAgent,
    _: super::FromThisSite,
    form: FormData,
) -> Response {
    let token = form.text("token").unwrap_or_default();
    let password = form.raw("password").unwrap_or_default();
    match state.members.accept(&token, password, ip, ua.as_deref()).await {
        Ok((member, _, workspace)) => {
            let joined = Some(format!("{} joined {}", member.email, workspace.name));
            render(&JoinPage { shell: None, token: String::new(), errors: Errors::default(), joined })
        }
        Err(e) => {
            let fields: &[(&str, &[Code])] =
                &[("password", &[Code::WeakPassword, Code::InvalidPassword, Code::InvalidCredentials])];
            let error = FormError::from_error(&e, fields);
            render_status(error.status, &JoinPage { shell: None, token, errors: Errors(Some(error)), joined: None })
        }
    }
}
