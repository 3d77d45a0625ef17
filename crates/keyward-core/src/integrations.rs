//! A workspace's integration credentials (the API/FTP section of its keys
//! page): a JavaScript (publishable) key for websites, a default REST key
//! with Full Access, and FTP access whose username is the workspace's site
//! id and whose password keyward generates and checks for an FTP server.

use chrono::{DateTime, Utc};

use crate::{Code, Error};

/// The name the JavaScript key is created with.
pub const JAVASCRIPT_KEY_NAME: &str = "JavaScript API key";
/// The name the default REST key is created with.
pub const REST_KEY_NAME: &str = "Default REST API key";
/// The origin a new JavaScript key allows until its origins are edited
/// (a publishable key needs at least one).
pub const JAVASCRIPT_KEY_ORIGIN: &str = "http://localhost";
/// The longest FTP username or password an FTP server may send (bytes).
pub const MAX_FTP_FIELD: usize = 256;
/// Characters of a generated FTP password (base62: about 190 bits).
pub const FTP_PASSWORD_LEN: usize = 32;
/// The longest site id.
pub const MAX_SITE_ID_LEN: usize = 64;

/// A workspace's integration credentials as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integrations {
    pub workspace_id: String,
    pub javascript_key_id: String,
    /// The JavaScript key's full value: publishable, public by design.
    pub javascript_key: String,
    /// `None` once the default REST key was deleted (or never made again).
    pub rest_key_id: Option<String>,
    pub ftp: FtpAccess,
    pub created_at: DateTime<Utc>,
}

/// FTP access of a workspace: its password as an argon2id hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtpAccess {
    pub password_hash: String,
    pub enabled: bool,
    pub password_set_at: DateTime<Utc>,
    /// Locked by wrong passwords (the workspace's lockout policy) until the
    /// password is rotated or access is enabled again.
    pub locked: bool,
    /// A sealed copy of the password is kept (it can be shown again).
    pub sealed: bool,
}

/// A site id: 1–64 characters of letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit, and not shaped like a workspace id
/// (`ws_…`), which is every other workspace's FTP username.
pub fn validate_site_id(site_id: &str) -> Result<String, Error> {
    let b = site_id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_SITE_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !site_id.starts_with("ws_");
    if !ok {
        return Err(Error::invalid(
            Code::InvalidSiteId,
            "siteId must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, \
             and must not begin with ws_",
        ));
    }
    Ok(site_id.to_owned())
}

/// What an FTP server sends: at most [`MAX_FTP_FIELD`] bytes, no control
/// characters (400 naming the field; the value is never echoed).
pub fn check_ftp_field(field: &'static str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_FTP_FIELD || value.chars().any(char::is_control) {
        let code = if field == "password" { Code::InvalidPassword } else { Code::InvalidUsername };
        return Err(Error::invalid(
            code,
            format!("{field} must be at most {MAX_FTP_FIELD} bytes without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids() {
        assert_eq!(validate_site_id("site_abc123").unwrap(), "site_abc123");
        assert_eq!(validate_site_id("A.b-c").unwrap(), "A.b-c");
        for bad in ["", "-a", "ws_abc", "a b", "a/b", "é", &"a".repeat(65)] {
            assert_eq!(validate_site_id(bad).unwrap_err().code, Code::InvalidSiteId, "{bad:?}");
        }
    }

    #[test]
    fn ftp_fields() {
        assert!(check_ftp_field("username", "site_abc").is_ok());
        assert!(check_ftp_field("password", &"p".repeat(256)).is_ok());
        assert_eq!(check_ftp_field("password", &"p".repeat(257)).unwrap_err().code, Code::InvalidPassword);
        assert_eq!(check_ftp_field("username", "a\nb").unwrap_err().code, Code::InvalidUsername);
        let e = check_ftp_field("password", "secret\u{7}").unwrap_err();
        assert!(!e.message.contains("secret"));
    }
}
