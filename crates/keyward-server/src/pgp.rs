//! OpenPGP keys for file encryption: upload (parsed and checked), list,
//! edit, delete, and the key a stream is encrypted to or decrypted with.
//! A private key and its passphrase are sealed under the master key and
//! never leave this service but to decrypt. Every upload, edit, delete and
//! use is audited.

use std::sync::Arc;

use keyward_core::Code;
use keyward_core::audit::Target;
use keyward_core::pgp::{self, PgpKey};
use keyward_core::sealed::Keyring;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{PgpWrite, Store, StoreError, Write};

use crate::work::Change;

use crate::clock::Clock;
use crate::keys::{master_key_required, store_error};
use crate::principal::Principal;

pub const PGP_READ: &str = "pgp:read";
pub const PGP_MANAGE: &str = "pgp:manage";
pub const PGP_USE: &str = "pgp:use";

pub fn pgp_key_not_found() -> Error {
    Error::new(ErrorKind::NotFound, Code::PgpKeyNotFound, "PGP key not found")
}

/// What an upload names.
#[derive(Debug, Default)]
pub struct Upload {
    pub name: String,
    pub description: Option<String>,
    /// `pgp` (or `gpg`, the same format).
    pub key_type: String,
    pub contents: String,
    pub private: bool,
    pub passphrase: Option<String>,
}

/// An edit; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct PgpPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
}

/// A stored private key, opened to decrypt one stream.
pub struct Decryptor {
    pub key: Box<pgp::SignedSecretKey>,
    pub passphrase: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SealedPrivate {
    key: String,
    passphrase: Option<String>,
}

pub struct PgpService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keyring: Option<Arc<Keyring>>,
    audit: Arc<crate::audit::AuditLog>,
    /// Parsing and unlocking keys (S2K derivations, at costs their makers
    /// chose) run on the blocking pool, this many at once: never on the
    /// async workers that verify keys.
    unlocking: Arc<tokio::sync::Semaphore>,
}

impl PgpService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
        audit: Arc<crate::audit::AuditLog>,
    ) -> Self {
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        PgpService { store, clock, keyring, audit, unlocking: Arc::new(tokio::sync::Semaphore::new(parallel)) }
    }

    /// A turn at unlocking a key (held while a stream's session key is
    /// decrypted).
    pub async fn unlock_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.unlocking.clone().acquire_owned().await.map_err(|_| Error::internal("shutting down"))
    }

    /// Runs `work` (parsing or unlocking a key) on the blocking pool, in
    /// its turn.
    async fn costly<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let turn = self.unlock_turn().await?;
        let done = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(turn);
            out
        });
        done.await.map_err(|_| Error::internal("reading a PGP key failed"))
    }

    /// The workspace's keys, by name.
    pub async fn list(&self, who: &Principal) -> Result<Vec<PgpKey>, Error> {
        who.require(PGP_READ)?;
        self.store.list_pgp_keys(who.workspace_id()).await.map_err(store_error)
    }

    pub async fn get(&self, who: &Principal, id: &str) -> Result<PgpKey, Error> {
        who.require(PGP_READ)?;
        self.load(who, id).await
    }

    async fn load(&self, who: &Principal, id: &str) -> Result<PgpKey, Error> {
        self.store.get_pgp_key(who.workspace_id(), id).await.map_err(store_error)?.ok_or_else(pgp_key_not_found)
    }

    /// Parses and checks the key, then stores it (a private part sealed).
    pub async fn upload(&self, who: &Principal, upload: Upload) -> Result<PgpKey, Error> {
        who.require(PGP_MANAGE)?;
        let name = pgp::validate_name(&upload.name)?;
        let description = pgp::validate_description(upload.description)?;
        if !matches!(upload.key_type.to_ascii_lowercase().as_str(), "pgp" | "gpg") {
            return Err(Error::invalid(Code::InvalidType, "type must be pgp (OpenPGP keys, as GnuPG makes them)"));
        }
        let passphrase = upload.passphrase.filter(|p| !p.is_empty());
        let (contents, private, pass) = (upload.contents, upload.private, passphrase.clone());
        let (info, parsed) = self.costly(move || pgp::inspect(&contents, private, pass.as_deref())).await??;
        let now = self.clock.now();
        let id = ids::new_id("pgp");
        let sealed = match parsed.secret_armored() {
            Some(armored) => {
                let keyring = self.keyring.as_ref().ok_or_else(|| {
                    Error::invalid(
                        Code::MasterKeyRequired,
                        "Private keys are stored sealed under the master key: start keyward with \
                         --master-key-file or KEYWARD_MASTER_KEY",
                    )
                })?;
                let plain = serde_json::to_vec(&SealedPrivate { key: armored, passphrase })
                    .map_err(|_| Error::internal("a private key could not be sealed"))?;
                Some(keyring.seal(&plain, id.as_bytes()))
            }
            None => None,
        };
        let key = PgpKey {
            id,
            workspace_id: who.workspace_id().to_owned(),
            name,
            description,
            info,
            public_key: parsed.public_armored(),
            uploaded_at: now,
            updated_at: now,
        };
        let entry = self.entry(who, "pgp_key.uploaded", &key, summary(&key));
        self.commit(PgpWrite::InsertKey { key: key.clone(), sealed }, entry).await?;
        Ok(key)
    }

    pub async fn update(&self, who: &Principal, id: &str, patch: PgpPatch) -> Result<PgpKey, Error> {
        who.require(PGP_MANAGE)?;
        let mut key = self.load(who, id).await?;
        let was = summary(&key);
        if let Some(name) = patch.name {
            key.name = pgp::validate_name(&name)?;
        }
        if let Some(description) = patch.description {
            key.description = pgp::validate_description(description)?;
        }
        key.updated_at = self.clock.now();
        let entry = self.entry(who, "pgp_key.updated", &key, crate::audit::diff(&was, &summary(&key)));
        self.commit(PgpWrite::UpdateKey(key.clone()), entry).await?;
        Ok(key)
    }

    pub async fn delete(&self, who: &Principal, id: &str) -> Result<(), Error> {
        who.require(PGP_MANAGE)?;
        let key = self.load(who, id).await?;
        let entry = self.entry(who, "pgp_key.deleted", &key, summary(&key));
        self.commit(PgpWrite::DeleteKey { workspace_id: key.workspace_id.clone(), id: key.id }, entry).await
    }

    /// The armored public key (a private upload's public part).
    pub async fn public_key(&self, who: &Principal, id: &str) -> Result<PgpKey, Error> {
        self.get(who, id).await
    }

    /// The key to encrypt one stream to: refused when it has expired or was
    /// revoked. The use is audited before the stream starts.
    pub async fn for_encryption(&self, who: &Principal, id: &str) -> Result<pgp::SignedPublicKey, Error> {
        who.require(PGP_USE)?;
        let key = self.load(who, id).await?;
        if key.info.revoked {
            return Err(Error::invalid(Code::KeyRevoked, "This PGP key was revoked by its owner: it cannot encrypt"));
        }
        if !key.info.usable(self.clock.now()) {
            return Err(Error::invalid(Code::KeyExpired, "This PGP key has expired: it cannot encrypt"));
        }
        let public = pgp::read_public(&key.public_key)?;
        let entry =
            self.entry(who, "pgp_key.encrypted", &key, serde_json::json!({"fingerprint": key.info.fingerprint}));
        self.audit.work().commit(Change::of(entry)).await.map_err(store_error)?;
        Ok(public)
    }

    /// The private key to decrypt one stream with (an expired or revoked
    /// key still decrypts what was encrypted to it). Audited first.
    pub async fn for_decryption(&self, who: &Principal, id: &str) -> Result<Decryptor, Error> {
        who.require(PGP_USE)?;
        let key = self.load(who, id).await?;
        if !key.info.private {
            return Err(Error::invalid(
                Code::NoPrivateKey,
                "This PGP key was uploaded without its private part: it can encrypt, not decrypt",
            ));
        }
        let keyring = self.keyring.as_ref().ok_or_else(master_key_required)?;
        let sealed = self
            .store
            .pgp_sealed(&key.workspace_id, &key.id)
            .await
            .map_err(store_error)?
            .ok_or_else(pgp_key_not_found)?;
        let plain = keyring.open(&sealed, key.id.as_bytes())?;
        let private: SealedPrivate =
            serde_json::from_slice(&plain).map_err(|_| Error::internal("a sealed private key cannot be read"))?;
        let armored = private.key;
        let secret = self.costly(move || pgp::read_secret(&armored)).await??;
        let entry =
            self.entry(who, "pgp_key.decrypted", &key, serde_json::json!({"fingerprint": key.info.fingerprint}));
        self.audit.work().commit(Change::of(entry)).await.map_err(store_error)?;
        Ok(Decryptor { key: Box::new(secret), passphrase: private.passphrase })
    }

    fn entry(&self, who: &Principal, action: &str, key: &PgpKey, changes: serde_json::Value) -> Write {
        self.audit.write(who, action, Target::new("pgp_key", &key.id, Some(&key.name)), changes)
    }

    async fn commit(&self, write: PgpWrite, entry: Write) -> Result<(), Error> {
        let mut change = Change::of(Write::Pgp(write));
        change.push(entry);
        self.audit.work().commit(change).await.map_err(|e| match e {
            StoreError::NotFound => pgp_key_not_found(),
            other => store_error(other),
        })
    }
}

/// What an audit entry shows of a key (never its private part).
fn summary(k: &PgpKey) -> serde_json::Value {
    serde_json::json!({
        "name": k.name,
        "description": k.description,
        "fingerprint": k.info.fingerprint,
        "private": k.info.private,
    })
}
