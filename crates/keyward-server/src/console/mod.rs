//! The console: the pages people manage keys with, rendered on the server
//! from compiled templates (`templates/`), served by this binary with its
//! own stylesheet and script (`assets/`), nothing from elsewhere.
//!
//! Every page is plain HTML: links and forms that work without script and
//! by keyboard; `assets/console.js` only adds Copy, the row menus and the
//! permission filter, and the vendored htmx turns Show/Hide into updates of
//! the row (the server answers the whole page; htmx takes the row from it). Handlers are thin like the API's: they read the
//! form, call the same services with the signed-in member's [`Principal`]
//! (so the console can do exactly what the API lets that member do), and
//! render. A strict Content-Security-Policy allows nothing but this server's
//! own script and stylesheet; templates escape every value they print.

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keyward_core::{Error, ErrorKind};

use crate::app::AppState;
use crate::principal::Principal;

mod audit;
mod auth;
mod form;
mod integrations;
mod keys;
mod people;
mod pgp;
mod settings;
mod tokens;
mod view;
mod webhooks;

pub use form::FormData;
pub use view::Shell;

/// The console's routes (merged into the application router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/switch-workspace", post(auth::switch_workspace))
        .route("/join", get(auth::join_page).post(auth::join))
        .route("/keys", get(keys::list))
        .route("/oauth-clients", get(keys::clients))
        .route("/oauth-clients/new", get(keys::new_client_page))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/revoke", get(tokens::confirm_revoke).post(tokens::revoke))
        .route("/keys/new", get(keys::new_page).post(keys::create))
        .route("/keys/{id}", get(keys::detail))
        .route("/keys/{id}/edit", get(keys::edit_page).post(keys::edit))
        .route("/keys/{id}/confirm/{action}", get(keys::confirm_page))
        .route("/keys/{id}/show", post(keys::show))
        .route("/keys/{id}/secret", get(keys::new_secret))
        .route("/keys/{id}/{action}", post(keys::act))
        .route("/members", get(people::members).post(people::invite))
        .route("/members/{id}", post(people::update_member))
        .route("/members/{id}/remove", get(people::confirm_remove).post(people::remove_member))
        .route("/roles", get(people::roles).post(people::create_role))
        .route("/roles/{id}", get(people::role_page).post(people::update_role))
        .route("/roles/{id}/delete", get(people::confirm_delete_role).post(people::delete_role))
        .route("/integrations", get(integrations::page))
        .route("/integrations/rest-key", post(integrations::create_rest_key))
        .route("/integrations/rest-key/show", post(integrations::show_rest_key))
        .route("/integrations/ftp/rotate", get(integrations::confirm_rotate).post(integrations::rotate))
        .route("/integrations/ftp/show", post(integrations::show_ftp))
        .route("/integrations/ftp/disable", post(integrations::disable))
        .route("/integrations/ftp/enable", post(integrations::enable))
        .route("/pgp-keys", get(pgp::page).post(pgp::create))
        .route("/pgp-keys/new", get(pgp::new_page))
        .route("/pgp-keys/{id}/delete", get(pgp::confirm_delete).post(pgp::delete))
        .route("/webhooks", get(webhooks::page).post(webhooks::create))
        .route("/webhooks/new", get(webhooks::new_page))
        .route("/webhooks/{id}", get(webhooks::detail))
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/webhooks/{id}/state/{what}", post(webhooks::set_enabled))
        .route("/webhooks/{id}/delete", get(webhooks::confirm_delete).post(webhooks::delete))
        .route("/webhooks/{id}/deliveries/{event_id}/resend", post(webhooks::resend))
        .route("/settings", get(settings::page).post(settings::save))
        .route("/audit", get(audit::page))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .route("/assets/htmx.min.js", get(htmx))
        .route("/favicon.ico", get(favicon))
        .layer(middleware::from_fn(security_headers))
}

/// No script or style but this server's own files, no framing, forms only
/// to this server, nothing cached (pages may show a secret).
/// Marks a page answered to a partial update that must replace the whole
/// content (removed before the response leaves).
pub const WHOLE_PAGE: &str = "x-keyward-whole-page";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/assets/");
    let partial = req.headers().contains_key("hx-request");
    let mut response = next.run(req).await;
    let refused = response.status().is_client_error();
    let h = response.headers_mut();
    // A partial update that ended in a refusal or another page (a password
    // prompt, an error) replaces the page's content instead of the row.
    if partial && (refused || h.contains_key(WHOLE_PAGE)) {
        h.remove(WHOLE_PAGE);
        h.insert("hx-retarget", HeaderValue::from_static("#main"));
        h.insert("hx-reselect", HeaderValue::from_static("#main"));
        h.insert("hx-reswap", HeaderValue::from_static("outerHTML"));
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", include_str!("../../assets/console.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../assets/console.js"))
}

/// htmx 2.0.11 (0BSD, `assets/htmx.LICENSE`), vendored: partial updates
/// (Show/Hide in a row) where the page would otherwise reload.
async fn htmx() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("../../assets/htmx.min.js"))
}

async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("../../assets/favicon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

async fn home(user: Option<Member>) -> Redirect {
    match user {
        Some(Member(who)) => Redirect::to(landing(&who)),
        None => Redirect::to("/sign-in"),
    }
}

/// A signed-in member (by the session cookie) on a console page. Without
/// a live session the page answers with a redirect to the sign-in page,
/// which brings the member back here afterwards.
pub struct Member(pub Principal);

impl FromRequestParts<AppState> for Member {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let back = return_path(parts);
        let partial = parts.headers.contains_key("hx-request");
        let sign_in = || {
            let to = format!("/sign-in?next={}", form::encode(&back));
            match (partial, HeaderValue::from_str(&to)) {
                // A partial update: the whole page goes to sign in, not the row.
                (true, Ok(location)) => ([("hx-redirect", location)], "").into_response(),
                _ => Redirect::to(&to).into_response(),
            }
        };
        // Only the cookie counts here: the console is a browser's.
        parts.headers.remove(header::AUTHORIZATION);
        if crate::api::members::session_cookie_value(&parts.headers).is_none() {
            return Err(sign_in());
        }
        match Principal::from_request_parts(parts, state).await {
            Ok(p) if p.member().is_some() => Ok(Member(p)),
            Ok(_) => Err(sign_in()),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => Err(sign_in()),
            Err(e) => Err(message_page(e.status, "Request refused", &e.message)),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Member {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        Ok(<Member as FromRequestParts<AppState>>::from_request_parts(parts, state).await.ok())
    }
}

/// Where to come back to after signing in: this page for a GET, the page
/// the form was on for a POST.
fn return_path(parts: &Parts) -> String {
    if parts.method == axum::http::Method::GET {
        return parts.uri.path_and_query().map_or("/keys", |p| p.as_str()).to_owned();
    }
    let referer = parts.headers.get(header::REFERER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = referer.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
    let path = safe_next(path.unwrap_or("/"));
    // A page that was the answer to a form (a shown secret, a password
    // prompt) cannot be opened again: back to the page it came from.
    let route = path.split('?').next().unwrap_or_default();
    let answer_only = ["/show", "/clone", "/roll", "/activate", "/deactivate", "/revoke", "/delete", "/remove"]
        .iter()
        .any(|end| route.ends_with(end))
        || ["/switch-workspace", "/sign-out", "/join"].contains(&route);
    if answer_only { "/".to_owned() } else { path.to_owned() }
}

/// A form sent from this server's own pages. Sign-in and joining carry no
/// session yet, so nothing else would stop a forged sign-in: a form posted
/// from another site is refused. Browsers always name the origin of a
/// POST; a client that names none is no browser a site could drive.
pub struct FromThisSite;

impl FromRequestParts<AppState> for FromThisSite {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let named = parts.headers.contains_key(header::ORIGIN);
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site" || v == "same-site");
        if cross_site || (named && !crate::api::extract::same_origin(parts, state.public_origin.as_deref())) {
            return Err(message_page(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This form must be sent from this server's own pages",
            ));
        }
        Ok(FromThisSite)
    }
}

/// The first page of the navigation the member may open.
pub fn landing(who: &Principal) -> &'static str {
    let can = view::Can::of(who);
    if can.keys_read {
        "/keys"
    } else if can.members_read {
        "/members"
    } else if can.settings_read {
        "/settings"
    } else if can.audit_read {
        "/audit"
    } else {
        "/keys"
    }
}

/// A path on this server to send the member to; anything else (another
/// host, a scheme) becomes the console's home.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && next.len() <= 2048;
    if ok { next } else { "/" }
}

/// A page that only says something (an error, a refusal).
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    shell: Option<Shell>,
    heading: &'a str,
    message: &'a str,
}

pub fn message_page(status: StatusCode, heading: &str, message: &str) -> Response {
    (status, render(&MessagePage { shell: None, heading, message })).into_response()
}

/// The status the API answers an error with; the console answers the same.
pub fn status_of(e: &Error) -> StatusCode {
    crate::api::error::ApiError::from(e.clone()).status
}

/// A page built by `page`, or the page of the error that stopped it.
pub async fn respond<T: Template>(state: &AppState, who: &Principal, page: Result<T, Error>) -> Response {
    match page {
        Ok(page) => render(&page),
        Err(e) => error_page(state, who, &e).await,
    }
}

/// A failed console action whose page cannot show it beside a field.
pub async fn error_page(state: &AppState, who: &Principal, e: &Error) -> Response {
    let status = status_of(e);
    let heading = match e.kind {
        ErrorKind::Forbidden => "Not allowed",
        ErrorKind::NotFound => "Not found",
        _ => "That did not work",
    };
    let shell = Shell::load(state, who, "").await.ok();
    (status, render(&MessagePage { shell, heading, message: &e.message })).into_response()
}

/// Renders a template; a template that fails to render is our fault.
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").into_response()
        }
    }
}

/// Renders with a status (a form shown again with its errors: 400 and the like).
pub fn render_status(status: StatusCode, t: &impl Template) -> Response {
    (status, render(t)).into_response()
}

/// 303 See Other to a page of the console (after a form succeeded).
pub fn see(path: &str) -> Response {
    Redirect::to(path).into_response()
}
