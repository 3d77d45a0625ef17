//! The verification hot path: token → cached record → decision.
//!
//! 1. Parse the token (no IO). A string that is neither a keyward token nor
//!    starts with a known import prefix is `MALFORMED` at once.
//! 2. Find the record: cache hit (no IO), known-absent (no IO), or one store
//!    read whose result is cached.
//! 3. Decide ([`keyward_verifier::decide`]).
//! 4. A valid answer spends the rate limits it is subject to (the key's and
//!    its identity's; [`crate::ratelimit`]), all or none; then, for a key
//!    with credits, its credits in the store (the one write here: credits
//!    must be exact across nodes). Refused for credits, it gives the limits
//!    back: a refused request spends nothing.
//! 5. Count the use in the key's in-memory cell ([`crate::usage`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use keyward_core::Code;
use keyward_core::Error;
use keyward_core::audit::Target;
use keyward_core::hash::{HashScheme, SecretHasher, sha256};
use keyward_core::identity::Identity;
use keyward_core::key::{ApiKey, KeyState};
use keyward_core::ratelimit::{LimitRequest, LimitState};
use keyward_core::token::{self, ParsedToken};
use keyward_core::verify::{self, Decision, Request, VerifyCode};
use keyward_core::workspace::Workspace;
use keyward_store::{CreditSpend, Store};
use keyward_verifier::KeyRecord;
use keyward_verifier::decide;

use crate::telemetry::ShardedCounters;

use crate::clock::Clock;
use crate::ratelimit::{Check, Limiter};
use crate::throttle::{IpThrottle, Seen};
use compact_str::CompactString;
use keyward_verifier::cache::{CacheKey, CachedKey, KeyCache, LoadTicket, Lookup};

/// The result of a verification: the decision and, when the key was found
/// in the caller's workspace, its record.
/// The permission asking for a verification needs.
pub const VERIFY: &str = "keys:verify";

/// [`VERIFY`], parsed once.
pub(crate) static VERIFY_PERMISSION: std::sync::LazyLock<keyward_core::scope::Permission> =
    std::sync::LazyLock::new(|| keyward_core::scope::Permission::parse_required(VERIFY).expect("a valid permission"));

#[derive(Debug, Clone)]
pub struct Verification {
    pub decision: Decision,
    pub key: Option<Arc<CachedKey>>,
    /// The key's workspace, when the request needed it (route scopes).
    pub workspace: Option<Arc<Workspace>>,
    /// Credits left after this verification, for keys with credits.
    pub credits: Option<i64>,
    /// The rate limits this verification was checked against, by name.
    pub ratelimits: Vec<(String, LimitState)>,
    /// The key's identity, when it has one (verify answers).
    pub identity: Option<Arc<Identity>>,
    /// The workspace's own roles, when the key holds roles.
    pub roles: Option<Arc<Vec<keyward_core::member::Role>>>,
    /// The scope an access token was issued for, when it was narrowed: it,
    /// not the key's, is what the presenter holds.
    pub token_scopes: Option<Vec<keyward_core::scope::Scope>>,
}

impl Verification {
    /// What the presenter may do, as reported (verify's `permissions`,
    /// forward-auth's `X-Keyward-Scopes`): a narrowed token's scope, else
    /// the key's scopes.
    pub fn permission_scopes(&self) -> &[keyward_core::scope::Scope] {
        match (&self.token_scopes, self.key.as_deref()) {
            (Some(scopes), _) => scopes,
            (None, Some(key)) => &key.scopes,
            (None, None) => &[],
        }
    }
}

/// Why a key is being checked: to answer a verify/authorize request, or to
/// authenticate the caller of the API. Counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Answer,
    Caller,
}

/// Metric handles resolved once, so the hot path does no registry lookups;
/// the counters counted per thread (see [`ShardedCounters`]).
struct VerifyMetrics {
    /// By index: each [`VerifyCode`], then [`CALLER_ACCEPTED`],
    /// [`CALLER_REFUSED`], [`CACHE_HIT`] and [`CACHE_MISS`].
    counts: ShardedCounters<COUNTERS>,
}

const CODES: usize = VerifyCode::ALL.len();
const CALLER_ACCEPTED: usize = CODES;
const CALLER_REFUSED: usize = CODES + 1;
const CACHE_HIT: usize = CODES + 2;
const CACHE_MISS: usize = CODES + 3;
const COUNTERS: usize = CODES + 4;

impl VerifyMetrics {
    fn new() -> Self {
        let counter = |i: usize| match i {
            i if i < CODES => metrics::counter!("keyward_verifications_total", "code" => VerifyCode::ALL[i].as_str()),
            CALLER_ACCEPTED => metrics::counter!("keyward_caller_authentications_total", "result" => "accepted"),
            CALLER_REFUSED => metrics::counter!("keyward_caller_authentications_total", "result" => "refused"),
            CACHE_HIT => metrics::counter!("keyward_cache_hits_total"),
            _ => metrics::counter!("keyward_cache_misses_total"),
        };
        VerifyMetrics { counts: ShardedCounters::new(std::array::from_fn(counter)) }
    }
}

/// Workspace records held in memory by the verifier.
pub const WORKSPACE_CACHE_CAPACITY: usize = 10_000;

pub struct Verifier {
    audit: Arc<crate::audit::AuditLog>,
    store: Arc<dyn Store>,
    hasher: SecretHasher,
    cache: Arc<KeyCache>,
    usage: Arc<crate::usage::UsageRecorder>,
    /// Workspaces whose route scopes verification has needed, by id
    /// (bounded: [`WORKSPACE_CACHE_CAPACITY`]).
    workspaces: quick_cache::sync::Cache<String, Arc<Workspace>>,
    /// Each workspace's own roles, read when a key holding roles verifies.
    roles: quick_cache::sync::Cache<String, Arc<Vec<keyward_core::member::Role>>>,
    /// Identities whose limits verification has needed, by id (bounded:
    /// [`WORKSPACE_CACHE_CAPACITY`]).
    identities: quick_cache::sync::Cache<String, Arc<Identity>>,
    limiter: Limiter,
    /// Imported keys whose hash upgrade is in flight.
    upgrading: Arc<Mutex<HashSet<CompactString>>>,
    /// Prefixes of imported foreign-format keys (`zta_live_`), longest first.
    import_prefixes: RwLock<Arc<Vec<String>>>,
    metrics: VerifyMetrics,
    clock: Arc<dyn Clock>,
    throttle: IpThrottle,
    /// The keys access tokens are signed with (public halves verify).
    signer: Arc<crate::oauth::Signer>,
    /// Opens recoverable keys' secrets, which check signed requests.
    keyring: Option<Arc<keyward_core::sealed::Keyring>>,
    /// Revoked access tokens (jti → expiry, seconds), until they expire.
    revoked: RwLock<std::collections::HashMap<String, i64>>,
    /// Access tokens whose signature checked, by the SHA-256 of the whole
    /// token: a client presents one token many times, and the signature
    /// check costs more than the rest of a verification. Lifetime,
    /// revocation and the key are still checked on every use.
    checked_tokens: quick_cache::sync::Cache<[u8; 32], Arc<crate::oauth::AccessClaims>>,
    /// Embedded verifiers' stream of the changes this node learns of.
    replication: Arc<crate::replication::Replication>,
}

/// Access tokens whose checked signature is remembered (bounded: memory
/// follows settings, not traffic).
const CHECKED_TOKEN_CAPACITY: usize = 10_000;

/// How the holder of a key proved itself.
enum Proof<'a> {
    /// The key's own token.
    Secret { token: &'a str, parsed: Option<ParsedToken<'a>> },
    /// A token keyward signed, or one signed with the key's secret; an
    /// access token's `scope` may narrow the key's permissions.
    Token { scopes: Option<Vec<keyward_core::scope::Scope>> },
}

enum Found {
    Key(Arc<CachedKey>),
    Missing,
}

impl Verifier {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        hasher: SecretHasher,
        cache: KeyCache,
        usage: Arc<crate::usage::UsageRecorder>,
        clock: Arc<dyn Clock>,
        ip_failure_limit: u32,
        limiter: Limiter,
        audit: Arc<crate::audit::AuditLog>,
        signer: Arc<crate::oauth::Signer>,
        keyring: Option<Arc<keyward_core::sealed::Keyring>>,
    ) -> Self {
        Verifier {
            replication: Arc::new(crate::replication::Replication::new(store.clone(), hasher.clone(), clock.as_ref())),
            signer,
            keyring,
            revoked: RwLock::default(),
            checked_tokens: quick_cache::sync::Cache::new(CHECKED_TOKEN_CAPACITY),
            audit,
            limiter,
            identities: quick_cache::sync::Cache::new(WORKSPACE_CACHE_CAPACITY),
            throttle: IpThrottle::new(ip_failure_limit, clock.clone()),
            clock,
            store,
            hasher,
            cache: Arc::new(cache),
            usage,
            upgrading: Arc::default(),
            workspaces: quick_cache::sync::Cache::new(WORKSPACE_CACHE_CAPACITY),
            roles: quick_cache::sync::Cache::new(WORKSPACE_CACHE_CAPACITY),
            import_prefixes: RwLock::new(Arc::new(Vec::new())),
            metrics: VerifyMetrics::new(),
        }
    }

    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    pub fn replication(&self) -> &Arc<crate::replication::Replication> {
        &self.replication
    }

    /// Counts `n` verifications of key `key_id` an embedded verifier made
    /// (with `code`, the latest at `at_ms`), as if this node had made them.
    /// False when no such key is in `workspace` (`None`: any).
    pub async fn count_reported(
        &self,
        workspace: Option<&str>,
        key_id: &str,
        code: VerifyCode,
        n: u32,
        at_ms: i64,
    ) -> Result<bool, Error> {
        let Some(token_id) = token::token_id_of_key_id(key_id) else {
            return Ok(false);
        };
        let Found::Key(key) = self.find_by_id(token_id, self.clock.now_ms()).await? else {
            return Ok(false);
        };
        if workspace.is_some_and(|w| w != &*key.workspace_id) {
            return Ok(false);
        }
        let authenticated = !keyward_verifier::usage::is_auth_failure(code) && code != VerifyCode::Malformed;
        self.cache.count_many(&key, code, authenticated, at_ms, n);
        Ok(true)
    }

    /// Hands the counts kept per thread to the metrics recorder (before it
    /// renders).
    pub fn flush_metrics(&self) {
        self.metrics.counts.flush();
    }

    /// Failed authentication per client address.
    pub fn throttle(&self) -> &IpThrottle {
        &self.throttle
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Where this node counts verifications and tokens.
    pub fn usage(&self) -> &crate::usage::UsageRecorder {
        &self.usage
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// An identity, from memory after the first read (`None`: deleted).
    async fn identity(&self, id: &str) -> Result<Option<Arc<Identity>>, Error> {
        if let Some(i) = self.identities.get(id) {
            return Ok(Some(i));
        }
        let found = self.store.find_identity(id).await.map_err(crate::keys::store_error)?.map(Arc::new);
        if let Some(i) = &found {
            self.identities.insert(id.to_owned(), i.clone());
        }
        Ok(found)
    }

    /// The workspace a key belongs to, from memory after the first read.
    pub async fn workspace(&self, id: &str) -> Result<Arc<Workspace>, Error> {
        if let Some(ws) = self.workspaces.get(id) {
            return Ok(ws);
        }
        let ws = self.store.get_workspace(id).await.map_err(crate::keys::store_error)?.ok_or_else(|| {
            Error::new(keyward_core::ErrorKind::NotFound, keyward_core::Code::WorkspaceNotFound, "Workspace not found")
        })?;
        let ws = Arc::new(ws);
        self.workspaces.insert(id.to_owned(), ws.clone());
        Ok(ws)
    }

    /// The roles `key` verifies against: the workspace's own; a
    /// publishable key's grant only the workspace's public permissions
    /// (whatever a role came to hold after it was given).
    pub async fn roles_for(&self, key: &KeyRecord) -> Result<Arc<Vec<keyward_core::member::Role>>, Error> {
        let roles = self.roles(&key.workspace_id).await?;
        if key.key_type != keyward_core::key::KeyType::Publishable {
            return Ok(roles);
        }
        let ws = self.workspace(&key.workspace_id).await?;
        Ok(Arc::new(keyward_core::member::public_roles(&roles, &ws.public_permissions)))
    }

    /// A workspace's own roles, from memory after the first read.
    pub async fn roles(&self, workspace_id: &str) -> Result<Arc<Vec<keyward_core::member::Role>>, Error> {
        if let Some(r) = self.roles.get(workspace_id) {
            return Ok(r);
        }
        let roles = Arc::new(self.store.list_roles(workspace_id).await.map_err(crate::keys::store_error)?);
        self.roles.insert(workspace_id.to_owned(), roles.clone());
        Ok(roles)
    }

    /// Applies what another node changed (pushed by the store).
    pub async fn invalidated(&self, what: keyward_store::Invalidation) {
        use keyward_store::Invalidation;
        self.replication.notice(&what);
        match what {
            Invalidation::Key(id) | Invalidation::KeyDeleted { id, .. } => self.cache.invalidate(&id),
            Invalidation::Workspace(id) => {
                self.workspaces.remove(&id);
                self.roles.remove(&id);
            }
            Invalidation::Identity(id) => {
                self.identities.remove(&id);
            }
            Invalidation::ImportPrefixes => self.refresh_prefixes_logged().await,
            Invalidation::AccessTokenRevoked(jti) => {
                // Its expiry is not in the notice: held as long as any token lives.
                let until = self.clock.now() + chrono::Duration::days(1);
                self.access_token_revoked(&jti, until);
            }
            Invalidation::SigningKeys => self.reload_signing_keys().await,
            Invalidation::Resync => {
                self.cache.distrust_all(self.clock.now_ms());
                self.workspaces.clear();
                self.roles.clear();
                self.identities.clear();
                self.refresh_prefixes_logged().await;
                self.reload_signing_keys().await;
                if let Err(e) = self.load_revoked_tokens().await {
                    tracing::warn!(error = %e.message, "reloading revoked tokens failed");
                }
            }
        }
    }

    async fn reload_signing_keys(&self) {
        if let Err(e) = self.signer.load().await {
            tracing::warn!(error = %e.message, "reloading signing keys failed");
        }
    }

    /// Reads the revoked access tokens that have not expired (at start and
    /// after lost notices).
    pub async fn load_revoked_tokens(&self) -> Result<(), Error> {
        let now = self.clock.now();
        let rows = self.store.revoked_access_tokens(now).await.map_err(crate::keys::store_error)?;
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        for (jti, until) in rows {
            revoked.insert(jti, until.timestamp());
        }
        Ok(())
    }

    /// Refuses the access token `jti` on this node from now on.
    pub fn access_token_revoked(&self, jti: &str, until: chrono::DateTime<chrono::Utc>) {
        let now = self.clock.now().timestamp();
        let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(jti.to_owned(), until.timestamp());
    }

    fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.read().unwrap_or_else(|p| p.into_inner()).contains_key(jti)
    }

    /// The cached record of a key (read once, then from memory).
    pub async fn cached(&self, key: &ApiKey) -> Result<Arc<CachedKey>, Error> {
        let now_ms = self.clock.now().timestamp_millis();
        match self.find_key_by_id(&key.id, now_ms).await? {
            Found::Key(k) => Ok(k),
            Found::Missing => Ok(self.cache.entry(key, now_ms)),
        }
    }

    /// A key by its id, native or imported: access tokens and signed
    /// requests name their key by id, not by a token.
    async fn find_key_by_id(&self, key_id: &str, now_ms: i64) -> Result<Found, Error> {
        if let Some(token_id) = token::token_id_of_key_id(key_id)
            && let Found::Key(k) = self.find_by_id(token_id, now_ms).await?
        {
            return Ok(Found::Key(k));
        }
        // An imported key is cached under a hash of its token; by id it
        // gets an entry of its own (dropped by id like the other).
        let ck = CacheKey::Foreign(sha256(&format!("keyward imported key id\0{key_id}")));
        let load = async { Ok(self.store.find_key(key_id).await?.filter(|k| k.lookup_prefix.is_some())) };
        self.find(ck, now_ms, load).await
    }

    async fn find_by_id(&self, token_id: &str, now_ms: i64) -> Result<Found, Error> {
        // The id is made only on a miss.
        let load = async { find_native_key(self.store.as_ref(), &token::key_id_from_token_id(token_id)).await };
        self.find(CacheKey::native(token_id), now_ms, load).await
    }

    /// The claims of a valid access token: signed by a published key, in
    /// its lifetime, not revoked, its subject still able to use it. `None`
    /// for anything else (introspection answers `active: false`).
    pub async fn access_token(&self, token: &str) -> Result<Option<crate::oauth::AccessClaims>, Error> {
        let now = self.clock.now();
        let Ok(crate::oauth::check::Presented::AccessToken { kid, alg }) = crate::oauth::check::classify(token) else {
            return Ok(None);
        };
        let Ok(claims) = self.access_claims(token, &kid, alg, now).await else { return Ok(None) };
        let claims = claims.as_ref().clone();
        if self.is_revoked(&claims.jti) {
            return Ok(None);
        }
        if claims.is_member() {
            return Ok(Some(claims));
        }
        Ok(self.key_of_claims(&claims).await?.map(|_| claims))
    }

    /// An access token's claims once its signature (remembered) and
    /// lifetime (checked at every use) are good.
    async fn access_claims(
        &self,
        token: &str,
        kid: &str,
        alg: jsonwebtoken::Algorithm,
        now: DateTime<Utc>,
    ) -> Result<Arc<crate::oauth::AccessClaims>, Decision> {
        use crate::oauth::check;
        let digest = sha256(token);
        if let Some(claims) = self.checked_tokens.get(&digest) {
            check::in_lifetime(&claims, now)?;
            return Ok(claims);
        }
        let Some((expected, key)) = self.signer.verifying_key(kid).await else {
            return Err(check::invalid("The token names a signing key (kid) that keyward does not publish"));
        };
        let claims = Arc::new(check::decode_access(token, alg, expected, &key, now)?);
        self.checked_tokens.insert(digest, claims.clone());
        Ok(claims)
    }

    /// The key an access token stands for, while it can be used.
    pub async fn key_of_claims(&self, claims: &crate::oauth::AccessClaims) -> Result<Option<Arc<CachedKey>>, Error> {
        let now = self.clock.now();
        match self.find_key_by_id(&claims.sub, now.timestamp_millis()).await? {
            Found::Key(k)
                if crate::oauth::check::usable(&k, now) && crate::oauth::check::still_issued_to(&k, claims, now) =>
            {
                Ok(Some(k))
            }
            _ => Ok(None),
        }
    }

    async fn refresh_prefixes_logged(&self) {
        if let Err(e) = self.refresh_import_prefixes().await {
            tracing::warn!(error = %e, "reloading import prefixes failed");
        }
    }

    /// Reloads the import prefixes from the store (at start and after imports).
    pub async fn refresh_import_prefixes(&self) -> Result<(), Error> {
        let mut prefixes = self.store.list_lookup_prefixes().await.map_err(crate::keys::store_error)?;
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        *self.import_prefixes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(prefixes);
        Ok(())
    }

    fn lock<'a, T>(&self, m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_import_prefix(&self, token: &str) -> bool {
        let prefixes = self.import_prefixes.read().unwrap_or_else(|p| p.into_inner()).clone();
        prefixes.iter().any(|p| token.starts_with(p.as_str()))
    }

    /// Verifies `token` for `request`, as an answer to a verify or
    /// authorize request (counted in `keyward_verifications_total`). With
    /// `workspace`, keys of any other workspace are `NOT_FOUND`. Errors only
    /// when storage fails on a miss.
    pub async fn verify(
        &self,
        token: &str,
        request: &Request<'_>,
        workspace: Option<&str>,
    ) -> Result<Verification, Error> {
        self.check(token, request, workspace, Purpose::Answer).await
    }

    /// A verification asked by `who` (which needs `keys:verify`), of keys
    /// of its own workspace only: the permission is checked here, whichever
    /// interface asks.
    pub async fn verify_as(
        &self,
        who: &crate::principal::Principal,
        token: &str,
        request: &Request<'_>,
    ) -> Result<Verification, Error> {
        who.require_parsed(&VERIFY_PERMISSION)?;
        self.verify(token, request, Some(who.workspace_id())).await
    }

    /// A verification answering for a client at `client` (when known):
    /// refused while that address has failed too often in `seen`'s view,
    /// and a failure to authenticate counts against it there. `who` (a
    /// gateway or a caller of the API) needs `keys:verify` and verifies
    /// keys of its own workspace; without it (the trusted forward-auth
    /// listener), keys of every workspace. The one path of
    /// `/v1/keys/verify` and forward-auth.
    pub async fn verify_client(
        &self,
        who: Option<&crate::principal::Principal>,
        seen: Seen<'_>,
        client: Option<std::net::IpAddr>,
        token: &str,
        request: &Request<'_>,
    ) -> Result<Verification, Error> {
        if let Some(wait) = client.and_then(|ip| self.throttle.retry_after(seen, ip)) {
            return Err(too_many_failures(wait));
        }
        let v = match who {
            Some(who) => self.verify_as(who, token, request).await?,
            None => self.verify(token, request, None).await?,
        };
        if let Some(ip) = client
            && is_authentication_failure(v.decision.code)
        {
            self.throttle.failed(seen, ip);
        }
        Ok(v)
    }

    /// Checks the key a caller of the API authenticates with (counted apart,
    /// in `keyward_caller_authentications_total`).
    /// `ip`: the caller's address, when known (a key limited to addresses
    /// is refused without one).
    pub async fn authenticate_caller(&self, token: &str, ip: Option<std::net::IpAddr>) -> Result<Verification, Error> {
        self.check(token, &Request { ip, ..Request::default() }, None, Purpose::Caller).await
    }

    async fn check(
        &self,
        token: &str,
        request: &Request<'_>,
        workspace: Option<&str>,
        purpose: Purpose,
    ) -> Result<Verification, Error> {
        // One clock read serves the decision, the usage count and the
        // latency metric; it becomes a chrono time only if the key expires.
        let (started, now_us) = self.clock.sample();
        let parsed = token::parse(token).ok();
        let found = match &parsed {
            Some(p) => self.find_native(p, now_us / 1000).await?,
            None if token.len() <= token::MAX_TOKEN_LEN && self.has_import_prefix(token) => {
                Box::pin(self.find_foreign(token, now_us / 1000)).await?
            }
            None if keyward_core::oauth::looks_like_jwt(token) => {
                // Boxed, as the other rare paths: each would make every
                // verification's future larger.
                return Box::pin(self.check_jwt(token, request, workspace, purpose, started, now_us)).await;
            }
            None => {
                return Ok(self.finish(started, verify::without_key(VerifyCode::Malformed), None, purpose));
            }
        };
        let key = match found {
            Found::Key(k) if workspace.is_none_or(|w| *w == *k.workspace_id) => k,
            _ => return Ok(self.not_found(started, request, workspace, purpose, now_us)),
        };
        self.conclude(key, Proof::Secret { token, parsed }, request, purpose, started, now_us).await
    }

    fn not_found(
        &self,
        started: SystemTime,
        request: &Request<'_>,
        workspace: Option<&str>,
        purpose: Purpose,
        now_us: i64,
    ) -> Verification {
        if let (Some(ws), Purpose::Answer) = (workspace, purpose) {
            self.usage.unknown_key(ws, request.ip, now_us / 1000);
        }
        self.finish(started, verify::without_key(VerifyCode::NotFound), None, purpose)
    }

    /// A presented JWT: an access token keyward signed, or a request signed
    /// with a recoverable key's secret (HS256, `kid` = the key id).
    async fn check_jwt(
        &self,
        token: &str,
        request: &Request<'_>,
        workspace: Option<&str>,
        purpose: Purpose,
        started: SystemTime,
        now_us: i64,
    ) -> Result<Verification, Error> {
        use crate::oauth::check::{self, Presented, SignedRefusal};
        let now = DateTime::from_timestamp_micros(now_us).unwrap_or_default();
        let refuse = |decision: Decision, key: Option<Arc<CachedKey>>| Ok(self.finish(started, decision, key, purpose));
        let presented = match check::classify(token) {
            Ok(p) => p,
            Err(d) => return refuse(d, None),
        };
        match presented {
            Presented::AccessToken { kid, alg } => {
                let claims = match self.access_claims(token, &kid, alg, now).await {
                    Ok(c) => c,
                    Err(d) => return refuse(d, None),
                };
                if self.is_revoked(&claims.jti) {
                    return refuse(
                        verify::token_refused(VerifyCode::TokenRevoked, "The access token has been revoked"),
                        None,
                    );
                }
                if claims.is_member() {
                    return refuse(check::invalid("A member's access token is not an API key"), None);
                }
                let found = self.find_key_by_id(&claims.sub, now_us / 1000).await?;
                let key = match found {
                    Found::Key(k) if workspace.is_none_or(|w| *w == *k.workspace_id) => k,
                    _ => return Ok(self.not_found(started, request, workspace, purpose, now_us)),
                };
                if !check::still_issued_to(&key, &claims, now) {
                    let why = "The access token was issued to the client's previous consumer key";
                    return refuse(verify::token_refused(VerifyCode::TokenRevoked, why), Some(key));
                }
                self.conclude(key, Proof::Token { scopes: claims.scopes() }, request, purpose, started, now_us).await
            }
            Presented::SignedRequest { kid } => {
                let found = self.find_key_by_id(&kid, now_us / 1000).await?;
                let key = match found {
                    Found::Key(k) if workspace.is_none_or(|w| *w == *k.workspace_id) => k,
                    _ => return Ok(self.not_found(started, request, workspace, purpose, now_us)),
                };
                if !key.recoverable {
                    let why = "Signed requests need a recoverable key: keyward keeps only a hash of this key's secret";
                    return refuse(check::invalid(why), Some(key));
                }
                let secret = match self.sealed_secret(&key.id).await? {
                    Some(s) => s,
                    None => {
                        return refuse(check::invalid("The key's secret cannot be opened on this server"), Some(key));
                    }
                };
                match check::decode_signed(token, secret.expose(), now) {
                    Ok((jti, exp)) => {
                        let until = DateTime::from_timestamp(exp, 0).unwrap_or(now);
                        let fresh = self
                            .store
                            .spend_jti(&format!("sr:{}:{jti}", key.id), until, now)
                            .await
                            .map_err(crate::keys::store_error)?;
                        if !fresh {
                            let why = "The signed request's jti was already used";
                            return refuse(verify::token_refused(VerifyCode::TokenReplayed, why), Some(key));
                        }
                        self.conclude(key, Proof::Token { scopes: None }, request, purpose, started, now_us).await
                    }
                    Err(SignedRefusal::Signature) => {
                        if key.state == KeyState::Active {
                            Box::pin(self.count_wrong_secret(&key, now)).await;
                        }
                        let decision = verify::token_refused(
                            VerifyCode::InvalidSecret,
                            "The signed request's signature is not valid",
                        );
                        self.cache.count(&key, decision.code, false, now_us / 1000);
                        refuse(decision, Some(key))
                    }
                    Err(SignedRefusal::Other(d)) => refuse(d, Some(key)),
                }
            }
        }
    }

    /// Sends `key.credits_low` (once per refill period) when this spend
    /// took the key's credits down to its workspace's threshold.
    async fn credits_spent(&self, key: &CachedKey, remaining: i64, cost: i64, period: Option<DateTime<Utc>>) {
        let Ok(ws) = self.workspace(&key.workspace_id).await else { return };
        let Some(threshold) = ws.notices.credits_low_threshold else { return };
        if remaining > threshold || remaining.saturating_add(cost) <= threshold {
            return;
        }
        let Ok(Some(stored)) = self.store.find_key(&key.id).await else { return };
        let now = self.clock.now();
        let data = crate::webhooks::events::key_data(&stored);
        let data = match data {
            serde_json::Value::Object(mut d) => {
                d.insert("remaining".into(), remaining.into());
                d.insert("threshold".into(), threshold.into());
                serde_json::Value::Object(d)
            }
            other => other,
        };
        let mark = format!("{}:{}", period.map_or(0, |p| p.timestamp_millis()), stored.version);
        let write =
            crate::webhooks::notices::notice(&key.id, "credits_low", mark, &ws.id, "key.credits_low", now, data);
        let work = self.audit.work().clone();
        tokio::spawn(async move {
            let change = crate::work::Change::unaudited("a notice records no action: it tells of credits running low");
            if let Err(e) = work.commit(change.with(write)).await {
                tracing::warn!(error = %e, "sending a credits-low notice failed");
            }
        });
    }

    /// The key `token` is the secret of (its current one, or the one
    /// before a roll within its grace period), whatever its state; `None`
    /// when it is no key's. Counts nothing: a leak report is not a use.
    pub async fn holder_of(&self, token: &str) -> Result<Option<Arc<CachedKey>>, Error> {
        let now_ms = self.clock.now_ms();
        let parsed = token::parse(token).ok();
        let found = match &parsed {
            Some(p) => self.find_native(p, now_ms).await?,
            None if token.len() <= token::MAX_TOKEN_LEN && self.has_import_prefix(token) => {
                Box::pin(self.find_foreign(token, now_ms)).await?
            }
            None => return Ok(None),
        };
        let Found::Key(key) = found else { return Ok(None) };
        let matched = decide::match_secret(&key, token, parsed.as_ref(), &self.hasher, || self.clock.now());
        Ok((matched != decide::SecretMatch::Neither).then_some(key))
    }

    /// A recoverable key's secret, opened with the master key.
    pub async fn sealed_secret(&self, key_id: &str) -> Result<Option<keyward_core::token::Secret>, Error> {
        let Some(ring) = &self.keyring else { return Ok(None) };
        let sealed = self.store.sealed_secret(key_id).await.map_err(crate::keys::store_error)?;
        let Some(sealed) = sealed else { return Ok(None) };
        let plain = ring.open(&sealed, key_id.as_bytes())?;
        Ok(String::from_utf8(plain).ok().map(keyward_core::token::Secret::new))
    }

    /// The decision for a found key, then its limits, credits and usage.
    async fn conclude(
        &self,
        key: Arc<CachedKey>,
        proof: Proof<'_>,
        request: &Request<'_>,
        purpose: Purpose,
        started: SystemTime,
        now_us: i64,
    ) -> Result<Verification, Error> {
        let now = || DateTime::from_timestamp_micros(now_us).unwrap_or_default();
        let workspace = match request.path {
            Some(_) => Some(self.workspace(&key.workspace_id).await?),
            None => None,
        };
        // Keys holding roles verify against the workspace's roles (read once,
        // then from memory).
        let roles = match key.roles().is_empty() {
            true => None,
            false => Some(self.roles_for(&key).await?),
        };
        let request = Request {
            routes: workspace.as_deref().map_or(&[], |w| &w.routes[..]),
            roles: roles.as_deref().map_or(&[], |r| &r[..]),
            ..*request
        };
        let mut decision = match &proof {
            Proof::Secret { token, parsed } => {
                decide::decide(&key, token, parsed.as_ref(), &self.hasher, &request, now)
            }
            Proof::Token { scopes } => decide::decide_authenticated(&key, scopes.as_deref(), &request, now),
        };
        if decision.code == VerifyCode::InvalidSecret && key.state == KeyState::Active {
            Box::pin(self.count_wrong_secret(&key, now())).await;
        }
        let identity = match (key.identity(), purpose) {
            (Some(i), Purpose::Answer) => self.identity(&i.id).await?,
            _ => None,
        };
        // Rate limits, then credits; a caller authenticating to the API
        // spends neither.
        let checks = match purpose {
            Purpose::Answer if decision.is_valid() => limit_checks(&key, identity.as_deref(), request.ratelimits)?,
            _ => Vec::new(),
        };
        let spent = self.limiter.spend(&checks, now_us / 1000).await;
        if !spent.admitted {
            decision = verify::rate_limited();
        }
        // Credits are spent in the store, atomically: exact across nodes.
        let mut credits = None;
        if let (Some(c), true, Purpose::Answer) = (key.credits(), decision.is_valid(), purpose) {
            let cost = i64::from(request.cost.unwrap_or(1));
            let refill = c.refill.map(|r| (r.amount, r.period_start(now())));
            match self.store.spend_credits(&key.id, cost, refill).await.map_err(crate::keys::store_error)? {
                CreditSpend::Spent { remaining } => {
                    credits = Some(remaining);
                    self.credits_spent(&key, remaining, cost, refill.map(|r| r.1)).await;
                }
                CreditSpend::Exhausted { remaining } => {
                    credits = Some(remaining);
                    decision = verify::usage_exceeded();
                    self.limiter.refund(&checks, &spent).await;
                }
                CreditSpend::Unlimited => {}
            }
        }
        self.cache.count(&key, decision.code, decision.authenticated, now_us / 1000);
        // A narrowed token's scope goes with the answer (it is what the
        // presenter holds).
        let token_scopes = match proof {
            Proof::Secret { token, parsed } => {
                if decision.authenticated
                    && (key.secret.scheme == HashScheme::Sha256 || (!key.replicated && key.lookup_prefix().is_none()))
                {
                    self.upgrade_hashes(&key, token, parsed.as_ref());
                }
                None
            }
            Proof::Token { scopes } => scopes,
        };
        let ratelimits = checks.iter().map(|c| c.limit.name.clone()).zip(spent.states).collect();
        let mut v = self.finish(started, decision, Some(key), purpose);
        v.workspace = workspace;
        v.credits = credits;
        v.ratelimits = ratelimits;
        v.identity = identity;
        v.roles = roles;
        v.token_scopes = token_scopes;
        Ok(v)
    }

    fn finish(
        &self,
        started: SystemTime,
        decision: Decision,
        key: Option<Arc<CachedKey>>,
        purpose: Purpose,
    ) -> Verification {
        match purpose {
            Purpose::Answer => {
                self.metrics.counts.increment(decision.code.index());
                let elapsed = started.elapsed().unwrap_or_default();
                crate::telemetry::VERIFY_LATENCY.record(elapsed);
            }
            Purpose::Caller => {
                self.metrics.counts.increment(if decision.is_valid() { CALLER_ACCEPTED } else { CALLER_REFUSED })
            }
        }
        Verification {
            decision,
            key,
            workspace: None,
            credits: None,
            ratelimits: Vec::new(),
            identity: None,
            roles: None,
            token_scopes: None,
        }
    }

    /// Counts a wrong secret for a known, active key (across nodes); at the
    /// workspace's threshold the key is locked. Never fails the request:
    /// a failure to count is logged.
    async fn count_wrong_secret(&self, key: &CachedKey, now: chrono::DateTime<chrono::Utc>) {
        let result = async {
            let policy = self.workspace(&key.workspace_id).await?.lockout;
            let window_start = now - chrono::Duration::minutes(i64::from(policy.window_minutes));
            let failures =
                self.store.count_failed_attempt(&key.id, window_start, now).await.map_err(crate::keys::store_error)?;
            if failures.is_some_and(|n| n >= i64::from(policy.threshold)) {
                let mut lock =
                    crate::work::Change::of(keyward_store::Write::LockKey { key_id: key.id.to_string(), at: now });
                lock.push(self.audit.event(keyward_core::audit::Event {
                    workspace_id: key.workspace_id.to_string(),
                    at: now,
                    actor: keyward_core::audit::Actor::system(),
                    action: "key.locked".to_owned(),
                    target: Target::new("api_key", key.id.to_string(), Some(&key.name)),
                    ip: None,
                    user_agent: None,
                    outcome: keyward_core::audit::Outcome::Success,
                    changes: serde_json::json!({"failures": failures, "threshold": policy.threshold}).to_string(),
                }));
                match self.audit.work().commit(lock).await {
                    Ok(()) => {}
                    // Locked meanwhile by another request or node (or no
                    // longer active): nothing to do, nothing recorded.
                    Err(keyward_store::StoreError::NotFound) => return Ok(()),
                    Err(e) => return Err(crate::keys::store_error(e)),
                }
                tracing::warn!(key_id = %key.id, failures = ?failures, "key locked after too many wrong secrets");
            }
            Ok::<_, Error>(())
        };
        if let Err(e) = result.await {
            tracing::debug!(key_id = %key.id, error = %e.message, "wrong secret not counted");
        }
    }

    /// The record cached under `ck`, or what `load` reads from the store
    /// (read once, then cached, absence included).
    async fn find(
        &self,
        ck: CacheKey,
        now_ms: i64,
        load: impl Future<Output = Result<Option<ApiKey>, keyward_store::StoreError>>,
    ) -> Result<Found, Error> {
        let (ticket, stale) = match self.cache.get(&ck, now_ms) {
            Lookup::Hit(k) => {
                self.metrics.counts.increment(CACHE_HIT);
                return Ok(Found::Key(k));
            }
            Lookup::Refresh(k, ticket) => {
                self.metrics.counts.increment(CACHE_HIT);
                self.refresh_ahead(ck, &k, ticket, now_ms);
                return Ok(Found::Key(k));
            }
            Lookup::KnownAbsent => {
                self.metrics.counts.increment(CACHE_HIT);
                return Ok(Found::Missing);
            }
            Lookup::Miss(ticket, stale) => (ticket, stale),
        };
        self.metrics.counts.increment(CACHE_MISS);
        let loaded = match (load.await, stale) {
            (Ok(found), _) => found,
            // The store cannot answer: a key this node knew keeps verifying
            // as it last stood; an unknown one is refused (the error).
            (Err(keyward_store::StoreError::Unavailable(_)), Some(stale)) => return Ok(Found::Key(stale)),
            (Err(e), _) => return Err(crate::keys::store_error(e)),
        };
        let key = loaded.map(|k| self.cache.entry(&k, now_ms));
        self.cache.finish_load(ck, ticket, key.clone());
        Ok(key.map_or(Found::Missing, Found::Key))
    }

    async fn find_native(&self, parsed: &ParsedToken<'_>, now_ms: i64) -> Result<Found, Error> {
        // An imported key's id may look native; its token never does.
        self.find_by_id(parsed.id, now_ms).await
    }

    async fn find_foreign(&self, token: &str, now_ms: i64) -> Result<Found, Error> {
        let hmac = self.hasher.whole_token(token).digest;
        // The SHA-256 (for keys imported as hashes) only on a miss.
        let load = async move { self.store.find_key_by_lookup_hash(&[hmac, sha256(token)]).await };
        self.find(CacheKey::Foreign(hmac), now_ms, load).await
    }

    /// Reads a key's record again in the background, ahead of its maximum
    /// age, so that a key in use never waits for its periodic read. As
    /// read at `now_ms` (the maximum age counts from before the read).
    /// Imported keys are found by their token, which this does not keep:
    /// they are read when due.
    fn refresh_ahead(&self, ck: CacheKey, key: &CachedKey, ticket: LoadTicket, now_ms: i64) {
        let (CacheKey::Native(_), Ok(runtime)) = (ck, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (id, store, cache) = (key.id.clone(), self.store.clone(), self.cache.clone());
        runtime.spawn(async move {
            match find_native_key(store.as_ref(), &id).await {
                Ok(found) => cache.finish_load(ck, ticket, found.map(|k| cache.entry(&k, now_ms))),
                // Read when due, as without a read ahead.
                Err(e) => tracing::debug!(key_id = %id, error = %e, "reading a key ahead of its maximum age failed"),
            }
        });
    }

    /// The digest of a native token under `workspace_id`'s replica key (what
    /// an embedded verifier checks; [`ApiKey::replica`]).
    pub fn replica_digest(&self, workspace_id: &str, parsed: &ParsedToken<'_>) -> [u8; 32] {
        self.hasher.replica(workspace_id).native(parsed).digest
    }

    /// Now that a key's plaintext has been seen: re-hashes a key imported
    /// as a foreign SHA-256 to keyward's keyed scheme, and gives a native
    /// key made before replica digests its own. In the background: the
    /// verify path never waits on a write.
    fn upgrade_hashes(&self, key: &CachedKey, token: &str, parsed: Option<&ParsedToken<'_>>) {
        // Not during a grace period: the token may be the old secret.
        let replicable = parsed.is_some() && key.lookup_prefix().is_none() && key.grace().is_none();
        if key.secret.scheme != HashScheme::Sha256 && !replicable {
            return;
        }
        let (id, expected) = (key.id.clone(), key.version);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Before any hashing: the uses of a key until its upgrade lands cost
        // one lookup each.
        if !self.lock(&self.upgrading).insert(id.clone()) {
            return; // already under way
        }
        let secret = (key.secret.scheme == HashScheme::Sha256).then(|| self.hasher.whole_token(token));
        let replica = parsed.filter(|_| replicable).map(|p| self.replica_digest(&key.workspace_id, p));
        let (work, store, upgrading) = (self.audit.work().clone(), self.store.clone(), self.upgrading.clone());
        runtime.spawn(async move {
            // The whole record, as the cache holds only what verifying needs.
            let result = match store.find_key(&id).await {
                Ok(Some(mut upgraded)) if upgraded.version == expected => {
                    if let Some(secret) = secret {
                        upgraded.secret = secret;
                    }
                    upgraded.replica = upgraded.replica.or(replica);
                    upgraded.version += 1;
                    let write = keyward_store::Write::UpdateKey { key: upgraded, expected_version: expected };
                    let why = "re-hashing a key's secret changes none of its settings";
                    work.commit(crate::work::Change::unaudited(why).with(write)).await
                }
                Ok(_) => Err(keyward_store::StoreError::NotFound),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!(key_id = %id, "re-hashed the key's secret (a keyed or replica digest)"),
                Err(e) => tracing::debug!(key_id = %id, error = %e, "key re-hash skipped"),
            }
            upgrading.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
    }
}

/// The key with id `key_id` if it is a native one (an imported key's id may
/// look native; it is found by its token).
async fn find_native_key(store: &dyn Store, key_id: &str) -> Result<Option<ApiKey>, keyward_store::StoreError> {
    Ok(store.find_key(key_id).await?.filter(|k| k.lookup_prefix.is_none()))
}

/// Codes that count as a failed authentication of the client's address:
/// the key is not one, or not the right one.
fn is_authentication_failure(code: VerifyCode) -> bool {
    matches!(code, VerifyCode::Malformed | VerifyCode::NotFound | VerifyCode::InvalidSecret | VerifyCode::Locked)
}

/// The refusal of an address over its failed-authentication limit.
pub fn too_many_failures(retry_after_secs: u64) -> Error {
    Error::new(
        keyward_core::ErrorKind::TooManyRequests { retry_after_secs },
        keyward_core::Code::TooManyFailures,
        "Too many failed authentications from this address; retry later",
    )
}

/// The limits a valid verification spends: the key's and its identity's
/// auto-applied limits (1 unit each) and those the request names (their
/// cost). A name that neither has is refused, naming the field.
fn limit_checks<'a>(
    key: &'a KeyRecord,
    identity: Option<&'a Identity>,
    requested: &[LimitRequest],
) -> Result<Vec<Check<'a>>, Error> {
    let identity_limits = identity.map_or(&[][..], |i| &i.ratelimits[..]);
    if key.ratelimits().is_empty() && identity_limits.is_empty() && requested.is_empty() {
        return Ok(Vec::new());
    }
    for (i, r) in requested.iter().enumerate() {
        if !key.ratelimits().iter().chain(identity_limits).any(|l| l.name == r.name) {
            return Err(Error::invalid(
                Code::UnknownRatelimit,
                format!("ratelimits[{i}].name names no rate limit of this key or its identity"),
            ));
        }
    }
    let owners = [('k', &*key.id, key.ratelimits())];
    let identity_owner = identity.map(|i| ('i', i.id.as_str(), identity_limits));
    let mut checks = Vec::new();
    for (owner, owner_id, limits) in owners.into_iter().chain(identity_owner) {
        for limit in limits {
            let named = requested.iter().filter(|r| r.name == limit.name);
            let (times, cost) = named.fold((0, 0), |(n, sum), r| (n + 1, sum + r.cost));
            let cost = match (times, limit.auto_apply) {
                (0, true) => 1,
                (0, false) => continue,
                _ => cost,
            };
            checks.push(Check::new(owner, owner_id, limit, cost));
        }
    }
    Ok(checks)
}
