//! The keys access tokens are signed with: generated here (Ed25519 or
//! P-256), stored with the private key sealed under the master key, held in
//! memory, rotated on a schedule or by `keyward signing-key rotate`. A
//! retired key stays in the JWKS (and verifies) until every token it signed
//! has expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Duration;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use keyward_core::Code;
use keyward_core::oauth::{SigningAlgorithm, SigningKey, current_signing_key};
use keyward_core::sealed::Keyring;
use keyward_core::{Error, ErrorKind, ids};
use keyward_store::{OAuthWrite, Store, Write};

use crate::work::Change;

use crate::clock::Clock;
use crate::keys::store_error;

/// A signing key as held in memory.
struct Held {
    record: SigningKey,
    algorithm: Algorithm,
    decoding: DecodingKey,
    /// Only for the key that signs now.
    encoding: Option<EncodingKey>,
    jwk: serde_json::Value,
}

#[derive(Default)]
struct KeySet {
    current: Option<Arc<Held>>,
    by_kid: HashMap<String, Arc<Held>>,
}

pub struct Signer {
    store: Arc<dyn Store>,
    keyring: Option<Arc<Keyring>>,
    clock: Arc<dyn Clock>,
    algorithm: SigningAlgorithm,
    /// A key older than this is replaced before it signs again.
    rotate_after: Duration,
    /// The longest lifetime of a token it signs: how long a retired key
    /// stays published.
    token_lifetime: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// Serialises loading and rotating on this node.
    changing: tokio::sync::Mutex<()>,
    work: Arc<crate::work::UnitOfWork>,
    /// When an unknown `kid` last made this node reload (ms): at most once
    /// a second, so made-up key ids cost no database reads.
    last_miss_reload_ms: AtomicI64,
    /// When the keys were last read (ms): a node without notices (SQLite,
    /// a rotation by the CLI) reads them again after a minute.
    loaded_ms: AtomicI64,
}

/// How long keys read from the store are trusted without reading again.
const RELOAD_AFTER_MS: i64 = 60_000;

fn context(kid: &str) -> Vec<u8> {
    format!("signing key {kid}").into_bytes()
}

fn unavailable() -> Error {
    Error::new(
        ErrorKind::Conflict,
        Code::MasterKeyRequired,
        "Issuing tokens needs a master key to keep signing keys (start keyward with --master-key-file)",
    )
}

/// A new private key of `algorithm`, as PKCS#8 DER.
fn generate(algorithm: SigningAlgorithm) -> Result<Vec<u8>, Error> {
    fn failed(e: impl std::fmt::Display) -> Error {
        Error::internal(format!("generating a signing key: {e}"))
    }
    match algorithm {
        SigningAlgorithm::EdDsa => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            // PKCS#8 v1 (the seed alone): the form JWK derivation reads.
            let key = ed25519_dalek::pkcs8::KeypairBytes { secret_key: ids::random_bytes::<32>(), public_key: None };
            Ok(key.to_pkcs8_der().map_err(failed)?.as_bytes().to_vec())
        }
        SigningAlgorithm::Es256 => {
            use p256::pkcs8::EncodePrivateKey;
            // Nearly every 32 random bytes is a valid scalar.
            let key = loop {
                if let Ok(k) = p256::SecretKey::from_slice(&ids::random_bytes::<32>()) {
                    break k;
                }
            };
            Ok(key.to_pkcs8_der().map_err(failed)?.as_bytes().to_vec())
        }
    }
}

fn jose(algorithm: SigningAlgorithm) -> Algorithm {
    match algorithm {
        SigningAlgorithm::EdDsa => Algorithm::EdDSA,
        SigningAlgorithm::Es256 => Algorithm::ES256,
    }
}

fn encoding_key(algorithm: SigningAlgorithm, der: &[u8]) -> EncodingKey {
    match algorithm {
        SigningAlgorithm::EdDsa => EncodingKey::from_ed_der(der),
        SigningAlgorithm::Es256 => EncodingKey::from_ec_der(der),
    }
}

/// The public JWK of a private key, with its `kid`.
fn public_jwk(algorithm: SigningAlgorithm, der: &[u8], kid: &str) -> Result<Jwk, Error> {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(algorithm, der), jose(algorithm))
        .map_err(|e| Error::internal(format!("deriving a public key: {e}")))?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(jwk)
}

impl Signer {
    pub fn new(
        work: Arc<crate::work::UnitOfWork>,
        store: Arc<dyn Store>,
        keyring: Option<Arc<Keyring>>,
        clock: Arc<dyn Clock>,
        algorithm: SigningAlgorithm,
        rotate_after: Duration,
        token_lifetime: Duration,
    ) -> Self {
        Signer {
            work,
            store,
            keyring,
            clock,
            algorithm,
            rotate_after,
            token_lifetime,
            keys: RwLock::default(),
            changing: tokio::sync::Mutex::new(()),
            last_miss_reload_ms: AtomicI64::new(i64::MIN),
            loaded_ms: AtomicI64::new(i64::MIN),
        }
    }

    fn set(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the signing keys from the store (at start, and when another
    /// node added or retired one).
    pub async fn load(&self) -> Result<(), Error> {
        let _guard = self.changing.lock().await;
        self.load_locked().await
    }

    async fn load_locked(&self) -> Result<(), Error> {
        let now = self.clock.now();
        let records = self.store.signing_keys().await.map_err(store_error)?;
        let current_kid = current_signing_key(&records).map(|k| k.kid.clone());
        let mut set = KeySet::default();
        for record in records.into_iter().filter(|k| k.is_published(now)) {
            let Ok(jwk) = serde_json::from_str::<Jwk>(&record.public_jwk) else {
                tracing::warn!(kid = %record.kid, "a stored signing key's public JWK cannot be read; skipped");
                continue;
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
            let is_current = current_kid.as_deref() == Some(record.kid.as_str());
            // Only the key that signs needs its private half, and only a
            // node holding the master key can open it.
            let encoding = match (&self.keyring, is_current) {
                (Some(ring), true) if ring.has(&record.sealed.key_id) => {
                    let der = ring.open(&record.sealed, &context(&record.kid))?;
                    Some(encoding_key(record.algorithm, &der))
                }
                _ => None,
            };
            let held = Arc::new(Held {
                algorithm: jose(record.algorithm),
                decoding,
                encoding,
                jwk: serde_json::to_value(&jwk).unwrap_or_default(),
                record,
            });
            if is_current {
                set.current = Some(held.clone());
            }
            set.by_kid.insert(held.record.kid.clone(), held);
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.loaded_ms.store(now.timestamp_millis(), Ordering::Release);
        Ok(())
    }

    /// Makes a new signing key the one that signs; the others retire (they
    /// stay published until their last token has expired). Returns its kid.
    pub async fn rotate(&self) -> Result<String, Error> {
        let _guard = self.changing.lock().await;
        self.rotate_locked().await
    }

    async fn rotate_locked(&self) -> Result<String, Error> {
        let keyring = self.keyring.as_ref().ok_or_else(unavailable)?;
        let now = self.clock.now();
        let kid = ids::new_id("sig");
        let der = generate(self.algorithm)?;
        let jwk = public_jwk(self.algorithm, &der, &kid)?;
        let record = SigningKey {
            kid: kid.clone(),
            algorithm: self.algorithm,
            public_jwk: serde_json::to_string(&jwk).map_err(|_| Error::internal("writing a JWK"))?,
            sealed: keyring.seal(&der, &context(&kid)),
            created_at: now,
            retired_at: None,
            drop_after: None,
        };
        // Signing keys belong to no workspace, and the audit log is a
        // workspace's: the rotation is logged (below), not audited.
        let mut change = Change::unaudited("signing keys belong to no workspace")
            .with(Write::OAuth(OAuthWrite::InsertSigningKey(record)));
        // A token signed just before the rotation lives this long yet.
        let drop_after = now + self.token_lifetime + Duration::minutes(1);
        change.push(Write::OAuth(OAuthWrite::RetireSigningKeys { keep: kid.clone(), at: now, drop_after }));
        change.push(Write::OAuth(OAuthWrite::DropSigningKeys { before: now }));
        self.work.commit(change).await.map_err(store_error)?;
        tracing::info!(%kid, algorithm = self.algorithm.as_str(), "signing key rotated");
        self.load_locked().await?;
        Ok(kid)
    }

    /// The key that signs now, made (or replaced, when due) first if need be.
    async fn current(&self) -> Result<Arc<Held>, Error> {
        let now = self.clock.now();
        let usable = |set: &KeySet| {
            set.current.clone().filter(|h| {
                h.encoding.is_some() && !h.record.is_due(self.rotate_after, now) && h.record.algorithm == self.algorithm
            })
        };
        let fresh = now.timestamp_millis().saturating_sub(self.loaded_ms.load(Ordering::Acquire)) < RELOAD_AFTER_MS;
        if let (Some(held), true) = (usable(&self.set()), fresh) {
            return Ok(held);
        }
        let _guard = self.changing.lock().await;
        // Another task (or node) may have rotated meanwhile.
        self.load_locked().await?;
        if let Some(held) = usable(&self.set()) {
            return Ok(held);
        }
        self.rotate_locked().await?;
        usable(&self.set()).ok_or_else(unavailable)
    }

    /// Signs `claims` with the current key (`typ: at+jwt`, RFC 9068).
    pub async fn sign(&self, claims: &impl serde::Serialize) -> Result<String, Error> {
        let held = self.current().await?;
        let mut header = jsonwebtoken::Header::new(held.algorithm);
        header.kid = Some(held.record.kid.clone());
        header.typ = Some("at+jwt".to_owned());
        let key = held.encoding.as_ref().ok_or_else(unavailable)?;
        jsonwebtoken::encode(&header, claims, key).map_err(|e| Error::internal(format!("signing a token: {e}")))
    }

    /// The algorithm and public key of `kid`, if it is published. An
    /// unknown kid makes this node read the keys again (at most once a
    /// second): another node may have rotated.
    pub async fn verifying_key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let found = |set: &KeySet| set.by_kid.get(kid).map(|h| (h.algorithm, h.decoding.clone()));
        if let Some(k) = found(&self.set()) {
            return Some(k);
        }
        let now_ms = self.clock.now().timestamp_millis();
        let last = self.last_miss_reload_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < 1000
            || self.last_miss_reload_ms.compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return None;
        }
        if let Err(e) = self.load().await {
            tracing::debug!(error = %e.message, "reloading signing keys failed");
        }
        found(&self.set())
    }

    /// The published public keys (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.set();
        let now = self.clock.now();
        let mut keys: Vec<&Arc<Held>> = set.by_kid.values().filter(|h| h.record.is_published(now)).collect();
        keys.sort_by_key(|h| std::cmp::Reverse((h.record.created_at, h.record.kid.clone())));
        serde_json::json!({"keys": keys.iter().map(|h| h.jwk.clone()).collect::<Vec<_>>()})
    }

    /// Every published key, newest first.
    pub fn published(&self) -> Vec<SigningKey> {
        let set = self.set();
        let mut out: Vec<SigningKey> = set.by_kid.values().map(|h| h.record.clone()).collect();
        out.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        out
    }
}
