-- Lockout: the workspace's policy (JSON {"threshold", "windowMinutes"};
-- NULL: the defaults) and, per key, wrong secrets counted since the start
-- of the current window.
ALTER TABLE workspaces ADD COLUMN lockout TEXT;
ALTER TABLE api_keys ADD COLUMN failed_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN failures_since BIGINT;
