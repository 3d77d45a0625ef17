//! Who is calling: an API key of a workspace, a signed-in member (session
//! cookie or bearer JWT), or the operator. Handlers only ask "which
//! workspace?" and "may it do X?"; services answer the second.

use std::sync::Arc;

use keyward_core::Code;
use keyward_core::audit::{Actor, ActorKind};
use keyward_core::authority::{Authority, Refusal};
use keyward_core::key::KeyGrant;
use keyward_core::member::Role;
use keyward_core::scope::{Flags, Grants, Permission, Scope};
use keyward_core::verify::VerifyCode;
use keyward_core::{Error, ErrorKind};

use crate::verifier::Verifier;
use keyward_verifier::cache::CachedKey;

/// Who is calling, and from where (recorded in the audit log).
#[derive(Debug, Clone)]
pub struct Principal {
    pub caller: Caller,
    /// The client's address (behind a trusted proxy, the one it names).
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Caller {
    /// An API key; with roles, also what they grant (untagged roles and
    /// built-in ones: keyward's own objects carry no tags).
    ApiKey(Arc<CachedKey>, Option<Arc<Vec<Scope>>>),
    /// A member signed in to one workspace.
    Member(Arc<MemberCaller>),
    /// An operator acting on the database directly (`keyward bootstrap`,
    /// `keyward workspace …`): every permission, in one workspace.
    System { workspace_id: String },
}

/// A signed-in member, as of this request.
#[derive(Debug, Clone)]
pub struct MemberCaller {
    pub member_id: String,
    pub email: String,
    pub name: String,
    pub workspace_id: String,
    pub roles: Vec<String>,
    /// What the roles grant together.
    pub scopes: Vec<Scope>,
    pub session_id: String,
    /// Re-authenticated within the last five minutes.
    pub fresh: bool,
    pub fresh_until: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Authenticated by the session cookie (unsafe requests then need a
    /// same-origin `Origin`), not a bearer JWT.
    pub via_cookie: bool,
}

/// A key's scopes (with its roles') and flags.
fn key_grants<'a>(key: &'a CachedKey, with_roles: &'a Option<Arc<Vec<Scope>>>) -> Grants<'a> {
    match with_roles {
        Some(scopes) => Grants { scopes, flags: key.flags },
        None => key.grants(),
    }
}

impl Principal {
    /// Authenticates a presented bearer token. Unknown, malformed, revoked,
    /// inactive and wrong-secret keys all get the same answer, so a caller
    /// learns nothing about which keys exist.
    /// `ip`: the caller's address (a key limited to addresses authenticates
    /// only from one of them).
    pub async fn authenticate(verifier: &Verifier, token: &str, ip: Option<std::net::IpAddr>) -> Result<Self, Error> {
        let v = verifier.authenticate_caller(token, ip).await?;
        match (v.decision.code, v.key) {
            (VerifyCode::Valid, Some(key)) => Self::for_key(verifier, key, None).await,
            (VerifyCode::Expired, _) => Err(Error::expired_api_key()),
            _ => Err(Error::invalid_api_key()),
        }
    }

    /// A key as the caller; with `token_scopes` (an access token issued
    /// for fewer permissions), only those of the key's permissions.
    pub async fn for_key(
        verifier: &Verifier,
        key: Arc<CachedKey>,
        token_scopes: Option<Vec<Scope>>,
    ) -> Result<Self, Error> {
        if let Some(scopes) = token_scopes {
            // Both the key and the token's scope must allow: the scopes the
            // key grants that the token names.
            let roles = verifier.roles_for(&key).await?;
            let held = keyward_verifier::decide::scopes_with_roles(&key, &roles, None);
            let grants = Grants { scopes: &held, flags: key.flags };
            let narrowed: Vec<Scope> = scopes.into_iter().filter(|s| grants.covers_scope(s, true)).collect();
            return Ok(Caller::ApiKey(Arc::new(key.narrowed(narrowed)), None).into());
        }
        let with_roles = match key.roles().is_empty() {
            true => None,
            false => {
                let roles = verifier.roles_for(&key).await?;
                Some(Arc::new(keyward_verifier::decide::scopes_with_roles(&key, &roles, None)))
            }
        };
        Ok(Caller::ApiKey(key, with_roles).into())
    }

    /// The operator, acting in one workspace.
    pub fn system(workspace_id: impl Into<String>) -> Self {
        Caller::System { workspace_id: workspace_id.into() }.into()
    }

    /// The same caller, as of a request from `ip` with `user_agent`.
    pub fn from_client(self, ip: Option<std::net::IpAddr>, user_agent: Option<&str>) -> Self {
        Principal { ip, user_agent: user_agent.map(clean_user_agent), ..self }
    }

    pub fn workspace_id(&self) -> &str {
        match &self.caller {
            Caller::ApiKey(k, _) => &k.workspace_id,
            Caller::Member(m) => &m.workspace_id,
            Caller::System { workspace_id } => workspace_id,
        }
    }

    /// The caller as the audit log names it.
    pub fn actor(&self) -> Actor {
        match &self.caller {
            Caller::ApiKey(k, _) => {
                Actor { kind: ActorKind::Key, id: Some(k.id.to_string()), name: Some(k.name.to_string()) }
            }
            Caller::Member(m) => {
                Actor { kind: ActorKind::Member, id: Some(m.member_id.clone()), name: Some(m.email.clone()) }
            }
            Caller::System { .. } => Actor::system(),
        }
    }

    /// Refuses with 403 unless the principal holds `permission` (`resource:action`).
    pub fn require(&self, permission: &str) -> Result<(), Error> {
        let required = Permission::parse_required(permission).expect("handlers name valid permissions");
        self.require_parsed(&required)
    }

    /// [`Principal::require`] with the permission parsed once (the hot
    /// paths' own permissions, read on every request).
    pub fn require_parsed(&self, required: &Permission) -> Result<(), Error> {
        match &self.caller {
            Caller::ApiKey(k, with_roles) => {
                let grants = key_grants(k, with_roles);
                if grants.allows(required) {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::Forbidden, Code::InsufficientPermissions, grants.refusal(Some(required))))
                }
            }
            Caller::Member(m) => {
                let grants = Grants { scopes: &m.scopes, flags: Flags::default() };
                if grants.allows(required) {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::Forbidden,
                        Code::InsufficientPermissions,
                        format!("Insufficient permissions. Your roles lack the {required} permission."),
                    ))
                }
            }
            Caller::System { .. } => Ok(()),
        }
    }

    /// What the caller holds, for the one authority check (`custom`: the
    /// workspace's own roles).
    pub fn authority(&self, custom: &[Role]) -> Authority {
        match &self.caller {
            Caller::ApiKey(k, _) => Authority::of_key(&k.record, custom),
            Caller::Member(m) => Authority::person(&m.roles, custom),
            Caller::System { .. } => Authority::operator(),
        }
    }

    /// The one authority check: refuses (403 `cannot_grant`, naming the
    /// first permission or restriction that exceeds) whatever would carry
    /// more than the caller holds — a key as it would be, a role, the roles
    /// given to a person, an invitation, a token, a revealed secret.
    pub fn may_give(&self, custom: &[Role], what: &Authority) -> Result<(), Error> {
        self.authority(custom).covers(what).map_err(Refusal::into_error)
    }

    /// The signed-in member, when a member is calling.
    pub fn member(&self) -> Option<&MemberCaller> {
        match &self.caller {
            Caller::Member(m) => Some(m),
            _ => None,
        }
    }
}

/// A `User-Agent` as recorded: control characters dropped, at most 256
/// characters.
pub fn clean_user_agent(ua: &str) -> String {
    ua.chars().filter(|c| !c.is_control()).take(256).collect()
}

impl From<Caller> for Principal {
    fn from(caller: Caller) -> Self {
        Principal { caller, ip: None, user_agent: None }
    }
}
