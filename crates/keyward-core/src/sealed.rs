//! Recoverable secrets: envelope encryption under the master key.
//!
//! Each secret is encrypted (AES-256-GCM) with a data key of its own; the
//! data key is encrypted (wrapped) with the master key. A sealed secret
//! names the master key that wrapped it by its id (a keyed fingerprint, so
//! the id reveals nothing of the key), so rotating the master key re-wraps
//! only the small data keys, and a server missing the key some data was
//! written with can say so instead of failing to decrypt.
//!
//! The keyring holds the current master key first, then older ones still
//! needed to read data not yet re-wrapped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Code;
use crate::Error;
use crate::hash::hex;
use crate::ids::random_bytes;

const FORMAT: &[u8; 3] = b"kw1";
const NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = 32 + 16;
const HEADER_LEN: usize = FORMAT.len() + NONCE_LEN + WRAPPED_LEN + NONCE_LEN;

/// A secret encrypted under a data key wrapped by the master key `key_id`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub key_id: String,
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({}, {} bytes)", self.key_id, self.blob.len())
    }
}

struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The master keys a server holds: the current one first.
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({:?})", self.ids())
    }
}

fn unreadable() -> Error {
    Error::internal("a recoverable secret could not be decrypted")
}

impl Keyring {
    /// Master keys as hex, 64 characters (32 bytes) each, separated by
    /// newlines, commas or spaces; the first is the current one.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for part in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
            let bytes = crate::hash::parse_hex32(part).ok_or_else(|| {
                Error::invalid(
                    Code::InvalidMasterKey,
                    "a master key must be exactly 64 hexadecimal characters (32 bytes)",
                )
            })?;
            keys.push(MasterKey::new(&bytes));
        }
        if keys.is_empty() {
            return Err(Error::invalid(Code::InvalidMasterKey, "no master key given"));
        }
        Ok(Keyring { keys })
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Seals `plaintext`, bound to `context` (the owner's id: a sealed
    /// secret moved to another record does not open there).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> SealedSecret {
        let data_key: [u8; 32] = random_bytes();
        let (wrap_nonce, wrapped) = self.wrap(&data_key);
        let data_nonce: [u8; NONCE_LEN] = random_bytes();
        let cipher = Aes256Gcm::new_from_slice(&data_key).expect("a 32-byte key");
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&data_nonce), Payload { msg: plaintext, aad: context })
            .expect("AES-GCM encrypts any secret");
        let mut blob = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        blob.extend_from_slice(FORMAT);
        blob.extend_from_slice(&wrap_nonce);
        blob.extend_from_slice(&wrapped);
        blob.extend_from_slice(&data_nonce);
        blob.extend_from_slice(&ciphertext);
        SealedSecret { key_id: self.current_id().to_owned(), blob }
    }

    /// A data key encrypted under the current master key: (nonce, ciphertext).
    fn wrap(&self, data_key: &[u8; 32]) -> ([u8; NONCE_LEN], Vec<u8>) {
        let master = &self.keys[0];
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let wrapped = master
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: data_key, aad: master.id.as_bytes() })
            .expect("AES-GCM encrypts 32 bytes");
        (nonce, wrapped)
    }

    fn data_key(&self, sealed: &SealedSecret) -> Result<[u8; 32], Error> {
        let master = self.keys.iter().find(|k| k.id == sealed.key_id).ok_or_else(|| {
            Error::internal(format!("the master key {} this secret was sealed with is not configured", sealed.key_id))
        })?;
        let b = &sealed.blob;
        if b.len() < HEADER_LEN || &b[..3] != FORMAT {
            return Err(unreadable());
        }
        let wrap_nonce = &b[3..3 + NONCE_LEN];
        let wrapped = &b[3 + NONCE_LEN..3 + NONCE_LEN + WRAPPED_LEN];
        let key = master
            .cipher
            .decrypt(Nonce::from_slice(wrap_nonce), Payload { msg: wrapped, aad: master.id.as_bytes() })
            .map_err(|_| unreadable())?;
        key.try_into().map_err(|_| unreadable())
    }

    pub fn open(&self, sealed: &SealedSecret, context: &[u8]) -> Result<Vec<u8>, Error> {
        let data_key = self.data_key(sealed)?;
        let b = &sealed.blob;
        let data_nonce = &b[HEADER_LEN - NONCE_LEN..HEADER_LEN];
        let cipher = Aes256Gcm::new_from_slice(&data_key).expect("a 32-byte key");
        cipher
            .decrypt(Nonce::from_slice(data_nonce), Payload { msg: &b[HEADER_LEN..], aad: context })
            .map_err(|_| unreadable())
    }

    /// The same secret with its data key wrapped by the current master key
    /// (the ciphertext itself is unchanged).
    pub fn rewrap(&self, sealed: &SealedSecret) -> Result<SealedSecret, Error> {
        let (wrap_nonce, wrapped) = self.wrap(&self.data_key(sealed)?);
        let mut blob = sealed.blob.clone();
        blob[3..3 + NONCE_LEN].copy_from_slice(&wrap_nonce);
        blob[3 + NONCE_LEN..3 + NONCE_LEN + WRAPPED_LEN].copy_from_slice(&wrapped);
        Ok(SealedSecret { key_id: self.current_id().to_owned(), blob })
    }
}

impl MasterKey {
    fn new(bytes: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes).expect("HMAC takes any key");
        mac.update(b"keyward master key id v1");
        let id = format!("mk_{}", &hex(&mac.finalize().into_bytes())[..16]);
        MasterKey { id, cipher: Aes256Gcm::new_from_slice(bytes).expect("a 32-byte key") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const B: &str = "0202020202020202020202020202020202020202020202020202020202020202";

    #[test]
    fn seals_and_opens_bound_to_its_context() {
        let ring = Keyring::parse(A).unwrap();
        let sealed = ring.seal(b"kw_live_secret", b"key_1");
        assert_eq!(sealed.key_id, ring.current_id());
        assert!(!sealed.blob.windows(14).any(|w| w == b"kw_live_secret"));
        assert_eq!(ring.open(&sealed, b"key_1").unwrap(), b"kw_live_secret");
        assert!(ring.open(&sealed, b"key_2").is_err(), "moved to another key, it does not open");
        let mut tampered = sealed.clone();
        *tampered.blob.last_mut().unwrap() ^= 1;
        assert!(ring.open(&tampered, b"key_1").is_err());
    }

    #[test]
    fn rotation_rewraps_under_the_new_key_and_old_data_needs_the_old_key() {
        let old = Keyring::parse(A).unwrap();
        let sealed = old.seal(b"s3cret", b"k");
        let both = Keyring::parse(&format!("{B}\n{A}\n")).unwrap();
        assert_eq!(both.open(&sealed, b"k").unwrap(), b"s3cret", "old data opens while both are held");
        let rewrapped = both.rewrap(&sealed).unwrap();
        assert_eq!(rewrapped.key_id, both.current_id());
        assert_ne!(rewrapped.key_id, sealed.key_id);
        let new_only = Keyring::parse(B).unwrap();
        assert_eq!(new_only.open(&rewrapped, b"k").unwrap(), b"s3cret");
        let e = new_only.open(&sealed, b"k").unwrap_err();
        assert!(e.message.contains(&sealed.key_id), "names the missing key: {}", e.message);
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_hex() {
        for bad in ["", "abcd", &A[..62], &format!("{A}00"), &A.replace('0', "g")] {
            assert_eq!(Keyring::parse(bad).unwrap_err().code, Code::InvalidMasterKey, "{bad:?}");
        }
        assert_ne!(Keyring::parse(A).unwrap().current_id(), Keyring::parse(B).unwrap().current_id());
    }
}
