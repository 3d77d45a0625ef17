-- Identities: customers of a workspace, named by the caller's external id,
-- whose keys share rate limits (JSON [{"name", "limit", "durationMs",
-- "autoApply"}]). Keys name their identity and carry limits of their own.
CREATE TABLE identities (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL CONSTRAINT identities_id_unique UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    external_id  TEXT NOT NULL,
    meta         TEXT NOT NULL,
    ratelimits   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL
);
CREATE UNIQUE INDEX identities_external_id ON identities (workspace_id, external_id);

ALTER TABLE api_keys ADD COLUMN ratelimits TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN identity_id TEXT REFERENCES identities(id) ON DELETE SET NULL;
ALTER TABLE api_keys ADD COLUMN external_id TEXT;
CREATE INDEX api_keys_identity ON api_keys (identity_id) WHERE identity_id IS NOT NULL;
