-- Webhooks: a workspace's endpoints (events: '*' or ',name,name,'), their
-- signing secrets sealed under the master key (an older one keeps signing
-- until expires_at after a rotation), the outbox of deliveries (one row
-- per event and endpoint, written in the transaction of the change it
-- tells of; workers claim due rows until claimed_until), and the notices
-- already sent (a time-driven event is sent once, whichever node sends it).
CREATE TABLE webhook_endpoints (
    id              TEXT NOT NULL,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    description     TEXT,
    events          TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL,
    disabled_reason TEXT,
    failing_since   BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id)
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id);

CREATE TABLE webhook_secrets (
    id            TEXT NOT NULL,
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    master_key_id TEXT NOT NULL,
    sealed        BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    CONSTRAINT webhook_secrets_pkey PRIMARY KEY (id)
);
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id);
CREATE INDEX webhook_secrets_master ON webhook_secrets (master_key_id);

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    workspace_id    TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    claimed_until   BIGINT,
    last_attempt_at BIGINT,
    response_status BIGINT,
    latency_ms      BIGINT,
    response_body   TEXT,
    error           TEXT,
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (endpoint_id, created_at);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

CREATE TABLE webhook_notices (
    subject TEXT NOT NULL,
    kind    TEXT NOT NULL,
    mark    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    CONSTRAINT webhook_notices_pkey PRIMARY KEY (subject, kind, mark)
);

-- A workspace's notice settings (JSON: leakPolicy, expiryNoticeDays,
-- creditsLowThreshold, unusedDays); null: the defaults.
ALTER TABLE workspaces ADD COLUMN notices TEXT;

-- Keys reported leaked (by a code host's alert, a member, or anyone
-- holding the key): the latest report of each, for the console's banner.
CREATE TABLE key_leaks (
    key_id       TEXT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    reported_at  BIGINT NOT NULL,
    source       TEXT NOT NULL,
    url          TEXT,
    action       TEXT NOT NULL,
    CONSTRAINT key_leaks_pkey PRIMARY KEY (key_id)
);
CREATE INDEX key_leaks_workspace ON key_leaks (workspace_id);
CREATE INDEX api_keys_expires ON api_keys (expires_at) WHERE expires_at IS NOT NULL;

-- Leases: which node runs a periodic job (the notice scheduler) until when.
CREATE TABLE leases (
    name   TEXT NOT NULL,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL,
    CONSTRAINT leases_pkey PRIMARY KEY (name)
);
