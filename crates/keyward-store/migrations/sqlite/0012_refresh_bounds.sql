-- Refresh-token families are bounded per client (the oldest revoked past
-- the bound): find a client's tokens by client and age.
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_key_id, created_at);
