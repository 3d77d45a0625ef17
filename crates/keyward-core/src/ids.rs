//! Random identifiers and the base62 alphabet shared by ids and secrets.

/// URL-safe, copy-paste-safe alphabet (no `_`, which separates token parts).
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` characters drawn uniformly from [`BASE62`] using the OS CSPRNG.
///
/// Bytes ≥ 248 are rejected so that `byte % 62` stays uniform.
pub fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the OS random number generator failed");
        for &b in &buf {
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

pub fn is_base62(s: &str) -> bool {
    // Without an early exit the compiler checks many bytes at once (a
    // token's 54 on every verification).
    s.bytes().fold(true, |all, b| all & b.is_ascii_alphanumeric())
}

/// Generates `"{prefix}_{16 base62 chars}"`, e.g. `ws_3fH9…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_base62(16))
}

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    buf
}
