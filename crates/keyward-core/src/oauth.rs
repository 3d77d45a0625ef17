//! OAuth 2.0 for machine clients: client ids, requested scopes, refresh
//! tokens and their rotation, signing-key records and the time rules of
//! signed requests. Signing and checking JWTs is the server's (it holds the
//! keys); what is decided here needs no keys and no clock.

use chrono::{DateTime, Duration, Utc};

use crate::ids::random_base62;
use crate::key::KeyGrant;
use crate::scope::Scope;
use crate::sealed::SealedSecret;

/// The public consumer key of a `client` key: `ck_` and 24 base62 characters.
pub const CLIENT_ID_PREFIX: &str = "ck_";
const CLIENT_ID_LEN: usize = 24;
/// What follows the workspace's prefix in a refresh token: `kw_rt_…`.
pub const REFRESH_TOKEN_MARK: &str = "_rt_";
const REFRESH_SECRET_LEN: usize = 43;
/// Longest lifetime of a signed request (`exp - iat`), in seconds.
pub const MAX_SIGNED_LIFETIME_SECONDS: i64 = 300;
/// Longest lifetime of a client assertion (RFC 7523; client libraries
/// commonly make them last an hour).
pub const MAX_ASSERTION_LIFETIME_SECONDS: i64 = 3600;
/// How far a client's clock may run ahead of ours (`iat`, `nbf`).
pub const CLOCK_LEEWAY_SECONDS: i64 = 30;
/// Longest refresh token a member may name.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;

pub fn new_client_id() -> String {
    format!("{CLIENT_ID_PREFIX}{}", random_base62(CLIENT_ID_LEN))
}

pub fn is_client_id(s: &str) -> bool {
    s.strip_prefix(CLIENT_ID_PREFIX)
        .is_some_and(|rest| rest.len() == CLIENT_ID_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A new refresh token for a workspace whose tokens start with `prefix`.
pub fn new_refresh_token(prefix: &str) -> crate::token::Secret {
    crate::token::Secret::new(format!("{prefix}{REFRESH_TOKEN_MARK}{}", random_base62(REFRESH_SECRET_LEN)))
}

/// Whether a string has the shape of a refresh token (any workspace prefix).
pub fn looks_like_refresh_token(s: &str) -> bool {
    s.len() <= 80
        && s.split_once(REFRESH_TOKEN_MARK).is_some_and(|(prefix, rest)| {
            crate::token::is_valid_prefix(prefix)
                && rest.len() == REFRESH_SECRET_LEN
                && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// `kw_rt_AbCd…wxyz`: the prefix, four characters, an ellipsis, the last four.
pub fn mask_refresh_token(token: &str) -> String {
    let (prefix, rest) = token.split_once(REFRESH_TOKEN_MARK).unwrap_or(("", token));
    let head: String = rest.chars().take(4).collect();
    let tail: String = rest.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{prefix}{REFRESH_TOKEN_MARK}{head}…{tail}")
}

/// Whether a string has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.len() <= 8192
        && s.bytes().filter(|b| *b == b'.').count() == 2
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Why a requested scope is refused (`invalid_scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRefusal(pub String);

/// The scopes a token asks for (`scope`, space-separated), each within
/// what `client` holds. `None`: no narrowing, the token carries the
/// client's own permissions.
pub fn requested_scope(
    requested: Option<&str>,
    client: &(impl KeyGrant + ?Sized),
) -> Result<Option<Vec<Scope>>, ScopeRefusal> {
    let Some(requested) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let items: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    if items.len() > 100 {
        return Err(ScopeRefusal("scope names more than 100 scopes".to_owned()));
    }
    let mut scopes = Vec::with_capacity(items.len());
    for item in items {
        let scope = Scope::parse(item).ok_or_else(|| {
            ScopeRefusal("scope holds an item that is not a scope (read, write, admin, * or resource:action)".into())
        })?;
        if !within(client, &scope) {
            return Err(ScopeRefusal(format!("scope {scope} is not among the client's permissions")));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(Some(scopes))
}

/// Whether `client` holds everything `scope` names (the one rule of
/// [`crate::scope::Grants::covers_scope`]).
fn within(client: &(impl KeyGrant + ?Sized), scope: &Scope) -> bool {
    client.grants().covers_scope(scope, true)
}

/// The `scope` of a token: the requested scopes, or the client's own.
pub fn scope_string(scopes: &[Scope]) -> String {
    scopes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// A refresh token as stored (its hash, never the token). Issued to a client
/// by `client_credentials` (rotating: each use returns a new one), or to a
/// member for the REST API (`POST /v1/tokens`: used as it is until revoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: String,
    pub workspace_id: String,
    /// Every token rotated from the same grant; reuse revokes them all.
    pub family_id: String,
    pub token_hash: [u8; 32],
    /// The client key it was issued to.
    pub client_key_id: Option<String>,
    /// The member it acts for (member tokens).
    pub member_id: Option<String>,
    pub name: Option<String>,
    /// The scopes asked for when the family began (`None`: the client's own).
    pub scope: Option<String>,
    pub masked: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was exchanged for its successor (client tokens).
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Why a refresh token cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRefusal {
    /// Already exchanged: someone else holds its successor. Its family is
    /// revoked.
    Reused,
    Revoked,
    Expired,
}

impl RefreshToken {
    pub fn rotates(&self) -> bool {
        self.member_id.is_none()
    }

    pub fn check(&self, now: DateTime<Utc>) -> Result<(), RefreshRefusal> {
        if self.revoked_at.is_some() {
            return Err(RefreshRefusal::Revoked);
        }
        if self.used_at.is_some() {
            return Err(RefreshRefusal::Reused);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(RefreshRefusal::Expired);
        }
        Ok(())
    }

    /// The token that replaces this one when it is used: same family,
    /// grant and end of life (a rotation never extends the family).
    pub fn successor(&self, id: String, token_hash: [u8; 32], masked: String, now: DateTime<Utc>) -> RefreshToken {
        RefreshToken {
            id,
            token_hash,
            masked,
            created_at: now,
            used_at: None,
            revoked_at: None,
            last_used_at: None,
            ..self.clone()
        }
    }
}

/// The algorithms access tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDsa,
    Es256,
}

impl SigningAlgorithm {
    /// The JOSE name (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Es256 => "ES256",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(SigningAlgorithm::EdDsa),
            "ES256" => Some(SigningAlgorithm::Es256),
            _ => None,
        }
    }
}

/// A signing key as stored: its public JWK, and its private key sealed
/// under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    /// The private key (PKCS#8 DER), sealed.
    pub sealed: SealedSecret,
    pub created_at: DateTime<Utc>,
    /// When a newer key took over signing.
    pub retired_at: Option<DateTime<Utc>>,
    /// When the last token it signed has expired: it leaves the JWKS then.
    pub drop_after: Option<DateTime<Utc>>,
}

impl SigningKey {
    pub fn is_published(&self, now: DateTime<Utc>) -> bool {
        self.drop_after.is_none_or(|d| now < d)
    }

    /// Whether a key created at `created_at` is due for rotation.
    pub fn is_due(&self, rotate_after: Duration, now: DateTime<Utc>) -> bool {
        self.created_at + rotate_after <= now
    }
}

/// The key that signs now: the newest one not retired.
pub fn current_signing_key(keys: &[SigningKey]) -> Option<&SigningKey> {
    keys.iter().filter(|k| k.retired_at.is_none()).max_by_key(|k| (k.created_at, k.kid.clone()))
}

/// Why a signed request's times are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRefusal {
    /// `exp` or `iat` is missing, or `exp - iat` is over five minutes.
    Lifetime,
    Expired,
    NotYetValid,
}

/// The time rules of a JWT signed with a key's secret: `iat` and `exp`
/// present, at most `max_lifetime` seconds apart ([`MAX_SIGNED_LIFETIME_SECONDS`]
/// for signed requests), `now` inside them (and after `nbf`), allowing
/// [`CLOCK_LEEWAY_SECONDS`] of clock skew.
pub fn check_signed_window(
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    now: DateTime<Utc>,
    max_lifetime: i64,
) -> Result<(), WindowRefusal> {
    let (Some(iat), Some(exp)) = (iat, exp) else { return Err(WindowRefusal::Lifetime) };
    if exp <= iat || exp - iat > max_lifetime {
        return Err(WindowRefusal::Lifetime);
    }
    let now = now.timestamp();
    if exp <= now {
        return Err(WindowRefusal::Expired);
    }
    if iat > now + CLOCK_LEEWAY_SECONDS || nbf.is_some_and(|n| n > now + CLOCK_LEEWAY_SECONDS) {
        return Err(WindowRefusal::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{ApiKey, KeyDraft};
    use crate::workspace::Workspace;

    /// A fixed instant: the rules take the time as a parameter.
    fn now_fixed() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn client(scopes: &[&str]) -> ApiKey {
        let now = now_fixed();
        let ws = Workspace::new("w", now).unwrap();
        let draft = KeyDraft {
            name: Some("c".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let valid = draft.validate(&ws, now).expect("valid draft");
        let hasher = crate::hash::SecretHasher::new(&[3u8; 32]).unwrap();
        let token = crate::token::generate("kw", crate::token::Environment::Live);
        let parsed = crate::token::parse(token.expose()).unwrap();
        valid.into_key(parsed.key_id(), "ws_1", "m".into(), hasher.native(&parsed), now)
    }

    #[test]
    fn requested_scopes_stay_within_the_client() {
        let c = client(&["campaigns:*", "read"]);
        assert_eq!(requested_scope(None, &c), Ok(None));
        assert_eq!(requested_scope(Some("  "), &c), Ok(None));
        let got = requested_scope(Some("campaigns:read campaigns:read tags:read"), &c).unwrap().unwrap();
        assert_eq!(scope_string(&got), "campaigns:read tags:read");
        assert!(requested_scope(Some("campaigns:*"), &c).unwrap().is_some());
        assert!(requested_scope(Some("read"), &c).unwrap().is_some());
        for refused in ["write", "tags:write", "admin", "*", "keys:read", "*:read", "nonsense scope!"] {
            assert!(requested_scope(Some(refused), &c).is_err(), "{refused} should be refused");
        }
        let full = client(&["*"]);
        assert!(requested_scope(Some("admin keys:manage"), &full).unwrap().is_some());
    }

    #[test]
    fn refresh_tokens_have_a_shape_and_a_mask() {
        let t = new_refresh_token("kw");
        assert!(looks_like_refresh_token(t.expose()));
        assert!(!looks_like_refresh_token("kw_live_abc"));
        let masked = mask_refresh_token(t.expose());
        assert!(masked.starts_with("kw_rt_") && masked.contains('…'));
        assert!(!masked.contains(&t.expose()[6..20]));
        assert!(is_client_id(&new_client_id()));
        assert!(!is_client_id("ck_short"));
    }

    #[test]
    fn rotation_and_reuse() {
        let now = now_fixed();
        let mut t = RefreshToken {
            id: "rtk_1".into(),
            workspace_id: "ws".into(),
            family_id: "rtf_1".into(),
            token_hash: [1; 32],
            client_key_id: Some("key_1".into()),
            member_id: None,
            name: None,
            scope: None,
            masked: "m".into(),
            created_at: now,
            expires_at: Some(now + Duration::days(1)),
            used_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(t.check(now), Ok(()));
        let next = t.successor("rtk_2".into(), [2; 32], "m2".into(), now);
        assert_eq!((next.family_id.as_str(), next.expires_at), ("rtf_1", t.expires_at));
        t.used_at = Some(now);
        assert_eq!(t.check(now), Err(RefreshRefusal::Reused));
        assert_eq!(next.check(now + Duration::days(2)), Err(RefreshRefusal::Expired));
        assert!(t.rotates());
    }

    #[test]
    fn signed_request_windows() {
        let now = now_fixed();
        let t = now.timestamp();
        assert_eq!(check_signed_window(Some(t), Some(t + 300), None, now, MAX_SIGNED_LIFETIME_SECONDS), Ok(()));
        assert_eq!(
            check_signed_window(Some(t), Some(t + 301), None, now, MAX_SIGNED_LIFETIME_SECONDS),
            Err(WindowRefusal::Lifetime)
        );
        assert_eq!(
            check_signed_window(None, Some(t + 60), None, now, MAX_SIGNED_LIFETIME_SECONDS),
            Err(WindowRefusal::Lifetime)
        );
        assert_eq!(
            check_signed_window(Some(t - 120), Some(t - 60), None, now, MAX_SIGNED_LIFETIME_SECONDS),
            Err(WindowRefusal::Expired)
        );
        assert_eq!(
            check_signed_window(Some(t + 120), Some(t + 180), None, now, MAX_SIGNED_LIFETIME_SECONDS),
            Err(WindowRefusal::NotYetValid)
        );
        assert_eq!(
            check_signed_window(Some(t), Some(t + 60), Some(t + 100), now, MAX_SIGNED_LIFETIME_SECONDS),
            Err(WindowRefusal::NotYetValid)
        );
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-_"));
        assert!(!looks_like_jwt("kw_live_abc"));
        assert!(!looks_like_jwt("eyJ.a"));
    }
}
