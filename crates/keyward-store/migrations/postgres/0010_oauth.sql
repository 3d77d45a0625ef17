-- OAuth 2.0: the consumer key of client keys (and the one before it, for a
-- roll's grace period); signing keys (public JWK, private key sealed under
-- the master key); refresh tokens (hashed; a family shares one grant and is
-- revoked together on reuse); revoked access tokens by jti until they
-- expire; and jti values already used by signed requests and client
-- assertions, until they could no longer be replayed.
ALTER TABLE api_keys ADD COLUMN client_id TEXT;
ALTER TABLE api_keys ADD COLUMN grace_client_id TEXT;
CREATE UNIQUE INDEX api_keys_client_id ON api_keys (client_id);
CREATE INDEX api_keys_grace_client_id ON api_keys (grace_client_id);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    algorithm     TEXT NOT NULL,
    public_jwk    TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    sealed        BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT,
    drop_after    BIGINT
);

CREATE TABLE refresh_tokens (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    family_id     TEXT NOT NULL,
    token_hash    BYTEA NOT NULL,
    client_key_id TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    member_id     TEXT REFERENCES members(id) ON DELETE CASCADE,
    name          TEXT,
    scope         TEXT,
    masked        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    used_at       BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);
CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_workspace ON refresh_tokens (workspace_id, member_id);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE spent_jtis (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX spent_jtis_expires ON spent_jtis (expires_at);
