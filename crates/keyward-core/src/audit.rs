//! The audit log: what an entry holds, how entries chain, and how a chain
//! and a signed checkpoint are checked. No IO; the store appends, the
//! server decides what to record.
//!
//! Each workspace has one chain. An entry's hash covers its fields and its
//! predecessor's hash; its MAC is an HMAC of that hash under a key derived
//! from the server's hash key (kept outside the database), so whoever can
//! write the database alone can neither edit, insert nor remove an entry in
//! the middle without [`ChainCheck`] naming it. A checkpoint (sequence and
//! head hash signed with Ed25519) kept elsewhere also catches entries
//! removed from the end.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Code;
use crate::Error;
use crate::hash::{hex, parse_hex, parse_hex32};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    Member,
    Key,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Member => "member",
            ActorKind::Key => "key",
            ActorKind::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [ActorKind::Member, ActorKind::Key, ActorKind::System].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor { kind: ActorKind::System, id: None, name: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// What an action was done to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Target {
    /// One of [`TARGET_TYPES`].
    pub kind: String,
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn new(kind: &str, id: impl Into<String>, name: Option<&str>) -> Self {
        Target { kind: kind.to_owned(), id: Some(id.into()), name: name.map(str::to_owned) }
    }
}

/// The kinds of object entries name (`type` in queries).
pub const TARGET_TYPES: &[&str] = &[
    "api_key",
    "member",
    "invitation",
    "role",
    "workspace",
    "address",
    "refresh_token",
    "access_token",
    "pgp_key",
    "identity",
    "integrations",
    "ftp",
    "webhook",
];

/// Every action keyward records, `noun.past_verb`.
pub const ACTIONS: &[&str] = &[
    "key.created",
    "key.updated",
    "key.cloned",
    "key.rolled",
    "key.deactivated",
    "key.activated",
    "key.locked",
    "key.revoked",
    "key.deleted",
    "key.imported",
    "key.revealed",
    "key.credits_changed",
    "key.auth_failed",
    "member.signed_in",
    "member.sign_in_failed",
    "member.signed_out",
    "member.invited",
    "member.joined",
    "member.changed",
    "member.removed",
    "member.password_set",
    "role.created",
    "role.updated",
    "role.deleted",
    "settings.changed",
    "token.created",
    "token.revoked",
    "token.reuse_detected",
    "token.issued",
    "token.exchanged",
    "token.refreshed",
    "identity.created",
    "identity.updated",
    "identity.deleted",
    "pgp_key.uploaded",
    "pgp_key.updated",
    "pgp_key.deleted",
    "pgp_key.encrypted",
    "pgp_key.decrypted",
    "integrations.created",
    "ftp.password_rotated",
    "ftp.password_revealed",
    "ftp.enabled",
    "ftp.disabled",
    "ftp.locked",
    "ftp.auth_failed",
    "key.leaked",
    "webhook.created",
    "webhook.updated",
    "webhook.deleted",
    "webhook.secret_rotated",
    "webhook.disabled",
    "webhook.resent",
    "webhook.tested",
];

/// One recorded action, before it is placed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub workspace_id: String,
    /// Milliseconds are kept; finer parts are dropped before hashing.
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub action: String,
    pub target: Target,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: Outcome,
    /// What changed, as a JSON object (never a secret).
    pub changes: String,
}

/// An event in its workspace's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: i64,
    pub event: Event,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub mac: [u8; 32],
}

/// The hash a chain starts from.
pub const GENESIS: [u8; 32] = [0; 32];

/// The HMAC key entries are authenticated with.
#[derive(Clone)]
pub struct AuditKey([u8; 32]);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

impl AuditKey {
    pub fn new(key: [u8; 32]) -> Self {
        AuditKey(key)
    }

    pub fn mac(&self, hash: &[u8; 32]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(b"keyward audit mac v1\0");
        m.update(hash);
        m.finalize().into_bytes().into()
    }
}

impl Event {
    /// The time as stored (milliseconds).
    pub fn at_ms(&self) -> i64 {
        self.at.timestamp_millis()
    }
}

impl Entry {
    /// Places `event` after the entry numbered `prev_seq` whose hash is
    /// `prev_hash` (0 and [`GENESIS`] for the first).
    pub fn chain(prev_seq: i64, prev_hash: [u8; 32], mut event: Event, key: &AuditKey) -> Entry {
        event.at = DateTime::from_timestamp_millis(event.at_ms()).unwrap_or(event.at);
        let seq = prev_seq + 1;
        let hash = content_hash(seq, &event, &prev_hash);
        Entry { seq, mac: key.mac(&hash), event, prev_hash, hash }
    }
}

/// SHA-256 over the entry's fields (as a JSON array: unambiguous) and its
/// predecessor's hash.
pub fn content_hash(seq: i64, e: &Event, prev_hash: &[u8; 32]) -> [u8; 32] {
    let fields = serde_json::json!([
        seq,
        e.at_ms(),
        e.workspace_id,
        e.actor.kind.as_str(),
        e.actor.id,
        e.actor.name,
        e.action,
        e.target.kind,
        e.target.id,
        e.target.name,
        e.ip,
        e.user_agent,
        e.outcome.as_str(),
        e.changes,
        hex(prev_hash),
    ]);
    let mut h = Sha256::new();
    h.update(b"keyward audit entry v1\0");
    h.update(fields.to_string().as_bytes());
    h.finalize().into()
}

/// Why a chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("entry {seq}: its fields do not match its hash (edited)")]
    Edited { seq: i64 },
    #[error("entry {seq}: its MAC does not match (rewritten without the audit key)")]
    BadMac { seq: i64 },
    #[error("entry {seq}: expected entry {expected} here; entries {expected}..{seq} are missing (removed)")]
    Missing { seq: i64, expected: i64 },
    #[error("entry {seq}: out of sequence after entry {after} (inserted)")]
    OutOfSequence { seq: i64, after: i64 },
    #[error("entry {seq}: it does not follow entry {prev} (an entry was inserted or removed before it)")]
    Unlinked { seq: i64, prev: i64 },
    #[error("entries after {last} were removed from the end: the head (or checkpoint) names entry {head}")]
    Truncated { last: i64, head: i64 },
    #[error("entry {seq}: its hash differs from the one the checkpoint signed")]
    CheckpointMismatch { seq: i64 },
}

/// Walks one workspace's chain in order, entry by entry.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    key: AuditKey,
    last_seq: i64,
    last_hash: [u8; 32],
}

impl ChainCheck {
    pub fn new(key: AuditKey) -> Self {
        ChainCheck { key, last_seq: 0, last_hash: GENESIS }
    }

    /// The last entry checked: its sequence number and hash.
    pub fn head(&self) -> (i64, [u8; 32]) {
        (self.last_seq, self.last_hash)
    }

    pub fn next(&mut self, entry: &Entry) -> Result<(), Break> {
        let seq = entry.seq;
        if content_hash(seq, &entry.event, &entry.prev_hash) != entry.hash {
            return Err(Break::Edited { seq });
        }
        if self.key.mac(&entry.hash) != entry.mac {
            return Err(Break::BadMac { seq });
        }
        if seq <= self.last_seq {
            return Err(Break::OutOfSequence { seq, after: self.last_seq });
        }
        if seq != self.last_seq + 1 {
            return Err(Break::Missing { seq, expected: self.last_seq + 1 });
        }
        if entry.prev_hash != self.last_hash {
            return Err(Break::Unlinked { seq, prev: self.last_seq });
        }
        self.last_seq = seq;
        self.last_hash = entry.hash;
        Ok(())
    }

    /// After the last entry: the chain must reach `head` (the stored head,
    /// or a checkpoint's sequence and hash).
    pub fn reaches(&self, head_seq: i64, head_hash: Option<&[u8; 32]>, at: Option<[u8; 32]>) -> Result<(), Break> {
        if self.last_seq < head_seq {
            return Err(Break::Truncated { last: self.last_seq, head: head_seq });
        }
        match (head_hash, at) {
            (Some(expected), Some(found)) if *expected != found => Err(Break::CheckpointMismatch { seq: head_seq }),
            _ => Ok(()),
        }
    }
}

/// The Ed25519 key checkpoints are signed with (derived from the hash key).
pub struct CheckpointSigner(SigningKey);

impl CheckpointSigner {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        CheckpointSigner(SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub fn sign(&self, workspace_id: &str, seq: i64, head: &[u8; 32], at: DateTime<Utc>) -> Checkpoint {
        let mut c = Checkpoint {
            workspace: workspace_id.to_owned(),
            seq,
            head_hash: hex(head),
            signed_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            algorithm: "Ed25519".to_owned(),
            public_key: hex(&self.public_key()),
            signature: String::new(),
        };
        c.signature = hex(&self.0.sign(c.message().as_bytes()).to_bytes());
        c
    }
}

/// A signed statement that a workspace's chain reached `seq` with `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    pub workspace: String,
    pub seq: i64,
    pub head_hash: String,
    pub signed_at: String,
    pub algorithm: String,
    pub public_key: String,
    pub signature: String,
}

impl Checkpoint {
    fn message(&self) -> String {
        format!("keyward audit checkpoint v1\n{}\n{}\n{}\n{}", self.workspace, self.seq, self.head_hash, self.signed_at)
    }

    /// Checks the signature against `public_key` (the server's, not the one
    /// the file names) and returns the signed head hash.
    pub fn verify(&self, public_key: &[u8; 32]) -> Result<[u8; 32], Error> {
        let bad = |what: &str| Error::invalid(Code::InvalidCheckpoint, format!("The checkpoint {what}"));
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| bad("key is not an Ed25519 key"))?;
        let sig = parse_hex::<64>(&self.signature).ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
        key.verify(self.message().as_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| bad("signature does not match this server's audit key (or the file was edited)"))?;
        parse_hex32(&self.head_hash).ok_or_else(|| bad("head hash is not 32 bytes of hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> Event {
        Event {
            workspace_id: "ws_1".into(),
            at: DateTime::from_timestamp_millis(1_700_000_000_000 + n).unwrap(),
            actor: Actor { kind: ActorKind::Member, id: Some("mem_1".into()), name: Some("Ann".into()) },
            action: "key.created".into(),
            target: Target::new("api_key", format!("key_{n}"), Some("k")),
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            outcome: Outcome::Success,
            changes: "{}".into(),
        }
    }

    fn chain(n: i64, key: &AuditKey) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out.last().map_or((0, GENESIS), |e| (e.seq, e.hash));
            out.push(Entry::chain(seq, hash, event(i), key));
        }
        out
    }

    fn check(entries: &[Entry], key: &AuditKey) -> Result<ChainCheck, Break> {
        let mut c = ChainCheck::new(key.clone());
        for e in entries {
            c.next(e)?;
        }
        Ok(c)
    }

    #[test]
    fn intact_chain_passes_and_each_tampering_is_named() {
        let key = AuditKey::new([7; 32]);
        let entries = chain(5, &key);
        assert_eq!(check(&entries, &key).unwrap().head().0, 5);

        let mut edited = entries.clone();
        edited[2].event.action = "key.deleted".into();
        assert_eq!(check(&edited, &key).unwrap_err(), Break::Edited { seq: 3 });

        // Rewritten with a recomputed hash but without the audit key.
        let mut rewritten = edited.clone();
        rewritten[2].hash = content_hash(3, &rewritten[2].event, &rewritten[2].prev_hash);
        assert_eq!(check(&rewritten, &key).unwrap_err(), Break::BadMac { seq: 3 });

        let mut removed = entries.clone();
        removed.remove(1);
        assert_eq!(check(&removed, &key).unwrap_err(), Break::Missing { seq: 3, expected: 2 });

        // An entry numbered before the first (written straight into the
        // database) is out of sequence, whatever its hash.
        let mut early = entries.clone();
        let mut zero = Entry::chain(-1, GENESIS, event(9), &key);
        zero.seq = 0;
        early.insert(0, zero);
        assert!(matches!(
            check(&early, &key).unwrap_err(),
            Break::Edited { seq: 0 } | Break::OutOfSequence { seq: 0, .. }
        ));

        let c = check(&entries[..3], &key).unwrap();
        assert_eq!(c.reaches(5, None, None).unwrap_err(), Break::Truncated { last: 3, head: 5 });
        assert!(c.reaches(3, Some(&entries[2].hash), Some(entries[2].hash)).is_ok());
    }

    #[test]
    fn checkpoints_verify_only_under_the_signing_key() {
        let signer = CheckpointSigner::from_seed([3; 32]);
        let cp = signer.sign("ws_1", 4, &[9; 32], DateTime::from_timestamp_millis(1_700_000_000_000).unwrap());
        assert_eq!(cp.verify(&signer.public_key()).unwrap(), [9; 32]);
        let mut forged = cp.clone();
        forged.seq = 3;
        assert_eq!(forged.verify(&signer.public_key()).unwrap_err().code, Code::InvalidCheckpoint);
        let other = CheckpointSigner::from_seed([4; 32]);
        assert!(cp.verify(&other.public_key()).is_err());
    }
}
