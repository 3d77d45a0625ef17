-- Credits: uses a key may still make (NULL: unlimited), their refill
-- (JSON {"interval", "amount", "refillDay"}) and when it last happened.
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill TEXT;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at BIGINT;
