//! What every page shows around its content (the member, the workspace,
//! the navigation they may use), and how values read on a page.

use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::Error;

use crate::app::AppState;
use crate::principal::Principal;

/// The frame of a signed-in page.
pub struct Shell {
    /// The navigation entry of this page (`keys`, `members`, …).
    pub section: &'static str,
    pub member_name: String,
    pub member_email: String,
    pub workspace_id: String,
    pub workspace_name: String,
    /// Every workspace of the member, as (id, name), for the switcher.
    pub workspaces: Vec<(String, String)>,
    pub can: Can,
}

/// What the member may do, as the services will judge it: pages hide what
/// would be refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Can {
    pub keys_read: bool,
    pub keys_manage: bool,
    pub keys_reveal: bool,
    pub members_read: bool,
    pub members_manage: bool,
    pub roles_manage: bool,
    pub settings_read: bool,
    pub settings_manage: bool,
    pub audit_read: bool,
    pub tokens_manage: bool,
    pub pgp_read: bool,
    pub integrations_read: bool,
    pub webhooks_manage: bool,
}

impl Can {
    pub fn of(who: &Principal) -> Self {
        let may = |p: &str| who.require(p).is_ok();
        Can {
            keys_read: may(crate::keys::READ),
            keys_manage: may(crate::keys::MANAGE),
            keys_reveal: may(crate::keys::REVEAL),
            members_read: may(crate::members::MEMBERS_READ),
            members_manage: may(crate::members::MEMBERS_MANAGE),
            roles_manage: may(crate::roles::ROLES_MANAGE),
            settings_read: may("settings:read"),
            settings_manage: may("settings:manage"),
            audit_read: may(crate::audit::READ),
            tokens_manage: may(crate::oauth::TOKENS_MANAGE),
            pgp_read: may(crate::pgp::PGP_READ),
            integrations_read: may(crate::integrations::INTEGRATIONS_READ),
            webhooks_manage: may(crate::webhooks::MANAGE),
        }
    }
}

impl Shell {
    pub async fn load(state: &AppState, who: &Principal, section: &'static str) -> Result<Shell, Error> {
        let m = who.member().ok_or_else(|| Error::forbidden(Code::MemberRequired, "Sign in to use the console"))?;
        let workspaces = state.members.workspaces(who).await?;
        let workspace_name = workspaces
            .iter()
            .find(|w| w.id == m.workspace_id)
            .map(|w| w.name.clone())
            .unwrap_or_else(|| m.workspace_id.clone());
        Ok(Shell {
            section,
            member_name: inert(&m.name),
            member_email: m.email.clone(),
            workspace_id: m.workspace_id.clone(),
            workspace_name: inert(&workspace_name),
            workspaces: workspaces.into_iter().map(|w| (w.id, inert(&w.name))).collect(),
            can: Can::of(who),
        })
    }

    /// `aria-current` for a navigation link.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section { "page" } else { "false" }
    }
}

/// A moment as the console prints it (UTC, to the minute).
pub fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// An optional moment, or a dash.
pub fn when_opt(t: Option<&DateTime<Utc>>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), when)
}

/// A form's failure: the message the API gives, and the field it is about
/// (empty: the form as a whole).
#[derive(Debug, Clone)]
pub struct FormError {
    pub field: &'static str,
    pub message: String,
    /// The status the page is answered with (the API's for the same error).
    pub status: axum::http::StatusCode,
}

impl FormError {
    /// Places an error of the API beside the field it names, by its code.
    pub fn of(code: Code, message: &str, fields: &[(&'static str, &[Code])]) -> Self {
        let field = fields.iter().find(|(_, codes)| codes.contains(&code)).map_or("", |(f, _)| f);
        FormError { field, message: message.to_owned(), status: axum::http::StatusCode::BAD_REQUEST }
    }

    /// A service's refusal, beside its field, with the API's status.
    pub fn from_error(e: &Error, fields: &[(&'static str, &[Code])]) -> Self {
        let status = super::status_of(e);
        FormError { status, ..Self::of(e.code, &e.message, fields) }
    }

    pub fn field(field: &'static str, message: impl Into<String>) -> Self {
        FormError { field, message: message.into(), status: axum::http::StatusCode::BAD_REQUEST }
    }
}

/// A form's errors, as its page asks about them.
#[derive(Debug, Default)]
pub struct Errors(pub Option<FormError>);

impl Errors {
    /// The message for `field`, if the error is about that field.
    pub fn on(&self, field: &str) -> Option<&str> {
        self.0.as_ref().filter(|e| e.field == field).map(|e| e.message.as_str())
    }

    /// The message of an error not about any one field.
    pub fn general(&self) -> Option<&str> {
        self.0.as_ref().filter(|e| e.field.is_empty()).map(|e| e.message.as_str())
    }

    /// `aria-invalid` of a field.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.on(field).is_some() { "true" } else { "false" }
    }
}

/// A name as a page prints it: characters that would reorder or hide text
/// (bidirectional controls, zero-width and other format characters) are
/// shown as their code points, so no name can disguise itself or the text
/// around it.
pub fn inert(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let invisible = matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}' | '\u{00AD}')
            || c.is_control();
        if invisible {
            out.push_str(&format!("[U+{:04X}]", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn bidi_controls_are_shown_not_obeyed() {
        assert_eq!(super::inert("abc\u{202E}fdp.exe"), "abc[U+202E]fdp.exe");
        assert_eq!(super::inert("Zoë 日本 \u{200B}x"), "Zoë 日本 [U+200B]x");
    }
}
