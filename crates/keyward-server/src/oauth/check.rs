//! Checking presented JWTs: keyward's own access tokens (EdDSA/ES256,
//! `kid` naming a published signing key) and signed requests (HS256 with a
//! recoverable key's secret, `kid` naming the key). Each refusal gets its
//! `TOKEN_*` code and says what was wrong; the verifier supplies the keys.

use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_core::key::KeyState;
use keyward_core::oauth::{WindowRefusal, check_signed_window};
use keyward_core::verify::{Decision, VerifyCode, token_refused};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AccessClaims;
use keyward_verifier::cache::CachedKey;

/// What a presented JWT claims to be, from its header.
#[derive(Debug)]
pub enum Presented {
    /// Signed by keyward (EdDSA or ES256) with signing key `kid`.
    AccessToken { kid: String, alg: Algorithm },
    /// Signed with the secret of key `kid` (HS256).
    SignedRequest { kid: String },
}

pub fn invalid(why: &'static str) -> Decision {
    token_refused(VerifyCode::TokenInvalid, why)
}

/// Reads the header: which kind of token, and which key checks it.
pub fn classify(token: &str) -> Result<Presented, Decision> {
    // `alg: none` and unknown algorithms do not even parse.
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        invalid("The token's header is not valid JSON Web Token header, or its algorithm is not accepted")
    })?;
    let kid =
        header.kid.filter(|k| !k.is_empty() && k.len() <= 64).ok_or_else(|| invalid("The token names no key (kid)"))?;
    match header.alg {
        Algorithm::EdDSA | Algorithm::ES256 => Ok(Presented::AccessToken { kid, alg: header.alg }),
        Algorithm::HS256 => Ok(Presented::SignedRequest { kid }),
        _ => Err(invalid(
            "The token's algorithm is not accepted: EdDSA or ES256 (access tokens), HS256 (signed requests)",
        )),
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // Times are checked against keyward's clock, below.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v
}

/// Checks an access token's signature with its signing key (`expected`:
/// the algorithm that key signs with) and its times.
pub fn decode_access(
    token: &str,
    alg: Algorithm,
    expected: Algorithm,
    key: &DecodingKey,
    now: DateTime<Utc>,
) -> Result<AccessClaims, Decision> {
    if alg != expected {
        return Err(invalid("The token's algorithm is not the one its signing key uses"));
    }
    let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation(expected))
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid("The token's signature is not valid"),
            _ => invalid("The token's claims are not those of a keyward access token"),
        })?
        .claims;
    in_lifetime(&claims, now)?;
    Ok(claims)
}

/// Whether an access token whose signature checked is in its lifetime at `now`.
pub fn in_lifetime(claims: &AccessClaims, now: DateTime<Utc>) -> Result<(), Decision> {
    if claims.exp <= now.timestamp() {
        return Err(token_refused(VerifyCode::TokenExpired, "The access token has expired"));
    }
    if claims.iat > now.timestamp() + keyward_core::oauth::CLOCK_LEEWAY_SECONDS {
        return Err(token_refused(VerifyCode::TokenNotYetValid, "The access token is not valid yet"));
    }
    Ok(())
}

/// The claims of a signed request.
#[derive(Debug, Deserialize)]
pub struct SignedClaims {
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub jti: Option<String>,
}

/// Why a signed request's signature check failed.
pub enum SignedRefusal {
    /// The signature does not match the key's secret (a wrong secret).
    Signature,
    Other(Decision),
}

/// Checks a signed request with its key's `secret`: signature, the time
/// window (at most five minutes), and that it carries a `jti`.
pub fn decode_signed(token: &str, secret: &str, now: DateTime<Utc>) -> Result<(String, i64), SignedRefusal> {
    let key = DecodingKey::from_secret(secret.as_bytes())
        .map_err(|_| SignedRefusal::Other(invalid("The key's secret cannot check a signature")))?;
    let claims = jsonwebtoken::decode::<SignedClaims>(token, &key, &validation(Algorithm::HS256))
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => SignedRefusal::Signature,
            _ => SignedRefusal::Other(invalid(
                "The signed request's claims are not valid (exp, iat, nbf: numbers; jti: a string)",
            )),
        })?
        .claims;
    check_signed_window(claims.iat, claims.exp, claims.nbf, now, keyward_core::oauth::MAX_SIGNED_LIFETIME_SECONDS)
        .map_err(|w| {
            SignedRefusal::Other(match w {
                WindowRefusal::Lifetime => invalid("A signed request needs iat and exp, at most 300 seconds apart"),
                WindowRefusal::Expired => token_refused(VerifyCode::TokenExpired, "The signed request has expired"),
                WindowRefusal::NotYetValid => {
                    token_refused(VerifyCode::TokenNotYetValid, "The signed request is not valid yet")
                }
            })
        })?;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 128)
        .ok_or_else(|| SignedRefusal::Other(invalid("A signed request needs a jti (1–128 characters), used once")))?;
    Ok((jti, claims.exp.unwrap_or_default()))
}

/// The payload of a JWT, before its signature is checked (to find the key
/// that checks it).
pub fn unverified_claims<T: DeserializeOwned>(token: &str) -> Option<T> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether an assertion's `aud` names this server: the token endpoint or
/// the issuer it belongs to.
pub fn names_endpoint(aud: &str, endpoint: &str) -> bool {
    let issuer = endpoint.strip_suffix("/oauth/token").unwrap_or(endpoint);
    aud == endpoint || aud.trim_end_matches('/') == issuer
}

/// Whether a key may be used now: active and not expired.
pub fn usable(key: &CachedKey, now: DateTime<Utc>) -> bool {
    key.state == KeyState::Active && !key.is_expired(now)
}

/// Whether an access token still stands for its key: a client's token
/// names the client's consumer key (or, in a grace period, the one
/// before), so regenerating the secret ends the tokens of the old pair.
pub fn still_issued_to(key: &CachedKey, claims: &AccessClaims, now: DateTime<Utc>) -> bool {
    if *key.id != *claims.sub || *key.workspace_id != *claims.workspace {
        return false;
    }
    match key.client_id() {
        None => claims.client_id == *key.id,
        Some(current) if current == claims.client_id => true,
        Some(_) => {
            key.grace_client_id() == Some(claims.client_id.as_str()) && key.grace().is_some_and(|g| now < g.until)
        }
    }
}
