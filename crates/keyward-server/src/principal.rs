//! Who is calling. Today a caller is an API key of a workspace; signed-in
//! members and OAuth access tokens become further variants, and handlers,
//! which only ask "which workspace?" and "may it do X?", do not change.

use std::sync::Arc;

use keyward_core::scope::Permission;
use keyward_core::verify::VerifyCode;
use keyward_core::{Error, ErrorKind};

use crate::cache::CachedKey;
use crate::verifier::Verifier;

#[derive(Debug, Clone)]
pub enum Principal {
    ApiKey(Arc<CachedKey>),
    /// An operator acting on the database directly (`keyward bootstrap`,
    /// `keyward workspace …`): every permission, in one workspace.
    System {
        workspace_id: String,
    },
}

impl Principal {
    /// Authenticates a presented bearer token. Unknown, malformed, revoked,
    /// inactive and wrong-secret keys all get the same answer, so a caller
    /// learns nothing about which keys exist.
    pub async fn authenticate(verifier: &Verifier, token: &str) -> Result<Self, Error> {
        let v = verifier.authenticate_caller(token).await?;
        match (v.decision.code, v.key) {
            (VerifyCode::Valid, Some(key)) => Ok(Principal::ApiKey(key)),
            (VerifyCode::Expired, _) => Err(Error::expired_api_key()),
            _ => Err(Error::invalid_api_key()),
        }
    }

    /// The operator, acting in one workspace.
    pub fn system(workspace_id: impl Into<String>) -> Self {
        Principal::System { workspace_id: workspace_id.into() }
    }

    pub fn workspace_id(&self) -> &str {
        match self {
            Principal::ApiKey(k) => &k.workspace_id,
            Principal::System { workspace_id } => workspace_id,
        }
    }

    /// Refuses with 403 unless the principal holds `permission` (`resource:action`).
    pub fn require(&self, permission: &str) -> Result<(), Error> {
        let required = Permission::parse_required(permission).expect("handlers name valid permissions");
        match self {
            Principal::ApiKey(k) => {
                let grants = k.grants();
                if grants.allows(&required) {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::Forbidden, "insufficient_permissions", grants.refusal(Some(&required))))
                }
            }
            Principal::System { .. } => Ok(()),
        }
    }
}
