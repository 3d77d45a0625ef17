-- keyward schema, PostgreSQL. Times are BIGINT milliseconds since the Unix
-- epoch and JSON is TEXT, as on SQLite, so both backends share one code path.
-- Unique constraints are named: violations are classified by these names.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    token_prefix              TEXT NOT NULL,
    max_keys                  BIGINT,
    default_key_lifetime_days BIGINT,
    max_key_lifetime_days     BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);

CREATE TABLE api_keys (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                    TEXT NOT NULL CONSTRAINT api_keys_id_unique UNIQUE,
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    description           TEXT,
    key_type              TEXT NOT NULL,
    environment           TEXT NOT NULL,
    masked                TEXT NOT NULL,
    scopes                TEXT NOT NULL,   -- JSON array of scope strings
    read_only             BOOLEAN NOT NULL,
    administrator         BOOLEAN NOT NULL,
    account_administrator BOOLEAN NOT NULL,
    resources             TEXT NOT NULL,   -- JSON array of resource ids
    metadata              TEXT NOT NULL,   -- JSON object
    state                 TEXT NOT NULL,
    legacy                BOOLEAN NOT NULL,
    lookup_prefix         TEXT,            -- imported foreign-format keys only
    lookup_hash           BYTEA,           -- = secret_hash for those keys
    hash_scheme           TEXT NOT NULL,
    secret_hash           BYTEA NOT NULL,
    grace_hash_scheme     TEXT,
    grace_hash            BYTEA,
    grace_until           BIGINT,
    expires_at            BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    last_used_at          BIGINT,
    revoked_at            BIGINT,
    version               BIGINT NOT NULL
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
    count  BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);
