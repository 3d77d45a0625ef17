//! OpenPGP keys uploaded for file encryption: what a key is (fingerprint,
//! algorithm, user ids, lifetime, whether it can encrypt), whether an
//! upload is acceptable, and encrypting to it or decrypting with it from
//! one stream to another (the caller brings the reader and the writer; no
//! IO of its own). Built on rPGP (`pgp`).

use std::io::{BufRead, Cursor, Read, Write};

use chrono::{DateTime, Utc};
use pgp::composed::{ArmorOptions, Message, MessageBuilder, PublicOrSecret};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Password, PublicParams};

use crate::Code;
use crate::error::Error;

pub use pgp::composed::{SignedPublicKey, SignedSecretKey};

/// Largest accepted `contents` (characters): keys are kilobytes; a big
/// keyring is not a key.
pub const MAX_CONTENTS_LEN: usize = 256 * 1024;
/// Most subkeys one upload may carry: every one is unlocked to check the
/// passphrase, at a cost its maker chose.
pub const MAX_SUBKEYS: usize = 16;
/// Argon2 passphrase protection accepted at most (RFC 9580 §3.7.1.4): the
/// memory exponent (2^18 KiB = 256 MiB) and the passes.
pub const MAX_ARGON2_M_ENC: u8 = 18;
pub const MAX_ARGON2_PASSES: u8 = 8;

/// What an uploaded key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The primary key's fingerprint, upper-case hex (as GnuPG prints it).
    pub fingerprint: String,
    /// Its 64-bit key id, upper-case hex.
    pub key_id: String,
    /// `RSA 3072`, `EdDSA Ed25519 + ECDH Curve25519`, …: the primary key and
    /// the encryption subkey.
    pub algorithm: String,
    pub user_ids: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub private: bool,
    pub has_passphrase: bool,
}

impl KeyInfo {
    /// Whether the key may encrypt at `now`: neither expired nor revoked.
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A stored key: what it is, its public part (armored), and who holds it.
/// The private part, when uploaded, is kept sealed apart from this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgpKey {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub description: Option<String>,
    pub info: KeyInfo,
    pub public_key: String,
    pub uploaded_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Longest key name and description (characters).
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_DESCRIPTION_LEN: usize = 500;

/// A key name: 1 to 100 characters, no control characters, not blank.
pub fn validate_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            Code::InvalidName,
            format!("name must be 1 to {MAX_NAME_LEN} characters, without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// An optional description: blank is none.
pub fn validate_description(d: Option<String>) -> Result<Option<String>, Error> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN || d.chars().any(|c| c.is_control() && c != '\n') => {
            Err(Error::invalid(
                Code::InvalidDescription,
                format!("description must be at most {MAX_DESCRIPTION_LEN} characters, without control characters"),
            ))
        }
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// A parsed upload: what it is, and the key itself.
pub enum Parsed {
    Public(Box<SignedPublicKey>),
    Secret(Box<SignedSecretKey>),
}

impl Parsed {
    /// The public part, ASCII-armored (what `GET …/public` answers).
    pub fn public_armored(&self) -> String {
        let public = match self {
            Parsed::Public(k) => k.as_ref().clone(),
            Parsed::Secret(k) => k.to_public_key(),
        };
        public.to_armored_string(ArmorOptions::default()).expect("a parsed key serializes")
    }

    /// The private key, ASCII-armored as uploaded (still protected by its
    /// passphrase): what is sealed.
    pub fn secret_armored(&self) -> Option<String> {
        match self {
            Parsed::Public(_) => None,
            Parsed::Secret(k) => Some(k.to_armored_string(ArmorOptions::default()).expect("a parsed key serializes")),
        }
    }
}

/// Reads back a public key this module armored.
pub fn read_public(armored: &str) -> Result<SignedPublicKey, Error> {
    match parse_one(armored)? {
        Parsed::Public(k) => Ok(*k),
        Parsed::Secret(_) => Err(Error::internal("a stored public key holds a private part")),
    }
}

/// Reads back a private key this module armored.
pub fn read_secret(armored: &str) -> Result<SignedSecretKey, Error> {
    match parse_one(armored)? {
        Parsed::Secret(k) => Ok(*k),
        Parsed::Public(_) => Err(Error::internal("a stored private key has no private part")),
    }
}

/// Encrypts everything `input` yields to `key` (its encryption subkey, else
/// an encryption-capable primary key) as one OpenPGP message (SEIPD v1,
/// AES-256, as GnuPG reads), written to `output` as it goes: binary, or
/// ASCII-armored. Memory stays bounded whatever the size.
pub fn encrypt<R: Read, W: Write>(key: &SignedPublicKey, input: R, output: W, armor: bool) -> std::io::Result<()> {
    let mut rng = rand::thread_rng();
    let mut builder = MessageBuilder::from_reader("", input).seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
    match encryption_subkey(key) {
        Some(sub) => builder.encrypt_to_key(&mut rng, sub),
        None => builder.encrypt_to_key(&mut rng, key),
    }
    .map_err(std::io::Error::other)?;
    let written = if armor {
        builder.to_armored_writer(&mut rng, ArmorOptions::default(), output)
    } else {
        builder.to_writer(&mut rng, output)
    };
    written.map_err(io_error)
}

/// rPGP reports the reader's or writer's own failure inside its error.
fn io_error(e: pgp::errors::Error) -> std::io::Error {
    match e {
        pgp::errors::Error::IO { source, .. } => source,
        other => std::io::Error::other(other),
    }
}

/// Opens an OpenPGP message (binary or armored) encrypted to `key`: the
/// plaintext, read as it is decrypted (and decompressed). Refused before
/// any plaintext with `not_openpgp` (the input is not an OpenPGP message),
/// `not_encrypted`, or `wrong_key` (not encrypted to this key). A message
/// damaged further on fails while being read (an integrity error).
pub fn decrypt<'a, R: BufRead + std::fmt::Debug + Send + 'a>(
    key: &SignedSecretKey,
    passphrase: Option<&str>,
    input: R,
) -> Result<impl Read + 'a, Error> {
    let not_openpgp =
        || Error::invalid(Code::NotOpenpgp, "the body is not an OpenPGP message (binary or ASCII-armored)");
    let (message, _) = Message::from_reader(input).map_err(|_| not_openpgp())?;
    if !message.is_encrypted() {
        return Err(Error::invalid(Code::NotEncrypted, "the OpenPGP message in the body is not encrypted"));
    }
    let password = Password::from(passphrase.unwrap_or_default());
    let message = message.decrypt(&password, key).map_err(|_| {
        Error::invalid(
            Code::WrongKey,
            "the message is not encrypted to this key (or its session key cannot be decrypted with it)",
        )
    })?;
    if message.is_compressed() {
        return message.decompress().map_err(|_| not_openpgp());
    }
    Ok(message)
}

/// Parses `contents` (ASCII-armored, or base64 of the binary form) as one
/// key, checks that `private` matches it and that `passphrase` unlocks a
/// private key, and that it has a key that can encrypt.
pub fn inspect(contents: &str, private: bool, passphrase: Option<&str>) -> Result<(KeyInfo, Parsed), Error> {
    if contents.len() > MAX_CONTENTS_LEN {
        return Err(Error::invalid(Code::InvalidContents, "contents must be at most 256 KiB"));
    }
    let parsed = parse_one(contents)?;
    check_costs(&parsed)?;
    let public = match &parsed {
        Parsed::Public(k) => {
            if private {
                return Err(Error::invalid(
                    Code::PrivateMismatch,
                    "private is true, but contents hold a public key without its private part",
                ));
            }
            if passphrase.is_some_and(|p| !p.is_empty()) {
                return Err(Error::invalid(Code::InvalidPassphrase, "passphrase is only for a private key"));
            }
            k.as_ref().clone()
        }
        Parsed::Secret(k) => {
            if !private {
                return Err(Error::invalid(
                    Code::PrivateMismatch,
                    "contents hold a private key; set private to true to upload it",
                ));
            }
            unlock_all(k, passphrase)?;
            k.to_public_key()
        }
    };
    public.verify_bindings().map_err(|_| malformed("its self-signatures do not verify"))?;
    let info = describe(&public, &parsed)?;
    Ok((info, parsed))
}

fn malformed(why: &str) -> Error {
    Error::invalid(
        Code::InvalidContents,
        format!("contents must be one OpenPGP key, ASCII-armored or base64 of its binary form: {why}"),
    )
}

fn parse_one(contents: &str) -> Result<Parsed, Error> {
    let trimmed = contents.trim();
    if trimmed.matches("-----BEGIN PGP").count() > 1 {
        return Err(Error::invalid(Code::SeveralKeys, "contents hold several keys; upload one at a time"));
    }
    let binary: Vec<u8> = if trimmed.starts_with("-----BEGIN PGP") {
        trimmed.as_bytes().to_vec()
    } else {
        use base64::Engine;
        let compact: String = trimmed.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| malformed("neither armored nor base64"))?
    };
    let (keys, _) =
        PublicOrSecret::from_reader_many(Cursor::new(binary)).map_err(|_| malformed("it cannot be read"))?;
    let mut found = None;
    for key in keys {
        let key = key.map_err(|_| malformed("it cannot be read"))?;
        if found.is_some() {
            return Err(Error::invalid(Code::SeveralKeys, "contents hold several keys; upload one at a time"));
        }
        found = Some(key);
    }
    match found {
        Some(PublicOrSecret::Public(k)) => Ok(Parsed::Public(Box::new(k))),
        Some(PublicOrSecret::Secret(k)) => Ok(Parsed::Secret(Box::new(k))),
        None => Err(malformed("no key found")),
    }
}

/// Refuses a key whose checking would cost more than a bound: too many
/// subkeys (each is unlocked), or a passphrase protection (S2K) above the
/// Argon2 caps. Iterated-and-salted S2K is bounded by its own encoding
/// (at most 65 MiB hashed, GnuPG's maximum).
fn check_costs(parsed: &Parsed) -> Result<(), Error> {
    use pgp::types::{S2kParams, SecretParams, StringToKey};
    let subkeys = match parsed {
        Parsed::Public(k) => k.public_subkeys.len(),
        Parsed::Secret(k) => k.secret_subkeys.len() + k.public_subkeys.len(),
    };
    if subkeys > MAX_SUBKEYS {
        return Err(Error::invalid(
            Code::TooManySubkeys,
            format!("contents hold a key with more than {MAX_SUBKEYS} subkeys; export only the ones you need"),
        ));
    }
    let Parsed::Secret(k) = parsed else { return Ok(()) };
    let params =
        std::iter::once(k.primary_key.secret_params()).chain(k.secret_subkeys.iter().map(|s| s.key.secret_params()));
    for p in params {
        let SecretParams::Encrypted(e) = p else { continue };
        let s2k = match e.string_to_key_params() {
            S2kParams::Cfb { s2k, .. } | S2kParams::MalleableCfb { s2k, .. } | S2kParams::Aead { s2k, .. } => s2k,
            S2kParams::Unprotected | S2kParams::LegacyCfb { .. } => continue,
        };
        if let StringToKey::Argon2 { t, m_enc, .. } = s2k
            && (*m_enc > MAX_ARGON2_M_ENC || *t > MAX_ARGON2_PASSES)
        {
            return Err(Error::invalid(
                Code::PassphraseTooCostly,
                "the key's passphrase protection is too costly to open (Argon2 above 256 MiB or 8 passes); \
                 export it protected with cheaper settings",
            ));
        }
    }
    Ok(())
}

/// Every secret (sub)key must open with the passphrase (an unprotected key
/// needs none).
fn unlock_all(key: &SignedSecretKey, passphrase: Option<&str>) -> Result<(), Error> {
    let locked = key.primary_key.secret_params().is_encrypted()
        || key.secret_subkeys.iter().any(|s| s.key.secret_params().is_encrypted());
    if !locked {
        return Ok(());
    }
    let Some(pass) = passphrase.filter(|p| !p.is_empty()) else {
        return Err(Error::invalid(
            Code::PassphraseRequired,
            "this private key is protected; give the passphrase that unlocks it",
        ));
    };
    let wrong = || Error::invalid(Code::InvalidPassphrase, "the passphrase does not unlock this private key");
    let pw = Password::from(pass);
    key.primary_key.unlock(&pw, |_, _| Ok(())).map_err(|_| wrong())?.map_err(|_| wrong())?;
    for sub in &key.secret_subkeys {
        sub.key.unlock(&pw, |_, _| Ok(())).map_err(|_| wrong())?.map_err(|_| wrong())?;
    }
    Ok(())
}

/// The newest of `sigs` (self-signatures), for the flags and expiry it states.
fn newest(sigs: &[Signature]) -> Option<&Signature> {
    sigs.iter().max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn encrypts(sig: Option<&Signature>) -> bool {
    sig.is_some_and(|s| {
        let f = s.key_flags();
        f.encrypt_comms() || f.encrypt_storage()
    })
}

/// The first subkey flagged to encrypt, with an algorithm that can.
fn encryption_subkey(public: &SignedPublicKey) -> Option<&pgp::composed::SignedPublicSubKey> {
    public.public_subkeys.iter().find(|s| encrypts(newest(&s.signatures)) && s.key.algorithm().can_encrypt())
}

fn describe(public: &SignedPublicKey, parsed: &Parsed) -> Result<KeyInfo, Error> {
    let primary_sig =
        newest(&public.details.users.iter().flat_map(|u| u.signatures.iter().cloned()).collect::<Vec<_>>())
            .cloned()
            .or_else(|| newest(&public.details.direct_signatures).cloned());
    let created = timestamp(public.primary_key.created_at().as_secs());
    let expires_at = primary_sig
        .as_ref()
        .and_then(|s| s.key_expiration_time())
        .map(|d| created + chrono::Duration::seconds(i64::from(d.as_secs())));
    // The key that encrypts: a subkey flagged for it, else a primary so flagged.
    let encryption = encryption_subkey(public).map(|s| params_name(s.key.public_params()));
    let encryption = match encryption {
        Some(e) => e,
        None if encrypts(primary_sig.as_ref()) && public.primary_key.algorithm().can_encrypt() => {
            params_name(public.primary_key.public_params())
        }
        None => {
            return Err(Error::invalid(
                Code::NoEncryptionKey,
                "the key has no subkey that may encrypt (its key flags allow only signing)",
            ));
        }
    };
    let primary = params_name(public.primary_key.public_params());
    let algorithm = if primary == encryption { primary } else { format!("{primary} + {encryption}") };
    let (private, has_passphrase) = match parsed {
        Parsed::Public(_) => (false, false),
        Parsed::Secret(k) => (true, k.primary_key.secret_params().is_encrypted()),
    };
    Ok(KeyInfo {
        fingerprint: hex_upper(public.fingerprint().as_bytes()),
        key_id: hex_upper(public.legacy_key_id().as_ref()),
        algorithm,
        user_ids: public.details.users.iter().map(|u| String::from_utf8_lossy(u.id.id()).into_owned()).collect(),
        created_at: created,
        expires_at,
        revoked: !public.details.revocation_signatures.is_empty(),
        private,
        has_passphrase,
    })
}

fn timestamp(secs: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(secs), 0).unwrap_or_default()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn params_name(p: &PublicParams) -> String {
    use rsa::traits::PublicKeyParts;
    match p {
        PublicParams::RSA(r) => format!("RSA {}", r.key.n().bits()),
        PublicParams::DSA(_) => "DSA".into(),
        PublicParams::ECDSA(e) => format!("ECDSA {:?}", e.curve()),
        PublicParams::ECDH(e) => format!("ECDH {:?}", e.curve()),
        PublicParams::Elgamal(_) => "ElGamal".into(),
        PublicParams::EdDSALegacy(_) | PublicParams::Ed25519(_) => "EdDSA Ed25519".into(),
        PublicParams::X25519(_) => "X25519".into(),
        PublicParams::X448(_) => "X448".into(),
        PublicParams::Ed448(_) => "EdDSA Ed448".into(),
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PUB: &str = include_str!("../testdata/pgp/rsa3072.pub.asc");
    const RSA_SEC: &str = include_str!("../testdata/pgp/rsa3072.sec.asc");
    const ED_PUB: &str = include_str!("../testdata/pgp/ed25519.pub.asc");
    const ED_SEC: &str = include_str!("../testdata/pgp/ed25519-passphrase.sec.asc");
    const SIGN_ONLY: &str = include_str!("../testdata/pgp/sign-only.pub.asc");
    const EXPIRED: &str = include_str!("../testdata/pgp/expired.pub.asc");
    const TWO_KEYS: &str = include_str!("../testdata/pgp/two-keys.pub.asc");

    #[track_caller]
    fn code(r: Result<(KeyInfo, Parsed), Error>) -> &'static str {
        r.err().expect("refused").code.as_str()
    }

    #[test]
    fn gnupg_keys_show_the_fingerprint_gnupg_reports() {
        let (rsa, _) = inspect(RSA_PUB, false, None).unwrap();
        assert_eq!(rsa.fingerprint, "CD05C64F91092F075443D347DADBE2F6E1DC9A84");
        assert_eq!(rsa.key_id, "DADBE2F6E1DC9A84");
        assert_eq!(rsa.algorithm, "RSA 3072");
        assert_eq!(rsa.user_ids, ["RSA Test <rsa@example.com>"]);
        assert_eq!((rsa.private, rsa.has_passphrase, rsa.expires_at), (false, false, None));
        let (ed, _) = inspect(ED_PUB, false, None).unwrap();
        assert_eq!(ed.fingerprint, "7BDBFFBF6EC03C7B499D0AE9322D0D6C03E0BD81");
        assert!(ed.algorithm.starts_with("EdDSA Ed25519 + ECDH"), "{}", ed.algorithm);
        // A private upload shows its public part's identity.
        let (sec, _) = inspect(RSA_SEC, true, None).unwrap();
        assert_eq!(
            (sec.fingerprint.as_str(), sec.private, sec.has_passphrase),
            (rsa.fingerprint.as_str(), true, false)
        );
        let (sec, _) = inspect(ED_SEC, true, Some("hunter22")).unwrap();
        assert_eq!((sec.fingerprint, sec.has_passphrase), (ed.fingerprint, true));
    }

    #[test]
    fn base64_of_the_binary_form_is_accepted() {
        use base64::Engine;
        let Parsed::Public(k) = inspect(RSA_PUB, false, None).unwrap().1 else { panic!("public") };
        let mut binary = Vec::new();
        pgp::ser::Serialize::to_writer(k.as_ref(), &mut binary).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(binary);
        assert_eq!(inspect(&encoded, false, None).unwrap().0.fingerprint, "CD05C64F91092F075443D347DADBE2F6E1DC9A84");
    }

    #[test]
    fn costly_passphrase_protection_is_refused_before_unlocking() {
        use pgp::crypto::sym::SymmetricKeyAlgorithm;
        use pgp::types::{S2kParams, StringToKey};
        let Parsed::Secret(mut key) = parse_one(ED_SEC).unwrap() else { panic!("a private key") };
        let old = Password::from("hunter22");
        let new = Password::from("expensive");
        // Argon2 with more passes than the cap (cheap in memory, so the
        // test itself stays cheap to make).
        let protect = |passes: u8| S2kParams::Aead {
            sym_alg: SymmetricKeyAlgorithm::AES256,
            aead_mode: pgp::crypto::aead::AeadAlgorithm::Ocb,
            s2k: StringToKey::new_argon2(rand::thread_rng(), passes, 1, 10),
            nonce: bytes::Bytes::from(vec![7u8; 15]),
        };
        key.primary_key.remove_password(&old).unwrap();
        key.primary_key.set_password_with_s2k(&new, protect(MAX_ARGON2_PASSES + 1)).unwrap();
        for sub in &mut key.secret_subkeys {
            sub.key.remove_password(&old).unwrap();
            sub.key.set_password_with_s2k(&new, protect(1)).unwrap();
        }
        let armored = key.to_armored_string(ArmorOptions::default()).unwrap();
        assert_eq!(code(inspect(&armored, true, Some("expensive"))), "passphrase_too_costly");
        // At the cap it is opened (and checked) as usual.
        key.primary_key.remove_password(&new).unwrap();
        key.primary_key.set_password_with_s2k(&new, protect(MAX_ARGON2_PASSES)).unwrap();
        let armored = key.to_armored_string(ArmorOptions::default()).unwrap();
        assert!(inspect(&armored, true, Some("expensive")).is_ok());
        assert_eq!(code(inspect(&armored, true, Some("hunter22"))), "invalid_passphrase");
    }

    #[test]
    fn bad_uploads_are_refused_by_name() {
        assert_eq!(code(inspect("not a key", false, None)), "invalid_contents");
        assert_eq!(code(inspect(&RSA_PUB.replace('A', "B"), false, None)), "invalid_contents");
        assert_eq!(code(inspect(&format!("{RSA_PUB}\n{ED_PUB}"), false, None)), "several_keys");
        assert_eq!(code(inspect(TWO_KEYS, false, None)), "several_keys");
        assert_eq!(code(inspect(RSA_PUB, true, None)), "private_mismatch");
        assert_eq!(code(inspect(RSA_SEC, false, None)), "private_mismatch");
        assert_eq!(code(inspect(ED_SEC, true, None)), "passphrase_required");
        assert_eq!(code(inspect(ED_SEC, true, Some("wrong"))), "invalid_passphrase");
        assert_eq!(code(inspect(SIGN_ONLY, false, None)), "no_encryption_key");
        assert_eq!(code(inspect(&"A".repeat(MAX_CONTENTS_LEN + 1), false, None)), "invalid_contents");
    }

    #[test]
    fn encrypts_and_decrypts_binary_and_armored_streams() {
        let (_, public) = inspect(ED_PUB, false, None).unwrap();
        let Parsed::Secret(secret) = inspect(ED_SEC, true, Some("hunter22")).unwrap().1 else { panic!("secret") };
        let public = read_public(&public.public_armored()).unwrap();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for armor in [false, true] {
            let mut sealed = Vec::new();
            encrypt(&public, plain.as_slice(), &mut sealed, armor).unwrap();
            assert_eq!(sealed.starts_with(b"-----BEGIN PGP MESSAGE-----"), armor);
            let mut out = Vec::new();
            decrypt(&secret, Some("hunter22"), sealed.as_slice()).unwrap().read_to_end(&mut out).unwrap();
            assert!(out == plain, "round trip (armor {armor})");
        }
        let mut sealed = Vec::new();
        encrypt(&public, &b"x"[..], &mut sealed, false).unwrap();
        let Parsed::Secret(rsa) = inspect(RSA_SEC, true, None).unwrap().1 else { panic!("secret") };
        let code = |r: Result<(), Error>| r.expect_err("refused").code.as_str();
        assert_eq!(code(decrypt(&rsa, None, sealed.as_slice()).map(|_| ())), "wrong_key");
        assert_eq!(
            code(decrypt(&secret, Some("hunter22"), &b"plain text, not a message"[..]).map(|_| ())),
            "not_openpgp"
        );
        assert_eq!(code(decrypt(&secret, Some("wrong"), sealed.as_slice()).map(|_| ())), "wrong_key");
    }

    #[test]
    fn an_expired_key_is_flagged_and_unusable() {
        let (old, _) = inspect(EXPIRED, false, None).unwrap();
        assert_eq!(old.created_at.to_rfc3339(), "2020-01-01T00:00:00+00:00");
        assert_eq!(old.expires_at.map(|e| e.to_rfc3339()).as_deref(), Some("2020-01-02T00:00:00+00:00"));
        assert!(!old.usable(DateTime::from_timestamp(1_800_000_000, 0).unwrap()));
        assert!(old.usable(old.created_at));
    }
}
