//! keyward's OAuth 2.0 authorization server for machine clients.
//!
//! - `client` keys authenticate at the token endpoint with their consumer
//!   key and secret (`client_secret_basic`, `client_secret_post`) or a JWT
//!   signed with the secret (`client_secret_jwt`, RFC 7523; recoverable
//!   clients only, since keyward keeps only a hash of other secrets).
//! - Grants: `client_credentials`, `refresh_token` (rotating for clients;
//!   a reused token revokes its family) and token exchange (RFC 8693: an
//!   API key for a short-lived access token carrying its permissions).
//! - Access tokens are JWTs signed by [`signing::Signer`] (EdDSA or ES256),
//!   published at `/.well-known/jwks.json`; the verifier accepts them where
//!   it accepts keys ([`check`]).
//! - Introspection (RFC 7662), revocation (RFC 7009), and members' refresh
//!   tokens for the REST API (`/v1/tokens`).

pub mod check;
pub mod signing;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use keyward_core::Code;
use keyward_core::audit::{Outcome, Target};
use keyward_core::authority::Authority;
use keyward_core::hash::SecretHasher;
use keyward_core::key::{KeyState, KeyType};
use keyward_core::oauth::{self as rules, RefreshRefusal, RefreshToken};
use keyward_core::scope::Scope;
use keyward_core::token::{self, Secret};
use keyward_core::verify::VerifyCode;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{OAuthWrite, Store, StoreError, Write};
use keyward_verifier::KeyRecord;

use crate::work::Change;
use serde::{Deserialize, Serialize};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::keys::store_error;
use crate::principal::Principal;
use crate::verifier::Verifier;
use keyward_verifier::cache::CachedKey;

pub use signing::Signer;

/// `tokens:manage`: members' refresh tokens for the REST API.
pub const TOKENS_MANAGE: &str = "tokens:manage";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The `subject_token_type` of an API key presented for exchange.
pub const TOKEN_TYPE_API_KEY: &str = "urn:keyward:params:oauth:token-type:api_key";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ASSERTION_TYPE_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How tokens are issued (server settings).
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub access_token_lifetime: Duration,
    /// Lifetime of a client's refresh-token family; `None`: clients get
    /// no refresh tokens.
    pub refresh_token_lifetime: Option<Duration>,
    /// Longest lifetime of a token obtained by exchanging an API key.
    pub exchange_lifetime: Duration,
    pub algorithm: rules::SigningAlgorithm,
    /// Signing keys older than this are replaced.
    pub signing_key_rotation: Duration,
    /// Live refresh-token families a client keeps (each
    /// `client_credentials` grant starts one); past it the oldest end.
    pub max_refresh_families: u32,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_lifetime: Duration::hours(1),
            refresh_token_lifetime: Some(Duration::days(30)),
            exchange_lifetime: Duration::minutes(15),
            algorithm: rules::SigningAlgorithm::EdDsa,
            signing_key_rotation: Duration::days(90),
            max_refresh_families: 100,
        }
    }
}

/// The claims of an access token (RFC 9068).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The key (client or exchanged API key) or member it stands for.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// Space-separated; what the token may do within its subject's
    /// permissions.
    pub scope: String,
    /// The consumer key for clients; the API key's id for exchanged keys;
    /// the refresh token's id for members.
    pub client_id: String,
    pub workspace: String,
    /// The token was issued for fewer permissions than its subject holds:
    /// `scope` limits it (else it carries the subject's permissions as
    /// they stand, flags and roles included).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scope_limited: bool,
}

impl AccessClaims {
    pub fn scopes(&self) -> Option<Vec<Scope>> {
        self.scope_limited.then(|| self.scope.split(' ').filter_map(Scope::parse).collect())
    }
    pub fn is_member(&self) -> bool {
        self.sub.starts_with("mem_")
    }
}

/// An RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub error: Code,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: Code, description: impl Into<String>) -> Self {
        OAuthError { error, description: description.into() }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, description)
    }
    pub fn invalid_client() -> Self {
        Self::new(Code::InvalidClient, "Client authentication failed")
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(Code::InvalidGrant, description)
    }
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(Code::InvalidScope, description)
    }
    pub fn unsupported_grant_type() -> Self {
        Self::new(
            Code::UnsupportedGrantType,
            "grant_type must be client_credentials, refresh_token or urn:ietf:params:oauth:grant-type:token-exchange",
        )
    }
    fn server(e: Error) -> Self {
        match e.kind {
            // A setting, not an outage: said as what it is (409).
            _ if e.code == Code::MasterKeyRequired => Self::new(Code::MasterKeyRequired, e.message),
            _ if e.code == Code::StorageUnavailable => Self::new(Code::TemporarilyUnavailable, e.message),
            ErrorKind::Invalid | ErrorKind::Conflict => Self::new(Code::InvalidRequest, e.message),
            _ => {
                tracing::warn!(code = e.code.as_str(), error = %e.message, "token request failed");
                Self::new(Code::ServerError, "The server could not answer; try again")
            }
        }
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        OAuthError::server(e)
    }
}

/// How a client authenticated (RFC 6749 §2.3, RFC 7523).
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `Authorization: Basic` (`client_secret_basic`).
    Basic { client_id: String, secret: String },
    /// Form fields (`client_secret_post`).
    Post { client_id: String, secret: String },
    /// `client_assertion` (`client_secret_jwt`).
    Jwt { client_id: Option<String>, assertion: String },
    /// None presented (a `client_id` alone identifies nobody).
    None,
}

/// A token request's parameters (form-encoded; each at most once).
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub scope: Option<String>,
    pub refresh_token: Option<String>,
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub scope: String,
    /// A new refresh token (client credentials and each refresh of a client's token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Token exchange only: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// What introspection tells (RFC 7662 §2.2).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// A member's new refresh token: the record and the token, shown once.
#[derive(Debug)]
pub struct NewMemberToken {
    pub record: RefreshToken,
    pub token: Secret,
}

/// What the issuer of a request is: `public_url`, else the request's own
/// scheme and host.
pub fn issuer_of(public_url: Option<&str>, host: Option<&str>) -> String {
    match (public_url, host) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(host)) => format!("http://{host}"),
        (None, None) => "http://localhost".to_owned(),
    }
}

pub struct OAuthService {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    members: Arc<crate::members::MemberService>,
    signer: Arc<Signer>,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
    audit: Arc<AuditLog>,
    config: OAuthConfig,
    /// Families each client started on this node since its last trim: the
    /// trim (a query over the client's newest families) runs every
    /// [`TRIM_EVERY`] of them, not on every grant.
    started: quick_cache::sync::Cache<compact_str::CompactString, Arc<std::sync::atomic::AtomicU32>>,
}

/// A client's families are trimmed to `max_refresh_families` every this
/// many grants on a node: a client holds at most that many plus
/// `TRIM_EVERY - 1` per node.
pub const TRIM_EVERY: u32 = 32;

/// Whether `secret` is `key`'s consumer secret presented with its consumer
/// key: the current pair, or the pair before a roll while its grace period
/// lasts (the old consumer key ends with the old secret).
fn client_pairs(key: &KeyRecord, client_id: &str, secret: &str, hasher: &SecretHasher, now: DateTime<Utc>) -> bool {
    use keyward_verifier::decide::{SecretMatch, match_secret};
    if key.key_type != KeyType::Client {
        return false;
    }
    let paired_id = match match_secret(key, secret, token::parse(secret).ok().as_ref(), hasher, || now) {
        SecretMatch::Current => key.client_id(),
        SecretMatch::Grace => key.grace_client_id(),
        SecretMatch::Neither => return false,
    };
    paired_id == Some(client_id)
}

fn refresh_refusal(r: RefreshRefusal) -> OAuthError {
    OAuthError::invalid_grant(match r {
        RefreshRefusal::Reused => "The refresh token was already used; every token of its grant is now revoked",
        RefreshRefusal::Revoked => "The refresh token has been revoked",
        RefreshRefusal::Expired => "The refresh token has expired",
    })
}

impl OAuthService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        members: Arc<crate::members::MemberService>,
        signer: Arc<Signer>,
        hasher: SecretHasher,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
        config: OAuthConfig,
    ) -> Self {
        let started = quick_cache::sync::Cache::new(10_000);
        OAuthService { store, verifier, members, signer, hasher, clock, audit, config, started }
    }

    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    fn refresh_hash(&self, token: &str) -> [u8; 32] {
        self.hasher.digest("refresh token", token.as_bytes())
    }

    /// The client a request authenticates as, or `invalid_client`: the same
    /// answer (and nearly the same work) whether the client exists or not.
    pub async fn authenticate_client(&self, auth: &ClientAuth, endpoint: &str) -> Result<Arc<CachedKey>, OAuthError> {
        self.authenticate(auth, endpoint, false).await
    }

    /// A client, or (`keys_too`) a secret API key presented as its own
    /// client: its key id as `client_id`, the key as `client_secret` (the
    /// client its exchanged tokens name).
    async fn authenticate(
        &self,
        auth: &ClientAuth,
        endpoint: &str,
        keys_too: bool,
    ) -> Result<Arc<CachedKey>, OAuthError> {
        match auth {
            ClientAuth::Basic { client_id, secret } | ClientAuth::Post { client_id, secret } => {
                self.by_secret(client_id, secret, keys_too).await
            }
            ClientAuth::Jwt { client_id, assertion } => {
                self.by_assertion(client_id.as_deref(), assertion, endpoint).await
            }
            ClientAuth::None => Err(OAuthError::invalid_client()),
        }
    }

    async fn by_secret(&self, client_id: &str, secret: &str, keys_too: bool) -> Result<Arc<CachedKey>, OAuthError> {
        // Only a consumer secret authenticates a client: never an access
        // token (the verifier would accept one for its key) or other JWT.
        if rules::looks_like_jwt(secret) {
            return Err(OAuthError::invalid_client());
        }
        // The secret is a keyward token: the verifier finds its key (from
        // memory), checks it in constant time and counts wrong secrets
        // towards the key's lockout.
        let v = self.verifier.authenticate_caller(secret, None).await?;
        let (VerifyCode::Valid, Some(key)) = (v.decision.code, v.key) else {
            return Err(OAuthError::invalid_client());
        };
        let own_client = keys_too && key.key_type == KeyType::Secret && *key.id == *client_id;
        if !own_client && !client_pairs(&key, client_id, secret, self.verifier.hasher(), self.clock.now()) {
            return Err(OAuthError::invalid_client());
        }
        Ok(key)
    }

    /// `client_secret_jwt`: an HS256 assertion signed with the consumer
    /// secret (kept sealed by recoverable clients), `iss` = `sub` = the
    /// consumer key, `aud` naming this server, at most an hour long,
    /// its `jti` used once.
    async fn by_assertion(
        &self,
        client_id: Option<&str>,
        assertion: &str,
        endpoint: &str,
    ) -> Result<Arc<CachedKey>, OAuthError> {
        #[derive(Deserialize)]
        struct Assertion {
            iss: Option<String>,
            sub: Option<String>,
            aud: Option<serde_json::Value>,
            exp: Option<i64>,
            iat: Option<i64>,
            nbf: Option<i64>,
            jti: Option<String>,
        }
        let refused = OAuthError::invalid_client;
        if !rules::looks_like_jwt(assertion) {
            return Err(refused());
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| refused())?;
        if header.alg != jsonwebtoken::Algorithm::HS256 {
            return Err(refused());
        }
        let claims: Assertion = check::unverified_claims(assertion).ok_or_else(refused)?;
        let issuer = claims.iss.clone().ok_or_else(refused)?;
        if claims.sub.as_deref() != Some(issuer.as_str()) || client_id.is_some_and(|c| c != issuer) {
            return Err(refused());
        }
        let key = match self.store.find_key_by_client_id(&issuer).await.map_err(store_error)? {
            Some(k) if k.client_id.as_deref() == Some(issuer.as_str()) && k.recoverable => k,
            _ => return Err(refused()),
        };
        let secret = self.verifier.sealed_secret(&key.id).await?.ok_or_else(refused)?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let decoding = jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes()).map_err(|_| refused())?;
        if jsonwebtoken::decode::<serde_json::Value>(assertion, &decoding, &validation).is_err() {
            return Err(refused());
        }
        let now = self.clock.now();
        let iat = claims.iat.or(Some(now.timestamp()));
        rules::check_signed_window(iat, claims.exp, claims.nbf, now, rules::MAX_ASSERTION_LIFETIME_SECONDS)
            .map_err(|_| refused())?;
        let audience_ok = match &claims.aud {
            Some(serde_json::Value::String(a)) => check::names_endpoint(a, endpoint),
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str().is_some_and(|a| check::names_endpoint(a, endpoint)))
            }
            _ => false,
        };
        let jti = claims.jti.filter(|j| !j.is_empty() && j.len() <= 128).ok_or_else(refused)?;
        if !audience_ok {
            return Err(refused());
        }
        let expires = DateTime::from_timestamp(claims.exp.unwrap_or_default(), 0).unwrap_or(now);
        if !self.store.spend_jti(&format!("ca:{issuer}:{jti}"), expires, now).await.map_err(store_error)? {
            return Err(refused());
        }
        // The key as the verifier holds it, for its state.
        let v = self.verifier.cached(&key).await?;
        if !check::usable(&v, now) {
            return Err(refused());
        }
        Ok(v)
    }

    /// The token endpoint.
    pub async fn token(
        &self,
        request: TokenRequest,
        auth: ClientAuth,
        issuer: &str,
        endpoint: &str,
    ) -> Result<TokenResponse, OAuthError> {
        match request.grant_type.as_str() {
            GRANT_CLIENT_CREDENTIALS => {
                let client = self.authenticate_client(&auth, endpoint).await?;
                let scopes = rules::requested_scope(request.scope.as_deref(), &client.record)
                    .map_err(|r| OAuthError::invalid_scope(r.0))?;
                self.may_issue(&client, scopes.as_deref()).await?;
                let (access, expires_in, scope) =
                    self.access_token_for_key(&client, scopes.as_deref(), issuer, None).await?;
                let refresh = match self.config.refresh_token_lifetime {
                    Some(lifetime) => Some(self.start_family(&client, scopes.as_deref(), lifetime).await?),
                    None => None,
                };
                // One entry per client a minute: an entry per token would
                // cost issuance a tenth of its throughput.
                self.verifier.usage().token_issued(&client, "token.issued");
                Ok(TokenResponse {
                    access_token: access,
                    token_type: "Bearer",
                    expires_in,
                    scope,
                    refresh_token: refresh,
                    issued_token_type: None,
                })
            }
            GRANT_REFRESH_TOKEN => self.refresh(request, auth, issuer, endpoint).await,
            GRANT_TOKEN_EXCHANGE => self.exchange(request, auth, issuer, endpoint).await,
            "" => Err(OAuthError::invalid_request("grant_type is required")),
            _ => Err(OAuthError::unsupported_grant_type()),
        }
    }

    /// The one authority check for a token: what it carries (the scope it
    /// is limited to, or the key's whole grant; the key's restrictions)
    /// within what the key presenting it holds.
    async fn may_issue(&self, key: &Arc<CachedKey>, scopes: Option<&[Scope]>) -> Result<(), OAuthError> {
        let custom = self.verifier.roles(&key.workspace_id).await?;
        let token = Authority::of_key(&key.record, &custom).narrowed(scopes);
        let who = Principal::from(crate::principal::Caller::ApiKey(key.clone(), None));
        who.may_give(&custom, &token).map_err(|e| OAuthError::invalid_scope(e.message))
    }

    /// Signs an access token for `key` (a client, or an API key being
    /// exchanged), living at most `cap`: (token, expires_in, scope).
    async fn access_token_for_key(
        &self,
        key: &KeyRecord,
        scopes: Option<&[Scope]>,
        issuer: &str,
        cap: Option<Duration>,
    ) -> Result<(String, i64, String), OAuthError> {
        let now = self.clock.now();
        let mut lifetime = cap.map_or(self.config.access_token_lifetime, |c| c.min(self.config.access_token_lifetime));
        if let Some(expires) = key.expires_at {
            lifetime = lifetime.min(expires - now);
        }
        let scope = rules::scope_string(scopes.unwrap_or(&key.scopes));
        let claims = AccessClaims {
            iss: issuer.to_owned(),
            sub: key.id.to_string(),
            aud: issuer.to_owned(),
            exp: (now + lifetime).timestamp(),
            iat: now.timestamp(),
            jti: ids::new_id("at"),
            scope: scope.clone(),
            client_id: key.client_id().map_or_else(|| key.id.to_string(), str::to_owned),
            workspace: key.workspace_id.to_string(),
            scope_limited: scopes.is_some(),
        };
        let token = self.signer.sign(&claims).await?;
        Ok((token, lifetime.num_seconds(), scope))
    }

    fn new_refresh(&self, prefix: &str) -> (String, [u8; 32], String, Secret) {
        let token = rules::new_refresh_token(prefix);
        let hash = self.refresh_hash(token.expose());
        (ids::new_id("rtk"), hash, rules::mask_refresh_token(token.expose()), token)
    }

    async fn start_family(
        &self,
        client: &KeyRecord,
        scopes: Option<&[Scope]>,
        lifetime: Duration,
    ) -> Result<String, OAuthError> {
        let ws = self.verifier.workspace(&client.workspace_id).await?;
        let now = self.clock.now();
        let (id, token_hash, masked, token) = self.new_refresh(&ws.token_prefix);
        let record = RefreshToken {
            id,
            workspace_id: client.workspace_id.to_string(),
            family_id: ids::new_id("rtf"),
            token_hash,
            client_key_id: Some(client.id.to_string()),
            member_id: None,
            name: None,
            scope: scopes.map(rules::scope_string),
            masked,
            created_at: now,
            expires_at: Some(now + lifetime),
            used_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        // Issuance is audited per key a minute (token.issued, by the usage recorder).
        let mut change = Change::unaudited("counted in the minute's token.issued entry")
            .with(Write::OAuth(OAuthWrite::InsertRefreshToken(record)));
        // A client keeps its newest families; older ones end (checked
        // every few grants: the check reads the client's newest families).
        let counter = self.started.get_or_insert_with(&client.id, || Ok::<_, ()>(Arc::default())).unwrap_or_default();
        if (counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1).is_multiple_of(TRIM_EVERY) {
            change.push(Write::OAuth(OAuthWrite::TrimClientFamilies {
                client_key_id: client.id.to_string(),
                keep: self.config.max_refresh_families,
                at: now,
            }));
        }
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(token.expose().to_owned())
    }

    async fn find_refresh(&self, token: &str) -> Result<Option<RefreshToken>, Error> {
        if !rules::looks_like_refresh_token(token) {
            return Ok(None);
        }
        self.store.refresh_token_by_hash(&self.refresh_hash(token)).await.map_err(store_error)
    }

    /// Revokes every token of a reused token's grant, with its entry.
    async fn revoke_family(&self, token: &RefreshToken) -> Result<(), Error> {
        let now = self.clock.now();
        let mut change =
            Change::of(Write::OAuth(OAuthWrite::RevokeRefreshFamily { family_id: token.family_id.clone(), at: now }));
        change.push(self.system_entry(token, "token.reuse_detected", Outcome::Failure));
        self.audit.work().commit(change).await.map_err(store_error)
    }

    fn system_entry(&self, token: &RefreshToken, action: &str, outcome: Outcome) -> Write {
        self.audit.event(keyward_core::audit::Event {
            workspace_id: token.workspace_id.clone(),
            at: self.clock.now(),
            actor: keyward_core::audit::Actor::system(),
            action: action.to_owned(),
            target: Target::new("refresh_token", token.id.clone(), token.name.as_deref()),
            ip: None,
            user_agent: None,
            outcome,
            changes: serde_json::json!({
                "family": token.family_id,
                "client": token.client_key_id,
                "member": token.member_id,
            })
            .to_string(),
        })
    }

    async fn refresh(
        &self,
        request: TokenRequest,
        auth: ClientAuth,
        issuer: &str,
        endpoint: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let presented =
            request.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        // A client authenticates first, so that a wrong secret is
        // `invalid_client` whatever the token.
        let client = match &auth {
            ClientAuth::None => None,
            auth => Some(self.authenticate_client(auth, endpoint).await?),
        };
        let unknown = || OAuthError::invalid_grant("The refresh token is not valid");
        let stored = self.find_refresh(presented).await?.ok_or_else(unknown)?;
        let now = self.clock.now();
        match (&stored.client_key_id, &client) {
            (Some(owner), Some(c)) if **owner == *c.id => {}
            (Some(_), None) => return Err(OAuthError::invalid_client()),
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_grant("The refresh token was issued to another client"));
            }
            (None, Some(_)) => return Err(OAuthError::invalid_grant("The refresh token was issued to another client")),
            (None, None) => {}
        }
        if let Err(refusal) = stored.check(now) {
            if refusal == RefreshRefusal::Reused {
                self.revoke_family(&stored).await?;
            }
            return Err(refresh_refusal(refusal));
        }
        match client {
            Some(client) => self.rotate(stored, &client, request.scope.as_deref(), issuer).await,
            None => self.member_access(stored, request.scope.as_deref(), issuer).await,
        }
    }

    /// A client's refresh: the token is used up and a successor issued (in
    /// one change, so two concurrent uses cannot both succeed).
    async fn rotate(
        &self,
        stored: RefreshToken,
        client: &Arc<CachedKey>,
        scope: Option<&str>,
        issuer: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let granted = stored.scope.as_deref().map(|s| s.split(' ').filter_map(Scope::parse).collect::<Vec<_>>());
        let mut scopes = rules::requested_scope(scope, &client.record).map_err(|r| OAuthError::invalid_scope(r.0))?;
        if let (Some(asked), Some(granted)) = (&scopes, &granted)
            && let Some(extra) = asked.iter().find(|s| !granted.contains(s))
        {
            return Err(OAuthError::invalid_scope(format!("scope {extra} was not granted to this refresh token")));
        }
        if scopes.is_none() {
            scopes = granted;
        }
        self.may_issue(client, scopes.as_deref()).await?;
        let now = self.clock.now();
        let ws = self.verifier.workspace(&stored.workspace_id).await?;
        let (id, token_hash, masked, token) = self.new_refresh(&ws.token_prefix);
        let next = stored.successor(id, token_hash, masked, now);
        let change = Change::unaudited("counted in the minute's token.refreshed entry")
            .with(Write::OAuth(OAuthWrite::UseRefreshToken { id: stored.id.clone(), at: now }))
            .with(Write::OAuth(OAuthWrite::InsertRefreshToken(next)));
        match self.audit.work().commit(change).await {
            Ok(()) => {}
            // Used by a concurrent request meanwhile: a reuse.
            Err(StoreError::NotFound) => {
                self.revoke_family(&stored).await?;
                return Err(refresh_refusal(RefreshRefusal::Reused));
            }
            Err(e) => return Err(store_error(e).into()),
        }
        let (access, expires_in, scope) = self.access_token_for_key(client, scopes.as_deref(), issuer, None).await?;
        self.verifier.usage().token_issued(client, "token.refreshed");
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in,
            scope,
            refresh_token: Some(token.expose().to_owned()),
            issued_token_type: None,
        })
    }

    /// A member's refresh token for the REST API: an access token acting
    /// as the member (the token itself stays, until revoked).
    async fn member_access(
        &self,
        stored: RefreshToken,
        scope: Option<&str>,
        issuer: &str,
    ) -> Result<TokenResponse, OAuthError> {
        if scope.is_some_and(|s| !s.trim().is_empty()) {
            return Err(OAuthError::invalid_scope("A member's token acts with the member's roles; send no scope"));
        }
        let member_id =
            stored.member_id.clone().ok_or_else(|| OAuthError::invalid_grant("The refresh token is not valid"))?;
        if self.store.membership(&stored.workspace_id, &member_id).await.map_err(store_error)?.is_none() {
            return Err(OAuthError::invalid_grant("The member no longer belongs to the workspace"));
        }
        let now = self.clock.now();
        let mut change = Change::of(Write::OAuth(OAuthWrite::TouchRefreshToken { id: stored.id.clone(), at: now }));
        change.push(self.system_entry(&stored, "token.refreshed", Outcome::Success));
        self.audit.work().commit(change).await.map_err(store_error)?;
        let mut lifetime = self.config.access_token_lifetime;
        if let Some(expires) = stored.expires_at {
            lifetime = lifetime.min(expires - now);
        }
        let claims = AccessClaims {
            iss: issuer.to_owned(),
            sub: member_id,
            aud: issuer.to_owned(),
            exp: (now + lifetime).timestamp(),
            iat: now.timestamp(),
            jti: ids::new_id("at"),
            scope: String::new(),
            client_id: stored.id.clone(),
            workspace: stored.workspace_id.clone(),
            scope_limited: false,
        };
        let access = self.signer.sign(&claims).await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: lifetime.num_seconds(),
            scope: String::new(),
            refresh_token: None,
            issued_token_type: None,
        })
    }

    /// RFC 8693: an API key (`subject_token`) for a short-lived access token
    /// carrying its permissions (or fewer, with `scope`).
    async fn exchange(
        &self,
        request: TokenRequest,
        auth: ClientAuth,
        issuer: &str,
        endpoint: &str,
    ) -> Result<TokenResponse, OAuthError> {
        if !matches!(auth, ClientAuth::None) {
            self.authenticate_client(&auth, endpoint).await?;
        }
        let subject =
            request.subject_token.as_deref().ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
        match request.subject_token_type.as_deref() {
            Some(TOKEN_TYPE_API_KEY) => {}
            Some(_) => {
                return Err(OAuthError::invalid_request(format!("subject_token_type must be {TOKEN_TYPE_API_KEY}")));
            }
            None => return Err(OAuthError::invalid_request("subject_token_type is required")),
        }
        match request.requested_token_type.as_deref() {
            None | Some(TOKEN_TYPE_ACCESS_TOKEN) | Some(TOKEN_TYPE_JWT) => {}
            Some(_) => {
                return Err(OAuthError::invalid_request(format!(
                    "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"
                )));
            }
        }
        // An access token is not an API key: exchanging one would trade its
        // narrowed scope (and its end) for the key's.
        if rules::looks_like_jwt(subject) {
            return Err(OAuthError::invalid_request("subject_token is not a valid API key"));
        }
        let v = self.verifier.authenticate_caller(subject, None).await?;
        let key = match (v.decision.code, v.key) {
            (VerifyCode::Valid, Some(k)) if k.key_type == KeyType::Secret => k,
            (VerifyCode::Valid, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "Only secret API keys can be exchanged (clients use client_credentials)",
                ));
            }
            _ => return Err(OAuthError::invalid_request("subject_token is not a valid API key")),
        };
        let scopes = rules::requested_scope(request.scope.as_deref(), &key.record)
            .map_err(|r| OAuthError::invalid_scope(r.0))?;
        self.may_issue(&key, scopes.as_deref()).await?;
        let (access, expires_in, scope) =
            self.access_token_for_key(&key, scopes.as_deref(), issuer, Some(self.config.exchange_lifetime)).await?;
        self.verifier.usage().token_issued(&key, "token.exchanged");
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in,
            scope,
            refresh_token: None,
            issued_token_type: Some(TOKEN_TYPE_ACCESS_TOKEN),
        })
    }

    /// RFC 7662: what `token` is, to an authenticated client of the same
    /// workspace (anything else is `{"active": false}`).
    pub async fn introspect(&self, auth: ClientAuth, token: &str, endpoint: &str) -> Result<Introspection, OAuthError> {
        let client = self.authenticate_client(&auth, endpoint).await?;
        let now = self.clock.now();
        if rules::looks_like_jwt(token) {
            let Some(claims) = self.verifier.access_token(token).await? else { return Ok(Introspection::default()) };
            if *claims.workspace != *client.workspace_id {
                return Ok(Introspection::default());
            }
            return Ok(Introspection {
                active: true,
                scope: Some(claims.scope),
                client_id: Some(claims.client_id),
                token_type: Some("access_token"),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                sub: Some(claims.sub),
                aud: Some(claims.aud),
                iss: Some(claims.iss),
                jti: Some(claims.jti),
                workspace: Some(claims.workspace),
            });
        }
        let Some(stored) = self.find_refresh(token).await? else { return Ok(Introspection::default()) };
        if *stored.workspace_id != *client.workspace_id || stored.check(now).is_err() {
            return Ok(Introspection::default());
        }
        let owner = match &stored.client_key_id {
            Some(id) => match self.store.find_key(id).await.map_err(store_error)? {
                Some(k) if k.state == KeyState::Active => k.client_id,
                _ => return Ok(Introspection::default()),
            },
            None => Some(stored.id.clone()),
        };
        Ok(Introspection {
            active: true,
            scope: stored.scope.clone(),
            client_id: owner,
            token_type: Some("refresh_token"),
            exp: stored.expires_at.map(|e| e.timestamp()),
            iat: Some(stored.created_at.timestamp()),
            sub: stored.member_id.clone().or(stored.client_key_id.clone()),
            workspace: Some(stored.workspace_id),
            ..Introspection::default()
        })
    }

    /// RFC 7009: revokes a refresh token (its whole grant) or an access
    /// token of the authenticated client. Unknown tokens, and those of other
    /// clients, change nothing (and the answer is the same).
    pub async fn revoke(&self, auth: ClientAuth, token: &str, endpoint: &str) -> Result<(), OAuthError> {
        // A key revokes the tokens it exchanged itself for.
        let client = self.authenticate(&auth, endpoint, true).await?;
        let now = self.clock.now();
        if rules::looks_like_jwt(token) {
            let Some(claims) = self.verifier.access_token(token).await? else { return Ok(()) };
            if claims.sub != *client.id {
                return Ok(());
            }
            let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
            let mut change =
                Change::of(Write::OAuth(OAuthWrite::RevokeAccessToken { jti: claims.jti.clone(), expires_at }));
            change.push(self.client_entry(&client, Target::new("access_token", claims.jti.clone(), None)));
            self.audit.work().commit(change).await.map_err(store_error)?;
            return Ok(());
        }
        let Some(stored) = self.find_refresh(token).await? else { return Ok(()) };
        if stored.client_key_id.as_deref() != Some(&*client.id) || stored.revoked_at.is_some() {
            return Ok(());
        }
        let mut change =
            Change::of(Write::OAuth(OAuthWrite::RevokeRefreshFamily { family_id: stored.family_id.clone(), at: now }));
        change.push(self.client_entry(&client, Target::new("refresh_token", stored.id.clone(), None)));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(())
    }

    fn client_entry(&self, client: &Arc<CachedKey>, target: Target) -> Write {
        let who = Principal::from(crate::principal::Caller::ApiKey(client.clone(), None));
        self.audit.write(&who, "token.revoked", target, serde_json::json!({}))
    }

    /// A member's refresh token for the REST API (`POST /v1/tokens`).
    pub async fn create_member_token(
        &self,
        who: &Principal,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<NewMemberToken, Error> {
        who.require(TOKENS_MANAGE)?;
        let member = who.member().ok_or_else(|| {
            Error::forbidden(Code::MemberRequired, "Only a signed-in member can create a token for the REST API")
        })?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > rules::MAX_TOKEN_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(Error::invalid(Code::InvalidName, "name must be 1–100 characters, without control characters"));
        }
        let days = expires_in_days.map(i64::from);
        if days.is_some_and(|d| !(1..=3650).contains(&d)) {
            return Err(Error::invalid(Code::InvalidExpiry, "expiresInDays must be between 1 and 3650"));
        }
        let ws = self.verifier.workspace(who.workspace_id()).await?;
        let now = self.clock.now();
        let (id, token_hash, masked, token) = self.new_refresh(&ws.token_prefix);
        let record = RefreshToken {
            id,
            workspace_id: ws.id.clone(),
            family_id: ids::new_id("rtf"),
            token_hash,
            client_key_id: None,
            member_id: Some(member.member_id.clone()),
            name: Some(name.to_owned()),
            scope: None,
            masked,
            created_at: now,
            expires_at: days.map(|d| now + Duration::days(d)),
            used_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let mut change = Change::of(Write::OAuth(OAuthWrite::InsertRefreshToken(record.clone())));
        let target = Target::new("refresh_token", record.id.clone(), Some(name));
        change.push(self.audit.write(
            who,
            "token.created",
            target,
            serde_json::json!({"expiresAt": record.expires_at}),
        ));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(NewMemberToken { record, token })
    }

    pub async fn member_tokens(&self, who: &Principal) -> Result<Vec<RefreshToken>, Error> {
        who.require(TOKENS_MANAGE)?;
        self.store.member_tokens(who.workspace_id()).await.map_err(store_error)
    }

    pub async fn revoke_member_token(&self, who: &Principal, id: &str) -> Result<RefreshToken, Error> {
        who.require(TOKENS_MANAGE)?;
        let not_found = || Error::new(ErrorKind::NotFound, Code::TokenNotFound, "Token not found");
        let stored = self.store.get_refresh_token(who.workspace_id(), id).await.map_err(store_error)?;
        let stored = stored.filter(|t| t.member_id.is_some() && t.revoked_at.is_none()).ok_or_else(not_found)?;
        let now = self.clock.now();
        let mut change = Change::of(Write::OAuth(OAuthWrite::RevokeRefreshToken {
            workspace_id: stored.workspace_id.clone(),
            id: stored.id.clone(),
            at: now,
        }));
        let target = Target::new("refresh_token", stored.id.clone(), stored.name.as_deref());
        change.push(self.audit.write(who, "token.revoked", target, serde_json::json!({})));
        match self.audit.work().commit(change).await {
            Err(StoreError::NotFound) => return Err(not_found()),
            other => other.map_err(store_error)?,
        }
        Ok(RefreshToken { revoked_at: Some(now), ..stored })
    }

    /// The caller an access token stands for, on the REST API: its key
    /// (with the token's scope), or the member whose refresh token it came
    /// from (while that token and the membership last).
    pub async fn principal(&self, token: &str) -> Result<Principal, Error> {
        let claims = self.verifier.access_token(token).await?.ok_or_else(Error::invalid_api_key)?;
        if claims.is_member() {
            let stored =
                self.store.get_refresh_token(&claims.workspace, &claims.client_id).await.map_err(store_error)?;
            let live = stored.filter(|t| t.revoked_at.is_none() && t.member_id.as_deref() == Some(claims.sub.as_str()));
            let Some(stored) = live else { return Err(Error::invalid_api_key()) };
            let expires = DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(|| self.clock.now());
            return self.members.from_access_token(&claims.sub, &stored.workspace_id, &stored.id, expires).await;
        }
        let key = self.verifier.key_of_claims(&claims).await?.ok_or_else(Error::invalid_api_key)?;
        Principal::for_key(&self.verifier, key, claims.scopes()).await
    }
}
