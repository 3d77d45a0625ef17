-- Refresh-token families are bounded per client (the oldest revoked past
-- the bound): a family's current token is its one unused, unrevoked token,
-- found by client and age without reading the client's spent tokens.
CREATE INDEX refresh_tokens_client_current ON refresh_tokens (client_key_id, created_at)
    WHERE revoked_at IS NULL AND used_at IS NULL;
