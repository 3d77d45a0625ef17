//! Members: sign-in (sessions and their bearer JWTs), re-authentication,
//! invitations, and managing who belongs to a workspace with which roles.
//!
//! Passwords are hashed with argon2id on the blocking pool, never on the
//! async workers. An unknown email is checked against a dummy hash, so it
//! costs what a wrong password costs; failures are throttled per account
//! and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use keyward_core::Code;
use keyward_core::authority::Authority;
use keyward_core::hash::SecretHasher;
use keyward_core::member::{
    FRESH_FOR, INVITATION_LIFETIME, Invitation, Member, Membership, OWNER, SESSION_LIFETIME, Session, TOKEN_LIFETIME,
    role_scopes, validate_email, validate_member_name, validate_password, validate_roles,
};
use keyward_core::workspace::Workspace;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{OAuthWrite, PeopleWrite, Store, StoreError, Write};

use crate::work::Change;

use crate::audit::{AuditLog, member_target};
use crate::clock::Clock;
use crate::keys::store_error;
use crate::principal::{MemberCaller, Principal};
use keyward_core::audit::{Outcome, Target};
use serde_json::json;

pub const MEMBERS_READ: &str = "members:read";
pub const MEMBERS_MANAGE: &str = "members:manage";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "keyward_session";
const SESSION_TOKEN_PREFIX: &str = "kws_";
const INVITATION_TOKEN_PREFIX: &str = "kwi_";
/// Failed sign-ins of one account (or one address) within
/// [`THROTTLE_WINDOW`] before it is refused until the window ends.
const ACCOUNT_FAILURES: u32 = 10;
const ADDRESS_FAILURES: u32 = 50;
const THROTTLE_WINDOW: Duration = Duration::minutes(15);

pub fn member_not_found() -> Error {
    Error::new(ErrorKind::NotFound, Code::MemberNotFound, "Member not found")
}

fn invalid_credentials() -> Error {
    Error::new(ErrorKind::Unauthenticated, Code::InvalidCredentials, "Email or password is incorrect")
}

/// A successful sign-in.
#[derive(Debug)]
pub struct SignedIn {
    pub member: Member,
    pub membership: Membership,
    pub workspace: Workspace,
    /// Every workspace the member belongs to (for a switcher).
    pub workspaces: Vec<Workspace>,
    pub session: Session,
    /// The cookie's value (shown once; stored as a keyed hash).
    pub cookie_token: String,
    /// The bearer JWT, when asked for.
    pub jwt: Option<String>,
}

/// What an invitation produced: the record and its token, shown once.
#[derive(Debug)]
pub struct NewInvitation {
    pub invitation: Invitation,
    pub token: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    sid: String,
    ws: String,
    iat: i64,
    exp: i64,
}

const ISSUER: &str = "keyward";

pub struct MemberService {
    store: Arc<dyn Store>,
    /// Holds each workspace's roles in memory.
    verifier: Arc<crate::verifier::Verifier>,
    hasher: SecretHasher,
    clock: Arc<dyn Clock>,
    jwt_encoding: jsonwebtoken::EncodingKey,
    jwt_decoding: jsonwebtoken::DecodingKey,
    /// Checked for unknown emails, so they cost what a wrong password does.
    dummy_hash: String,
    throttle: SignInThrottle,
    /// Bounds how many passwords are hashed at once (argon2id is
    /// deliberately expensive in CPU and memory).
    hashing: tokio::sync::Semaphore,
    audit: Arc<AuditLog>,
}

impl MemberService {
    pub async fn new(
        store: Arc<dyn Store>,
        verifier: Arc<crate::verifier::Verifier>,
        hasher: SecretHasher,
        clock: Arc<dyn Clock>,
        audit: Arc<AuditLog>,
    ) -> Self {
        let jwt_key = hasher.derive("member session jwt");
        let dummy_hash = hash_password(ids::random_base62(24)).await.expect("hashing a generated password");
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        MemberService {
            store,
            verifier,
            hasher,
            clock,
            jwt_encoding: jsonwebtoken::EncodingKey::from_secret(&jwt_key).expect("an HMAC key of 32 bytes"),
            jwt_decoding: jsonwebtoken::DecodingKey::from_secret(&jwt_key).expect("an HMAC key of 32 bytes"),
            dummy_hash,
            throttle: SignInThrottle::default(),
            hashing: tokio::sync::Semaphore::new(parallel * 2),
            audit,
        }
    }

    async fn hash(&self, password: &str) -> Result<String, Error> {
        let _permit = self.hashing.acquire().await.map_err(|_| Error::internal("shutting down"))?;
        hash_password(password.to_owned()).await
    }

    /// An argon2id hash of a secret other than a member's password (FTP
    /// access), in its turn like a password's.
    pub async fn hash_secret(&self, secret: &str) -> Result<String, Error> {
        self.hash(secret).await
    }

    /// Whether `secret` matches `hash`; with no hash, the time of a check
    /// against a generated one (so an unknown name costs what a wrong
    /// secret does) and `false`.
    pub async fn check_secret(&self, hash: Option<&str>, secret: &str) -> bool {
        let good = self.check(hash.unwrap_or(&self.dummy_hash), secret).await;
        good && hash.is_some()
    }

    async fn check(&self, hash: &str, password: &str) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else { return false };
        let (hash, password) = (hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || check_password(&hash, &password)).await.unwrap_or(false)
    }

    /// The owner of a new deployment's first workspace: the writes to
    /// commit with it (`bootstrap`).
    pub async fn owner_writes(
        &self,
        workspace_id: &str,
        email: &str,
        password: &str,
    ) -> Result<(Member, Vec<Write>), Error> {
        let email = validate_email(email)?;
        validate_password(password, &email)?;
        let now = self.clock.now();
        let member = Member {
            id: ids::new_id("mem"),
            name: email.split('@').next().unwrap_or("Owner").to_owned(),
            email,
            password_hash: self.hash(password).await?,
            created_at: now,
            updated_at: now,
        };
        let membership = Membership {
            workspace_id: workspace_id.to_owned(),
            member_id: member.id.clone(),
            roles: vec![OWNER.to_owned()],
            created_at: now,
        };
        let writes = vec![
            Write::People(PeopleWrite::InsertMember(member.clone())),
            Write::People(PeopleWrite::InsertMembership(membership)),
        ];
        Ok((member, writes))
    }

    /// Signs a member in; `workspace_id` picks the workspace (else the one
    /// joined first). `want_token` also issues a bearer JWT for 7 days.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        workspace_id: Option<&str>,
        want_token: bool,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<SignedIn, Error> {
        let now = self.clock.now();
        let account = email.trim().to_lowercase();
        self.throttle.begin(&account, ip, now)?;
        let member = match validate_email(email) {
            Ok(email) => self.store.member_by_email(&email).await.map_err(store_error)?,
            Err(_) => None,
        };
        let hash = member.as_ref().map_or(self.dummy_hash.as_str(), |m| m.password_hash.as_str());
        let good = self.check(hash, password).await;
        let Some(member) = member.clone().filter(|_| good) else {
            // Recorded where the person belongs (an unknown email belongs
            // nowhere: only the sign-in throttle counts it), after the
            // answer: a known email costs the caller what an unknown one
            // does, so the time of the answer tells nothing.
            if let Some(m) = member {
                let (store, audit) = (self.store.clone(), self.audit.clone());
                let user_agent = user_agent.map(str::to_owned);
                tokio::spawn(async move {
                    let Ok(memberships) = store.memberships_of(&m.id).await else { return };
                    for ms in memberships {
                        let changes = json!({"reason": "invalid_credentials"});
                        let entry = audit.member_entry(
                            &ms.workspace_id,
                            &m,
                            ip,
                            user_agent.as_deref(),
                            "member.sign_in_failed",
                            Outcome::Failure,
                            changes,
                        );
                        audit.record(entry).await;
                    }
                });
            }
            return Err(invalid_credentials());
        };
        self.throttle.succeeded(&account, ip);
        let memberships = self.store.memberships_of(&member.id).await.map_err(store_error)?;
        let membership = match workspace_id {
            Some(id) => memberships.iter().find(|m| m.workspace_id == id).cloned().ok_or_else(|| {
                Error::new(ErrorKind::NotFound, Code::WorkspaceNotFound, "You are not a member of that workspace")
            })?,
            None => memberships.first().cloned().ok_or_else(|| {
                Error::forbidden(Code::NoWorkspace, "You belong to no workspace; ask an owner for an invitation")
            })?,
        };
        let mut workspaces = Vec::with_capacity(memberships.len());
        for m in &memberships {
            if let Some(ws) = self.store.get_workspace(&m.workspace_id).await.map_err(store_error)? {
                workspaces.push(ws);
            }
        }
        let workspace = workspaces
            .iter()
            .find(|w| w.id == membership.workspace_id)
            .cloned()
            .ok_or_else(|| Error::internal("a membership names a missing workspace"))?;
        let cookie_token = format!("{SESSION_TOKEN_PREFIX}{}", ids::random_base62(43));
        let session = Session {
            id: ids::new_id("ses"),
            token_hash: self.hasher.digest("session", cookie_token.as_bytes()),
            member_id: member.id.clone(),
            workspace_id: workspace.id.clone(),
            created_at: now,
            expires_at: now + if want_token { TOKEN_LIFETIME } else { SESSION_LIFETIME },
            // Signing in is a fresh authentication.
            fresh_until: Some(now + FRESH_FOR),
            revoked_at: None,
        };
        let mut change = Change::of(Write::People(PeopleWrite::InsertSession(session.clone())));
        let changes = json!({"session": session.id, "token": want_token});
        change.push(self.audit.member_entry(
            &workspace.id,
            &member,
            ip,
            user_agent,
            "member.signed_in",
            Outcome::Success,
            changes,
        ));
        self.audit.work().commit(change).await.map_err(store_error)?;
        let jwt = want_token.then(|| self.jwt_for(&session)).transpose()?;
        Ok(SignedIn { member, membership, workspace, workspaces, session, cookie_token, jwt })
    }

    fn jwt_for(&self, session: &Session) -> Result<String, Error> {
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: session.member_id.clone(),
            sid: session.id.clone(),
            ws: session.workspace_id.clone(),
            iat: session.created_at.timestamp(),
            exp: session.expires_at.timestamp(),
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &self.jwt_encoding).map_err(|_| Error::internal("signing a token"))
    }

    /// Whether a bearer token is one of our session JWTs (HS256, no key
    /// id) rather than a key or an access token.
    pub fn is_session_jwt(token: &str) -> bool {
        keyward_core::oauth::looks_like_jwt(token)
            && jsonwebtoken::decode_header(token)
                .is_ok_and(|h| h.alg == jsonwebtoken::Algorithm::HS256 && h.kid.is_none())
    }

    /// The member a session cookie's token names.
    pub async fn from_cookie(&self, token: &str) -> Result<Principal, Error> {
        if !token.starts_with(SESSION_TOKEN_PREFIX) || token.len() > 128 {
            return Err(session_ended());
        }
        let digest = self.hasher.digest("session", token.as_bytes());
        let session = self.store.session_by_token(&digest).await.map_err(store_error)?;
        self.principal_for(session, true).await
    }

    /// The member a session JWT names (its session must still be live).
    pub async fn from_jwt(&self, token: &str) -> Result<Principal, Error> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        // Time comes from our clock, below.
        validation.validate_exp = false;
        validation.set_issuer(&[ISSUER]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.jwt_decoding, &validation)
            .map_err(|_| Error::invalid_api_key())?
            .claims;
        if claims.exp <= self.clock.now().timestamp() {
            return Err(Error::new(
                ErrorKind::Unauthenticated,
                Code::TokenExpired,
                "The token has expired; sign in again",
            ));
        }
        let session = self.store.get_session(&claims.sid).await.map_err(store_error)?;
        let session = session.filter(|s| s.member_id == claims.sub && s.workspace_id == claims.ws);
        self.principal_for(session, false).await
    }

    async fn principal_for(&self, session: Option<Session>, via_cookie: bool) -> Result<Principal, Error> {
        let now = self.clock.now();
        let session = session.filter(|s| s.is_live(now)).ok_or_else(session_ended)?;
        let membership = self.store.membership(&session.workspace_id, &session.member_id).await.map_err(store_error)?;
        let member = self.store.get_member(&session.member_id).await.map_err(store_error)?;
        let (Some(membership), Some(member)) = (membership, member) else { return Err(session_ended()) };
        let custom = self.custom_roles(&session.workspace_id, &membership.roles).await?;
        Ok(Principal::from(crate::principal::Caller::Member(Arc::new(MemberCaller {
            scopes: role_scopes(&membership.roles, &custom),
            member_id: member.id,
            email: member.email,
            name: member.name,
            workspace_id: session.workspace_id.clone(),
            roles: membership.roles,
            fresh: session.is_fresh(now),
            fresh_until: session.fresh_until,
            expires_at: session.expires_at,
            session_id: session.id,
            via_cookie,
        }))))
    }

    /// The member an access token (from their refresh token `token_id`)
    /// acts for, with their roles as they stand now.
    pub async fn from_access_token(
        &self,
        member_id: &str,
        workspace_id: &str,
        token_id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Principal, Error> {
        let membership = self.store.membership(workspace_id, member_id).await.map_err(store_error)?;
        let member = self.store.get_member(member_id).await.map_err(store_error)?;
        let (Some(membership), Some(member)) = (membership, member) else { return Err(Error::invalid_api_key()) };
        let custom = self.custom_roles(workspace_id, &membership.roles).await?;
        Ok(Principal::from(crate::principal::Caller::Member(Arc::new(MemberCaller {
            scopes: role_scopes(&membership.roles, &custom),
            member_id: member.id,
            email: member.email,
            name: member.name,
            workspace_id: workspace_id.to_owned(),
            roles: membership.roles,
            // A token is never a fresh authentication (reveal asks for one).
            fresh: false,
            fresh_until: None,
            expires_at,
            session_id: token_id.to_owned(),
            via_cookie: false,
        }))))
    }

    /// The workspace's own roles, when `roles` names any (built-in roles
    /// need none), from the verifier's memory after the first read.
    async fn custom_roles(
        &self,
        workspace_id: &str,
        roles: &[String],
    ) -> Result<Arc<Vec<keyward_core::member::Role>>, Error> {
        if roles.iter().all(|r| keyward_core::member::builtin_role(r).is_some()) {
            return Ok(Arc::default());
        }
        self.verifier.roles(workspace_id).await
    }

    /// Confirms the password of a signed-in member: the session is fresh
    /// for [`FRESH_FOR`] (reveal needs it). Throttled like sign-in.
    pub async fn reauth(&self, who: &Principal, password: &str, ip: Option<IpAddr>) -> Result<DateTime<Utc>, Error> {
        let m = who.member().ok_or_else(|| {
            Error::forbidden(Code::MemberSessionRequired, "Only a signed-in member can re-authenticate")
        })?;
        let now = self.clock.now();
        self.throttle.begin(&m.email, ip, now)?;
        let member = self.store.get_member(&m.member_id).await.map_err(store_error)?.ok_or_else(session_ended)?;
        if !self.check(&member.password_hash, password).await {
            return Err(Error::new(ErrorKind::Unauthenticated, Code::InvalidCredentials, "The password is incorrect"));
        }
        self.throttle.succeeded(&m.email, ip);
        let until = now + FRESH_FOR;
        let write = PeopleWrite::RefreshSession { id: m.session_id.clone(), until, at: now };
        let change = Change::unaudited("re-authenticating only refreshes the session").with(Write::People(write));
        self.audit.work().commit(change).await.map_err(|e| match e {
            StoreError::NotFound => session_ended(),
            other => store_error(other),
        })?;
        Ok(until)
    }

    /// The workspaces the signed-in member belongs to (the console's
    /// workspace switcher).
    pub async fn workspaces(&self, who: &Principal) -> Result<Vec<keyward_core::workspace::Workspace>, Error> {
        let m = who.member().ok_or_else(session_ended)?;
        let mut out = Vec::new();
        for ms in self.store.memberships_of(&m.member_id).await.map_err(store_error)? {
            if let Some(ws) = self.store.get_workspace(&ms.workspace_id).await.map_err(store_error)? {
                out.push(ws);
            }
        }
        Ok(out)
    }

    /// Moves a signed-in member to another of their workspaces: the
    /// session ends and one in the other workspace begins, until the same
    /// time and as fresh as it was. Answers the new session's cookie token.
    pub async fn switch_workspace(&self, who: &Principal, workspace_id: &str) -> Result<(Session, String), Error> {
        let m = who.member().ok_or_else(session_ended)?;
        let now = self.clock.now();
        let current = self.store.get_session(&m.session_id).await.map_err(store_error)?;
        let current = current.filter(|s| s.is_live(now)).ok_or_else(session_ended)?;
        let member = self.store.get_member(&m.member_id).await.map_err(store_error)?.ok_or_else(session_ended)?;
        if self.store.membership(workspace_id, &m.member_id).await.map_err(store_error)?.is_none() {
            return Err(Error::new(
                ErrorKind::NotFound,
                Code::WorkspaceNotFound,
                "You are not a member of that workspace",
            ));
        }
        let cookie_token = format!("{SESSION_TOKEN_PREFIX}{}", ids::random_base62(43));
        let session = Session {
            id: ids::new_id("ses"),
            token_hash: self.hasher.digest("session", cookie_token.as_bytes()),
            member_id: m.member_id.clone(),
            workspace_id: workspace_id.to_owned(),
            created_at: now,
            expires_at: current.expires_at,
            fresh_until: current.fresh_until,
            revoked_at: None,
        };
        let mut change = Change::of(Write::People(PeopleWrite::RevokeSession { id: current.id.clone(), at: now }));
        change.push(Write::People(PeopleWrite::InsertSession(session.clone())));
        let changes = json!({"session": session.id, "from": who.workspace_id()});
        change.push(self.audit.member_entry(
            workspace_id,
            &member,
            who.ip,
            who.user_agent.as_deref(),
            "member.signed_in",
            Outcome::Success,
            changes,
        ));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok((session, cookie_token))
    }

    /// Ends the caller's session (and with it its bearer JWT).
    pub async fn logout(&self, who: &Principal) -> Result<(), Error> {
        let m = who
            .member()
            .ok_or_else(|| Error::forbidden(Code::MemberSessionRequired, "Only a signed-in member can sign out"))?;
        let write = PeopleWrite::RevokeSession { id: m.session_id.clone(), at: self.clock.now() };
        let mut change = Change::of(Write::People(write));
        let target = member_target(&m.member_id, &m.email);
        change.push(self.audit.write(who, "member.signed_out", target, json!({"session": m.session_id})));
        self.audit.work().commit(change).await.map_err(store_error)
    }

    /// Sets a member's password (the operator, for a person locked out);
    /// every session of theirs ends. With `None`, a password is generated
    /// and returned.
    pub async fn set_password(&self, who: &Principal, email: &str, password: Option<String>) -> Result<String, Error> {
        if !matches!(who.caller, crate::principal::Caller::System { .. }) {
            return Err(Error::forbidden(Code::OperatorRequired, "Only the operator sets a member's password"));
        }
        let email = validate_email(email)?;
        let mut member = self.store.member_by_email(&email).await.map_err(store_error)?.ok_or_else(member_not_found)?;
        let password = password.unwrap_or_else(|| ids::random_base62(20));
        validate_password(&password, &email)?;
        let now = self.clock.now();
        member.password_hash = self.hash(&password).await?;
        member.updated_at = now;
        let mut change = Change::of(Write::People(PeopleWrite::UpdateMember(member.clone())));
        change.push(Write::People(PeopleWrite::RevokeAllSessions { member_id: member.id.clone(), at: now }));
        // Their tokens for the REST API end with their sessions.
        change.push(Write::OAuth(OAuthWrite::RevokeMemberTokens {
            member_id: member.id.clone(),
            workspace_id: None,
            at: now,
        }));
        for ms in self.store.memberships_of(&member.id).await.map_err(store_error)? {
            let target = member_target(&member.id, &member.email);
            let system = Principal::system(ms.workspace_id);
            change.push(self.audit.write(
                &system,
                "member.password_set",
                target,
                json!({"sessionsEnded": true, "tokensRevoked": true}),
            ));
        }
        self.audit.work().commit(change).await.map_err(store_error)?;
        self.throttle.succeeded(&email, None);
        Ok(password)
    }

    pub async fn list(&self, who: &Principal) -> Result<Vec<(Member, Membership)>, Error> {
        who.require(MEMBERS_READ)?;
        self.store.list_members(who.workspace_id()).await.map_err(store_error)
    }

    pub async fn get(&self, who: &Principal, id: &str) -> Result<(Member, Membership), Error> {
        who.require(MEMBERS_READ)?;
        self.load(who.workspace_id(), id).await
    }

    async fn load(&self, workspace_id: &str, id: &str) -> Result<(Member, Membership), Error> {
        let membership = self.store.membership(workspace_id, id).await.map_err(store_error)?;
        let member = self.store.get_member(id).await.map_err(store_error)?;
        match (member, membership) {
            (Some(member), Some(membership)) => Ok((member, membership)),
            _ => Err(member_not_found()),
        }
    }

    /// Invites a person by email; the token is returned once.
    pub async fn invite(
        &self,
        who: &Principal,
        email: &str,
        name: &str,
        roles: &[String],
    ) -> Result<NewInvitation, Error> {
        who.require(MEMBERS_MANAGE)?;
        let email = validate_email(email)?;
        let name = validate_member_name(name)?;
        // The workspace's roles: the caller's may be its own too.
        let custom = self.verifier.roles(who.workspace_id()).await?;
        let roles = validate_roles(roles, &custom)?;
        require_owner_for(who, roles.iter().any(|r| r == OWNER))?;
        // An invitation makes a person: only a person (or the operator)
        // invites, with no more than they hold.
        who.may_give(&custom, &Authority::person(&roles, &custom))?;
        if let Some(existing) = self.store.member_by_email(&email).await.map_err(store_error)?
            && self.store.membership(who.workspace_id(), &existing.id).await.map_err(store_error)?.is_some()
        {
            return Err(store_error(StoreError::Conflict(keyward_store::Unique::Membership)));
        }
        let now = self.clock.now();
        let token = format!("{INVITATION_TOKEN_PREFIX}{}", ids::random_base62(43));
        let invitation = Invitation {
            id: ids::new_id("inv"),
            workspace_id: who.workspace_id().to_owned(),
            email,
            name,
            roles,
            token_hash: self.hasher.digest("invitation", token.as_bytes()),
            invited_by: who.member().map(|m| m.member_id.clone()),
            created_at: now,
            expires_at: now + INVITATION_LIFETIME,
            accepted_at: None,
        };
        let write = Write::People(PeopleWrite::InsertInvitation(invitation.clone()));
        let mut change = Change::of(write);
        let target = Target::new("invitation", &invitation.id, Some(&invitation.email));
        let changes = json!({"email": invitation.email, "name": invitation.name, "roles": invitation.roles});
        change.push(self.audit.write(who, "member.invited", target, changes));
        self.audit.work().commit(change).await.map_err(store_error)?;
        Ok(NewInvitation { invitation, token })
    }

    /// Redeems an invitation: a new person sets their password; someone
    /// already a member elsewhere confirms theirs.
    pub async fn accept(
        &self,
        token: &str,
        password: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) -> Result<(Member, Membership, Workspace), Error> {
        let now = self.clock.now();
        let not_found = || {
            Error::new(
                ErrorKind::NotFound,
                Code::InvitationNotFound,
                "No such invitation: check the token you were given",
            )
        };
        if !token.starts_with(INVITATION_TOKEN_PREFIX) || token.len() > 128 {
            return Err(not_found());
        }
        let digest = self.hasher.digest("invitation", token.as_bytes());
        let invitation = self.store.invitation_by_token(&digest).await.map_err(store_error)?.ok_or_else(not_found)?;
        if invitation.accepted_at.is_some() {
            return Err(invitation_used());
        }
        if !invitation.is_open(now) {
            return Err(Error::invalid(
                Code::InvitationExpired,
                "This invitation has expired (invitations last 7 days); ask for a new one",
            ));
        }
        let mut change = Change::new();
        let member = match self.store.member_by_email(&invitation.email).await.map_err(store_error)? {
            Some(member) => {
                self.throttle.begin(&member.email, ip, now)?;
                if !self.check(&member.password_hash, password).await {
                    return Err(Error::new(
                        ErrorKind::Unauthenticated,
                        Code::InvalidCredentials,
                        "You already have an account: give its password to join",
                    ));
                }
                self.throttle.succeeded(&member.email, ip);
                member
            }
            None => {
                validate_password(password, &invitation.email)?;
                let member = Member {
                    id: ids::new_id("mem"),
                    email: invitation.email.clone(),
                    name: invitation.name.clone(),
                    password_hash: self.hash(password).await?,
                    created_at: now,
                    updated_at: now,
                };
                change.push(Write::People(PeopleWrite::InsertMember(member.clone())));
                member
            }
        };
        let membership = Membership {
            workspace_id: invitation.workspace_id.clone(),
            member_id: member.id.clone(),
            roles: invitation.roles.clone(),
            created_at: now,
        };
        change.push(Write::People(PeopleWrite::AcceptInvitation { id: invitation.id.clone(), at: now }));
        change.push(Write::People(PeopleWrite::InsertMembership(membership.clone())));
        let changes = json!({"invitation": invitation.id, "roles": membership.roles});
        let ws = &invitation.workspace_id;
        change.push(self.audit.member_entry(ws, &member, ip, user_agent, "member.joined", Outcome::Success, changes));
        self.audit.work().commit(change).await.map_err(|e| match e {
            StoreError::NotFound => invitation_used(),
            other => store_error(other),
        })?;
        let workspace = self
            .store
            .get_workspace(&invitation.workspace_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Error::internal("an invitation names a missing workspace"))?;
        Ok((member, membership, workspace))
    }

    /// Edits a member's name and/or roles in the caller's workspace. A
    /// person's name is theirs across workspaces: others may change it only
    /// while the person belongs to this workspace alone.
    pub async fn update(
        &self,
        who: &Principal,
        id: &str,
        name: Option<&str>,
        roles: Option<&[String]>,
    ) -> Result<(Member, Membership), Error> {
        let themself = who.member().is_some_and(|m| m.member_id == id);
        // Anyone may change their own name; everything else needs members:manage.
        if !(themself && roles.is_none()) {
            who.require(MEMBERS_MANAGE)?;
        }
        let (mut member, mut membership) = self.load(who.workspace_id(), id).await?;
        let was = json!({"name": member.name, "roles": membership.roles});
        let mut change = Change::new();
        if let Some(name) = name {
            if !themself && self.store.memberships_of(&member.id).await.map_err(store_error)?.len() > 1 {
                return Err(Error::conflict(
                    Code::NameIsPersonal,
                    "This person belongs to other workspaces too: only they can change their name",
                ));
            }
            member.name = validate_member_name(name)?;
            member.updated_at = self.clock.now();
            change.push(Write::People(PeopleWrite::UpdateMember(member.clone())));
        }
        if let Some(roles) = roles {
            let custom = self.verifier.roles(who.workspace_id()).await?;
            let roles = validate_roles(roles, &custom)?;
            let touches_owner = membership.is_owner() != roles.iter().any(|r| r == OWNER);
            require_owner_for(who, touches_owner)?;
            who.may_give(&custom, &Authority::member_roles(&roles, &custom))?;
            let expected = std::mem::replace(&mut membership.roles, roles);
            change.push(Write::People(PeopleWrite::SetRoles {
                workspace_id: membership.workspace_id.clone(),
                member_id: member.id.clone(),
                roles: membership.roles.clone(),
                expected,
            }));
        }
        if !change.is_empty() {
            let changes = crate::audit::diff(&was, &json!({"name": member.name, "roles": membership.roles}));
            change.push(self.audit.write(who, "member.changed", member_target(&member.id, &member.email), changes));
            self.audit.work().commit(change).await.map_err(|e| match e {
                StoreError::NotFound => Error::conflict(
                    Code::ConcurrentModification,
                    "The member was changed by another request; read it again and retry",
                ),
                other => store_error(other),
            })?;
        }
        Ok((member, membership))
    }

    /// Removes a member from the caller's workspace (ending their sessions
    /// in it); the last owner stays.
    pub async fn remove(&self, who: &Principal, id: &str) -> Result<(), Error> {
        who.require(MEMBERS_MANAGE)?;
        let (member, membership) = self.load(who.workspace_id(), id).await?;
        require_owner_for(who, membership.is_owner())?;
        let now = self.clock.now();
        let write = PeopleWrite::RemoveMembership {
            workspace_id: who.workspace_id().to_owned(),
            member_id: id.to_owned(),
            at: now,
        };
        let mut change = Change::of(Write::People(write));
        // Their tokens for this workspace's REST API end with it.
        change.push(Write::OAuth(OAuthWrite::RevokeMemberTokens {
            member_id: id.to_owned(),
            workspace_id: Some(who.workspace_id().to_owned()),
            at: now,
        }));
        let changes = json!({"roles": membership.roles});
        change.push(self.audit.write(who, "member.removed", member_target(&member.id, &member.email), changes));
        self.audit.work().commit(change).await.map_err(|e| match e {
            StoreError::NotFound => member_not_found(),
            other => store_error(other),
        })
    }
}

/// Granting or taking away the owner role is for owners (and the operator).
fn require_owner_for(who: &Principal, touches_owner: bool) -> Result<(), Error> {
    let allowed = match &who.caller {
        crate::principal::Caller::System { .. } => true,
        crate::principal::Caller::Member(m) => m.roles.iter().any(|r| r == OWNER),
        crate::principal::Caller::ApiKey(..) => false,
    };
    if touches_owner && !allowed {
        return Err(Error::forbidden(Code::OwnerRequired, "Only an owner can grant or take away the owner role"));
    }
    Ok(())
}

fn session_ended() -> Error {
    Error::new(ErrorKind::Unauthenticated, Code::SessionExpired, "Your session has ended; sign in again")
}

fn invitation_used() -> Error {
    Error::conflict(Code::InvitationUsed, "This invitation has already been used")
}

/// An argon2id PHC string for `password`, computed on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|_| Error::internal("password hashing stopped"))?
    .map_err(|_| Error::internal("password hashing failed"))
}

fn check_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Failed sign-ins per account and per address, in fixed windows; memory
/// is bounded by dropping windows that have ended.
#[derive(Default)]
struct SignInThrottle {
    failures: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
}

impl SignInThrottle {
    const MAX_ENTRIES: usize = 100_000;

    /// Counts an attempt for the account and the address, refusing it
    /// when either is over its limit. The attempt counts as a failure until
    /// [`SignInThrottle::succeeded`]: counted before the password is
    /// checked, so attempts sent all at once cannot outrun the limit.
    fn begin(&self, account: &str, ip: Option<IpAddr>, now: DateTime<Utc>) -> Result<(), Error> {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() >= Self::MAX_ENTRIES {
            failures.retain(|_, (_, start)| now < *start + THROTTLE_WINDOW);
        }
        let keys: Vec<(String, u32)> = std::iter::once((format!("a:{account}"), ACCOUNT_FAILURES))
            .chain(ip.map(|ip| (format!("i:{ip}"), ADDRESS_FAILURES)))
            .collect();
        for (key, limit) in &keys {
            if let Some((n, start)) = failures.get(key)
                && *n >= *limit
                && now < *start + THROTTLE_WINDOW
            {
                let wait = (*start + THROTTLE_WINDOW - now).num_seconds().max(1) as u64;
                return Err(Error::new(
                    ErrorKind::TooManyRequests { retry_after_secs: wait },
                    Code::TooManySignInAttempts,
                    format!("Too many failed sign-in attempts; try again in {wait} seconds"),
                ));
            }
        }
        for (key, _) in keys {
            let entry = failures.entry(key).or_insert((0, now));
            if now >= entry.1 + THROTTLE_WINDOW {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
        Ok(())
    }

    /// The attempt was right: the account starts afresh, and the address's
    /// count forgets this attempt.
    fn succeeded(&self, account: &str, ip: Option<IpAddr>) {
        let mut failures = self.failures.lock().expect("throttle lock");
        failures.remove(&format!("a:{account}"));
        if let Some(entry) = ip.and_then(|ip| failures.get_mut(&format!("i:{ip}"))) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}
