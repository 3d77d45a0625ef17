//! The Webhooks page: endpoints with their events and state (a notice for
//! each one keyward disabled), `Add Endpoint` (URL, events, description),
//! the signing secret shown once (after adding or `Rotate secret`), and an
//! endpoint's page with its deliveries (status, attempts, answer, latency),
//! `Resend`, `Send test event`, `Disable`/`Enable` and `Delete`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use keyward_core::webhook::{EVENT_TYPES, Endpoint};
use keyward_core::{Code, Error};

use super::form::{FormData, Params};
use super::view::{Errors, FormError, Shell, inert, when, when_opt};
use super::{Member, error_page, render, render_status, respond, see};
use crate::app::AppState;
use crate::principal::Principal;
use crate::webhooks::{EndpointDraft, EndpointPatch};

pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: String,
    pub enabled: bool,
    /// Why keyward turned it off, for its notice.
    pub disabled_why: String,
    pub failing_since: String,
}

impl EndpointRow {
    fn of(e: Endpoint) -> Self {
        let disabled_why = match e.disabled_reason.as_deref() {
            Some("gone") => "keyward disabled it: it answered 410 Gone".to_owned(),
            Some(_) => "keyward disabled it: every delivery failed for 3 days".to_owned(),
            None if !e.enabled => "disabled by a member".to_owned(),
            None => String::new(),
        };
        EndpointRow {
            url: inert(&e.url),
            description: inert(e.description.as_deref().unwrap_or_default()),
            events: e.events.names().join(", "),
            enabled: e.enabled,
            disabled_why,
            failing_since: when_opt(e.failing_since.as_ref(), ""),
            id: e.id,
        }
    }
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage {
    shell: Option<Shell>,
    rows: Vec<EndpointRow>,
    panel: bool,
    v: FormData,
    errors: Errors,
    events: &'static [&'static str],
    notice: Option<&'static str>,
}

const FIELDS: &[(&str, &[Code])] = &[
    ("url", &[Code::WebhookUrlNotAllowed]),
    ("events", &[Code::InvalidEvents]),
    ("description", &[Code::DescriptionTooLong]),
];

async fn list_page(
    state: &AppState,
    who: &Principal,
    panel: bool,
    v: FormData,
    error: Option<FormError>,
    notice: Option<&'static str>,
) -> Result<WebhooksPage, Error> {
    let shell = Shell::load(state, who, "webhooks").await?;
    let rows = state.webhooks.list(who).await?.into_iter().map(EndpointRow::of).collect();
    Ok(WebhooksPage { shell: Some(shell), rows, panel, v, errors: Errors(error), events: EVENT_TYPES, notice })
}

pub async fn page(State(state): State<AppState>, Member(who): Member, Params(p): Params) -> Response {
    let notice = match p.val("done") {
        "delete" => Some("The endpoint was deleted."),
        _ => None,
    };
    respond(&state, &who, list_page(&state, &who, false, FormData::default(), None, notice).await).await
}

/// `Add Endpoint`: the page with the panel open.
pub async fn new_page(State(state): State<AppState>, Member(who): Member) -> Response {
    let mut v = FormData::default();
    v.set("events", "*");
    respond(&state, &who, list_page(&state, &who, true, v, None, None).await).await
}

#[derive(Template)]
#[template(path = "webhook_secret.html")]
struct SecretPage {
    shell: Option<Shell>,
    heading: &'static str,
    id: String,
    url: String,
    secret: String,
    previous_until: Option<String>,
}

/// The signing secret, once: never cached, never stored by the browser.
async fn secret_page(state: &AppState, who: &Principal, page: SecretPage) -> Response {
    match Shell::load(state, who, "webhooks").await {
        Ok(shell) => {
            let mut response = render(&SecretPage { shell: Some(shell), ..page });
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => error_page(state, who, &e).await,
    }
}

pub async fn create(State(state): State<AppState>, Member(who): Member, v: FormData) -> Response {
    let draft = EndpointDraft {
        url: v.val("url").trim().to_owned(),
        events: v.all("events"),
        description: v.text("description"),
        enabled: Some(true),
    };
    match state.webhooks.create(&who, draft).await {
        Ok((e, secret)) => {
            let page = SecretPage {
                shell: None,
                heading: "Endpoint added",
                url: inert(&e.url),
                id: e.id,
                secret: secret.to_text(),
                previous_until: None,
            };
            secret_page(&state, &who, page).await
        }
        Err(e) => {
            let error = FormError::from_error(&e, FIELDS);
            let status = error.status;
            match list_page(&state, &who, true, v, Some(error), None).await {
                Ok(page) => render_status(status, &page),
                Err(e) => error_page(&state, &who, &e).await,
            }
        }
    }
}

pub struct DeliveryRow {
    pub event_id: String,
    pub event_type: String,
    pub status: &'static str,
    pub attempts: i64,
    pub response: String,
    pub latency: String,
    pub last_attempt: String,
    pub next_attempt: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "webhook_detail.html")]
struct DetailPage {
    shell: Option<Shell>,
    e: EndpointRow,
    deliveries: Vec<DeliveryRow>,
    notice: Option<String>,
}

pub async fn detail(
    State(state): State<AppState>,
    Member(who): Member,
    Path(id): Path<String>,
    Params(p): Params,
) -> Response {
    let result = async {
        let endpoint = state.webhooks.get(&who, &id).await?;
        let deliveries = state
            .webhooks
            .deliveries(&who, &id, None, None, 50)
            .await?
            .into_iter()
            .map(|d| DeliveryRow {
                status: d.status.as_str(),
                attempts: d.attempts,
                response: d.response_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
                latency: d.latency_ms.map(|l| format!("{l} ms")).unwrap_or_else(|| "—".into()),
                last_attempt: when_opt(d.last_attempt_at.as_ref(), "Not yet"),
                next_attempt: match d.status {
                    keyward_store::webhooks::DeliveryStatus::Pending => when_opt(d.next_attempt_at.as_ref(), ""),
                    _ => String::new(),
                },
                error: inert(d.error.as_deref().unwrap_or_default()),
                event_type: d.event_type,
                event_id: d.event_id,
            })
            .collect();
        let notice = match p.val("done") {
            "test" => Some("A test event was sent: it shows below as it is delivered.".to_owned()),
            "resend" => Some("The event is sent again.".to_owned()),
            "enable" => Some("The endpoint is enabled.".to_owned()),
            "disable" => Some("The endpoint is disabled: nothing is sent to it.".to_owned()),
            _ => None,
        };
        Ok::<_, Error>(DetailPage {
            shell: Some(Shell::load(&state, &who, "webhooks").await?),
            e: EndpointRow::of(endpoint),
            deliveries,
            notice,
        })
    }
    .await;
    respond(&state, &who, result).await
}

pub async fn test(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.webhooks.send_test(&who, &id).await {
        Ok(_) => see(&format!("/webhooks/{id}?done=test")),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn resend(
    State(state): State<AppState>,
    Member(who): Member,
    Path((id, event_id)): Path<(String, String)>,
) -> Response {
    match state.webhooks.resend(&who, &id, &event_id).await {
        Ok(_) => see(&format!("/webhooks/{id}?done=resend")),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn set_enabled(
    State(state): State<AppState>,
    Member(who): Member,
    Path((id, what)): Path<(String, String)>,
) -> Response {
    let enabled = match what.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return super::message_page(axum::http::StatusCode::NOT_FOUND, "Not found", "No such action"),
    };
    let patch = EndpointPatch { enabled: Some(enabled), ..EndpointPatch::default() };
    match state.webhooks.update(&who, &id, patch).await {
        Ok(_) => see(&format!("/webhooks/{id}?done={what}")),
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn rotate(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    let result = async {
        let endpoint = state.webhooks.get(&who, &id).await?;
        let (secret, until) = state.webhooks.rotate_secret(&who, &id, 86_400).await?;
        Ok::<_, Error>((endpoint, secret, until))
    }
    .await;
    match result {
        Ok((e, secret, until)) => {
            let page = SecretPage {
                shell: None,
                heading: "Secret rotated",
                url: inert(&e.url),
                id: e.id,
                secret: secret.to_text(),
                previous_until: Some(when(&until)),
            };
            secret_page(&state, &who, page).await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn confirm_delete(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.webhooks.get(&who, &id).await {
        Ok(e) => {
            let heading = format!("Delete the endpoint {}?", inert(&e.url));
            let warning = "Nothing more is sent to it; its delivery log and secrets are deleted with it.";
            super::people::confirm(
                &state,
                &who,
                "webhooks",
                heading,
                warning,
                format!("/webhooks/{id}/delete"),
                "/webhooks",
            )
            .await
        }
        Err(e) => error_page(&state, &who, &e).await,
    }
}

pub async fn delete(State(state): State<AppState>, Member(who): Member, Path(id): Path<String>) -> Response {
    match state.webhooks.delete(&who, &id).await {
        Ok(_) => see("/webhooks?done=delete"),
        Err(e) => error_page(&state, &who, &e).await,
    }
}
