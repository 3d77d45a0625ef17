-- The audit log: one hash chain per workspace (audit_heads holds each
-- chain's newest sequence number and hash), append-only; and usage
-- rollups: verifications per key, per UTC hour, per outcome code (the
-- per-day table they replace is carried over as its days' VALID counts).
CREATE TABLE audit_log (
    workspace_id TEXT NOT NULL,
    seq          BIGINT NOT NULL CHECK (seq > 0),
    at           BIGINT NOT NULL,
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
    prev_hash    BYTEA NOT NULL,
    hash         BYTEA NOT NULL,
    mac          BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX audit_log_at ON audit_log (workspace_id, at);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL,
    hash         BYTEA NOT NULL
);
INSERT INTO audit_heads (workspace_id, seq, hash) SELECT id, 0, decode(repeat('00', 32), 'hex') FROM workspaces;
-- The head follows each appended entry (one statement less per entry).
CREATE FUNCTION audit_head_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_heads SET seq = NEW.seq, hash = NEW.hash WHERE workspace_id = NEW.workspace_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_head_follows();

CREATE TABLE usage_rollups (
    workspace_id TEXT NOT NULL,
    key_id       TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    hour         BIGINT NOT NULL,   -- start of the UTC hour, seconds since the epoch
    code         TEXT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour, code)
);
CREATE INDEX usage_rollups_workspace ON usage_rollups (workspace_id, hour);
CREATE INDEX usage_rollups_hour ON usage_rollups (hour);
INSERT INTO usage_rollups (workspace_id, key_id, hour, code, count)
SELECT k.workspace_id, u.key_id, CAST(EXTRACT(EPOCH FROM CAST(u.day AS DATE)) AS BIGINT), 'VALID', u.count
FROM key_usage u JOIN api_keys k ON k.id = u.key_id;
DROP TABLE key_usage;
