-- Idempotency keys: a client's `Idempotency-Key`, per workspace and
-- credential (key_hash: SHA-256 of the header's value), claimed by the
-- change a request makes, in the same transaction; its answer (status,
-- headers, body sealed under the master key) follows, by locked_until, and
-- is kept until expires_at and replayed to a retry.
CREATE TABLE idempotency_keys (
    workspace_id  TEXT NOT NULL,
    credential    TEXT NOT NULL,
    key_hash      TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL,
    committed     BOOLEAN NOT NULL DEFAULT FALSE,
    status        BIGINT,
    headers       TEXT,
    master_key_id TEXT,
    body          BYTEA,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (workspace_id, credential, key_hash)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
