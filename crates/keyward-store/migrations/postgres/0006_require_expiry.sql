-- Workspace policy: every key must expire (seed 004's mandatory expiry).
ALTER TABLE workspaces ADD COLUMN require_expiry BOOLEAN NOT NULL DEFAULT FALSE;
