-- Browser and network restrictions on keys; route scopes, public
-- permissions and identity metadata on workspaces. JSON arrays.
ALTER TABLE api_keys ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workspaces ADD COLUMN routes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workspaces ADD COLUMN public_permissions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE workspaces ADD COLUMN identity_metadata TEXT NOT NULL DEFAULT '[]';
