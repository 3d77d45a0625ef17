-- The people who manage keys: members (unique lowercase email, argon2id
-- password hash), their roles in each workspace (JSON list of role names),
-- sign-in sessions and invitations (tokens stored as keyed hashes only).
CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL CONSTRAINT members_email_unique UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE memberships (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    member_id    TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    roles        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    CONSTRAINT memberships_pk PRIMARY KEY (workspace_id, member_id)
);
CREATE INDEX memberships_member ON memberships (member_id);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   BYTEA NOT NULL UNIQUE,
    member_id    TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    fresh_until  BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    name         TEXT NOT NULL,
    roles        TEXT NOT NULL,
    token_hash   BYTEA NOT NULL UNIQUE,
    invited_by   TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    accepted_at  BIGINT
);
