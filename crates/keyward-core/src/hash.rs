//! What is stored instead of a secret: a keyed hash, tagged with its scheme.
//!
//! Secrets are ≥128-bit random strings, so a fast keyed hash (HMAC-SHA-256
//! under a server key kept outside the database) is as strong as a slow
//! password hash here, and keeps verification in the sub-microsecond range.
//! The scheme travels with every stored hash so it can change without
//! breaking existing keys.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Code;
use crate::token::ParsedToken;

type HmacSha256 = Hmac<Sha256>;

/// How a stored digest was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashScheme {
    /// Native keys: HMAC-SHA-256(server key, id ‖ secret).
    HmacV1,
    /// Imported plaintext keys: HMAC-SHA-256(server key, whole token).
    HmacTokenV1,
    /// Imported as a foreign SHA-256 of the whole token; re-hashed to
    /// [`HashScheme::HmacTokenV1`] on the first successful verification.
    Sha256,
}

impl HashScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            HashScheme::HmacV1 => "hmac-sha256-v1",
            HashScheme::HmacTokenV1 => "hmac-sha256-token-v1",
            HashScheme::Sha256 => "sha256",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hmac-sha256-v1" => Some(HashScheme::HmacV1),
            "hmac-sha256-token-v1" => Some(HashScheme::HmacTokenV1),
            "sha256" => Some(HashScheme::Sha256),
            _ => None,
        }
    }
}

/// A digest and the scheme that produced it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash {
    pub scheme: HashScheme,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({})", self.scheme.as_str())
    }
}

/// The minimum length of the server hash key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Computes and checks keyed hashes. Cheap to clone; the HMAC key schedule
/// is computed once and copied per use.
#[derive(Clone)]
pub struct SecretHasher {
    mac: HmacSha256,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHasher(<key redacted>)")
    }
}

impl SecretHasher {
    /// `key` must hold at least [`MIN_KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<Self, crate::Error> {
        if key.len() < MIN_KEY_LEN {
            return Err(crate::Error::invalid(
                Code::HashKeyTooShort,
                format!("the hash key must be at least {MIN_KEY_LEN} bytes"),
            ));
        }
        let mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        Ok(Self { mac })
    }

    fn hmac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    pub fn native(&self, token: &ParsedToken<'_>) -> SecretHash {
        SecretHash { scheme: HashScheme::HmacV1, digest: self.hmac(&[token.id.as_bytes(), token.secret.as_bytes()]) }
    }

    pub fn whole_token(&self, token: &str) -> SecretHash {
        SecretHash { scheme: HashScheme::HmacTokenV1, digest: self.hmac(&[token.as_bytes()]) }
    }

    /// Recomputes `stored`'s digest from a presented token and compares in
    /// constant time. `parsed` is the token's native parse, if it has one.
    pub fn matches(&self, stored: &SecretHash, token: &str, parsed: Option<&ParsedToken<'_>>) -> bool {
        let digest = match stored.scheme {
            HashScheme::HmacV1 => match parsed {
                Some(p) => self.native(p).digest,
                None => return false,
            },
            HashScheme::HmacTokenV1 => self.whole_token(token).digest,
            HashScheme::Sha256 => sha256(token),
        };
        // As four words: subtle compares a byte slice one byte at a time.
        bool::from(words(&digest).ct_eq(&words(&stored.digest)))
    }

    /// A keyed digest of `data` for the purpose `label` (session and
    /// invitation tokens are stored as these, never in the clear).
    pub fn digest(&self, label: &str, data: &[u8]) -> [u8; 32] {
        self.hmac(&[b"keyward ", label.as_bytes(), b"\0", data])
    }

    /// A secret derived from the hash key for the purpose `label` (the
    /// session JWT signing key), so no second secret needs keeping.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        self.hmac(&[b"keyward derived key v1\0", label.as_bytes()])
    }

    /// The key of `workspace_id`'s replica digests: what an embedded
    /// verifier of that workspace checks presented secrets with. Derived
    /// one way from the hash key, so holding it reveals nothing of the
    /// hash key, of another workspace's, or of anything else derived.
    pub fn replica_key(&self, workspace_id: &str) -> [u8; 32] {
        self.derive(&format!("replica digest v1 {workspace_id}"))
    }

    /// The hasher of `workspace_id`'s replica digests (same schemes, under
    /// [`SecretHasher::replica_key`]).
    pub fn replica(&self, workspace_id: &str) -> SecretHasher {
        SecretHasher::new(&self.replica_key(workspace_id)).expect("a derived key is 32 bytes")
    }

    /// A public fingerprint of the key, stored beside the data so that a
    /// server started with the wrong key refuses to run instead of rejecting
    /// every key.
    pub fn fingerprint(&self) -> String {
        hex(&self.hmac(&[b"keyward hash key fingerprint v1"])[..16])
    }
}

pub fn sha256(data: &str) -> [u8; 32] {
    Sha256::digest(data.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    parse_hex(s)
}

/// Exactly `N` bytes written as `2N` hexadecimal digits.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// A digest as the four 64-bit words of its bytes.
fn words(digest: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_ne_bytes(digest[i * 8..i * 8 + 8].try_into().expect("eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Environment, generate, parse};

    fn hasher() -> SecretHasher {
        SecretHasher::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn native_hash_matches_only_its_token() {
        let h = hasher();
        let t = generate("kw", Environment::Live);
        let p = parse(t.expose()).unwrap();
        let stored = h.native(&p);
        assert!(h.matches(&stored, t.expose(), Some(&p)));
        let other = generate("kw", Environment::Live);
        let q = parse(other.expose()).unwrap();
        assert!(!h.matches(&stored, other.expose(), Some(&q)));
        assert!(!h.matches(&stored, t.expose(), None));
    }

    #[test]
    fn hashes_depend_on_the_server_key() {
        let t = generate("kw", Environment::Live);
        let p = parse(t.expose()).unwrap();
        let other = SecretHasher::new(&[8u8; 32]).unwrap();
        assert_ne!(hasher().native(&p), other.native(&p));
        assert_ne!(hasher().fingerprint(), other.fingerprint());
    }

    #[test]
    fn foreign_hashes_match_the_whole_token() {
        let h = hasher();
        let stored = SecretHash { scheme: HashScheme::Sha256, digest: sha256("zta_live_abc") };
        assert!(h.matches(&stored, "zta_live_abc", None));
        assert!(!h.matches(&stored, "zta_live_abd", None));
        let plain = h.whole_token("zta_live_abc");
        assert!(h.matches(&plain, "zta_live_abc", None));
    }

    #[test]
    fn hex_round_trip_and_short_keys() {
        let d = sha256("x");
        assert_eq!(parse_hex32(&hex(&d)), Some(d));
        assert_eq!(parse_hex32("zz"), None);
        assert!(SecretHasher::new(&[1u8; 31]).is_err());
    }
}
