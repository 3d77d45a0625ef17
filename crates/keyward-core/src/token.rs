//! Key tokens: the string a client presents.
//!
//! ```text
//! kw_live_3fH9xQ2mPz8TbL1c  Yk…32 secret chars…Qe  1a2B3c
//! └┬┘ └┬─┘ └──── id (16) ──┘└──── secret (32) ───┘└crc (6)┘
//! prefix env      body: 54 base62 characters, no separators
//! ```
//!
//! - `prefix` is per workspace (`[a-z][a-z0-9]{0,15}`, default `kw`), so
//!   secret scanners can recognise a workspace's keys.
//! - `env` is `live` or `test`.
//! - the id is public (the key id is `key_` + these 16 characters) and lets
//!   verification find the key without a hash index;
//! - the secret is 32 base62 characters from the OS CSPRNG (≈190 bits);
//! - the checksum is CRC-32 of everything before it, base62, so a mistyped or
//!   truncated key is refused by [`parse`] before any storage is touched.

use std::fmt;

use crate::ids::{BASE62, is_base62, random_base62};

pub const ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
pub const BODY_LEN: usize = ID_LEN + SECRET_LEN + CHECKSUM_LEN;
pub const MAX_PREFIX_LEN: usize = 16;
/// Anything longer than this is not a token of ours nor a plausible import.
pub const MAX_TOKEN_LEN: usize = 512;

/// The environment a key belongs to; part of its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

/// Why a string is not a keyward token. All of them verify as `MALFORMED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is too long")]
    TooLong,
    #[error("the key does not have the form prefix_env_body")]
    Shape,
    #[error("the key prefix is not valid")]
    Prefix,
    #[error("the key environment must be live or test")]
    Environment,
    #[error("the key body has the wrong length or characters")]
    Body,
    #[error("the key checksum does not match")]
    Checksum,
}

/// A token that passed [`parse`]: borrowed parts, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub prefix: &'a str,
    pub environment: Environment,
    /// The 16 public id characters (the key id is `key_` + these).
    pub id: &'a str,
    pub secret: &'a str,
}

impl ParsedToken<'_> {
    pub fn key_id(&self) -> String {
        key_id_from_token_id(self.id)
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("prefix", &self.prefix)
            .field("environment", &self.environment)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

pub fn key_id_from_token_id(id: &str) -> String {
    format!("key_{id}")
}

/// The 16 token id characters of a native key id (`key_XXXXXXXXXXXXXXXX`).
pub fn token_id_of_key_id(key_id: &str) -> Option<&str> {
    let rest = key_id.strip_prefix("key_")?;
    (rest.len() == ID_LEN && is_base62(rest)).then_some(rest)
}

pub fn is_valid_prefix(prefix: &str) -> bool {
    let b = prefix.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PREFIX_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Splits and checks a token. Never allocates, never touches storage.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    // By byte ('_' is ASCII, so every slice below is on a character
    // boundary): a `char` search costs more than the rest of the parse.
    let underscore = |from: usize| token.as_bytes()[from..].iter().position(|b| *b == b'_').map(|i| from + i);
    let first = underscore(0).ok_or(TokenError::Shape)?;
    let second = underscore(first + 1).ok_or(TokenError::Shape)?;
    let (prefix, env, body) = (&token[..first], &token[first + 1..second], &token[second + 1..]);
    if !is_valid_prefix(prefix) {
        return Err(TokenError::Prefix);
    }
    let environment = Environment::parse(env).ok_or(TokenError::Environment)?;
    if body.len() != BODY_LEN || !is_base62(body) {
        return Err(TokenError::Body);
    }
    let (signed, checksum) = token.split_at(token.len() - CHECKSUM_LEN);
    if encode_checksum(crc32fast::hash(signed.as_bytes())) != checksum.as_bytes() {
        return Err(TokenError::Checksum);
    }
    Ok(ParsedToken { prefix, environment, id: &body[..ID_LEN], secret: &body[ID_LEN..ID_LEN + SECRET_LEN] })
}

fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// A full token. Its `Debug` never shows the secret; use [`Secret::expose`]
/// where the caller must see it (the create response, once).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Builds a token for an existing id (rolling keeps the id) with a fresh secret.
pub fn generate_with_id(prefix: &str, environment: Environment, id: &str) -> Secret {
    debug_assert!(is_valid_prefix(prefix) && id.len() == ID_LEN);
    let mut token = String::with_capacity(prefix.len() + 6 + BODY_LEN);
    token.push_str(prefix);
    token.push('_');
    token.push_str(environment.as_str());
    token.push('_');
    token.push_str(id);
    token.push_str(&random_base62(SECRET_LEN));
    let checksum = encode_checksum(crc32fast::hash(token.as_bytes()));
    token.push_str(std::str::from_utf8(&checksum).expect("base62 is ASCII"));
    Secret(token)
}

/// A new token with a new random id.
pub fn generate(prefix: &str, environment: Environment) -> Secret {
    generate_with_id(prefix, environment, &random_base62(ID_LEN))
}

/// The display form: `kw_live_3fH9…1a2B`. Shows the public prefix, the first
/// four id characters and the last four characters; never enough to use.
pub fn mask(token: &str) -> String {
    let (head, body) = match token.rfind('_') {
        Some(i) if i + 1 < token.len() => token.split_at(i + 1),
        _ => ("", token),
    };
    let chars: Vec<char> = body.chars().collect();
    if chars.len() < 12 {
        return format!("{head}…");
    }
    let first: String = chars[..4].iter().collect();
    let last: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{first}…{last}")
}

/// The display prefix of a token: everything up to and including its last `_`.
pub fn display_prefix(token: &str) -> Option<&str> {
    token.rfind('_').map(|i| &token[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_parse_back() {
        let t = generate("kw", Environment::Live);
        let p = parse(t.expose()).unwrap();
        assert_eq!(p.prefix, "kw");
        assert_eq!(p.environment, Environment::Live);
        assert_eq!(t.expose().len(), "kw_live_".len() + BODY_LEN);
        assert!(t.expose().starts_with("kw_live_"));
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(parse(""), Err(TokenError::Empty));
        assert_eq!(parse("kw"), Err(TokenError::Shape));
        assert_eq!(parse("kw_live"), Err(TokenError::Shape));
        assert_eq!(parse("KW_live_x"), Err(TokenError::Prefix));
        assert_eq!(parse("kw_prod_x"), Err(TokenError::Environment));
        assert_eq!(parse("kw_live_abc"), Err(TokenError::Body));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&long), Err(TokenError::TooLong));
    }

    #[test]
    fn masks_without_revealing_the_secret() {
        let t = generate("kw", Environment::Test);
        let m = mask(t.expose());
        assert!(m.starts_with("kw_test_"));
        assert!(m.contains('…'));
        let secret = parse(t.expose()).unwrap().secret;
        assert!(!m.contains(&secret[..8]));
        assert_eq!(format!("{t:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn key_ids_map_to_token_ids() {
        let t = generate("kw", Environment::Live);
        let p = parse(t.expose()).unwrap();
        assert_eq!(token_id_of_key_id(&p.key_id()), Some(p.id));
        assert_eq!(token_id_of_key_id("key_short"), None);
        assert_eq!(token_id_of_key_id("ws_0123456789abcdef"), None);
    }

    fn prefix_strategy() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,15}"
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(prefix in prefix_strategy(), test_env in any::<bool>()) {
            let env = if test_env { Environment::Test } else { Environment::Live };
            let t = generate(&prefix, env);
            let p = parse(t.expose()).unwrap();
            prop_assert_eq!(p.prefix, prefix.as_str());
            prop_assert_eq!(p.environment, env);
            let rebuilt = format!("{}_{}_{}{}", p.prefix, env.as_str(), p.id, p.secret);
            prop_assert!(t.expose().starts_with(&rebuilt));
        }

        #[test]
        fn any_single_character_change_is_detected(
            prefix in prefix_strategy(),
            pos in any::<prop::sample::Index>(),
            replacement in prop::sample::select(
                b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.".to_vec()),
        ) {
            let t = generate(&prefix, Environment::Live);
            let mut bytes = t.expose().as_bytes().to_vec();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != replacement);
            bytes[i] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(parse(&changed).is_err(), "accepted a changed token");
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = parse(&s);
        }
    }
}
