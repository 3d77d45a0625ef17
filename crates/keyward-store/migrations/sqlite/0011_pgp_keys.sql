-- OpenPGP keys for file encryption: what each key is (parsed on upload),
-- its public part armored, and for a private upload the private key and
-- its passphrase sealed under the master key (never returned).
CREATE TABLE pgp_keys (
    id             TEXT PRIMARY KEY,
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    description    TEXT,
    fingerprint    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    user_ids       TEXT NOT NULL,
    key_created_at INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked        INTEGER NOT NULL,
    has_passphrase INTEGER NOT NULL,
    public_key     TEXT NOT NULL,
    master_key_id  TEXT,
    sealed         BLOB,
    uploaded_at    INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX pgp_keys_name ON pgp_keys (workspace_id, name);
CREATE INDEX pgp_keys_master ON pgp_keys (master_key_id);
