-- A workspace's integration credentials: its site id (the FTP username;
-- the workspace id when unset), the JavaScript (publishable) key and its
-- public value, the default REST key (null once deleted), and FTP access:
-- the password's argon2id hash, optionally sealed under the master key,
-- and the wrong passwords counted towards its lockout.
ALTER TABLE workspaces ADD COLUMN site_id TEXT;
CREATE UNIQUE INDEX workspaces_site_id ON workspaces (site_id);

CREATE TABLE integrations (
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    javascript_key_id     TEXT NOT NULL,
    javascript_key        TEXT NOT NULL,
    rest_key_id           TEXT,
    ftp_password_hash     TEXT NOT NULL,
    ftp_master_key_id     TEXT,
    ftp_sealed            BLOB,
    ftp_enabled           INTEGER NOT NULL,
    ftp_password_set_at   INTEGER NOT NULL,
    ftp_failures          INTEGER NOT NULL DEFAULT 0,
    ftp_failures_since    INTEGER,
    ftp_locked_at         INTEGER,
    created_at            INTEGER NOT NULL,
    CONSTRAINT integrations_pkey PRIMARY KEY (workspace_id)
);
CREATE INDEX integrations_ftp_master ON integrations (ftp_master_key_id);
