-- Replica digests: a key's secret (and its grace secret) hashed in the same
-- scheme under its workspace's replica key, which embedded verifiers hold
-- instead of any key of the server's. NULL until the plaintext is seen.
ALTER TABLE api_keys ADD COLUMN replica_hash BLOB;
ALTER TABLE api_keys ADD COLUMN grace_replica_hash BLOB;
