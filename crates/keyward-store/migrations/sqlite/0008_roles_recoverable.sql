-- Custom roles of a workspace (built-in roles are not stored), the
-- workspace's permission catalogue (JSON [{"name", "actions"}]), roles on
-- keys (JSON list of role names), and recoverable keys: their secret sealed
-- under the master key (envelope encryption), one row per key.
CREATE TABLE roles (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    permissions  TEXT NOT NULL,
    tags         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX roles_name ON roles (workspace_id, name);

ALTER TABLE workspaces ADD COLUMN permission_catalogue TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workspaces ADD COLUMN allow_recoverable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN recoverable INTEGER NOT NULL DEFAULT 0;

CREATE TABLE sealed_secrets (
    key_id        TEXT PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
    master_key_id TEXT NOT NULL,
    sealed        BLOB NOT NULL
);
CREATE INDEX sealed_secrets_master ON sealed_secrets (master_key_id);
