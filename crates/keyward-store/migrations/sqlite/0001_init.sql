-- keyward schema, SQLite. Times are INTEGER milliseconds since the Unix epoch.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    token_prefix              TEXT NOT NULL,
    max_keys                  INTEGER,
    default_key_lifetime_days INTEGER,
    max_key_lifetime_days     INTEGER,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL
);

CREATE TABLE api_keys (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    id                    TEXT NOT NULL UNIQUE,
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    description           TEXT,
    key_type              TEXT NOT NULL,
    environment           TEXT NOT NULL,
    masked                TEXT NOT NULL,
    scopes                TEXT NOT NULL,   -- JSON array of scope strings
    read_only             INTEGER NOT NULL,
    administrator         INTEGER NOT NULL,
    account_administrator INTEGER NOT NULL,
    resources             TEXT NOT NULL,   -- JSON array of resource ids
    metadata              TEXT NOT NULL,   -- JSON object
    state                 TEXT NOT NULL,
    legacy                INTEGER NOT NULL,
    lookup_prefix         TEXT,            -- imported foreign-format keys only
    lookup_hash           BLOB,            -- = secret_hash for those keys
    hash_scheme           TEXT NOT NULL,
    secret_hash           BLOB NOT NULL,
    grace_hash_scheme     TEXT,
    grace_hash            BLOB,
    grace_until           INTEGER,
    expires_at            INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    last_used_at          INTEGER,
    revoked_at            INTEGER,
    version               INTEGER NOT NULL
);

-- Names are unique among live (not revoked) keys of a workspace.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (workspace_id, name) WHERE state <> 'revoked';
CREATE INDEX api_keys_workspace_seq ON api_keys (workspace_id, seq);
CREATE INDEX api_keys_workspace_state ON api_keys (workspace_id, state);
CREATE UNIQUE INDEX api_keys_lookup_hash ON api_keys (lookup_hash) WHERE lookup_hash IS NOT NULL;

-- Verifications per key per UTC day.
CREATE TABLE key_usage (
    key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    day    TEXT NOT NULL,   -- YYYY-MM-DD
    count  INTEGER NOT NULL,
    PRIMARY KEY (key_id, day)
);
