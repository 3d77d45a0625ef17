-- The audit log: one hash chain per workspace (audit_heads holds each
-- chain's newest sequence number and hash), append-only; and usage
-- rollups: verifications per key, per UTC hour, per outcome code (the
-- per-day table they replace is carried over as its days' VALID counts).
CREATE TABLE audit_log (
    workspace_id TEXT NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq > 0),
    at           INTEGER NOT NULL,
    actor_type   TEXT NOT NULL,
    actor_id     TEXT,
    actor_name   TEXT,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT,
    target_name  TEXT,
    ip           TEXT,
    user_agent   TEXT,
    outcome      TEXT NOT NULL,
    changes      TEXT NOT NULL,
    prev_hash    BLOB NOT NULL,
    hash         BLOB NOT NULL,
    mac          BLOB NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX audit_log_at ON audit_log (workspace_id, at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL,
    hash         BLOB NOT NULL
);
INSERT INTO audit_heads (workspace_id, seq, hash) SELECT id, 0, zeroblob(32) FROM workspaces;
-- The head follows each appended entry (one statement less per entry).
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
BEGIN UPDATE audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE workspace_id = NEW.workspace_id; END;

CREATE TABLE usage_rollups (
    workspace_id TEXT NOT NULL,
    key_id       TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    hour         INTEGER NOT NULL,   -- start of the UTC hour, seconds since the epoch
    code         TEXT NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour, code)
);
CREATE INDEX usage_rollups_workspace ON usage_rollups (workspace_id, hour);
CREATE INDEX usage_rollups_hour ON usage_rollups (hour);
INSERT INTO usage_rollups (workspace_id, key_id, hour, code, count)
SELECT k.workspace_id, u.key_id, CAST(strftime('%s', u.day) AS INTEGER), 'VALID', u.count
FROM key_usage u JOIN api_keys k ON k.id = u.key_id;
DROP TABLE key_usage;
